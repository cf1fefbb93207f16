//! Whether the Kubernetes API answers, as `/readyz` reports it.

use std::sync::Mutex;

/// The outcome of the latest API request that could tell: an answer of any
/// status means the API is reachable; no answer, a timeout or a 5xx means it
/// is not.
#[derive(Debug, Default)]
pub struct ApiHealth {
    problem: Mutex<Option<String>>,
}

impl ApiHealth {
    /// Why the API is not usable now, or `None` when its last answer was
    /// fine.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().ok().and_then(|p| p.clone())
    }

    /// Notes the outcome of one request.
    pub(super) fn observe<T>(&self, result: &super::Result<T>) {
        let problem = match result {
            Ok(_) => None,
            Err(error) if answered(error) => None,
            Err(error) => Some(crate::report::error_chain(error)),
        };
        if let Ok(mut slot) = self.problem.lock() {
            *slot = problem;
        }
    }
}

/// Whether the API server answered with a status that says it works: a 404
/// or 409 is an answer about the object, not about the server; 401 and 403
/// (the pod lacks its rights) and 429 are problems.
fn answered(error: &super::Error) -> bool {
    match error {
        super::Error::Api {
            source: kube::Error::Api(status),
            ..
        } => (400..500).contains(&status.code) && ![401, 403, 429].contains(&status.code),
        _ => false,
    }
}
