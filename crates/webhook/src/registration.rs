//! The MutatingWebhookConfiguration: what it says (one pure function, also what `deploy/`
//! ships and `sidecar-operator webhook-config` prints), and keeping its `caBundle` equal to
//! the CAs the operator's certificates come from.
//!
//! - In a cluster the configuration points at a Service in front of the replicas; it is
//!   installed with the operator (`deploy/`), and the operator only fills in `caBundle`.
//! - Beside a cluster (`make demo`, the tests, a binary on a laptop), `--webhook-url`
//!   points it at an address the API server can reach, and the operator applies the whole
//!   configuration itself.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::core::ObjectMeta;
use sidecar_api::constants::{
    ANNOTATION_INJECT, FIELD_MANAGER, INJECT_DISABLED, LABEL_MANAGED_BY, MANAGED_BY_VALUE,
};

use crate::Error;

/// Name of the configuration and of its one webhook.
pub const CONFIGURATION_NAME: &str = "sidecar-operator";
/// Name of the webhook in it.
pub const WEBHOOK_NAME: &str = "inject.sidecars.dev";
/// Path the webhook is served at.
pub const PATH: &str = "/mutate";
/// Namespaces never injected, whatever their policies say.
pub use sidecar_api::constants::SYSTEM_NAMESPACES;

/// Where the API server sends admission reviews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Service in front of the replicas: namespace, name, port.
    Service(String, String, i32),
    /// A URL (`https://127.0.0.1:9443`; the path is added).
    Url(String),
}

/// What the configuration depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The configuration's name ([`CONFIGURATION_NAME`] unless several operators share a
    /// cluster, as the tests do).
    pub name: String,
    pub endpoint: Endpoint,
    /// Further namespace requirements (`--webhook-namespace-selector`): only namespaces
    /// matching them are sent to the webhook.
    pub namespace_selector: Vec<LabelSelectorRequirement>,
    /// The operator's own namespace (left alone).
    pub operator_namespace: String,
    /// How long the API server waits for an answer before letting the Pod through.
    pub timeout_seconds: i32,
}

/// The whole configuration, with `ca_bundle` if known.
pub fn configuration(r: &Registration, ca_bundle: Option<&str>) -> MutatingWebhookConfiguration {
    let mut excluded: Vec<String> = SYSTEM_NAMESPACES.iter().map(|s| s.to_string()).collect();
    if !excluded.contains(&r.operator_namespace) {
        excluded.push(r.operator_namespace.clone());
    }
    let not_in = |key: &str, values: Vec<String>| LabelSelectorRequirement {
        key: key.into(),
        operator: "NotIn".into(),
        values: Some(values),
    };
    let selector = |rs: Vec<LabelSelectorRequirement>| LabelSelector {
        match_expressions: Some(rs),
        match_labels: None,
    };
    let mut namespaces = vec![not_in("kubernetes.io/metadata.name", excluded)];
    namespaces.extend(r.namespace_selector.iter().cloned());
    let client_config = match &r.endpoint {
        Endpoint::Service(namespace, name, port) => WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(PATH.into()),
                port: Some(*port),
            }),
            ..WebhookClientConfig::default()
        },
        Endpoint::Url(url) => WebhookClientConfig {
            url: Some(format!("{}{PATH}", url.trim_end_matches('/'))),
            ..WebhookClientConfig::default()
        },
    };
    let client_config = WebhookClientConfig {
        ca_bundle: ca_bundle.map(|b| ByteString(b.as_bytes().to_vec())),
        ..client_config
    };
    let opted_out = format!(
        "!has(object.metadata.annotations) || !('{ANNOTATION_INJECT}' in object.metadata.annotations) \
         || object.metadata.annotations['{ANNOTATION_INJECT}'] != '{INJECT_DISABLED}'"
    );
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(r.name.clone()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "sidecar-operator".to_string(),
                ),
                (
                    "app.kubernetes.io/component".to_string(),
                    "webhook".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into()],
            client_config,
            // A Pod is never blocked because the operator is down; the reconcile loop sees
            // what the webhook missed.
            failure_policy: Some("Ignore".into()),
            match_policy: Some("Equivalent".into()),
            match_conditions: Some(vec![MatchCondition {
                name: "not-opted-out".into(),
                expression: opted_out,
            }]),
            namespace_selector: Some(selector(namespaces)),
            // Companion sidecar Pods and the operator's own Pods carry this label.
            object_selector: Some(selector(vec![not_in(
                LABEL_MANAGED_BY,
                vec![MANAGED_BY_VALUE.into()],
            )])),
            reinvocation_policy: Some("IfNeeded".into()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            side_effects: "None".into(),
            timeout_seconds: Some(r.timeout_seconds),
        }]),
    }
}

/// [`configuration`] as a whole object, `apiVersion` and `kind` included (k8s-openapi
/// types leave them out), to apply or print.
pub fn configuration_value(
    r: &Registration,
    ca_bundle: Option<&str>,
) -> Result<serde_json::Value, Error> {
    let mut value = serde_json::to_value(configuration(r, ca_bundle))
        .map_err(|e| Error::Encode(e.to_string()))?;
    value["apiVersion"] = "admissionregistration.k8s.io/v1".into();
    value["kind"] = "MutatingWebhookConfiguration".into();
    Ok(value)
}

/// The configuration as YAML (what `deploy/` ships).
pub fn configuration_yaml(r: &Registration) -> Result<String, Error> {
    let value = configuration_value(r, None)?;
    serde_yaml_ng::to_string(&ordered(value)).map_err(|e| Error::Encode(e.to_string()))
}

/// `apiVersion` and `kind` first, as people write them.
fn ordered(value: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(mut o) = value else {
        return value;
    };
    let mut out = serde_json::Map::new();
    for k in ["apiVersion", "kind", "metadata"] {
        if let Some(v) = o.remove(k) {
            out.insert(k.into(), v);
        }
    }
    out.extend(o);
    serde_json::Value::Object(out)
}

/// Makes the API server trust `bundle` for the webhook. With `full` (beside a cluster) the
/// whole configuration is applied (created if missing and allowed); otherwise only the `caBundle` of
/// the installed configuration's webhook is set, and a missing configuration is an error
/// that says how to install it. Reads the configuration once; writes only on a change.
pub async fn ensure_ca_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    bundle: &str,
    full: Option<&Registration>,
) -> Result<bool, Error> {
    let live = api
        .get_opt(name)
        .await
        .map_err(|e| Error::Kube("reading the MutatingWebhookConfiguration", e))?;
    if let Some(r) = full {
        let want = configuration(r, Some(bundle));
        let same = live.as_ref().is_some_and(|l| l.webhooks == want.webhooks);
        if same {
            return Ok(false);
        }
        let want = configuration_value(r, Some(bundle))?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        // Applying an existing configuration needs `patch` on it by name; creating one
        // needs `create`, which a least-privilege operator lacks: it says how to install it.
        let created = live.is_none();
        api.patch(name, &params, &Patch::Apply(want))
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 403 && created => Error::NotInstalled(format!(
                    "MutatingWebhookConfiguration {name} does not exist and the operator may not \
                     create it ({}): install it with `sidecar-operator webhook-config --url URL \
                     | kubectl apply -f -` (same flags as run), or grant create",
                    s.message
                )),
                e => Error::Kube("applying the MutatingWebhookConfiguration", e),
            })?;
        return Ok(true);
    }
    let Some(live) = live else {
        return Err(Error::NotInstalled(format!(
            "MutatingWebhookConfiguration {name} not found: install it with \
             deploy/40-webhook.yaml (or the Helm chart), or run with --webhook-url beside a cluster"
        )));
    };
    let hooks = live.webhooks.unwrap_or_default();
    let Some(index) = hooks.iter().position(|w| w.name == WEBHOOK_NAME) else {
        return Err(Error::NotInstalled(format!(
            "MutatingWebhookConfiguration {name} has no webhook named {WEBHOOK_NAME}"
        )));
    };
    let current = hooks[index]
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| b.0.as_slice());
    if current == Some(bundle.as_bytes()) {
        return Ok(false);
    }
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bundle);
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": format!("/webhooks/{index}/name"), "value": WEBHOOK_NAME},
        {"op": "add", "path": format!("/webhooks/{index}/clientConfig/caBundle"), "value": encoded},
    ]))
    .map_err(|e| Error::Encode(e.to_string()))?;
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|e| Error::Kube("setting the webhook's caBundle", e))?;
    Ok(true)
}

/// Parses `--webhook-namespace-selector`: comma-separated `key=value`, `key!=value`,
/// `key in (a,b)`, `key notin (a,b)`, `key` (exists) and `!key` (does not exist) terms, the
/// label-selector syntax of kubectl and the API server.
pub fn parse_namespace_selector(text: &str) -> Result<Vec<LabelSelectorRequirement>, String> {
    let mut out = Vec::new();
    for term in split_terms(text)? {
        let req = |key: &str, op: &str, values: Option<Vec<String>>| LabelSelectorRequirement {
            key: key.trim().to_string(),
            operator: op.into(),
            values,
        };
        let r = if let Some((k, op, values)) = set_term(term) {
            if values.iter().any(String::is_empty) || values.is_empty() {
                return Err(format!("{term:?} lists an empty value: use key in (a,b)"));
            }
            req(k, op, Some(values))
        } else if let Some((k, v)) = term.split_once("!=") {
            req(k, "NotIn", Some(vec![v.trim().to_string()]))
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            req(k, "In", Some(vec![v.trim().to_string()]))
        } else if let Some(k) = term.strip_prefix('!') {
            req(k, "DoesNotExist", None)
        } else {
            req(term, "Exists", None)
        };
        if r.key.is_empty() || r.key.contains(char::is_whitespace) {
            return Err(format!(
                "{term:?} is not a selector term: use key=value, key!=value, key in (a,b), key notin (a,b), key or !key"
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// The trimmed, non-empty terms of a selector: split at commas outside parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let (mut terms, mut depth, mut from) = (Vec::new(), 0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("{text:?} closes a parenthesis it never opened"))?;
            }
            ',' if depth == 0 => {
                terms.push(&text[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{text:?} leaves a parenthesis open"));
    }
    terms.push(&text[from..]);
    Ok(terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect())
}

/// `key in (a,b)` or `key notin (a,b)`: the key, the operator and the values.
fn set_term(term: &str) -> Option<(&str, &'static str, Vec<String>)> {
    let (head, list) = term.strip_suffix(')')?.split_once('(')?;
    let mut words = head.split_whitespace();
    let (key, op) = (words.next()?, words.next()?);
    if words.next().is_some() {
        return None;
    }
    let op = match op {
        "in" => "In",
        "notin" => "NotIn",
        _ => return None,
    };
    Some((
        key,
        op,
        list.split(',').map(|v| v.trim().to_string()).collect(),
    ))
}

#[cfg(test)]
#[path = "registration_tests.rs"]
mod tests;
