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
    created: HashMap<PodKey, Created>,
    /// Main Pod → the sidecars of it whose create is pending.
    created_by_main: HashMap<PodKey, Vec<String>>,
    deleted: HashMap<String, std::time::Instant>,
}

/// A sidecar create sent, not yet seen.
#[derive(Debug)]
struct Created {
    at: std::time::Instant,
    main: String,
    /// Its main Pod was planned again since (from a cache without this sidecar): that plan
    /// may have wanted it gone, so its echo must reconcile the main Pod once more.
    replanned: bool,
}

/// How long an unobserved write suppresses repeating it.
pub(crate) const EXPECTATION_TTL: Duration = Duration::from_secs(30);

impl Expectations {
    /// A create of sidecar `key` for main Pod `main` (same namespace) was sent.
    pub(crate) fn expect_create(&mut self, key: PodKey, main: &str) {
        let at = std::time::Instant::now();
        let by_main = self
            .created_by_main
            .entry(PodKey::new(key.0.clone(), main))
            .or_default();
        if !by_main.contains(&key.1) {
            by_main.push(key.1.clone());
        }
        let main = main.to_string();
        let created = Created {
            at,
            main,
            replanned: false,
        };
        self.created.insert(key, created);
    }
    pub(crate) fn expect_delete(&mut self, uid: String) {
        self.deleted.insert(uid, std::time::Instant::now());
    }
    pub(crate) fn create_pending(&self, key: &PodKey) -> bool {
        self.created
            .get(key)
            .is_some_and(|c| c.at.elapsed() < EXPECTATION_TTL)
    }

    /// Main Pod `main` is being planned again: its pending creates are marked.
    pub(crate) fn replanning(&mut self, main: &PodKey) {
        for name in self.created_by_main.get(main).into_iter().flatten() {
            if let Some(c) = self
                .created
                .get_mut(&PodKey::new(main.0.clone(), name.clone()))
            {
                c.replanned = true;
            }
        }
    }

    fn forget_create(&mut self, key: &PodKey) {
        let Some(c) = self.created.remove(key) else {
            return;
        };
        let main = PodKey::new(key.0.clone(), c.main);
        if let Some(names) = self.created_by_main.get_mut(&main) {
            names.retain(|n| *n != key.1);
            if names.is_empty() {
                self.created_by_main.remove(&main);
            }
        }
    }

    /// Whether sidecar `key` appearing is only the echo of the plan that created it: the
    /// create is pending and its main Pod was not planned again since. Its main Pod needs
    /// no reconcile then (that plan is done); the policy's status still counts it.
    pub(crate) fn echo_of_last_plan(&self, key: &PodKey) -> bool {
        self.created
            .get(key)
            .is_some_and(|c| !c.replanned && c.at.elapsed() < EXPECTATION_TTL)
    }
    pub(crate) fn delete_pending(&self, uid: &str) -> bool {
        self.deleted
            .get(uid)
            .is_some_and(|t| t.elapsed() < EXPECTATION_TTL)
    }
    /// The cache saw `v` (created, changed or deleted).
    pub(crate) fn observed(&mut self, v: &sidecar_planner::PodView, gone: bool) {
        self.forget_create(&PodKey::new(v.namespace.clone(), v.name.clone()));
        if gone || v.deleting {
            self.deleted.remove(&v.uid);
        }
    }
    /// The namespace left the scope: its pending creates are no longer ours to await.
    pub(crate) fn forget_namespace(&mut self, ns: &str) {
        self.created.retain(|k, _| k.0 != ns);
        self.created_by_main.retain(|k, _| k.0 != ns);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar(ns: &str, name: &str) -> sidecar_planner::PodView {
        sidecar_planner::PodView {
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_echo_reconciles_its_main_pod_only_if_it_was_planned_again() {
        let mut e = Expectations::default();
        let (a, b) = (
            PodKey::new("shop", "web-0-log"),
            PodKey::new("shop", "web-1-log"),
        );
        e.expect_create(a.clone(), "web-0");
        e.expect_create(b.clone(), "web-1");
        assert!(e.echo_of_last_plan(&a) && e.echo_of_last_plan(&b));
        e.replanning(&PodKey::new("shop", "web-0"));
        assert!(!e.echo_of_last_plan(&a), "web-0 was planned again");
        assert!(e.echo_of_last_plan(&b), "web-1 was not");
        assert!(
            e.create_pending(&a),
            "still pending: the create is not repeated"
        );
        e.observed(&sidecar("shop", "web-0-log"), false);
        e.observed(&sidecar("shop", "web-1-log"), false);
        assert!(!e.create_pending(&a) && !e.echo_of_last_plan(&b));
        assert!(
            e.created.is_empty() && e.created_by_main.is_empty(),
            "nothing left behind"
        );
    }
}
