//! Where airlock's registry credentials may go.
//!
//! A registry names other URLs in its answers: the `Location` of an upload
//! session, the token realm of a `Bearer` challenge, the target of a
//! redirect. Each is an invitation a hostile or misconfigured registry (or a
//! proxy in front of it) can use to collect the credentials. The rules:
//!
//! * credentials (Basic, or a token) go only to the registry's own origin:
//!   the scheme, host and port airlock was told to use;
//! * an https registry never makes airlock send anything over plain http
//!   (upload URLs, redirects, token realms);
//! * a `401` challenge counts only when the registry's own origin sent it, not
//!   a redirect target (a CDN or object store);
//! * the registry password goes to a token realm only over https, or over
//!   plain http when the registry itself is plain http on the same host; and,
//!   when `registry.token_realm_hosts` is set, only to a host it lists.

use url::Url;

/// The registry's origin, and the policy for the URLs it names.
#[derive(Debug, Clone)]
pub struct Origin {
    base: Url,
    token_realm_hosts: Vec<String>,
}

impl Origin {
    /// The origin of `base` (`scheme://host[:port]/`); `token_realm_hosts`
    /// restricts where credentials go for a token (empty: any host allowed
    /// by the scheme rules).
    pub fn new(base: Url, token_realm_hosts: Vec<String>) -> Self {
        Origin {
            base,
            token_realm_hosts,
        }
    }

    /// Whether `url` is the registry itself: same scheme, host and port.
    /// Only such URLs get an `Authorization` header.
    pub fn is_registry(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    fn is_tls(&self) -> bool {
        self.base.scheme() == "https"
    }

    /// Checks a URL the registry named for an upload session (a `Location`,
    /// or one recorded in the upload journal): http or https, never plain
    /// http when the registry is https. Another host is allowed (some
    /// registries hand uploads to a storage front end), but gets no
    /// credentials.
    pub fn check_upload_url(&self, url: &Url) -> std::result::Result<(), String> {
        match url.scheme() {
            "https" => {}
            "http" if !self.is_tls() => {}
            "http" => {
                return Err(
                    "the registry is reached over https but named a plain-http upload URL; \
                     airlock does not downgrade"
                        .into(),
                );
            }
            other => return Err(format!("upload URLs must be http(s), not {other}")),
        }
        if !self.is_registry(url) {
            tracing::warn!(
                url = %super::redact(url),
                "the registry sent an upload URL on another host; no credentials are sent there"
            );
        }
        Ok(())
    }

    /// Whether a redirect from `previous` to `next` may be followed: never
    /// from https to plain http.
    pub fn allows_redirect(previous: &Url, next: &Url) -> bool {
        !(previous.scheme() == "https" && next.scheme() != "https")
    }

    /// Checks a token realm before the registry credentials are sent to it.
    /// Anonymous token requests carry no secret and are not restricted here.
    pub fn check_token_realm(&self, realm: &Url) -> std::result::Result<(), String> {
        let same_host = realm.host_str() == self.base.host_str();
        match realm.scheme() {
            "https" => {}
            "http" if !self.is_tls() && same_host => {}
            "http" => {
                return Err(
                    "credentials are sent to a token realm only over https (plain http only \
                     when the registry itself is plain http on the same host)"
                        .into(),
                );
            }
            other => return Err(format!("token realms must be https, not {other}")),
        }
        if self.token_realm_hosts.is_empty() {
            return Ok(());
        }
        let host = realm.host_str().unwrap_or_default();
        let with_port = match realm.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let listed = self.token_realm_hosts.iter().any(|allowed| {
            allowed.eq_ignore_ascii_case(host) || allowed.eq_ignore_ascii_case(&with_port)
        });
        if listed {
            Ok(())
        } else {
            Err(format!(
                "the token realm's host {with_port} is not in registry.token_realm_hosts"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("test URL")
    }

    fn origin(base: &str) -> Origin {
        Origin::new(url(base), Vec::new())
    }

    #[test]
    fn only_the_same_scheme_host_and_port_is_the_registry() {
        let o = origin("https://registry.local/");
        assert!(o.is_registry(&url("https://registry.local/v2/x/blobs/uploads/1")));
        assert!(o.is_registry(&url("https://registry.local:443/v2/")));
        assert!(!o.is_registry(&url("https://registry.local:8443/v2/")));
        assert!(!o.is_registry(&url("http://registry.local/v2/")));
        assert!(!o.is_registry(&url("https://evil.local/v2/")));
        let local = origin("http://127.0.0.1:5000/");
        assert!(!local.is_registry(&url("http://localhost:5000/v2/")));
        assert!(!local.is_registry(&url("http://127.0.0.1:5001/v2/")));
    }

    #[test]
    fn upload_urls_never_downgrade_to_plain_http() {
        let tls = origin("https://registry.local/");
        assert!(
            tls.check_upload_url(&url("http://registry.local/up"))
                .is_err()
        );
        assert!(
            tls.check_upload_url(&url("ftp://registry.local/up"))
                .is_err()
        );
        assert!(
            tls.check_upload_url(&url("https://storage.local/up"))
                .is_ok()
        );
        let plain = origin("http://127.0.0.1:5000/");
        assert!(
            plain
                .check_upload_url(&url("http://127.0.0.1:5000/up"))
                .is_ok()
        );
    }

    #[test]
    fn redirects_never_downgrade() {
        let https = url("https://a/");
        assert!(!Origin::allows_redirect(&https, &url("http://a/")));
        assert!(Origin::allows_redirect(&https, &url("https://b/")));
        assert!(Origin::allows_redirect(
            &url("http://a/"),
            &url("http://b/")
        ));
    }

    #[test]
    fn credentials_go_to_token_realms_over_https_or_same_host_plain_http() {
        let tls = origin("https://registry.local/");
        assert!(
            tls.check_token_realm(&url("https://auth.local/token"))
                .is_ok()
        );
        assert!(
            tls.check_token_realm(&url("http://registry.local/token"))
                .is_err()
        );
        let plain = origin("http://127.0.0.1:5000/");
        assert!(
            plain
                .check_token_realm(&url("http://127.0.0.1:5001/token"))
                .is_ok()
        );
        assert!(
            plain
                .check_token_realm(&url("http://localhost:5001/token"))
                .is_err()
        );
        assert!(
            plain
                .check_token_realm(&url("https://auth.local/token"))
                .is_ok()
        );
    }

    #[test]
    fn token_realm_hosts_restrict_where_credentials_go() {
        let o = Origin::new(
            url("https://registry.local/"),
            vec!["auth.local".into(), "sso.local:8443".into()],
        );
        assert!(
            o.check_token_realm(&url("https://auth.local/token"))
                .is_ok()
        );
        assert!(
            o.check_token_realm(&url("https://sso.local:8443/t"))
                .is_ok()
        );
        assert!(o.check_token_realm(&url("https://sso.local/t")).is_err());
        assert!(
            o.check_token_realm(&url("https://evil.local/token"))
                .is_err()
        );
    }
}
