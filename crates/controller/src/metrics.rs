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

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles by controller and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile duration by controller.
    pub reconcile_seconds: Family<ControllerLabel, Histogram>,
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
            sidecars_created: Counter::default(),
            sidecars_deleted: Family::default(),
            errors: Family::default(),
            status_writes: Counter::default(),
            watch_errors: Counter::default(),
            api_requests: Family::default(),
            pairs_not_converged: Gauge::default(),
            cached_pods: Gauge::default(),
            undecodable_objects: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under the `sidecar_operator` prefix.
    pub fn register(&self, reg: &mut Registry) {
        let r = reg.sub_registry_with_prefix("sidecar_operator");
        r.register(
            "reconciles",
            "Reconciles by controller and result",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Reconcile duration by controller",
            self.reconcile_seconds.clone(),
        );
        r.register(
            "sidecars_created",
            "Sidecar Pods created",
            self.sidecars_created.clone(),
        );
        r.register(
            "sidecars_deleted",
            "Sidecar Pods deleted, by reason",
            self.sidecars_deleted.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by error category",
            self.errors.clone(),
        );
        r.register(
            "status_writes",
            "SidecarPolicy status writes",
            self.status_writes.clone(),
        );
        r.register(
            "watch_errors",
            "Watch errors (each restarts the watch after a backoff)",
            self.watch_errors.clone(),
        );
        r.register(
            "api_requests",
            "Requests sent to the Kubernetes API, by verb and resource",
            self.api_requests.clone(),
        );
        r.register(
            "pairs_not_converged",
            "Eligible (Pod, policy) pairs still missing an up-to-date Ready sidecar",
            self.pairs_not_converged.clone(),
        );
        r.register(
            "cached_pods",
            "Pods held in the watch cache",
            self.cached_pods.clone(),
        );
        r.register(
            "undecodable_objects",
            "Objects received that do not decode (Pods skipped; policies reported InvalidSpec), by kind",
            self.undecodable_objects.clone(),
        );
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
