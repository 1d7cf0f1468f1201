//! Watches feed the caches and map each event to the keys to reconcile.
//!
//! - A main-Pod event reconciles that Pod; a sidecar event reconciles its owner (deletes
//!   included: a deleted sidecar is recreated).
//! - A policy whose spec changed (new generation, deletion) reconciles the Pods its old
//!   and new selectors match and the owners of its sidecars; a status-only change
//!   reconciles nothing but its status.
//! - Any Pod event touching a policy (selected main Pod, sidecar) schedules that policy's
//!   status, debounced, so bursts coalesce into few status writes.
//! - After every full (re)list the caches are swapped in one step and everything is
//!   reconciled: what changed while the watch was down (or the operator was stopped) is
//!   caught up, level-triggered.
//! - With a namespace selector, the Pod and policy watches still watch every namespace
//!   and keep only the objects of namespaces in scope. A namespace that enters the scope
//!   is filled by a LIST of that namespace alone (by each watch's own task, between two
//!   events, so no event is lost or applied out of order), then adopted; one that leaves
//!   is forgotten without a trigger. Leaving the scope never reads as "policy gone".

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use std::collections::HashSet;
use tokio::sync::{mpsc, oneshot};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource as _, ResourceExt as _};
use sidecar_api::SidecarPolicy;
use sidecar_planner::{PodView, PolicyView};

use crate::Shared;
use crate::cache::Key;
use crate::decode::Lenient;
use crate::metrics::KindLabel;

fn key_of(v: &PodView) -> Key {
    (v.namespace.clone(), v.name.clone())
}

/// The key a sidecar's event reconciles: its main Pod's (the owner), or its own when it
/// has no owner Pod (an orphan, which the pod controller then deletes).
fn sidecar_trigger(v: &PodView) -> Key {
    match v.owner.as_ref().filter(|o| o.kind == "Pod") {
        Some(o) => (v.namespace.clone(), o.name.clone()),
        None => key_of(v),
    }
}

impl Shared {
    /// Keys to reconcile for a changed Pod (old and new views).
    pub(crate) fn trigger_pod(&self, views: &[&PodView]) {
        for v in views {
            if v.is_sidecar() {
                self.pod_queue.add(sidecar_trigger(v));
                if let Some((_, policy)) = v.sidecar_key() {
                    self.status_soon((v.namespace.clone(), policy.to_string()));
                }
            } else {
                self.pod_queue.add(key_of(v));
                let policies = self.policies().in_namespace(&v.namespace);
                for p in policies.iter().filter(|p| p.selects(&v.labels)) {
                    self.status_soon((p.namespace.clone(), p.name.clone()));
                }
            }
        }
    }

    /// Keys to reconcile for a changed policy.
    pub(crate) fn trigger_policy(&self, old: Option<&PolicyView>, new: Option<&PolicyView>) {
        let Some(any) = new.or(old) else { return };
        let key = (any.namespace.clone(), any.name.clone());
        let spec_changed = match (old, new) {
            (Some(o), Some(n)) => o.generation != n.generation || o.deleting != n.deleting,
            _ => true,
        };
        if !spec_changed {
            // A status-only change — usually the echo of our own write, or another
            // writer's: recompute later, debounced (an immediate rerun would turn every
            // echo into another write during a burst).
            if new.is_some() {
                self.status_soon(key);
            }
            return;
        }
        if new.is_some() {
            self.status_queue.add(key.clone());
        }
        self.clear_problems(&key);
        let pods = self.pods();
        for m in pods.in_namespace(&any.namespace) {
            if !m.is_sidecar()
                && (old.is_some_and(|p| p.selects(&m.labels))
                    || new.is_some_and(|p| p.selects(&m.labels)))
            {
                self.pod_queue.add(key_of(m));
            }
        }
        for s in pods.sidecars_of_policy(&any.namespace, &any.name) {
            self.pod_queue.add(sidecar_trigger(&s));
        }
    }

    /// Reconciles the main Pods `policy` selects (its template was just accepted).
    pub(crate) fn trigger_selected(&self, policy: &PolicyView) {
        let pods = self.pods();
        for m in pods.in_namespace(&policy.namespace) {
            if !m.is_sidecar() && policy.selects(&m.labels) {
                self.pod_queue.add(key_of(m));
            }
        }
    }

    /// After a full list of either kind: reconcile everything.
    fn trigger_all(&self) {
        let pods = self.pods();
        for v in pods.all() {
            if v.is_sidecar() {
                self.pod_queue.add(sidecar_trigger(v));
            } else {
                self.pod_queue.add(key_of(v));
            }
        }
        drop(pods);
        for p in self.policies().all() {
            self.status_queue.add((p.namespace.clone(), p.name.clone()));
        }
    }
}

impl Shared {
    /// A namespace entered the scope (its caches are filled): reconcile its Pods and
    /// the status of its policies.
    fn trigger_namespace(&self, ns: &str) {
        for v in self.pods().in_namespace(ns) {
            if v.is_sidecar() {
                if let Some(o) = &v.owner {
                    self.pod_queue.add((v.namespace.clone(), o.name.clone()));
                }
            } else {
                self.pod_queue.add(key_of(v));
            }
        }
        for p in self.policies().in_namespace(ns) {
            self.status_queue.add((p.namespace.clone(), p.name.clone()));
        }
    }
}

/// A change of the namespace scope, sent by the namespace watch to the Pod and the
/// policy watch; each answers on the channel once its cache reflects the change.
#[derive(Debug)]
pub(crate) enum ScopeChange {
    /// The namespace entered the scope: fill the cache with a LIST of it.
    Enter(String, oneshot::Sender<()>),
    /// The namespace left the scope: forget its objects, without a trigger.
    Leave(String, oneshot::Sender<()>),
}

/// Where the namespace watch sends [`ScopeChange`]s.
#[derive(Debug)]
pub(crate) struct ScopeControl {
    pub(crate) pods: mpsc::UnboundedSender<ScopeChange>,
    pub(crate) policies: mpsc::UnboundedSender<ScopeChange>,
}

/// The namespaces whose objects one watch keeps (`None`: all), and the changes to come.
pub(crate) struct ScopeFilter {
    namespaces: Option<HashSet<String>>,
    changes: Option<mpsc::UnboundedReceiver<ScopeChange>>,
}

impl ScopeFilter {
    /// Waits until the initial scope is known and starts from it.
    async fn new(shared: &Shared, changes: Option<mpsc::UnboundedReceiver<ScopeChange>>) -> Self {
        let mut rx = shared.scope_generation.subscribe();
        while *rx.borrow_and_update() == 0 {
            if rx.changed().await.is_err() {
                break;
            }
        }
        let namespaces = shared.scope.as_ref().map(|s| crate::read(s).clone());
        ScopeFilter {
            namespaces,
            changes,
        }
    }

    fn admits(&self, ns: &str) -> bool {
        self.namespaces.as_ref().is_none_or(|s| s.contains(ns))
    }

    /// The next change of the scope; never while `relisting` (a relist's buffer is
    /// filtered by the scope it started with, so the change waits for its end).
    async fn next(&mut self, relisting: bool) -> ScopeChange {
        if let Some(rx) = self.changes.as_mut().filter(|_| !relisting)
            && let Some(change) = rx.recv().await
        {
            return change;
        }
        std::future::pending().await
    }

    fn enter(&mut self, ns: String) {
        self.namespaces.get_or_insert_default().insert(ns);
    }

    fn leave(&mut self, ns: &str) {
        if let Some(s) = self.namespaces.as_mut() {
            s.remove(ns);
        }
    }
}

/// What a watch task does next: apply a scope change, or the next watch event.
enum Next<E> {
    Scope(ScopeChange),
    Event(Option<E>),
}

async fn next<S: futures::Stream + Unpin>(
    scope: &mut ScopeFilter,
    relisting: bool,
    stream: &mut S,
) -> Next<S::Item> {
    tokio::select! {
        change = scope.next(relisting) => Next::Scope(change),
        ev = stream.next() => Next::Event(ev),
    }
}

/// Every object of a namespaced LIST, page by page (each page converted at once by
/// `view`), retried with the watches' backoff until it succeeds.
async fn list_namespace<K, V>(
    shared: &Shared,
    api: &Api<K>,
    page: u32,
    mut view: impl FnMut(K) -> Option<V>,
) -> Vec<V>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut backoff = WatchBackoff { next: BACKOFF_MIN };
    'restart: loop {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(page);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            match api.list(&lp).await {
                Ok(list) => {
                    out.extend(list.items.into_iter().filter_map(&mut view));
                    token = list.metadata.continue_.filter(|t| !t.is_empty());
                    if token.is_none() {
                        return out;
                    }
                }
                Err(e) => {
                    shared.metrics.watch_errors.inc();
                    tracing::warn!(error = %e, "listing a namespace that entered the scope; retrying with backoff");
                    tokio::time::sleep(backoff.next().unwrap_or(BACKOFF_MAX)).await;
                    continue 'restart;
                }
            }
        }
    }
}

/// Applies a scope change to the Pod cache.
async fn pods_scope_change(shared: &Shared, scope: &mut ScopeFilter, change: ScopeChange) {
    match change {
        ScopeChange::Enter(ns, done) => {
            let api: Api<Lenient<Pod>> = Api::namespaced(shared.client.clone(), &ns);
            let views = list_namespace(shared, &api, POD_LIST_PAGE, |p| pod_view(shared, &p)).await;
            {
                let mut exp = shared.expectations();
                for v in views.iter().filter(|v| v.is_sidecar()) {
                    exp.observed(v, false);
                }
            }
            let n = views.len();
            shared.pods_mut().replace_namespace(&ns, views);
            shared.metrics.cached_pods.set(shared.pods().len() as i64);
            tracing::info!(namespace = %ns, pods = n, "namespace entered the scope; its Pods listed");
            scope.enter(ns);
            let _ = done.send(());
        }
        ScopeChange::Leave(ns, done) => {
            scope.leave(&ns);
            let n = shared.pods_mut().drop_namespace(&ns);
            shared.expectations().forget_namespace(&ns);
            shared.metrics.cached_pods.set(shared.pods().len() as i64);
            tracing::info!(namespace = %ns, pods = n, "namespace left the scope; its Pods forgotten");
            let _ = done.send(());
        }
    }
}

/// Applies a scope change to the policy cache.
async fn policies_scope_change(shared: &Shared, scope: &mut ScopeFilter, change: ScopeChange) {
    match change {
        ScopeChange::Enter(ns, done) => {
            let api: Api<Lenient<SidecarPolicy>> = Api::namespaced(shared.client.clone(), &ns);
            let views = list_namespace(shared, &api, 500, |p| Some(policy_view(shared, p))).await;
            let n = views.len();
            shared.policies_mut().replace_namespace(&ns, views);
            tracing::info!(namespace = %ns, policies = n, "namespace entered the scope; its SidecarPolicies listed");
            scope.enter(ns);
            let _ = done.send(());
        }
        ScopeChange::Leave(ns, done) => {
            scope.leave(&ns);
            let keys = shared.policies_mut().drop_namespace(&ns);
            for k in &keys {
                shared.forget_policy(k);
            }
            tracing::info!(namespace = %ns, policies = keys.len(), "namespace left the scope; its SidecarPolicies forgotten");
            let _ = done.send(());
        }
    }
}

/// Pods per page of the initial (and any re-) list. Each page is held as full Pod
/// objects until it is turned into views; kube's default of 500 made the start-up
/// memory peak over twice the steady memory. 100 costs one LIST request per 100 Pods.
const POD_LIST_PAGE: u32 = 100;

/// Keeps the Pod cache in sync; runs until aborted. Follows the scope's changes.
pub(crate) async fn watch_pods(
    shared: Arc<Shared>,
    api: Api<Lenient<Pod>>,
    changes: Option<mpsc::UnboundedReceiver<ScopeChange>>,
) {
    let scope = ScopeFilter::new(&shared, changes).await;
    let cfg = watcher::Config::default().page_size(POD_LIST_PAGE);
    let stream = watcher(api, cfg).backoff(watch_backoff());
    match shared.pod_watch_lag {
        Some(lag) => pods_stream(&shared, lagged(stream, lag), scope).await,
        None => pods_stream(&shared, stream, scope).await,
    }
}

/// `stream`'s items, each handed on `lag` after it arrived, in order (fault injection:
/// a watch that lags the API server's writes, as under a loaded API server).
fn lagged<T: Send + 'static>(
    stream: impl futures::Stream<Item = T> + Send + 'static,
    lag: Duration,
) -> impl futures::Stream<Item = T> + Send {
    let (tx, rx) = mpsc::unbounded_channel();
    let forward = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send((tokio::time::Instant::now() + lag, item)).is_err() {
                break;
            }
        }
    });
    futures::stream::unfold((rx, AbortOnDrop(forward)), |(mut rx, guard)| async move {
        let (due, item) = rx.recv().await?;
        tokio::time::sleep_until(due).await;
        Some((item, (rx, guard)))
    })
}

/// Aborts the task when dropped (the lag's forwarder ends with its consumer).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The view of a listed or watched Pod; `None` (counted, logged) for a Pod that does not
/// decode: it is skipped, never a failed LIST.
fn pod_view(shared: &Shared, p: &Lenient<Pod>) -> Option<PodView> {
    match p {
        Lenient::Ok(p) => PodView::from_pod(p),
        Lenient::Err(u) => {
            shared
                .metrics
                .undecodable_objects
                .get_or_create(&KindLabel { kind: "pod" })
                .inc();
            tracing::warn!(namespace = ?u.metadata.namespace, pod = ?u.metadata.name, error = %u.error, "skipping a Pod that does not decode");
            None
        }
    }
}

async fn pods_stream(
    shared: &Arc<Shared>,
    stream: impl futures::Stream<Item = Result<Event<Lenient<Pod>>, watcher::Error>> + Send,
    mut scope: ScopeFilter,
) {
    let mut stream = std::pin::pin!(stream);
    let mut buffer: Vec<PodView> = Vec::new();
    let mut relisting = false;
    loop {
        let ev = match next(&mut scope, relisting, &mut stream).await {
            Next::Scope(change) => {
                pods_scope_change(shared, &mut scope, change).await;
                continue;
            }
            Next::Event(ev) => ev,
        };
        let Some(ev) = ev else { break };
        shared.watch_health(true, ev.is_ok());
        let in_scope = |p: &Lenient<Pod>| scope.admits(p.meta().namespace.as_deref().unwrap_or(""));
        match ev {
            Ok(Event::Init) => {
                relisting = true;
                buffer.clear();
            }
            Ok(Event::InitApply(p)) if in_scope(&p) => buffer.extend(pod_view(shared, &p)),
            Ok(Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
                relisting = false;
                let gone = shared.pods_mut().replace_all(std::mem::take(&mut buffer));
                shared.trigger_pod(&gone.iter().map(|g| g.as_ref()).collect::<Vec<_>>());
                shared.mark_synced(true, false);
                if shared.is_synced() {
                    shared.trigger_all();
                }
                let n = shared.pods().len();
                shared.metrics.cached_pods.set(n as i64);
                tracing::debug!(pods = n, "pod cache (re)listed");
            }
            Ok(Event::Apply(p)) | Ok(Event::Delete(p)) if !in_scope(&p) => {}
            Ok(Event::Apply(p)) => {
                let Some(v) = pod_view(shared, &p) else {
                    continue;
                };
                if v.is_sidecar() {
                    shared.expectations().observed(&v, false);
                }
                let old = shared.pods_mut().apply(v.clone());
                if old.is_none() {
                    shared.metrics.cached_pods.inc();
                }
                match &old {
                    Some(o) if **o == v => {}
                    Some(o) => shared.trigger_pod(&[o, &v]),
                    None => shared.trigger_pod(&[&v]),
                }
            }
            Ok(Event::Delete(p)) => {
                let meta = p.meta();
                let key = (
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                );
                let old = shared.pods_mut().delete(&key);
                if old.is_some() {
                    shared.metrics.cached_pods.dec();
                }
                let Some(v) = old.as_deref().cloned().or_else(|| pod_view(shared, &p)) else {
                    continue;
                };
                if v.is_sidecar() {
                    shared.expectations().observed(&v, true);
                }
                shared.trigger_pod(&[&v]);
                shared.name_freed(&key);
            }
            Err(e) => {
                shared.metrics.watch_errors.inc();
                tracing::warn!(error = %e, "pod watch error; retrying with backoff");
            }
        }
    }
}

fn watcher<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    kube::runtime::watcher(api, cfg)
}

/// Retry delays of a failing watch: 0.5 s doubling to 5 s, with jitter. kube's default
/// grows to 30 s, which kept the operator blind for up to half a minute after a short
/// API server outage (measured: 38 s to recover from a 10 s outage).
#[derive(Debug, Clone)]
struct WatchBackoff {
    next: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        // Up to 25 % jitter, from the clock (no RNG dependency needed).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0);
        Some(d + d.mul_f64(f64::from(nanos % 250) / 1000.0))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

fn watch_backoff() -> kube::runtime::utils::ResetTimerBackoff<WatchBackoff> {
    kube::runtime::utils::ResetTimerBackoff::new(
        WatchBackoff { next: BACKOFF_MIN },
        Duration::from_secs(60),
    )
}

/// Keeps the policy cache in sync; runs until aborted. Follows the scope's changes.
pub(crate) async fn watch_policies(
    shared: Arc<Shared>,
    api: Api<Lenient<SidecarPolicy>>,
    changes: Option<mpsc::UnboundedReceiver<ScopeChange>>,
) {
    let scope = ScopeFilter::new(&shared, changes).await;
    let stream = watcher(api, watcher::Config::default()).backoff(watch_backoff());
    policies_stream(&shared, stream, scope).await;
}

/// The view of a listed or watched policy. One that does not decode becomes a view that
/// selects nothing and reports why on itself ([`PolicyView::undecodable`]); it never fails
/// the LIST or the watch, so it never affects another namespace.
fn policy_view(shared: &Shared, p: Lenient<SidecarPolicy>) -> PolicyView {
    match p {
        Lenient::Ok(p) => {
            let key = (p.namespace().unwrap_or_default(), p.name_any());
            let prev = shared.policies().get(&key).cloned();
            match prev {
                Some(prev) => PolicyView::update(Arc::new(p), &prev),
                None => PolicyView::new(Arc::new(p)),
            }
        }
        Lenient::Err(u) => {
            shared
                .metrics
                .undecodable_objects
                .get_or_create(&KindLabel {
                    kind: "sidecarpolicy",
                })
                .inc();
            tracing::warn!(namespace = ?u.metadata.namespace, policy = ?u.metadata.name, error = %u.error, "a SidecarPolicy does not decode; reporting it InvalidSpec");
            let status = u.status.and_then(|s| serde_json::from_value(s).ok());
            PolicyView::undecodable(u.metadata, status, &u.error)
        }
    }
}

async fn policies_stream(
    shared: &Arc<Shared>,
    stream: impl futures::Stream<Item = Result<Event<Lenient<SidecarPolicy>>, watcher::Error>> + Send,
    mut scope: ScopeFilter,
) {
    let mut stream = std::pin::pin!(stream);
    let mut buffer: Vec<PolicyView> = Vec::new();
    let mut relisting = false;
    loop {
        let ev = match next(&mut scope, relisting, &mut stream).await {
            Next::Scope(change) => {
                policies_scope_change(shared, &mut scope, change).await;
                continue;
            }
            Next::Event(ev) => ev,
        };
        let Some(ev) = ev else { break };
        shared.watch_health(false, ev.is_ok());
        let in_scope =
            |p: &Lenient<SidecarPolicy>| scope.admits(p.meta().namespace.as_deref().unwrap_or(""));
        match ev {
            Ok(Event::Init) => {
                relisting = true;
                buffer.clear();
            }
            Ok(Event::InitApply(p)) if in_scope(&p) => buffer.push(policy_view(shared, p)),
            Ok(Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
                relisting = false;
                let gone = shared
                    .policies_mut()
                    .replace_all(std::mem::take(&mut buffer));
                for g in &gone {
                    shared.trigger_policy(Some(g), None);
                }
                shared.mark_synced(false, true);
                if shared.is_synced() {
                    shared.trigger_all();
                }
            }
            Ok(Event::Apply(p)) | Ok(Event::Delete(p)) if !in_scope(&p) => {}
            Ok(Event::Apply(p)) => {
                let v = policy_view(shared, p);
                let old = shared.policies_mut().apply(v.clone());
                shared.trigger_policy(old.as_deref(), Some(&v));
            }
            Ok(Event::Delete(p)) => {
                let meta = p.meta();
                let key = (
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                );
                let old = shared.policies_mut().delete(&key);
                let v = match old {
                    Some(o) => o,
                    None => Arc::new(policy_view(shared, p)),
                };
                shared.trigger_policy(Some(&v), None);
                shared.forget_policy(&key);
            }
            Err(e) => {
                shared.metrics.watch_errors.inc();
                tracing::warn!(error = %e, "policy watch error; retrying with backoff");
            }
        }
    }
}

/// With `--namespace-selector`: keeps the set of namespaces in scope. The first list
/// sets the initial scope (the Pod and policy watches start with it); after that, a
/// namespace that starts to match is filled by the Pod and policy watches and then
/// adopted, and one that stops matching is first taken out of the scope (reconciles stop
/// acting on it) and then forgotten by both caches: cost in proportion to the namespace
/// that moved, never a relist, never a delete.
pub(crate) async fn watch_namespaces(
    shared: Arc<Shared>,
    api: Api<Namespace>,
    selector: String,
    only: Option<String>,
    control: ScopeControl,
) {
    let Some(scope) = shared.scope.as_ref() else {
        return;
    };
    let mut cfg = watcher::Config::default().labels(&selector);
    if let Some(ns) = &only {
        cfg = cfg.fields(&format!("metadata.name={ns}"));
    }
    let mut stream = std::pin::pin!(watcher(api, cfg).backoff(watch_backoff()));
    let mut buffer: HashSet<String> = HashSet::new();
    // What the selector matches, as far as this watch knows; `scope` follows it once
    // each change is reflected in the caches.
    let mut matching: HashSet<String> = HashSet::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(n)) => {
                buffer.insert(n.name_any());
            }
            Ok(Event::InitDone) => {
                let fresh = std::mem::take(&mut buffer);
                tracing::info!(namespaces = fresh.len(), %selector, "namespace scope listed");
                if *shared.scope_generation.borrow() == 0 {
                    *crate::write(scope) = fresh.clone();
                    matching = fresh;
                    shared.scope_generation.send_replace(1);
                    continue;
                }
                for ns in matching.difference(&fresh) {
                    leave(&shared, &control, ns).await;
                }
                for ns in fresh.difference(&matching) {
                    enter(&shared, &control, ns).await;
                }
                matching = fresh;
            }
            Ok(Event::Apply(n)) => {
                let ns = n.name_any();
                if matching.insert(ns.clone()) {
                    enter(&shared, &control, &ns).await;
                }
            }
            Ok(Event::Delete(n)) => {
                let ns = n.name_any();
                if matching.remove(&ns) {
                    leave(&shared, &control, &ns).await;
                }
            }
            Err(e) => {
                shared.metrics.watch_errors.inc();
                tracing::warn!(error = %e, "namespace watch error; retrying with backoff");
            }
        }
    }
}

/// `ns` starts to match: both caches list it, then it is in scope and reconciled.
async fn enter(shared: &Shared, control: &ScopeControl, ns: &str) {
    let t0 = std::time::Instant::now();
    let (pods, policies) = (oneshot::channel(), oneshot::channel());
    let _ = control
        .pods
        .send(ScopeChange::Enter(ns.to_string(), pods.0));
    let _ = control
        .policies
        .send(ScopeChange::Enter(ns.to_string(), policies.0));
    let _ = tokio::join!(pods.1, policies.1);
    if let Some(scope) = &shared.scope {
        crate::write(scope).insert(ns.to_string());
    }
    shared.trigger_namespace(ns);
    tracing::info!(
        namespace = ns,
        took_ms = t0.elapsed().as_millis() as u64,
        "namespace entered the scope; adopting what is there"
    );
}

/// `ns` stops matching: out of scope first (reconciles stop acting on it), then its
/// Pods and then its policies are forgotten — in that order, so that no reconcile ever
/// sees its Pods without its policies.
async fn leave(shared: &Shared, control: &ScopeControl, ns: &str) {
    if let Some(scope) = &shared.scope {
        crate::write(scope).remove(ns);
    }
    let (pods, policies) = (oneshot::channel(), oneshot::channel());
    let _ = control
        .pods
        .send(ScopeChange::Leave(ns.to_string(), pods.0));
    let _ = pods.1.await;
    let _ = control
        .policies
        .send(ScopeChange::Leave(ns.to_string(), policies.0));
    let _ = policies.1.await;
    tracing::info!(
        namespace = ns,
        "namespace left the scope; its objects forgotten, none deleted"
    );
}
