//! The Markdown form of the report (`report.md`): a header on the machine and the setup,
//! one table row per metric (median, per round, goal), and the notes on the method.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::Report;
use crate::rounds::{FloorRound, OperatorRound};

/// The metric table being written, over the rounds of `report`.
struct Table<'a> {
    report: &'a Report,
    out: String,
}

impl Table<'_> {
    fn row(&mut self, name: &str, value: String, per: String, goal: &str) {
        let _ = writeln!(self.out, "| {name} | {value} | {per} | {goal} |");
    }

    /// `f` of each operator round, comma-separated.
    fn rounds(&self, f: &dyn Fn(&OperatorRound) -> String) -> String {
        let v: Vec<String> = self.report.operator_rounds.iter().map(f).collect();
        v.join(", ")
    }

    /// `f` of each floor round, comma-separated.
    fn floors(&self, f: &dyn Fn(&FloorRound) -> String) -> String {
        let v: Vec<String> = self.report.floor_rounds.iter().map(f).collect();
        v.join(", ")
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// `verb count, …` of the non-zero counts, or `none`.
fn verbs(m: &BTreeMap<String, f64>) -> String {
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
}

impl Report {
    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut t = Table {
            report: self,
            out: self.markdown_header(),
        };
        let _ = writeln!(t.out, "| metric | median | per round | goal |");
        let _ = writeln!(t.out, "|---|---|---|---|");
        speed_rows(&mut t);
        cost_rows(&mut t);
        later_rows(&mut t);
        let mut s = t.out;
        if let Some(p) = &self.peers {
            peers_table(&mut s, p);
            if let Some(i) = &p.injection {
                injection_table(&mut s, i, self.admission.as_ref());
            }
        }
        if let Some(c) = &self.churn {
            churn_table(&mut s, c);
        }
        if let Some(a) = &self.admission {
            admission_table(&mut s, a);
        }
        if let Some(c) = &self.cluster {
            cluster_table(&mut s, c, self.ratio);
        }
        if let Some(r) = &self.repair {
            repair_table(&mut s, r);
        }
        let _ = writeln!(s);
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        s
    }

    /// The title and the paragraph on the machine, the control plane and the operator.
    fn markdown_header(&self) -> String {
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
        s
    }
}

/// Rows: Floor, convergence, readiness and latency.
fn speed_rows(t: &mut Table<'_>) {
    let rep = t.report;
    t.row(
        "floor: N main + N sidecar creates (s)",
        format!("{:.2}", rep.floor_s),
        t.floors(&|r| format!("{:.2}", r.floor_s)),
        "",
    );
    t.row(
        "floor: N sidecar creates alone (s)",
        format!("{:.2}", rep.floor_sidecars_s),
        t.floors(&|r| format!("{:.2}", r.sidecars_s)),
        "",
    );
    t.row(
        "convergence: N main creates → N sidecars seen (s)",
        format!("{:.2}", rep.converge_s),
        t.rounds(&|r| format!("{:.2}", r.convergence.converge_s)),
        "",
    );
    t.row(
        "ratio convergence / phased floor",
        format!("{:.2}", rep.ratio),
        t.rounds(&|r| format!("{:.2}", r.convergence.ratio)),
        "≤ 1.2",
    );
    t.row(
        "ideal floor: each sidecar created as its main Pod's create returns (s)",
        format!("{:.2}", rep.ideal_floor_s),
        t.floors(&|r| format!("{:.2}", r.ideal_s)),
        "",
    );
    t.row(
        "**ratio convergence / ideal floor**",
        format!("**{:.2}**", rep.ratio_ideal),
        t.rounds(&|r| format!("{:.2}", r.convergence.ratio_ideal)),
        "",
    );
    t.row(
        "ideal floor latency p50 / p99 (ms)",
        format!(
            "{:.0} / {:.0}",
            rep.ideal_latency_ms.p50, rep.ideal_latency_ms.p99
        ),
        t.floors(&|r| {
            format!(
                "{:.0} / {:.0}",
                r.ideal_latency_ms.p50, r.ideal_latency_ms.p99
            )
        }),
        "",
    );
    t.row(
        "every policy Ready=True (s)",
        format!("{:.2}", rep.ready_s),
        t.rounds(&|r| {
            format!(
                "{:.2} (sidecars bound {:.2}, Ready {:.2})",
                r.convergence.ready_s,
                r.convergence.sidecars_bound_s,
                r.convergence.sidecars_ready_s
            )
        }),
        "",
    );
    t.row(
        "Pod → sidecar latency p50 / p90 / p99 / max (ms)",
        format!(
            "{:.0} / {:.0} / {:.0} / {:.0}",
            rep.latency_ms.p50, rep.latency_ms.p90, rep.latency_ms.p99, rep.latency_ms.max
        ),
        t.rounds(&|r| {
            format!(
                "{:.0}/{:.0}/{:.0}/{:.0} (n={})",
                r.convergence.latency_ms.p50,
                r.convergence.latency_ms.p90,
                r.convergence.latency_ms.p99,
                r.convergence.latency_ms.max,
                r.convergence.latency_ms.count
            )
        }),
        "reported",
    );
}

/// Rows: What the convergence cost: requests, Events, reconciles, CPU, memory.
fn cost_rows(t: &mut Table<'_>) {
    let rep = t.report;
    t.row(
        "API requests per sidecar (Events apart)",
        verbs(&rep.api_calls_per_sidecar),
        t.rounds(&|r| verbs(&r.cost.api_calls_per_sidecar)),
        "create 1, no get/list",
    );
    t.row(
        "Event writes per sidecar",
        format!("{:.3}", rep.event_writes_per_sidecar),
        t.rounds(&|r| format!("{:.3}", r.cost.event_writes_per_sidecar)),
        "",
    );
    t.row(
        "pod reconciles per main Pod",
        format!("{:.2}", rep.reconciles_per_pod),
        t.rounds(&|r| format!("{:.2}", r.cost.reconciles_per_pod)),
        "",
    );
    t.row(
        "operator CPU during convergence (s)",
        format!("{:.2}", rep.cpu_s),
        t.rounds(&|r| format!("{:.2}", r.cost.cpu_s)),
        "",
    );
    t.row(
        "peak RSS",
        mib(rep.peak_rss_bytes),
        t.rounds(&|r| mib(r.memory.peak_rss_bytes)),
        "",
    );
    t.row(
        "RSS with the policies and 0 Pods / steady RSS",
        format!(
            "{} / {}",
            mib(rep.idle_rss_bytes),
            mib(rep.steady_rss_bytes)
        ),
        t.rounds(&|r| {
            format!(
                "{} / {}",
                mib(r.memory.idle_rss_bytes),
                mib(r.memory.steady_rss_bytes)
            )
        }),
        "",
    );
}

/// Rows: Idle, rollout and cold start.
fn later_rows(t: &mut Table<'_>) {
    let rep = t.report;
    t.row(
        "bytes per cached Pod",
        format!(
            "{:.0} ({:.0} Pods cached)",
            rep.bytes_per_cached_pod, rep.cached_pods
        ),
        t.rounds(&|r| format!("{:.0}", r.memory.bytes_per_cached_pod)),
        "≤ 5 KiB, goal ≤ 2 KiB",
    );
    t.row(
        &format!(
            "idle {} s: API writes (max over rounds) / CPU s",
            rep.idle_secs
        ),
        format!("{:.0} / {:.2}", rep.idle_writes, rep.idle_cpu_s),
        t.rounds(&|r| format!("{:.0} / {:.2}", r.idle.idle_writes, r.idle.idle_cpu_s)),
        "0 writes",
    );
    t.row(
        &format!(
            "rollout of N sidecars, maxUnavailable {} (s)",
            rep.rollout_max_unavailable
        ),
        format!("{:.2}", rep.rollout_s),
        t.rounds(&|r| {
            format!(
                "{}{:.2} ({} extra sidecars; creates/sidecar {:.2})",
                if r.rollout.rollout_finished {
                    ""
                } else {
                    "not done after "
                },
                r.rollout.rollout_s,
                r.rollout.rollout_extra_sidecars,
                r.rollout
                    .rollout_api_calls_per_sidecar
                    .get("create")
                    .copied()
                    .unwrap_or(0.0)
            )
        }),
        "",
    );
    t.row(
        "cold start: N main Pods exist → N sidecars (s)",
        format!("{:.2}", rep.cold_start_s),
        t.rounds(&|r| {
            format!(
                "{:.2} (ready {:.2})",
                r.cold_start.cold_start_s, r.cold_start.cold_start_ready_s
            )
        }),
        "",
    );
    t.row(
        "cold start / floor of N sidecar creates",
        format!("{:.2}", rep.cold_start_ratio),
        t.rounds(&|r| format!("{:.2}", r.cold_start.cold_start_ratio)),
        "",
    );
    t.row(
        "start-up peak RSS / steady RSS",
        format!(
            "{:.2} ({})",
            rep.startup_peak_ratio,
            mib(rep.cold_start_peak_rss_bytes)
        ),
        t.rounds(&|r| mib(r.cold_start.cold_start_peak_rss_bytes)),
        "≤ 2",
    );
}

/// Container mode's webhook: one burst with it between two without.
fn admission_table(s: &mut String, a: &crate::admission::Admission) {
    let without: Vec<String> = a.without_s.iter().map(|v| format!("{v:.2} s")).collect();
    let rows = [
        (
            "burst, webhook not called (before, after)",
            without.join(", "),
            "",
        ),
        ("burst, webhook called", format!("{:.2} s", a.with_s), ""),
        (
            "create throughput with / without",
            format!("{:.2}", a.throughput_ratio),
            "≥ 0.9",
        ),
        ("Pods injected", format!("{} of {}", a.injected, a.n), "all"),
        (
            "API server's admission time for the webhook, p50 / p99",
            format!("{:.1} / {:.1} ms", a.apiserver_p50_ms, a.apiserver_p99_ms),
            "p99 ≤ 5 ms",
        ),
        (
            "… share under 5 ms (its first bucket)",
            format!("{:.1}%", a.apiserver_under_5ms * 100.0),
            "",
        ),
        (
            "webhook handler, p50 / p99",
            format!("{:.3} / {:.3} ms", a.handler_p50_ms, a.handler_p99_ms),
            "",
        ),
        (
            "operator CPU over the burst, webhook called / not",
            format!("{:.2} / {:.2} s", a.cpu_s, a.cpu_without_s),
            "",
        ),
        (
            "API server CPU over the burst, webhook called / not",
            format!(
                "{:.2} / {:.2} s",
                a.apiserver_cpu_s, a.apiserver_cpu_without_s
            ),
            "",
        ),
        (
            "webhook calls per Pod (IfNeeded reinvocation)",
            format!("{:.2}", a.calls_per_pod),
            "",
        ),
        (
            "TLS connections opened by the API server in the burst",
            format!("{}", a.connections),
            "",
        ),
        ("operator RSS after the burst", mib(a.rss_bytes), ""),
    ];
    let title = format!(
        "Admission (Container mode's webhook), {} Pod creates per burst:",
        a.n
    );
    value_table(s, &title, &rows);
}

/// A Markdown table's header row and its separator.
fn header(s: &mut String, columns: &[&str]) {
    let _ = writeln!(s, "| {} |", columns.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(columns.len()));
}

fn peers_table(s: &mut String, p: &crate::peers::PeersSection) {
    let _ = writeln!(
        s,
        "\nThe peer, same run, same floor, same watcher: {}. Median convergence {:.2} s{} against the operator's {:.2} s (ratio to the phased floor {:.2}, to the ideal floor {:.2}); peak RSS {} against the operator's {}.\n",
        p.peer,
        p.converge_s,
        if p.all_converged {
            ""
        } else {
            " (a round did not converge: its time is the timeout)"
        },
        p.operator_converge_s,
        p.ratio,
        p.ratio_ideal,
        mib(p.peak_rss_bytes),
        mib(p.operator_peak_rss_bytes)
    );
    header(
        s,
        &[
            "round",
            "converge (s)",
            "/ phased, / ideal floor",
            "main creates (s)",
            "latency p50 / p99 / max (ms)",
            "companions seen, owned",
            "CPU s",
            "peak RSS",
            "RSS after",
            "its requests per companion",
        ],
    );
    for r in &p.rounds {
        let _ = writeln!(
            s,
            "| {} | {:.2}{} | {:.2}, {:.2} | {:.2} | {:.0} / {:.0} / {:.0} | {}, {} | {:.1} | {} | {} | {} |",
            r.round,
            r.converge_s,
            if r.converged {
                ""
            } else {
                " (not converged: timed out)"
            },
            r.ratio,
            r.ratio_ideal,
            r.mains_s,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.sidecars_seen,
            r.owned,
            r.cpu_s,
            mib(r.peak_rss_bytes),
            mib(r.rss_after_bytes),
            verbs(&r.api_calls_per_sidecar)
        );
    }
    for r in &p.rounds {
        if let Some(why) = &r.exited {
            let _ = writeln!(s, "- Round {}: {why}", r.round);
        }
    }
    for n in &p.notes {
        let _ = writeln!(s, "- {n}");
    }
}

/// Kyverno's mutate rule beside the operator's webhook (the admission section, same run).
fn injection_table(
    s: &mut String,
    k: &crate::peers::PeerInjection,
    ours: Option<&crate::admission::Admission>,
) {
    let _ = writeln!(
        s,
        "\nInjecting the native sidecar at admission, {} Pod creates per burst, each against bursts in the same run that its webhook is not called for:\n",
        k.n
    );
    header(
        s,
        &[
            "webhook",
            "burst (s), with / without",
            "create throughput with / without",
            "Pods injected",
            "API server's admission time p50 / p99 (ms)",
            "under 5 ms",
            "its CPU s",
            "API server CPU s, with / without",
            "its RSS after",
        ],
    );
    if let Some(a) = ours {
        // The admission section's figures, in the peer's shape (its two bursts without, averaged).
        let row = crate::peers::PeerInjection {
            n: a.n,
            with_s: a.with_s,
            without_s: a.without_s.iter().sum::<f64>() / a.without_s.len().max(1) as f64,
            throughput_ratio: a.throughput_ratio,
            injected: a.injected,
            apiserver: crate::admission::WebhookTimes {
                p50_ms: a.apiserver_p50_ms,
                p99_ms: a.apiserver_p99_ms,
                under_5ms: a.apiserver_under_5ms,
            },
            cpu_s: a.cpu_s,
            apiserver_cpu_s: a.apiserver_cpu_s,
            apiserver_cpu_without_s: a.apiserver_cpu_without_s,
            rss_bytes: a.rss_bytes,
        };
        injection_row(s, "sidecar-operator", &row);
    }
    injection_row(s, "Kyverno mutate", k);
    let _ = writeln!(s);
    if let Some(a) = ours {
        let _ = writeln!(
            s,
            "- sidecar-operator: the whole operator (webhook and controllers, running through all three bursts; {:.2} CPU-s over a burst its webhook is not called for).",
            a.cpu_without_s
        );
    }
    let _ = writeln!(
        s,
        "- Kyverno: its admission controller, where mutation runs; for the burst without, its webhooks were deleted and it was stopped."
    );
}

fn injection_row(s: &mut String, name: &str, r: &crate::peers::PeerInjection) {
    let _ = writeln!(
        s,
        "| {name} | {:.2} / {:.2} | {:.2} | {} of {} | {:.1} / {:.1} | {:.1}% | {:.2} | {:.2} / {:.2} | {} |",
        r.with_s,
        r.without_s,
        r.throughput_ratio,
        r.injected,
        r.n,
        r.apiserver.p50_ms,
        r.apiserver.p99_ms,
        r.apiserver.under_5ms * 100.0,
        r.cpu_s,
        r.apiserver_cpu_s,
        r.apiserver_cpu_without_s,
        mib(r.rss_bytes)
    );
}

fn churn_table(s: &mut String, c: &crate::churn::ChurnSection) {
    let _ = writeln!(
        s,
        "\nSteady churn: main Pods created at a fixed rate for {} s, each deleted {:.0} s after its create (bound by the scheduler, not pre-bound); latency at the observer from the main Pod's binding (SameNode) or first event (Any) to its sidecar's first event. Near-maximum rate: {}.\n",
        c.secs, c.delete_after_s, c.max_rate_basis
    );
    header(
        s,
        &[
            "placement",
            "Pods/s asked (achieved)",
            "Pod events",
            "latency p50 / p99 / max",
            "API server create p50 / p99",
            "queue wait p50 / p99",
            "reconcile p99",
            "status, event writes /s",
            "p99 tail: with a status write (all Pods)",
            "with an Event write (all)",
            "no sidecar",
        ],
    );
    for r in &c.runs {
        let _ = writeln!(
            s,
            "| {} | {} ({:.1}) | {} | {:.1} / {:.1} / {:.1} ms | {:.1} / {:.1} ms | ≤ {} / ≤ {} ms | ≤ {} ms | {:.1}, {:.1} | {:.0} % ({:.0} %) of {} | {:.0} % ({:.0} %) | {} |",
            r.placement,
            r.rate,
            r.achieved_rate,
            if r.pod_events { "on" } else { "off" },
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.create_ms.p50,
            r.create_ms.p99,
            r.queue_wait_ms.p50,
            r.queue_wait_ms.p99,
            r.reconcile_ms.p99,
            r.status_writes_per_s,
            r.event_writes_per_s,
            r.tail.with_status_write * 100.0,
            r.tail.all_with_status_write * 100.0,
            r.tail.pods,
            r.tail.with_event_write * 100.0,
            r.tail.all_with_event_write * 100.0,
            r.without_sidecar
        );
    }
}

fn cluster_table(s: &mut String, c: &crate::cluster::ClusterSection, namespaced: f64) {
    let title = format!(
        "One ClusterSidecarPolicy over {} namespaces, {} main Pods:",
        c.namespaces, c.n
    );
    let want = c.namespaces.to_string();
    let rows = [
        (
            "floor: the benchmark's client, mains then sidecars",
            format!("{:.2} s", c.floor_s),
            "",
        ),
        (
            "operator: to the N-th sidecar",
            format!("{:.2} s", c.converge_s),
            "",
        ),
        (
            "ratio to the floor",
            format!("{:.2}", c.ratio),
            "≈ the namespaced rounds'",
        ),
        (
            "the namespaced rounds' ratio (median)",
            format!("{namespaced:.2}"),
            "",
        ),
        ("status Ready N/N after", format!("{:.2} s", c.ready_s), ""),
        (
            "status.namespaces",
            c.status_namespaces.to_string(),
            want.as_str(),
        ),
    ];
    value_table(s, &title, &rows);
}

fn repair_table(s: &mut String, r: &crate::repair::RepairSection) {
    let n = r.n.to_string();
    let rows = [
        (
            "floor: the benchmark's client evicts them all",
            format!("{:.2} s", r.floor_s),
            "",
        ),
        (
            "operator: from the switch to RollingUpdate",
            format!("{:.2} s", r.repair_s),
            "",
        ),
        ("ratio to the floor", format!("{:.2}", r.ratio), "≤ 1.2"),
        (
            "evictions sent by the operator",
            format!("{}", r.evictions),
            n.as_str(),
        ),
        (
            "evictions refused (no budget here)",
            format!("{}", r.blocked),
            "0",
        ),
    ];
    let title = format!(
        "Repair (Container mode, updateStrategy RollingUpdate, maxUnavailable 100%): {} Pods of a \
         Deployment created without the sidecar, evicted and recreated injected:",
        r.n
    );
    value_table(s, &title, &rows);
}

/// A section's title, then its `| metric | value | goal |` table.
fn value_table(s: &mut String, title: &str, rows: &[(&str, String, &str)]) {
    let _ = writeln!(s);
    let _ = writeln!(s, "{title}");
    let _ = writeln!(s);
    let _ = writeln!(s, "| metric | value | goal |");
    let _ = writeln!(s, "|---|---|---|");
    for (name, value, goal) in rows {
        let _ = writeln!(s, "| {name} | {value} | {goal} |");
    }
}

#[cfg(test)]
mod tests {
    use super::injection_table;
    use crate::admission::{Admission, WebhookTimes};
    use crate::peers::PeerInjection;

    #[test]
    fn injection_rows_put_the_operator_beside_kyverno() {
        let k = PeerInjection {
            n: 100,
            with_s: 4.0,
            without_s: 2.0,
            throughput_ratio: 0.5,
            injected: 99,
            apiserver: WebhookTimes {
                p50_ms: 12.5,
                p99_ms: 80.0,
                under_5ms: 0.25,
            },
            ..PeerInjection::default()
        };
        let a = Admission {
            n: 100,
            without_s: vec![1.0, 3.0],
            with_s: 2.2,
            injected: 100,
            ..Admission::default()
        };
        let mut s = String::new();
        injection_table(&mut s, &k, Some(&a));
        let rows: Vec<&str> = s.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 3, "{s}");
        assert!(
            rows[1].starts_with("| sidecar-operator | 2.20 / 2.00 |"),
            "{s}"
        );
        assert!(rows[1].contains("| 100 of 100 |"), "{s}");
        assert!(
            rows[2].starts_with(
                "| Kyverno mutate | 4.00 / 2.00 | 0.50 | 99 of 100 | 12.5 / 80.0 | 25.0% |"
            ),
            "{s}"
        );
        let mut alone = String::new();
        injection_table(&mut alone, &k, None);
        assert!(!alone.contains("sidecar-operator"), "{alone}");
    }
}
