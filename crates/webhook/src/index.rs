//! The webhook's own view of the Container-mode policies: a watch of SidecarPolicies kept
//! as ready-to-use [`PolicyView`]s per namespace, so that an admission reads memory only,
//! never the API server. Every replica keeps one, leader or not (the controllers, and
//! their caches, run only on the leader).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource as _, ResourceExt as _};
use sidecar_api::{ClusterSidecarPolicy, Mode, SidecarPolicy};
use sidecar_controller::{Lenient, watch_backoff};
use sidecar_planner::pod_security::Level;
use sidecar_planner::{Labels, PolicyView};

use crate::review::InNamespace;
use tokio::sync::watch;

type Namespaces = HashMap<String, BTreeMap<String, Arc<PolicyView>>>;

/// The Container-mode policies by namespace and name; the Container-mode
/// ClusterSidecarPolicies with every namespace's labels, to tell where they apply.
#[derive(Debug)]
pub struct PolicyIndex {
    policies: RwLock<Namespaces>,
    clusters: RwLock<Clusters>,
    /// Namespaces the cluster policies skip unless named (see `sidecar_planner::cluster`).
    left_out: HashSet<String>,
    synced: watch::Sender<bool>,
    /// The cluster policies and namespaces listed (true when they are not watched).
    clusters_synced: watch::Sender<bool>,
}

/// What the index keeps for the cluster policies.
#[derive(Debug, Default)]
struct Clusters {
    /// Container-mode ClusterSidecarPolicies by id (`csp/{name}`).
    policies: BTreeMap<String, Arc<PolicyView>>,
    /// Namespace → labels.
    namespaces: HashMap<String, Labels>,
    /// A list of the cluster policies succeeded.
    policies_listed: bool,
    /// Their first list was refused (403, 404): see [`PolicyIndex::refused`].
    policies_refused: bool,
    namespaces_listed: bool,
}

impl Default for PolicyIndex {
    fn default() -> Self {
        PolicyIndex::new(false, HashSet::new())
    }
}

impl PolicyIndex {
    /// An empty index; `clusters`: ClusterSidecarPolicies are watched too (it is synced only
    /// once they and the namespaces are listed), skipping the namespaces `left_out` unless
    /// named.
    pub fn new(clusters: bool, left_out: HashSet<String>) -> PolicyIndex {
        PolicyIndex {
            policies: RwLock::new(HashMap::new()),
            clusters: RwLock::new(Clusters::default()),
            left_out,
            synced: watch::Sender::new(false),
            clusters_synced: watch::Sender::new(!clusters),
        }
    }

    /// The Container-mode policies of `namespace`, in name order, then the instances of the
    /// ClusterSidecarPolicies that apply there, in name order.
    pub fn namespace(&self, namespace: &str) -> Vec<Arc<PolicyView>> {
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Arc<PolicyView>> = policies
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        drop(policies);
        let clusters = self.clusters.read().unwrap_or_else(|e| e.into_inner());
        if let Some(labels) = clusters.namespaces.get(namespace) {
            out.extend(
                clusters
                    .policies
                    .values()
                    .filter(|p| p.applies_in(namespace, labels, &self.left_out))
                    .map(|p| Arc::new(p.instance(namespace))),
            );
        }
        out
    }

    /// What an admission in `namespace` needs: its policies ([`PolicyIndex::namespace`]) and
    /// the Pod Security level it enforces (known when namespaces are watched, that is with
    /// cluster policies; `Privileged` otherwise, and for a namespace not seen yet).
    pub fn in_namespace(&self, namespace: &str) -> InNamespace {
        let policies = self.namespace(namespace);
        if policies.is_empty() {
            return InNamespace::default();
        }
        let clusters = self.clusters.read().unwrap_or_else(|e| e.into_inner());
        let level = clusters
            .namespaces
            .get(namespace)
            .map(Level::enforced)
            .unwrap_or_default();
        InNamespace { policies, level }
    }

    /// How many Container-mode policies are known.
    pub fn len(&self) -> usize {
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        let clusters = self.clusters.read().unwrap_or_else(|e| e.into_inner());
        policies.values().map(BTreeMap::len).sum::<usize>() + clusters.policies.len()
    }

    /// Whether no Container-mode policy is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first full list has been applied (before that, an admission would miss
    /// policies that exist).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow() && *self.clusters_synced.borrow()
    }

    /// Resolves once the first full lists have been applied.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
        let mut rx = self.clusters_synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Keeps `view` if it is a Container-mode policy, forgets it otherwise (a policy whose
    /// mode changed to `Pod`).
    pub fn apply(&self, view: PolicyView) {
        let mut policies = self.policies.write().unwrap_or_else(|e| e.into_inner());
        let (ns, name) = (view.namespace.clone(), view.name.clone());
        if view.mode() == Mode::Container {
            policies.entry(ns).or_default().insert(name, Arc::new(view));
        } else {
            remove(&mut policies, &ns, &name);
        }
    }

    /// Forgets policy `namespace/name`.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut policies = self.policies.write().unwrap_or_else(|e| e.into_inner());
        remove(&mut policies, namespace, name);
    }

    /// Replaces everything with `views` (the result of a full list) and marks the index
    /// synced.
    pub fn replace_all(&self, views: Vec<PolicyView>) {
        let mut fresh = Namespaces::new();
        for v in views.into_iter().filter(|v| v.mode() == Mode::Container) {
            fresh
                .entry(v.namespace.clone())
                .or_default()
                .insert(v.name.clone(), Arc::new(v));
        }
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.synced.send_replace(true);
    }

    /// The view kept for `namespace/name`, if any (to carry status-independent state over
    /// an update).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<PolicyView>> {
        if sidecar_planner::cluster_name(name).is_some() {
            let clusters = self.clusters.read().unwrap_or_else(|e| e.into_inner());
            return clusters.policies.get(name).cloned();
        }
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        policies.get(namespace)?.get(name).cloned()
    }

    /// Keeps (or forgets) a cluster policy's view: a Container-mode one is kept.
    fn set_cluster(&self, id: &str, view: Option<PolicyView>) {
        let mut clusters = self.clusters.write().unwrap_or_else(|e| e.into_inner());
        match view.filter(|v| v.mode() == Mode::Container) {
            Some(v) => clusters.policies.insert(id.to_string(), Arc::new(v)),
            None => clusters.policies.remove(id),
        };
    }

    fn cluster_view(&self, p: Lenient<ClusterSidecarPolicy>) -> PolicyView {
        let id = sidecar_planner::cluster_id(p.meta().name.as_deref().unwrap_or_default());
        let prev = self.get("", &id);
        match (p, prev) {
            (Lenient::Ok(p), Some(prev)) => PolicyView::cluster_update(Arc::new(p), &prev),
            (Lenient::Ok(p), None) => PolicyView::cluster(Arc::new(p)),
            (Lenient::Err(u), prev) => {
                PolicyView::cluster_undecodable(u.metadata, None, &u.error, prev.as_deref())
            }
        }
    }

    fn clusters_listed(&self) -> bool {
        let clusters = self.clusters.read().unwrap_or_else(|e| e.into_inner());
        clusters.policies_listed
    }

    /// The cluster policies or the namespaces listed once more; synced once both have (or
    /// the namespaces have and the policies were [refused](PolicyIndex::refused)).
    fn listed(&self, policies: bool) {
        let mut clusters = self.clusters.write().unwrap_or_else(|e| e.into_inner());
        if policies {
            clusters.policies_listed = true;
        } else {
            clusters.namespaces_listed = true;
        }
        self.sync_clusters(&clusters);
    }

    /// The first list of the cluster policies was refused (403, 404): that is not "none
    /// exists", yet the webhook must not stay unready for it (the SidecarPolicies are still
    /// to be injected, and an install without the cluster CRD is a valid one). So the index
    /// is synced without them: until a list succeeds, none applies. Returns whether this is
    /// the first refusal.
    fn refused(&self) -> bool {
        let mut clusters = self.clusters.write().unwrap_or_else(|e| e.into_inner());
        let first = !clusters.policies_refused;
        clusters.policies_refused = true;
        self.sync_clusters(&clusters);
        first
    }

    fn sync_clusters(&self, clusters: &Clusters) {
        let policies = clusters.policies_listed || clusters.policies_refused;
        if policies && clusters.namespaces_listed {
            self.clusters_synced.send_replace(true);
        }
    }

    /// The view of a listed or watched policy. One that does not decode is kept as a view
    /// that selects nothing (the leader reports it on the policy), never failing the watch.
    fn view(&self, p: Lenient<SidecarPolicy>) -> PolicyView {
        match p {
            Lenient::Ok(p) => {
                let prev = self.get(&p.namespace().unwrap_or_default(), &p.name_any());
                match prev {
                    Some(prev) => PolicyView::update(Arc::new(p), &prev),
                    None => PolicyView::new(Arc::new(p)),
                }
            }
            Lenient::Err(u) => PolicyView::undecodable(u.metadata, None, &u.error),
        }
    }
}

fn remove(policies: &mut Namespaces, namespace: &str, name: &str) {
    if let Some(m) = policies.get_mut(namespace) {
        m.remove(name);
        if m.is_empty() {
            policies.remove(namespace);
        }
    }
}

/// Keeps `index` in sync with the policies `api` sees; runs until aborted. A failing watch
/// is retried with the controllers' backoff; the index keeps its last state meanwhile.
pub async fn watch_policies(api: Api<Lenient<SidecarPolicy>>, index: Arc<PolicyIndex>) {
    let stream = watcher(api).backoff(watch_backoff());
    let mut stream = std::pin::pin!(stream);
    let mut buffer = Vec::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(p)) => buffer.push(index.view(p)),
            Ok(Event::InitDone) => index.replace_all(std::mem::take(&mut buffer)),
            Ok(Event::Apply(p)) => index.apply(index.view(p)),
            Ok(Event::Delete(p)) => {
                let meta = p.meta();
                let ns = meta.namespace.clone().unwrap_or_default();
                index.delete(&ns, meta.name.as_deref().unwrap_or_default());
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook policy watch error; retrying with backoff")
            }
        }
    }
}

fn watcher(
    api: Api<Lenient<SidecarPolicy>>,
) -> impl futures::Stream<Item = Result<Event<Lenient<SidecarPolicy>>, watcher::Error>> {
    kube::runtime::watcher(api, watcher::Config::default())
}

/// Keeps the labels of one namespace (`api` lists it by a `metadata.name` field selector) in
/// `index`, for a webhook that serves that namespace only: its Pod Security level. Without
/// the right to read it (a Role-only install), the level stays unknown (`Privileged`: no
/// check) and a warning says so. Runs until aborted.
pub async fn watch_namespace_labels(
    api: Api<PartialObjectMeta<Namespace>>,
    namespace: String,
    index: Arc<PolicyIndex>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={namespace}"));
    let stream = kube::runtime::watcher(api, config).backoff(watch_backoff());
    let mut stream = std::pin::pin!(stream);
    let labels = sidecar_controller::namespace_labels;
    let mut warned = false;
    while let Some(ev) = stream.next().await {
        let set = |l: Option<Labels>| {
            let mut clusters = index.clusters.write().unwrap_or_else(|e| e.into_inner());
            match l {
                Some(l) => clusters.namespaces.insert(namespace.clone(), l),
                None => clusters.namespaces.remove(&namespace),
            };
        };
        match ev {
            Ok(Event::InitApply(n) | Event::Apply(n)) => set(Some(labels(&n))),
            Ok(Event::Delete(_)) => set(None),
            Ok(Event::Init | Event::InitDone) => {}
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(error = %e, %namespace, "webhook: the namespace's labels cannot be read, so its Pod Security level is not checked before injecting (grant get/list/watch on this namespace)");
            }
            Err(e) => {
                tracing::debug!(error = %e, "webhook namespace watch error; retrying with backoff")
            }
        }
    }
}

/// Keeps `index`'s ClusterSidecarPolicies and namespace labels in sync with what the two
/// APIs see; runs until aborted.
pub async fn watch_clusters(
    policies: Api<Lenient<ClusterSidecarPolicy>>,
    namespaces: Api<PartialObjectMeta<Namespace>>,
    index: Arc<PolicyIndex>,
) {
    let cfg = watcher::Config::default;
    let policies = kube::runtime::watcher(policies, cfg()).backoff(watch_backoff());
    let namespaces = kube::runtime::watcher(namespaces, cfg()).backoff(watch_backoff());
    let mut policies = std::pin::pin!(policies);
    let mut namespaces = std::pin::pin!(namespaces);
    let mut policy_buffer: Vec<PolicyView> = Vec::new();
    let mut ns_buffer: HashMap<String, Labels> = HashMap::new();
    let labels = sidecar_controller::namespace_labels;
    loop {
        tokio::select! {
            ev = policies.next() => match ev {
                None => break,
                Some(Ok(Event::Init)) => policy_buffer.clear(),
                Some(Ok(Event::InitApply(p))) => policy_buffer.push(index.cluster_view(p)),
                Some(Ok(Event::InitDone)) => {
                    let fresh: BTreeMap<String, Arc<PolicyView>> = std::mem::take(&mut policy_buffer)
                        .into_iter()
                        .filter(|v| v.mode() == Mode::Container)
                        .map(|v| (v.name.clone(), Arc::new(v)))
                        .collect();
                    index.clusters.write().unwrap_or_else(|e| e.into_inner()).policies = fresh;
                    index.listed(true);
                }
                Some(Ok(Event::Apply(p))) => {
                    let v = index.cluster_view(p);
                    let id = v.name.clone();
                    index.set_cluster(&id, Some(v));
                }
                Some(Ok(Event::Delete(p))) => {
                    let id = sidecar_planner::cluster_id(p.meta().name.as_deref().unwrap_or_default());
                    index.set_cluster(&id, None);
                }
                Some(Err(e)) if sidecar_controller::cluster_policies_unlistable(&e) && !index.clusters_listed() => {
                    // Not "none exists": see `PolicyIndex::refused`; the watch keeps trying.
                    if index.refused() {
                        tracing::warn!(error = %e, "webhook: ClusterSidecarPolicies cannot be listed (CRD not installed, or no RBAC for them yet); none is injected until they can (retrying)");
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "webhook ClusterSidecarPolicy watch error; retrying with backoff"),
            },
            ev = namespaces.next() => match ev {
                None => break,
                Some(Ok(Event::Init)) => ns_buffer.clear(),
                Some(Ok(Event::InitApply(n))) => {
                    ns_buffer.insert(n.name_any(), labels(&n));
                }
                Some(Ok(Event::InitDone)) => {
                    index.clusters.write().unwrap_or_else(|e| e.into_inner()).namespaces =
                        std::mem::take(&mut ns_buffer);
                    index.listed(false);
                }
                Some(Ok(Event::Apply(n))) => {
                    let l = labels(&n);
                    index.clusters.write().unwrap_or_else(|e| e.into_inner()).namespaces.insert(n.name_any(), l);
                }
                Some(Ok(Event::Delete(n))) => {
                    index.clusters.write().unwrap_or_else(|e| e.into_inner()).namespaces.remove(&n.name_any());
                }
                Some(Err(e)) => tracing::warn!(error = %e, "webhook namespace watch error; retrying with backoff"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused first list of the cluster policies syncs the index without them (the
    /// SidecarPolicies are served), is told once, and is never taken for a list: the next
    /// successful one is.
    #[test]
    fn a_refused_cluster_policy_list_syncs_but_is_no_list() {
        let index = PolicyIndex::new(true, HashSet::new());
        index.replace_all(Vec::new());
        assert!(!index.is_synced(), "cluster policies not listed");
        assert!(index.refused(), "the first refusal is told");
        assert!(!index.refused(), "only the first");
        assert!(!index.is_synced(), "the namespaces not listed yet");
        index.listed(false);
        assert!(index.is_synced(), "ready without the cluster policies");
        assert!(!index.clusters_listed(), "a refusal is no list");
        index.listed(true);
        assert!(index.is_synced() && index.clusters_listed());
    }
}
