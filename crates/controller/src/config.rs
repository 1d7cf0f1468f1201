//! How an operator instance runs: [`OperatorConfig`].

use std::sync::Arc;
use std::time::Duration;

use crate::{Metrics, WriteGate};

/// How an operator instance runs.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Watch only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Manage only namespaces whose labels match this selector (e.g. `sidecars=enabled`);
    /// combined with `namespace`, both must hold. One way to shard a large cluster over
    /// several operator instances, each with its own Lease. A namespace relabelled from
    /// one instance's selector to another's keeps its sidecars: the instance that loses
    /// it forgets its objects (it never deletes because of the move), the one that gains
    /// it lists that namespace alone and adopts what is there.
    pub namespace_selector: Option<String>,
    /// Concurrent pod reconciles.
    pub concurrency: usize,
    /// Delay that coalesces Pod events into one status computation per policy.
    pub status_debounce: Duration,
    /// Reporting instance for Events (e.g. the Pod name).
    pub instance: Option<String>,
    /// How long [`Operator::start`] waits for the caches to sync.
    pub sync_timeout: Duration,
    /// Publish Normal events on main Pods (sidecar created / replaced).
    pub pod_events: bool,
    /// Writes are sent only while this gate is open (leader election opens it up to the
    /// renew deadline of the Lease); `None`: always.
    pub write_gate: Option<WriteGate>,
    /// Count into these metrics (shared by the operators one process runs in turn, and
    /// with its Lease client); `None`: fresh ones.
    pub metrics: Option<Arc<Metrics>>,
    /// Fault injection for tests: apply each Pod watch event this long after it arrives
    /// (a cache that lags the API server, as under a loaded API server). `None` in
    /// production.
    pub pod_watch_lag: Option<Duration>,
    /// Namespaces the admission webhook never serves: Container mode's repair evicts
    /// nothing there (default: kube-system, kube-public, kube-node-lease; the binary adds
    /// its own namespace).
    pub unserved_namespaces: Vec<String>,
    /// Watch ClusterSidecarPolicies (and every namespace's labels) and apply them in the
    /// namespaces this instance manages. Needs list/watch on clustersidecarpolicies and
    /// namespaces cluster-wide. Default: true; ignored (off) with `namespace` set. Without
    /// the ClusterSidecarPolicy CRD installed, there are none until it is.
    pub cluster_policies: bool,
    /// Which namespaces the admission webhook serves (Container mode's repair evicts only
    /// where a replacement would be injected). Default: every namespace.
    pub webhook: WebhookReach,
    /// How long an evicted Pod's controller has to create its replacement; past it, the
    /// repair of that workload halts (`ReplacementNotCreated`) and keeps its budget held.
    pub replacement_deadline: Duration,
}

/// Where the admission webhook injects.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookReach {
    /// No webhook runs: nothing would inject a replacement, so nothing is evicted.
    Off,
    /// Namespaces whose labels meet every requirement (none: every namespace), as the
    /// webhook configuration's `namespaceSelector`. With requirements, a namespace whose
    /// labels the operator does not watch (an instance of one namespace) counts as not
    /// served.
    Namespaces(Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement>),
}

impl Default for WebhookReach {
    fn default() -> Self {
        WebhookReach::Namespaces(Vec::new())
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            namespace: None,
            namespace_selector: None,
            concurrency: 16,
            status_debounce: Duration::from_millis(500),
            instance: None,
            sync_timeout: Duration::from_secs(120),
            pod_events: true,
            write_gate: None,
            metrics: None,
            pod_watch_lag: None,
            unserved_namespaces: sidecar_api::constants::SYSTEM_NAMESPACES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            cluster_policies: true,
            webhook: WebhookReach::default(),
            replacement_deadline: Duration::from_secs(120),
        }
    }
}

impl OperatorConfig {
    /// Watches one namespace.
    pub fn namespace(ns: &str) -> Self {
        OperatorConfig {
            namespace: Some(ns.to_string()),
            ..Self::default()
        }
    }

    /// Watches all namespaces.
    pub fn all_namespaces() -> Self {
        Self::default()
    }
}
