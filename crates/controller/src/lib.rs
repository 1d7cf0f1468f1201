//! The sidecar operator's controllers.
//!
//! Data flow:
//!
//! ```text
//! kube-apiserver ──watch──▶ watch.rs ──▶ caches (PodView / PolicyView + indexes)
//!                               │ triggers.rs maps events to keys
//!                 pod queue ◀───┴───▶ policy queue (debounced)
//!                     │                     │
//!   pod_controller.rs: plan_pod → apply     policy_controller.rs: observe → compute_status
//!   (create / delete sidecars)              → patch; rollout.rs: plan_rollout → deletes
//! ```
//!
//! Rooms:
//! - [`operator`](Operator): start, stop, workers; [`config`](OperatorConfig).
//! - `context`: what the watchers and workers share, in parts with one job each — caches
//!   and scope (`context::Caches`), `queues` (two work queues, two backoffs), per-policy
//!   state (`problems`), what the operator waits to see (`expectations`), `events`,
//!   [`metrics`], readiness (`health`).
//! - `keys`: `PodKey` and `PolicyKey`, distinct types.
//! - `watch`: the watches and the namespace scope; `triggers`: events → keys.
//! - `pod_controller`, `policy_controller`, `rollout`, `template_check`: the reconciles,
//!   each observing the caches, asking the planner (`sidecar_planner`, pure) and sending
//!   only the writes the plan asks for.
//! - `counter` ([`ApiCalls`]), `gate` ([`WriteGate`]), `decode` (lenient decoding),
//!   `queue` (the deduplicating work queue), `cache` (the slim Pod and policy caches).
//!
//! Reconciles read the caches only. Workers start once both caches have synced, so a
//! half-filled cache never looks like "policy gone". Every request of the operator's
//! client is counted ([`ApiCalls`]).

mod cache;
mod config;
mod context;
mod counter;
mod decode;
mod error;
mod events;
mod expectations;
mod gate;
mod health;
mod keys;
pub mod metrics;
mod operator;
mod pod_controller;
mod policy_controller;
mod problems;
mod queue;
mod queues;
mod repair;
mod rollout;
mod template_check;
mod triggers;
mod watch;

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use config::{OperatorConfig, WebhookReach};
pub use counter::{ApiCalls, Counter, counting_client};
pub use decode::{Lenient, Undecodable};
pub use error::Error;
pub use events::REPORTING_CONTROLLER;
pub use gate::WriteGate;
pub use metrics::Metrics;
pub use operator::{Health, Operator};
pub use watch::{cluster_policies_unlistable, namespace_labels, watch_backoff};

// Lock helpers that ignore poisoning: a reconcile that panicked must not stop every other
// task that shares the state.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
