//! In-memory caches fed by watches, with the indexes reconciles need, so that a
//! reconcile never sends a GET or LIST.
//!
//! Pods are stored as [`PodView`]s (a few hundred bytes each), not as Pods.
//! Indexes: Pods by namespace, sidecars by main-Pod uid, sidecars by (namespace, policy).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sidecar_planner::{PodView, PolicyView};

/// `(namespace, name)`.
pub type Key = (String, String);

/// Pods, by key, with indexes.
#[derive(Debug, Default)]
pub struct PodCache {
    pods: HashMap<Key, Arc<PodView>>,
    by_ns: HashMap<String, BTreeSet<String>>,
    by_main_uid: HashMap<String, BTreeSet<Key>>,
    by_policy: HashMap<Key, BTreeSet<Key>>,
}

fn index_remove<K: std::hash::Hash + Eq, V: Ord>(idx: &mut HashMap<K, BTreeSet<V>>, k: &K, v: &V) {
    if let Some(set) = idx.get_mut(k) {
        set.remove(v);
        if set.is_empty() {
            idx.remove(k);
        }
    }
}

impl PodCache {
    fn unindex(&mut self, key: &Key, v: &PodView) {
        index_remove(&mut self.by_ns, &key.0, &key.1);
        if let Some((uid, policy)) = v.sidecar_key() {
            index_remove(&mut self.by_main_uid, &uid.to_string(), key);
            index_remove(
                &mut self.by_policy,
                &(key.0.clone(), policy.to_string()),
                key,
            );
        }
    }

    fn index(&mut self, key: &Key, v: &PodView) {
        self.by_ns
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone());
        if let Some((uid, policy)) = v.sidecar_key() {
            self.by_main_uid
                .entry(uid.to_string())
                .or_default()
                .insert(key.clone());
            self.by_policy
                .entry((key.0.clone(), policy.to_string()))
                .or_default()
                .insert(key.clone());
        }
    }

    /// Inserts or replaces a Pod; returns the previous view.
    pub fn apply(&mut self, v: PodView) -> Option<Arc<PodView>> {
        let key = (v.namespace.clone(), v.name.clone());
        let old = self.pods.remove(&key);
        if let Some(o) = &old {
            self.unindex(&key, o);
        }
        self.index(&key, &v);
        self.pods.insert(key, Arc::new(v));
        old
    }

    /// Removes a Pod; returns it.
    pub fn delete(&mut self, key: &Key) -> Option<Arc<PodView>> {
        let old = self.pods.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }

    /// Replaces everything (after a full list); returns the views that disappeared.
    pub fn replace_all(&mut self, views: Vec<PodView>) -> Vec<Arc<PodView>> {
        let mut fresh = PodCache::default();
        for v in views {
            fresh.apply(v);
        }
        let gone = self
            .pods
            .iter()
            .filter(|(k, _)| !fresh.pods.contains_key(*k))
            .map(|(_, v)| v.clone())
            .collect();
        *self = fresh;
        gone
    }

    /// A Pod by key.
    pub fn get(&self, ns: &str, name: &str) -> Option<&Arc<PodView>> {
        self.pods.get(&(ns.to_string(), name.to_string()))
    }

    /// Sidecars labelled with main-Pod uid `uid`.
    pub fn sidecars_of(&self, uid: &str) -> Vec<Arc<PodView>> {
        self.by_main_uid
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k).cloned())
            .collect()
    }

    /// Sidecars labelled with policy `policy` in `ns`.
    pub fn sidecars_of_policy(&self, ns: &str, policy: &str) -> Vec<Arc<PodView>> {
        self.by_policy
            .get(&(ns.to_string(), policy.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k).cloned())
            .collect()
    }

    /// Every Pod of `ns`.
    pub fn in_namespace(&self, ns: &str) -> impl Iterator<Item = &Arc<PodView>> {
        self.by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(move |n| self.pods.get(&(ns.to_string(), n.clone())))
    }

    /// Every Pod.
    pub fn all(&self) -> impl Iterator<Item = &Arc<PodView>> {
        self.pods.values()
    }

    /// Number of cached Pods.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// No Pod cached.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

/// Policies, by key, with a namespace index.
#[derive(Debug, Default)]
pub struct PolicyCache {
    policies: HashMap<Key, Arc<PolicyView>>,
}

impl PolicyCache {
    /// Inserts or replaces; returns the previous view.
    pub fn apply(&mut self, v: PolicyView) -> Option<Arc<PolicyView>> {
        self.policies
            .insert((v.namespace.clone(), v.name.clone()), Arc::new(v))
    }

    /// Removes; returns it.
    pub fn delete(&mut self, key: &Key) -> Option<Arc<PolicyView>> {
        self.policies.remove(key)
    }

    /// Replaces everything; returns `(previous view if any, new view)` for each new or
    /// kept policy and the views that disappeared.
    pub fn replace_all(&mut self, views: Vec<PolicyView>) -> Vec<Arc<PolicyView>> {
        let fresh: HashMap<Key, Arc<PolicyView>> = views
            .into_iter()
            .map(|v| ((v.namespace.clone(), v.name.clone()), Arc::new(v)))
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

    /// A policy by key.
    pub fn get(&self, key: &Key) -> Option<&Arc<PolicyView>> {
        self.policies.get(key)
    }

    /// The policies of `ns` (a handful per namespace; a scan is cheap).
    pub fn in_namespace(&self, ns: &str) -> Vec<Arc<PolicyView>> {
        self.policies
            .iter()
            .filter(|(k, _)| k.0 == ns)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every policy.
    pub fn all(&self) -> impl Iterator<Item = &Arc<PolicyView>> {
        self.policies.values()
    }
}
