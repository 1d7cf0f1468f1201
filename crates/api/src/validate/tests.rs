use std::collections::BTreeSet;

use serde_json::{Value, json};

use kube_core::{Message, Rule};

use super::*;
use crate::SidecarPolicy;
use crate::rules::{self, selector};

#[path = "../../tests/support/mod.rs"]
mod support;
use support::{documents, repo_dir, yaml_files};

fn messages(errors: &[FieldError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

/// A valid policy document; tests change one thing in it.
fn valid() -> Value {
    json!({
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"role": "shipper"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    })
}

fn errors_of(doc: &Value) -> Vec<String> {
    messages(&validate_object(doc))
}

fn assert_rejected(doc: &Value, fragment: &str) {
    let got = errors_of(doc);
    assert!(
        got.iter().any(|m| m.contains(fragment)),
        "expected an error containing {fragment:?}, got {got:#?}"
    );
}

fn spec_with_selector(selector: Value, labels: Value) -> Value {
    let mut doc = valid();
    doc["spec"]["selector"] = selector;
    doc["spec"]["template"]["metadata"]["labels"] = labels;
    doc
}

#[test]
fn every_bad_policy_is_rejected_offline_with_its_expected_message() {
    let files = yaml_files(&repo_dir("tests/bad-policies"));
    assert!(files.len() >= 15, "found only {} bad policies", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", file.display()))
            .trim()
            .to_owned();
        let doc = documents(file).remove(0);
        let got = messages(&validate_object(&doc));
        if !got.iter().any(|m| m.contains(&expect)) {
            failures.push(format!(
                "{}\n  expected: {expect}\n  got:      {got:#?}",
                file.display()
            ));
        }
        // Where the document fits the Rust type at all, the typed check agrees.
        if let Ok(policy) = serde_json::from_value::<SidecarPolicy>(doc) {
            let typed = messages(&validate(&policy.spec));
            if !typed.iter().any(|m| m.contains(&expect)) {
                failures.push(format!(
                    "{} (typed)\n  expected: {expect}\n  got:      {typed:#?}",
                    file.display()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad policies not rejected as expected:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn every_example_policy_is_valid() {
    let mut seen = 0;
    for file in yaml_files(&repo_dir("examples")) {
        for doc in documents(&file)
            .into_iter()
            .filter(|d| d["kind"] == "SidecarPolicy")
        {
            assert_eq!(errors_of(&doc), Vec::<String>::new(), "{}", file.display());
            let policy: SidecarPolicy = serde_json::from_value(doc).unwrap();
            assert_eq!(
                messages(&validate(&policy.spec)),
                Vec::<String>::new(),
                "{}",
                file.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 3);
}

#[test]
fn every_crd_rule_has_a_mirror() {
    fn walk(schema: &Value, path: &str, out: &mut Vec<String>, used: &mut BTreeSet<String>) {
        for rule in schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = rule["rule"].as_str().unwrap_or_default();
            used.insert(text.to_owned());
            if rules::find(text).is_none() {
                out.push(format!("{path}: {text}"));
            }
        }
        for (k, v) in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            walk(v, &join(path, k), out, used);
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), out, used);
        }
        if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            walk(extra, &format!("{path}.*"), out, used);
        }
    }
    let (mut missing, mut used) = (Vec::new(), BTreeSet::new());
    walk(root_schema().unwrap(), "", &mut missing, &mut used);
    // The ClusterSidecarPolicy CRD carries the same rules, and its namespaceSelector's.
    let cluster = serde_json::to_value(crate::cluster_crd()).unwrap();
    let cluster_root = cluster
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .unwrap();
    walk(cluster_root, "", &mut missing, &mut used);
    assert!(
        missing.is_empty(),
        "CEL rules without a Rust mirror: {missing:#?}"
    );
    // A rule may sit at several places (containers and init containers); each mirror is of a
    // rule the CRD has, and mirrors once.
    let mirrored: Vec<String> = rules::all().map(|def| (def.cel)()).collect();
    let distinct: BTreeSet<String> = mirrored.iter().cloned().collect();
    assert_eq!(distinct.len(), mirrored.len(), "a rule mirrored twice");
    assert_eq!(distinct, used, "mirrors of rules the CRD does not have");
}

#[test]
fn every_schema_keyword_is_understood() {
    const KNOWN: &[&str] = &[
        "additionalProperties",
        "default",
        "description",
        "enum",
        "format",
        "items",
        "maxItems",
        "maxLength",
        "maxProperties",
        "maximum",
        "minItems",
        "minLength",
        "minimum",
        "nullable",
        "pattern",
        "properties",
        "required",
        "title",
        "type",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-list-type",
        "x-kubernetes-validations",
    ];
    fn walk(schema: &Value, path: &str, out: &mut Vec<String>) {
        let Some(map) = schema.as_object() else {
            return;
        };
        for key in map.keys() {
            if !KNOWN.contains(&key.as_str()) {
                out.push(format!("{path}: {key}"));
            }
        }
        for (k, v) in map
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            walk(v, &join(path, k), out);
        }
        if let Some(items) = map.get("items") {
            walk(items, &format!("{path}[]"), out);
        }
        if let Some(extra) = map.get("additionalProperties") {
            walk(extra, &format!("{path}.*"), out);
        }
    }
    let mut unknown = Vec::new();
    walk(root_schema().unwrap(), "", &mut unknown);
    assert!(
        unknown.is_empty(),
        "schema keywords validate/ does not check (teach the walker, or list them as \
         not mirrored in its docs): {unknown:#?}"
    );
}

#[test]
fn a_valid_policy_has_no_errors() {
    assert_eq!(errors_of(&valid()), Vec::<String>::new());
}

#[test]
fn messages_have_the_api_server_format() {
    let mut doc = valid();
    doc["spec"]["placement"] = json!("Anywhere");
    assert_eq!(
        errors_of(&doc)[0],
        r#"spec.placement: Unsupported value: "Anywhere": supported values: "SameNode", "Any""#
    );
    let mut doc = valid();
    doc["spec"]["selector"] = json!({});
    assert_eq!(
        errors_of(&doc),
        vec![format!(
            "spec.selector: Required value: {}",
            rule_message_of(&selector::SELECTOR_NOT_EMPTY.rule())
        )]
    );
    let mut doc = valid();
    doc["spec"]["updateStrategy"] = json!({"maxUnavailable": 0});
    assert_eq!(
        errors_of(&doc),
        vec![format!(
            "spec.updateStrategy.maxUnavailable: Invalid value: 0: {}",
            rule_message_of(&selector::MAX_UNAVAILABLE.rule())
        )]
    );
}

fn rule_message_of(rule: &Rule) -> String {
    match &rule.message {
        Some(Message::Message(m)) => m.clone(),
        other => panic!("rule without a plain message: {other:?}"),
    }
}

#[test]
fn unknown_fields_are_reported_with_their_path_everywhere() {
    let mut doc = valid();
    doc["spec"]["placment"] = json!("Any");
    doc["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("x");
    doc["spec"]["template"]["metadata"]["labelz"] = json!({});
    doc["extra"] = json!(1);
    let got = errors_of(&doc);
    for field in [
        "spec.placment",
        "spec.template.spec.containers[0].imagee",
        "spec.template.metadata.labelz",
        "extra",
    ] {
        assert!(
            got.contains(&format!("unknown field \"{field}\"")),
            "{field}: {got:#?}"
        );
    }
    assert_eq!(got.len(), 4, "{got:#?}");
}

#[test]
fn map_values_and_free_form_maps_are_not_unknown_fields() {
    let mut doc = valid();
    doc["spec"]["template"]["metadata"]["annotations"] = json!({"anything/goes": "1"});
    doc["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "10m", "memory": 1024}});
    assert_eq!(errors_of(&doc), Vec::<String>::new());
}

#[test]
fn defaults_apply_before_the_rules() {
    // No placement: the default SameNode applies, so nodeName is refused.
    let mut doc = valid();
    doc["spec"]["template"]["spec"]["nodeName"] = json!("n1");
    assert_rejected(
        &doc,
        "spec.template.spec.nodeName: Forbidden: spec.template.spec.nodeName can only be set",
    );
    doc["spec"]["placement"] = json!("Any");
    assert_eq!(errors_of(&doc), Vec::<String>::new());
    // An explicit null is pruned, then defaulted.
    let mut doc = valid();
    doc["spec"]["updateStrategy"] = json!({"maxUnavailable": null, "type": null});
    doc["spec"]["paused"] = json!(null);
    assert_eq!(errors_of(&doc), Vec::<String>::new());
}

#[test]
fn blocking_errors_skip_the_rules_like_the_server() {
    let mut doc = spec_with_selector(
        json!({"matchLabels": {"app": "web"}}),
        json!({"app": "web"}),
    );
    assert_rejected(&doc, "spec.selector also matches the sidecar Pods");
    doc["spec"]["paused"] = json!("yes");
    let got = errors_of(&doc);
    assert!(
        got.iter().any(|m| m.ends_with(RULES_NOT_CHECKED)),
        "{got:#?}"
    );
    assert!(!got.iter().any(|m| m.contains("also matches")), "{got:#?}");
}

#[test]
fn status_is_ignored_and_metadata_name_is_required() {
    let mut doc = valid();
    doc["status"] = json!({"matchedPods": "lots", "bogus": 1});
    assert_eq!(errors_of(&doc), Vec::<String>::new());
    doc["metadata"] = json!({});
    assert_rejected(&doc, "metadata.name: Required value");
    doc["metadata"] = json!({"name": "Bad_Name"});
    assert_rejected(&doc, "metadata.name: Invalid value: \"Bad_Name\"");
    doc["metadata"] = json!({"generateName": "p-"});
    assert_eq!(errors_of(&doc), Vec::<String>::new());
    doc["apiVersion"] = json!("sidecars.dev/v1");
    assert_rejected(
        &doc,
        r#"apiVersion: Unsupported value: "sidecars.dev/v1": supported values: "sidecars.dev/v1alpha1""#,
    );
}

#[test]
fn upstream_template_schema_is_checked_too() {
    let mut doc = valid();
    doc["spec"]["template"]["spec"]["containers"][0] = json!({"image": "busybox"});
    assert_rejected(
        &doc,
        "spec.template.spec.containers[0].name: Required value",
    );
    let mut doc = valid();
    doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!("ten");
    assert_rejected(
        &doc,
        "spec.template.spec.terminationGracePeriodSeconds: Invalid value: \"string\"",
    );
    let mut doc = valid();
    doc["spec"]["template"]["spec"]["containers"] = json!(
        (0..17)
            .map(|i| json!({"name": format!("c{i}"), "image": "busybox"}))
            .collect::<Vec<_>>()
    );
    assert_rejected(
        &doc,
        "spec.template.spec.containers: Too many: 17: must have at most 16 items",
    );
}

#[test]
fn label_values_and_keys_are_bounded() {
    let long = "a".repeat(64);
    let doc = spec_with_selector(json!({"matchLabels": {"app": long}}), json!({}));
    assert_rejected(
        &doc,
        "spec.selector.matchLabels.app: Too long: may not be more than 63",
    );
    let doc = spec_with_selector(
        json!({"matchExpressions": [{"key": "", "operator": "Exists"}]}),
        json!({}),
    );
    assert_rejected(
        &doc,
        "spec.selector.matchExpressions[0].key: Invalid value: \"\": spec.selector.matchExpressions[0].key in body should be at least 1 chars long",
    );
}

#[test]
fn selector_rule_mirrors_follow_the_cel_semantics() {
    let ok = |selector: Value, labels: Value| {
        let doc = spec_with_selector(selector, labels);
        assert_eq!(errors_of(&doc), Vec::<String>::new(), "{doc}");
    };
    let matches_sidecars = |selector: Value, labels: Value| {
        assert_rejected(
            &spec_with_selector(selector, labels),
            "spec.selector: Forbidden: spec.selector also matches the sidecar Pods",
        );
    };
    // matchLabels: a label the template sets to the same value matches.
    matches_sidecars(
        json!({"matchLabels": {"app": "web"}}),
        json!({"app": "web"}),
    );
    ok(
        json!({"matchLabels": {"app": "web"}}),
        json!({"app": "other"}),
    );
    // In: a template label value in the list matches.
    matches_sidecars(
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "web"]}]}),
        json!({"app": "web"}),
    );
    ok(
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}),
        json!({"app": "web"}),
    );
    // NotIn: sidecars without the label, or with another value, match; on managed-by only if
    // the operator's value is not excluded; sidecars.dev/ keys never count.
    matches_sidecars(
        json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}),
        json!({}),
    );
    ok(
        json!({"matchExpressions": [
            {"key": "app.kubernetes.io/managed-by", "operator": "NotIn", "values": ["sidecar-operator"]}
        ]}),
        json!({}),
    );
    ok(
        json!({"matchExpressions": [
            {"key": "sidecars.dev/policy", "operator": "NotIn", "values": ["x"]}
        ]}),
        json!({}),
    );
    // Exists: on managed-by always matches (and is not a reserved-key requirement).
    matches_sidecars(
        json!({"matchExpressions": [{"key": "app.kubernetes.io/managed-by", "operator": "Exists"}]}),
        json!({}),
    );
    matches_sidecars(
        json!({"matchExpressions": [{"key": "role", "operator": "Exists"}]}),
        json!({"role": "x"}),
    );
    ok(
        json!({"matchExpressions": [{"key": "role", "operator": "Exists"}]}),
        json!({"other": "x"}),
    );
    // DoesNotExist: matches unless the sidecars carry the key; sidecars.dev/ keys are unknown.
    ok(
        json!({"matchExpressions": [{"key": "role", "operator": "DoesNotExist"}]}),
        json!({"role": "x"}),
    );
    ok(
        json!({"matchExpressions": [{"key": "sidecars.dev/x", "operator": "DoesNotExist"}]}),
        json!({}),
    );
    ok(
        json!({"matchExpressions": [
            {"key": "app.kubernetes.io/managed-by", "operator": "DoesNotExist"}
        ]}),
        json!({}),
    );
    // All requirements must match for the selector to match.
    ok(
        json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["x"]}
        ]}),
        json!({}),
    );
    // Reserved keys: In and Exists are refused, NotIn and DoesNotExist allowed.
    assert_rejected(
        &spec_with_selector(
            json!({"matchLabels": {"app": "web", "sidecars.dev/policy": "p"}}),
            json!({}),
        ),
        "spec.selector: Forbidden: spec.selector must not require sidecars.dev/ labels",
    );
}

#[test]
fn match_expression_values_rule_in_both_directions() {
    let doc = spec_with_selector(
        json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "x", "operator": "DoesNotExist", "values": ["a"]}
        ]}),
        json!({}),
    );
    assert_rejected(
        &doc,
        "spec.selector.matchExpressions[0].values: Invalid value: spec.selector.matchExpressions[].values must be non-empty when operator is In or NotIn, and empty",
    );
    let doc = spec_with_selector(
        json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "x", "operator": "NotIn", "values": []}
        ]}),
        json!({}),
    );
    assert_rejected(
        &doc,
        "values must be non-empty when operator is In or NotIn",
    );
}

#[test]
fn max_unavailable_mirror() {
    for good in [
        json!(1),
        json!(1000),
        json!("1%"),
        json!("25%"),
        json!("100%"),
    ] {
        assert!((selector::MAX_UNAVAILABLE.holds)(&good), "{good}");
    }
    for bad in [
        json!(0),
        json!(-3),
        json!("0%"),
        json!("101%"),
        json!("05%"),
        json!("25"),
        json!("10.5%"),
        json!(" 25%"),
    ] {
        assert!(!(selector::MAX_UNAVAILABLE.holds)(&bad), "{bad}");
    }
}

#[test]
fn typed_validate_checks_the_spec() {
    let policy: SidecarPolicy = serde_json::from_value(valid()).unwrap();
    assert!(validate(&policy.spec).is_empty());
    let mut spec = policy.spec.clone();
    spec.template.spec.as_mut().unwrap().node_name = Some("n1".into());
    assert_eq!(
        validate(&spec)
            .iter()
            .map(|e| (e.kind, e.field.as_str()))
            .collect::<Vec<_>>(),
        vec![(FieldErrorKind::Forbidden, "spec.template.spec.nodeName")]
    );
}
