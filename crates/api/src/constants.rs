//! Names shared by everything that reads or writes `sidecars.dev` objects: API coordinates,
//! labels and annotations, the field manager, environment variables injected into sidecars,
//! and the condition types and reasons published on `SidecarPolicy` status.
//!
//! Keep every string the operator puts on the cluster here, so the planner, the controller,
//! the tests and the documentation cannot drift apart.

/// API group of the `SidecarPolicy` custom resource.
pub const GROUP: &str = "sidecars.dev";
/// API version served and stored for `SidecarPolicy`.
pub const VERSION: &str = "v1alpha1";
/// Kind of the custom resource.
pub const KIND: &str = "SidecarPolicy";
/// Plural resource name, as used in URLs and RBAC rules.
pub const PLURAL: &str = "sidecarpolicies";
/// Name of the `CustomResourceDefinition` object (`<plural>.<group>`).
pub const CRD_NAME: &str = "sidecarpolicies.sidecars.dev";

/// Prefix of every label and annotation key the operator owns.
pub const KEY_PREFIX: &str = "sidecars.dev/";

/// Standard label naming the tool that manages an object; set on every sidecar Pod.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`] on sidecar Pods. A Pod carrying it is never a main Pod.
pub const MANAGED_BY_VALUE: &str = "sidecar-operator";
/// Label on a sidecar Pod naming the `SidecarPolicy` (same namespace) it was built from.
pub const LABEL_POLICY: &str = "sidecars.dev/policy";
/// Label on a companion sidecar Pod of a `ClusterSidecarPolicy`, naming it (instead of
/// [`LABEL_POLICY`]): a SidecarPolicy and a ClusterSidecarPolicy of one name never share
/// sidecars.
pub const LABEL_CLUSTER_POLICY: &str = "sidecars.dev/cluster-policy";
/// How the operator refers to a `ClusterSidecarPolicy` where a policy name goes (its sidecars'
/// names, the `sidecars.dev/injected` and `sidecars.dev/skipped` annotations, metrics, logs):
/// `csp/` and its name. Policy names never contain `/`, so the two kinds never meet.
pub const CLUSTER_POLICY_PREFIX: &str = "csp/";
/// Kind of the cluster-scoped custom resource.
pub const CLUSTER_KIND: &str = "ClusterSidecarPolicy";
/// Plural resource name of the cluster-scoped custom resource.
pub const CLUSTER_PLURAL: &str = "clustersidecarpolicies";
/// Name of its `CustomResourceDefinition` object.
pub const CLUSTER_CRD_NAME: &str = "clustersidecarpolicies.sidecars.dev";
/// The label every namespace carries with its own name; a ClusterSidecarPolicy's
/// namespaceSelector names a namespace explicitly with it.
pub const LABEL_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// Label on a sidecar Pod holding the UID of the main Pod it serves.
pub const LABEL_MAIN_UID: &str = "sidecars.dev/main-uid";
/// Label on a sidecar Pod holding the policy's template hash it was built from
/// (see [`crate::template_hash`]).
pub const LABEL_TEMPLATE_HASH: &str = "sidecars.dev/template-hash";

/// Annotation on a Pod that opts it out of every policy when set to [`INJECT_DISABLED`].
pub const ANNOTATION_INJECT: &str = "sidecars.dev/inject";
/// Value of [`ANNOTATION_INJECT`] that opts a Pod out. Any other value has no effect.
pub const INJECT_DISABLED: &str = "false";

/// Annotation the kubelet puts on a mirror Pod: the API server's copy of a static Pod, which
/// the kubelet runs from a file on its node, never from the API object. Such a Pod is never
/// injected (what the object says is not what runs) nor evicted (nothing recreates it).
pub const ANNOTATION_MIRROR: &str = "kubernetes.io/config.mirror";

/// Annotation on a Pod recording each Container-mode injection: `policy=templateHash`,
/// comma-separated, in injection order. Written by the operator's admission webhook; a policy
/// template may not set it.
pub const ANNOTATION_INJECTED: &str = "sidecars.dev/injected";

/// Annotation on a Pod recording each Container-mode policy that selected it but was not
/// injected because the Pod already had what it would add: `policy=kind/name`,
/// comma-separated (`kind` is `initContainer`, `container` or `volume`). Written by the
/// admission webhook; the policy's status reports these Pods.
pub const ANNOTATION_SKIPPED: &str = "sidecars.dev/skipped";

/// Field manager used for every write the operator makes (creates, server-side applies,
/// status patches).
pub const FIELD_MANAGER: &str = "sidecar-operator";

/// Environment variable set on every sidecar container: name of the main Pod.
/// Kubernetes expands `$(MAIN_POD_NAME)` in a container's `command` and `args`.
pub const ENV_MAIN_POD_NAME: &str = "MAIN_POD_NAME";
/// Environment variable set on every sidecar container: namespace of the main Pod.
pub const ENV_MAIN_POD_NAMESPACE: &str = "MAIN_POD_NAMESPACE";
/// Environment variable set on every sidecar container: UID of the main Pod.
pub const ENV_MAIN_POD_UID: &str = "MAIN_POD_UID";
/// Environment variable set on every sidecar container: node the main Pod is bound to
/// (empty when the main Pod is not scheduled yet, possible only with placement `Any`).
pub const ENV_MAIN_POD_NODE: &str = "MAIN_POD_NODE";

/// Condition types published in `SidecarPolicy.status.conditions`.
pub mod condition {
    /// `True` when every matched Pod has a ready sidecar at the current template hash.
    pub const READY: &str = "Ready";
    /// `True` while sidecars are being created or replaced to reach the current template hash.
    pub const PROGRESSING: &str = "Progressing";
    /// `True` when the operator cannot make progress: the cluster refuses sidecar creates
    /// (admission, quota, permissions) or a name is taken by a Pod the operator does not own.
    pub const DEGRADED: &str = "Degraded";
    /// `True` while `spec.paused` is set: nothing is created or deleted, status is still reported.
    pub const PAUSED: &str = "Paused";
    /// `True` while a policy that outranks this one (spec.priority, then SidecarPolicy before
    /// ClusterSidecarPolicy, then name) wants the same sidecar Pod name, container or volume
    /// name for some of its Pods: those are left to the winner. Present once a conflict was
    /// seen.
    pub const CONFLICTED: &str = "Conflicted";
    /// kstatus's abnormal-true condition: `True` while sidecars are being created, replaced
    /// or waited for (Flux, kpt and cli-utils then report the policy `InProgress`).
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus's abnormal-true condition: `True` when nothing will progress without a change
    /// (invalid spec or template, refused creates, name collisions); Flux, kpt and
    /// cli-utils then report the policy `Failed` at once instead of waiting for a timeout.
    pub const STALLED: &str = "Stalled";

    /// Every condition type the operator writes, in the order it writes them.
    pub const ALL: [&str; 6] = [READY, PROGRESSING, DEGRADED, PAUSED, RECONCILING, STALLED];
}

/// Condition statuses (the `metav1.Condition.status` values).
pub mod condition_status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
}

/// Machine-readable reasons of the conditions (CamelCase, as `metav1.Condition` requires).
/// They double as reasons of the Events the operator emits.
pub mod reason {
    /// `Conflicted=True`: a policy that outranks this one takes some of its Pods; also the
    /// Warning event on the loser.
    pub const CONFLICT: &str = "Conflict";
    /// `Conflicted=False`: no policy outranks this one on its Pods any more.
    pub const NO_CONFLICT: &str = "NoConflict";
    /// `Ready=True`: every matched Pod has a ready, up-to-date sidecar.
    pub const ALL_SIDECARS_READY: &str = "AllSidecarsReady";
    /// `Ready=False`: some sidecars are missing, stale or not ready.
    pub const SIDECARS_NOT_READY: &str = "SidecarsNotReady";
    /// `Ready=True`: the policy selects no eligible Pod, so there is nothing to wait for.
    pub const NO_MATCHING_PODS: &str = "NoMatchingPods";
    /// `Progressing=True`: sidecars are being created or replaced.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// `Progressing=False`: stale sidecars exist but `updateStrategy.type` is `OnDelete`,
    /// so they are replaced only when users delete them (nothing is in flight).
    pub const WAITING_FOR_DELETE: &str = "WaitingForDelete";
    /// `Progressing=False` in Container mode: some selected Pods run without the current
    /// sidecar (created before the policy or its change, or while the webhook was down);
    /// sidecars are injected only into Pods being created.
    pub const WAITING_FOR_NEW_PODS: &str = "WaitingForNewPods";
    /// `Progressing=False`: every wanted sidecar exists at the current template hash.
    pub const CONVERGED: &str = "Converged";
    /// `Degraded=False`: nothing is failing.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// `Degraded=True`: the API server refused to create a sidecar (admission, quota,
    /// Pod Security, RBAC); the message carries the server's answer.
    pub const CREATE_REFUSED: &str = "CreateRefused";
    /// `Degraded=True`: a Pod the operator does not own already has a sidecar's name.
    pub const NAME_COLLISION: &str = "NameCollision";
    /// Container mode: a namespace would refuse selected Pods with the policy's sidecars
    /// (Pod Security admission, quota, another admission check), so they are created
    /// without them.
    pub const NAMESPACE_REFUSES_INJECTION: &str = "NamespaceRefusesInjection";
    /// Container mode, RollingUpdate: an evicted Pod's controller has not created its
    /// replacement by the deadline; that workload's repair is halted.
    pub const REPLACEMENT_NOT_CREATED: &str = "ReplacementNotCreated";
    /// Container mode, RollingUpdate: an evicted Pod's replacement is not selected by the
    /// policy (labels set after admission); that workload is not repaired.
    pub const REPLACEMENT_NOT_SELECTED: &str = "ReplacementNotSelected";
    /// `Degraded=True`: a sidecar of this policy keeps ending `Failed` or `Succeeded`
    /// (eviction, exit under `restartPolicy: Never`…); it is replaced with a growing delay.
    pub const SIDECARS_FAILING: &str = "SidecarsFailing";
    /// Warning event on a policy: one of its sidecars ended `Failed` or `Succeeded` and is
    /// being replaced.
    pub const SIDECAR_FAILED: &str = "SidecarFailed";
    /// `Degraded=True` (and a Warning event): the API server refuses a Pod built from the
    /// template (server-side dry run): Pod validation, or the namespace's admission (Pod
    /// Security, quota, LimitRange). Nothing is created until the template or the
    /// namespace allows it.
    pub const INVALID_TEMPLATE: &str = "InvalidTemplate";
    /// `Degraded=True`: the policy passed admission but cannot be used (for example a
    /// selector the operator cannot parse).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// `Paused=True` (and the reason of the other conditions while paused).
    pub const PAUSED: &str = "Paused";
    /// `Paused=False`: the policy is active.
    pub const ACTIVE: &str = "Active";
    /// Normal event on a main Pod: its sidecar was created.
    pub const SIDECAR_CREATED: &str = "SidecarCreated";
    /// Normal event on a main Pod: its stale sidecar is being replaced (rollout).
    pub const SIDECAR_REPLACED: &str = "SidecarReplaced";
    /// Container mode, `Progressing=True`: selected Pods without the current sidecars are
    /// being evicted (updateStrategy RollingUpdate) so that their controllers recreate them;
    /// also the Normal event on the policy when a repair starts.
    pub const REPAIRING: &str = "Repairing";
    /// Normal event on a policy: every evictable selected Pod runs the current sidecars again.
    pub const REPAIRED: &str = "Repaired";
    /// Container mode, `Progressing=True` (and a Warning event): a PodDisruptionBudget refused
    /// an eviction (429); it is retried with backoff.
    pub const EVICTION_BLOCKED: &str = "EvictionBlocked";
    /// Container mode, `Degraded=True`: a Pod that replaced an evicted one came up without
    /// the sidecars, so the webhook is not injecting; nothing more is evicted until one has
    /// them.
    pub const WEBHOOK_NOT_INJECTING: &str = "WebhookNotInjecting";
    /// Container mode, `Progressing=False`: the only selected Pods left without the current
    /// sidecars have no controller that would recreate them (bare or Job Pods), so they are
    /// reported and never evicted.
    pub const NOT_EVICTABLE: &str = "NotEvictable";
    /// Normal event on a main Pod: it is evicted so that its controller recreates it with the
    /// current sidecars.
    pub const EVICTED: &str = "EvictedForSidecars";
}

/// Namespaces the admission webhook never serves (its configuration's namespaceSelector
/// leaves them out, with the operator's own): Container mode's repair never evicts there,
/// since no replacement would be injected.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
