//! The counts of a Container-mode policy, from the cached Pods. It has no sidecar Pods: its
//! sidecars are injected into the selected Pods when they are created, and each Pod records
//! them (annotation `sidecars.dev/injected`, [`PodView::injected_hash`]). So the status counts
//! the selected Pods and those that carry its sidecars; it never claims companion Pods.

use crate::inject::REFUSED_BY_NAMESPACE;
use crate::repair::{drift_of, ready_with_sidecars, selected};
use crate::status::{Counts, Observed};
use crate::view::{PodView, PolicyView};

/// Counts for Container-mode `policy` from the Pods of its namespace:
/// - `matched`: selected live Pods (not a sidecar Pod, not terminating or finished, not
///   opted out), whether or not scheduled, paused or not;
/// - `sidecars`: of those, the ones that record this policy's sidecars at any template hash;
/// - `updated`: those that record it at the current hash;
/// - `ready` (and `converged`): updated ones that are Ready and whose injected long-running
///   containers are ready (their container statuses); `available`: recording ones that are
///   Ready;
/// - `missing`: matched Pods that record no injection of this policy;
/// - `collisions`: those of them the webhook left alone because they already had a
///   container or volume of a name the policy would add, as `pod (kind/name)`;
/// - `refused`: those of them the webhook left without the sidecars because their namespace
///   would have refused them with the sidecars (`refused-by-namespace`);
/// - `drifted`: the matched Pods that are missing, refused or outdated, by name.
///
/// A policy being deleted, or one the operator cannot act on, counts nothing.
pub fn observe_injected<'a>(
    policy: &PolicyView,
    pods: impl IntoIterator<Item = &'a PodView>,
) -> Observed {
    let mut c = Counts::default();
    let mut collisions = Vec::new();
    let mut drifted = Vec::new();
    let mut conflicts = Vec::new();
    let mut refused = Vec::new();
    if policy.deleting || policy.selector.is_err() {
        return Observed::default();
    }
    for m in pods.into_iter().filter(|m| selected(policy, m)) {
        // Left to a policy that outranks this one: the winner's Pod, not counted here.
        let winner = m
            .skipped_for(&policy.name)
            .filter(|_| m.injected_hash(&policy.name).is_none())
            .and_then(|why| why.split_once('@'))
            .map(|(_, w)| w);
        if let Some(w) = winner {
            conflicts.push((m.name.clone(), w.to_string()));
            continue;
        }
        c.matched += 1;
        if let Some(drift) = drift_of(policy, m) {
            drifted.push((m.name.clone(), drift));
        }
        if m.injected_hash(&policy.name).is_none() {
            c.missing += 1;
            match m.skipped_for(&policy.name) {
                Some(REFUSED_BY_NAMESPACE) => refused.push((m.namespace.clone(), m.name.clone())),
                Some(why) => collisions.push(format!("{} ({why})", m.name)),
                None => {}
            }
            continue;
        }
        c.sidecars += 1;
        c.updated += i32::from(drift_of(policy, m).is_none());
        c.available += i32::from(m.ready);
        if ready_with_sidecars(policy, m) {
            c.ready += 1;
            c.converged += 1;
        }
    }
    collisions.sort_unstable();
    drifted.sort_unstable();
    conflicts.sort_unstable();
    refused.sort_unstable();
    Observed {
        counts: c,
        collisions,
        drifted,
        conflicts,
        refused,
    }
}

#[cfg(test)]
#[path = "injected_tests.rs"]
mod tests;
