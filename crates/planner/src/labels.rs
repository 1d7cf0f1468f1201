//! Compact Pod labels and label-selector matching on them.
//!
//! The operator caches every Pod it watches, so the size of a cached Pod matters at
//! 10,000 Pods. A `BTreeMap<String, String>` of five labels costs a 500-byte tree node
//! plus ten allocations; [`Labels`] keeps the sorted pairs in **one** string,
//! `key NUL value NUL key NUL value NUL …` (label keys and values cannot contain NUL:
//! the API server accepts only `[A-Za-z0-9._/-]`), and looks them up by a linear scan,
//! which for the handful of labels a Pod carries is as fast as a tree.

use std::collections::BTreeMap;
use std::fmt;

use kube_core::{Expression, Selector};

const SEP: char = '\0';

/// A Pod's labels, sorted by key, in one allocation.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Labels(Box<str>);

impl Labels {
    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Label `key` is set (to any value).
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// `(key, value)` pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = self.0.split_terminator(SEP);
        std::iter::from_fn(move || Some((parts.next()?, parts.next().unwrap_or_default())))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// No label.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets label `key` (rebuilds the string; for tests).
    #[cfg(test)]
    pub fn insert(&mut self, key: &str, value: &str) {
        let mut map = self.to_map();
        map.insert(key.to_string(), value.to_string());
        *self = Labels::from(&map);
    }

    /// Removes label `key` (for tests).
    #[cfg(test)]
    pub fn remove(&mut self, key: &str) {
        let mut map = self.to_map();
        map.remove(key);
        *self = Labels::from(&map);
    }

    /// The labels as a map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl From<&BTreeMap<String, String>> for Labels {
    fn from(map: &BTreeMap<String, String>) -> Labels {
        let len = map.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        let mut s = String::with_capacity(len);
        for (k, v) in map {
            s.push_str(k);
            s.push(SEP);
            s.push_str(v);
            s.push(SEP);
        }
        Labels(s.into_boxed_str())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Labels {
        let map: BTreeMap<String, String> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Labels::from(&map)
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A parsed label selector that matches [`Labels`]; the same semantics as
/// Kubernetes' (and kube's `Selector`): every requirement must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMatcher(Box<[Expression]>);

impl From<Selector> for LabelMatcher {
    fn from(s: Selector) -> LabelMatcher {
        LabelMatcher(s.into_iter().collect())
    }
}

impl LabelMatcher {
    /// Every requirement holds for `labels`.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|e| match e {
            Expression::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            Expression::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
            Expression::Exists(k) => labels.contains_key(k),
            Expression::DoesNotExist(k) => !labels.contains_key(k),
            Expression::Equal(k, value) => labels.get(k) == Some(value.as_str()),
            Expression::NotEqual(k, value) => labels.get(k) != Some(value.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use kube_core::SelectorExt as _;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_round_trip_and_look_up() {
        let m = map(&[("app", "web"), ("tier", ""), ("a.b/c", "x-1")]);
        let l = Labels::from(&m);
        assert_eq!(l.to_map(), m);
        assert_eq!(l.len(), 3);
        assert_eq!(l.get("app"), Some("web"));
        assert_eq!(l.get("tier"), Some(""), "an empty value is a value");
        assert_eq!(l.get("ap"), None, "no prefix match");
        assert_eq!(l.get("web"), None, "values are not keys");
        assert!(Labels::default().is_empty());
        assert_eq!(Labels::default().get(""), None);
        let mut l2 = l.clone();
        l2.insert("app", "db");
        l2.remove("tier");
        assert_eq!(l2.to_map(), map(&[("app", "db"), ("a.b/c", "x-1")]));
        assert_eq!(format!("{l2:?}"), r#"{"a.b/c": "x-1", "app": "db"}"#);
    }

    /// The matcher agrees with kube's `Selector` on every operator.
    #[test]
    fn matcher_agrees_with_kube_selector() {
        let selectors = [
            json_selector(r#"{"matchLabels": {"app": "web"}}"#),
            json_selector(r#"{"matchLabels": {"app": "web", "tier": ""}}"#),
            json_selector(
                r#"{"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}"#,
            ),
            json_selector(
                r#"{"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}"#,
            ),
            json_selector(r#"{"matchExpressions": [{"key": "tier", "operator": "Exists"}]}"#),
            json_selector(r#"{"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}"#),
            json_selector(
                r#"{"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}, {"key": "tier", "operator": "In", "values": ["", "front"]}]}"#,
            ),
        ];
        let label_sets = [
            map(&[]),
            map(&[("app", "web")]),
            map(&[("app", "db")]),
            map(&[("app", "web"), ("tier", "")]),
            map(&[("app", "web"), ("tier", "front"), ("canary", "1")]),
            map(&[("app", "web"), ("tier", "front")]),
            map(&[("tier", "back")]),
        ];
        let mut checked = 0;
        for sel in &selectors {
            let matcher = LabelMatcher::from(sel.clone());
            for set in &label_sets {
                assert_eq!(
                    matcher.matches(&Labels::from(set)),
                    sel.matches(set),
                    "{sel} on {set:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, selectors.len() * label_sets.len());
    }

    fn json_selector(json: &str) -> Selector {
        let ls: LabelSelector = serde_json::from_str(json).expect("selector JSON");
        Selector::try_from(ls).expect("valid selector")
    }
}
