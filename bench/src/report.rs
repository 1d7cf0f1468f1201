//! The report: per-round raw values, medians, JSON and Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::sys::Machine;

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
        let pct = |p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
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
}

/// One operator round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OperatorRound {
    /// Round number (1-based).
    pub round: usize,
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
    /// Pod → sidecar latency from the observer's receive times.
    pub latency_ms: Latency,
    /// Distinct sidecars the observer saw.
    pub sidecars_seen: usize,
    /// Operator requests per sidecar over the convergence (first create → Ready + 2 s),
    /// by verb, Events excluded.
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
    /// Operator RSS right after it was ready, before any Pod existed.
    pub idle_rss_bytes: u64,
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
    /// Idle period, seconds.
    pub idle_s: f64,
    /// Writes during the idle period (create + delete + patch + update, Events included).
    pub idle_writes: f64,
    /// Idle writes by `resource/verb`.
    pub idle_writes_by: BTreeMap<String, f64>,
    /// CPU seconds during the idle period.
    pub idle_cpu_s: f64,
    /// Seconds from the template change until every sidecar carries the new hash (the
    /// step timeout when it did not finish: see `rollout_finished`).
    pub rollout_s: f64,
    /// The rollout finished within the step timeout.
    pub rollout_finished: bool,
    /// Sidecars created during the rollout beyond the N replacements: replacements that
    /// something else deleted again (with kwok: its name-based deletes, see the notes).
    pub rollout_extra_sidecars: usize,
    /// Requests per sidecar during the rollout (by the cold-started instance), by verb
    /// (Events excluded).
    pub rollout_api_calls_per_sidecar: BTreeMap<String, f64>,
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
    /// Watch errors and failed reconciles of the round (both instances).
    pub errors: BTreeMap<String, f64>,
}

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
        self.converge_s = med(o, |r| r.converge_s);
        self.ratio = if self.floor_s > 0.0 {
            round3(self.converge_s / self.floor_s)
        } else {
            0.0
        };
        self.ready_s = med(o, |r| r.ready_s);
        self.latency_ms = Latency {
            p50: med(o, |r| r.latency_ms.p50),
            p90: med(o, |r| r.latency_ms.p90),
            p99: med(o, |r| r.latency_ms.p99),
            max: med(o, |r| r.latency_ms.max),
            count: o.iter().map(|r| r.latency_ms.count).min().unwrap_or(0),
            negative: o.iter().map(|r| r.latency_ms.negative).max().unwrap_or(0),
        };
        self.api_calls_per_sidecar = med_map(o, |r| &r.api_calls_per_sidecar);
        self.event_writes_per_sidecar = med(o, |r| r.event_writes_per_sidecar);
        self.reconciles_per_pod = med(o, |r| r.reconciles_per_pod);
        self.cpu_s = med(o, |r| r.cpu_s);
        self.peak_rss_bytes = med(o, |r| r.peak_rss_bytes as f64) as u64;
        self.steady_rss_bytes = med(o, |r| r.steady_rss_bytes as f64) as u64;
        self.idle_rss_bytes = med(o, |r| r.idle_rss_bytes as f64) as u64;
        self.bytes_per_cached_pod = med(o, |r| r.bytes_per_cached_pod).round();
        self.cached_pods = med(o, |r| r.cached_pods);
        self.idle_writes = o.iter().map(|r| r.idle_writes).fold(0.0, f64::max);
        self.idle_cpu_s = med(o, |r| r.idle_cpu_s);
        self.cold_start_s = med(o, |r| r.cold_start_s);
        self.cold_start_ratio = if self.floor_sidecars_s > 0.0 {
            round3(self.cold_start_s / self.floor_sidecars_s)
        } else {
            0.0
        };
        self.cold_start_peak_rss_bytes = med(o, |r| r.cold_start_peak_rss_bytes as f64) as u64;
        self.startup_peak_ratio = if self.steady_rss_bytes > 0 {
            round3(self.cold_start_peak_rss_bytes as f64 / self.steady_rss_bytes as f64)
        } else {
            0.0
        };
        self.rollout_s = med(o, |r| r.rollout_s);
        self.rollout_extra_sidecars = med(o, |r| r.rollout_extra_sidecars as f64);
        self.rollout_api_calls_per_sidecar = med_map(o, |r| &r.rollout_api_calls_per_sidecar);
        self.sidecars_ready_s = med(o, |r| r.sidecars_ready_s);
    }

    /// The Markdown table.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "# sidecar-operator benchmark: N = {} main Pods ({} namespace(s)), {} round(s)\n",
            self.n, self.namespaces, self.rounds
        );
        let _ = writeln!(
            s,
            "Machine: {} CPU(s), {}, {:.1} GiB RAM, kernel {}; load average {} at start, {} at end. \
             Control plane: Kubernetes {} (local etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok), \
             priority and fairness {} (admin requests: FlowSchema `{}`, priority level `{}`). \
             Operator: {} ({}); CPU and memory of the {}.\n",
            m.nproc,
            m.cpu_model,
            m.mem_total_bytes as f64 / (1u64 << 30) as f64,
            m.kernel,
            m.loadavg_start,
            m.loadavg_end,
            self.server_version,
            if self.apf.enabled { "on" } else { "off" },
            self.apf.flow_schema,
            self.apf.priority_level,
            self.operator,
            self.operator_flags,
            self.cpu_rss_scope,
        );
        let rounds_f = |f: &dyn Fn(&OperatorRound) -> String| -> String {
            self.operator_rounds
                .iter()
                .map(f)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let floors = |f: &dyn Fn(&FloorRound) -> String| -> String {
            self.floor_rounds
                .iter()
                .map(f)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
        let verbs = |m: &BTreeMap<String, f64>| -> String {
            let v: Vec<String> = m
                .iter()
                .filter(|(_, v)| **v != 0.0)
                .map(|(k, v)| format!("{k} {v:.3}"))
                .collect();
            if v.is_empty() {
                "none".into()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(s, "| metric | median | per round | goal |");
        let _ = writeln!(s, "|---|---|---|---|");
        let mut row = |name: &str, value: String, per: String, goal: &str| {
            let _ = writeln!(s, "| {name} | {value} | {per} | {goal} |");
        };
        row(
            "floor: N main + N sidecar creates (s)",
            format!("{:.2}", self.floor_s),
            floors(&|r| format!("{:.2}", r.floor_s)),
            "",
        );
        row(
            "floor: N sidecar creates alone (s)",
            format!("{:.2}", self.floor_sidecars_s),
            floors(&|r| format!("{:.2}", r.sidecars_s)),
            "",
        );
        row(
            "convergence: N main creates → N sidecars seen (s)",
            format!("{:.2}", self.converge_s),
            rounds_f(&|r| format!("{:.2}", r.converge_s)),
            "",
        );
        row(
            "**ratio convergence / floor**",
            format!("**{:.2}**", self.ratio),
            rounds_f(&|r| format!("{:.2}", r.ratio)),
            "≤ 1.2",
        );
        row(
            "every policy Ready=True (s)",
            format!("{:.2}", self.ready_s),
            rounds_f(&|r| {
                format!(
                    "{:.2} (sidecars bound {:.2}, Ready {:.2})",
                    r.ready_s, r.sidecars_bound_s, r.sidecars_ready_s
                )
            }),
            "",
        );
        row(
            "Pod → sidecar latency p50 / p90 / p99 / max (ms)",
            format!(
                "{:.0} / {:.0} / {:.0} / {:.0}",
                self.latency_ms.p50, self.latency_ms.p90, self.latency_ms.p99, self.latency_ms.max
            ),
            rounds_f(&|r| {
                format!(
                    "{:.0}/{:.0}/{:.0}/{:.0} (n={})",
                    r.latency_ms.p50,
                    r.latency_ms.p90,
                    r.latency_ms.p99,
                    r.latency_ms.max,
                    r.latency_ms.count
                )
            }),
            "reported",
        );
        row(
            "API requests per sidecar (Events apart)",
            verbs(&self.api_calls_per_sidecar),
            rounds_f(&|r| verbs(&r.api_calls_per_sidecar)),
            "create 1, no get/list",
        );
        row(
            "Event writes per sidecar",
            format!("{:.3}", self.event_writes_per_sidecar),
            rounds_f(&|r| format!("{:.3}", r.event_writes_per_sidecar)),
            "",
        );
        row(
            "pod reconciles per main Pod",
            format!("{:.2}", self.reconciles_per_pod),
            rounds_f(&|r| format!("{:.2}", r.reconciles_per_pod)),
            "",
        );
        row(
            "operator CPU during convergence (s)",
            format!("{:.2}", self.cpu_s),
            rounds_f(&|r| format!("{:.2}", r.cpu_s)),
            "",
        );
        row(
            "peak RSS",
            mib(self.peak_rss_bytes),
            rounds_f(&|r| mib(r.peak_rss_bytes)),
            "",
        );
        row(
            "idle RSS (0 Pods) / steady RSS",
            format!(
                "{} / {}",
                mib(self.idle_rss_bytes),
                mib(self.steady_rss_bytes)
            ),
            rounds_f(&|r| format!("{} / {}", mib(r.idle_rss_bytes), mib(r.steady_rss_bytes))),
            "",
        );
        row(
            "bytes per cached Pod",
            format!(
                "{:.0} ({:.0} Pods cached)",
                self.bytes_per_cached_pod, self.cached_pods
            ),
            rounds_f(&|r| format!("{:.0}", r.bytes_per_cached_pod)),
            "≤ 5 KiB, goal ≤ 2 KiB",
        );
        row(
            &format!(
                "idle {} s: API writes (max over rounds) / CPU s",
                self.idle_secs
            ),
            format!("{:.0} / {:.2}", self.idle_writes, self.idle_cpu_s),
            rounds_f(&|r| format!("{:.0} / {:.2}", r.idle_writes, r.idle_cpu_s)),
            "0 writes",
        );
        row(
            &format!(
                "rollout of N sidecars, maxUnavailable {} (s)",
                self.rollout_max_unavailable
            ),
            format!("{:.2}", self.rollout_s),
            rounds_f(&|r| {
                format!(
                    "{}{:.2} ({} extra sidecars; creates/sidecar {:.2})",
                    if r.rollout_finished {
                        ""
                    } else {
                        "not done after "
                    },
                    r.rollout_s,
                    r.rollout_extra_sidecars,
                    r.rollout_api_calls_per_sidecar
                        .get("create")
                        .copied()
                        .unwrap_or(0.0)
                )
            }),
            "",
        );
        row(
            "cold start: N main Pods exist → N sidecars (s)",
            format!("{:.2}", self.cold_start_s),
            rounds_f(&|r| format!("{:.2} (ready {:.2})", r.cold_start_s, r.cold_start_ready_s)),
            "",
        );
        row(
            "cold start / floor of N sidecar creates",
            format!("{:.2}", self.cold_start_ratio),
            rounds_f(&|r| format!("{:.2}", r.cold_start_ratio)),
            "",
        );
        row(
            "start-up peak RSS / steady RSS",
            format!(
                "{:.2} ({})",
                self.startup_peak_ratio,
                mib(self.cold_start_peak_rss_bytes)
            ),
            rounds_f(&|r| mib(r.cold_start_peak_rss_bytes)),
            "≤ 2",
        );
        let _ = writeln!(s);
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        s
    }
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
