//! Container mode: what the admission webhook adds to a Pod being created. Pure: a Pod and
//! the policies that may want it in, the mutated Pod, what was added where
//! ([`Additions`]) and a report out; the webhook only decodes, calls [`inject`] and encodes
//! the additions as a JSON patch.
//!
//! Rules, per policy in order of precedence (see [`PolicyView::outranks`]: priority, then
//! SidecarPolicy before ClusterSidecarPolicy, then name; deterministic whatever the cache's
//! order):
//! - The whole Pod is left alone when it opts out (`sidecars.dev/inject: "false"`), is
//!   one of the operator's own Pods (a companion sidecar, `app.kubernetes.io/managed-by`), or
//!   is a mirror Pod (`kubernetes.io/config.mirror`: its kubelet runs the static Pod from a
//!   file, so sidecars added to the API object would never run, yet be recorded as there).
//! - A policy takes part when it selects the Pod's labels, is not paused and its spec is
//!   one the operator can act on.
//! - A policy the Pod already records (annotation [`ANNOTATION_INJECTED`]) is not applied
//!   again: injection is idempotent, so a reinvocation (`reinvocationPolicy: IfNeeded`)
//!   changes nothing.
//! - Nothing the Pod has is ever overridden: a policy whose init container, container or
//!   volume name the Pod already uses is skipped for this Pod and reported; one whose name
//!   a policy before it adds loses to that policy (a conflict, reported naming the winner); template labels and annotations are added only where the Pod has none of
//!   that key.
//! - The template's init containers (native sidecars with `restartPolicy: Always`, and
//!   plain init containers) go before the Pod's own init containers, so native sidecars
//!   run while those do; its containers after the Pod's; its volumes after the Pod's.
//! - A policy whose additions the namespace's Pod Security level would refuse (the Pod
//!   as it is being accepted) is skipped for this Pod and reported (see
//!   [`crate::pod_security`]): an injection never turns into a refused Pod.
//! - The record annotation lists `policy=templateHash` for every policy injected.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Volume};
use sidecar_api::constants::{
    ANNOTATION_INJECT, ANNOTATION_MIRROR, INJECT_DISABLED, LABEL_MANAGED_BY, MANAGED_BY_VALUE,
};

use crate::labels::Labels;
use crate::pod_security::{Level, refusal};
use crate::view::PolicyView;

/// Annotations on a Pod recording each injection and each skipped policy (defined with the
/// API's other names).
pub use sidecar_api::constants::{ANNOTATION_INJECTED, ANNOTATION_SKIPPED};

/// Why a Pod was left alone as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untouched {
    /// Annotated `sidecars.dev/inject: "false"`.
    OptedOut,
    /// One of the operator's own Pods.
    Operator,
    /// A mirror Pod (a kubelet's static Pod).
    Mirror,
}

/// Why one policy was not applied to the Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The Pod already records this policy (a reinvocation): nothing to do, nothing to
    /// report.
    AlreadyInjected,
    /// The Pod already has an init container, container or volume of this name:
    /// `(kind, name)`, the kind being the template's.
    NameTaken(&'static str, String),
    /// A policy that outranks this one (see [`PolicyView::outranks`]) adds an init
    /// container, container or volume of this name: `(kind, name, winner's id)`.
    Conflict(&'static str, String, String),
    /// The namespace would refuse the Pod with the policy's sidecars (its Pod Security
    /// level, or a server-side dry run): why.
    RefusedByNamespace(String),
}

/// The [`ANNOTATION_SKIPPED`] token of [`Skip::RefusedByNamespace`].
pub const REFUSED_BY_NAMESPACE: &str = "refused-by-namespace";

impl Skip {
    /// Whether the skip is worth reporting (on the policy, in an Event).
    pub fn is_problem(&self) -> bool {
        !matches!(self, Skip::AlreadyInjected)
    }

    /// The `kind/name` token of a [`ANNOTATION_SKIPPED`] entry; `None` for a skip that is
    /// not a problem.
    pub fn token(&self) -> Option<String> {
        let kind = |k: &str| match k {
            "init container" => "initContainer".to_string(),
            other => other.to_string(),
        };
        match self {
            Skip::AlreadyInjected => None,
            Skip::NameTaken(k, name) => Some(format!("{}/{name}", kind(k))),
            Skip::Conflict(k, name, winner) => Some(format!("{}/{name}@{winner}", kind(k))),
            Skip::RefusedByNamespace(_) => Some(REFUSED_BY_NAMESPACE.into()),
        }
    }

    /// A sentence for status and Events.
    pub fn message(&self) -> String {
        match self {
            Skip::AlreadyInjected => "already injected".into(),
            Skip::NameTaken(kind, name) => format!(
                "the Pod already has a container or volume named {name:?}, the name of the policy's {kind}; the policy's sidecars are not injected into it (rename one of them)"
            ),
            Skip::Conflict(kind, name, winner) => format!(
                "{} adds a container or volume named {name:?} too (the policy's {kind}) and wins (spec.priority, then SidecarPolicy before ClusterSidecarPolicy, then name); this policy's sidecars are not injected",
                crate::cluster::describe(winner)
            ),
            Skip::RefusedByNamespace(why) => format!(
                "{why}; the Pod is created without this policy's sidecars (make the template comply, or change the namespace)"
            ),
        }
    }
}

/// What an injection adds to the Pod, by where it goes: exactly what turns the Pod into
/// [`Injection::pod`]. The webhook's patch adds these one by one, so that it touches nothing
/// else of the Pod as the API server sent it (fields the operator's types do not know
/// included).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Additions {
    /// Init containers, in this order before the Pod's own.
    pub init_containers: Vec<Container>,
    /// Containers, in this order after the Pod's own.
    pub containers: Vec<Container>,
    /// Volumes, in this order after the Pod's own.
    pub volumes: Vec<Volume>,
    /// Labels the Pod did not have.
    pub labels: BTreeMap<String, String>,
    /// Annotations the Pod did not have, or had with another value (the records
    /// [`ANNOTATION_INJECTED`] and [`ANNOTATION_SKIPPED`]).
    pub annotations: BTreeMap<String, String>,
}

impl Additions {
    /// Nothing is added.
    pub fn is_empty(&self) -> bool {
        self.init_containers.is_empty()
            && self.containers.is_empty()
            && self.volumes.is_empty()
            && self.labels.is_empty()
            && self.annotations.is_empty()
    }

    /// What `after`, an injection of `before`, adds to it. An injection only puts init
    /// containers before the Pod's own, containers and volumes after the Pod's own, and
    /// labels and annotations beside them.
    fn between(before: &Pod, after: &Pod) -> Additions {
        let (b, a) = (before.spec.as_ref(), after.spec.as_ref());
        let inits = |s: Option<&PodSpec>| {
            s.and_then(|s| s.init_containers.as_deref())
                .unwrap_or_default()
                .to_vec()
        };
        let volumes = |s: Option<&PodSpec>| {
            s.and_then(|s| s.volumes.as_deref())
                .unwrap_or_default()
                .to_vec()
        };
        let containers = |s: Option<&PodSpec>| s.map(|s| s.containers.clone()).unwrap_or_default();
        let mut init_containers = inits(a);
        init_containers.truncate(init_containers.len().saturating_sub(inits(b).len()));
        fn tail<T>(mut after: Vec<T>, before: usize) -> Vec<T> {
            after.split_off(before.min(after.len()))
        }
        let changed = |b: Option<&BTreeMap<String, String>>,
                       a: Option<&BTreeMap<String, String>>| {
            a.into_iter()
                .flatten()
                .filter(|(k, v)| b.and_then(|b| b.get(*k)) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Additions {
            init_containers,
            containers: tail(containers(a), containers(b).len()),
            volumes: tail(volumes(a), volumes(b).len()),
            labels: changed(
                before.metadata.labels.as_ref(),
                after.metadata.labels.as_ref(),
            ),
            annotations: changed(
                before.metadata.annotations.as_ref(),
                after.metadata.annotations.as_ref(),
            ),
        }
    }
}

/// The outcome of [`inject`].
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// The Pod with the sidecars in; `None` when nothing changes.
    pub pod: Option<Pod>,
    /// What [`Injection::pod`] adds to the Pod (empty when it is `None`).
    pub added: Additions,
    /// The policies applied, with the template hash each was applied at.
    pub injected: Vec<(String, String)>,
    /// The policies that select the Pod but were not applied, and why.
    pub skipped: Vec<(String, Skip)>,
    /// Set when the Pod was left alone as a whole.
    pub untouched: Option<Untouched>,
}

/// The policies' sidecars added to `pod` (see the module doc). `policies` are the
/// Container-mode policies of the Pod's namespace, in any order; the namespace enforces no
/// Pod Security level (see [`inject_in`]).
pub fn inject(pod: &Pod, policies: &[&PolicyView]) -> Injection {
    inject_in(pod, policies, Level::Privileged)
}

/// [`inject`] in a namespace that enforces Pod Security `level`.
pub fn inject_in(pod: &Pod, policies: &[&PolicyView], level: Level) -> Injection {
    let mut out = Injection {
        pod: None,
        added: Additions::default(),
        injected: Vec::new(),
        skipped: Vec::new(),
        untouched: untouched(pod),
    };
    if out.untouched.is_some() {
        return out;
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let selected = Labels::from(&labels);
    let mut wanted: Vec<&PolicyView> = policies
        .iter()
        .copied()
        .filter(|p| !p.deleting && !p.paused() && p.selects(&selected))
        .collect();
    // Winners first: a name two policies add goes to the one that outranks the other.
    wanted.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
    let mut record = recorded(pod);
    let mut new = pod.clone();
    let mut added_init = Vec::new();
    // Names added so far, with the policy that added them (containers, volumes).
    let mut added_by: BTreeMap<(bool, String), String> = BTreeMap::new();
    // On a reinvocation, the names of the policies the Pod records are theirs already.
    for p in wanted
        .iter()
        .filter(|p| record.iter().any(|(n, _)| *n == p.name))
    {
        added_by.extend(template_names(p).map(|k| (k, p.name.clone())));
    }
    for p in wanted {
        if record.iter().any(|(name, _)| *name == p.name) {
            out.skipped.push((p.name.clone(), Skip::AlreadyInjected));
            continue;
        }
        let template = &p.policy.spec.template;
        let tspec = template.spec.clone().unwrap_or_default();
        if let Some(taken) = name_taken(new.spec.as_ref(), &added_init, &tspec) {
            let skip = match taken {
                Skip::NameTaken(kind, name) => {
                    match added_by.get(&(kind == "volume", name.clone())) {
                        Some(winner) => Skip::Conflict(kind, name, winner.clone()),
                        None => Skip::NameTaken(kind, name),
                    }
                }
                other => other,
            };
            out.skipped.push((p.name.clone(), skip));
            continue;
        }
        // Pod Security first, judged here (the more precise reason), then what a dry run
        // in the namespace found (quota, LimitRange, webhooks, admission policies).
        let mut with = None;
        if level != Level::Privileged {
            let mut w = new.clone();
            let mut w_init = added_init.clone();
            add_template(&mut w, &mut w_init, template, tspec.clone());
            // Judged as the API server will: with every init container in place.
            let (before, after) = (complete(&new, &added_init), complete(&w, &w_init));
            if let Some(why) = refusal(level, &before, &after) {
                out.skipped
                    .push((p.name.clone(), Skip::RefusedByNamespace(why)));
                continue;
            }
            with = Some((w, w_init));
        }
        if p.injection_refused_here() {
            let why = format!(
                "a server-side dry run of a Pod with this policy's sidecars in namespace {} was refused (quota, LimitRange, a webhook or an admission policy; the policy's Degraded condition quotes the API server)",
                p.namespace
            );
            out.skipped
                .push((p.name.clone(), Skip::RefusedByNamespace(why)));
            continue;
        }
        match with {
            Some((w, w_init)) => (new, added_init) = (w, w_init),
            None => add_template(&mut new, &mut added_init, template, tspec),
        }
        added_by.extend(template_names(p).map(|k| (k, p.name.clone())));
        record.push((p.name.clone(), p.hash.clone()));
        out.injected.push((p.name.clone(), p.hash.clone()));
    }
    let skips: Vec<String> = out
        .skipped
        .iter()
        .filter_map(|(p, s)| s.token().map(|t| format!("{p}={t}")))
        .collect();
    if !skips.is_empty() {
        // Recorded on the Pod, so the policy's status can say which Pods it missed and why.
        new.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_SKIPPED.into(), skips.join(","));
    }
    if out.injected.is_empty() {
        if !skips.is_empty() && pod_annotation(pod, ANNOTATION_SKIPPED) != Some(&skips.join(",")) {
            out.added = Additions::between(pod, &new);
            out.pod = Some(new);
        }
        return out;
    }
    let spec = new.spec.get_or_insert_with(PodSpec::default);
    let own = spec.init_containers.take().unwrap_or_default();
    added_init.extend(own);
    if !added_init.is_empty() {
        spec.init_containers = Some(added_init);
    }
    let text = record
        .iter()
        .map(|(n, h)| format!("{n}={h}"))
        .collect::<Vec<_>>()
        .join(",");
    new.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_INJECTED.into(), text);
    out.added = Additions::between(pod, &new);
    out.pod = Some(new);
    out
}

/// Adds what `template` (whose spec is `tspec`) injects to `pod`; its init containers to
/// `init`, which go before the Pod's own at the end.
fn add_template(
    pod: &mut Pod,
    init: &mut Vec<Container>,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    tspec: PodSpec,
) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    init.extend(tspec.init_containers.unwrap_or_default());
    spec.containers.extend(tspec.containers);
    if let Some(v) = tspec.volumes {
        spec.volumes.get_or_insert_with(Vec::new).extend(v);
    }
    if let Some(meta) = &template.metadata {
        add_missing(&mut pod.metadata.labels, meta.labels.as_ref());
        add_missing(&mut pod.metadata.annotations, meta.annotations.as_ref());
    }
}

/// `pod` with `policy`'s template added, unconditionally (for the dry run of
/// [`crate::template_check::injection_probe`]).
pub fn with_template(pod: &Pod, policy: &PolicyView) -> Pod {
    let template = &policy.policy.spec.template;
    let mut out = pod.clone();
    let mut init = Vec::new();
    add_template(
        &mut out,
        &mut init,
        template,
        template.spec.clone().unwrap_or_default(),
    );
    complete(&out, &init)
}

/// `pod` with the init containers added so far in place (for the Pod Security check).
fn complete(pod: &Pod, added_init: &[Container]) -> Pod {
    let mut out = pod.clone();
    if !added_init.is_empty() {
        let spec = out.spec.get_or_insert_with(PodSpec::default);
        let own = spec.init_containers.take().unwrap_or_default();
        spec.init_containers = Some(added_init.iter().cloned().chain(own).collect());
    }
    out
}

/// The names policy `p` adds: `(is a volume, name)`.
fn template_names(p: &PolicyView) -> impl Iterator<Item = (bool, String)> + '_ {
    let spec = p.policy.spec.template.spec.as_ref();
    let containers = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .map(|c| (false, c.name.clone()));
    let volumes = spec
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .map(|v| (true, v.name.clone()));
    containers.chain(volumes)
}

fn pod_annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a String> {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(key))
}

/// The policies a Pod records as injected: `(policy, template hash)`, in order.
pub fn recorded(pod: &Pod) -> Vec<(String, String)> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_INJECTED))
        .map(|v| {
            record_entries(v)
                .map(|(n, h)| (n.to_string(), h.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The `(policy, template hash)` entries of a [`ANNOTATION_INJECTED`] value, in order;
/// malformed entries (no `=`) are skipped.
pub fn record_entries(value: &str) -> impl Iterator<Item = (&str, &str)> {
    value
        .split(',')
        .filter_map(|e| e.split_once('='))
        .map(|(n, h)| (n.trim(), h.trim()))
}

fn untouched(pod: &Pod) -> Option<Untouched> {
    let meta = &pod.metadata;
    let annotation = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_INJECT));
    if annotation.map(String::as_str) == Some(INJECT_DISABLED) {
        return Some(Untouched::OptedOut);
    }
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_MIRROR))
    {
        return Some(Untouched::Mirror);
    }
    let managed = meta.labels.as_ref().and_then(|l| l.get(LABEL_MANAGED_BY));
    (managed.map(String::as_str) == Some(MANAGED_BY_VALUE)).then_some(Untouched::Operator)
}

/// The first name of the template that the Pod (or an earlier policy) already uses.
fn name_taken(pod: Option<&PodSpec>, added_init: &[Container], template: &PodSpec) -> Option<Skip> {
    let containers: BTreeSet<&str> = pod
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .chain(added_init)
        .map(|c| c.name.as_str())
        .collect();
    let volumes: BTreeSet<&str> = pod
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let inits = template.init_containers.iter().flatten();
    for (kind, c) in inits
        .map(|c| ("init container", c))
        .chain(template.containers.iter().map(|c| ("container", c)))
    {
        if containers.contains(c.name.as_str()) {
            return Some(Skip::NameTaken(kind, c.name.clone()));
        }
    }
    template
        .volumes
        .iter()
        .flatten()
        .find(|v| volumes.contains(v.name.as_str()))
        .map(|v| Skip::NameTaken("volume", v.name.clone()))
}

/// Adds the entries of `from` whose key `to` lacks.
fn add_missing(to: &mut Option<BTreeMap<String, String>>, from: Option<&BTreeMap<String, String>>) {
    let Some(from) = from.filter(|f| !f.is_empty()) else {
        return;
    };
    let to = to.get_or_insert_with(BTreeMap::new);
    for (k, v) in from {
        to.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

#[cfg(test)]
#[path = "inject_tests.rs"]
mod tests;
