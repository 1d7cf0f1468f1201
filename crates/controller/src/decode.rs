//! Objects decoded one by one, so that no stored object can stall a watch.
//!
//! kube's watcher decodes a LIST page or a watch event as a whole: one object that does
//! not fit the Rust types (an `IntOrString` beyond 32 bits that an older CRD let through, a
//! field a future CRD version changed) fails the whole LIST, and the operator never syncs
//! again — in every namespace, because of one tenant's object. [`Lenient`] is what the
//! watches ask for instead: each object decodes on its own, and one that does not is kept
//! as [`Undecodable`] (its metadata, the path of the failing field and why), to be
//! reported on itself.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// An object of kind `K` as listed or watched: decoded, or why not.
#[derive(Debug, Clone)]
pub enum Lenient<K> {
    /// It decoded.
    Ok(K),
    /// It did not.
    Err(Box<Undecodable>),
}

/// What is kept of an object that does not decode.
#[derive(Debug, Clone, Default)]
pub struct Undecodable {
    /// Its metadata (default if even that does not decode).
    pub metadata: ObjectMeta,
    /// Its `status`, undecoded (a policy's old conditions keep their transition times).
    pub status: Option<Value>,
    /// `<field path>: <why>`, e.g. `spec.updateStrategy.maxUnavailable: invalid value…`.
    pub error: String,
}

impl<K: DeserializeOwned> Lenient<K> {
    /// Decodes `value` as a `K`, or keeps what it can of it.
    pub(crate) fn from_value(mut value: Value) -> Lenient<K> {
        match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(k) => Lenient::Ok(k),
            // Only the status is in the way (written by another writer or version): the
            // object is still usable without it.
            Err(e)
                if e.path()
                    .iter()
                    .next()
                    .is_some_and(|s| s.to_string() == "status") =>
            {
                let status = value.as_object_mut().and_then(|o| o.remove("status"));
                match serde_path_to_error::deserialize::<_, K>(&value) {
                    Ok(k) => Lenient::Ok(k),
                    Err(e) => Lenient::undecodable(&value, status, &e),
                }
            }
            Err(e) => {
                let status = value.get("status").cloned();
                Lenient::undecodable(&value, status, &e)
            }
        }
    }

    fn undecodable(
        value: &Value,
        status: Option<Value>,
        e: &serde_path_to_error::Error<serde_json::Error>,
    ) -> Lenient<K> {
        let metadata = value
            .get("metadata")
            .and_then(|m| ObjectMeta::deserialize(m).ok())
            .unwrap_or_default();
        Lenient::Err(Box::new(Undecodable {
            metadata,
            status,
            error: format!("{}: {}", e.path(), e.inner()),
        }))
    }
}

impl<K> Lenient<K> {
    #[cfg(test)]
    fn is_ok(&self) -> bool {
        matches!(self, Lenient::Ok(_))
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Buffered as a JSON value (one object at a time), so that a failure inside the
        // object does not fail the page or the event around it.
        Value::deserialize(d).map(Lenient::from_value)
    }
}

impl<K: Resource> Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Ok(k) => k.meta(),
            Lenient::Err(u) => &u.metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Ok(k) => k.meta_mut(),
            Lenient::Err(u) => &mut u.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use sidecar_api::SidecarPolicy;

    use super::*;

    fn policy_json(max_unavailable: Value) -> Value {
        serde_json::json!({
            "apiVersion": "sidecars.dev/v1alpha1", "kind": "SidecarPolicy",
            "metadata": {"name": "p", "namespace": "a", "resourceVersion": "7"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                     "updateStrategy": {"maxUnavailable": max_unavailable}},
            "status": {"matchedPods": 2},
        })
    }

    #[test]
    fn one_bad_object_never_fails_the_list_around_it() {
        let list = serde_json::json!({"items": [
            policy_json(serde_json::json!(1)),
            policy_json(serde_json::json!(3_000_000_000_u64)),
            policy_json(serde_json::json!("25%")),
        ]});
        #[derive(Deserialize)]
        struct List {
            items: Vec<Lenient<SidecarPolicy>>,
        }
        let list: List = serde_json::from_value(list).expect("the list decodes");
        let ok: Vec<bool> = list.items.iter().map(Lenient::is_ok).collect();
        assert_eq!(ok, [true, false, true]);
        let Lenient::Err(bad) = &list.items[1] else {
            unreachable!()
        };
        assert!(
            bad.error.starts_with("spec.updateStrategy.maxUnavailable"),
            "names the field: {}",
            bad.error
        );
        assert_eq!(bad.metadata.name.as_deref(), Some("p"));
        assert_eq!(bad.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(list.items[1].meta().namespace.as_deref(), Some("a"));
        assert!(bad.status.is_some());
    }

    #[test]
    fn an_undecodable_status_alone_is_dropped() {
        let mut v = policy_json(serde_json::json!(1));
        v["status"] = serde_json::json!({"matchedPods": "many"});
        let Lenient::Ok(p) = Lenient::<SidecarPolicy>::from_value(v) else {
            panic!("the object decodes without its status")
        };
        assert!(p.status.is_none());
    }

    #[test]
    fn watch_events_decode_through_the_wrapper() {
        let ev = serde_json::json!({"type": "ADDED", "object": {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "a", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "x"}]}]},
        }});
        let ev: kube::api::WatchEvent<Lenient<Pod>> =
            serde_json::from_str(&ev.to_string()).expect("the event decodes");
        let kube::api::WatchEvent::Added(Lenient::Err(bad)) = ev else {
            panic!("an undecodable Pod: {ev:?}")
        };
        assert!(
            bad.error
                .starts_with("spec.containers[0].ports[0].containerPort"),
            "{}",
            bad.error
        );
        assert_eq!(<Lenient<Pod> as Resource>::plural(&()), "pods");
    }
}
