//! Checking a policy's template with the API server before any Pod depends on it.
//!
//! Admission (the CRD's schema and CEL rules) refuses what is cheap to see in the template
//! itself. The rest — Pod validation the CRD cannot express, the namespace's Pod Security
//! level, `LimitRange`s, quota — only the API server knows. So when a policy's template hash
//! is new to the operator, it sends one server-side dry run of a sidecar rendered from it
//! (one request per template change, not per Pod), and creates nothing for the policy
//! until the server accepts it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::render::render;
use crate::view::{PodView, PolicyView};

/// Name of the stand-in main Pod the dry-run sidecar is rendered for.
pub const DRY_RUN_MAIN: &str = "dry-run";

/// The sidecar to dry-run for `policy`: rendered for a stand-in main Pod (`dry-run`, the
/// policy's uid, not scheduled), with a generated name (so it can never be refused as
/// "already exists") and no owner reference (it refers to no real Pod).
pub fn dry_run_sidecar(policy: &PolicyView) -> Pod {
    let stand_in = PodView {
        namespace: policy.namespace.clone(),
        name: DRY_RUN_MAIN.into(),
        uid: policy.uid.clone(),
        ..PodView::default()
    };
    let mut pod = render(&stand_in, policy);
    pod.metadata.name = None;
    pod.metadata.generate_name = Some(format!(
        "{}-",
        crate::naming::sidecar_name(DRY_RUN_MAIN, &policy.name)
    ));
    pod.metadata.owner_references = None;
    pod
}

/// What the API server said of a policy's template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted: sidecars may be created.
    Accepted,
    /// Refused by Pod validation (HTTP 400/422): only a template change can fix it.
    InvalidTemplate {
        /// The server's message.
        message: String,
    },
    /// Refused by an admission rule of the namespace or the cluster (HTTP 403: Pod
    /// Security, `ResourceQuota`, `LimitRange`, a webhook): fixing the namespace fixes it,
    /// so the check is repeated with a growing delay.
    RefusedByNamespace {
        /// The server's message.
        message: String,
    },
}

impl Verdict {
    /// From the answer to the dry run: `None` for success, or the HTTP status code and
    /// message of a refusal. `None` for an error that says nothing about the template
    /// (the server unavailable, throttling, a timeout…): the check is retried later.
    pub fn of(refusal: Option<(u16, &str)>) -> Option<Verdict> {
        match refusal {
            None => Some(Verdict::Accepted),
            Some((400 | 422, message)) => Some(Verdict::InvalidTemplate {
                message: message.to_string(),
            }),
            // A namespace being deleted refuses every create; that is no verdict on the
            // template.
            Some((403, message)) if message.contains("being terminated") => None,
            Some((403, message)) => Some(Verdict::RefusedByNamespace {
                message: message.to_string(),
            }),
            Some(_) => None,
        }
    }

    /// The text of `Degraded=True, InvalidTemplate`, or `None` when accepted.
    pub fn problem(&self) -> Option<String> {
        match self {
            Verdict::Accepted => None,
            Verdict::InvalidTemplate { message } => Some(format!(
                "the API server refuses a Pod built from spec.template: {message}; no sidecar is created until the template changes"
            )),
            Verdict::RefusedByNamespace { message } => Some(format!(
                "the namespace refuses a Pod built from spec.template (admission: Pod Security, quota, LimitRange or a webhook): {message}; no sidecar is created until the namespace or the template allows it (checked again with backoff)"
            )),
        }
    }
}

/// Delay before checking again a template the namespace refused, after `attempts`
/// refusals in a row: 1 s, 2 s, 4 s … up to 5 minutes.
pub fn recheck_delay(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sidecar_api::constants::{LABEL_MAIN_UID, LABEL_TEMPLATE_HASH};
    use sidecar_api::{SidecarPolicy, SidecarPolicySpec};

    use super::*;

    #[test]
    fn the_dry_run_sidecar_is_the_rendered_one_without_identity() {
        let spec: SidecarPolicySpec = serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
        }))
        .expect("spec");
        let mut p = SidecarPolicy::new("ship", spec);
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some("uid-ship".into());
        let v = PolicyView::new(Arc::new(p));
        let pod = dry_run_sidecar(&v);
        assert_eq!(pod.metadata.name, None);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("dry-run-ship-"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("shop"));
        assert!(pod.metadata.owner_references.is_none());
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_TEMPLATE_HASH), Some(&v.hash));
        assert_eq!(
            labels.get(LABEL_MAIN_UID).map(String::as_str),
            Some("uid-ship")
        );
        let spec = pod.spec.expect("spec");
        assert!(spec.affinity.is_none(), "not pinned to any node");
        assert_eq!(spec.containers[0].image.as_deref(), Some("i"));
    }

    #[test]
    fn verdicts_by_answer() {
        let cases = [
            (None, Some(Verdict::Accepted)),
            (
                Some((422, "Pod \"x\" is invalid: spec.containers[0].env[0]...")),
                Some(Verdict::InvalidTemplate {
                    message: "Pod \"x\" is invalid: spec.containers[0].env[0]...".into(),
                }),
            ),
            (
                Some((400, "bad request")),
                Some(Verdict::InvalidTemplate {
                    message: "bad request".into(),
                }),
            ),
            (
                Some((403, "violates PodSecurity \"restricted:latest\"")),
                Some(Verdict::RefusedByNamespace {
                    message: "violates PodSecurity \"restricted:latest\"".into(),
                }),
            ),
            (
                Some((
                    403,
                    "unable to create new content in namespace x because it is being terminated",
                )),
                None,
            ),
            (Some((429, "too many requests")), None),
            (Some((500, "etcd")), None),
        ];
        for (answer, want) in cases {
            assert_eq!(Verdict::of(answer), want, "{answer:?}");
        }
        assert!(Verdict::Accepted.problem().is_none());
        let ns = Verdict::RefusedByNamespace {
            message: "exceeded quota".into(),
        };
        assert!(
            ns.problem()
                .is_some_and(|m| m.contains("the namespace refuses"))
        );
    }

    #[test]
    fn namespace_refusals_are_checked_again_with_backoff() {
        let s = Duration::from_secs;
        let delays: Vec<Duration> = (1..=11).map(recheck_delay).collect();
        assert_eq!(
            delays,
            [
                s(1),
                s(2),
                s(4),
                s(8),
                s(16),
                s(32),
                s(64),
                s(128),
                s(256),
                s(300),
                s(300)
            ]
        );
        assert_eq!(recheck_delay(0), s(1));
    }
}
