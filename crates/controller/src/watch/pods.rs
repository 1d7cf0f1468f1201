//! The Pod watch: keeps the Pod cache, maps events to keys.

use std::sync::Arc;

use super::*;
use crate::metrics::KindLabel;
use sidecar_planner::{Relevance, relevance};

/// A Pod that appeared or went: everything it concerns is reconciled.
const ALWAYS: Relevance = Relevance {
    pod: true,
    status: true,
};

/// Applies a scope change to the Pod cache.
async fn pods_scope_change(ctx: &Context, scope: &mut ScopeFilter, change: ScopeChange) {
    match change {
        ScopeChange::Enter(ns, done) => {
            let api: Api<Lenient<Pod>> = Api::namespaced(ctx.client.clone(), &ns);
            let views = list_namespace(ctx, &api, POD_LIST_PAGE, |p| pod_view(ctx, &p)).await;
            {
                let mut exp = ctx.expectations();
                for v in views.iter().filter(|v| v.is_sidecar()) {
                    exp.observed(v, false);
                }
            }
            let n = views.len();
            ctx.caches.pods_mut().replace_namespace(&ns, views);
            ctx.metrics.cached_pods.set(ctx.caches.pods().len() as i64);
            tracing::info!(namespace = %ns, pods = n, "namespace entered the scope; its Pods listed");
            scope.enter(ns);
            let _ = done.send(());
        }
        ScopeChange::Leave(ns, done) => {
            scope.leave(&ns);
            let n = ctx.caches.pods_mut().drop_namespace(&ns);
            ctx.expectations().forget_namespace(&ns);
            ctx.metrics.cached_pods.set(ctx.caches.pods().len() as i64);
            tracing::info!(namespace = %ns, pods = n, "namespace left the scope; its Pods forgotten");
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
    ctx: Arc<Context>,
    api: Api<Lenient<Pod>>,
    changes: Option<mpsc::UnboundedReceiver<ScopeChange>>,
) {
    let scope = ScopeFilter::new(&ctx, changes).await;
    let cfg = watcher::Config::default().page_size(POD_LIST_PAGE);
    let stream = watcher(api, cfg).backoff(watch_backoff());
    match ctx.pod_watch_lag {
        Some(lag) => pods_stream(&ctx, lagged(stream, lag), scope).await,
        None => pods_stream(&ctx, stream, scope).await,
    }
}

/// The view of a listed or watched Pod; `None` (counted, logged) for a Pod that does not
/// decode: it is skipped, never a failed LIST.
fn pod_view(ctx: &Context, p: &Lenient<Pod>) -> Option<PodView> {
    match p {
        Lenient::Ok(p) => PodView::from_pod(p),
        Lenient::Err(u) => {
            ctx.metrics
                .undecodable_objects
                .get_or_create(&KindLabel { kind: "pod" })
                .inc();
            tracing::warn!(namespace = ?u.metadata.namespace, pod = ?u.metadata.name, error = %u.error, "skipping a Pod that does not decode");
            None
        }
    }
}

async fn pods_stream(
    ctx: &Arc<Context>,
    stream: impl futures::Stream<Item = Result<Event<Lenient<Pod>>, watcher::Error>> + Send,
    mut scope: ScopeFilter,
) {
    let mut stream = std::pin::pin!(stream);
    let mut buffer: Vec<PodView> = Vec::new();
    let mut relisting = false;
    loop {
        let ev = match next(&mut scope, relisting, &mut stream).await {
            Next::Scope(change) => {
                pods_scope_change(ctx, &mut scope, change).await;
                continue;
            }
            Next::Event(ev) => ev,
        };
        let Some(ev) = ev else { break };
        ctx.readiness.watches.set(true, ev.is_ok());
        // The Pods of a (re)list are collected, then swapped in at once.
        let in_scope = |p: &Lenient<Pod>| scope.admits(p.meta().namespace.as_deref().unwrap_or(""));
        match ev {
            Ok(Event::Init) => {
                relisting = true;
                buffer.clear();
            }
            Ok(Event::InitApply(p)) if in_scope(&p) => buffer.extend(pod_view(ctx, &p)),
            Ok(Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
                relisting = false;
                let gone = ctx
                    .caches
                    .pods_mut()
                    .replace_all(std::mem::take(&mut buffer));
                ctx.trigger_pod(&gone.iter().map(|g| g.as_ref()).collect::<Vec<_>>(), ALWAYS);
                ctx.readiness.mark_synced(true, false);
                if ctx.readiness.is_synced() {
                    ctx.trigger_all();
                }
                let n = ctx.caches.pods().len();
                ctx.metrics.cached_pods.set(n as i64);
                tracing::debug!(pods = n, "pod cache (re)listed");
            }
            Ok(Event::Apply(p)) | Ok(Event::Delete(p)) if !in_scope(&p) => {}
            Ok(Event::Apply(p)) => applied(ctx, &p),
            Ok(Event::Delete(p)) => deleted(ctx, &p),
            Err(e) => {
                ctx.metrics.watch_errors.inc();
                tracing::warn!(error = %e, "pod watch error; retrying with backoff");
            }
        }
    }
}

/// A Pod was created or changed.
fn applied(ctx: &Context, p: &Lenient<Pod>) {
    let Some(v) = pod_view(ctx, p) else {
        return;
    };
    let echo = v.is_sidecar()
        && ctx
            .expectations()
            .echo_of_last_plan(&PodKey(v.namespace.clone(), v.name.clone()));
    let old = ctx.caches.pods_mut().apply(v.clone());
    if old.is_none() {
        ctx.metrics.cached_pods.inc();
    }
    // Only once the cache shows the change may its expectation go. A reconcile holds the
    // cache's read lock while it reads the expectations: had the expectation gone first, a
    // rollout step reading the cache from before this event (a sidecar Ready, not yet
    // terminating) would no longer see its delete pending, count that sidecar available
    // and exceed maxUnavailable (seen under load as 2 Pods without a Ready sidecar).
    if v.is_sidecar() {
        ctx.expectations().observed(&v, false);
    }
    // The echo of our own create reconciles its main Pod only if that Pod was planned
    // again meanwhile (from a cache without this sidecar: a policy deleted meanwhile may
    // want it gone, and only now can a reconcile see it).
    let mut r = relevance(old.as_deref(), Some(&v));
    r.pod &= !(echo && old.is_none());
    match &old {
        Some(o) => ctx.trigger_pod(&[o, &v], r),
        None => ctx.trigger_pod(&[&v], r),
    }
}

/// A Pod was deleted.
fn deleted(ctx: &Context, p: &Lenient<Pod>) {
    let meta = p.meta();
    let key = PodKey(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    let old = ctx.caches.pods_mut().delete(&key);
    if old.is_some() {
        ctx.metrics.cached_pods.dec();
    }
    let Some(v) = old.as_deref().cloned().or_else(|| pod_view(ctx, p)) else {
        return;
    };
    if v.is_sidecar() {
        ctx.expectations().observed(&v, true);
    }
    ctx.trigger_pod(&[&v], ALWAYS);
    ctx.name_freed(&key);
}
