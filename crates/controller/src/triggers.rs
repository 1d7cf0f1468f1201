//! Which keys a watch event reconciles.
//!
//! - A main-Pod event reconciles that Pod; a sidecar event reconciles its owner (deletes
//!   included: a deleted sidecar is recreated).
//! - A policy whose spec changed (new generation, deletion) reconciles the Pods its old
//!   and new selectors match and the owners of its sidecars; a status-only change
//!   reconciles nothing but its status.
//! - Any Pod event touching a policy (selected main Pod, sidecar) schedules that policy's
//!   status, debounced, so bursts coalesce into few status writes.
//! - After every full (re)list, and when a namespace enters the scope, everything in it
//!   is reconciled.

use sidecar_planner::{PodView, PolicyView, Relevance};

use crate::context::Context;
use crate::keys::{PodKey, PolicyKey};

fn key_of(v: &PodView) -> PodKey {
    PodKey(v.namespace.clone(), v.name.clone())
}

/// The key a sidecar's event reconciles: its main Pod's (the owner), or its own when it
/// has no owner Pod (an orphan, which the pod controller then deletes; or a Pod of another
/// controller that carries our labels, which it leaves alone, see `plan_orphan`).
fn sidecar_trigger(v: &PodView) -> PodKey {
    match v.owner.as_ref().filter(|o| o.is_pod()) {
        Some(o) => PodKey(v.namespace.clone(), o.name.clone()),
        None => key_of(v),
    }
}

impl Context {
    /// Keys to reconcile for a changed Pod (old and new views): its main Pod's reconcile
    /// and its policies' status, as far as `r` says the change matters.
    pub(crate) fn trigger_pod(&self, views: &[&PodView], r: Relevance) {
        for v in views {
            if v.is_sidecar() {
                if r.pod {
                    self.queues.pods.add(sidecar_trigger(v));
                }
                if let Some((_, policy)) = v.sidecar_key().filter(|_| r.status) {
                    self.queues
                        .status_soon(PolicyKey(v.namespace.clone(), policy.to_string()));
                }
            } else {
                if r.pod {
                    self.queues.pods.add(key_of(v));
                }
                if !r.status {
                    continue;
                }
                let policies = self.caches.policies().in_namespace(&v.namespace);
                for p in policies.iter().filter(|p| p.selects(&v.labels)) {
                    self.queues
                        .status_soon(PolicyKey(p.namespace.clone(), p.name.clone()));
                }
            }
        }
    }

    /// Keys to reconcile for a changed policy.
    pub(crate) fn trigger_policy(&self, old: Option<&PolicyView>, new: Option<&PolicyView>) {
        let Some(any) = new.or(old) else { return };
        let key = PolicyKey(any.namespace.clone(), any.name.clone());
        let spec_changed = match (old, new) {
            (Some(o), Some(n)) => o.generation != n.generation || o.deleting != n.deleting,
            _ => true,
        };
        if !spec_changed {
            // A status-only change — usually the echo of our own write, or another
            // writer's: recompute later, debounced (an immediate rerun would turn every
            // echo into another write during a burst).
            if new.is_some() {
                self.queues.status_soon(key);
            }
            return;
        }
        if new.is_some() {
            self.queues.policies.add(key.clone());
        }
        self.policy_state.clear(&key);
        let pods = self.caches.pods();
        for m in pods.in_namespace(&any.namespace) {
            if !m.is_sidecar()
                && (old.is_some_and(|p| p.selects(&m.labels))
                    || new.is_some_and(|p| p.selects(&m.labels)))
            {
                self.queues.pods.add(key_of(m));
            }
        }
        for s in pods.sidecars_of_policy(&any.namespace, &any.name) {
            self.queues.pods.add(sidecar_trigger(&s));
        }
    }

    /// Reconciles the main Pods `policy` selects (its template was just accepted).
    pub(crate) fn trigger_selected(&self, policy: &PolicyView) {
        let pods = self.caches.pods();
        for m in pods.in_namespace(&policy.namespace) {
            if !m.is_sidecar() && policy.selects(&m.labels) {
                self.queues.pods.add(key_of(m));
            }
        }
    }

    /// After a full list of either kind: reconcile everything.
    pub(crate) fn trigger_all(&self) {
        let pods = self.caches.pods();
        for v in pods.all() {
            if v.is_sidecar() {
                self.queues.pods.add(sidecar_trigger(v));
            } else {
                self.queues.pods.add(key_of(v));
            }
        }
        drop(pods);
        for p in self.caches.policies().all() {
            self.queues
                .policies
                .add(PolicyKey(p.namespace.clone(), p.name.clone()));
        }
    }
}

impl Context {
    /// A namespace entered the scope (its caches are filled): reconcile its Pods and
    /// the status of its policies.
    pub(crate) fn trigger_namespace(&self, ns: &str) {
        for v in self.caches.pods().in_namespace(ns) {
            if v.is_sidecar() {
                self.queues.pods.add(sidecar_trigger(v));
            } else {
                self.queues.pods.add(key_of(v));
            }
        }
        for p in self.caches.policies().in_namespace(ns) {
            self.queues
                .policies
                .add(PolicyKey(p.namespace.clone(), p.name.clone()));
        }
    }
}
