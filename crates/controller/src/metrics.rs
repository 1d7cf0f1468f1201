//! Prometheus metrics of one operator instance (prometheus-client). Label values are
//! bounded sets (controller names, verbs, reasons, error categories), never free text.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `controller`, `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `pod` or `policy`.
    pub controller: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// One label: `controller`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// `pod` or `policy`.
    pub controller: &'static str,
}

/// One label: `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (bounded set).
    pub reason: &'static str,
}

/// One label: `category`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    /// Error category (bounded set).
    pub category: &'static str,
}

/// One label: `verb`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    /// Kubernetes verb.
    pub verb: &'static str,
    /// `pods`, `sidecarpolicies`, `events`, `leases` or `other`.
    pub resource: &'static str,
}

/// The prefix of every metric's name: `sidecar_operator_<name>`, where `<name>` is one of the
/// [`name`] constants. Counters are exposed with a `_total` suffix, histograms as
/// `_bucket`/`_sum`/`_count`.
pub const PREFIX: &str = "sidecar_operator";

/// The names the metrics are registered under (below [`PREFIX`]), for readers of
/// `/metrics` (the benchmark, the tests) as much as for [`Metrics::register`].
pub mod name {
    /// [`super::Metrics::reconciles`].
    pub const RECONCILES: &str = "reconciles";
    /// [`super::Metrics::reconcile_seconds`].
    pub const RECONCILE_DURATION_SECONDS: &str = "reconcile_duration_seconds";
    /// Histogram: how long a key waited in its work queue before a worker took it.
    pub const QUEUE_WAIT_SECONDS: &str = "queue_wait_seconds";
    /// [`super::Metrics::sidecars_created`].
    pub const SIDECARS_CREATED: &str = "sidecars_created";
    /// [`super::Metrics::sidecars_deleted`].
    pub const SIDECARS_DELETED: &str = "sidecars_deleted";
    /// [`super::Metrics::errors`].
    pub const RECONCILE_ERRORS: &str = "reconcile_errors";
    /// [`super::Metrics::status_writes`].
    pub const STATUS_WRITES: &str = "status_writes";
    /// [`super::Metrics::watch_errors`].
    pub const WATCH_ERRORS: &str = "watch_errors";
    /// [`super::Metrics::api_requests`].
    pub const API_REQUESTS: &str = "api_requests";
    /// [`super::Metrics::pairs_not_converged`].
    pub const PAIRS_NOT_CONVERGED: &str = "pairs_not_converged";
    /// [`super::Metrics::cached_pods`].
    pub const CACHED_PODS: &str = "cached_pods";
    /// [`super::Metrics::undecodable_objects`].
    pub const UNDECODABLE_OBJECTS: &str = "undecodable_objects";
    /// [`super::Metrics::drifted_pods`].
    pub const DRIFTED_PODS: &str = "drifted_pods";
    /// [`super::Metrics::evictions`].
    pub const EVICTIONS: &str = "evictions";
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles by controller and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile duration by controller.
    pub reconcile_seconds: Family<ControllerLabel, Histogram>,
    /// Time from a key's (immediate) add to a worker taking it, by controller: the
    /// queueing part of a Pod's time to its sidecar.
    pub queue_wait_seconds: Family<ControllerLabel, Histogram>,
    /// Sidecars created.
    pub sidecars_created: Counter,
    /// Sidecars deleted, by reason.
    pub sidecars_deleted: Family<ReasonLabel, Counter>,
    /// Failed reconciles by error category.
    pub errors: Family<CategoryLabel, Counter>,
    /// Policy status writes.
    pub status_writes: Counter,
    /// Watch errors (each followed by a backoff and a restart of the watch).
    pub watch_errors: Counter,
    /// HTTP requests sent to the API server, by verb.
    pub api_requests: Family<VerbLabel, Counter>,
    /// Eligible (Pod, policy) pairs without an up-to-date sidecar, summed over policies.
    pub pairs_not_converged: Gauge,
    /// Pods in the cache.
    pub cached_pods: Gauge,
    /// Objects received that do not decode into the operator's types: such Pods are
    /// skipped, such policies are reported `InvalidSpec` on themselves.
    pub undecodable_objects: Family<KindLabel, Counter>,
    /// Container mode: selected Pods without the current sidecars, per policy and drift
    /// (series of policies without drift are removed).
    pub drifted_pods: Family<DriftLabels, Gauge>,
    /// Container mode's repair: evictions sent, by result.
    pub evictions: Family<ResultLabel, Counter>,
}

/// Labels of a policy's drift gauge: `namespace`, `policy`, `drift`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub policy: String,
    /// `missing` or `outdated`.
    pub drift: &'static str,
}

/// One label: `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `evicted`, `blocked` (a PodDisruptionBudget), `gone` or `error`.
    pub result: &'static str,
}

/// Label: the kind of an object (`pod`, `sidecarpolicy`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Kind.
    pub kind: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Family::default(),
            reconcile_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 4.0, 10))
            }),
            // 0.1 ms to 3.3 s by doubling: fine enough to place a p99 of a few ms.
            queue_wait_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            sidecars_created: Counter::default(),
            sidecars_deleted: Family::default(),
            errors: Family::default(),
            status_writes: Counter::default(),
            watch_errors: Counter::default(),
            api_requests: Family::default(),
            pairs_not_converged: Gauge::default(),
            cached_pods: Gauge::default(),
            undecodable_objects: Family::default(),
            drifted_pods: Family::default(),
            evictions: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under the `sidecar_operator` prefix.
    pub fn register(&self, reg: &mut Registry) {
        let r = reg.sub_registry_with_prefix(PREFIX);
        r.register(
            name::RECONCILES,
            "Reconciles by controller and result",
            self.reconciles.clone(),
        );
        r.register(
            name::RECONCILE_DURATION_SECONDS,
            "Reconcile duration by controller",
            self.reconcile_seconds.clone(),
        );
        r.register(
            name::QUEUE_WAIT_SECONDS,
            "Time a key waited in its work queue before a worker took it, by controller",
            self.queue_wait_seconds.clone(),
        );
        r.register(
            name::SIDECARS_CREATED,
            "Sidecar Pods created",
            self.sidecars_created.clone(),
        );
        r.register(
            name::SIDECARS_DELETED,
            "Sidecar Pods deleted, by reason",
            self.sidecars_deleted.clone(),
        );
        r.register(
            name::RECONCILE_ERRORS,
            "Failed reconciles by error category",
            self.errors.clone(),
        );
        r.register(
            name::STATUS_WRITES,
            "SidecarPolicy status writes",
            self.status_writes.clone(),
        );
        r.register(
            name::WATCH_ERRORS,
            "Watch errors (each restarts the watch after a backoff)",
            self.watch_errors.clone(),
        );
        r.register(
            name::API_REQUESTS,
            "Requests sent to the Kubernetes API, by verb and resource",
            self.api_requests.clone(),
        );
        r.register(
            name::PAIRS_NOT_CONVERGED,
            "Eligible (Pod, policy) pairs still missing an up-to-date Ready sidecar",
            self.pairs_not_converged.clone(),
        );
        r.register(
            name::CACHED_PODS,
            "Pods held in the watch cache",
            self.cached_pods.clone(),
        );
        r.register(
            name::UNDECODABLE_OBJECTS,
            "Objects received that do not decode (Pods skipped; policies reported InvalidSpec), by kind",
            self.undecodable_objects.clone(),
        );
        r.register(
            name::DRIFTED_PODS,
            "Container mode: selected Pods without the policy's current sidecars, by policy and drift (missing, refused: their namespace would refuse them with the sidecars, outdated)",
            self.drifted_pods.clone(),
        );
        r.register(
            name::EVICTIONS,
            "Container mode: evictions of drifted Pods, by result (evicted, blocked by a PodDisruptionBudget, gone, error)",
            self.evictions.clone(),
        );
    }

    /// The queue-wait histogram of `controller` (shared: observations land in the family).
    pub(crate) fn queue_wait(&self, controller: &'static str) -> Histogram {
        self.queue_wait_seconds
            .get_or_create(&ControllerLabel { controller })
            .clone()
    }

    pub(crate) fn evicted(&self, result: &'static str) {
        self.evictions.get_or_create(&ResultLabel { result }).inc();
    }

    /// Sets policy `ns/name`'s drift gauges (removing the zero series).
    pub(crate) fn set_drift(&self, ns: &str, name: &str, drift: Option<&sidecar_api::PolicyDrift>) {
        let n = |f: fn(&sidecar_api::PolicyDrift) -> i32| drift.map_or(0, |d| i64::from(f(d)));
        let counts = [
            ("missing", n(|d| d.missing_pods)),
            ("refused", n(|d| d.refused_pods)),
            ("outdated", n(|d| d.outdated_pods)),
        ];
        for (drift, n) in counts {
            let labels = DriftLabels {
                namespace: ns.into(),
                policy: name.into(),
                drift,
            };
            if n == 0 {
                self.drifted_pods.remove(&labels);
            } else {
                self.drifted_pods.get_or_create(&labels).set(n);
            }
        }
    }

    pub(crate) fn reconciled(&self, controller: &'static str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        self.reconcile_seconds
            .get_or_create(&ControllerLabel { controller })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn deleted(&self, reason: &'static str) {
        self.sidecars_deleted
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Reconciles so far for `controller` (both results).
    pub fn reconcile_count(&self, controller: &'static str) -> u64 {
        ["ok", "error"]
            .iter()
            .map(|result| {
                self.reconciles
                    .get_or_create(&ReconcileLabels { controller, result })
                    .get()
            })
            .sum()
    }
}
