//! The keys of the two work queues. A Pod's key and a policy's are distinct types: one can
//! never be queued, backed off or looked up as the other, even when a Pod and a policy
//! share a namespace and a name.

use std::fmt;

/// A Pod: `(namespace, name)`; `.0` is the namespace, `.1` the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey(pub String, pub String);

/// A SidecarPolicy: `(namespace, name)`; `.0` is the namespace, `.1` the name. A
/// ClusterSidecarPolicy's instance in a namespace: `(namespace, "csp/{name}")`; the
/// ClusterSidecarPolicy itself: `("", "csp/{name}")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey(pub String, pub String);

macro_rules! key_methods {
    ($t:ident) => {
        impl $t {
            /// The key of `name` in namespace `ns`.
            pub fn new(ns: impl Into<String>, name: impl Into<String>) -> Self {
                $t(ns.into(), name.into())
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", self.0, self.1)
            }
        }
    };
}

key_methods!(PodKey);
key_methods!(PolicyKey);

impl PolicyKey {
    /// The key a policy's status and rollout are queued under: its own, or for an instance of a
    /// ClusterSidecarPolicy (`(namespace, "csp/{name}")`), the cluster policy's
    /// (`("", "csp/{name}")`), whose one run covers every namespace it applies in.
    pub fn queued(self) -> PolicyKey {
        if !self.0.is_empty() && sidecar_planner::cluster_name(&self.1).is_some() {
            return PolicyKey(String::new(), self.1);
        }
        self
    }

    /// The key of a ClusterSidecarPolicy (empty namespace) rather than of a namespace's policy.
    pub fn is_cluster(&self) -> bool {
        self.0.is_empty()
    }
}
