//! Errors of the controllers.

/// A reconcile or start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused to create a sidecar (Pod Security, quota, validation…):
    /// a problem of the policy or the namespace, reported on the policy and retried
    /// with backoff.
    #[error("creating sidecar {name}: refused by the API server: {message}")]
    CreateRefused {
        /// Sidecar name.
        name: String,
        /// The server's message.
        message: String,
    },
    /// Creating a sidecar failed for another reason (transient).
    #[error("creating sidecar {name}")]
    CreateSidecar {
        /// Sidecar name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Deleting a sidecar failed (transient).
    #[error("deleting sidecar {name}")]
    DeleteSidecar {
        /// Sidecar name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The server-side dry run of a policy's template failed for a reason that says
    /// nothing about the template (transient).
    #[error("checking the template of policy {name}")]
    CheckTemplate {
        /// Policy name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Writing a policy's status failed (transient).
    #[error("patching the status of policy {name}")]
    PatchStatus {
        /// Policy name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The client could not be built.
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
    /// The caches did not sync in time (API server unreachable, CRD missing, RBAC).
    #[error(
        "the watch caches did not sync within {0} s (is the API server reachable, the CRD installed and RBAC granted?)"
    )]
    SyncTimeout(u64),
}

impl Error {
    /// A short, bounded category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::CreateRefused { .. } => "create-refused",
            Error::CreateSidecar { .. } => "create",
            Error::DeleteSidecar { .. } => "delete",
            Error::PatchStatus { .. } => "patch-status",
            Error::CheckTemplate { .. } => "check-template",
            Error::Client(_) => "client",
            Error::SyncTimeout(_) => "sync-timeout",
        }
    }
}
