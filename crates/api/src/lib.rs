//! `sidecars.dev/v1alpha1` API of the sidecar operator.
//!
//! This crate owns the contract between cluster users and the operator:
//!
//! - [`SidecarPolicy`] and its parts ([`types`]): the custom resource users write and whose
//!   status the operator reports;
//! - [`constants`]: every label, annotation, environment variable, condition type and reason
//!   the operator puts on the cluster;
//! - [`template_hash`] ([`hash`]): the stable fingerprint stamped on sidecars;
//! - `rules`: every CEL validation rule of the CRD, each declared once with its message and
//!   the Rust predicate that mirrors it offline;
//! - [`crd()`] / [`crd_yaml`] ([`mod@crd`]): the installable CRD, with the admission-time
//!   validation placed by `schema` (the rules, and bounds), committed as
//!   `crds/sidecarpolicies.sidecars.dev.yaml` and printed by the `crdgen` binary;
//! - [`validate()`] / [`validate_object`] ([`mod@validate`]): the same admission checks, offline
//!   (for `sidecar-operator check`, and the operator's check of each stored policy): the
//!   structural schema of the committed CRD, and its rules through their mirrors;
//! - [`strategy`]: what `spec.updateStrategy.maxUnavailable` resolves to.
//!
//! It has no cluster access and no async code; the planner and the controller depend on it.

pub mod constants;
pub mod crd;
mod error;
pub mod hash;
mod rules;
mod schema;
pub mod strategy;
pub mod types;
pub mod validate;

pub use crd::{cluster_crd, cluster_crd_yaml, crd, crd_yaml};
pub use error::Error;
pub use hash::template_hash;
pub use types::{
    ClusterSidecarPolicy, ClusterSidecarPolicySpec, ClusterSidecarPolicyStatus, Mode, Placement,
    PolicyDrift, SidecarPolicy, SidecarPolicySpec, SidecarPolicyStatus, UpdateStrategy,
    UpdateStrategyType, ready_text,
};
pub use validate::{FieldError, FieldErrorKind, validate, validate_object};
