//! The `SidecarPolicy` resource (`sidecars.dev/v1alpha1`): spec, status and their parts.
//!
//! Doc comments on fields are written for cluster users: they become the `description`s of
//! the CRD schema and so the text of `kubectl explain sidecarpolicy.spec...`. Developer notes
//! are plain `//` comments. Admission-time validation (CEL rules and bounds) is attached here
//! with `#[x_kube(validation = ..)]` and `#[schemars(transform = ..)]`; the rules themselves
//! live in the crate's `rules` module, the transforms in `schema`.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{rules, schema};

/// Desired state of a SidecarPolicy: which Pods get a sidecar, what the sidecar looks like,
/// where it runs and how changes are rolled out.
// clippy sees the repeated `type_ = ..` of the printcolumns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "sidecars.dev",
    version = "v1alpha1",
    kind = "SidecarPolicy",
    plural = "sidecarpolicies",
    singular = "sidecarpolicy",
    namespaced,
    status = "SidecarPolicyStatus",
    shortname = "sp",
    category = "sidecars",
    doc = "SidecarPolicy gives every Pod selected by spec.selector (in the policy's namespace) the sidecar built from spec.template: in Pod mode (the default) a companion sidecar Pod, owned by its main Pod so it is deleted with it; in Container mode the template's containers, injected into the selected Pod itself when it is created.",
    printcolumn(
        name = "Matched",
        type_ = "integer",
        json_path = ".status.matchedPods",
        description = "Eligible Pods selected by the policy"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Ready sidecars / matched Pods"
    ),
    printcolumn(
        name = "Up-To-Date",
        type_ = "integer",
        json_path = ".status.updatedPods",
        description = "Sidecars built from the current template"
    ),
    printcolumn(
        name = "Paused",
        type_ = "boolean",
        json_path = ".spec.paused",
        description = "Whether the policy is paused"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(crates(kube_core = "::kube_core"))]
#[x_kube(validation = rules::selector::SELECTOR_EXCLUDES_OWN_SIDECARS.rule())]
#[x_kube(validation = rules::selector::NODE_NAME_NEEDS_ANY_PLACEMENT.rule())]
#[x_kube(validation = rules::mode::POD_MODE_NEEDS_A_CONTAINER.rule())]
#[x_kube(validation = rules::mode::CONTAINER_MODE_NEEDS_A_CONTAINER.rule())]
#[x_kube(validation = rules::mode::CONTAINER_MODE_POD_SPEC.rule())]
#[x_kube(validation = rules::mode::CONTAINER_MODE_METADATA.rule())]
#[x_kube(validation = rules::mode::CONTAINER_MODE_NO_INJECTED_ANNOTATION.rule())]
pub struct SidecarPolicySpec {
    /// Label selector of the main Pods, in the policy's namespace only. Required and must not
    /// be empty: set at least one matchLabels or matchExpressions entry. It must not select
    /// sidecar Pods (label app.kubernetes.io/managed-by=sidecar-operator, sidecars.dev/*
    /// labels), nor match the labels the sidecars get from spec.template. Pods annotated
    /// sidecars.dev/inject=false are skipped.
    #[schemars(transform = schema::harden_selector)]
    #[x_kube(validation = rules::selector::SELECTOR_NOT_EMPTY.rule())]
    #[x_kube(validation = rules::selector::SELECTOR_NOT_MANAGED_BY_OPERATOR.rule())]
    #[x_kube(validation = rules::selector::SELECTOR_NO_RESERVED_KEYS.rule())]
    pub selector: LabelSelector,

    /// How the sidecars reach the selected Pods. Pod (default): each selected Pod gets a
    /// companion sidecar Pod built from spec.template, owned by it. Container: the template's
    /// init containers, containers, volumes, labels and annotations are injected into each
    /// selected Pod when it is created (by the operator's admission webhook), so they share its
    /// network, volumes and lifecycle; placement does not apply, and running Pods are never
    /// changed in place: the status reports those without the current sidecars, and
    /// updateStrategy RollingUpdate with allowEviction: true evicts them to be recreated.
    #[serde(default)]
    pub mode: Mode,

    /// Pod mode: Pod template of the companion sidecar Pod, created once per selected Pod.
    /// Required, with at least one container. metadata.name, generateName, namespace and
    /// ownerReferences must not be set: the operator names each sidecar {main Pod name}-{policy
    /// name}, creates it in the main Pod's namespace and makes the main Pod its owner. Labels
    /// app.kubernetes.io/managed-by and sidecars.dev/* are reserved. Every container gets the
    /// environment variables MAIN_POD_NAME, MAIN_POD_NAMESPACE, MAIN_POD_UID and MAIN_POD_NODE,
    /// usable as $(MAIN_POD_NAME) in command and args. Container mode: what is added to each
    /// selected Pod when it is created. Only spec.initContainers (restartPolicy Always makes a
    /// native sidecar, placed before the Pod's own init containers), spec.containers,
    /// spec.volumes, metadata.labels and metadata.annotations may be set, with at least one
    /// container or init container; nothing the Pod already has is overridden, no environment
    /// variable is added, and the annotation sidecars.dev/injected is reserved.
    #[schemars(transform = schema::harden_template)]
    pub template: PodTemplateSpec,

    /// Pod mode only: where sidecar Pods run. SameNode (default): wait until the main Pod is
    /// scheduled, then require the sidecar to run on the same node. Any: create the sidecar at
    /// once and let the scheduler place it anywhere. Ignored in Container mode, where the
    /// sidecars run inside the selected Pod.
    #[serde(default)]
    pub placement: Placement,

    /// What the operator does about selected Pods whose sidecars are not the current ones.
    /// Pod mode: how existing sidecar Pods are replaced when spec.template or spec.placement
    /// changes (default RollingUpdate). Container mode: Pods missing the sidecars (created
    /// while the webhook was unavailable, or before the policy) or carrying an older
    /// template's are always reported in status; with type RollingUpdate and allowEviction:
    /// true they are also evicted through the Eviction API, so PodDisruptionBudgets hold and their controller
    /// recreates them with the current sidecars (default OnDelete: report only).
    #[serde(default)]
    pub update_strategy: UpdateStrategy,

    /// Pause the policy: when true the operator creates, replaces and deletes nothing for it
    /// and only reports status. Defaults to false.
    #[serde(default)]
    pub paused: bool,
    /// Which policy wins when two would give one Pod the same companion sidecar Pod name
    /// (Pod mode) or add an init container, container or volume of the same name (Container
    /// mode): the higher priority (default 0); at equal priority a SidecarPolicy before a
    /// ClusterSidecarPolicy, then the first name in alphabetical order. The loser leaves that
    /// Pod to the winner and reports it (condition Conflicted, with the winner's name, and a
    /// Warning event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// How a policy's sidecars reach the selected Pods (`spec.mode`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A companion sidecar Pod per selected Pod, owned by it.
    #[default]
    Pod,
    /// The template's containers injected into each selected Pod at its creation.
    Container,
}

impl Mode {
    /// The value as written in the API (`Pod` or `Container`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Pod => "Pod",
            Mode::Container => "Container",
        }
    }
}

/// Where a sidecar Pod runs relative to its main Pod.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Wait until the main Pod is bound to a node, then pin the sidecar to that node.
    #[default]
    SameNode,
    /// Create the sidecar immediately, anywhere the scheduler sees fit.
    Any,
}

impl Placement {
    /// The value as written in the API (`SameNode` or `Any`).
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::SameNode => "SameNode",
            Placement::Any => "Any",
        }
    }
}

/// How stale sidecars (built from an older template) are replaced.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(crates(kube_core = "::kube_core"))]
pub struct UpdateStrategy {
    /// RollingUpdate (default in Pod mode): replace stale sidecar Pods automatically, at most
    /// maxUnavailable at a time; in Container mode, evict selected Pods that lack the current
    /// sidecars, one controller-owned Pod (ReplicaSet, StatefulSet, DaemonSet...) at a time
    /// within maxUnavailable, each next one only once the replacements are Ready with them;
    /// Pods no controller owns are reported, never evicted — in Container mode only with
    /// allowEviction: true. OnDelete (default in Container mode): replace a stale sidecar Pod
    /// only after someone deletes it; in Container mode, only report the Pods.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<UpdateStrategyType>,

    /// With RollingUpdate, the most sidecars (Container mode: selected Pods) that may be
    /// missing or not ready at once while stale ones are replaced: a positive integer, or a
    /// percentage between 1% and 100% of the matched Pods (rounded down, at least 1).
    /// Defaults to 25%.
    #[serde(default = "default_max_unavailable")]
    #[x_kube(validation = rules::selector::MAX_UNAVAILABLE.rule())]
    pub max_unavailable: IntOrString,

    /// Container mode: true lets the operator evict selected Pods (through the Eviction API)
    /// so that their controllers recreate them with the current sidecars; with type
    /// RollingUpdate only. Unset or false: drifted Pods are only reported. Evicting restarts
    /// your application, so it is never on by default, and no earlier CRD ever set it
    /// (earlier CRDs stored a defaulted type RollingUpdate in every policy). Ignored in Pod
    /// mode, whose RollingUpdate replaces only the operator's own sidecar Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_eviction: Option<bool>,
}

impl Default for UpdateStrategy {
    fn default() -> Self {
        Self {
            type_: None,
            max_unavailable: default_max_unavailable(),
            allow_eviction: None,
        }
    }
}

/// Default of `spec.updateStrategy.maxUnavailable`.
fn default_max_unavailable() -> IntOrString {
    IntOrString::String("25%".to_owned())
}

/// RollingUpdate (default in Pod mode): replace stale sidecar Pods automatically, at most
/// maxUnavailable at a time; in Container mode, evict selected Pods that lack the current
/// sidecars, controller-owned Pods (ReplicaSet, StatefulSet, DaemonSet...) only, within
/// maxUnavailable, each next one only once the replacements are Ready with them; Pods no
/// controller owns are reported, never evicted — and only with allowEviction: true. OnDelete
/// (default in Container mode): replace a stale sidecar Pod only after someone deletes it; in
/// Container mode, only report the Pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdateStrategyType {
    /// Replace stale sidecars automatically, at most maxUnavailable at a time (Container
    /// mode: evict the Pods that lack them).
    RollingUpdate,
    /// Replace a stale sidecar only when a user deletes it (Container mode: report only).
    OnDelete,
}

impl UpdateStrategy {
    /// The strategy in effect for a policy of `mode`: Pod mode RollingUpdate unless OnDelete
    /// is set; Container mode, whose repair evicts users' Pods, OnDelete (report only) unless
    /// both type RollingUpdate and `allowEviction: true` are written — a value no earlier CRD
    /// defaulted, so no stored policy starts evicting after an upgrade, whoever owns its
    /// fields (client-side apply, `kubectl create` and typed clients own defaulted fields
    /// too, kubernetes#112701).
    pub fn effective(&self, mode: Mode) -> UpdateStrategyType {
        match (mode, self.type_) {
            (Mode::Pod, t) => t.unwrap_or(UpdateStrategyType::RollingUpdate),
            (Mode::Container, Some(UpdateStrategyType::RollingUpdate))
                if self.allow_eviction == Some(true) =>
            {
                UpdateStrategyType::RollingUpdate
            }
            (Mode::Container, _) => UpdateStrategyType::OnDelete,
        }
    }
}

impl UpdateStrategyType {
    /// The value as written in the API (`RollingUpdate` or `OnDelete`).
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStrategyType::RollingUpdate => "RollingUpdate",
            UpdateStrategyType::OnDelete => "OnDelete",
        }
    }
}

/// Observed state of a SidecarPolicy, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(crates(kube_core = "::kube_core"))]
pub struct SidecarPolicyStatus {
    /// The metadata.generation of the policy this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Hash of the current spec.template and spec.placement (in Container mode: of the mode and
    /// spec.template). Up-to-date sidecar Pods carry it in their sidecars.dev/template-hash
    /// label; Pods with injected sidecars in their sidecars.dev/injected annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,

    /// Number of eligible main Pods: selected, not opted out, not terminating or finished, and
    /// (Pod mode, placement SameNode) already scheduled.
    #[serde(default)]
    pub matched_pods: i32,

    /// Number of sidecar Pods that exist for this policy; in Container mode, of matched Pods
    /// that carry this policy's sidecars (at any template hash).
    #[serde(default)]
    pub sidecar_pods: i32,

    /// Number of sidecar Pods built from the current template hash; in Container mode, of
    /// matched Pods that carry the current template's sidecars.
    #[serde(default)]
    pub updated_pods: i32,

    /// Number of sidecar Pods that are Ready; in Container mode, of matched Pods that carry the
    /// current template's sidecars and are Ready.
    #[serde(default)]
    pub ready_pods: i32,

    /// Ready sidecars over matched Pods as text, for example "11/12" (readyPods/matchedPods);
    /// shown in the READY column of kubectl get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,

    /// Container mode: the selected Pods that run without this policy's current sidecars
    /// (none when all have them). Pod mode leaves it unset.
    // Serialized as null when unset: the status is written with a merge patch, which keeps
    // what it does not mention.
    #[serde(default)]
    pub drift: Option<PolicyDrift>,

    /// Container mode: namespaces whose admission (a ResourceQuota, a LimitRange, a
    /// validating webhook or admission policy) refuses a Pod with this policy's sidecars at
    /// status.templateHash, as a server-side dry run showed: the webhook creates Pods there
    /// without them rather than have them refused (see the Degraded condition). Checked again
    /// with a growing delay (up to 5 minutes); unset when there is none.
    // Serialized as null when unset, so that the merge patch of the status clears it.
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub injection_refused_in: Option<Vec<String>>,

    /// Latest observations of the policy's state: Ready, Progressing, Degraded and Paused.
    /// One entry per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Container mode: selected Pods without the current sidecars (`status.drift`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(crates(kube_core = "::kube_core"))]
pub struct PolicyDrift {
    /// Selected Pods that record no injection of this policy: created while the webhook was
    /// unavailable or before the policy existed, or left alone for a name collision.
    pub missing_pods: i32,

    /// Selected Pods created without this policy's sidecars because their namespace would
    /// have refused them with them (Pod Security, quota...; see the Degraded condition):
    /// never evicted for them.
    #[serde(default)]
    pub refused_pods: i32,

    /// Selected Pods injected from an older template (spec.template changed since).
    pub outdated_pods: i32,

    /// With updateStrategy RollingUpdate: Pods evicted whose replacements are not Ready
    /// with the current sidecars yet.
    #[serde(default)]
    pub evicting_pods: i32,

    /// Up to 20 of the drifted Pods, by name, each as "name (missing)", "name (refused)" or
    /// "name (outdated)".
    #[serde(default)]
    pub pods: Vec<String>,
}

/// Text of the READY column (`status.ready`): `"<ready>/<matched>"`, for example `"11/12"`.
pub fn ready_text(ready_pods: i32, matched_pods: i32) -> String {
    format!("{ready_pods}/{matched_pods}")
}

/// Desired state of a ClusterSidecarPolicy: a SidecarPolicy's spec, applied in every
/// namespace that namespaceSelector matches.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "sidecars.dev",
    version = "v1alpha1",
    kind = "ClusterSidecarPolicy",
    plural = "clustersidecarpolicies",
    singular = "clustersidecarpolicy",
    status = "ClusterSidecarPolicyStatus",
    shortname = "csp",
    category = "sidecars",
    doc = "ClusterSidecarPolicy is a SidecarPolicy for platform teams: in every namespace its spec.namespaceSelector matches, it gives each Pod selected by spec.selector the sidecar built from spec.template, exactly as a SidecarPolicy of that namespace would (Pod or Container mode). The namespaces kube-system, kube-public, kube-node-lease and the operator's own are left out unless the selector names them (label kubernetes.io/metadata.name). Its companion sidecar Pods are named {main Pod name}-csp-{policy name} and labelled sidecars.dev/cluster-policy, so they never meet a SidecarPolicy's of the same name.",
    printcolumn(
        name = "Namespaces",
        type_ = "integer",
        json_path = ".status.namespaces",
        description = "Namespaces the namespaceSelector matches"
    ),
    printcolumn(
        name = "Matched",
        type_ = "integer",
        json_path = ".status.matchedPods",
        description = "Eligible Pods selected by the policy, in all its namespaces"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Ready sidecars / matched Pods"
    ),
    printcolumn(
        name = "Up-To-Date",
        type_ = "integer",
        json_path = ".status.updatedPods",
        description = "Sidecars built from the current template"
    ),
    printcolumn(
        name = "Paused",
        type_ = "boolean",
        json_path = ".spec.paused",
        description = "Whether the policy is paused"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(crates(kube_core = "::kube_core"))]
pub struct ClusterSidecarPolicySpec {
    /// Label selector of the namespaces the policy applies in. Required and must not be
    /// empty. kube-system, kube-public, kube-node-lease and the operator's own namespace are
    /// left out unless the selector names them with the label kubernetes.io/metadata.name
    /// (matchLabels, or an In expression). Relabelling a namespace moves its Pods in or out:
    /// sidecars appear there, or the policy's sidecars there are removed.
    #[schemars(transform = schema::harden_selector)]
    #[x_kube(validation = rules::selector::NAMESPACE_SELECTOR_NOT_EMPTY.rule())]
    pub namespace_selector: LabelSelector,

    /// The rest of the spec is a SidecarPolicy's; spec.selector selects Pods in each of the
    /// matched namespaces.
    #[serde(flatten)]
    pub policy: SidecarPolicySpec,
}

/// Observed state of a ClusterSidecarPolicy, written by the operator: a SidecarPolicy's
/// status summed over the namespaces it applies in, and their number.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(crates(kube_core = "::kube_core"))]
pub struct ClusterSidecarPolicyStatus {
    /// Number of namespaces the policy applies in: matched by spec.namespaceSelector, not
    /// left out, and served by the operator.
    #[serde(default)]
    pub namespaces: i32,

    /// The counts and conditions, summed over those namespaces; Pods and sidecars are named
    /// namespace/name.
    #[serde(flatten)]
    pub policy: SidecarPolicyStatus,
}
