//! Slim views of the objects the logic reads. The controller's caches hold these, not
//! full objects: a Pod needs little more than its identity, labels, owner, node, phase
//! and readiness.

use std::borrow::Cow;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube_core::Selector;
use sidecar_api::constants::{
    ANNOTATION_INJECT, ANNOTATION_INJECTED, ANNOTATION_MIRROR, ANNOTATION_SKIPPED, INJECT_DISABLED,
    LABEL_MAIN_UID, LABEL_MANAGED_BY, LABEL_POLICY, LABEL_TEMPLATE_HASH, MANAGED_BY_VALUE,
};
use sidecar_api::{Mode, Placement, SidecarPolicy, UpdateStrategyType};

use crate::inject::record_entries;
use crate::labels::{LabelMatcher, Labels};

/// Lifecycle phase of a Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Accepted, not running yet (or no phase reported).
    #[default]
    Pending,
    /// Bound and running.
    Running,
    /// All containers exited successfully and will not restart.
    Succeeded,
    /// All containers exited, at least one in failure.
    Failed,
    /// Node lost contact.
    Unknown,
}

impl Phase {
    fn parse(s: Option<&str>) -> Phase {
        match s {
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some("Unknown") => Phase::Unknown,
            _ => Phase::Pending,
        }
    }
}

/// An owner reference's `apiVersion`, as far as the operator tells them apart. One byte, not
/// the text: it is kept for every cached Pod. A kind means something only with its group: a
/// custom resource may well be called `ReplicaSet` or `Pod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OwnerApi {
    /// `v1`, the core group: Pod, ReplicationController, Node.
    Core,
    /// `apps/v1`: ReplicaSet, StatefulSet, DaemonSet.
    Apps,
    /// Any other group or version (`batch/v1`, a custom resource's...).
    #[default]
    Other,
}

impl OwnerApi {
    /// From an owner reference's `apiVersion`.
    pub fn parse(api_version: &str) -> OwnerApi {
        match api_version {
            "v1" => OwnerApi::Core,
            "apps/v1" => OwnerApi::Apps,
            _ => OwnerApi::Other,
        }
    }
}

/// The controlling owner reference of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerView {
    /// Owner `apiVersion` (core `v1` for sidecars).
    pub api_version: OwnerApi,
    /// Owner kind (`Pod` for sidecars).
    pub kind: String,
    /// Owner name.
    pub name: String,
    /// Owner uid.
    pub uid: String,
}

impl OwnerView {
    /// The owner is a Pod (core `v1`, kind `Pod`), as a sidecar's main Pod is.
    pub fn is_pod(&self) -> bool {
        self.api_version == OwnerApi::Core && self.kind == "Pod"
    }
}

/// What the operator keeps of a Pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
    /// All labels (selectors match on them).
    pub labels: Labels,
    /// Annotated `sidecars.dev/inject: "false"`.
    pub opted_out: bool,
    /// A mirror Pod (annotation `kubernetes.io/config.mirror`): the API server's copy of a
    /// static Pod its kubelet runs from a file. Never injected, never evicted.
    pub mirror: bool,
    /// The controller owner reference, if any.
    pub owner: Option<OwnerView>,
    /// `spec.nodeName` once bound.
    pub node_name: Option<String>,
    /// `status.phase`.
    pub phase: Phase,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// Its long-running containers (containers, and init containers with restartPolicy
    /// Always: native sidecars) that are not ready, or have no status yet, comma-separated;
    /// `None` when all are ready (no allocation). Container mode counts a Pod ready with a
    /// policy's sidecars when none of them is listed (see [`PodView::containers_ready`]).
    pub unready: Option<Box<str>>,
    /// The value of its `sidecars.dev/injected` annotation: the Container-mode policies whose
    /// sidecars it was created with, `policy=templateHash,...` (see
    /// [`PodView::injected_hash`]). Kept as the text, one allocation and only on Pods that
    /// have it.
    pub injected: Option<Box<str>>,
    /// The value of its `sidecars.dev/skipped` annotation: the Container-mode policies that
    /// selected it at creation but were not injected, `policy=kind/name,...` (see
    /// [`PodView::skipped_for`]).
    pub skipped: Option<Box<str>>,
}

impl PodView {
    /// Projects a Pod; `None` if it has no name or uid (never the case for stored Pods).
    pub fn from_pod(pod: &Pod) -> Option<PodView> {
        let meta = &pod.metadata;
        let owner = meta.owner_references.as_ref().and_then(|refs| {
            refs.iter()
                .find(|r| r.controller == Some(true))
                .map(|r| OwnerView {
                    api_version: OwnerApi::parse(&r.api_version),
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                    uid: r.uid.clone(),
                })
        });
        let status = pod.status.as_ref();
        Some(PodView {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            labels: meta.labels.as_ref().map(Labels::from).unwrap_or_default(),
            opted_out: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_INJECT))
                .is_some_and(|v| v == INJECT_DISABLED),
            mirror: meta
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANNOTATION_MIRROR)),
            owner,
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            phase: Phase::parse(status.and_then(|s| s.phase.as_deref())),
            deleting: meta.deletion_timestamp.is_some(),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            injected: annotation(pod, ANNOTATION_INJECTED),
            skipped: annotation(pod, ANNOTATION_SKIPPED),
            unready: unready_containers(pod),
        })
    }

    /// None of `names` is among its [`PodView::unready`] containers.
    pub fn containers_ready<'n>(&self, mut names: impl Iterator<Item = &'n str>) -> bool {
        let Some(unready) = self.unready.as_deref() else {
            return true;
        };
        names.all(|n| !unready.split(',').any(|u| u == n))
    }

    /// Created by this operator (label `app.kubernetes.io/managed-by: sidecar-operator`).
    /// Such Pods are never main Pods.
    pub fn is_sidecar(&self) -> bool {
        self.labels.get(LABEL_MANAGED_BY) == Some(MANAGED_BY_VALUE)
    }

    /// For a sidecar: `(main Pod uid, policy id)` from its labels (a ClusterSidecarPolicy's
    /// id is `csp/{name}`, see [`crate::cluster`]).
    pub fn sidecar_key(&self) -> Option<(&str, Cow<'_, str>)> {
        if !self.is_sidecar() {
            return None;
        }
        let uid = self.labels.get(LABEL_MAIN_UID)?;
        policy_id(|k| self.labels.get(k)).map(|id| (uid, id))
    }

    /// For a sidecar: the template hash it was built from.
    pub fn template_hash(&self) -> Option<&str> {
        self.labels.get(LABEL_TEMPLATE_HASH)
    }

    /// A sidecar this operator owns for main Pod `main`: in its namespace (an owner reference
    /// never crosses namespaces, and anyone who may create Pods in another one can write the
    /// labels and the reference), with the managed-by label, the main-uid label and a
    /// controller owner reference to that Pod all agreeing.
    pub fn is_sidecar_of(&self, main: &PodView) -> bool {
        self.namespace == main.namespace
            && self.sidecar_key().is_some_and(|(uid, _)| uid == main.uid)
            && self
                .owner
                .as_ref()
                .is_some_and(|o| o.is_pod() && o.uid == main.uid)
    }

    /// The template hash at which the Pod records Container-mode policy `policy`'s sidecars
    /// as injected, if it does.
    pub fn injected_hash(&self, policy: &str) -> Option<&str> {
        let record = self.injected.as_deref()?;
        record_entries(record).find_map(|(p, h)| (p == policy).then_some(h))
    }

    /// What kept Container-mode policy `policy` out of the Pod at creation (`kind/name` of
    /// the name the Pod already had), if it was kept out.
    pub fn skipped_for(&self, policy: &str) -> Option<&str> {
        let record = self.skipped.as_deref()?;
        record_entries(record).find_map(|(p, why)| (p == policy).then_some(why))
    }

    /// Succeeded or Failed: its containers will not run again.
    pub fn terminal(&self) -> bool {
        matches!(self.phase, Phase::Succeeded | Phase::Failed)
    }
}

/// Longest policy name: it is the value of the sidecars' [`LABEL_POLICY`] label.
pub const MAX_POLICY_NAME: usize = 63;

/// What the operator keeps of a SidecarPolicy, with derived values computed once.
#[derive(Debug, Clone)]
pub struct PolicyView {
    /// The policy as stored.
    pub policy: Arc<SidecarPolicy>,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// `metadata.deletionTimestamp` is set: the policy is going away.
    pub deleting: bool,
    /// The parsed selector; or why the operator cannot act on this policy (a spec the CRD's
    /// rules refuse, stored under an older CRD; a name too long for a label value). Such a
    /// policy selects no Pod, and its status says why (`Degraded`, reason `InvalidSpec`).
    pub selector: Result<LabelMatcher, String>,
    /// `template_hash(spec)`.
    pub hash: String,
    /// For a ClusterSidecarPolicy (whose view's `name` is its id, `csp/{name}`, and whose
    /// instances' `namespace` is the namespace they apply in): the object and its
    /// namespaceSelector (see [`crate::cluster`]).
    pub cluster: Option<Arc<crate::cluster::ClusterScope>>,
}

impl PolicyView {
    /// Projects a policy and computes its selector and template hash.
    pub fn new(policy: Arc<SidecarPolicy>) -> PolicyView {
        let spec = &policy.spec;
        let name = policy.metadata.name.as_deref().unwrap_or_default();
        let errors = sidecar_api::validate(spec);
        let selector = if !errors.is_empty() {
            // The API server checks these rules at admission, so such a policy was stored
            // under an older, laxer CRD. Acting on it could mean a rollout that never
            // progresses or a create refused forever: it selects nothing until fixed.
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Err(format!(
                "{}; the current CRD refuses this spec: fix the policy",
                errors.join("; ")
            ))
        } else if name.len() > MAX_POLICY_NAME {
            Err(format!(
                "metadata.name is {} characters long, over {MAX_POLICY_NAME}: it is the value of \
                 the sidecars' {LABEL_POLICY} label, which the API server would refuse; recreate \
                 the policy with a shorter name",
                name.len()
            ))
        } else {
            Selector::try_from(spec.selector.clone())
                .map(LabelMatcher::from)
                .map_err(|e| format!("spec.selector: {e}"))
        };
        PolicyView {
            namespace: policy.metadata.namespace.clone().unwrap_or_default(),
            name: policy.metadata.name.clone().unwrap_or_default(),
            uid: policy.metadata.uid.clone().unwrap_or_default(),
            generation: policy.metadata.generation.unwrap_or_default(),
            deleting: policy.metadata.deletion_timestamp.is_some(),
            hash: sidecar_api::template_hash(spec),
            selector,
            policy,
            cluster: None,
        }
    }

    /// A stored policy whose spec does not decode into the operator's types (a value the
    /// CRD once let through, or written by a future CRD version): `error` says which field
    /// and why. It selects nothing, keeps the sidecars it made, and its status says why
    /// (`Degraded`, reason `InvalidSpec`); the status it had (`status`, if that decodes)
    /// keeps the conditions' transition times.
    pub fn undecodable(
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        status: Option<sidecar_api::SidecarPolicyStatus>,
        error: &str,
    ) -> PolicyView {
        let spec = sidecar_api::SidecarPolicySpec {
            selector: Default::default(),
            mode: Default::default(),
            template: Default::default(),
            placement: Default::default(),
            update_strategy: Default::default(),
            paused: false,
            priority: None,
        };
        let mut policy = SidecarPolicy::new(metadata.name.as_deref().unwrap_or_default(), spec);
        policy.metadata = metadata;
        policy.status = status;
        let mut v = PolicyView::new(Arc::new(policy));
        v.hash = String::new();
        v.selector = Err(format!(
            "{error}; the operator cannot read this stored spec: fix the field (kubectl edit) or recreate the policy"
        ));
        v
    }

    /// [`PolicyView::new`] for a new revision of `prev`'s policy, reusing what it derived
    /// from the spec (validation, parsed selector, template hash) when the spec is the
    /// same generation: the echoes of the operator's own status writes change nothing of
    /// it, and they are most of the policy events.
    pub fn update(policy: Arc<SidecarPolicy>, prev: &PolicyView) -> PolicyView {
        let meta = &policy.metadata;
        let same_spec = meta.uid.as_deref() == Some(prev.uid.as_str())
            && meta.generation.is_some_and(|g| g == prev.generation)
            && meta.name.as_deref() == Some(prev.name.as_str());
        if !same_spec {
            return PolicyView::new(policy);
        }
        PolicyView {
            deleting: meta.deletion_timestamp.is_some(),
            policy,
            ..prev.clone()
        }
    }

    /// The selector matches `labels` (false when the selector is invalid).
    pub fn selects(&self, labels: &Labels) -> bool {
        self.selector.as_ref().is_ok_and(|s| s.matches(labels))
    }

    /// `spec.paused`.
    pub fn paused(&self) -> bool {
        self.policy.spec.paused
    }

    /// `spec.mode`.
    pub fn mode(&self) -> Mode {
        self.policy.spec.mode
    }

    /// `spec.placement`.
    pub fn placement(&self) -> Placement {
        self.policy.spec.placement
    }

    /// Container mode: the names of the long-running containers it injects (native
    /// sidecars, containers), whose readiness makes a Pod ready with its sidecars.
    pub fn injected_containers(&self) -> impl Iterator<Item = &str> {
        let spec = self.policy.spec.template.spec.as_ref();
        let sidecars = spec
            .and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let mains = spec.map(|s| s.containers.iter()).into_iter().flatten();
        sidecars.chain(mains).map(|c| c.name.as_str())
    }

    /// Container mode: the policy's status says the admission of its namespace (this view's,
    /// for a cluster policy's instance) refuses Pods with its current sidecars (see
    /// `status.injectionRefusedIn`; it holds for `status.templateHash` only).
    pub fn injection_refused_here(&self) -> bool {
        let Some(status) = self.policy.status.as_ref() else {
            return false;
        };
        status.template_hash.as_deref() == Some(self.hash.as_str())
            && status
                .injection_refused_in
                .iter()
                .flatten()
                .any(|ns| *ns == self.namespace)
    }

    /// `spec.updateStrategy.type` in effect (its default depends on the mode).
    pub fn strategy(&self) -> UpdateStrategyType {
        self.policy.spec.update_strategy.effective(self.mode())
    }
}

/// The policy id a sidecar's labels name (`get` looks a label up): its SidecarPolicy's name
/// ([`LABEL_POLICY`]), or `csp/{name}` for a ClusterSidecarPolicy's
/// ([`sidecar_api::constants::LABEL_CLUSTER_POLICY`]).
pub fn policy_id<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Cow<'a, str>> {
    if let Some(name) = get(LABEL_POLICY) {
        return Some(Cow::Borrowed(name));
    }
    get(sidecar_api::constants::LABEL_CLUSTER_POLICY)
        .map(|name| Cow::Owned(crate::cluster::cluster_id(name)))
}

/// See [`PodView::unready`].
fn unready_containers(pod: &Pod) -> Option<Box<str>> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref();
    let ready = |statuses: Option<&Vec<ContainerStatus>>, name: &str| {
        statuses
            .into_iter()
            .flatten()
            .any(|s| s.name == name && s.ready)
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .filter(|n| !ready(status.and_then(|s| s.init_container_statuses.as_ref()), n));
    let mains = spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !ready(status.and_then(|s| s.container_statuses.as_ref()), n));
    let names: Vec<&str> = sidecars.chain(mains).collect();
    (!names.is_empty()).then(|| names.join(",").into())
}

fn annotation(pod: &Pod, key: &str) -> Option<Box<str>> {
    let annotations = pod.metadata.annotations.as_ref()?;
    annotations.get(key).map(|v| v.as_str().into())
}
