//! In-memory caches fed by watches, with the indexes reconciles need, so that a
//! reconcile never sends a GET or LIST.
//!
//! Pods are stored as [`PodView`]s (a few hundred bytes each), not as Pods.
//! Indexes: Pods by namespace, sidecars by main-Pod uid, sidecars by (namespace, policy).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sidecar_planner::{PodView, PolicyView};

/// `(namespace, name)`.
pub type Key = (String, String);

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
    by_main_uid: HashMap<Box<str>, Vec<Key>>,
    /// (namespace, policy) → names of the sidecars labelled with that policy.
    by_policy: HashMap<Key, BTreeSet<String>>,
}

impl PodCache {
    fn unindex(&mut self, ns: &str, v: &PodView) {
        let Some((uid, policy)) = v.sidecar_key() else {
            return;
        };
        if let Some(keys) = self.by_main_uid.get_mut(uid) {
            keys.retain(|(kns, kname)| !(kns == ns && *kname == v.name));
            if keys.is_empty() {
                self.by_main_uid.remove(uid);
            }
        }
        let pkey = (ns.to_string(), policy.to_string());
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
        let key = (ns.to_string(), v.name.clone());
        let keys = self.by_main_uid.entry(uid.into()).or_default();
        keys.push(key);
        keys.shrink_to_fit();
        self.by_policy
            .entry((ns.to_string(), policy.to_string()))
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
    pub fn delete(&mut self, key: &Key) -> Option<Arc<PodView>> {
        let (ns, name) = key;
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

    fn get_all<'a>(&'a self, keys: impl IntoIterator<Item = &'a Key>) -> Vec<Arc<PodView>> {
        keys.into_iter()
            .filter_map(|(ns, name)| self.get(ns, name).cloned())
            .collect()
    }

    /// Sidecars labelled with main-Pod uid `uid`.
    pub fn sidecars_of(&self, uid: &str) -> Vec<Arc<PodView>> {
        self.get_all(self.by_main_uid.get(uid).into_iter().flatten())
    }

    /// Sidecars labelled with policy `policy` in `ns`.
    pub fn sidecars_of_policy(&self, ns: &str, policy: &str) -> Vec<Arc<PodView>> {
        self.by_policy
            .get(&(ns.to_string(), policy.to_string()))
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
    pub fn len(&self) -> usize {
        self.len
    }

    /// No Pod cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

    /// Forgets every policy of `ns` (the namespace left this instance's scope); returns
    /// their keys.
    pub fn drop_namespace(&mut self, ns: &str) -> Vec<Key> {
        let keys: Vec<Key> = self
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
    pub fn replace_namespace(&mut self, ns: &str, views: Vec<PolicyView>) -> Vec<Key> {
        let mut gone: BTreeSet<Key> = self.drop_namespace(ns).into_iter().collect();
        for v in views.into_iter().filter(|v| v.namespace == ns) {
            let key = (v.namespace.clone(), v.name.clone());
            gone.remove(&key);
            self.policies.insert(key, Arc::new(v));
        }
        gone.into_iter().collect()
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

#[cfg(test)]
mod tests {
    use sidecar_api::constants::{
        LABEL_MAIN_UID, LABEL_MANAGED_BY, LABEL_POLICY, MANAGED_BY_VALUE,
    };
    use sidecar_planner::{Labels, OwnerView};

    use super::*;

    fn main_pod(ns: &str, name: &str) -> PodView {
        PodView {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: Labels::from_iter([("app", "web")]),
            ..PodView::default()
        }
    }

    fn sidecar(ns: &str, name: &str, main: &str, policy: &str) -> PodView {
        PodView {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: Labels::from_iter([
                (LABEL_MANAGED_BY, MANAGED_BY_VALUE),
                (LABEL_MAIN_UID, &format!("uid-{main}")),
                (LABEL_POLICY, policy),
            ]),
            owner: Some(OwnerView {
                kind: "Pod".into(),
                name: main.into(),
                uid: format!("uid-{main}"),
            }),
            ..PodView::default()
        }
    }

    fn names(views: &[Arc<PodView>]) -> Vec<&str> {
        let mut n: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn indexes_follow_applies_relabels_and_deletes() {
        let mut c = PodCache::default();
        c.apply(main_pod("a", "web-0"));
        c.apply(main_pod("b", "web-0"));
        c.apply(sidecar("a", "web-0-log", "web-0", "log"));
        c.apply(sidecar("a", "web-0-metrics", "web-0", "metrics"));
        assert_eq!(c.len(), 4);
        assert_eq!(
            names(&c.sidecars_of("uid-web-0")),
            ["web-0-log", "web-0-metrics"]
        );
        assert_eq!(names(&c.sidecars_of_policy("a", "log")), ["web-0-log"]);
        assert!(c.sidecars_of_policy("b", "log").is_empty());
        let in_a: Vec<&str> = c.in_namespace("a").map(|v| v.name.as_str()).collect();
        assert_eq!(
            in_a,
            ["web-0", "web-0-log", "web-0-metrics"],
            "sorted by name"
        );

        // Replacing a sidecar by one labelled for another policy moves it between indexes.
        let old = c.apply(sidecar("a", "web-0-log", "web-0", "other"));
        assert!(old.is_some());
        assert_eq!(c.len(), 4);
        assert!(c.sidecars_of_policy("a", "log").is_empty());
        assert_eq!(names(&c.sidecars_of_policy("a", "other")), ["web-0-log"]);
        assert_eq!(c.sidecars_of("uid-web-0").len(), 2);

        assert!(c.delete(&("a".into(), "web-0-log".into())).is_some());
        assert!(c.delete(&("a".into(), "web-0-log".into())).is_none());
        assert_eq!(names(&c.sidecars_of("uid-web-0")), ["web-0-metrics"]);
        assert!(c.sidecars_of_policy("a", "other").is_empty());
        assert_eq!(c.len(), 3);

        let gone = c.replace_all(vec![main_pod("a", "web-0"), main_pod("c", "db-0")]);
        let mut gone: Vec<_> = gone
            .iter()
            .map(|v| (v.namespace.as_str(), v.name.as_str()))
            .collect();
        gone.sort_unstable();
        assert_eq!(gone, [("a", "web-0-metrics"), ("b", "web-0")]);
        assert_eq!(c.len(), 2);
        assert!(c.sidecars_of("uid-web-0").is_empty());
        assert!(c.get("c", "db-0").is_some() && c.get("b", "web-0").is_none());
        assert_eq!(c.all().count(), 2);
    }

    #[test]
    fn a_namespace_is_dropped_and_refilled_alone() {
        let mut c = PodCache::default();
        c.apply(main_pod("a", "web-0"));
        c.apply(sidecar("a", "web-0-log", "web-0", "log"));
        c.apply(main_pod("b", "web-0"));
        c.apply(sidecar("b", "web-0-log", "web-0", "log"));
        assert_eq!(c.drop_namespace("a"), 2);
        assert_eq!(c.drop_namespace("a"), 0);
        assert_eq!(c.len(), 2);
        assert!(c.sidecars_of_policy("a", "log").is_empty());
        assert_eq!(c.in_namespace("a").count(), 0);
        // The uid index is shared: b's sidecar (same main name, same fake uid) stays.
        assert_eq!(names(&c.sidecars_of("uid-web-0")), ["web-0-log"]);
        assert_eq!(names(&c.sidecars_of_policy("b", "log")), ["web-0-log"]);

        // Refilling b from a namespaced list: kept, added, gone; a view of another
        // namespace in the list is ignored.
        let gone = c.replace_namespace(
            "b",
            vec![
                main_pod("b", "web-0"),
                main_pod("b", "web-1"),
                main_pod("c", "db-0"),
            ],
        );
        assert_eq!(names(&gone), ["web-0-log"]);
        assert_eq!(c.len(), 2);
        assert!(c.sidecars_of_policy("b", "log").is_empty());
        assert!(c.get("c", "db-0").is_none());
        let in_b: Vec<&str> = c.in_namespace("b").map(|v| v.name.as_str()).collect();
        assert_eq!(in_b, ["web-0", "web-1"]);
    }

    #[test]
    fn policies_of_a_namespace_are_dropped_and_refilled_alone() {
        let view = |ns: &str, name: &str| {
            let mut p = sidecar_api::SidecarPolicy::new(
                name,
                serde_json::from_value(serde_json::json!({
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                }))
                .expect("spec"),
            );
            p.metadata.namespace = Some(ns.into());
            PolicyView::new(Arc::new(p))
        };
        let key = |ns: &str, name: &str| (ns.to_string(), name.to_string());
        let mut c = PolicyCache::default();
        c.apply(view("a", "log"));
        c.apply(view("a", "metrics"));
        c.apply(view("b", "log"));
        let mut dropped = c.drop_namespace("a");
        dropped.sort();
        assert_eq!(dropped, [key("a", "log"), key("a", "metrics")]);
        assert!(c.in_namespace("a").is_empty());
        assert_eq!(c.in_namespace("b").len(), 1);
        let gone = c.replace_namespace("b", vec![view("b", "trace"), view("c", "x")]);
        assert_eq!(gone, [key("b", "log")]);
        assert!(c.get(&key("b", "trace")).is_some() && c.get(&key("c", "x")).is_none());
    }
}
