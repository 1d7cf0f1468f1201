//! The committed CRD file is current, installable with client-side `kubectl apply`, and
//! documented for `kubectl explain`.

use serde_json::Value;

const CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../crds/sidecarpolicies.sidecars.dev.yaml"
);

const CLUSTER_CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../crds/clustersidecarpolicies.sidecars.dev.yaml"
);

/// The limit on all annotations of an object; client-side `kubectl apply` stores the whole
/// object as compact JSON in the `kubectl.kubernetes.io/last-applied-configuration` annotation.
const ANNOTATION_LIMIT: usize = 256 * 1024;

fn schema() -> Value {
    let crd = serde_json::to_value(sidecar_api::crd()).unwrap();
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .unwrap()
        .clone()
}

#[test]
fn committed_crd_is_up_to_date() {
    let generated = sidecar_api::crd_yaml().unwrap();
    let committed = std::fs::read_to_string(CRD_FILE).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/sidecarpolicies.sidecars.dev.yaml is stale or missing: run make crds \
         (cargo run -q -p sidecar-api --bin crdgen > crds/sidecarpolicies.sidecars.dev.yaml)"
    );
}

#[test]
fn committed_cluster_crd_is_up_to_date() {
    let generated = sidecar_api::cluster_crd_yaml().unwrap();
    let committed = std::fs::read_to_string(CLUSTER_CRD_FILE).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/clustersidecarpolicies.sidecars.dev.yaml is stale or missing: run make crds"
    );
    let compact = serde_json::to_string(&sidecar_api::cluster_crd()).unwrap();
    assert!(
        compact.len() < ANNOTATION_LIMIT / 2,
        "{} bytes",
        compact.len()
    );
}

#[test]
fn committed_yaml_parses_back_to_the_crd() {
    let parsed: Value = serde_yaml_ng::from_str(&sidecar_api::crd_yaml().unwrap()).unwrap();
    assert_eq!(parsed, serde_json::to_value(sidecar_api::crd()).unwrap());
}

#[test]
fn compact_json_fits_the_last_applied_annotation() {
    let compact = serde_json::to_string(&sidecar_api::crd()).unwrap();
    assert!(
        compact.len() < ANNOTATION_LIMIT / 2,
        "the CRD is {} bytes of JSON; client-side kubectl apply needs it below 256 KiB \
         (keep a 2x margin)",
        compact.len()
    );
}

/// Every property under `spec` (not descending into `spec.template`) and under `status` has a
/// description written for `kubectl explain` (list items are not fields, their properties are).
#[test]
fn every_field_of_ours_is_described() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        let described = schema
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| !d.trim().is_empty());
        if !described && !path.ends_with("[]") {
            missing.push(path.to_owned());
        }
        if path.ends_with(".spec.template") {
            return;
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                walk(&format!("{path}.{name}"), prop, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let cluster = serde_json::to_value(sidecar_api::cluster_crd()).unwrap();
    let cluster = cluster
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .unwrap()
        .clone();
    let mut missing = Vec::new();
    for (kind, schema) in [
        ("SidecarPolicy", schema()),
        ("ClusterSidecarPolicy", cluster),
    ] {
        for top in ["spec", "status"] {
            walk(
                &format!("{kind}.{top}"),
                &schema["properties"][top],
                &mut missing,
            );
        }
    }
    assert!(
        missing.is_empty(),
        "fields without description: {missing:?}"
    );
}

#[test]
fn template_internals_carry_no_upstream_descriptions() {
    let template = &schema()["properties"]["spec"]["properties"]["template"];
    assert!(
        template["description"]
            .as_str()
            .is_some_and(|d| d.contains("Pod template"))
    );
    let mut inner = template.clone();
    inner.as_object_mut().unwrap().remove("description");
    let text = inner.to_string();
    assert!(
        !text.contains("\"description\""),
        "description left inside spec.template"
    );
}

#[test]
fn descriptions_are_unwrapped() {
    let text = schema()["properties"]["spec"].to_string();
    assert!(!text.contains("description\":\"Where sidecars run.\\n"));
    let placement = schema()["properties"]["spec"]["properties"]["placement"]["description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!placement.contains('\n'), "{placement:?}");
}
