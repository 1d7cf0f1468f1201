//! `sidecar-operator explain pod`: for one Pod, what every policy of its namespace (and every
//! ClusterSidecarPolicy) does with it, and why. Pure: the Pod, its namespace's labels, the
//! policies and a lookup of Pods by name in; one verdict per policy out.

use std::collections::HashSet;

use sidecar_api::Mode;

use crate::eligibility::{Ineligible, eligibility};
use crate::labels::Labels;
use crate::naming::sidecar_name;
use crate::plan::{Holder, conflict_winner, holder};
use crate::view::{PodView, PolicyView};

/// Why a policy gives the Pod its sidecars, or does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodVerdict {
    /// The Pod has this policy's sidecars (companion Pod, or injected containers).
    Served,
    /// The policy wants the Pod, and its sidecar is still to come (Pod mode: being created,
    /// or waiting for a name held by a Pod going away).
    Pending,
    /// A ClusterSidecarPolicy whose namespaceSelector does not take the Pod's namespace.
    NamespaceNotSelected,
    /// `spec.selector` does not match the Pod's labels.
    NotSelected,
    /// The Pod is annotated `sidecars.dev/inject: "false"`.
    OptedOut,
    /// Pod mode, placement SameNode: the Pod is not scheduled yet.
    Unscheduled,
    /// The Pod is terminating.
    Terminating,
    /// The Pod has Succeeded or Failed.
    Terminal,
    /// The policy is paused.
    Paused,
    /// The policy is being deleted.
    PolicyDeleting,
    /// The operator cannot act on the policy's spec (see the detail).
    InvalidSpec,
    /// A policy that outranks this one takes the Pod (same sidecar, container or volume name).
    Conflict,
    /// The name this policy needs is held by another Pod, or (Container mode) the Pod already
    /// had a container or volume of a name the policy adds.
    NameCollision,
    /// Container mode: the Pod was created without this policy's sidecars (the webhook was
    /// unavailable, or the policy came later).
    WebhookMissed,
    /// Container mode: the Pod carries an older template's sidecars.
    Outdated,
    /// Container mode: the webhook left the sidecars out because the Pod's namespace (its
    /// Pod Security level, or another admission check) would have refused the Pod with them.
    RefusedByNamespace,
    /// The Pod is one of the operator's own sidecar Pods.
    IsSidecar,
}

impl PodVerdict {
    /// A short, stable word for the table and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PodVerdict::Served => "served",
            PodVerdict::Pending => "pending",
            PodVerdict::NamespaceNotSelected => "namespace-not-selected",
            PodVerdict::NotSelected => "not-selected",
            PodVerdict::OptedOut => "opted-out",
            PodVerdict::Unscheduled => "unscheduled",
            PodVerdict::Terminating => "terminating",
            PodVerdict::Terminal => "terminal",
            PodVerdict::Paused => "paused",
            PodVerdict::PolicyDeleting => "policy-deleting",
            PodVerdict::InvalidSpec => "invalid-spec",
            PodVerdict::Conflict => "conflict",
            PodVerdict::NameCollision => "name-collision",
            PodVerdict::WebhookMissed => "webhook-missed",
            PodVerdict::Outdated => "outdated",
            PodVerdict::RefusedByNamespace => "refused-by-namespace",
            PodVerdict::IsSidecar => "is-sidecar",
        }
    }

    /// The policy selects the Pod (it is, or should be, served by it).
    pub fn selects(self) -> bool {
        matches!(
            self,
            PodVerdict::Served
                | PodVerdict::Pending
                | PodVerdict::Conflict
                | PodVerdict::NameCollision
                | PodVerdict::WebhookMissed
                | PodVerdict::Outdated
                | PodVerdict::RefusedByNamespace
                | PodVerdict::Paused
                | PodVerdict::Unscheduled
        )
    }
}

/// What one policy does with the Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// `SidecarPolicy` or `ClusterSidecarPolicy`.
    pub kind: &'static str,
    /// The object's name.
    pub name: String,
    /// `spec.mode`.
    pub mode: Mode,
    /// The verdict.
    pub verdict: PodVerdict,
    /// It, in words.
    pub detail: String,
    /// The sidecars: the companion Pod's name (Pod mode) or the injected containers
    /// (Container mode), the Pod has or should have.
    pub sidecars: Vec<String>,
    /// The policy's current template hash.
    pub template_hash: String,
    /// The template hash the Pod's sidecars were built from, if it has them.
    pub have_hash: Option<String>,
}

/// Every policy's verdict on `pod` (see the module doc): `policies` are the SidecarPolicies
/// of its namespace and the ClusterSidecarPolicies (their views, not instances), in any order;
/// `labels` its namespace's labels; `left_out` the namespaces cluster policies skip unless
/// named; `by_name` finds a Pod of the namespace. Sorted by kind, then name.
pub fn explain_pod<'a>(
    pod: &PodView,
    labels: &Labels,
    policies: &[&PolicyView],
    left_out: &HashSet<String>,
    by_name: impl Fn(&str) -> Option<&'a PodView>,
) -> Vec<Explained> {
    let ns = pod.namespace.as_str();
    // The policies as the operator applies them in the namespace.
    let applied: Vec<PolicyView> = policies
        .iter()
        .filter_map(|p| match &p.cluster {
            None => (p.namespace == ns).then(|| (*p).clone()),
            Some(_) => p.applies_in(ns, labels, left_out).then(|| p.instance(ns)),
        })
        .collect();
    let rivals: Vec<&PolicyView> = applied.iter().collect();
    let mut out: Vec<Explained> = policies
        .iter()
        .filter(|p| p.is_cluster() || p.namespace == ns)
        .map(|p| {
            let mut e = Explained {
                kind: p.kind(),
                name: p.object_name().to_string(),
                mode: p.mode(),
                verdict: PodVerdict::Pending,
                detail: String::new(),
                sidecars: Vec::new(),
                template_hash: p.hash.clone(),
                have_hash: None,
            };
            match rivals.iter().find(|a| a.name == p.name) {
                None => {
                    e.verdict = PodVerdict::NamespaceNotSelected;
                    e.detail = format!(
                        "spec.namespaceSelector does not take namespace {ns} (its labels, or it is \
                         left out: kube-system, kube-public, kube-node-lease and the operator's \
                         own namespace need naming with kubernetes.io/metadata.name)"
                    );
                }
                Some(inst) if inst.mode() == Mode::Container => {
                    container_verdict(pod, inst, &mut e);
                }
                Some(inst) => pod_verdict(pod, inst, &rivals, &by_name, &mut e),
            }
            e
        })
        .collect();
    out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    out
}

fn ineligible(why: Ineligible, policy: &PolicyView) -> (PodVerdict, String) {
    match why {
        Ineligible::IsSidecar => (
            PodVerdict::IsSidecar,
            "the Pod is one of the operator's sidecars: sidecars never get sidecars".into(),
        ),
        Ineligible::PolicyDeleting => (
            PodVerdict::PolicyDeleting,
            "the policy is being deleted".into(),
        ),
        Ineligible::InvalidSpec => (
            PodVerdict::InvalidSpec,
            policy.selector.as_ref().err().cloned().unwrap_or_default(),
        ),
        Ineligible::NotSelected => (
            PodVerdict::NotSelected,
            "spec.selector does not match the Pod's labels".into(),
        ),
        Ineligible::ContainerMode => (PodVerdict::Pending, String::new()),
        Ineligible::OptedOut => (
            PodVerdict::OptedOut,
            "the Pod is annotated sidecars.dev/inject: \"false\"".into(),
        ),
        Ineligible::Terminating => (PodVerdict::Terminating, "the Pod is terminating".into()),
        Ineligible::Terminal => (
            PodVerdict::Terminal,
            "the Pod has Succeeded or Failed".into(),
        ),
        Ineligible::Unscheduled => (
            PodVerdict::Unscheduled,
            "placement SameNode: the sidecar is created once the Pod is scheduled".into(),
        ),
        Ineligible::Paused => (
            PodVerdict::Paused,
            "the policy is paused: nothing is created or deleted".into(),
        ),
    }
}

fn pod_verdict<'a>(
    pod: &PodView,
    p: &PolicyView,
    rivals: &[&PolicyView],
    by_name: &impl Fn(&str) -> Option<&'a PodView>,
    e: &mut Explained,
) {
    let name = sidecar_name(&pod.name, &p.name);
    e.sidecars = vec![name.clone()];
    if let Err(why) = eligibility(pod, p) {
        (e.verdict, e.detail) = ineligible(why, p);
        if why != Ineligible::Paused {
            return;
        }
    }
    if let Some(w) = conflict_winner(pod, p, rivals) {
        e.verdict = PodVerdict::Conflict;
        e.detail = format!(
            "{} wants the same sidecar Pod name {name} and outranks this policy",
            crate::cluster::describe(&w.name)
        );
        return;
    }
    let Some(h) = by_name(&name) else {
        if e.verdict != PodVerdict::Paused {
            e.detail = format!("sidecar Pod {name} is to be created");
        }
        return;
    };
    match holder(pod, &p.name, h) {
        Holder::Ours => {
            e.have_hash = h.template_hash().map(str::to_string);
            let current = e.have_hash.as_deref() == Some(p.hash.as_str());
            e.verdict = PodVerdict::Served;
            e.detail = format!(
                "sidecar Pod {name}: {}, {}",
                if current {
                    "current template"
                } else {
                    "an older template (the rollout replaces it)"
                },
                if h.ready { "Ready" } else { "not Ready" }
            );
        }
        Holder::Predecessor => {
            e.detail =
                format!("sidecar Pod {name} of an earlier Pod of this name is going away first");
        }
        Holder::Foreign => {
            e.verdict = PodVerdict::NameCollision;
            e.detail =
                format!("Pod {name} exists and is not this policy's sidecar: it is left alone");
        }
    }
}

fn container_verdict(pod: &PodView, p: &PolicyView, e: &mut Explained) {
    e.sidecars = p.injected_containers().map(str::to_string).collect();
    let checks = [
        (pod.is_sidecar(), Ineligible::IsSidecar),
        (p.deleting, Ineligible::PolicyDeleting),
        (p.selector.is_err(), Ineligible::InvalidSpec),
        (!p.selects(&pod.labels), Ineligible::NotSelected),
        (pod.opted_out, Ineligible::OptedOut),
        (pod.deleting, Ineligible::Terminating),
        (pod.terminal(), Ineligible::Terminal),
    ];
    if let Some((_, why)) = checks.iter().find(|(hit, _)| *hit) {
        (e.verdict, e.detail) = ineligible(*why, p);
        return;
    }
    if let Some(h) = pod.injected_hash(&p.name) {
        e.have_hash = Some(h.to_string());
        if h == p.hash {
            e.verdict = PodVerdict::Served;
            e.detail = format!(
                "injected at the current template; the Pod is {}",
                if pod.ready { "Ready" } else { "not Ready" }
            );
        } else {
            e.verdict = PodVerdict::Outdated;
            e.detail = "injected from an older template: updateStrategy RollingUpdate with allowEviction: true evicts the Pod for its controller to recreate it, OnDelete reports it".into();
        }
        return;
    }
    match pod.skipped_for(&p.name) {
        Some(crate::inject::REFUSED_BY_NAMESPACE) => {
            e.verdict = PodVerdict::RefusedByNamespace;
            e.detail = "created without this policy's sidecars: the namespace would have refused the Pod with them (its Pod Security level; the Pod's creation warning and the policy's NotInjected Event quote the checks); never evicted for them".into();
        }
        Some(why) => match why.split_once('@') {
            Some((what, winner)) => {
                e.verdict = PodVerdict::Conflict;
                e.detail = format!(
                    "{} adds {what} too and outranks this policy",
                    crate::cluster::describe(winner)
                );
            }
            None => {
                e.verdict = PodVerdict::NameCollision;
                e.detail = format!("the Pod already had {why}, a name this policy adds");
            }
        },
        None if p.paused() => {
            e.verdict = PodVerdict::Paused;
            e.detail = "the policy is paused: nothing is injected".into();
        }
        None => {
            e.verdict = PodVerdict::WebhookMissed;
            e.detail = "the Pod has no injection of this policy: it was created while the webhook was unavailable, or before the policy".into();
        }
    }
}

#[cfg(test)]
#[path = "explain_tests.rs"]
mod tests;
