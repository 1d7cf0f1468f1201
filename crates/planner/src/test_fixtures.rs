//! Policies and Pods for the planner's tests.

use std::sync::Arc;

use serde_json::{Value, json};
use sidecar_api::{ClusterSidecarPolicy, SidecarPolicy};

use crate::*;

pub(crate) fn spec(extra: Value) -> Value {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]}},
    });
    if let (Some(base), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    spec
}

pub(crate) fn namespaced(name: &str, extra: Value) -> PolicyView {
    let mut p = SidecarPolicy::new(name, serde_json::from_value(spec(extra)).expect("spec"));
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.generation = Some(1);
    PolicyView::new(Arc::new(p))
}

pub(crate) fn cluster(name: &str, namespace_selector: Value, extra: Value) -> PolicyView {
    let mut s = spec(extra);
    s["namespaceSelector"] = namespace_selector;
    let mut p = ClusterSidecarPolicy::new(name, serde_json::from_value(s).expect("spec"));
    p.metadata.uid = Some(format!("uid-csp-{name}"));
    p.metadata.generation = Some(1);
    PolicyView::cluster(Arc::new(p))
}

pub(crate) fn main_pod(name: &str) -> PodView {
    PodView {
        namespace: "shop".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: Labels::from_iter([("app", "web")]),
        node_name: Some("node-a".into()),
        phase: Phase::Running,
        ..PodView::default()
    }
}

pub(crate) fn sidecar(main: &PodView, p: &PolicyView) -> PodView {
    let mut pod = render(main, p);
    pod.metadata.uid = Some(format!("uid-sc-{}", p.name));
    let mut v = PodView::from_pod(&pod).expect("view");
    v.phase = Phase::Running;
    v.ready = true;
    v
}
