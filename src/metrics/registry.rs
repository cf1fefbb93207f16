//! Registry families: every HTTP exchange with the registry, and the retries
//! of bundles after transient failures.

use prometheus::{IntCounterVec, Opts, Registry};

use super::{LabelValue, labelled_counter};

/// An HTTP method, the `method` label of `airlock_registry_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestMethod {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PATCH`.
    Patch,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// Anything else.
    Other,
}

impl RequestMethod {
    /// The method named `name` (case-sensitive, as HTTP methods are);
    /// anything unknown is [`RequestMethod::Other`].
    pub fn from_name(name: &str) -> Self {
        match name {
            "GET" => RequestMethod::Get,
            "HEAD" => RequestMethod::Head,
            "POST" => RequestMethod::Post,
            "PATCH" => RequestMethod::Patch,
            "PUT" => RequestMethod::Put,
            "DELETE" => RequestMethod::Delete,
            _ => RequestMethod::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        LabelValue::as_str(self)
    }
}

impl LabelValue for RequestMethod {
    const ALL: &'static [Self] = &[
        RequestMethod::Get,
        RequestMethod::Head,
        RequestMethod::Post,
        RequestMethod::Patch,
        RequestMethod::Put,
        RequestMethod::Delete,
        RequestMethod::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RequestMethod::Get => "GET",
            RequestMethod::Head => "HEAD",
            RequestMethod::Post => "POST",
            RequestMethod::Patch => "PATCH",
            RequestMethod::Put => "PUT",
            RequestMethod::Delete => "DELETE",
            RequestMethod::Other => "OTHER",
        }
    }
}

/// What became of a request, the `status_class` label of
/// `airlock_registry_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// A 2xx response.
    Success,
    /// A 3xx response.
    Redirection,
    /// A 4xx response.
    ClientError,
    /// A 5xx response.
    ServerError,
    /// No usable response: connection error, timeout, or a status outside
    /// 200–599.
    Error,
}

impl StatusClass {
    /// The class of a response status, `None` meaning no response arrived.
    pub fn of(status: Option<u16>) -> Self {
        match status {
            Some(200..=299) => StatusClass::Success,
            Some(300..=399) => StatusClass::Redirection,
            Some(400..=499) => StatusClass::ClientError,
            Some(500..=599) => StatusClass::ServerError,
            _ => StatusClass::Error,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        LabelValue::as_str(self)
    }
}

impl LabelValue for StatusClass {
    const ALL: &'static [Self] = &[
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Error => "error",
        }
    }
}

/// Why a bundle is retried, the `reason` label of `airlock_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// The registry answered 503 Service Unavailable.
    Unavailable,
    /// The registry answered 429 Too Many Requests.
    RateLimited,
    /// A request timed out, or the registry answered 408 or 504.
    Timeout,
    /// The registry could not be reached, or the connection broke.
    Connection,
    /// The registry answered another 5xx.
    ServerError,
    /// The TLS handshake with the registry failed: its certificate is not
    /// trusted or names another host, or it refused airlock's client
    /// certificate.
    Tls,
    /// Anything else.
    Other,
}

impl RetryReason {
    /// The reason a registry status gives.
    pub fn from_status(status: u16) -> Self {
        match status {
            503 => RetryReason::Unavailable,
            429 => RetryReason::RateLimited,
            408 | 504 => RetryReason::Timeout,
            500..=599 => RetryReason::ServerError,
            _ => RetryReason::Other,
        }
    }

    /// The reason behind a failed import: the registry's status or the
    /// transport error when there is one, otherwise [`RetryReason::Other`].
    pub fn of(error: &crate::import::Error) -> Self {
        match error {
            crate::import::Error::Push(push) => Self::of_push(push),
            _ => RetryReason::Other,
        }
    }

    fn of_push(error: &crate::push::Error) -> Self {
        match error {
            crate::push::Error::Status { status, .. } => Self::from_status(*status),
            crate::push::Error::Http { source, .. } if source.is_timeout() => RetryReason::Timeout,
            crate::push::Error::Stalled { .. } => RetryReason::Timeout,
            crate::push::Error::Http { .. } => RetryReason::Connection,
            crate::push::Error::TlsHandshake { .. } => RetryReason::Tls,
            _ => RetryReason::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        LabelValue::as_str(self)
    }
}

impl LabelValue for RetryReason {
    const ALL: &'static [Self] = &[
        RetryReason::Unavailable,
        RetryReason::RateLimited,
        RetryReason::Timeout,
        RetryReason::Connection,
        RetryReason::ServerError,
        RetryReason::Tls,
        RetryReason::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RetryReason::Unavailable => "unavailable",
            RetryReason::RateLimited => "rate_limited",
            RetryReason::Timeout => "timeout",
            RetryReason::Connection => "connection",
            RetryReason::ServerError => "server_error",
            RetryReason::Tls => "tls",
            RetryReason::Other => "other",
        }
    }
}

/// The registry families.
#[derive(Clone)]
pub(super) struct RegistryMetrics {
    requests: IntCounterVec,
    retries: IntCounterVec,
}

impl RegistryMetrics {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "airlock_registry_requests_total",
                "HTTP exchanges with the registry (including 401 challenges, token requests and retried attempts) by method and status class; error means no response.",
            ),
            &["method", "status_class"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        for method in RequestMethod::ALL {
            for class in StatusClass::ALL {
                requests.get_metric_with_label_values(&[method.as_str(), class.as_str()])?;
            }
        }
        let retries = labelled_counter::<RetryReason>(
            registry,
            "airlock_retries_total",
            "Bundle import retries scheduled after a transient failure, by reason.",
            "reason",
        )?;
        Ok(RegistryMetrics { requests, retries })
    }

    pub(super) fn request(&self, method: RequestMethod, class: StatusClass) {
        self.requests
            .with_label_values(&[method.as_str(), class.as_str()])
            .inc();
    }

    pub(super) fn retry(&self, reason: RetryReason) {
        self.retries.with_label_values(&[reason.as_str()]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let class = |s| StatusClass::of(s).as_str();
        assert_eq!(class(None), "error");
        assert_eq!(class(Some(100)), "error");
        assert_eq!(class(Some(200)), "2xx");
        assert_eq!(class(Some(202)), "2xx");
        assert_eq!(class(Some(307)), "3xx");
        assert_eq!(class(Some(401)), "4xx");
        assert_eq!(class(Some(599)), "5xx");
        assert_eq!(class(Some(600)), "error");
    }

    #[test]
    fn methods_round_trip() {
        for method in RequestMethod::ALL {
            if *method != RequestMethod::Other {
                assert_eq!(RequestMethod::from_name(method.as_str()), *method);
            }
        }
        assert_eq!(RequestMethod::from_name("OTHER"), RequestMethod::Other);
        assert_eq!(RequestMethod::from_name("OPTIONS"), RequestMethod::Other);
    }

    #[test]
    fn retry_reasons_from_statuses() {
        assert_eq!(RetryReason::from_status(503), RetryReason::Unavailable);
        assert_eq!(RetryReason::from_status(429), RetryReason::RateLimited);
        assert_eq!(RetryReason::from_status(504), RetryReason::Timeout);
        assert_eq!(RetryReason::from_status(408), RetryReason::Timeout);
        assert_eq!(RetryReason::from_status(500), RetryReason::ServerError);
        assert_eq!(RetryReason::from_status(404), RetryReason::Other);
    }

    #[test]
    fn retry_reasons_from_import_errors() {
        let status = |status| {
            crate::import::Error::Push(crate::push::Error::Status {
                method: "PUT".into(),
                url: "https://registry.example/v2/".into(),
                status,
                message: String::new(),
            })
        };
        assert_eq!(RetryReason::of(&status(429)), RetryReason::RateLimited);
        assert_eq!(RetryReason::of(&status(502)), RetryReason::ServerError);
        let unauthorized = crate::import::Error::Push(crate::push::Error::Unauthorized {
            host: "registry.example".into(),
            detail: String::new(),
        });
        assert_eq!(RetryReason::of(&unauthorized), RetryReason::Other);
        let task = crate::import::Error::Task("gone".into());
        assert_eq!(RetryReason::of(&task), RetryReason::Other);
        let handshake = crate::import::Error::Push(crate::push::Error::TlsHandshake {
            url: "https://registry.example/v2/".into(),
            reason: "invalid peer certificate: UnknownIssuer".into(),
            hint: "",
        });
        assert_eq!(RetryReason::of(&handshake), RetryReason::Tls);
    }

    #[test]
    fn label_sets_are_closed_and_distinct() {
        fn distinct<L: LabelValue>() -> usize {
            let mut values: Vec<_> = L::ALL.iter().map(|v| v.as_str()).collect();
            values.sort_unstable();
            values.dedup();
            values.len()
        }
        assert_eq!(distinct::<RequestMethod>(), 7);
        assert_eq!(distinct::<StatusClass>(), 5);
        assert_eq!(distinct::<RetryReason>(), 7);
    }
}
