//! The policy watch: keeps the policy cache, maps events to keys.

use std::sync::Arc;

use super::*;
use crate::metrics::KindLabel;

/// Applies a scope change to the policy cache.
async fn policies_scope_change(ctx: &Context, scope: &mut ScopeFilter, change: ScopeChange) {
    match change {
        ScopeChange::Enter(ns, done) => {
            let api: Api<Lenient<SidecarPolicy>> = Api::namespaced(ctx.client.clone(), &ns);
            let views = list_namespace(ctx, &api, 500, |p| Some(policy_view(ctx, p))).await;
            let n = views.len();
            ctx.caches.policies_mut().replace_namespace(&ns, views);
            tracing::info!(namespace = %ns, policies = n, "namespace entered the scope; its SidecarPolicies listed");
            scope.enter(ns);
            let _ = done.send(());
        }
        ScopeChange::Leave(ns, done) => {
            scope.leave(&ns);
            let keys = ctx.caches.policies_mut().drop_namespace(&ns);
            for k in &keys {
                ctx.forget_policy(k);
            }
            tracing::info!(namespace = %ns, policies = keys.len(), "namespace left the scope; its SidecarPolicies forgotten");
            let _ = done.send(());
        }
    }
}

/// Keeps the policy cache in sync; runs until aborted. Follows the scope's changes.
pub(crate) async fn watch_policies(
    ctx: Arc<Context>,
    api: Api<Lenient<SidecarPolicy>>,
    changes: Option<mpsc::UnboundedReceiver<ScopeChange>>,
) {
    let scope = ScopeFilter::new(&ctx, changes).await;
    let stream = watcher(api, watcher::Config::default()).backoff(watch_backoff());
    policies_stream(&ctx, stream, scope).await;
}

/// The view of a listed or watched policy. One that does not decode becomes a view that
/// selects nothing and reports why on itself ([`PolicyView::undecodable`]); it never fails
/// the LIST or the watch, so it never affects another namespace.
fn policy_view(ctx: &Context, p: Lenient<SidecarPolicy>) -> PolicyView {
    match p {
        Lenient::Ok(p) => {
            let key = PolicyKey(p.namespace().unwrap_or_default(), p.name_any());
            let prev = ctx.caches.policies().get(&key).cloned();
            match prev {
                Some(prev) => PolicyView::update(Arc::new(p), &prev),
                None => PolicyView::new(Arc::new(p)),
            }
        }
        Lenient::Err(u) => {
            ctx.metrics
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
    ctx: &Arc<Context>,
    stream: impl futures::Stream<Item = Result<Event<Lenient<SidecarPolicy>>, watcher::Error>> + Send,
    mut scope: ScopeFilter,
) {
    let mut stream = std::pin::pin!(stream);
    let mut buffer: Vec<PolicyView> = Vec::new();
    let mut relisting = false;
    loop {
        let ev = match next(&mut scope, relisting, &mut stream).await {
            Next::Scope(change) => {
                policies_scope_change(ctx, &mut scope, change).await;
                continue;
            }
            Next::Event(ev) => ev,
        };
        let Some(ev) = ev else { break };
        ctx.readiness.watches.set(false, ev.is_ok());
        let in_scope =
            |p: &Lenient<SidecarPolicy>| scope.admits(p.meta().namespace.as_deref().unwrap_or(""));
        match ev {
            Ok(Event::Init) => {
                relisting = true;
                buffer.clear();
            }
            Ok(Event::InitApply(p)) if in_scope(&p) => buffer.push(policy_view(ctx, p)),
            Ok(Event::InitApply(_)) => {}
            Ok(Event::InitDone) => {
                relisting = false;
                let gone = ctx
                    .caches
                    .policies_mut()
                    .replace_all(std::mem::take(&mut buffer));
                for g in &gone {
                    ctx.trigger_policy(Some(g), None);
                    ctx.forget_policy(&PolicyKey(g.namespace.clone(), g.name.clone()));
                }
                ctx.readiness.mark_synced(false, true);
                if ctx.readiness.is_synced() {
                    ctx.trigger_all();
                }
            }
            Ok(Event::Apply(p)) | Ok(Event::Delete(p)) if !in_scope(&p) => {}
            Ok(Event::Apply(p)) => {
                let v = policy_view(ctx, p);
                let old = ctx.caches.policies_mut().apply(v.clone());
                ctx.trigger_policy(old.as_deref(), Some(&v));
            }
            Ok(Event::Delete(p)) => {
                let meta = p.meta();
                let key = PolicyKey(
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                );
                let old = ctx.caches.policies_mut().delete(&key);
                let v = match old {
                    Some(o) => o,
                    None => Arc::new(policy_view(ctx, p)),
                };
                ctx.trigger_policy(Some(&v), None);
                ctx.forget_policy(&key);
            }
            Err(e) => {
                ctx.metrics.watch_errors.inc();
                tracing::warn!(error = %e, "policy watch error; retrying with backoff");
            }
        }
    }
}
