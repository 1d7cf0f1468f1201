//! The raw values of one round: a floor round, and an operator round grouped by phase
//! (convergence, its cost, memory, idle, rollout, cold start). The groups are flattened
//! into one JSON object per round, so `report.json` keeps its keys.

use std::collections::BTreeMap;

use serde::Serialize;

/// Percentiles of a latency sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Number of samples (main Pods with both events seen).
    pub count: usize,
    /// Samples below 0 (the sidecar's event arrived before its main Pod's: two
    /// independent watch streams), counted as 0 in the percentiles.
    pub negative: usize,
}

impl Latency {
    /// Nearest-rank percentiles of `samples`.
    pub fn of(samples: &[f64]) -> Latency {
        let mut v: Vec<f64> = samples.iter().map(|x| x.max(0.0)).collect();
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| nearest_rank(&v, p);
        Latency {
            p50: round3(pct(50.0)),
            p90: round3(pct(90.0)),
            p99: round3(pct(99.0)),
            max: round3(v.last().copied().unwrap_or(0.0)),
            count: v.len(),
            negative: samples.iter().filter(|x| **x < 0.0).count(),
        }
    }
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of `sorted` (ascending); 0 when empty.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Rounds to 3 decimals (readable JSON).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The median (mean of the two middle values for an even count; 0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One floor round: a plain client creates N main Pods, then N sidecar-shaped Pods.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloorRound {
    /// Round number (1-based).
    pub round: usize,
    /// Seconds to create the N main Pods.
    pub mains_s: f64,
    /// Seconds to create the N sidecar-shaped Pods.
    pub sidecars_s: f64,
    /// `mains_s + sidecars_s`.
    pub floor_s: f64,
    /// Sidecar-shaped Pods the observer saw.
    pub sidecars_seen: usize,
    /// The ideal floor: each sidecar created as its main Pod's create returns; seconds
    /// to the N-th sidecar at the watcher.
    pub ideal_s: f64,
    /// Its Pod → sidecar latencies at the watcher.
    pub ideal_latency_ms: Latency,
    /// For the pictures (not in report.json): seconds from the first main-Pod create at
    /// which each sidecar appeared, phased floor and ideal floor; the ideal floor's
    /// latencies, in ms.
    #[serde(skip)]
    pub curves: Curves,
}

/// Raw series behind the pictures (`pictures.rs`), kept out of report.json.
#[derive(Debug, Clone, Default)]
pub struct Curves {
    /// Seconds after the first main-Pod create at which each sidecar appeared, sorted.
    pub sidecars_s: Vec<f64>,
    /// The same for the ideal floor (floor rounds only).
    pub ideal_sidecars_s: Vec<f64>,
    /// Pod → sidecar latencies, ms (the ideal floor's in a floor round).
    pub latencies_ms: Vec<f64>,
}

/// One operator round, by phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OperatorRound {
    /// Round number (1-based).
    pub round: usize,
    /// How fast the sidecars came.
    #[serde(flatten)]
    pub convergence: Convergence,
    /// What the convergence cost the operator (requests, reconciles, CPU).
    #[serde(flatten)]
    pub cost: ConvergenceCost,
    /// Memory of the first instance.
    #[serde(flatten)]
    pub memory: Memory,
    /// The idle period after convergence.
    #[serde(flatten)]
    pub idle: Idle,
    /// The rollout (template change), by the cold-started instance.
    #[serde(flatten)]
    pub rollout: Rollout,
    /// A fresh instance started with the N main Pods present and no sidecar.
    #[serde(flatten)]
    pub cold_start: ColdStart,
    /// Watch errors and failed reconciles of the round (both instances).
    pub errors: BTreeMap<String, f64>,
}

/// How fast the first instance converged.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Convergence {
    /// For the pictures (not in report.json).
    #[serde(skip)]
    pub curves: Curves,
    /// Seconds from the operator's start to `/readyz` 200 (empty cluster).
    pub startup_s: f64,
    /// Seconds from the first main-Pod create to the observer's N-th sidecar.
    pub converge_s: f64,
    /// Seconds the same client took to create the N main Pods (meanwhile).
    pub mains_s: f64,
    /// Seconds from the first main-Pod create until every policy is Ready=True with
    /// matchedPods equal to its Pods.
    pub ready_s: f64,
    /// Seconds from the first main-Pod create until the observer saw every sidecar
    /// bound to a Node (by the scheduler).
    pub sidecars_bound_s: f64,
    /// … and every sidecar Ready (by kwok); `ready_s` minus this is the status lag.
    pub sidecars_ready_s: f64,
    /// `converge_s / floor_s` of the floor round before it.
    pub ratio: f64,
    /// `converge_s /` the ideal floor of the same round.
    pub ratio_ideal: f64,
    /// Pod → sidecar latency from the observer's receive times.
    pub latency_ms: Latency,
    /// Distinct sidecars the observer saw.
    pub sidecars_seen: usize,
}

/// What the convergence cost the operator (first create → Ready + 2 s).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConvergenceCost {
    /// Operator requests per sidecar, by verb, Events excluded.
    pub api_calls_per_sidecar: BTreeMap<String, f64>,
    /// Same, `resource → verb`, Events included.
    pub api_calls_per_sidecar_by_resource: BTreeMap<String, BTreeMap<String, f64>>,
    /// Event creates/patches per sidecar.
    pub event_writes_per_sidecar: f64,
    /// Pod-controller reconciles per main Pod.
    pub reconciles_per_pod: f64,
    /// Policy-controller reconciles (absolute).
    pub policy_reconciles: f64,
    /// Status writes (absolute).
    pub status_writes: f64,
    /// Mean pod-reconcile duration, ms.
    pub mean_pod_reconcile_ms: f64,
    /// Operator CPU seconds over the convergence.
    pub cpu_s: f64,
}

/// Memory of the first instance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// Operator RSS with the policies created and their first status written, before any
    /// Pod existed: the baseline of `bytes_per_cached_pod`.
    pub idle_rss_bytes: u64,
    /// Operator RSS right after it was ready, before the policies existed.
    pub rss_before_policies_bytes: u64,
    /// Pods in its cache then.
    pub idle_cached_pods: f64,
    /// Peak RSS of the instance (start → end of the idle period).
    pub peak_rss_bytes: u64,
    /// RSS 2 s after Ready.
    pub rss_after_converge_bytes: u64,
    /// RSS at the end of the idle period.
    pub steady_rss_bytes: u64,
    /// Pods in its cache then.
    pub cached_pods: f64,
    /// `(steady − idle RSS) / (cached − idle cached Pods)`.
    pub bytes_per_cached_pod: f64,
}

/// The idle period after convergence.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Idle {
    /// Idle period, seconds.
    pub idle_s: f64,
    /// Writes during the idle period (create + delete + patch + update, Events included).
    pub idle_writes: f64,
    /// Idle writes by `resource/verb`.
    pub idle_writes_by: BTreeMap<String, f64>,
    /// CPU seconds during the idle period.
    pub idle_cpu_s: f64,
}

/// The rollout (template change), by the cold-started instance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rollout {
    /// Seconds from the template change until every sidecar carries the new hash (the
    /// step timeout when it did not finish: see `rollout_finished`).
    pub rollout_s: f64,
    /// The rollout finished within the step timeout.
    pub rollout_finished: bool,
    /// Sidecars created during the rollout beyond the N replacements: replacements that
    /// something else deleted again (with kwok: its name-based deletes, see the notes).
    pub rollout_extra_sidecars: usize,
    /// Requests per sidecar during the rollout, by verb (Events excluded).
    pub rollout_api_calls_per_sidecar: BTreeMap<String, f64>,
}

/// A fresh instance started with the N main Pods present and no sidecar.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ColdStart {
    /// Seconds from starting a fresh operator (N main Pods, no sidecar) to N sidecars.
    pub cold_start_s: f64,
    /// `cold_start_s / sidecars_s` of the floor round before it.
    pub cold_start_ratio: f64,
    /// Seconds of that to `/readyz` 200 (caches listed).
    pub cold_start_ready_s: f64,
    /// Peak RSS of the cold-started instance.
    pub cold_start_peak_rss_bytes: u64,
    /// Its RSS 2 s after every policy is Ready again.
    pub cold_start_steady_rss_bytes: u64,
    /// Its requests per sidecar, by verb (Events excluded).
    pub cold_start_api_calls_per_sidecar: BTreeMap<String, f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of(&v);
        assert_eq!(
            (l.p50, l.p90, l.p99, l.max, l.count),
            (50.0, 90.0, 99.0, 100.0, 100)
        );
        let l = Latency::of(&[-1.0, 3.0]);
        assert_eq!((l.p50, l.max, l.negative), (0.0, 3.0, 1));
        assert_eq!(Latency::of(&[]).count, 0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
