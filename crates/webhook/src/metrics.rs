//! The webhook's metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the admissions counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `injected`, `skipped` or `error`.
    pub result: &'static str,
    /// Why a Pod was skipped (`no_policy`, `not_selected`, `opted_out`, `operator_pod`,
    /// `mirror_pod`, `already_injected`, `name_taken`, `refused_by_namespace`,
    /// `not_a_pod_create`), empty otherwise.
    pub reason: &'static str,
}

/// Labels of the refused-requests counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `busy` (503: no request slot in time), `timeout` (408: the body came too slowly)
    /// or `too_large` (413).
    pub reason: &'static str,
}

/// Counters and gauges of the webhook.
#[derive(Debug)]
pub struct WebhookMetrics {
    pub admissions: Family<AdmissionLabels, Counter>,
    pub duration: Histogram,
    pub certificate_expiry: Gauge,
    pub certificate_errors: Counter,
    pub connections: Counter,
    /// Connections open now, handshaking ones included (at most
    /// [`crate::ServerLimits::max_connections`]).
    pub open_connections: Gauge,
    pub refused: Family<RefusedLabels, Counter>,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        // 50 µs to ~200 ms: an answer from memory takes well under a millisecond.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 12);
        WebhookMetrics {
            admissions: Family::default(),
            duration: Histogram::new(buckets),
            certificate_expiry: Gauge::default(),
            certificate_errors: Counter::default(),
            connections: Counter::default(),
            open_connections: Gauge::default(),
            refused: Family::default(),
        }
    }
}

impl WebhookMetrics {
    /// Registers every metric under `sidecar_webhook_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("sidecar_webhook");
        r.register(
            "admissions",
            "Pod admissions answered, by result and reason",
            self.admissions.clone(),
        );
        r.register(
            "admission_duration_seconds",
            "Time to answer one admission review, from the request's body to the response's",
            self.duration.clone(),
        );
        r.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires (Unix seconds)",
            self.certificate_expiry.clone(),
        );
        r.register(
            "certificate_errors",
            "Rounds in which the managed certificate could not be read, renewed or trusted",
            self.certificate_errors.clone(),
        );
        r.register(
            "connections",
            "TCP connections accepted (each costs a TLS handshake; the API server keeps them open)",
            self.connections.clone(),
        );
        r.register(
            "open_connections",
            "TCP connections open now, handshaking ones included",
            self.open_connections.clone(),
        );
        r.register(
            "requests_refused",
            "Requests refused by the server's limits: busy (503), timeout (408), too_large (413)",
            self.refused.clone(),
        );
    }
}
