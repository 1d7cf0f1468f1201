//! What the operator knows about each policy beyond its caches, with one lifecycle: set
//! by reconciles, cleared by a new generation (what was refused may now pass), forgotten
//! with the policy (deleted, or its namespace left the scope).
//!
//! - refusals of its sidecars' creates (the API server's message),
//! - the name collisions already reported by an Event (pruned to the ones that still hold),
//! - its failed sidecars replaced in a row (forgotten after [`FAILURE_MEMORY`]),
//! - the API server's verdict on its current template (a dry run, `template_check`),
//! - how many of its pairs have not converged (the `pairs_not_converged` gauge),
//! - Container mode's repair: the evictions sent, a budget's refusal (`repair`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sidecar_planner::{FAILURE_MEMORY, failed_replacement};

use crate::keys::{PodKey, PolicyKey};
use crate::lock;
use crate::repair::RepairMemory;
use crate::template_check::TemplateChecks;

type Gauge = prometheus_client::metrics::gauge::Gauge;

/// A failed sidecar's replacements in a row.
#[derive(Debug)]
struct Replaced {
    policy: String,
    count: u32,
    last: Instant,
}

/// Per-policy state; see the module doc.
#[derive(Debug, Default)]
pub(crate) struct PolicyState {
    /// The API server's last refusal of one of its sidecars (its message).
    refused: Mutex<HashMap<PolicyKey, String>>,
    /// The (name, holder uid) collisions already reported by an Event.
    reported: Mutex<HashMap<PolicyKey, BTreeSet<(String, String)>>>,
    /// Failed sidecars replaced, per sidecar.
    replaced: Mutex<HashMap<PodKey, Replaced>>,
    templates: Mutex<TemplateChecks>,
    not_converged: Mutex<HashMap<PolicyKey, i64>>,
    /// Container mode's repair (evictions sent, budget refusals).
    repair: Mutex<HashMap<PolicyKey, RepairMemory>>,
}

impl PolicyState {
    /// The last refusal of policy `key`'s sidecar creates, if any.
    pub(crate) fn refused(&self, key: &PolicyKey) -> Option<String> {
        lock(&self.refused).get(key).cloned()
    }

    /// Records (or clears) a refusal; true when it is new or its message changed.
    pub(crate) fn set_refused(&self, key: &PolicyKey, message: Option<String>) -> bool {
        let mut r = lock(&self.refused);
        if r.get(key) == message.as_ref() {
            return false;
        }
        match message {
            Some(m) => r.insert(key.clone(), m),
            None => r.remove(key),
        };
        true
    }

    /// A new generation may fix what was refused: forget it.
    pub(crate) fn clear(&self, key: &PolicyKey) {
        lock(&self.refused).remove(key);
    }

    /// The policy is gone (or out of scope): forget everything about it (its
    /// not-converged count goes through [`PolicyState::set_not_converged`], which feeds a
    /// gauge).
    pub(crate) fn forget(&self, key: &PolicyKey) {
        lock(&self.refused).remove(key);
        lock(&self.reported).remove(key);
        lock(&self.templates).forget(key);
        lock(&self.replaced).retain(|k, v| !(k.0 == key.0 && v.policy == key.1));
        lock(&self.repair).remove(key);
    }

    /// Runs `f` on policy `key`'s repair memory if it has one (most policies never repair:
    /// nothing is kept for them).
    pub(crate) fn peek_repair<T>(
        &self,
        key: &PolicyKey,
        f: impl FnOnce(&mut RepairMemory) -> T,
    ) -> Option<T> {
        lock(&self.repair).get_mut(key).map(f)
    }

    /// Runs `f` on policy `key`'s repair memory, made if missing.
    pub(crate) fn with_repair<T>(
        &self,
        key: &PolicyKey,
        f: impl FnOnce(&mut RepairMemory) -> T,
    ) -> T {
        f(lock(&self.repair).entry(key.clone()).or_default())
    }

    /// True the first time policy `key`'s collision on `name` with Pod `holder` is seen.
    pub(crate) fn first_report(&self, key: &PolicyKey, name: &str, holder: &str) -> bool {
        lock(&self.reported)
            .entry(key.clone())
            .or_default()
            .insert((name.into(), holder.into()))
    }

    /// Forgets the reported collisions of policy `key` that no longer hold (so a name
    /// taken again later is reported again, and the set stays bounded).
    pub(crate) fn prune_reported(&self, key: &PolicyKey, current: &[String]) {
        let mut r = lock(&self.reported);
        if let Some(set) = r.get_mut(key) {
            set.retain(|(name, _)| current.contains(name));
            if set.is_empty() {
                r.remove(key);
            }
        }
    }

    /// Whether the failed sidecar `sidecar` (of policy `policy`) may be replaced at `now`:
    /// `Ok(attempt)` (recorded), or `Err(wait)` while its backoff runs.
    pub(crate) fn replace_failed(
        &self,
        sidecar: PodKey,
        policy: &str,
        now: Instant,
    ) -> Result<u32, Duration> {
        let mut r = lock(&self.replaced);
        let entry = r.entry(sidecar).or_insert(Replaced {
            policy: policy.into(),
            count: 0,
            last: now,
        });
        let count = failed_replacement(entry.count, now - entry.last)?;
        *entry = Replaced {
            policy: policy.into(),
            count,
            last: now,
        };
        Ok(count)
    }

    /// (sidecar name, replacements in a row) of policy `key`'s failed sidecars, forgetting
    /// those not replaced for [`FAILURE_MEMORY`].
    pub(crate) fn replaced_of(&self, key: &PolicyKey, now: Instant) -> Vec<(String, u32)> {
        let mut r = lock(&self.replaced);
        r.retain(|_, v| now - v.last < FAILURE_MEMORY);
        r.iter()
            .filter(|(k, v)| k.0 == key.0 && v.policy == key.1)
            .map(|(k, v)| (k.1.clone(), v.count))
            .collect()
    }

    /// The template verdicts.
    pub(crate) fn templates(&self) -> MutexGuard<'_, TemplateChecks> {
        lock(&self.templates)
    }

    /// Records how many eligible pairs of policy `key` lack an up-to-date Ready sidecar, and
    /// sets `gauge` to the sum over all policies while holding the lock (two status
    /// workers setting it after the lock could leave the older sum).
    pub(crate) fn set_not_converged(&self, key: &PolicyKey, n: i64, gauge: &Gauge) {
        let mut m = lock(&self.not_converged);
        if n == 0 {
            m.remove(key);
        } else {
            m.insert(key.clone(), n);
        }
        gauge.set(m.values().sum());
    }
}
