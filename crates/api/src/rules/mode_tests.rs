use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::validate_object;

/// The properties of the schema at `pointer` in the generated CRD.
fn properties(pointer: &str) -> BTreeSet<String> {
    let crd = serde_json::to_value(crate::crd()).unwrap();
    let root = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/template";
    crd.pointer(&format!("{root}{pointer}/properties"))
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no properties at {pointer}"))
        .keys()
        .cloned()
        .collect()
}

fn union(a: &[&str], b: &[&str]) -> BTreeSet<String> {
    a.iter().chain(b).map(|s| (*s).to_owned()).collect()
}

#[test]
fn container_mode_sorts_every_template_field_into_allowed_or_refused() {
    let spec = union(
        &CONTAINER_MODE_POD_SPEC_FIELDS,
        &CONTAINER_MODE_REFUSED_POD_SPEC_FIELDS,
    );
    assert_eq!(spec, properties("/properties/spec"));
    let meta = union(
        &CONTAINER_MODE_METADATA_FIELDS,
        &CONTAINER_MODE_REFUSED_METADATA_FIELDS,
    );
    assert_eq!(meta, properties("/properties/metadata"));
}

/// A valid Container-mode policy; tests change one thing in it.
fn container_mode() -> Value {
    json!({
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "mode": "Container",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"note": "x"}},
                "spec": {
                    "initContainers": [{
                        "name": "proxy", "image": "envoy", "restartPolicy": "Always",
                        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/envoy"}]
                    }],
                    "volumes": [{"name": "cfg", "emptyDir": {}}]
                }
            }
        }
    })
}

fn errors(doc: &Value) -> Vec<String> {
    validate_object(doc)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn container_mode_takes_init_containers_alone_and_selector_matching_template_labels() {
    // Init containers only (native sidecars), and template labels the selector matches
    // (refused in Pod mode, where they would select the sidecar Pods).
    assert_eq!(errors(&container_mode()), Vec::<String>::new());
    let mut pod = container_mode();
    pod["spec"]["mode"] = json!("Pod");
    let got = errors(&pod).join("\n");
    assert!(
        got.contains("spec.selector also matches the sidecar Pods"),
        "{got}"
    );
    assert!(
        got.contains("spec.template.spec.containers: Required value"),
        "{got}"
    );
}

#[test]
fn container_mode_refuses_every_other_template_field_once() {
    let cases = [
        ("nodeName", json!("node-1")),
        ("hostNetwork", json!(true)),
        ("restartPolicy", json!("Never")),
        ("serviceAccountName", json!("sa")),
        ("tolerations", json!([{"key": "k", "operator": "Exists"}])),
        ("securityContext", json!({"runAsNonRoot": true})),
    ];
    for (field, value) in cases {
        let mut doc = container_mode();
        doc["spec"]["template"]["spec"][field] = value;
        // Only the Container-mode rule: nodeName's placement rule is for Pod mode.
        assert_eq!(
            errors(&doc),
            [
                "spec.template.spec: Forbidden: spec.template.spec may only set initContainers, \
              containers and volumes in Container mode: they are added to each selected Pod, \
              whose other fields are its own"
            ],
            "{field}"
        );
    }
    let mut doc = container_mode();
    doc["spec"]["template"]["metadata"]["finalizers"] = json!(["a/b"]);
    let got = errors(&doc).join("\n");
    assert!(got.starts_with("spec.template.metadata: Forbidden: spec.template.metadata may only set labels and annotations in Container mode"), "{got}");
    let mut doc = container_mode();
    doc["spec"]["template"]["metadata"]["annotations"][ANNOTATION_INJECTED] = json!("q=1");
    let got = errors(&doc).join("\n");
    assert!(
        got.contains("must not set sidecars.dev/injected in Container mode"),
        "{got}"
    );
}

#[test]
fn container_mode_needs_something_to_inject() {
    let mut doc = container_mode();
    doc["spec"]["template"]["spec"] = json!({"containers": []});
    let got = errors(&doc).join("\n");
    assert!(
        got.contains("spec.template.spec: Required value: spec.template.spec must list at least one container or init container in Container mode"),
        "{got}"
    );
    doc["spec"]["template"]["spec"] = json!({"containers": [{"name": "c", "image": "i"}]});
    assert_eq!(errors(&doc), Vec::<String>::new());
}
