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

use std::time::Duration;

use futures::StreamExt as _;
use std::collections::HashSet;
use tokio::sync::{mpsc, oneshot};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource as _, ResourceExt as _};
use sidecar_api::SidecarPolicy;
use sidecar_planner::{PodView, PolicyView};

use crate::context::Context;
use crate::decode::Lenient;
use crate::keys::{PodKey, PolicyKey};

mod clusters;
mod namespaces;
mod pods;
mod policies;

pub(crate) use clusters::watch_clusters;
pub use clusters::{cluster_policies_unlistable, namespace_labels};
pub(crate) use namespaces::watch_namespaces;
pub(crate) use pods::watch_pods;
pub(crate) use policies::watch_policies;

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
    async fn new(ctx: &Context, changes: Option<mpsc::UnboundedReceiver<ScopeChange>>) -> Self {
        let mut rx = ctx.caches.scope_generation.subscribe();
        while *rx.borrow_and_update() == 0 {
            if rx.changed().await.is_err() {
                break;
            }
        }
        let namespaces = ctx.caches.scope.as_ref().map(|s| crate::read(s).clone());
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
    ctx: &Context,
    api: &Api<K>,
    page: u32,
    mut view: impl FnMut(K) -> Option<V>,
) -> Vec<V>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut backoff = watch_backoff();
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
                    ctx.metrics.watch_errors.inc();
                    tracing::warn!(error = %e, "listing a namespace that entered the scope; retrying with backoff");
                    tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
                    continue 'restart;
                }
            }
        }
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

fn watcher<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    kube::runtime::watcher(api, cfg)
}

/// Retry delays of a failing watch: 0.5 s doubling to 5 s, with jitter, reset after a
/// minute without error (kube-runtime's exponential backoff, built with `backon` as its
/// own default is). kube's default grows to 30 s, which kept the operator blind for up to
/// half a minute after a short API server outage (measured: 38 s to recover from a 10 s
/// outage).
pub fn watch_backoff() -> ResetTimerBackoff<watcher::ExponentialBackoff> {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(builder.into(), Duration::from_secs(60))
}
