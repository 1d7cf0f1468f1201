//! The sidecar operator's controllers.
//!
//! Data flow:
//!
//! ```text
//! kube-apiserver ──watch──▶ watch.rs ──▶ caches (PodView / PolicyView + indexes)
//!                               │ maps events to keys
//!                 pod queue ◀───┴───▶ status queue (debounced)
//!                     │                     │
//!   reconcile.rs: observe → plan_pod → apply    status.rs: counts → compute_status → patch
//!   (create / delete sidecars)                  (+ rollout of stale sidecars)
//! ```
//!
//! Reconciles read the caches only; the only requests they send are the writes the plan
//! asks for. Workers start once both caches have synced, so a half-filled cache never
//! looks like "policy gone". Every request of the operator's client is counted
//! ([`ApiCalls`]).

mod cache;
mod counter;
mod decode;
mod error;
mod events;
mod gate;
mod health;
pub mod metrics;
mod queue;
mod reconcile;
mod status;
mod template_check;
mod watch;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use sidecar_api::SidecarPolicy;
use sidecar_planner::Problems;
use tokio::task::JoinHandle;

pub use cache::{Key, PodCache, PolicyCache};
pub use counter::{ApiCalls, Counter, counting_client, gated_client};
pub use error::Error;
pub use gate::{Fenced, WriteGate};
pub use metrics::Metrics;
pub use queue::WorkQueue;

use decode::Lenient;

/// How an operator instance runs.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Watch only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Manage only namespaces whose labels match this selector (e.g. `sidecars=enabled`);
    /// combined with `namespace`, both must hold. One way to shard a large cluster over
    /// several operator instances, each with its own Lease. A namespace relabelled from
    /// one instance's selector to another's keeps its sidecars: the instance that loses
    /// it forgets its objects (it never deletes because of the move), the one that gains
    /// it lists that namespace alone and adopts what is there.
    pub namespace_selector: Option<String>,
    /// Concurrent pod reconciles.
    pub concurrency: usize,
    /// Delay that coalesces Pod events into one status computation per policy.
    pub status_debounce: Duration,
    /// Reporting instance for Events (e.g. the Pod name).
    pub instance: Option<String>,
    /// How long [`Operator::start`] waits for the caches to sync.
    pub sync_timeout: Duration,
    /// Publish Normal events on main Pods (sidecar created / replaced).
    pub pod_events: bool,
    /// Writes are sent only while this gate is open (leader election opens it up to the
    /// renew deadline of the Lease); `None`: always.
    pub write_gate: Option<WriteGate>,
    /// Count into these metrics (shared by the operators one process runs in turn, and
    /// with its Lease client); `None`: fresh ones.
    pub metrics: Option<Arc<Metrics>>,
    /// Fault injection for tests: apply each Pod watch event this long after it arrives
    /// (a cache that lags the API server, as under a loaded API server). `None` in
    /// production.
    pub pod_watch_lag: Option<Duration>,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            namespace: None,
            namespace_selector: None,
            concurrency: 16,
            status_debounce: Duration::from_millis(500),
            instance: None,
            sync_timeout: Duration::from_secs(120),
            pod_events: true,
            write_gate: None,
            metrics: None,
            pod_watch_lag: None,
        }
    }
}

impl OperatorConfig {
    /// Watches one namespace.
    pub fn namespace(ns: &str) -> Self {
        OperatorConfig {
            namespace: Some(ns.to_string()),
            ..Self::default()
        }
    }

    /// Watches all namespaces.
    pub fn all_namespaces() -> Self {
        Self::default()
    }
}

/// Writes sent but not yet seen in the cache (client-go's "expectations"): a
/// reconcile triggered before the watch delivers our own create or delete must not send
/// it again. An expectation older than [`EXPECTATION_TTL`] is ignored (the write may
/// have been lost), so nothing waits forever.
#[derive(Debug, Default)]
pub(crate) struct Expectations {
    created: HashMap<Key, std::time::Instant>,
    deleted: HashMap<String, std::time::Instant>,
}

/// How long an unobserved write suppresses repeating it.
pub(crate) const EXPECTATION_TTL: Duration = Duration::from_secs(30);

impl Expectations {
    pub(crate) fn expect_create(&mut self, key: Key) {
        self.created.insert(key, std::time::Instant::now());
    }
    pub(crate) fn expect_delete(&mut self, uid: String) {
        self.deleted.insert(uid, std::time::Instant::now());
    }
    pub(crate) fn create_pending(&self, key: &Key) -> bool {
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
        self.created.remove(&(v.namespace.clone(), v.name.clone()));
        if gone || v.deleting {
            self.deleted.remove(&v.uid);
        }
    }
    /// The namespace left the scope: its pending creates are no longer ours to await.
    pub(crate) fn forget_namespace(&mut self, ns: &str) {
        self.created.retain(|(n, _), _| n != ns);
    }
}

/// A failed sidecar's replacements in a row.
#[derive(Debug)]
pub(crate) struct Replaced {
    policy: String,
    count: u32,
    last: Instant,
}

/// State shared by the watchers and workers of one operator instance.
pub(crate) struct Shared {
    client: Client,
    pods: RwLock<PodCache>,
    policies: RwLock<PolicyCache>,
    pod_queue: WorkQueue<Key>,
    status_queue: WorkQueue<Key>,
    status_debounce: Duration,
    /// Consecutive failed reconciles, per controller and key (a Pod and a policy of the
    /// same name have separate backoffs).
    failures: Mutex<RetryBackoff>,
    problems: Mutex<HashMap<Key, Problems>>,
    /// Per policy: the (name, holder uid) collisions already reported by an Event; pruned
    /// to the collisions that still hold at every status computation.
    reported: Mutex<HashMap<Key, BTreeSet<(String, String)>>>,
    /// (namespace, name) held by a Pod in the way of a sidecar → the main Pod waiting for
    /// it: the deletion of that Pod reconciles the main Pod again.
    waiters: Mutex<HashMap<Key, String>>,
    /// Failed sidecars replaced, per (namespace, sidecar name).
    replaced: Mutex<HashMap<Key, Replaced>>,
    /// The API server's verdict on each policy's current template (dry run).
    templates: Mutex<template_check::TemplateChecks>,
    not_converged: Mutex<HashMap<Key, i64>>,
    expectations: Mutex<Expectations>,
    events: tokio::sync::mpsc::Sender<events::Outgoing>,
    reporter: Reporter,
    pod_events: bool,
    pod_watch_lag: Option<Duration>,
    metrics: Arc<Metrics>,
    pods_synced: AtomicBool,
    policies_synced: AtomicBool,
    /// Namespaces in scope when a namespace selector is set (`None`: all): the ones
    /// reconciles act on. A namespace enters once both caches hold it, and leaves before
    /// they forget it.
    scope: Option<RwLock<HashSet<String>>>,
    /// Set to 1 once the initial scope is known; the Pod and policy watches start then.
    scope_generation: tokio::sync::watch::Sender<u64>,
    /// Whether the Pod and policy watches are established (see `health.rs`).
    watches: Arc<health::WatchHealth>,
    synced: tokio::sync::Notify,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn pods(&self) -> RwLockReadGuard<'_, PodCache> {
        read(&self.pods)
    }
    pub(crate) fn pods_mut(&self) -> RwLockWriteGuard<'_, PodCache> {
        write(&self.pods)
    }
    pub(crate) fn policies(&self) -> RwLockReadGuard<'_, PolicyCache> {
        read(&self.policies)
    }
    pub(crate) fn policies_mut(&self) -> RwLockWriteGuard<'_, PolicyCache> {
        write(&self.policies)
    }

    /// Queues an event for the background publisher; drops it when the queue is full
    /// (events are informative; they never slow reconciles down).
    pub(crate) fn publish(&self, ev: events::Outgoing) {
        if self.events.try_send(ev).is_err() {
            tracing::debug!("event queue full; dropping an event");
        }
    }

    pub(crate) fn expectations(&self) -> std::sync::MutexGuard<'_, Expectations> {
        lock(&self.expectations)
    }

    pub(crate) fn templates(&self) -> std::sync::MutexGuard<'_, template_check::TemplateChecks> {
        lock(&self.templates)
    }

    pub(crate) fn status_soon(&self, key: Key) {
        self.status_queue.add_after(key, self.status_debounce);
    }

    fn mark_synced(&self, pods: bool, policies: bool) {
        if pods {
            self.pods_synced.store(true, Ordering::SeqCst);
        }
        if policies {
            self.policies_synced.store(true, Ordering::SeqCst);
        }
        if self.is_synced() {
            self.synced.notify_waiters();
        }
    }

    /// The namespace is managed by this instance. Reconciles check it after observing
    /// and before writing: a namespace on its way out (or not yet fully in) is left to
    /// the instance that manages it.
    pub(crate) fn in_scope(&self, ns: &str) -> bool {
        self.scope.as_ref().is_none_or(|s| read(s).contains(ns))
    }

    /// Synced, and both watches currently connected (false during an API outage).
    pub(crate) fn is_ready(&self) -> bool {
        self.is_synced() && self.watches.ok()
    }

    pub(crate) fn watch_health(&self, pods: bool, ok: bool) {
        self.watches.set(pods, ok);
    }

    /// Both caches completed their first list.
    pub(crate) fn is_synced(&self) -> bool {
        self.pods_synced.load(Ordering::SeqCst) && self.policies_synced.load(Ordering::SeqCst)
    }

    /// Records (or clears) a refusal; true when it is new or its message changed.
    pub(crate) fn set_refused(&self, key: &Key, message: Option<String>) -> bool {
        let mut p = lock(&self.problems);
        let entry = p.entry(key.clone()).or_default();
        if entry.refused == message {
            return false;
        }
        entry.refused = message;
        drop(p);
        self.status_queue.add(key.clone());
        true
    }

    /// True the first time policy `key`'s collision on `name` with Pod `holder` is seen.
    pub(crate) fn first_report(&self, key: &Key, name: &str, holder: &str) -> bool {
        lock(&self.reported)
            .entry(key.clone())
            .or_default()
            .insert((name.into(), holder.into()))
    }

    /// Forgets the reported collisions of policy `key` that no longer hold (so a name
    /// taken again later is reported again, and the set stays bounded).
    pub(crate) fn prune_reported(&self, key: &Key, current: &[String]) {
        let mut r = lock(&self.reported);
        if let Some(set) = r.get_mut(key) {
            set.retain(|(name, _)| current.contains(name));
            if set.is_empty() {
                r.remove(key);
            }
        }
    }

    /// Main Pod `main` waits for the Pod `name` of `ns` to go.
    pub(crate) fn wait_for_name(&self, ns: &str, name: &str, main: &str) {
        lock(&self.waiters).insert((ns.into(), name.into()), main.into());
    }

    /// The Pod `key` is gone: reconcile the main Pod that waited for its name.
    pub(crate) fn name_freed(&self, key: &Key) {
        let waiter = lock(&self.waiters).remove(key);
        if let Some(main) = waiter {
            self.pod_queue.add((key.0.clone(), main));
        }
    }

    /// Whether the failed sidecar `name` of `ns` (policy `policy`) may be replaced at
    /// `now`: `Ok(attempt)` (recorded), or `Err(wait)` while its backoff runs.
    pub(crate) fn replace_failed(
        &self,
        ns: &str,
        name: &str,
        policy: &str,
        now: Instant,
    ) -> Result<u32, Duration> {
        let mut r = lock(&self.replaced);
        let entry = r.entry((ns.into(), name.into())).or_insert(Replaced {
            policy: policy.into(),
            count: 0,
            last: now,
        });
        match sidecar_planner::failed_replacement(entry.count, now - entry.last) {
            Ok(count) => {
                *entry = Replaced {
                    policy: policy.into(),
                    count,
                    last: now,
                };
                Ok(count)
            }
            Err(wait) => Err(wait),
        }
    }

    /// (sidecar name, replacements in a row) of policy `key`'s failed sidecars, forgetting
    /// those not replaced for [`sidecar_planner::FAILURE_MEMORY`].
    pub(crate) fn replaced_of(&self, key: &Key, now: Instant) -> Vec<(String, u32)> {
        let mut r = lock(&self.replaced);
        r.retain(|_, v| now - v.last < sidecar_planner::FAILURE_MEMORY);
        r.iter()
            .filter(|((ns, _), v)| *ns == key.0 && v.policy == key.1)
            .map(|((_, name), v)| (name.clone(), v.count))
            .collect()
    }

    pub(crate) fn problems_of(&self, key: &Key) -> Problems {
        lock(&self.problems).get(key).cloned().unwrap_or_default()
    }

    /// A new generation may fix what was refused: forget it and retry at once.
    pub(crate) fn clear_problems(&self, key: &Key) {
        lock(&self.problems).remove(key);
    }

    pub(crate) fn forget_policy(&self, key: &Key) {
        lock(&self.problems).remove(key);
        lock(&self.reported).remove(key);
        lock(&self.templates).forget(key);
        lock(&self.replaced).retain(|(ns, _), v| !(*ns == key.0 && v.policy == key.1));
        self.set_not_converged(key, 0);
    }

    /// Records how many eligible pairs of a policy lack an up-to-date Ready sidecar.
    pub(crate) fn set_not_converged(&self, key: &Key, n: i64) {
        let mut m = lock(&self.not_converged);
        if n == 0 {
            m.remove(key);
        } else {
            m.insert(key.clone(), n);
        }
        self.metrics.pairs_not_converged.set(m.values().sum());
    }

    fn backoff(&self, controller: &'static str, key: &Key, failed: bool) -> Option<Duration> {
        lock(&self.failures).record(controller, key, failed)
    }
}

/// Consecutive failed reconciles per controller and key: a Pod and a policy of the same
/// name have separate counts, so a Pod's success never resets a failing policy's backoff.
#[derive(Debug, Default)]
pub(crate) struct RetryBackoff(HashMap<(&'static str, Key), u32>);

impl RetryBackoff {
    /// Records a reconcile's outcome; for a failure, the delay before the retry:
    /// 1 s, 2 s, 4 s … capped at 5 minutes.
    pub(crate) fn record(
        &mut self,
        controller: &'static str,
        key: &Key,
        failed: bool,
    ) -> Option<Duration> {
        let k = (controller, key.clone());
        if !failed {
            self.0.remove(&k);
            return None;
        }
        let n = self.0.entry(k).or_insert(0);
        *n = n.saturating_add(1);
        Some(Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300)))
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn pods_and_policies_of_one_name_back_off_apart() {
        let mut b = RetryBackoff::default();
        let key: Key = ("shop".into(), "web".into());
        let s = Duration::from_secs;
        // (controller, failed, expected delay)
        let steps = [
            ("policy", true, Some(s(1))),
            ("policy", true, Some(s(2))),
            ("pod", false, None),
            ("pod", true, Some(s(1))),
            ("policy", true, Some(s(4))),
            ("policy", false, None),
            ("policy", true, Some(s(1))),
        ];
        for (i, (controller, failed, want)) in steps.into_iter().enumerate() {
            assert_eq!(b.record(controller, &key, failed), want, "step {i}");
        }
        for _ in 0..20 {
            b.record("pod", &key, true);
        }
        assert_eq!(b.record("pod", &key, true), Some(s(256)));
    }
}

/// Readiness handle: ready while the caches are synced and both watches are
/// connected; not ready while the API server is unreachable.
#[derive(Clone)]
pub struct Health(Arc<Shared>);

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Health {
    /// See [`Health`].
    pub fn is_ready(&self) -> bool {
        self.0.is_ready()
    }
}

/// A running operator instance.
pub struct Operator {
    shared: Arc<Shared>,
    counter: Arc<Counter>,
    watchers: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("api_calls", &self.api_calls())
            .finish()
    }
}

impl Operator {
    /// Starts watching and returns once the caches have synced; workers run from then on.
    pub async fn start(config: kube::Config, opts: OperatorConfig) -> Result<Operator, Error> {
        let metrics = opts.metrics.clone().unwrap_or_default();
        let counter = Arc::new(Counter::new(metrics.api_requests.clone()));
        let watches = Arc::new(health::WatchHealth::default());
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(Error::Client)?
            .with_layer(&counter::counting_layer(
                counter.clone(),
                opts.write_gate.clone(),
            ))
            .with_layer(&health::WatchHealthLayer(watches.clone()))
            .build();
        let reporter = Reporter {
            controller: "sidecar-operator".into(),
            instance: opts.instance.clone(),
        };
        let (events_tx, publisher) = events::spawn(client.clone(), reporter.clone(), 4096);
        let shared = Arc::new(Shared {
            client: client.clone(),
            pods: RwLock::default(),
            policies: RwLock::default(),
            pod_queue: WorkQueue::new(),
            status_queue: WorkQueue::new(),
            status_debounce: opts.status_debounce,
            failures: Mutex::default(),
            problems: Mutex::default(),
            reported: Mutex::default(),
            waiters: Mutex::default(),
            replaced: Mutex::default(),
            templates: Mutex::default(),
            not_converged: Mutex::default(),
            expectations: Mutex::default(),
            events: events_tx,
            reporter,
            pod_events: opts.pod_events,
            pod_watch_lag: opts.pod_watch_lag,
            metrics,
            pods_synced: AtomicBool::new(false),
            policies_synced: AtomicBool::new(false),
            scope: opts.namespace_selector.as_ref().map(|_| RwLock::default()),
            scope_generation: tokio::sync::watch::Sender::new(0),
            watches,
            synced: tokio::sync::Notify::new(),
        });
        let (pods, policies): (Api<Lenient<Pod>>, Api<Lenient<SidecarPolicy>>) =
            match &opts.namespace {
                Some(ns) => (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client, ns),
                ),
                None => (Api::all(client.clone()), Api::all(client)),
            };
        let mut watchers = vec![publisher];
        let (mut pod_changes, mut policy_changes) = (None, None);
        match &opts.namespace_selector {
            Some(sel) => {
                let api: Api<k8s_openapi::api::core::v1::Namespace> =
                    Api::all(shared.client.clone());
                let (pods_tx, pods_rx) = tokio::sync::mpsc::unbounded_channel();
                let (policies_tx, policies_rx) = tokio::sync::mpsc::unbounded_channel();
                (pod_changes, policy_changes) = (Some(pods_rx), Some(policies_rx));
                watchers.push(tokio::spawn(watch::watch_namespaces(
                    shared.clone(),
                    api,
                    sel.clone(),
                    opts.namespace.clone(),
                    watch::ScopeControl {
                        pods: pods_tx,
                        policies: policies_tx,
                    },
                )));
            }
            None => {
                shared.scope_generation.send_replace(1);
            }
        }
        let mut op = Operator {
            shared: shared.clone(),
            counter,
            watchers: vec![
                tokio::spawn(watch::watch_pods(shared.clone(), pods, pod_changes)),
                tokio::spawn(watch::watch_policies(
                    shared.clone(),
                    policies,
                    policy_changes,
                )),
            ],
            workers: Vec::new(),
        };
        op.watchers.extend(watchers);
        let wait = async {
            loop {
                let notified = shared.synced.notified();
                if shared.is_synced() {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(opts.sync_timeout, wait).await.is_err() {
            return Err(Error::SyncTimeout(opts.sync_timeout.as_secs()));
        }
        for _ in 0..opts.concurrency.max(1) {
            op.workers.push(tokio::spawn(pod_worker(shared.clone())));
        }
        op.workers.push(tokio::spawn(status_worker(shared.clone())));
        op.workers.push(tokio::spawn(status_worker(shared)));
        Ok(op)
    }

    /// Requests sent so far by this instance's client, by verb.
    pub fn api_calls(&self) -> ApiCalls {
        self.counter.snapshot()
    }

    /// The controllers' metrics (register them with [`Metrics::register`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Readiness: caches synced and watches connected (see [`Health`]).
    pub fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    /// A handle that answers readiness after the operator is moved or stopped.
    pub fn health(&self) -> Health {
        Health(self.shared.clone())
    }

    /// Number of cached Pods.
    pub fn cached_pods(&self) -> usize {
        self.shared.pods().len()
    }

    /// Graceful stop: in-flight reconciles finish, queued keys are dropped (the caches
    /// stop with the watches, so they would be reconciled against a frozen picture; the
    /// next instance lists and reconciles everything anyway), watches end.
    pub async fn stop(mut self) {
        self.shared.pod_queue.shut_down();
        self.shared.status_queue.shut_down();
        for w in std::mem::take(&mut self.watchers) {
            w.abort();
        }
        for w in std::mem::take(&mut self.workers) {
            let _ = w.await;
        }
    }

    /// Stop at once (leadership lost): every task, in-flight reconciles included, is
    /// cancelled where it stands and no queued key is taken; returns once all of them have
    /// ended. Writes a cancelled reconcile had not sent yet are never sent; one already on
    /// the wire may still land (the write gate closed before this is called, so none
    /// started after the deadline).
    pub async fn abort(mut self) {
        self.shared.pod_queue.shut_down();
        self.shared.status_queue.shut_down();
        let tasks: Vec<_> = std::mem::take(&mut self.watchers)
            .into_iter()
            .chain(std::mem::take(&mut self.workers))
            .collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Operator {
    /// Abrupt stop (like a crash): every task is aborted where it stands.
    fn drop(&mut self) {
        self.shared.pod_queue.close();
        self.shared.status_queue.close();
        for t in self.watchers.iter().chain(self.workers.iter()) {
            t.abort();
        }
    }
}

async fn pod_worker(shared: Arc<Shared>) {
    while let Some(key) = shared.pod_queue.next().await {
        let t0 = std::time::Instant::now();
        let r = reconcile::reconcile_pod(&shared, &key).await;
        finish(&shared, &shared.pod_queue, "pod", &key, r, t0.elapsed());
    }
}

async fn status_worker(shared: Arc<Shared>) {
    while let Some(key) = shared.status_queue.next().await {
        let t0 = std::time::Instant::now();
        let r = status::reconcile_policy(&shared, &key).await;
        finish(
            &shared,
            &shared.status_queue,
            "policy",
            &key,
            r,
            t0.elapsed(),
        );
    }
}

fn finish(
    shared: &Shared,
    queue: &WorkQueue<Key>,
    controller: &'static str,
    key: &Key,
    r: Result<(), Error>,
    took: Duration,
) {
    queue.done(key);
    let failed = r.is_err();
    shared.metrics.reconciled(controller, !failed, took);
    let delay = shared.backoff(controller, key, failed);
    if let Err(e) = r {
        let delay = delay.unwrap_or(Duration::from_secs(1));
        shared
            .metrics
            .errors
            .get_or_create(&metrics::CategoryLabel {
                category: e.category(),
            })
            .inc();
        tracing::warn!(controller, namespace = %key.0, name = %key.1, error = %e, category = e.category(), retry_in_s = delay.as_secs(), "reconcile failed");
        queue.add_after(key.clone(), delay);
    }
}
