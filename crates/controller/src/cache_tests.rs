//! Unit tests of `cache.rs`.

use sidecar_api::constants::{LABEL_MAIN_UID, LABEL_MANAGED_BY, LABEL_POLICY, MANAGED_BY_VALUE};
use sidecar_planner::{Labels, OwnerApi, OwnerView};

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
            api_version: OwnerApi::Core,
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
        names(&c.sidecars_of("a", "uid-web-0")),
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
    assert_eq!(c.sidecars_of("a", "uid-web-0").len(), 2);

    assert!(c.delete(&PodKey::new("a", "web-0-log")).is_some());
    assert!(c.delete(&PodKey::new("a", "web-0-log")).is_none());
    assert_eq!(names(&c.sidecars_of("a", "uid-web-0")), ["web-0-metrics"]);
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
    assert!(c.sidecars_of("a", "uid-web-0").is_empty());
    assert!(c.get("c", "db-0").is_some() && c.get("b", "web-0").is_none());
    assert_eq!(c.all().count(), 2);
}

/// A Pod of namespace b labelled (and owner-referenced) as a sidecar of a main Pod of a: a
/// lookup of a's main Pod never returns it, whatever its uid label says.
#[test]
fn sidecars_of_a_main_pod_are_of_its_namespace_only() {
    let mut c = PodCache::default();
    let victim = main_pod("a", "web-0");
    c.apply(victim.clone());
    c.apply(sidecar("a", "web-0-log", "web-0", "log"));
    c.apply(sidecar("b", "web-0-log", "web-0", "log"));
    c.apply(sidecar("b", "forged", "web-0", "log"));
    // (namespace, sidecars of uid-web-0 there)
    let cases: [(&str, &[&str]); 3] = [
        ("a", &["web-0-log"]),
        ("b", &["forged", "web-0-log"]),
        ("c", &[]),
    ];
    for (ns, want) in cases {
        assert_eq!(names(&c.sidecars_of(ns, &victim.uid)), want, "{ns}");
    }
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
    assert_eq!(names(&c.sidecars_of("b", "uid-web-0")), ["web-0-log"]);
    assert!(c.sidecars_of("a", "uid-web-0").is_empty());
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
    let key = PolicyKey::new;
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
