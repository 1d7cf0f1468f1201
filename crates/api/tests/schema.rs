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
    // No default type: it depends on the mode (RollingUpdate for Pod, OnDelete for
    // Container, whose repair evicts users' Pods and so is asked for).
    assert_eq!(strategy["default"], json!({"maxUnavailable": "25%"}));
    assert!(strategy["properties"]["type"].get("default").is_none());
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
    // At least one container is a rule on spec (it depends on spec.mode), not a bound.
    assert!(containers.get("minItems").is_none());
    assert!(
        !template["properties"]["spec"]["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("containers")))
    );
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

#[test]
fn pod_template_rules_sit_where_the_api_server_evaluates_them() {
    let spec = spec_schema();
    let pod = &spec["properties"]["template"]["properties"]["spec"];
    let pod_rules = rules(pod);
    for prefix in [
        "spec.template.spec.containers[].name and spec.template.spec.initContainers[].name must be unique",
        "spec.template.spec.ephemeralContainers must not be set",
        "spec.template.spec.volumes[].name must be unique",
        "spec.template.spec.containers[].volumeMounts[].name and",
    ] {
        assert!(
            pod_rules.iter().any(|m| m.starts_with(prefix)),
            "no Pod spec rule {prefix:?}: {pod_rules:#?}"
        );
    }
    for list in ["containers", "initContainers"] {
        let container = &pod["properties"][list]["items"];
        let path = format!("spec.template.spec.{list}[]");
        let messages = rules(container);
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with(&format!("{path}.image must be set"))),
            "{list}: {messages:#?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with(&format!("{path}.ports[].name must be unique"))),
            "{list}: {messages:#?}"
        );
        let p = &container["properties"];
        assert_eq!(p["name"]["maxLength"], 63);
        assert!(rules(&p["name"])[0].starts_with(&format!("{path}.name must be a DNS-1123 label")));
        let port = &p["ports"]["items"]["properties"];
        assert_eq!(
            (
                &port["containerPort"]["minimum"],
                &port["containerPort"]["maximum"]
            ),
            (&json!(1.0), &json!(65535.0))
        );
        assert_eq!(
            (&port["hostPort"]["minimum"], &port["hostPort"]["maximum"]),
            (&json!(0.0), &json!(65535.0))
        );
        assert_eq!(port["protocol"]["enum"], json!(["TCP", "UDP", "SCTP", ""]));
        assert_eq!(
            p["restartPolicy"]["enum"],
            json!(["Always", "OnFailure", "Never"])
        );
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            for handler in ["httpGet", "tcpSocket", "grpc"] {
                let port = &p[probe]["properties"][handler]["properties"]["port"];
                assert_eq!(port["maximum"], 65535.0, "{list} {probe} {handler}");
                assert_eq!(port["minimum"], 1.0, "{list} {probe} {handler}");
            }
        }
        for bounded in ["ports", "env", "volumeMounts"] {
            assert!(p[bounded]["maxItems"].is_i64(), "{list}[].{bounded}");
        }
        let init_rule = messages
            .iter()
            .any(|m| m.contains("may only be set with restartPolicy Always"));
        assert_eq!(init_rule, list == "initContainers", "{list}: {messages:#?}");
    }
    assert!(pod["properties"]["volumes"]["maxItems"].is_i64());
    assert!(pod["properties"]["initContainers"]["maxItems"].is_i64());
}

/// Every integer the Rust types hold as `i32` (fields with `format: int32`, and the
/// int-or-strings that are `IntOrString`, not quantities) has bounds within the `i32` range, so
/// the API server never stores a value the operator cannot read back.
#[test]
fn every_32_bit_integer_is_bounded() {
    // Int-or-strings that are `Quantity` (a string of any size) need no bound.
    const QUANTITIES: &[&str] = &["limits", "requests", "overhead", "sizeLimit", "divisor"];
    fn walk(schema: &Value, path: &str, parent: &str, out: &mut Vec<String>, seen: &mut usize) {
        let int32 = schema["type"] == "integer" && schema["format"] == "int32";
        let int_or_string = schema["x-kubernetes-int-or-string"] == true;
        if int32 || (int_or_string && !QUANTITIES.contains(&parent)) {
            *seen += 1;
            let min = schema["minimum"].as_f64();
            let max = schema["maximum"].as_f64();
            let min_ok = int_or_string || min.is_some_and(|m| m >= f64::from(i32::MIN));
            if !(min_ok && max.is_some_and(|m| m <= f64::from(i32::MAX))) {
                out.push(format!("{path}: minimum {min:?}, maximum {max:?}"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), k, out, seen);
            }
        }
        if schema["items"].is_object() {
            walk(&schema["items"], &format!("{path}[]"), parent, out, seen);
        }
        if schema["additionalProperties"].is_object() {
            let last = path.rsplit('.').next().unwrap_or_default().to_owned();
            walk(
                &schema["additionalProperties"],
                &format!("{path}.*"),
                &last,
                out,
                seen,
            );
        }
    }
    let crd = crd();
    let root = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .unwrap();
    let (mut unbounded, mut seen) = (Vec::new(), 0);
    walk(root, "", "", &mut unbounded, &mut seen);
    assert!(seen > 100, "only {seen} 32-bit integers found");
    assert!(unbounded.is_empty(), "unbounded: {unbounded:#?}");
}
