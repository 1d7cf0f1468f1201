//! Container mode's repair: selected Pods that run without the current sidecars are
//! evicted, within `maxUnavailable`, so that their controller recreates them and the webhook
//! injects the replacements.
//!
//! A Pod's drift comes from its injection record alone: not injected (created while the
//! webhook was unavailable, or before the policy) or injected at an older template hash.
//! Only Pods a controller owns are evicted (a ReplicaSet, StatefulSet, DaemonSet... recreates
//! them); bare Pods, Job Pods and mirror Pods are reported, never evicted. Each eviction
//! holds one unit of the budget until its replacement — a Pod of the same owner that did not
//! exist when the eviction was sent — is Ready with the current sidecars. A replacement that
//! comes up without any means the webhook is not injecting: the repair stops there rather
//! than evict the same workload forever. One injected from an older template (a webhook
//! replica that had not seen the change yet) is just drifted, like any other.

use std::collections::BTreeSet;
use std::sync::Arc;

use sidecar_api::{Mode, UpdateStrategyType};

use crate::view::{OwnerView, PodView, PolicyView};

/// Owner kinds whose Pods are not evicted: nothing recreates a Job's finished work the same
/// way, a mirror Pod (owned by its Node) is the kubelet's, a sidecar Pod is ours.
const NOT_EVICTED_OWNERS: [&str; 3] = ["Job", "Node", "Pod"];

/// How a selected Pod differs from the policy's current sidecars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Drift {
    /// It records no injection of this policy.
    Missing,
    /// It records this policy's sidecars at an older template hash.
    Outdated,
}

impl Drift {
    /// The word used in status and `check`.
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Missing => "missing",
            Drift::Outdated => "outdated",
        }
    }
}

/// The drift of `m` for Container-mode `policy` (`None`: it has the current sidecars).
pub fn drift_of(policy: &PolicyView, m: &PodView) -> Option<Drift> {
    match m.injected_hash(&policy.name) {
        None => Some(Drift::Missing),
        Some(h) if h != policy.hash => Some(Drift::Outdated),
        Some(_) => None,
    }
}

/// `m` has the current sidecars, is Ready, and so are they.
pub fn ready_with_sidecars(policy: &PolicyView, m: &PodView) -> bool {
    drift_of(policy, m).is_none() && m.ready && m.containers_ready(policy.injected_containers())
}

/// A selected, live Pod of Container-mode `policy` (what its status counts).
pub fn selected(policy: &PolicyView, m: &PodView) -> bool {
    !m.is_sidecar()
        && m.namespace == policy.namespace
        && policy.selects(&m.labels)
        && !m.opted_out
        && !m.deleting
        && !m.terminal()
}

/// The controller owner that would recreate `m` if it were evicted, if any.
pub fn recreating_owner(m: &PodView) -> Option<&OwnerView> {
    m.owner
        .as_ref()
        .filter(|o| !NOT_EVICTED_OWNERS.contains(&o.kind.as_str()))
}

/// An eviction the controller sent and remembers until its replacement is Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEviction {
    /// The evicted Pod's uid.
    pub uid: String,
    /// Its controller owner's uid.
    pub owner_uid: String,
    /// uids of that owner's Pods when it was sent: a replacement is none of them.
    pub siblings: Arc<BTreeSet<String>>,
}

/// A Pod to evict now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evict {
    /// Name.
    pub name: String,
    /// uid (the eviction's precondition).
    pub uid: String,
    /// Why.
    pub drift: Drift,
    /// Its controller owner's uid.
    pub owner_uid: String,
    /// uids of the owner's selected Pods now (see [`SentEviction::siblings`]).
    pub siblings: Arc<BTreeSet<String>>,
}

impl Evict {
    /// What to remember once it was sent.
    pub fn sent(&self) -> SentEviction {
        SentEviction {
            uid: self.uid.clone(),
            owner_uid: self.owner_uid.clone(),
            siblings: self.siblings.clone(),
        }
    }
}

/// One step of a policy's repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repair {
    /// Whether the repair is on (Container mode, RollingUpdate, not paused, readable).
    pub active: bool,
    /// Pods to evict now, within the budget.
    pub evict: Vec<Evict>,
    /// uids of sent evictions that are done (the replacement is Ready with the sidecars)
    /// or moot (the repair is off): forget them.
    pub done: Vec<String>,
    /// Sent evictions still holding the budget.
    pub in_flight: u32,
    /// `maxUnavailable` resolved over the selected Pods.
    pub max_unavailable: u32,
    /// Drifted Pods that may be evicted and are not yet (waiting for the budget).
    pub waiting: u32,
    /// A replacement that came up without the current sidecars (its name): the webhook is
    /// not injecting, nothing more is evicted.
    pub halted: Option<String>,
    /// Drifted Pods no controller would recreate: reported, never evicted; sorted.
    pub unowned: Vec<String>,
}

/// The repair step for `policy` over `pods` (its namespace's Pods), given the evictions sent
/// and not yet done.
///
/// Budget: of the selected Pods, at most `maxUnavailable` are unavailable after the step —
/// not Ready, or evicted and not yet replaced by a Pod Ready with the current sidecars. A
/// drifted Pod that is not Ready costs nothing to evict (it is unavailable already) and goes
/// first; then by name.
pub fn plan_repair<'a>(
    policy: &PolicyView,
    pods: impl IntoIterator<Item = &'a PodView>,
    sent: &[SentEviction],
) -> Repair {
    let active = policy.mode() == Mode::Container
        && !policy.paused()
        && !policy.deleting
        && policy.selector.is_ok()
        && policy.strategy() == UpdateStrategyType::RollingUpdate;
    if !active {
        return Repair {
            done: sent.iter().map(|e| e.uid.clone()).collect(),
            ..Repair::default()
        };
    }
    let live: Vec<&PodView> = pods.into_iter().filter(|m| selected(policy, m)).collect();
    let mut out = Repair {
        active,
        max_unavailable: policy
            .policy
            .spec
            .update_strategy
            .max_unavailable_for(u32::try_from(live.len()).unwrap_or(u32::MAX))
            .unwrap_or(1),
        ..Repair::default()
    };
    // Each sent eviction: still there (the cache has not seen it go), waiting for a
    // replacement, replaced and Ready (done), or replaced without the sidecars (halted).
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    for e in sent {
        if live.iter().any(|m| m.uid == e.uid) {
            out.in_flight += 1;
            continue;
        }
        let replacement = live.iter().find(|m| {
            m.owner.as_ref().is_some_and(|o| o.uid == e.owner_uid)
                && !e.siblings.contains(&m.uid)
                && !claimed.contains(m.uid.as_str())
        });
        let Some(r) = replacement else {
            out.in_flight += 1;
            continue;
        };
        match drift_of(policy, r) {
            // Injected from an older template: a webhook replica had not seen the change
            // yet. The eviction is done; the replacement is drifted like any other Pod.
            Some(Drift::Outdated) => out.done.push(e.uid.clone()),
            // Not injected at all: the webhook is not injecting. Evicting more would only
            // replace Pods with more Pods without the sidecars.
            Some(Drift::Missing) => {
                claimed.insert(&r.uid);
                out.in_flight += 1;
                out.halted.get_or_insert_with(|| r.name.clone());
            }
            None if ready_with_sidecars(policy, r) => {
                claimed.insert(&r.uid);
                out.done.push(e.uid.clone());
            }
            None => {
                claimed.insert(&r.uid);
                out.in_flight += 1;
            }
        }
    }
    let evicting = |m: &PodView| sent.iter().any(|e| e.uid == m.uid);
    let not_ready = live
        .iter()
        .filter(|m| !m.ready && !claimed.contains(m.uid.as_str()) && !evicting(m))
        .count();
    let mut budget = i64::from(out.max_unavailable)
        - i64::from(out.in_flight)
        - i64::try_from(not_ready).unwrap_or(i64::MAX);
    let mut candidates: Vec<(&PodView, Drift, &str)> = Vec::new();
    for m in &live {
        let Some(drift) = drift_of(policy, m) else {
            continue;
        };
        if evicting(m) || claimed.contains(m.uid.as_str()) {
            continue;
        }
        match recreating_owner(m) {
            Some(owner) => candidates.push((m, drift, owner.uid.as_str())),
            None => out.unowned.push(m.name.clone()),
        }
    }
    out.unowned.sort_unstable();
    candidates.sort_by(|a, b| (a.0.ready, &a.0.name).cmp(&(b.0.ready, &b.0.name)));
    let mut waiting = 0u32;
    for (m, drift, owner) in candidates {
        if out.halted.is_some() || (m.ready && budget <= 0) {
            waiting += 1;
            continue;
        }
        if m.ready {
            budget -= 1;
        }
        let siblings = live
            .iter()
            .filter(|p| p.owner.as_ref().is_some_and(|o| o.uid == owner))
            .map(|p| p.uid.clone())
            .collect();
        out.evict.push(Evict {
            name: m.name.clone(),
            uid: m.uid.clone(),
            drift,
            owner_uid: owner.to_string(),
            siblings: Arc::new(siblings),
        });
    }
    out.waiting = waiting;
    out
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
