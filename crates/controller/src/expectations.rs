//! What the operator is waiting to see: writes sent but not yet in its cache, and main
//! Pods waiting for a name another Pod still holds.

use std::collections::HashMap;
use std::time::Duration;

use crate::keys::PodKey;

/// Writes sent but not yet seen in the cache (client-go's "expectations"): a
/// reconcile triggered before the watch delivers our own create or delete must not send
/// it again. An expectation older than [`EXPECTATION_TTL`] is ignored (the write may
/// have been lost), so nothing waits forever.
#[derive(Debug, Default)]
pub(crate) struct Expectations {
    created: HashMap<PodKey, std::time::Instant>,
    deleted: HashMap<String, std::time::Instant>,
}

/// How long an unobserved write suppresses repeating it.
pub(crate) const EXPECTATION_TTL: Duration = Duration::from_secs(30);

impl Expectations {
    pub(crate) fn expect_create(&mut self, key: PodKey) {
        self.created.insert(key, std::time::Instant::now());
    }
    pub(crate) fn expect_delete(&mut self, uid: String) {
        self.deleted.insert(uid, std::time::Instant::now());
    }
    pub(crate) fn create_pending(&self, key: &PodKey) -> bool {
        self.created
            .get(key)
            .is_some_and(|t| t.elapsed() < EXPECTATION_TTL)
    }
    pub(crate) fn delete_pending(&self, uid: &str) -> bool {
        self.deleted
            .get(uid)
            .is_some_and(|t| t.elapsed() < EXPECTATION_TTL)
    }
    /// The cache saw `v` (created, changed or deleted).
    pub(crate) fn observed(&mut self, v: &sidecar_planner::PodView, gone: bool) {
        self.created
            .remove(&PodKey::new(v.namespace.clone(), v.name.clone()));
        if gone || v.deleting {
            self.deleted.remove(&v.uid);
        }
    }
    /// The namespace left the scope: its pending creates are no longer ours to await.
    pub(crate) fn forget_namespace(&mut self, ns: &str) {
        self.created.retain(|k, _| k.0 != ns);
    }
}

/// Main Pods waiting for a name: the Pod holding the name a main Pod's sidecar needs →
/// that main Pod. The holder's deletion reconciles the main Pod again.
#[derive(Debug, Default)]
pub(crate) struct Waiters(HashMap<PodKey, String>);

impl Waiters {
    /// Main Pod `main` waits for the Pod `holder` to go.
    pub(crate) fn wait(&mut self, holder: PodKey, main: String) {
        self.0.insert(holder, main);
    }

    /// The Pod `holder` is gone: the main Pod that waited for its name, if any.
    pub(crate) fn freed(&mut self, holder: &PodKey) -> Option<PodKey> {
        self.0
            .remove(holder)
            .map(|main| PodKey::new(holder.0.clone(), main))
    }
}
