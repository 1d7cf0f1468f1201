use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::json;

use super::*;
use crate::types::{Mode, Placement, SidecarPolicySpec, UpdateStrategy};

fn spec(template: serde_json::Value) -> SidecarPolicySpec {
    SidecarPolicySpec {
        selector: serde_json::from_value::<LabelSelector>(json!({"matchLabels": {"app": "web"}}))
            .unwrap(),
        template: serde_json::from_value::<PodTemplateSpec>(template).unwrap(),
        mode: Mode::Pod,
        placement: Placement::SameNode,
        update_strategy: UpdateStrategy::default(),
        paused: false,
        priority: None,
    }
}

fn shipper() -> serde_json::Value {
    json!({
        "metadata": {"labels": {"team": "obs", "app": "log-shipper"}},
        "spec": {"containers": [{"name": "shipper", "image": "fluent/fluent-bit:3.1"}]}
    })
}

#[test]
fn pinned_value() {
    // Changing this value changes every sidecar's hash and rolls all sidecars in all clusters.
    // Cross-checked with Python: sha256(json.dumps(v, sort_keys=True, separators=(",", ":"))).
    assert_eq!(template_hash(&spec(shipper())), "8adeffdca3");
}

#[test]
fn canonical_form_is_sorted_and_compact() {
    let v = json!({"b": 1, "a": {"d": [], "c": null, "e": {}, "f": "x"}, "g": [{}, 2]});
    assert_eq!(canonical_json(&v), r#"{"a":{"f":"x"},"b":1,"g":[null,2]}"#);
}

#[test]
fn hash_is_a_label_value_of_fixed_length() {
    let h = template_hash(&spec(shipper()));
    assert_eq!(h.len(), TEMPLATE_HASH_LEN);
    assert!(
        h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
}

#[test]
fn key_order_and_empty_fields_do_not_matter() {
    let reordered = json!({
        "spec": {"containers": [{"image": "fluent/fluent-bit:3.1", "name": "shipper", "args": []}]},
        "metadata": {"annotations": {}, "labels": {"app": "log-shipper", "team": "obs"}}
    });
    assert_eq!(
        template_hash(&spec(shipper())),
        template_hash(&spec(reordered))
    );
}

#[test]
fn template_and_placement_change_the_hash_other_fields_do_not() {
    let base = spec(shipper());
    let h = template_hash(&base);

    let mut other_image = shipper();
    other_image["spec"]["containers"][0]["image"] = json!("fluent/fluent-bit:3.2");
    assert_ne!(template_hash(&spec(other_image)), h);

    let any = SidecarPolicySpec {
        placement: Placement::Any,
        ..base.clone()
    };
    assert_ne!(template_hash(&any), h);

    let mut unrelated = base.clone();
    unrelated.paused = true;
    unrelated.priority = Some(10);
    unrelated.update_strategy.max_unavailable =
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1);
    unrelated.selector.match_labels = Some([("tier".to_owned(), "x".to_owned())].into());
    assert_eq!(template_hash(&unrelated), h);
}

#[test]
fn pod_mode_hashes_are_those_of_before_modes_existed() {
    // The values of the definition without `mode` (cross-checked with Python as above): an
    // upgrade must not change the hash of any Pod-mode policy, explicit or defaulted.
    let mut any = spec(shipper());
    any.placement = Placement::Any;
    assert_eq!(template_hash(&any), "810d94d349");
    let mut doc = serde_json::to_value(spec(shipper())).unwrap();
    doc.as_object_mut().unwrap().remove("mode");
    let defaulted: SidecarPolicySpec = serde_json::from_value(doc).unwrap();
    assert_eq!(defaulted.mode, Mode::Pod);
    assert_eq!(template_hash(&defaulted), "8adeffdca3");
}

#[test]
fn container_mode_hashes_the_mode_and_template_not_the_placement() {
    let mut container = spec(shipper());
    container.mode = Mode::Container;
    // sha256 of {"mode":"Container","template":<shipper>}, as above.
    assert_eq!(template_hash(&container), "787b6210b3");
    container.placement = Placement::Any;
    assert_eq!(template_hash(&container), "787b6210b3");
}
