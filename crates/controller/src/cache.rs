//! In-memory caches fed by watches, with the indexes reconciles need, so that a
//! reconcile never sends a GET or LIST.
//!
//! Pods are stored as [`PodView`]s (a few hundred bytes each), not as Pods.
//! Indexes: Pods by namespace, sidecars by main-Pod uid, sidecars by (namespace, policy).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sidecar_planner::{PodView, PolicyView};

pub use crate::keys::{PodKey, PolicyKey};

/// Pods, by namespace and name, with indexes.
///
/// Sized for 10,000s of Pods: a Pod's name is stored once in the map (its namespace
/// once per namespace), and the sidecar indexes hold small vectors, not tree nodes.
#[derive(Debug, Default)]
pub struct PodCache {
    /// Namespace → name → Pod (sorted by name: iteration is deterministic).
    by_ns: HashMap<String, BTreeMap<String, Arc<PodView>>>,
    len: usize,
    /// Main-Pod uid (a sidecar's label) → the sidecars' keys (usually one per policy).
    by_main_uid: HashMap<Box<str>, Vec<PodKey>>,
    /// (namespace, policy) → names of the sidecars labelled with that policy.
    by_policy: HashMap<PolicyKey, BTreeSet<String>>,
}

impl PodCache {
    fn unindex(&mut self, ns: &str, v: &PodView) {
        let Some((uid, policy)) = v.sidecar_key() else {
            return;
        };
        if let Some(keys) = self.by_main_uid.get_mut(uid) {
            keys.retain(|k| !(k.0 == ns && k.1 == v.name));
            if keys.is_empty() {
                self.by_main_uid.remove(uid);
            }
        }
        let pkey = PolicyKey::new(ns, policy.into_owned());
        if let Some(names) = self.by_policy.get_mut(&pkey) {
            names.remove(&v.name);
            if names.is_empty() {
                self.by_policy.remove(&pkey);
            }
        }
    }

    fn index(&mut self, ns: &str, v: &PodView) {
        let Some((uid, policy)) = v.sidecar_key() else {
            return;
        };
        let key = PodKey::new(ns, v.name.clone());
        let keys = self.by_main_uid.entry(uid.into()).or_default();
        keys.push(key);
        keys.shrink_to_fit();
        self.by_policy
            .entry(PolicyKey::new(ns, policy.into_owned()))
            .or_default()
            .insert(v.name.clone());
    }

    /// Inserts or replaces a Pod; returns the previous view.
    pub fn apply(&mut self, v: PodView) -> Option<Arc<PodView>> {
        let ns = v.namespace.clone();
        let old = self.by_ns.get_mut(&ns).and_then(|m| m.remove(&v.name));
        match &old {
            Some(o) => self.unindex(&ns, o),
            None => self.len += 1,
        }
        self.index(&ns, &v);
        self.by_ns
            .entry(ns)
            .or_default()
            .insert(v.name.clone(), Arc::new(v));
        old
    }

    /// Removes a Pod; returns it.
    pub fn delete(&mut self, key: &PodKey) -> Option<Arc<PodView>> {
        let PodKey(ns, name) = key;
        let names = self.by_ns.get_mut(ns)?;
        let old = names.remove(name)?;
        if names.is_empty() {
            self.by_ns.remove(ns);
        }
        self.len -= 1;
        self.unindex(ns, &old);
        Some(old)
    }

    /// Replaces everything (after a full list); returns the views that disappeared.
    pub fn replace_all(&mut self, views: Vec<PodView>) -> Vec<Arc<PodView>> {
        let mut fresh = PodCache::default();
        for v in views {
            fresh.apply(v);
        }
        let gone = self
            .all()
            .filter(|v| fresh.get(&v.namespace, &v.name).is_none())
            .cloned()
            .collect();
        *self = fresh;
        gone
    }

    /// Forgets every Pod of `ns` (the namespace left this instance's scope); returns
    /// how many.
    pub fn drop_namespace(&mut self, ns: &str) -> usize {
        let Some(names) = self.by_ns.remove(ns) else {
            return 0;
        };
        for v in names.values() {
            self.unindex(ns, v);
        }
        self.len -= names.len();
        names.len()
    }

    /// Replaces the Pods of `ns` with `views` (a LIST of that namespace alone; views
    /// of other namespaces are ignored); returns the views of `ns` that disappeared.
    pub fn replace_namespace(&mut self, ns: &str, views: Vec<PodView>) -> Vec<Arc<PodView>> {
        let mut old = self.by_ns.remove(ns).unwrap_or_default();
        for v in old.values() {
            self.unindex(ns, v);
        }
        self.len -= old.len();
        for v in views.into_iter().filter(|v| v.namespace == ns) {
            old.remove(&v.name);
            self.apply(v);
        }
        old.into_values().collect()
    }

    /// A Pod by namespace and name.
    pub fn get(&self, ns: &str, name: &str) -> Option<&Arc<PodView>> {
        self.by_ns.get(ns)?.get(name)
    }

    fn get_all<'a>(&'a self, keys: impl IntoIterator<Item = &'a PodKey>) -> Vec<Arc<PodView>> {
        keys.into_iter()
            .filter_map(|k| self.get(&k.0, &k.1).cloned())
            .collect()
    }

    /// Sidecars of namespace `ns` labelled with main-Pod uid `uid`. Only `ns`: a main Pod's
    /// sidecars live in its namespace, and a Pod of another namespace with that label (anyone
    /// who may create Pods there can write it) must not stand for, nor be taken as, one of
    /// them.
    pub fn sidecars_of(&self, ns: &str, uid: &str) -> Vec<Arc<PodView>> {
        let keys = self.by_main_uid.get(uid).into_iter().flatten();
        self.get_all(keys.filter(|k| k.0 == ns))
    }

    /// Sidecars labelled with policy `policy` in `ns`.
    pub fn sidecars_of_policy(&self, ns: &str, policy: &str) -> Vec<Arc<PodView>> {
        self.by_policy
            .get(&PolicyKey::new(ns, policy))
            .into_iter()
            .flatten()
            .filter_map(|name| self.get(ns, name).cloned())
            .collect()
    }

    /// Every Pod of `ns`, by name.
    pub fn in_namespace(&self, ns: &str) -> impl Iterator<Item = &Arc<PodView>> {
        self.by_ns.get(ns).into_iter().flat_map(BTreeMap::values)
    }

    /// Every Pod.
    pub fn all(&self) -> impl Iterator<Item = &Arc<PodView>> {
        self.by_ns.values().flat_map(BTreeMap::values)
    }

    /// Number of cached Pods.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }
}

/// Policies, by key, with a namespace index; and the ClusterSidecarPolicies, each as its view
/// (key `("", "csp/{name}")`) and one instance per namespace it applies in (key
/// `(namespace, "csp/{name}")`, see [`sidecar_planner::cluster`]). The namespaced policies'
/// methods (`apply`, `delete`, `replace_*`, `drop_namespace`) never touch the cluster ones.
#[derive(Debug, Default)]
pub struct PolicyCache {
    /// The ClusterSidecarPolicies are watched but not listed yet (see
    /// [`PolicyCache::clusters_known`]).
    clusters_pending: bool,
    policies: HashMap<PolicyKey, Arc<PolicyView>>,
    /// ClusterSidecarPolicies by id.
    clusters: BTreeMap<String, Arc<PolicyView>>,
    /// Their instances, by namespace and id.
    instances: HashMap<PolicyKey, Arc<PolicyView>>,
}

impl PolicyCache {
    /// An empty cache; `clusters`: ClusterSidecarPolicies are watched, and unknown until
    /// [`PolicyCache::set_clusters_known`].
    pub fn new(clusters: bool) -> PolicyCache {
        PolicyCache {
            clusters_pending: clusters,
            ..PolicyCache::default()
        }
    }

    /// Whether the ClusterSidecarPolicies (and their instances) are what the API server has:
    /// true once a list of them succeeded and they were expanded, or when they are not
    /// watched at all (none applies). Until then, their sidecars are not judged (see
    /// [`sidecar_planner::judgeable`]).
    pub fn clusters_known(&self) -> bool {
        !self.clusters_pending
    }

    /// The cluster policies were listed and expanded.
    pub fn set_clusters_known(&mut self) {
        self.clusters_pending = false;
    }

    /// Inserts or replaces; returns the previous view.
    pub fn apply(&mut self, v: PolicyView) -> Option<Arc<PolicyView>> {
        self.policies.insert(
            PolicyKey::new(v.namespace.clone(), v.name.clone()),
            Arc::new(v),
        )
    }

    /// Removes; returns it.
    pub fn delete(&mut self, key: &PolicyKey) -> Option<Arc<PolicyView>> {
        self.policies.remove(key)
    }

    /// Replaces everything; returns `(previous view if any, new view)` for each new or
    /// kept policy and the views that disappeared.
    pub fn replace_all(&mut self, views: Vec<PolicyView>) -> Vec<Arc<PolicyView>> {
        let fresh: HashMap<PolicyKey, Arc<PolicyView>> = views
            .into_iter()
            .map(|v| {
                (
                    PolicyKey::new(v.namespace.clone(), v.name.clone()),
                    Arc::new(v),
                )
            })
            .collect();
        let gone = self
            .policies
            .iter()
            .filter(|(k, _)| !fresh.contains_key(*k))
            .map(|(_, v)| v.clone())
            .collect();
        self.policies = fresh;
        gone
    }

    /// Forgets every policy of `ns` (the namespace left this instance's scope); returns
    /// their keys.
    pub fn drop_namespace(&mut self, ns: &str) -> Vec<PolicyKey> {
        let keys: Vec<PolicyKey> = self
            .policies
            .keys()
            .filter(|k| k.0 == ns)
            .cloned()
            .collect();
        for k in &keys {
            self.policies.remove(k);
        }
        keys
    }

    /// Replaces the policies of `ns` with `views` (a LIST of that namespace alone; views
    /// of other namespaces are ignored); returns the keys of `ns` that disappeared.
    pub fn replace_namespace(&mut self, ns: &str, views: Vec<PolicyView>) -> Vec<PolicyKey> {
        let mut gone: BTreeSet<PolicyKey> = self.drop_namespace(ns).into_iter().collect();
        for v in views.into_iter().filter(|v| v.namespace == ns) {
            let key = PolicyKey::new(v.namespace.clone(), v.name.clone());
            gone.remove(&key);
            self.policies.insert(key, Arc::new(v));
        }
        gone.into_iter().collect()
    }

    /// A policy by key: a SidecarPolicy, a ClusterSidecarPolicy's instance, or (empty
    /// namespace) a ClusterSidecarPolicy.
    pub fn get(&self, key: &PolicyKey) -> Option<&Arc<PolicyView>> {
        if key.0.is_empty() {
            return self.clusters.get(&key.1);
        }
        self.policies.get(key).or_else(|| self.instances.get(key))
    }

    /// The policies of `ns`, cluster policies' instances included (a handful per namespace;
    /// a scan is cheap).
    pub fn in_namespace(&self, ns: &str) -> Vec<Arc<PolicyView>> {
        self.policies
            .iter()
            .chain(&self.instances)
            .filter(|(k, _)| k.0 == ns)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every policy: the SidecarPolicies and the ClusterSidecarPolicies (not their
    /// instances).
    pub fn all(&self) -> impl Iterator<Item = &Arc<PolicyView>> {
        self.policies.values().chain(self.clusters.values())
    }

    /// Every ClusterSidecarPolicy.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<PolicyView>> {
        self.clusters.values()
    }

    /// Keeps (or, `None`, forgets) the ClusterSidecarPolicy `id`; returns what it replaced.
    /// Its instances are kept apart ([`PolicyCache::set_instance`]).
    pub fn set_cluster(&mut self, id: &str, v: Option<PolicyView>) -> Option<Arc<PolicyView>> {
        match v {
            Some(v) => self.clusters.insert(id.to_string(), Arc::new(v)),
            None => self.clusters.remove(id),
        }
    }

    /// The instances of ClusterSidecarPolicy `id`, by namespace.
    pub fn instances_of(&self, id: &str) -> Vec<Arc<PolicyView>> {
        let mut out: Vec<Arc<PolicyView>> = self
            .instances
            .iter()
            .filter(|(k, _)| k.1 == id)
            .map(|(_, v)| v.clone())
            .collect();
        out.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        out
    }

    /// Keeps (or, `None`, forgets) the instance `key`; returns what it replaced.
    pub fn set_instance(
        &mut self,
        key: &PolicyKey,
        v: Option<PolicyView>,
    ) -> Option<Arc<PolicyView>> {
        match v {
            Some(v) => self.instances.insert(key.clone(), Arc::new(v)),
            None => self.instances.remove(key),
        }
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
