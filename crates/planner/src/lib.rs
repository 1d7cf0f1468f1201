//! Pure logic of the sidecar operator. No I/O, no async, no clock: the crate depends on
//! `kube-core` (types, label selectors), not on `kube` with its client and runtime, so the
//! compiler refuses a request from here.
//!
//! The controller observes the cluster into slim views ([`PodView`], [`PolicyView`]),
//! asks this crate what to do, and applies the answer:
//!
//! - [`cluster`]: a ClusterSidecarPolicy as one policy instance per namespace it applies in.
//! - [`explain`]: `sidecar-operator explain pod`: every policy's verdict on one Pod, and why.
//! - [`eligibility`]: is a main Pod wanted by a policy (selected, live, not paused, not
//!   opted out, not terminating or finished, scheduled when placement is `SameNode`)?
//! - [`naming`]: the deterministic sidecar name, at most 63 characters.
//! - [`outcome`]: what the API server's answer to a write means (refused, lagging, gone).
//! - [`render`]: the sidecar Pod for a (main Pod, policy) pair.
//! - [`relevance`]: which Pod changes can change a decision (the others trigger nothing).
//! - [`plan`]: the diff for one main Pod, as a [`PodPlan`] value (creates, deletes,
//!   name collisions). Applying it twice is harmless: names are deterministic and
//!   deletes carry the uid of the Pod they mean.
//! - [`view`]: the slim views the controller caches; a policy's view holds the outcome of
//!   [`sidecar_api::validate`] (a spec the current CRD refuses selects nothing).
//! - [`labels`]: compact Pod labels and selector matching on them.
//! - [`rollout`]: which stale sidecars to replace now, within `maxUnavailable`.
//! - [`failed`]: when to replace sidecars that ended `Failed` or `Succeeded`.
//! - [`template_check`]: the verdict of the API server's dry run of a policy's template.
//! - [`status`]: a policy's status (counts and conditions), computed from the views;
//!   [`injected`]: the counts of a Container-mode policy (selected Pods, and those that
//!   record its sidecars).
//! - [`inject`]: Container mode: the sidecars the admission webhook adds to a Pod being
//!   created.
//! - [`repair`]: Container mode: which drifted Pods (missing or outdated sidecars) to evict
//!   now, within `maxUnavailable`.

pub mod cluster;
pub mod eligibility;
pub mod explain;
pub mod failed;
pub mod inject;
pub mod injected;
pub mod labels;
pub mod naming;
pub mod outcome;
pub mod plan;
pub mod pod_security;
pub mod relevance;
pub mod render;
pub mod repair;
pub mod rollout;
pub mod status;
pub mod template_check;
pub mod view;

pub use cluster::{ClusterScope, cluster_id, cluster_name, names_namespace};
pub use eligibility::{Ineligible, eligibility};
pub use explain::{Explained, PodVerdict, explain_pod};
pub use failed::{FAILING_AFTER, FAILURE_MEMORY, failed_replacement, failing, replacement_delay};
pub use injected::observe_injected;
pub use labels::{LabelMatcher, Labels};
pub use naming::sidecar_name;
pub use outcome::{CreateFailure, create_failure, delete_settled, status_write_settled};
pub use plan::{
    Collision, DeleteReason, DeleteSidecar, Holder, PodPlan, conflict_winner, holder, judgeable,
    plan_orphan, plan_pod,
};
pub use relevance::{Relevance, relevance};
pub use render::render;
pub use repair::{
    Drift, Evict, Repair, RepairLimits, SentEviction, Stall, StallReason, drift_of, plan_repair,
    ready_with_sidecars,
};
pub use rollout::{Replace, plan_rollout};
pub use status::{
    Counts, DRIFT_NAMES, Observed, Problems, RepairSeen, compute_status, observe, observe_among,
};
pub use template_check::{Verdict, dry_run_sidecar, injection_probe, recheck_delay};
pub use view::{OwnerApi, OwnerView, Phase, PodView, PolicyView, policy_id};

#[cfg(test)]
mod test_fixtures;
#[cfg(test)]
mod tests;
