//! `sidecar-operator check -f FILE [-f FILE ...]`: validates SidecarPolicies offline, with the
//! checks the API server makes at admission ([`sidecar_api::validate_object`]), and previews
//! what the operator would do with the Pods in the same files: which Pods each policy selects,
//! and the sidecar Pods it would create, as YAML ([`sidecar_planner::render()`], the function the
//! controller uses).
//!
//! Input: YAML or JSON files (`-` is standard input, a directory means its `*.yaml`, `*.yml`
//! and `*.json` files), each with any number of documents. Read are `SidecarPolicy`, `Pod`,
//! `List` (its items), and workloads, whose Pod template stands for one would-be Pod named
//! `<workload>-example` (`<workload>-0` for a StatefulSet): Deployment, ReplicaSet,
//! StatefulSet, DaemonSet, ReplicationController, Job, CronJob. Other kinds are skipped with a
//! note on stderr. Objects without a namespace get `--namespace` (default `default`).
//!
//! Output: stdout is a YAML stream, the report in comments and one document per sidecar Pod;
//! problems go to stderr as `FILE:LINE: KIND NAMESPACE/NAME: FIELD: message`. Exit status 0
//! when every input is valid, 1 otherwise.
//!
//! What cannot be known offline is replaced by placeholders, and the output says so: main Pods
//! without `metadata.uid` get `00000000-0000-0000-0000-00000000000N`, and a `SameNode` sidecar
//! of a Pod that is not scheduled (no `spec.nodeName`) is shown pinned to node `<unscheduled>`
//! (the operator waits until the main Pod is bound and then uses its node).

use std::fmt;
use std::io::{self, Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize as _;
use serde_json::Value;
use sidecar_api::constants::{ANNOTATION_INJECT, INJECT_DISABLED, KIND as POLICY_KIND};
use sidecar_api::validate::RULES_NOT_CHECKED;
use sidecar_api::{SidecarPolicy, validate_object};
use sidecar_planner::{Ineligible, PodView, PolicyView, eligibility, render, sidecar_name};

/// Node shown in `SameNode` sidecars of main Pods that are not scheduled yet.
pub const UNSCHEDULED_NODE: &str = "<unscheduled>";

/// Arguments of `check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// YAML or JSON file with SidecarPolicies, Pods and/or workloads (repeatable; `-` reads
    /// standard input; a directory reads its *.yaml, *.yml and *.json files).
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace of objects that do not set one.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// Where an object was read: file and line of its document.
#[derive(Debug, Clone)]
struct Source {
    file: String,
    line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// `Kind namespace/name`, as in messages.
fn object_name(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind} {namespace}/{name}")
}

struct PolicyInput {
    source: Source,
    view: PolicyView,
}

struct PodInput {
    source: Source,
    /// `Deployment web` for would-be Pods of workloads.
    origin: Option<String>,
    pod: Pod,
    uid_is_placeholder: bool,
}

impl PodInput {
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }
}

/// Everything read from the files, and what went wrong on the way.
#[derive(Default)]
struct Inputs {
    policies: Vec<PolicyInput>,
    pods: Vec<PodInput>,
    /// Errors and notes, in the order found, with their `error: ` / `note: ` prefix.
    log: Vec<String>,
    errors: usize,
    files: usize,
}

impl Inputs {
    fn error(&mut self, message: String) {
        self.errors += 1;
        self.log.push(format!("error: {message}"));
    }

    fn note(&mut self, message: String) {
        self.log.push(format!("note: {message}"));
    }
}

/// Runs `check`, writing the report to `out` and problems to `err`. `Ok(true)` when every
/// input was valid.
pub fn run(args: &CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<bool> {
    let mut inputs = Inputs::default();
    for path in &args.files {
        read_path(path, &args.namespace, &mut inputs);
    }
    for line in &inputs.log {
        writeln!(err, "{line}")?;
    }
    let sidecars = report(&inputs, out)?;
    let policies = inputs.policies.len();
    if inputs.errors == 0 {
        writeln!(
            err,
            "check: OK: {policies} SidecarPolic{} valid, {} Pod{}, {sidecars} sidecar Pod{} \
             would be created",
            if policies == 1 { "y" } else { "ies" },
            inputs.pods.len(),
            plural(inputs.pods.len()),
            plural(sidecars),
        )?;
    } else {
        writeln!(
            err,
            "check: FAILED: {} error{}",
            inputs.errors,
            plural(inputs.errors),
        )?;
    }
    Ok(inputs.errors == 0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn read_path(path: &Path, namespace: &str, inputs: &mut Inputs) {
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

/// The documents of a YAML stream: `(line of the document's first line, text)`. The text is
/// preceded by blank lines so that parser positions are positions in the file.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        let is_start = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        let is_end = line == "..." || line.starts_with("... ");
        if is_start || is_end {
            docs.push((start, std::mem::take(&mut current)));
            current = "\n".repeat(i);
            start = i;
            if is_start {
                // Keep content after the marker (`--- {a: 1}`) at its column.
                current.push_str("   ");
                current.push_str(&line[3..]);
            }
            current.push('\n');
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs.into_iter()
        .filter(|(_, doc)| {
            doc.lines().any(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('#')
            })
        })
        .map(|(start, doc)| {
            // Report the first line with content, not the `---` or a comment above it.
            let first = doc
                .lines()
                .enumerate()
                .skip(start)
                .find(|(_, l)| {
                    let t = l.trim();
                    !t.is_empty() && !t.starts_with('#') && t != "---"
                })
                .map_or(start, |(i, _)| i);
            (first + 1, doc)
        })
        .collect()
}

fn read_text(file: &str, text: &str, namespace: &str, inputs: &mut Inputs) {
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

/// Writes the report; returns the number of sidecar Pods shown.
fn report(inputs: &Inputs, out: &mut dyn Write) -> io::Result<usize> {
    writeln!(
        out,
        "# sidecar-operator check: offline preview, no cluster contacted."
    )?;
    writeln!(
        out,
        "# {} SidecarPolic{} valid, {} Pod{} (from Pods and workload templates) in {} file{}.",
        inputs.policies.len(),
        if inputs.policies.len() == 1 {
            "y"
        } else {
            "ies"
        },
        inputs.pods.len(),
        plural(inputs.pods.len()),
        inputs.files,
        plural(inputs.files),
    )?;
    let mut shown = 0;
    for policy in &inputs.policies {
        shown += report_policy(policy, &inputs.pods, out)?;
    }
    Ok(shown)
}

fn describe_pod(pod: &PodInput) -> String {
    let origin = pod
        .origin
        .as_ref()
        .map_or(String::new(), |o| format!("{o}, "));
    format!(
        "{} ({origin}{})",
        object_name("Pod", pod.namespace(), pod.name()),
        pod.source
    )
}

fn report_policy(
    policy: &PolicyInput,
    pods: &[PodInput],
    out: &mut dyn Write,
) -> io::Result<usize> {
    let view = &policy.view;
    let spec = &view.policy.spec;
    let strategy = &spec.update_strategy;
    let max_unavailable = match &strategy.max_unavailable {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n.to_string(),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
    };
    writeln!(out)?;
    writeln!(
        out,
        "# {} ({}): valid",
        object_name(POLICY_KIND, &view.namespace, &view.name),
        policy.source
    )?;
    writeln!(
        out,
        "#   placement {}, updateStrategy {} (maxUnavailable {max_unavailable}), template hash \
         {}{}",
        view.placement().as_str(),
        view.strategy().as_str(),
        view.hash,
        if view.paused() { ", PAUSED" } else { "" },
    )?;
    let in_namespace: Vec<&PodInput> = pods
        .iter()
        .filter(|p| p.namespace() == view.namespace)
        .collect();
    let mut wanted = Vec::new();
    let mut lines = Vec::new();
    for pod in &in_namespace {
        let Some(mut main) = PodView::from_pod(&pod.pod) else {
            continue;
        };
        let unscheduled = main.node_name.is_none();
        if unscheduled && view.placement() == sidecar_api::Placement::SameNode {
            main.node_name = Some(UNSCHEDULED_NODE.to_owned());
        }
        let sidecar = object_name(
            "Pod",
            &view.namespace,
            &sidecar_name(&main.name, &view.name),
        );
        let outcome = match eligibility(&main, view) {
            Err(Ineligible::NotSelected) => continue,
            Ok(()) if unscheduled && view.placement() == sidecar_api::Placement::SameNode => {
                wanted.push((*pod, main));
                format!(
                    "sidecar {sidecar} once the Pod is scheduled (placement SameNode; shown with \
                     node {UNSCHEDULED_NODE})"
                )
            }
            Ok(()) => {
                wanted.push((*pod, main));
                format!("sidecar {sidecar}")
            }
            Err(Ineligible::OptedOut) => {
                format!("no sidecar: opted out ({ANNOTATION_INJECT}={INJECT_DISABLED})")
            }
            Err(Ineligible::Paused) => "no sidecar while the policy is paused".to_owned(),
            Err(Ineligible::IsSidecar) => "no sidecar: it is itself a sidecar".to_owned(),
            Err(Ineligible::Terminating) => "no sidecar: the Pod is terminating".to_owned(),
            Err(Ineligible::Terminal) => {
                "no sidecar: the Pod has finished (Succeeded or Failed)".to_owned()
            }
            Err(other) => format!("no sidecar: {}", other.as_str()),
        };
        lines.push(format!("#     {}: {outcome}", describe_pod(pod)));
    }
    writeln!(
        out,
        "#   selects {} of {} Pod{} in namespace {}{}",
        lines.len(),
        in_namespace.len(),
        plural(in_namespace.len()),
        view.namespace,
        if lines.is_empty() { "" } else { ":" }
    )?;
    for line in &lines {
        writeln!(out, "{line}")?;
    }
    for (pod, main) in &wanted {
        let sidecar = render(main, view);
        let yaml = serde_yaml_ng::to_string(&sidecar).map_err(io::Error::other)?;
        writeln!(out, "---")?;
        writeln!(
            out,
            "# Sidecar of {} for {}.",
            object_name("Pod", &main.namespace, &main.name),
            object_name(POLICY_KIND, &view.namespace, &view.name)
        )?;
        if pod.uid_is_placeholder {
            writeln!(
                out,
                "# Placeholder: main Pod uid {} (the API server assigns the real one).",
                main.uid
            )?;
        }
        if main.node_name.as_deref() == Some(UNSCHEDULED_NODE) {
            writeln!(
                out,
                "# Placeholder: node {UNSCHEDULED_NODE}. The main Pod has no spec.nodeName; with \
                 placement SameNode the operator waits until it is scheduled, then pins the \
                 sidecar to its node."
            )?;
        } else if main.node_name.is_none() {
            writeln!(
                out,
                "# The main Pod is not scheduled: placement Any creates the sidecar at once, with \
                 MAIN_POD_NODE empty."
            )?;
        }
        out.write_all(yaml.as_bytes())?;
    }
    Ok(wanted.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_line_numbers() {
        let text = "# comment\n---\na: 1\n---\n\n# x\nb: 2\n...\n---\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, 3);
        assert_eq!(docs[1].0, 7);
        let v: Value = serde_yaml_ng::from_str(&docs[1].1).unwrap();
        assert_eq!(v["b"], 2);
    }

    #[test]
    fn yaml_errors_point_at_the_line_in_the_file() {
        let mut inputs = Inputs::default();
        read_text(
            "f.yaml",
            "kind: ConfigMap\n---\nb: [1,\n",
            "default",
            &mut inputs,
        );
        assert_eq!(inputs.errors, 1, "{:?}", inputs.log);
        assert!(
            inputs.log[1].starts_with("error: f.yaml:4:1: invalid YAML: "),
            "{:?}",
            inputs.log
        );
    }

    #[test]
    fn content_after_the_document_marker_is_read() {
        let docs = split_documents("--- {kind: Pod}\n");
        let v: Value = serde_yaml_ng::from_str(&docs[0].1).unwrap();
        assert_eq!(v["kind"], "Pod");
        assert_eq!(docs[0].0, 1);
    }
}
