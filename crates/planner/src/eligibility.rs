//! Which (main Pod, policy) pairs want a companion sidecar Pod. A Container-mode policy wants
//! none: its sidecars go into the Pod itself.

use sidecar_api::{Mode, Placement};

use crate::view::{PodView, PolicyView};

/// Why a Pod does not get a sidecar from a policy. The order of the checks is the order
/// of the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// The Pod is itself a sidecar: sidecars never get sidecars.
    IsSidecar,
    /// The policy is being deleted.
    PolicyDeleting,
    /// The operator cannot act on the policy (see [`PolicyView::selector`]).
    InvalidSpec,
    /// The selector does not match the Pod's labels.
    NotSelected,
    /// The policy is in Container mode: its sidecars are injected into the Pod at creation
    /// (by the admission webhook), never a companion Pod.
    ContainerMode,
    /// Annotated `sidecars.dev/inject: "false"`.
    OptedOut,
    /// The Pod is being deleted.
    Terminating,
    /// The Pod has Succeeded or Failed.
    Terminal,
    /// Placement `SameNode` and the Pod is not bound to a node yet.
    Unscheduled,
    /// The policy is paused.
    Paused,
}

impl Ineligible {
    /// A short, stable word for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Ineligible::IsSidecar => "is-sidecar",
            Ineligible::PolicyDeleting => "policy-deleting",
            Ineligible::InvalidSpec => "invalid-spec",
            Ineligible::NotSelected => "not-selected",
            Ineligible::ContainerMode => "container-mode",
            Ineligible::OptedOut => "opted-out",
            Ineligible::Terminating => "terminating",
            Ineligible::Terminal => "terminal",
            Ineligible::Unscheduled => "unscheduled",
            Ineligible::Paused => "paused",
        }
    }
}

/// `Ok(())` when `policy` wants a sidecar Pod for `main`; otherwise the first reason why not.
/// Namespaces must match (callers only pass policies of the Pod's namespace; a mismatch
/// counts as not selected).
pub fn eligibility(main: &PodView, policy: &PolicyView) -> Result<(), Ineligible> {
    if main.is_sidecar() {
        return Err(Ineligible::IsSidecar);
    }
    if policy.deleting {
        return Err(Ineligible::PolicyDeleting);
    }
    if policy.selector.is_err() {
        return Err(Ineligible::InvalidSpec);
    }
    if main.namespace != policy.namespace || !policy.selects(&main.labels) {
        return Err(Ineligible::NotSelected);
    }
    if policy.mode() == Mode::Container {
        return Err(Ineligible::ContainerMode);
    }
    if main.opted_out {
        return Err(Ineligible::OptedOut);
    }
    if main.deleting {
        return Err(Ineligible::Terminating);
    }
    if main.terminal() {
        return Err(Ineligible::Terminal);
    }
    if policy.placement() == Placement::SameNode && main.node_name.is_none() {
        return Err(Ineligible::Unscheduled);
    }
    if policy.paused() {
        return Err(Ineligible::Paused);
    }
    Ok(())
}
