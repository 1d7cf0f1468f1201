//! Fixtures shared by the behaviour tests against the real control plane started by
//! `sidecar-testenv`: the ones in `tests/e2e` and the operator binary's in
//! `crates/operator/tests`. Each helper exists once, here:
//!
//! - [`fixtures`]: builders of Pods, workloads and policies;
//! - [`pods`]: questions about Pods (is it a sidecar, whose, Ready, bound) and dumps;
//! - [`scene`]: one test's namespace, its operator instance and its waits;
//! - [`policy_status`]: what a policy's status says, and waiting until it says it;
//! - [`events`]: the Events of a namespace, and waiting for one;
//! - [`idle`]: "idle: no writes" checks on an operator's API calls;
//! - [`recorder`] and [`availability`]: independent watches that cannot miss a short-lived
//!   state;
//! - [`yaml`]: the repository's YAML files and their documents;
//! - [`webhook`]: Container mode's webhook served by the test process;
//! - [`poll`]: polling with a timeout.

pub mod availability;
pub mod events;
pub mod fixtures;
pub mod idle;
pub mod pods;
pub mod policy_status;
pub mod poll;
pub mod recorder;
pub mod scene;
pub mod webhook;
pub mod yaml;

use std::time::Duration;

pub use availability::{Availability, AvailabilityWatch, lacking_ready_sidecar};
pub use events::{
    describe_events, events, events_about, print_operator_events, wait_policy_event,
    wait_policy_event_of, wait_refusal_event,
};
pub use fixtures::{
    WEB, agent, compliant_template_spec, deployment, gated_pod, job, minimal_policy, names,
    native_sidecar_policy, new_template, pod, policy, policy_with, privileged_template_spec,
    restricted_pod, string_map,
};
pub use idle::{IdleCheck, describe_calls};
pub use pods::{
    describe_pods, find, hash_of, is_sidecar, node_of, phase_of, pod_ready, sidecar_names,
    sidecar_uids, sidecars, sidecars_of, uid_of, wait_pod,
};
pub use policy_status::{
    cond, cond_is, converged, describe_policy, generation_observed, policy_table, status_current,
    table_columns,
};
pub use poll::{poll, wait_until};
pub use recorder::{PodRecorder, Seen};
pub use scene::{Scene, create_all, create_pods};
pub use yaml::{repo_path, yaml_documents, yaml_file_documents, yaml_files};

/// How long a test waits for the cluster to reach an expected state. Generous: tests
/// normally get there in seconds, but they share two cores with the control plane.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Length of every "nothing (more) happens" check.
pub const QUIET: Duration = Duration::from_secs(5);
