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

/// Container mode: the two Pods whose server-side dry runs tell whether the namespace's
/// admission (quota, LimitRange, webhooks, admission policies, Pod Security) refuses a Pod
/// *because of* the policy's sidecars: a small stand-in for a selected Pod (labelled as the
/// selector asks, one hardened container with tiny requests and limits, so that a namespace
/// which accepts ordinary Pods accepts it), without and with the template's additions. Both
/// opt out of injection (`sidecars.dev/inject: "false"`): the operator's own webhook leaves
/// them as they are.
pub fn injection_probe(policy: &PolicyView) -> (Pod, Pod) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let selector = &policy.policy.spec.selector;
    let mut labels: std::collections::BTreeMap<String, String> =
        selector.match_labels.clone().unwrap_or_default();
    for e in selector.match_expressions.iter().flatten() {
        let first = e.values.iter().flatten().next();
        match (e.operator.as_str(), first) {
            ("In", Some(v)) => {
                labels.insert(e.key.clone(), v.clone());
            }
            ("Exists", _) => {
                labels.insert(e.key.clone(), "probe".into());
            }
            _ => {}
        }
    }
    let spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(serde_json::json!({
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65534,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [{
            "name": "app",
            "image": "registry.k8s.io/pause:3.10",
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
            },
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "10m", "memory": "16Mi"},
            },
        }],
    }))
    .unwrap_or_default();
    let without = Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                crate::naming::sidecar_name(INJECTION_PROBE, &policy.name.replace('/', "-"))
            )),
            namespace: Some(policy.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    };
    let mut with = crate::inject::with_template(&without, policy);
    let mut without = without;
    for p in [&mut with, &mut without] {
        p.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                sidecar_api::constants::ANNOTATION_INJECT.into(),
                sidecar_api::constants::INJECT_DISABLED.into(),
            );
    }
    (without, with)
}

/// Name of the stand-in Pod of [`injection_probe`].
pub const INJECTION_PROBE: &str = "injection-check";

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
    /// Container mode: the namespace refuses even the stand-in without the sidecars, so the
    /// dry runs say nothing of them; checked again with a growing delay (Pods are injected
    /// meanwhile, as before any check).
    Undecided,
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

    /// Container mode, from the answers to the dry runs of [`injection_probe`]'s two Pods:
    /// accepted with the sidecars; refused with them while accepted without
    /// (`RefusedByNamespace`, whatever refused it: the Pods would be); `Undecided` when the
    /// stand-in is refused without them too; `None` when the answers say nothing (the server
    /// unavailable, the namespace going away...).
    pub fn of_injection(
        without: Option<(u16, &str)>,
        with: Option<(u16, &str)>,
    ) -> Option<Verdict> {
        match without {
            None => {}
            Some((400 | 403 | 422, m)) if !m.contains("being terminated") => {
                return Some(Verdict::Undecided);
            }
            Some(_) => return None,
        }
        match with {
            None => Some(Verdict::Accepted),
            Some((403, message)) if message.contains("being terminated") => None,
            Some((400 | 403 | 422, message)) => Some(Verdict::RefusedByNamespace {
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
            Verdict::Undecided => None,
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
    fn injection_verdicts_blame_the_sidecars_only_when_the_pod_alone_passes() {
        let quota = Some((403, "exceeded quota"));
        let cases = [
            // (without, with, verdict)
            (None, None, Some(Verdict::Accepted)),
            (
                None,
                quota,
                Some(Verdict::RefusedByNamespace {
                    message: "exceeded quota".into(),
                }),
            ),
            (
                None,
                Some((422, "invalid")),
                Some(Verdict::RefusedByNamespace {
                    message: "invalid".into(),
                }),
            ),
            (quota, quota, Some(Verdict::Undecided)),
            (None, Some((500, "boom")), None),
            (Some((403, "namespace x is being terminated")), None, None),
        ];
        for (without, with, want) in cases {
            assert_eq!(
                Verdict::of_injection(without, with),
                want,
                "{without:?} {with:?}"
            );
        }
    }

    #[test]
    fn the_injection_probe_is_a_selected_pod_without_and_with_the_sidecars() {
        let spec: SidecarPolicySpec = serde_json::from_value(serde_json::json!({
            "mode": "Container",
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["front", "back"]},
                    {"key": "team", "operator": "Exists"},
                    {"key": "legacy", "operator": "DoesNotExist"},
                ],
            },
            "template": {"spec": {"initContainers": [
                {"name": "agent", "image": "a:1", "restartPolicy": "Always"}]}},
        }))
        .expect("spec");
        let mut p = SidecarPolicy::new("log", spec);
        p.metadata.namespace = Some("shop".into());
        let v = PolicyView::new(Arc::new(p));
        assert!(v.selector.is_ok(), "{:?}", v.selector);
        let (without, with) = injection_probe(&v);
        let labels =
            crate::labels::Labels::from(&without.metadata.labels.clone().unwrap_or_default());
        assert!(v.selects(&labels), "the stand-in is selected: {labels:?}");
        for pod in [&without, &with] {
            let a = pod.metadata.annotations.clone().unwrap_or_default();
            assert_eq!(
                a.get(sidecar_api::constants::ANNOTATION_INJECT)
                    .map(String::as_str),
                Some("false"),
                "the webhook leaves it alone"
            );
            assert_eq!(pod.metadata.namespace.as_deref(), Some("shop"));
            assert!(pod.metadata.name.is_none() && pod.metadata.generate_name.is_some());
        }
        let inits = |p: &Pod| {
            p.spec
                .iter()
                .flat_map(|s| s.init_containers.iter().flatten())
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        };
        assert!(inits(&without).is_empty());
        assert_eq!(inits(&with), ["agent"]);
        // The stand-in passes Pod Security restricted on its own.
        assert!(
            crate::pod_security::violations(crate::pod_security::Level::Restricted, &without)
                .is_empty()
        );
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
