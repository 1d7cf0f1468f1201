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
//! Output: stdout is a YAML stream, the report in comments and one document per sidecar Pod
//! and, for Container-mode policies, one per Pod as the admission webhook would let it in
//! (the policies' containers, volumes and metadata added, like `istioctl kube-inject`);
//! problems go to stderr as `FILE:LINE: KIND NAMESPACE/NAME: FIELD: message`. Exit status 0
//! when every input is valid, 1 otherwise.
//!
//! What cannot be known offline is replaced by placeholders, and the output says so: main Pods
//! without `metadata.uid` get `00000000-0000-0000-0000-00000000000N`, and a `SameNode` sidecar
//! of a Pod that is not scheduled (no `spec.nodeName`) is shown pinned to node `<unscheduled>`
//! (the operator waits until the main Pod is bound and then uses its node).
//!
//! The parts: `read` turns files into [`Inputs`] (policies validated with
//! [`sidecar_api::validate_object`] and projected as the controller does, Pods, would-be Pods of
//! workloads), `documents` splits a YAML stream keeping line numbers, and `report` writes the
//! preview.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use sidecar_planner::PolicyView;

mod documents;
mod read;
mod report;

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
        read::read_path(path, &args.namespace, &mut inputs);
    }
    for line in &inputs.log {
        writeln!(err, "{line}")?;
    }
    let (sidecars, injected) = report::report(&inputs, out)?;
    let policies = inputs.policies.len();
    if inputs.errors == 0 {
        writeln!(
            err,
            "check: OK: {policies} SidecarPolic{} valid, {} Pod{}, {sidecars} sidecar Pod{} \
             would be created, {injected} Pod{} injected",
            if policies == 1 { "y" } else { "ies" },
            inputs.pods.len(),
            plural(inputs.pods.len()),
            plural(sidecars),
            plural(injected),
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

#[cfg(test)]
mod tests;
