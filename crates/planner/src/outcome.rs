//! What the API server's answer to a write means: pure classification of status codes and
//! messages, so the controllers only send and act on the verdict.

/// The meaning of a failed sidecar create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateFailure {
    /// 409: a Pod of that name exists; the cache lags the server and its next event
    /// brings the Pod in. Nothing to do.
    AlreadyExists,
    /// 403 from a namespace being deleted. Nothing to do.
    NamespaceTerminating,
    /// 400/403/422: the server refuses this Pod (Pod Security, quota, validation,
    /// admission). `message` is the server's, with the sidecar's name replaced by
    /// `<sidecar>`, so refusals of many Pods for one reason are one status change and one
    /// Event.
    Refused {
        /// The server's message, the name scrubbed.
        message: String,
    },
    /// Anything else (5xx, 429, network): retried with backoff.
    Retry,
}

/// Classifies the API server's refusal (`code`, `message`) of the create of sidecar
/// `name`; `code` 0 stands for no answer at all (a network error).
pub fn create_failure(code: u16, message: &str, name: &str) -> CreateFailure {
    match code {
        409 => CreateFailure::AlreadyExists,
        403 if message.contains("being terminated") => CreateFailure::NamespaceTerminating,
        400 | 403 | 422 => CreateFailure::Refused {
            message: message.replace(&format!("\"{name}\""), "\"<sidecar>\""),
        },
        _ => CreateFailure::Retry,
    }
}

/// Whether a failed delete (uid precondition) needs nothing more: 404 (already gone) or
/// 409 (the name now holds another Pod, which is never deleted by mistake).
pub fn delete_settled(code: u16) -> bool {
    matches!(code, 404 | 409)
}

/// Whether a failed status write needs nothing more: 404 (the policy is gone).
pub fn status_write_settled(code: u16) -> bool {
    code == 404
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_failures_are_classified() {
        let refused = |m: &str| CreateFailure::Refused { message: m.into() };
        let cases: [(u16, &str, CreateFailure); 8] = [
            (
                409,
                "pods \"web-0-log\" already exists",
                CreateFailure::AlreadyExists,
            ),
            (
                403,
                "unable to create new content in namespace shop because it is being terminated",
                CreateFailure::NamespaceTerminating,
            ),
            (
                403,
                "pods \"web-0-log\" is forbidden: violates PodSecurity \"restricted:latest\"",
                refused(
                    "pods \"<sidecar>\" is forbidden: violates PodSecurity \"restricted:latest\"",
                ),
            ),
            (
                403,
                "pods \"web-0-log\" is forbidden: exceeded quota: pods",
                refused("pods \"<sidecar>\" is forbidden: exceeded quota: pods"),
            ),
            (
                422,
                "Pod \"web-0-log\" is invalid: spec.containers[0].image: Required value",
                refused("Pod \"<sidecar>\" is invalid: spec.containers[0].image: Required value"),
            ),
            (400, "bad request", refused("bad request")),
            (500, "etcdserver: request timed out", CreateFailure::Retry),
            (0, "", CreateFailure::Retry),
        ];
        for (code, message, want) in cases {
            assert_eq!(
                create_failure(code, message, "web-0-log"),
                want,
                "{code} {message}"
            );
        }
    }

    #[test]
    fn settled_failures() {
        let cases = [
            (404, true, true),
            (409, true, false),
            (500, false, false),
            (429, false, false),
        ];
        for (code, delete, status) in cases {
            assert_eq!(delete_settled(code), delete, "delete {code}");
            assert_eq!(status_write_settled(code), status, "status {code}");
        }
    }
}
