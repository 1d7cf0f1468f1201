//! The ClusterSidecarPolicy watch, with the namespaces' labels: keeps each cluster policy's
//! view and its instances (one per namespace it applies in, see [`sidecar_planner::cluster`])
//! in the policy cache.
//!
//! One task reads both watches, so the instances always follow one order of events: a cluster
//! policy that changes recomputes its instances in every namespace; a namespace whose labels
//! change recomputes every cluster policy's instance there. A namespace relabelled into (or out
//! of) a policy's scope only adds (or removes) that instance and reconciles that namespace's
//! Pods from the cache: no relist, and nothing elsewhere moves. Until both watches have listed
//! once, nothing is expanded, so a restart never reads "no namespace matches" and deletes
//! sidecars.
//!
//! A first list of cluster policies that the API server refuses (404: the CRD is not
//! installed; 403: no RBAC for them, or RBAC not in effect yet, as right after an install) is
//! not an empty list. The choice: readiness is not held for it (the SidecarPolicies are
//! served, so an install without the cluster CRD still works), but the cluster policies stay
//! unknown: none is expanded, and no cluster policy's sidecar is judged (kept, counted or
//! deleted, see [`sidecar_planner::judgeable`]) until a list succeeds; the watch keeps
//! retrying, and then everything is reconciled.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::core::PartialObjectMeta;
use sidecar_api::ClusterSidecarPolicy;
use sidecar_planner::Labels;

use super::*;
use crate::metrics::KindLabel;
use crate::write;

/// Keeps the cluster policies and their instances; runs until aborted.
pub(crate) async fn watch_clusters(
    ctx: Arc<Context>,
    policies: Api<Lenient<ClusterSidecarPolicy>>,
    namespaces: Api<PartialObjectMeta<Namespace>>,
) {
    let policies = watcher(policies, watcher::Config::default()).backoff(watch_backoff());
    // Metadata only: the labels are all that is read.
    let namespaces = watcher(namespaces, watcher::Config::default()).backoff(watch_backoff());
    let mut policies = std::pin::pin!(policies);
    let mut namespaces = std::pin::pin!(namespaces);
    let mut state = State::default();
    loop {
        tokio::select! {
            ev = policies.next() => match ev {
                Some(ev) => state.policy_event(&ctx, ev),
                None => break,
            },
            ev = namespaces.next() => match ev {
                Some(ev) => state.namespace_event(&ctx, ev),
                None => break,
            },
        }
    }
}

#[derive(Default)]
struct State {
    /// Namespace → its labels, once listed.
    namespaces: HashMap<String, Labels>,
    namespaces_buffer: HashMap<String, Labels>,
    namespaces_listed: bool,
    policies_buffer: Vec<PolicyView>,
    /// A list of the cluster policies succeeded.
    policies_listed: bool,
    /// Their first list was refused (403, 404): readiness is given, nothing is expanded.
    policies_refused: bool,
    /// Both have listed once: instances are kept from then on.
    expanding: bool,
    /// Readiness was given (both listed, or the namespaces listed and the policies refused).
    ready: bool,
}

impl State {
    fn policy_event(
        &mut self,
        ctx: &Context,
        ev: Result<Event<Lenient<ClusterSidecarPolicy>>, watcher::Error>,
    ) {
        match ev {
            Ok(Event::Init) => self.policies_buffer.clear(),
            Ok(Event::InitApply(p)) => {
                let v = cluster_view(ctx, p);
                self.policies_buffer.push(v);
            }
            Ok(Event::InitDone) => {
                let fresh: BTreeMap<String, PolicyView> = std::mem::take(&mut self.policies_buffer)
                    .into_iter()
                    .map(|v| (v.name.clone(), v))
                    .collect();
                let gone: Vec<String> = ctx
                    .caches
                    .policies()
                    .clusters()
                    .map(|v| v.name.clone())
                    .filter(|id| !fresh.contains_key(id))
                    .collect();
                for id in gone {
                    self.set_policy(ctx, &id, None);
                }
                for (id, v) in fresh {
                    self.set_policy(ctx, &id, Some(v));
                }
                self.policies_listed = true;
                self.start(ctx);
            }
            Ok(Event::Apply(p)) => {
                let v = cluster_view(ctx, p);
                let id = v.name.clone();
                self.set_policy(ctx, &id, Some(v));
            }
            Ok(Event::Delete(p)) => {
                let id = sidecar_planner::cluster_id(p.meta().name.as_deref().unwrap_or_default());
                self.set_policy(ctx, &id, None);
            }
            Err(e) if !self.policies_listed && cluster_policies_unlistable(&e) => {
                // Not "none exists" (see the module doc): ready, nothing expanded or judged;
                // the watch keeps trying.
                if !self.policies_refused {
                    tracing::warn!(
                        error = %e,
                        "ClusterSidecarPolicies cannot be listed (CRD not installed, or no list/watch on clustersidecarpolicies in the RBAC, or not yet in effect); none applies, and no sidecar of one is deleted, until they can (retrying)"
                    );
                    self.policies_refused = true;
                    self.start(ctx);
                }
            }
            Err(e) => {
                ctx.metrics.watch_errors.inc();
                tracing::warn!(error = %e, "ClusterSidecarPolicy watch error; retrying with backoff");
            }
        }
    }

    fn namespace_event(
        &mut self,
        ctx: &Context,
        ev: Result<Event<PartialObjectMeta<Namespace>>, watcher::Error>,
    ) {
        let labels = namespace_labels;
        match ev {
            Ok(Event::Init) => self.namespaces_buffer.clear(),
            Ok(Event::InitApply(n)) => {
                self.namespaces_buffer.insert(n.name_any(), labels(&n));
            }
            Ok(Event::InitDone) => {
                let fresh = std::mem::take(&mut self.namespaces_buffer);
                let changed: Vec<String> = fresh
                    .iter()
                    .filter(|(ns, l)| self.namespaces.get(*ns) != Some(l))
                    .map(|(ns, _)| ns.clone())
                    .chain(
                        self.namespaces
                            .keys()
                            .filter(|ns| !fresh.contains_key(*ns))
                            .cloned(),
                    )
                    .collect();
                self.namespaces = fresh;
                *write(&ctx.namespace_labels) = self.namespaces.clone();
                self.namespaces_listed = true;
                if self.expanding {
                    for ns in changed {
                        self.expand_namespace(ctx, &ns);
                    }
                }
                self.start(ctx);
            }
            Ok(Event::Apply(n)) => {
                let ns = n.name_any();
                let l = labels(&n);
                if self.namespaces.get(&ns) != Some(&l) {
                    write(&ctx.namespace_labels).insert(ns.clone(), l.clone());
                    self.namespaces.insert(ns.clone(), l);
                    self.expand_namespace(ctx, &ns);
                }
            }
            Ok(Event::Delete(n)) => {
                let ns = n.name_any();
                write(&ctx.namespace_labels).remove(&ns);
                if self.namespaces.remove(&ns).is_some() {
                    self.expand_namespace(ctx, &ns);
                }
            }
            Err(e) => {
                ctx.metrics.watch_errors.inc();
                tracing::warn!(error = %e, "namespace watch (cluster policies) error; retrying with backoff");
            }
        }
    }

    /// Once both have listed: expand every policy, and say the cluster policies are known and
    /// synced. Once the namespaces have listed and the policies were refused: say synced only.
    fn start(&mut self, ctx: &Context) {
        if !self.namespaces_listed {
            return;
        }
        if self.policies_listed && !self.expanding {
            self.expanding = true;
            let ids: Vec<String> = ctx
                .caches
                .policies()
                .clusters()
                .map(|v| v.name.clone())
                .collect();
            for id in ids {
                self.expand_policy(ctx, &id);
            }
            // Only now, with every instance in place: a sidecar judged before would have read
            // a missing instance as a policy gone.
            ctx.caches.policies_mut().set_clusters_known();
            tracing::info!(
                policies = ctx.caches.policies().clusters().count(),
                namespaces = self.namespaces.len(),
                "ClusterSidecarPolicies and namespaces listed"
            );
            if self.ready {
                // Ready since a refused list: what was left alone is judged now.
                ctx.trigger_all();
            }
        }
        if !self.ready && (self.policies_listed || self.policies_refused) {
            self.ready = true;
            ctx.readiness.mark_clusters_synced();
            if ctx.readiness.is_synced() {
                ctx.trigger_all();
            }
        }
    }

    /// Keeps (or forgets) cluster policy `id`, then its instances.
    fn set_policy(&mut self, ctx: &Context, id: &str, v: Option<PolicyView>) {
        let gone = v.is_none();
        let old = ctx.caches.policies_mut().set_cluster(id, v);
        if self.expanding {
            self.expand_policy(ctx, id);
        }
        let key = PolicyKey(String::new(), id.to_string());
        if gone && old.is_some() {
            ctx.forget_policy(&key);
        } else if !gone {
            ctx.queues.status_soon(key);
        }
    }

    /// Recomputes cluster policy `id`'s instance in every namespace.
    fn expand_policy(&self, ctx: &Context, id: &str) {
        let base = ctx
            .caches
            .policies()
            .get(&PolicyKey(String::new(), id.to_string()))
            .cloned();
        let mut namespaces: Vec<String> = self.namespaces.keys().cloned().collect();
        namespaces.extend(
            ctx.caches
                .policies()
                .instances_of(id)
                .iter()
                .map(|i| i.namespace.clone()),
        );
        namespaces.sort();
        namespaces.dedup();
        for ns in namespaces {
            self.expand(ctx, base.as_deref(), id, &ns);
        }
    }

    /// Recomputes every cluster policy's instance in namespace `ns`.
    fn expand_namespace(&self, ctx: &Context, ns: &str) {
        let bases: Vec<Arc<PolicyView>> = ctx.caches.policies().clusters().cloned().collect();
        for base in bases {
            self.expand(ctx, Some(&base), &base.name, ns);
        }
    }

    /// Sets the instance of cluster policy `id` (`base`, if it exists) in `ns` to what it
    /// should be, and reconciles what that changes.
    fn expand(&self, ctx: &Context, base: Option<&PolicyView>, id: &str, ns: &str) {
        let wanted = base.filter(|b| {
            self.namespaces
                .get(ns)
                .is_some_and(|labels| b.applies_in(ns, labels, &ctx.unserved_namespaces))
        });
        let key = PolicyKey(ns.to_string(), id.to_string());
        let new = wanted.map(|b| b.instance(ns));
        let had = ctx.caches.policies().get(&key).is_some();
        if new.is_none() && !had {
            return;
        }
        let old = ctx.caches.policies_mut().set_instance(&key, new.clone());
        match (&old, &new) {
            (None, Some(_)) => tracing::info!(
                namespace = ns,
                policy = id,
                "a ClusterSidecarPolicy applies in the namespace"
            ),
            (Some(_), None) => tracing::info!(
                namespace = ns,
                policy = id,
                "a ClusterSidecarPolicy no longer applies in the namespace"
            ),
            _ => {}
        }
        ctx.trigger_policy(old.as_deref(), new.as_ref());
        if new.is_none() {
            ctx.forget_policy(&key);
            // The cluster policy's status loses the namespace.
            ctx.queues.status_soon(key);
        }
    }
}

/// The view of a listed or watched cluster policy; one that does not decode selects nothing
/// and reports why on itself, keeping the namespaces it applied in.
fn cluster_view(ctx: &Context, p: Lenient<ClusterSidecarPolicy>) -> PolicyView {
    let id = sidecar_planner::cluster_id(p.meta().name.as_deref().unwrap_or_default());
    let prev = ctx
        .caches
        .policies()
        .get(&PolicyKey(String::new(), id))
        .cloned();
    match p {
        Lenient::Ok(p) => match prev {
            Some(prev) => PolicyView::cluster_update(Arc::new(p), &prev),
            None => PolicyView::cluster(Arc::new(p)),
        },
        Lenient::Err(u) => {
            ctx.metrics
                .undecodable_objects
                .get_or_create(&KindLabel {
                    kind: "clustersidecarpolicy",
                })
                .inc();
            tracing::warn!(policy = ?u.metadata.name, error = %u.error, "a ClusterSidecarPolicy does not decode; reporting it InvalidSpec");
            let status = u.status.and_then(|s| serde_json::from_value(s).ok());
            PolicyView::cluster_undecodable(u.metadata, status, &u.error, prev.as_deref())
        }
    }
}

/// The first list of ClusterSidecarPolicies failed because the API server does not serve them
/// (404: the CRD is not installed) or this instance may not list them (403: RBAC from before
/// they existed). Either way none can apply yet; the watch keeps trying.
pub fn cluster_policies_unlistable(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404 || s.code == 403)
}

/// A namespace's labels, as selectors match them.
pub fn namespace_labels(n: &PartialObjectMeta<Namespace>) -> Labels {
    n.metadata
        .labels
        .as_ref()
        .map(Labels::from)
        .unwrap_or_default()
}
