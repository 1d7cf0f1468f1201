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

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Namespace, Pod};
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

/// Waits until the namespace scope is known, then returns a receiver of its changes.
async fn scope_known(shared: &Shared) -> tokio::sync::watch::Receiver<u64> {
    let mut rx = shared.scope_generation.subscribe();
    while *rx.borrow_and_update() == 0 {
        if rx.changed().await.is_err() {
            break;
        }
    }
    rx
}

/// Pods per page of the initial (and any re-) list. Each page is held as full Pod
/// objects until it is turned into views; kube's default of 500 made the start-up
/// memory peak over twice the steady memory. 100 costs one LIST request per 100 Pods.
const POD_LIST_PAGE: u32 = 100;

/// Keeps the Pod cache in sync; runs until aborted. Relists when the scope changes.
pub(crate) async fn watch_pods(shared: Arc<Shared>, api: Api<Lenient<Pod>>) {
    loop {
        let mut scope = scope_known(&shared).await;
        let cfg = watcher::Config::default().page_size(POD_LIST_PAGE);
        let stream = watcher(api.clone(), cfg).backoff(watch_backoff());
        tokio::select! {
            _ = pods_stream(&shared, stream) => return,
            _ = scope.changed() => tracing::info!("namespace scope changed; relisting Pods"),
        }
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
) {
    let mut stream = std::pin::pin!(stream);
    let mut buffer: Vec<PodView> = Vec::new();
    while let Some(ev) = stream.next().await {
        shared.watch_health(true, ev.is_ok());
        let in_scope =
            |p: &Lenient<Pod>| shared.in_scope(p.meta().namespace.as_deref().unwrap_or(""));
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(p)) if in_scope(&p) => buffer.extend(pod_view(shared, &p)),
            Ok(Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
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

/// Keeps the policy cache in sync; runs until aborted.
pub(crate) async fn watch_policies(shared: Arc<Shared>, api: Api<Lenient<SidecarPolicy>>) {
    loop {
        let mut scope = scope_known(&shared).await;
        let stream = watcher(api.clone(), watcher::Config::default()).backoff(watch_backoff());
        tokio::select! {
            _ = policies_stream(&shared, stream) => return,
            _ = scope.changed() => tracing::info!("namespace scope changed; relisting SidecarPolicies"),
        }
    }
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
) {
    let mut stream = std::pin::pin!(stream);
    let mut buffer: Vec<PolicyView> = Vec::new();
    while let Some(ev) = stream.next().await {
        shared.watch_health(false, ev.is_ok());
        let in_scope = |p: &Lenient<SidecarPolicy>| {
            shared.in_scope(p.meta().namespace.as_deref().unwrap_or(""))
        };
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(p)) if in_scope(&p) => buffer.push(policy_view(shared, p)),
            Ok(Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
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

/// With `--namespace-selector`: keeps the set of namespaces in scope, and bumps the
/// scope generation (so the Pod and policy watches relist) whenever it changes.
pub(crate) async fn watch_namespaces(shared: Arc<Shared>, api: Api<Namespace>, selector: String) {
    let Some(scope) = shared.scope.as_ref() else {
        return;
    };
    let cfg = watcher::Config::default().labels(&selector);
    let mut stream = std::pin::pin!(watcher(api, cfg).backoff(watch_backoff()));
    let mut buffer: HashSet<String> = HashSet::new();
    let bump = |changed: bool| {
        if changed || *shared.scope_generation.borrow() == 0 {
            shared.scope_generation.send_modify(|g| *g += 1);
        }
    };
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(n)) => {
                buffer.insert(n.name_any());
            }
            Ok(Event::InitDone) => {
                let fresh = std::mem::take(&mut buffer);
                let changed = {
                    let mut set = scope.write().unwrap_or_else(|e| e.into_inner());
                    let changed = *set != fresh;
                    *set = fresh;
                    changed
                };
                tracing::info!(namespaces = ?scope.read().map(|s| s.len()).unwrap_or(0), %selector, "namespace scope listed");
                bump(changed);
            }
            Ok(Event::Apply(n)) => {
                let inserted = scope
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(n.name_any());
                bump(inserted);
            }
            Ok(Event::Delete(n)) => {
                let removed = scope
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&n.name_any());
                bump(removed);
            }
            Err(e) => {
                shared.metrics.watch_errors.inc();
                tracing::warn!(error = %e, "namespace watch error; retrying with backoff");
            }
        }
    }
}
