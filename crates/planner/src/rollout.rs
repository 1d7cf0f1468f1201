//! The rolling replacement of stale sidecars within `maxUnavailable`.

use sidecar_api::{Mode, UpdateStrategyType};

use crate::eligibility::eligibility;
use crate::naming::sidecar_name;
use crate::plan::{DeleteReason, DeleteSidecar, Holder, holder};
use crate::view::{PodView, PolicyView};

/// A stale sidecar to delete now (the pod controller then recreates it from the current
/// template), with the main Pod it serves (for the Event on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replace {
    /// The delete (reason [`DeleteReason::Stale`]).
    pub delete: DeleteSidecar,
    /// Name of the main Pod.
    pub main_name: String,
    /// uid of the main Pod.
    pub main_uid: String,
}

/// One step of a policy's rollout: the stale sidecars to delete now.
///
/// `mains` are the Pods of the policy's namespace, `by_name` looks one up by name, and
/// `delete_pending` tells the sidecars whose delete was sent but is not yet in the cache:
/// they count as unavailable already, so a step that runs before the watch shows the
/// previous step's deletes (a template change in the middle of a rollout) never exceeds
/// `maxUnavailable`.
///
/// Rules: nothing for a paused policy, one the operator cannot read, or `OnDelete`. Of
/// the eligible main Pods, at most `maxUnavailable` lack a Ready sidecar after the step.
/// Stale sidecars that are not Ready go first and cost nothing; Ready ones spend the
/// budget, by name. Sidecars that ended `Failed`/`Succeeded` are the pod controller's.
pub fn plan_rollout<'a>(
    policy: &PolicyView,
    mains: impl IntoIterator<Item = &'a PodView>,
    by_name: impl Fn(&str) -> Option<&'a PodView>,
    delete_pending: impl Fn(&str) -> bool,
) -> Vec<Replace> {
    // Container mode has no sidecar Pods to replace (eligibility says so too).
    if policy.paused()
        || policy.mode() == Mode::Container
        || policy.selector.is_err()
        || policy.strategy() != UpdateStrategyType::RollingUpdate
    {
        return Vec::new();
    }
    let (mut matched, mut available) = (0u32, 0u32);
    let mut stale: Vec<(&PodView, &PodView)> = Vec::new();
    for m in mains {
        if eligibility(m, policy).is_err() {
            continue;
        }
        matched += 1;
        let Some(s) = by_name(&sidecar_name(&m.name, &policy.name)) else {
            continue;
        };
        if holder(m, &policy.name, s) != Holder::Ours
            || s.deleting
            || s.terminal()
            || delete_pending(&s.uid)
        {
            continue;
        }
        available += u32::from(s.ready);
        if s.template_hash() != Some(&policy.hash) {
            stale.push((m, s));
        }
    }
    if stale.is_empty() {
        return Vec::new();
    }
    let max = policy
        .policy
        .spec
        .update_strategy
        .max_unavailable_for(matched)
        .unwrap_or(1);
    let mut budget = i64::from(max) - i64::from(matched - available);
    stale.sort_by(|a, b| (a.1.ready, &a.1.name).cmp(&(b.1.ready, &b.1.name)));
    let mut out = Vec::new();
    for (m, s) in stale {
        if s.ready {
            if budget <= 0 {
                break;
            }
            budget -= 1;
        }
        out.push(Replace {
            delete: DeleteSidecar {
                name: s.name.clone(),
                uid: s.uid.clone(),
                policy: policy.name.clone(),
                reason: DeleteReason::Stale,
            },
            main_name: m.name.clone(),
            main_uid: m.uid.clone(),
        });
    }
    out
}
