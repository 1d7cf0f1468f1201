//! Container mode's repair: selected Pods that run without the current sidecars are
//! evicted, within `maxUnavailable`, so that their controller recreates them and the webhook
//! injects the replacements.
//!
//! A Pod's drift comes from its injection record alone: not injected (created while the
//! webhook was unavailable, or before the policy) or injected at an older template hash.
//! Only Pods of the built-in controllers that recreate them are evicted (`apps/v1` ReplicaSet,
//! StatefulSet, DaemonSet, core `v1` ReplicationController: kind and group); bare Pods and Pods of any other owner
//! (Jobs, workflow engines, VMs...) are reported, never evicted, and so are Pods
//! the webhook left alone for a name collision (a replacement would collide again). Mirror Pods
//! (a kubelet's static Pods) are not even selected: they are never injected. Each eviction
//! holds one unit of the budget until its replacement — a Pod of the same owner that did not
//! exist when the eviction was sent — is Ready with the current sidecars; `maxUnavailable`
//! holds for the policy's selected Pods and, separately, for each owner's (at least 1), and
//! evicting a Pod that is not Ready takes a share of the step too: only a Pod that never
//! started is free. A Pod the webhook left without the sidecars because its namespace would
//! refuse them is never evicted. A replacement that
//! comes up without any means the webhook is not injecting: the repair stops there rather
//! than evict the same workload forever. One injected from an older template (a webhook
//! replica that had not seen the change yet) is just drifted, like any other.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use sidecar_api::{Mode, UpdateStrategyType};

use crate::view::{OwnerApi, OwnerView, Phase, PodView, PolicyView};

/// Owner kinds whose evicted Pods come back as replacements of the same owner (an allowlist:
/// evicting a Job's, a workflow step's or a VM's Pod would destroy its work), each with its
/// API group: a custom resource that happens to be called `ReplicaSet` is none of them.
pub const RECREATING_OWNERS: [(OwnerApi, &str); 4] = [
    (OwnerApi::Apps, "ReplicaSet"),
    (OwnerApi::Apps, "StatefulSet"),
    (OwnerApi::Apps, "DaemonSet"),
    (OwnerApi::Core, "ReplicationController"),
];

/// How a selected Pod differs from the policy's current sidecars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Drift {
    /// It records no injection of this policy.
    Missing,
    /// It records this policy's sidecars at an older template hash.
    Outdated,
    /// The webhook left the sidecars out: its namespace would have refused the Pod with them
    /// (`refused-by-namespace`). Never evicted: a replacement would be refused the same way.
    Refused,
}

impl Drift {
    /// The word used in status and `check`.
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Missing => "missing",
            Drift::Outdated => "outdated",
            Drift::Refused => "refused",
        }
    }
}

/// The drift of `m` for Container-mode `policy` (`None`: it has the current sidecars).
pub fn drift_of(policy: &PolicyView, m: &PodView) -> Option<Drift> {
    match m.injected_hash(&policy.name) {
        None if m.skipped_for(&policy.name) == Some(crate::inject::REFUSED_BY_NAMESPACE) => {
            Some(Drift::Refused)
        }
        None => Some(Drift::Missing),
        Some(h) if h != policy.hash => Some(Drift::Outdated),
        Some(_) => None,
    }
}

/// `m` has the current sidecars, is Ready, and so are they.
pub fn ready_with_sidecars(policy: &PolicyView, m: &PodView) -> bool {
    drift_of(policy, m).is_none() && m.ready && m.containers_ready(policy.injected_containers())
}

/// A selected, live Pod of Container-mode `policy` (what its status counts). Never a mirror
/// Pod: no webhook can give it the sidecars (see [`PodView::mirror`]), so it would be
/// drifted forever.
pub fn selected(policy: &PolicyView, m: &PodView) -> bool {
    !m.is_sidecar()
        && !m.mirror
        && m.namespace == policy.namespace
        && policy.selects(&m.labels)
        && !m.opted_out
        && !m.deleting
        && !m.terminal()
}

/// The controller owner that would recreate `m` if it were evicted, if any.
pub fn recreating_owner(m: &PodView) -> Option<&OwnerView> {
    m.owner.as_ref().filter(|o| {
        RECREATING_OWNERS
            .iter()
            .any(|(api, kind)| o.api_version == *api && o.kind == *kind)
    })
}

/// What limits a repair step beyond the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairLimits {
    /// The webhook serves the policy's namespace (false for kube-system, kube-public,
    /// kube-node-lease and the operator's own: their replacements would never be injected).
    pub served: bool,
    /// The last step was halted: at most one eviction, a probe of the webhook.
    pub probe: bool,
    /// The API server refused an eviction and its backoff runs: nothing is evicted, every
    /// candidate waits.
    pub blocked: bool,
    /// The namespace refuses Pods with the current sidecars (the injection check): a
    /// replacement would come without them, so nothing is evicted.
    pub refused: bool,
}

impl Default for RepairLimits {
    fn default() -> Self {
        RepairLimits {
            served: true,
            probe: false,
            blocked: false,
            refused: false,
        }
    }
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
    /// The evicted Pod's name (for status).
    pub name: String,
    /// Sent longer ago than a replacement takes to appear (the controller's deadline).
    pub overdue: bool,
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
            name: self.name.clone(),
            overdue: false,
        }
    }
}

/// One step of a policy's repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repair {
    /// Whether the repair is on (Container mode, RollingUpdate, not paused, readable, in a
    /// namespace the webhook serves).
    pub active: bool,
    /// RollingUpdate was asked for in a namespace the webhook never serves (so nothing is
    /// evicted).
    pub unserved: bool,
    /// RollingUpdate was asked for in a namespace that refuses Pods with the current
    /// sidecars (so nothing is evicted: the replacements would come without them).
    pub refused: bool,
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
    /// not injecting; nothing is evicted but, once a minute, one probe.
    pub halted: Option<String>,
    /// The uid of the sent eviction that replacement answered (the one to retry first).
    pub halting: Option<String>,
    /// Drifted Pods no controller would recreate: reported, never evicted; sorted.
    pub unowned: Vec<String>,
    /// Evictions whose owner did not bring a selected replacement: that owner's repair is
    /// halted (nothing more of it is evicted) and their budget stays held until a
    /// replacement is there or the owner has no Pod left.
    pub stalled: Vec<Stall>,
}

/// An eviction whose replacement is not there as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// The evicted Pod.
    pub pod: String,
    /// Why.
    pub why: StallReason,
}

/// Why a [`Stall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StallReason {
    /// The owner has not created a replacement by the deadline (its creates refused:
    /// quota, admission...).
    NotCreated,
    /// The owner created this Pod in its place, which the policy does not select (labels
    /// set after admission): evicting more of its Pods would never bring the sidecars.
    NotSelected(String),
}

impl Repair {
    /// The repair has something to do or to wait for: evictions to send, in flight, or
    /// waiting for the budget.
    pub fn working(&self) -> bool {
        !self.evict.is_empty() || self.in_flight > 0 || self.waiting > 0
    }
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
    limits: RepairLimits,
) -> Repair {
    let wanted = policy.mode() == Mode::Container
        && !policy.paused()
        && !policy.deleting
        && policy.selector.is_ok()
        && policy.strategy() == UpdateStrategyType::RollingUpdate;
    if !wanted || !limits.served || limits.refused {
        return Repair {
            unserved: wanted && !limits.served,
            refused: wanted && limits.served && limits.refused,
            done: sent.iter().map(|e| e.uid.clone()).collect(),
            ..Repair::default()
        };
    }
    let all: Vec<&PodView> = pods
        .into_iter()
        .filter(|m| m.namespace == policy.namespace && !m.is_sidecar() && !m.deleting)
        .collect();
    let live: Vec<&PodView> = all
        .iter()
        .copied()
        .filter(|m| selected(policy, m))
        .collect();
    let mut out = Repair {
        active: true,
        max_unavailable: policy
            .policy
            .spec
            .update_strategy
            .max_unavailable_for(u32::try_from(live.len()).unwrap_or(u32::MAX))
            .unwrap_or(1),
        ..Repair::default()
    };
    let evicting: HashSet<&str> = sent.iter().map(|e| e.uid.as_str()).collect();
    let live_uids: HashSet<&str> = live.iter().map(|m| m.uid.as_str()).collect();
    // The live Pods of each controller owner: replacements are found, and siblings
    // recorded, among them.
    let mut by_owner: HashMap<&str, Vec<&PodView>> = HashMap::new();
    for m in &live {
        if let Some(o) = &m.owner {
            by_owner.entry(o.uid.as_str()).or_default().push(m);
        }
    }
    // Every live Pod of each owner, selected or not: a replacement the policy does not
    // select is found among them.
    let mut all_of_owner: HashMap<&str, Vec<&PodView>> = HashMap::new();
    for m in &all {
        if let Some(o) = &m.owner {
            all_of_owner.entry(o.uid.as_str()).or_default().push(m);
        }
    }
    // Owners whose repair is halted by a stalled replacement.
    let mut halted_owners: HashSet<&str> = HashSet::new();
    // Each sent eviction: still there (the cache has not seen it go), waiting for a
    // replacement, replaced and Ready (done), or replaced without the sidecars (halted).
    // A Pod answers one eviction at most (`matched`); `claimed` ones also hold its budget.
    let mut matched: HashSet<&str> = HashSet::new();
    let mut claimed: HashSet<&str> = HashSet::new();
    // The owner of each eviction still holding the budget.
    let mut in_flight_owners: Vec<&str> = Vec::new();
    for e in sent {
        if live_uids.contains(e.uid.as_str()) {
            out.in_flight += 1;
            in_flight_owners.push(&e.owner_uid);
            continue;
        }
        let replacement = by_owner
            .get(e.owner_uid.as_str())
            .into_iter()
            .flatten()
            .find(|m| !e.siblings.contains(&m.uid) && !matched.contains(m.uid.as_str()));
        let Some(r) = replacement else {
            let owner_pods = all_of_owner.get(e.owner_uid.as_str());
            let unselected = owner_pods
                .into_iter()
                .flatten()
                .find(|m| !e.siblings.contains(&m.uid) && !matched.contains(m.uid.as_str()));
            let why = match (unselected, e.overdue) {
                (Some(u), _) => {
                    matched.insert(&u.uid);
                    Some(StallReason::NotSelected(u.name.clone()))
                }
                // Scaled to zero or deleted: it wants no replacement.
                (None, true) if owner_pods.is_none() => {
                    out.done.push(e.uid.clone());
                    continue;
                }
                (None, true) => Some(StallReason::NotCreated),
                (None, false) => None,
            };
            out.in_flight += 1;
            in_flight_owners.push(&e.owner_uid);
            if let Some(why) = why {
                halted_owners.insert(&e.owner_uid);
                out.stalled.push(Stall {
                    pod: e.name.clone(),
                    why,
                });
            }
            continue;
        };
        matched.insert(&r.uid);
        match drift_of(policy, r) {
            // Injected from an older template (a webhook replica had not seen the change
            // yet), or left alone for a name collision: the eviction is done; the
            // replacement is drifted like any other Pod.
            Some(Drift::Outdated) => out.done.push(e.uid.clone()),
            // Created without the sidecars because the namespace would have refused it with
            // them: the replacement exists (no replica lost), it is never evicted again.
            Some(Drift::Refused) => out.done.push(e.uid.clone()),
            Some(Drift::Missing) if r.skipped_for(&policy.name).is_some() => {
                out.done.push(e.uid.clone());
            }
            // Not injected at all: the webhook is not injecting. Evicting more would only
            // replace Pods with more Pods without the sidecars.
            Some(Drift::Missing) => {
                claimed.insert(&r.uid);
                out.in_flight += 1;
                in_flight_owners.push(&e.owner_uid);
                if out.halted.is_none() {
                    out.halted = Some(r.name.clone());
                    out.halting = Some(e.uid.clone());
                }
            }
            None if ready_with_sidecars(policy, r) => out.done.push(e.uid.clone()),
            None => {
                claimed.insert(&r.uid);
                out.in_flight += 1;
                in_flight_owners.push(&e.owner_uid);
            }
        }
    }
    // The policy's budget, and each owner's: its own maxUnavailable over its selected Pods
    // (at least 1), so a small workload beside a big one never loses every replica in one
    // step. Evictions in flight, and Pods not Ready now, count against both.
    let mut whole = Budget::new(i64::from(out.max_unavailable));
    let mut owners: HashMap<&str, Budget> = by_owner
        .iter()
        .map(|(o, pods)| {
            let n = u32::try_from(pods.len()).unwrap_or(u32::MAX);
            (
                *o,
                Budget::new(i64::from(
                    policy
                        .policy
                        .spec
                        .update_strategy
                        .max_unavailable_for(n)
                        .unwrap_or(1),
                )),
            )
        })
        .collect();
    for e in in_flight_owners {
        whole.in_flight();
        if let Some(b) = owners.get_mut(e) {
            b.in_flight();
        }
    }
    for m in live.iter().filter(|m| {
        !m.ready && !claimed.contains(m.uid.as_str()) && !evicting.contains(m.uid.as_str())
    }) {
        whole.not_ready();
        if let Some(b) = m
            .owner
            .as_ref()
            .and_then(|o| owners.get_mut(o.uid.as_str()))
        {
            b.not_ready();
        }
    }
    let mut candidates: Vec<(&PodView, Drift, &str)> = Vec::new();
    for m in &live {
        let Some(drift) = drift_of(policy, m) else {
            continue;
        };
        if evicting.contains(m.uid.as_str()) || claimed.contains(m.uid.as_str()) {
            continue;
        }
        // A name collision comes back with every replacement (reported as NameCollision).
        if m.skipped_for(&policy.name).is_some() {
            continue;
        }
        match recreating_owner(m) {
            Some(owner) => candidates.push((m, drift, owner.uid.as_str())),
            None => out.unowned.push(m.name.clone()),
        }
    }
    out.unowned.sort_unstable();
    candidates.sort_by(|a, b| (a.0.ready, &a.0.name).cmp(&(b.0.ready, &b.0.name)));
    // One set of an owner's Pods per step, shared by its evictions.
    let mut siblings: HashMap<&str, Arc<BTreeSet<String>>> = HashMap::new();
    for (m, drift, owner) in candidates {
        // A Pod that never started costs nothing to evict. One not Ready is unavailable
        // already, but its eviction still takes a step's share (20 of them never go at
        // once); a Ready one takes the budget too. A probe is one eviction, whatever it
        // costs.
        let cost = match (m.ready, m.phase) {
            (false, Phase::Pending) => Cost::Free,
            (false, _) => Cost::NotReady,
            (true, _) => Cost::Ready,
        };
        let probed = limits.probe && !out.evict.is_empty();
        let held = limits.blocked || (out.halted.is_some() && !limits.probe);
        let fits = whole.allows(cost) && owners.get(owner).is_none_or(|b| b.allows(cost));
        if held || probed || !fits || halted_owners.contains(owner) {
            out.waiting += 1;
            continue;
        }
        whole.spend(cost);
        if let Some(b) = owners.get_mut(owner) {
            b.spend(cost);
        }
        let of_owner = siblings.entry(owner).or_insert_with(|| {
            let pods = by_owner.get(owner).into_iter().flatten();
            Arc::new(pods.map(|p| p.uid.clone()).collect())
        });
        out.evict.push(Evict {
            name: m.name.clone(),
            uid: m.uid.clone(),
            drift,
            owner_uid: owner.to_string(),
            siblings: of_owner.clone(),
        });
    }
    out
}

/// What evicting one Pod costs (see [`plan_repair`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cost {
    /// It never started: nothing.
    Free,
    /// Not Ready (unavailable already): a share of the step.
    NotReady,
    /// Ready: a share of the step and a unit of the budget.
    Ready,
}

/// A `maxUnavailable` being spent: `step` is what evictions may still take (the maximum less
/// those in flight), `available` what Ready Pods may still lose (`step` less the Pods not
/// Ready now).
#[derive(Debug, Clone, Copy)]
struct Budget {
    step: i64,
    available: i64,
}

impl Budget {
    fn new(max: i64) -> Budget {
        Budget {
            step: max,
            available: max,
        }
    }

    fn in_flight(&mut self) {
        self.step -= 1;
        self.available -= 1;
    }

    fn not_ready(&mut self) {
        self.available -= 1;
    }

    fn allows(&self, cost: Cost) -> bool {
        match cost {
            Cost::Free => true,
            Cost::NotReady => self.step > 0,
            Cost::Ready => self.step > 0 && self.available > 0,
        }
    }

    fn spend(&mut self, cost: Cost) {
        match cost {
            Cost::Free => {}
            Cost::NotReady => self.step -= 1,
            Cost::Ready => {
                self.step -= 1;
                self.available -= 1;
            }
        }
    }
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
