//! Reading the input files into [`Inputs`].

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize as _;
use serde_json::Value;
use sidecar_api::constants::KIND as POLICY_KIND;
use sidecar_api::validate::RULES_NOT_CHECKED;
use sidecar_api::{SidecarPolicy, validate_object};
use sidecar_planner::PolicyView;

use super::documents::split_documents;
use super::{Inputs, PodInput, PolicyInput, Source, object_name};

pub(super) fn read_path(path: &Path, namespace: &str, inputs: &mut Inputs) {
    if path == Path::new("-") {
        let mut text = String::new();
        match io::stdin().read_to_string(&mut text) {
            Ok(_) => read_text("<stdin>", &text, namespace, inputs),
            Err(e) => inputs.error(format!("<stdin>: cannot read: {e}")),
        }
        return;
    }
    if path.is_dir() {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                inputs.error(format!("{}: cannot read directory: {e}", path.display()));
                return;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            })
            .collect();
        files.sort();
        if files.is_empty() {
            inputs.note(format!(
                "{}: no *.yaml, *.yml or *.json files",
                path.display()
            ));
        }
        for file in files {
            read_path(&file, namespace, inputs);
        }
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => read_text(&path.display().to_string(), &text, namespace, inputs),
        Err(e) => inputs.error(format!("{}: cannot read: {e}", path.display())),
    }
}

pub(super) fn read_text(file: &str, text: &str, namespace: &str, inputs: &mut Inputs) {
    inputs.files += 1;
    for (line, doc) in split_documents(text) {
        let source = Source {
            file: file.to_owned(),
            line,
        };
        let value = match serde_yaml_ng::Deserializer::from_str(&doc)
            .next()
            .map(Value::deserialize)
        {
            Some(Ok(value)) => value,
            Some(Err(e)) => {
                let at = match e.location() {
                    Some(loc) => format!("{file}:{}:{}", loc.line(), loc.column()),
                    None => source.to_string(),
                };
                inputs.error(format!("{at}: invalid YAML: {e}"));
                continue;
            }
            None => continue,
        };
        read_object(&source, value, namespace, inputs);
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn read_object(source: &Source, value: Value, namespace: &str, inputs: &mut Inputs) {
    if value.is_null() {
        return;
    }
    if !value.is_object() {
        inputs.error(format!(
            "{source}: not a Kubernetes object (a YAML mapping with apiVersion and kind)"
        ));
        return;
    }
    let kind = str_at(&value, "/kind").unwrap_or_default().to_owned();
    let name = str_at(&value, "/metadata/name")
        .or_else(|| str_at(&value, "/metadata/generateName"))
        .unwrap_or("<unnamed>")
        .to_owned();
    let ns = str_at(&value, "/metadata/namespace")
        .unwrap_or(namespace)
        .to_owned();
    match kind.as_str() {
        "" => inputs.error(format!(
            "{source}: kind: Required value: not a Kubernetes object"
        )),
        POLICY_KIND => read_policy(source, value, &ns, &name, inputs),
        "Pod" => read_pod(source, value, &ns, &name, inputs),
        "List" => {
            let items = match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => Vec::new(),
            };
            for item in items {
                read_object(source, item, namespace, inputs);
            }
        }
        kind => match template_pointer(kind) {
            Some(pointer) => read_workload(source, &value, kind, pointer, &ns, &name, inputs),
            None => inputs.note(format!(
                "{source}: ignoring {} (check reads SidecarPolicies, Pods and workloads)",
                object_name(kind, &ns, &name)
            )),
        },
    }
}

/// Where a workload kind keeps its Pod template.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicationController"
        | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn read_policy(source: &Source, mut value: Value, ns: &str, name: &str, inputs: &mut Inputs) {
    let who = object_name(POLICY_KIND, ns, name);
    let errors = validate_object(&value);
    if !errors.is_empty() {
        for e in errors {
            if e.detail == RULES_NOT_CHECKED {
                inputs.note(format!(
                    "{source}: {who}: the validation rules (CEL) were not checked because of the \
                     errors above, as on the API server: fix them and check again"
                ));
            } else {
                inputs.error(format!("{source}: {who}: {e}"));
            }
        }
        return;
    }
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), ns.into());
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            // generateName only: the server would append a random suffix.
            meta.insert("name".into(), format!("{name}example").into());
        }
    }
    let mut policy: SidecarPolicy = match serde_json::from_value(value) {
        Ok(policy) => policy,
        Err(e) => {
            inputs.error(format!("{source}: {who}: not a valid {POLICY_KIND}: {e}"));
            return;
        }
    };
    policy.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    let view = PolicyView::new(Arc::new(policy));
    if let Err(e) = &view.selector {
        inputs.error(format!(
            "{source}: {who}: the operator cannot act on this policy: {e}"
        ));
        return;
    }
    if let Some(i) = inputs
        .policies
        .iter()
        .position(|p| p.view.namespace == view.namespace && p.view.name == view.name)
    {
        let earlier = inputs.policies.remove(i);
        inputs.note(format!(
            "{source}: {who} replaces the one at {} (applied in this order, the last one wins)",
            earlier.source
        ));
    }
    inputs.policies.push(PolicyInput {
        source: source.clone(),
        view,
    });
}

fn read_pod(source: &Source, value: Value, ns: &str, name: &str, inputs: &mut Inputs) {
    let who = object_name("Pod", ns, name);
    let mut pod: Pod = match serde_json::from_value(value) {
        Ok(pod) => pod,
        Err(e) => {
            inputs.error(format!("{source}: {who}: not a valid Pod: {e}"));
            return;
        }
    };
    if pod.metadata.name.as_deref().is_none_or(str::is_empty) {
        match pod.metadata.generate_name.clone().filter(|g| !g.is_empty()) {
            Some(prefix) => pod.metadata.name = Some(format!("{prefix}example")),
            None => {
                inputs.error(format!(
                    "{source}: {who}: metadata.name: Required value: name or generateName is \
                     required"
                ));
                return;
            }
        }
    }
    pod.metadata.namespace = Some(ns.to_owned());
    add_pod(source, None, pod, inputs);
}

fn read_workload(
    source: &Source,
    value: &Value,
    kind: &str,
    pointer: &str,
    ns: &str,
    name: &str,
    inputs: &mut Inputs,
) {
    let who = object_name(kind, ns, name);
    let field = pointer.trim_start_matches('/').replace('/', ".");
    let Some(template) = value.pointer(pointer).filter(|t| !t.is_null()) else {
        inputs.error(format!("{source}: {who}: {field}: Required value"));
        return;
    };
    let template: PodTemplateSpec = match serde_json::from_value(template.clone()) {
        Ok(t) => t,
        Err(e) => {
            inputs.error(format!(
                "{source}: {who}: {field}: not a valid Pod template: {e}"
            ));
            return;
        }
    };
    let pod_name = if kind == "StatefulSet" {
        format!("{name}-0")
    } else {
        format!("{name}-example")
    };
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    // Labels the workload controllers add, which selectors may use.
    match kind {
        "Job" => {
            labels.insert("job-name".into(), name.into());
            labels.insert("batch.kubernetes.io/job-name".into(), name.into());
        }
        "StatefulSet" => {
            labels.insert(
                "statefulset.kubernetes.io/pod-name".into(),
                pod_name.clone(),
            );
            labels.insert("apps.kubernetes.io/pod-index".into(), "0".into());
        }
        _ => {}
    }
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: Some(ns.to_owned()),
            labels: Some(labels),
            annotations: meta.annotations,
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    };
    add_pod(source, Some(format!("{kind} {name}")), pod, inputs);
}

fn add_pod(source: &Source, origin: Option<String>, mut pod: Pod, inputs: &mut Inputs) {
    // Two inputs naming the same Pod (say Deployment `web` and Job `web`): keep both.
    let taken = |pod: &Pod, inputs: &Inputs| {
        inputs.pods.iter().any(|p| {
            p.pod.metadata.namespace == pod.metadata.namespace
                && p.pod.metadata.name == pod.metadata.name
        })
    };
    let base = pod.metadata.name.clone().unwrap_or_default();
    let mut n = 2;
    while taken(&pod, inputs) {
        pod.metadata.name = Some(format!("{base}-{n}"));
        n += 1;
    }
    let uid_is_placeholder = pod.metadata.uid.as_deref().is_none_or(str::is_empty);
    if uid_is_placeholder {
        pod.metadata.uid = Some(format!(
            "00000000-0000-0000-0000-{:012x}",
            inputs.pods.len() + 1
        ));
    }
    inputs.pods.push(PodInput {
        source: source.clone(),
        origin,
        pod,
        uid_is_placeholder,
    });
}
