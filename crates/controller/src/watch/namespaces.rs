//! The namespace watch (`--namespace-selector`): decides the scope.

use std::sync::Arc;

use super::*;

/// With `--namespace-selector`: keeps the set of namespaces in scope. The first list
/// sets the initial scope (the Pod and policy watches start with it); after that, a
/// namespace that starts to match is filled by the Pod and policy watches and then
/// adopted, and one that stops matching is first taken out of the scope (reconciles stop
/// acting on it) and then forgotten by both caches: cost in proportion to the namespace
/// that moved, never a relist, never a delete.
pub(crate) async fn watch_namespaces(
    ctx: Arc<Context>,
    api: Api<Namespace>,
    selector: String,
    only: Option<String>,
    control: ScopeControl,
) {
    let Some(scope) = ctx.caches.scope.as_ref() else {
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
                if *ctx.caches.scope_generation.borrow() == 0 {
                    *crate::write(scope) = fresh.clone();
                    matching = fresh;
                    ctx.caches.scope_generation.send_replace(1);
                    continue;
                }
                for ns in matching.difference(&fresh) {
                    leave(&ctx, &control, ns).await;
                }
                for ns in fresh.difference(&matching) {
                    enter(&ctx, &control, ns).await;
                }
                matching = fresh;
            }
            Ok(Event::Apply(n)) => {
                let ns = n.name_any();
                if matching.insert(ns.clone()) {
                    enter(&ctx, &control, &ns).await;
                }
            }
            Ok(Event::Delete(n)) => {
                let ns = n.name_any();
                if matching.remove(&ns) {
                    leave(&ctx, &control, &ns).await;
                }
            }
            Err(e) => {
                ctx.metrics.watch_errors.inc();
                tracing::warn!(error = %e, "namespace watch error; retrying with backoff");
            }
        }
    }
}

/// `ns` starts to match: both caches list it, then it is in scope and reconciled.
async fn enter(ctx: &Context, control: &ScopeControl, ns: &str) {
    let t0 = std::time::Instant::now();
    let (pods, policies) = (oneshot::channel(), oneshot::channel());
    let _ = control
        .pods
        .send(ScopeChange::Enter(ns.to_string(), pods.0));
    let _ = control
        .policies
        .send(ScopeChange::Enter(ns.to_string(), policies.0));
    let _ = tokio::join!(pods.1, policies.1);
    if let Some(scope) = &ctx.caches.scope {
        crate::write(scope).insert(ns.to_string());
    }
    ctx.trigger_namespace(ns);
    tracing::info!(
        namespace = ns,
        took_ms = t0.elapsed().as_millis() as u64,
        "namespace entered the scope; adopting what is there"
    );
}

/// `ns` stops matching: out of scope first (reconciles stop acting on it), then its
/// Pods and then its policies are forgotten — in that order, so that no reconcile ever
/// sees its Pods without its policies.
async fn leave(ctx: &Context, control: &ScopeControl, ns: &str) {
    if let Some(scope) = &ctx.caches.scope {
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
