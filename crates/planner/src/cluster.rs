//! ClusterSidecarPolicy: one policy for many namespaces.
//!
//! A cluster policy is seen by the rest of the logic as one namespaced policy per namespace it
//! applies in, its **instances**: a [`PolicyView`] whose namespace is that namespace and whose
//! name is its id, `csp/{name}` ([`CLUSTER_POLICY_PREFIX`]). Policy names never hold a `/`, so an
//! instance never meets a SidecarPolicy of the same name: its sidecars are named
//! `{main}-csp-{name}` (see [`crate::sidecar_name`]) and labelled [`LABEL_CLUSTER_POLICY`], and
//! its injections are recorded as `csp/{name}=hash`. Plans, rollouts, repairs, template checks
//! and counts work per instance unchanged; the status sums the instances' (see
//! [`crate::status::sum`]).
//!
//! Which namespaces: those its namespaceSelector matches, minus the ones left out
//! (kube-system, kube-public, kube-node-lease and the operator's own) unless the selector names
//! them with `kubernetes.io/metadata.name`.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube_core::Selector;
use sidecar_api::constants::{CLUSTER_POLICY_PREFIX, LABEL_NAMESPACE_NAME};
use sidecar_api::{ClusterSidecarPolicy, SidecarPolicy};

use crate::labels::{LabelMatcher, Labels};
use crate::view::PolicyView;

/// What a policy view keeps of the ClusterSidecarPolicy it comes from.
#[derive(Debug, Clone)]
pub struct ClusterScope {
    /// The object as stored.
    pub object: Arc<ClusterSidecarPolicy>,
    /// The parsed namespaceSelector, or why it cannot be used (then no namespace matches).
    pub namespace_selector: Result<LabelMatcher, String>,
}

impl ClusterScope {
    /// The ClusterSidecarPolicy's name.
    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }
}

/// The id a cluster policy named `name` goes by where a policy name goes: `csp/{name}`.
pub fn cluster_id(name: &str) -> String {
    format!("{CLUSTER_POLICY_PREFIX}{name}")
}

/// The ClusterSidecarPolicy name in a policy id, if it is one (`csp/{name}`).
pub fn cluster_name(id: &str) -> Option<&str> {
    id.strip_prefix(CLUSTER_POLICY_PREFIX)
}

impl PolicyView {
    /// The view of a ClusterSidecarPolicy itself (namespace empty, name its id): the base its
    /// instances are made from ([`PolicyView::instance`]), and what its status is written for.
    pub fn cluster(object: Arc<ClusterSidecarPolicy>) -> PolicyView {
        let mut policy = SidecarPolicy::new(
            object.metadata.name.as_deref().unwrap_or_default(),
            object.spec.policy.clone(),
        );
        policy.metadata = object.metadata.clone();
        policy.metadata.namespace = None;
        policy.status = object.status.as_ref().map(|s| s.policy.clone());
        let mut view = PolicyView::new(Arc::new(policy));
        view.name = cluster_id(&view.name);
        let namespace_selector = Selector::try_from(object.spec.namespace_selector.clone())
            .map(LabelMatcher::from)
            .map_err(|e| format!("spec.namespaceSelector: {e}"));
        if let (Ok(_), Err(e)) = (&view.selector, &namespace_selector) {
            view.selector = Err(e.clone());
        }
        view.cluster = Some(Arc::new(ClusterScope {
            object,
            namespace_selector,
        }));
        view
    }

    /// [`PolicyView::cluster`] for a new revision of `prev`'s object, reusing what it derived
    /// from the spec when the generation is the same (see [`PolicyView::update`]).
    pub fn cluster_update(object: Arc<ClusterSidecarPolicy>, prev: &PolicyView) -> PolicyView {
        let Some(scope) = prev.cluster.as_ref() else {
            return PolicyView::cluster(object);
        };
        let meta = &object.metadata;
        let same = meta.uid == scope.object.metadata.uid
            && meta.generation.is_some()
            && meta.generation == scope.object.metadata.generation;
        if !same {
            return PolicyView::cluster(object);
        }
        let mut policy = (*prev.policy).clone();
        policy.metadata = meta.clone();
        policy.metadata.namespace = None;
        policy.status = object.status.as_ref().map(|s| s.policy.clone());
        PolicyView {
            deleting: meta.deletion_timestamp.is_some(),
            policy: Arc::new(policy),
            cluster: Some(Arc::new(ClusterScope {
                object,
                namespace_selector: scope.namespace_selector.clone(),
            })),
            ..prev.clone()
        }
    }

    /// A stored ClusterSidecarPolicy whose spec does not decode (see
    /// [`PolicyView::undecodable`]): it selects no Pod and keeps the sidecars it made. It keeps
    /// applying in the namespaces `prev` (its last view) applied in; with none known (the
    /// operator just started), in every namespace, so that no sidecar of it is deleted.
    pub fn cluster_undecodable(
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        status: Option<sidecar_api::ClusterSidecarPolicyStatus>,
        error: &str,
        prev: Option<&PolicyView>,
    ) -> PolicyView {
        let inner = PolicyView::undecodable(metadata.clone(), None, error);
        let mut object = ClusterSidecarPolicy::new(
            metadata.name.as_deref().unwrap_or_default(),
            sidecar_api::ClusterSidecarPolicySpec {
                namespace_selector: LabelSelector::default(),
                policy: inner.policy.spec.clone(),
            },
        );
        object.metadata = metadata;
        object.status = status;
        let mut view = PolicyView::cluster(Arc::new(object));
        view.hash = inner.hash;
        view.selector = inner.selector;
        let kept = prev
            .and_then(|p| p.cluster.as_ref())
            .map(|c| c.namespace_selector.clone())
            .unwrap_or_else(|| Ok(LabelMatcher::from(Selector::default())));
        if let Some(scope) = view.cluster.as_mut() {
            Arc::make_mut(scope).namespace_selector = kept;
        }
        view
    }

    /// This cluster policy's instance in namespace `ns`.
    pub fn instance(&self, ns: &str) -> PolicyView {
        PolicyView {
            namespace: ns.to_string(),
            ..self.clone()
        }
    }

    /// The reference to the object, for Events: the SidecarPolicy, or the
    /// ClusterSidecarPolicy (for its instances too).
    pub fn object_ref(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        use kube_core::Resource as _;
        match &self.cluster {
            Some(scope) => scope.object.object_ref(&()),
            None => self.policy.object_ref(&()),
        }
    }

    /// A ClusterSidecarPolicy (or one of its instances).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The name of the object: the SidecarPolicy's, or the ClusterSidecarPolicy's.
    pub fn object_name(&self) -> &str {
        cluster_name(&self.name)
            .filter(|_| self.is_cluster())
            .unwrap_or(&self.name)
    }

    /// The kind of the object, as written in the API.
    pub fn kind(&self) -> &'static str {
        if self.is_cluster() {
            sidecar_api::constants::CLUSTER_KIND
        } else {
            sidecar_api::constants::KIND
        }
    }

    /// For a cluster policy: it applies in namespace `ns` with labels `labels`, `left_out`
    /// being the namespaces it skips unless named (see the module doc). False for a
    /// namespaced policy.
    pub fn applies_in(&self, ns: &str, labels: &Labels, left_out: &HashSet<String>) -> bool {
        let Some(scope) = &self.cluster else {
            return false;
        };
        let Ok(matcher) = &scope.namespace_selector else {
            return false;
        };
        matcher.matches(labels)
            && (!left_out.contains(ns)
                || names_namespace(&scope.object.spec.namespace_selector, ns))
    }
}

/// `selector` names namespace `ns` with its `kubernetes.io/metadata.name` label: a
/// matchLabels entry, or an `In` expression listing it.
pub fn names_namespace(selector: &LabelSelector, ns: &str) -> bool {
    let by_label = selector
        .match_labels
        .as_ref()
        .and_then(|m| m.get(LABEL_NAMESPACE_NAME))
        .is_some_and(|v| v == ns);
    let by_expression = selector.match_expressions.iter().flatten().any(|e| {
        e.key == LABEL_NAMESPACE_NAME
            && e.operator == "In"
            && e.values.iter().flatten().any(|v| v == ns)
    });
    by_label || by_expression
}

impl PolicyView {
    /// `spec.priority` (default 0).
    pub fn priority(&self) -> i32 {
        self.policy.spec.priority.unwrap_or(0)
    }

    /// This policy wins over `other` where both want one Pod's sidecar name, container or
    /// volume name: the higher priority, then a SidecarPolicy before a ClusterSidecarPolicy,
    /// then the first name. A total order: of two distinct policies exactly one wins.
    pub fn outranks(&self, other: &PolicyView) -> bool {
        self.precedence() < other.precedence()
    }

    /// The sort key of [`PolicyView::outranks`]: winners first.
    pub fn precedence(&self) -> (std::cmp::Reverse<i32>, bool, &str) {
        (
            std::cmp::Reverse(self.priority()),
            self.is_cluster(),
            self.object_name(),
        )
    }
}

/// How a message names policy `id`: `SidecarPolicy web`, or `ClusterSidecarPolicy web` for
/// `csp/web`.
pub fn describe(id: &str) -> String {
    match cluster_name(id) {
        Some(name) => format!("{} {name}", sidecar_api::constants::CLUSTER_KIND),
        None => format!("{} {id}", sidecar_api::constants::KIND),
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
