//! The error type of this crate.

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CRD could not be serialized to YAML.
    #[error("failed to serialize the CRD to YAML")]
    SerializeCrd(#[source] serde_yaml_ng::Error),

    /// `spec.updateStrategy.maxUnavailable` is neither a positive integer nor a percentage
    /// between 1% and 100% (the CRD refuses such values, so this means the CRD is not installed
    /// or out of date).
    #[error(
        "invalid spec.updateStrategy.maxUnavailable {0:?}: must be a positive integer or a percentage between 1% and 100%"
    )]
    InvalidMaxUnavailable(String),
}
