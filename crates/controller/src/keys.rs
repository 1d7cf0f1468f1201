//! The keys of the two work queues. A Pod's key and a policy's are distinct types: one can
//! never be queued, backed off or looked up as the other, even when a Pod and a policy
//! share a namespace and a name.

use std::fmt;

/// A Pod: `(namespace, name)`; `.0` is the namespace, `.1` the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey(pub String, pub String);

/// A SidecarPolicy: `(namespace, name)`; `.0` is the namespace, `.1` the name.
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
