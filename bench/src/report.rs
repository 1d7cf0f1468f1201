//! The report: medians over the rounds ([`crate::rounds`]), as JSON; the Markdown table is
//! in [`crate::markdown`].

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::rounds::{FloorRound, Latency, OperatorRound, median, round3};
use crate::sys::Machine;

/// The API server's priority-and-fairness setting, as observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Apf {
    /// APF answered (response headers `X-Kubernetes-PF-*` present).
    pub enabled: bool,
    /// FlowSchema the benchmark's and the operator's admin requests are classified in.
    pub flow_schema: String,
    /// Their priority level.
    pub priority_level: String,
    /// How this was determined.
    pub note: String,
}

/// Everything the run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Main Pods (and sidecars) per round.
    pub n: usize,
    /// Rounds of each kind.
    pub rounds: usize,
    /// Namespaces per round.
    pub namespaces: usize,
    /// Requests in flight of the benchmark's client; also the operator's `--concurrency`.
    pub concurrency: usize,
    /// Median floor: N main + N sidecar creates, seconds.
    pub floor_s: f64,
    /// Median time of the floor's N sidecar creates alone.
    pub floor_sidecars_s: f64,
    /// Median convergence, seconds.
    pub converge_s: f64,
    /// `converge_s / floor_s` (goal ≤ 1.2).
    pub ratio: f64,
    /// Median ideal floor (each sidecar created as its main Pod's create returns), s.
    pub ideal_floor_s: f64,
    /// `converge_s / ideal_floor_s`: the headline.
    pub ratio_ideal: f64,
    /// Median (over rounds) of the ideal floor's latency percentiles.
    pub ideal_latency_ms: Latency,
    /// Median time to every policy Ready, seconds.
    pub ready_s: f64,
    /// Median time until the observer saw every sidecar Ready (kwok's part of `ready_s`).
    pub sidecars_ready_s: f64,
    /// Median (over rounds) of each latency percentile.
    pub latency_ms: Latency,
    /// Median requests per sidecar by verb (Events excluded).
    pub api_calls_per_sidecar: BTreeMap<String, f64>,
    /// Median event writes per sidecar.
    pub event_writes_per_sidecar: f64,
    /// Median pod reconciles per main Pod.
    pub reconciles_per_pod: f64,
    /// Median operator CPU seconds over the convergence.
    pub cpu_s: f64,
    /// Median peak RSS.
    pub peak_rss_bytes: u64,
    /// Median steady RSS.
    pub steady_rss_bytes: u64,
    /// Median RSS of the idle operator (no Pods).
    pub idle_rss_bytes: u64,
    /// Median bytes per cached Pod.
    pub bytes_per_cached_pod: f64,
    /// Median Pods in the operator's cache at steady state.
    pub cached_pods: f64,
    /// Largest number of idle writes over the rounds (goal 0).
    pub idle_writes: f64,
    /// Median idle CPU seconds.
    pub idle_cpu_s: f64,
    /// Idle period, seconds.
    pub idle_secs: u64,
    /// Median cold start, seconds.
    pub cold_start_s: f64,
    /// `cold_start_s / floor_sidecars_s`.
    pub cold_start_ratio: f64,
    /// Median peak RSS of the cold start.
    pub cold_start_peak_rss_bytes: u64,
    /// `cold_start_peak_rss_bytes / steady_rss_bytes` (goal ≤ 2).
    pub startup_peak_ratio: f64,
    /// Median rollout time, seconds.
    pub rollout_s: f64,
    /// Median sidecars re-created during the rollout beyond the N replacements.
    pub rollout_extra_sidecars: f64,
    /// Median requests per sidecar during the rollout, by verb (Events excluded).
    pub rollout_api_calls_per_sidecar: BTreeMap<String, f64>,
    /// `maxUnavailable` of the policies during the rollout.
    pub rollout_max_unavailable: String,
    /// Whose CPU and memory the figures are.
    pub cpu_rss_scope: String,
    /// How the operator ran (`process <path>` or `in-process`).
    pub operator: String,
    /// Operator flags that matter.
    pub operator_flags: String,
    /// The API server's priority and fairness.
    pub apf: Apf,
    /// Kubernetes version of the control plane.
    pub server_version: String,
    /// The machine.
    pub machine: Machine,
    /// Notes on the method.
    pub notes: Vec<String>,
    /// Raw floor rounds.
    pub floor_rounds: Vec<FloorRound>,
    /// Raw operator rounds.
    pub operator_rounds: Vec<OperatorRound>,
    /// Wall-clock seconds of the whole run.
    pub total_s: f64,
    /// The admission section (Container mode's webhook); `None` in process.
    pub admission: Option<crate::admission::Admission>,
    /// The repair section (Container mode's eviction of drifted Pods); `None` in process.
    pub repair: Option<crate::repair::RepairSection>,
    /// The cluster-policy section (one ClusterSidecarPolicy over several namespaces).
    pub cluster: Option<crate::cluster::ClusterSection>,
    /// `make bench-peers`: Kyverno doing the same job, in the same run.
    pub peers: Option<crate::peers::PeersSection>,
    /// The steady-churn section (Pods created and deleted at a fixed rate).
    pub churn: Option<crate::churn::ChurnSection>,
}

fn med<T>(rounds: &[T], f: impl Fn(&T) -> f64) -> f64 {
    round3(median(&rounds.iter().map(f).collect::<Vec<_>>()))
}

fn med_map<T>(rounds: &[T], f: impl Fn(&T) -> &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let keys: std::collections::BTreeSet<&String> =
        rounds.iter().flat_map(|r| f(r).keys()).collect();
    keys.into_iter()
        .map(|k| {
            (
                k.clone(),
                med(rounds, |r| f(r).get(k).copied().unwrap_or(0.0)),
            )
        })
        .collect()
}

impl Report {
    /// Fills the medians from the raw rounds.
    pub fn summarize(&mut self) {
        let f = &self.floor_rounds;
        let o = &self.operator_rounds;
        self.floor_s = med(f, |r| r.floor_s);
        self.floor_sidecars_s = med(f, |r| r.sidecars_s);
        self.converge_s = med(o, |r| r.convergence.converge_s);
        self.ratio = if self.floor_s > 0.0 {
            round3(self.converge_s / self.floor_s)
        } else {
            0.0
        };
        self.ideal_floor_s = med(f, |r| r.ideal_s);
        self.ratio_ideal = if self.ideal_floor_s > 0.0 {
            round3(self.converge_s / self.ideal_floor_s)
        } else {
            0.0
        };
        self.ideal_latency_ms = Latency {
            p50: med(f, |r| r.ideal_latency_ms.p50),
            p90: med(f, |r| r.ideal_latency_ms.p90),
            p99: med(f, |r| r.ideal_latency_ms.p99),
            max: med(f, |r| r.ideal_latency_ms.max),
            count: f
                .iter()
                .map(|r| r.ideal_latency_ms.count)
                .max()
                .unwrap_or(0),
            negative: f.iter().map(|r| r.ideal_latency_ms.negative).sum(),
        };
        self.ready_s = med(o, |r| r.convergence.ready_s);
        self.latency_ms = Latency {
            p50: med(o, |r| r.convergence.latency_ms.p50),
            p90: med(o, |r| r.convergence.latency_ms.p90),
            p99: med(o, |r| r.convergence.latency_ms.p99),
            max: med(o, |r| r.convergence.latency_ms.max),
            count: o
                .iter()
                .map(|r| r.convergence.latency_ms.count)
                .min()
                .unwrap_or(0),
            negative: o
                .iter()
                .map(|r| r.convergence.latency_ms.negative)
                .max()
                .unwrap_or(0),
        };
        self.api_calls_per_sidecar = med_map(o, |r| &r.cost.api_calls_per_sidecar);
        self.event_writes_per_sidecar = med(o, |r| r.cost.event_writes_per_sidecar);
        self.reconciles_per_pod = med(o, |r| r.cost.reconciles_per_pod);
        self.cpu_s = med(o, |r| r.cost.cpu_s);
        self.peak_rss_bytes = med(o, |r| r.memory.peak_rss_bytes as f64) as u64;
        self.steady_rss_bytes = med(o, |r| r.memory.steady_rss_bytes as f64) as u64;
        self.idle_rss_bytes = med(o, |r| r.memory.idle_rss_bytes as f64) as u64;
        self.bytes_per_cached_pod = med(o, |r| r.memory.bytes_per_cached_pod).round();
        self.cached_pods = med(o, |r| r.memory.cached_pods);
        self.idle_writes = o.iter().map(|r| r.idle.idle_writes).fold(0.0, f64::max);
        self.idle_cpu_s = med(o, |r| r.idle.idle_cpu_s);
        self.cold_start_s = med(o, |r| r.cold_start.cold_start_s);
        self.cold_start_ratio = if self.floor_sidecars_s > 0.0 {
            round3(self.cold_start_s / self.floor_sidecars_s)
        } else {
            0.0
        };
        self.cold_start_peak_rss_bytes =
            med(o, |r| r.cold_start.cold_start_peak_rss_bytes as f64) as u64;
        self.startup_peak_ratio = if self.steady_rss_bytes > 0 {
            round3(self.cold_start_peak_rss_bytes as f64 / self.steady_rss_bytes as f64)
        } else {
            0.0
        };
        self.rollout_s = med(o, |r| r.rollout.rollout_s);
        self.rollout_extra_sidecars = med(o, |r| r.rollout.rollout_extra_sidecars as f64);
        self.rollout_api_calls_per_sidecar =
            med_map(o, |r| &r.rollout.rollout_api_calls_per_sidecar);
        self.sidecars_ready_s = med(o, |r| r.convergence.sidecars_ready_s);
    }
}
