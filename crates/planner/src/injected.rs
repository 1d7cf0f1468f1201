//! The counts of a Container-mode policy, from the cached Pods. It has no sidecar Pods: its
//! sidecars are injected into the selected Pods when they are created, and each Pod records
//! them (annotation `sidecars.dev/injected`, [`PodView::injected_hash`]). So the status counts
//! the selected Pods and those that carry its sidecars; it never claims companion Pods.

use crate::status::{Counts, Observed};
use crate::view::{PodView, PolicyView};

/// Counts for Container-mode `policy` from the Pods of its namespace:
/// - `matched`: selected live Pods (not a sidecar Pod, not terminating or finished, not
///   opted out), whether or not scheduled, paused or not;
/// - `sidecars`: of those, the ones that record this policy's sidecars at any template hash;
/// - `updated`: those that record it at the current hash;
/// - `ready` (and `converged`): updated ones that are Ready; `available`: recording ones
///   that are Ready;
/// - `missing`: matched Pods that record no injection of this policy;
/// - `collisions`: those of them the webhook left alone because they already had a
///   container or volume of a name the policy would add, as `pod (kind/name)`.
///
/// A policy being deleted, or one the operator cannot act on, counts nothing.
pub fn observe_injected<'a>(
    policy: &PolicyView,
    pods: impl IntoIterator<Item = &'a PodView>,
) -> Observed {
    let mut c = Counts::default();
    let mut collisions = Vec::new();
    if policy.deleting || policy.selector.is_err() {
        return Observed::default();
    }
    let live = pods.into_iter().filter(|m| {
        !m.is_sidecar()
            && m.namespace == policy.namespace
            && policy.selects(&m.labels)
            && !m.opted_out
            && !m.deleting
            && !m.terminal()
    });
    for m in live {
        c.matched += 1;
        let Some(hash) = m.injected_hash(&policy.name) else {
            c.missing += 1;
            if let Some(why) = m.skipped_for(&policy.name) {
                collisions.push(format!("{} ({why})", m.name));
            }
            continue;
        };
        let current = hash == policy.hash;
        c.sidecars += 1;
        c.updated += i32::from(current);
        c.available += i32::from(m.ready);
        if current && m.ready {
            c.ready += 1;
            c.converged += 1;
        }
    }
    collisions.sort_unstable();
    Observed {
        counts: c,
        collisions,
    }
}

#[cfg(test)]
#[path = "injected_tests.rs"]
mod tests;
