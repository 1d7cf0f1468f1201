//! Shape of the generated schema: names, printer columns, defaults, enums, bounds and the CEL
//! rules at the places the API server evaluates them. (Whether the API server accepts and
//! enforces them is proven by the e2e test with `tests/bad-policies/`.)

use serde_json::{Value, json};
use sidecar_api::constants::{CRD_NAME, GROUP, KIND, PLURAL, VERSION};

fn crd() -> Value {
    serde_json::to_value(sidecar_api::crd()).unwrap()
}

fn spec_schema() -> Value {
    crd()
        .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
        .unwrap()
        .clone()
}

fn rules(schema: &Value) -> Vec<String> {
    schema["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| r["message"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn names_and_scope() {
    let crd = crd();
    assert_eq!(crd["metadata"]["name"], CRD_NAME);
    assert_eq!(crd["spec"]["group"], GROUP);
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], KIND);
    assert_eq!(crd["spec"]["names"]["plural"], PLURAL);
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["sp"]));
    assert_eq!(crd["spec"]["names"]["categories"], json!(["sidecars"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], VERSION);
    assert_eq!(version["subresources"]["status"], json!({}));
}

#[test]
fn printer_columns_in_order() {
    let columns: Vec<(String, String)> = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_uppercase(),
                c["jsonPath"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("MATCHED", ".status.matchedPods"),
        ("READY", ".status.ready"),
        ("UP-TO-DATE", ".status.updatedPods"),
        ("PAUSED", ".spec.paused"),
        ("AGE", ".metadata.creationTimestamp"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .collect();
    assert_eq!(columns, expected);
}

#[test]
fn required_fields_defaults_and_enums() {
    let spec = spec_schema();
    let p = &spec["properties"];
    assert_eq!(spec["required"], json!(["selector", "template"]));
    assert_eq!(p["placement"]["enum"], json!(["SameNode", "Any"]));
    assert_eq!(p["placement"]["default"], "SameNode");
    assert_eq!(p["paused"]["default"], false);
    let strategy = &p["updateStrategy"];
    assert_eq!(
        strategy["default"],
        json!({"type": "RollingUpdate", "maxUnavailable": "25%"})
    );
    assert_eq!(
        strategy["properties"]["type"]["enum"],
        json!(["RollingUpdate", "OnDelete"])
    );
    let max_unavailable = &strategy["properties"]["maxUnavailable"];
    assert_eq!(max_unavailable["x-kubernetes-int-or-string"], true);
    // An explicit null must be defaulted, not stored (IntOrString cannot hold null).
    assert!(max_unavailable.get("nullable").is_none());
    let template = &p["template"];
    assert_eq!(template["required"], json!(["spec"]));
    let containers = &template["properties"]["spec"]["properties"]["containers"];
    assert_eq!(containers["minItems"], 1);
    assert!(containers["maxItems"].is_i64());
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    let crd = crd();
    let conditions = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/status/properties/conditions")
        .unwrap();
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    assert!(
        conditions["items"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("type"))
    );
}

#[test]
fn selector_is_bounded_and_validated() {
    let selector = &spec_schema()["properties"]["selector"];
    let messages = rules(selector);
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("spec.selector must not be empty"))
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("spec.selector must not select sidecar Pods"))
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("must not require sidecars.dev/ labels"))
    );
    let exprs = &selector["properties"]["matchExpressions"];
    assert!(exprs["maxItems"].is_i64());
    assert_eq!(
        exprs["items"]["properties"]["operator"]["enum"],
        json!(["In", "NotIn", "Exists", "DoesNotExist"])
    );
    assert!(exprs["items"]["properties"]["values"]["maxItems"].is_i64());
    assert!(exprs["items"]["properties"]["values"]["items"]["maxLength"].is_i64());
    assert_eq!(rules(&exprs["items"]).len(), 1);
    let labels = &selector["properties"]["matchLabels"];
    assert!(labels["maxProperties"].is_i64());
    assert!(labels["additionalProperties"]["maxLength"].is_i64());
}

#[test]
fn spec_level_and_template_rules() {
    let spec = spec_schema();
    let messages = rules(&spec);
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("spec.selector also matches the sidecar Pods"))
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("spec.template.spec.nodeName"))
    );
    let metadata = &spec["properties"]["template"]["properties"]["metadata"];
    let messages = rules(metadata);
    for field in [
        "name",
        "generateName",
        "namespace",
        "ownerReferences",
        "labels",
    ] {
        let prefix = format!("spec.template.metadata.{field} must not");
        assert!(
            messages.iter().any(|m| m.starts_with(&prefix)),
            "no rule for {field}"
        );
    }
    assert!(metadata["properties"]["labels"]["maxProperties"].is_i64());
    let max_unavailable = &spec["properties"]["updateStrategy"]["properties"]["maxUnavailable"];
    assert!(
        rules(max_unavailable)[0]
            .starts_with("spec.updateStrategy.maxUnavailable must be a positive integer")
    );
}

#[test]
fn every_rule_message_names_its_field_and_fits_one_line() {
    fn walk(schema: &Value, out: &mut Vec<Value>) {
        match schema {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                    out.extend(rules.iter().cloned());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    walk(&crd(), &mut all);
    assert!(all.len() >= 12, "only {} rules", all.len());
    for rule in all {
        let message = rule["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("spec."),
            "message does not name a field: {rule}"
        );
        assert!(!message.contains('\n') && !rule["rule"].as_str().unwrap().contains('\n'));
    }
}
