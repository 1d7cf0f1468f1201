//! One operator round, one function per phase: the first instance starts and converges N
//! sidecars, then idles; a fresh instance cold-starts with the N main Pods present, then
//! rolls a template change out.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use sidecar_controller::metrics::name as metric;

use crate::metrics::{Snapshot, series};
use crate::observe::Observer;
use crate::operator::{ApiCounts, Launch, RunningOperator};
use crate::rounds::{
    ColdStart, ConvergenceCost, FloorRound, Latency, OperatorRound, Rollout, round3,
};
use crate::workload::{self, BENCH_MANAGER};
use crate::{Ctx, say, secs, since};

/// Runs operator round `r` (after the floor round `floor`) in fresh namespaces.
pub(crate) async fn operator_round(
    ctx: &mut Ctx<'_>,
    r: usize,
    floor: &FloorRound,
) -> anyhow::Result<OperatorRound> {
    let cfg = ctx.cfg;
    say(&format!(
        "round {r}/{} operator: creating {} namespace(s), starting the operator",
        cfg.rounds, ctx.namespaces
    ));
    let nss = ctx.fresh_namespaces(&format!("bench-r{r}-op")).await?;
    let round = Round {
        ctx: &*ctx,
        r,
        per_ns: pods_per_namespace(cfg.n, &nss),
        nss,
    };
    let out = round.run(floor).await?;
    let nss = round.nss;
    say(&format!(
        "round {r}/{} operator: deleting the namespaces",
        cfg.rounds
    ));
    ctx.drop_namespaces(&nss).await?;
    Ok(out)
}

/// What every phase of an operator round works on.
struct Round<'c, 'a> {
    ctx: &'c Ctx<'a>,
    r: usize,
    /// The round's namespaces.
    nss: Vec<String>,
    /// Main Pods per namespace (what each policy's `matchedPods` becomes).
    per_ns: HashMap<String, i64>,
}

impl Round<'_, '_> {
    fn say(&self, what: &str) {
        say(&format!(
            "round {}/{} operator: {what}",
            self.r, self.ctx.cfg.rounds
        ));
    }

    /// The phases in order; the namespaces are left to the caller.
    async fn run(&self, floor: &FloorRound) -> anyhow::Result<OperatorRound> {
        let cfg = self.ctx.cfg;
        let mut out = OperatorRound {
            round: self.r,
            ..OperatorRound::default()
        };
        out.idle.idle_s = cfg.idle_secs as f64;
        let name = format!("operator-r{}", self.r);
        let (mut op, obs, m_start) = self.start_first(&name, &mut out).await?;
        self.converge(&mut op, &obs, floor, &mut out).await?;
        let m_end = self.idle(&mut op, &mut out).await?;
        // The first instance is done: peak, metrics, errors.
        out.memory.peak_rss_bytes = op.peak_rss();
        save_metrics(&op, &cfg.out_dir, &name).await;
        record_errors(&mut out.errors, &m_end.since(&m_start), "");
        op.stop().await;

        // Cold start before the rollout, so that no delete of the rollout is still in
        // flight (see the kwok note) when the fresh instance creates its sidecars.
        let cold_name = format!("operator-r{}-cold", self.r);
        let mut cold = self
            .cold_start(&obs, floor, &cold_name, &mut out.cold_start)
            .await?;
        let m_cold = self.rollout(&mut cold, &obs, &mut out.rollout).await?;
        record_errors(&mut out.errors, &m_cold, "cold_");
        save_metrics(&cold, &cfg.out_dir, &cold_name).await;
        cold.stop().await;
        round_values(&mut out);
        Ok(out)
    }

    /// Starts the first instance on the empty namespaces, creates the policies and the
    /// observer, and waits for the policies' first status; returns the instance, the
    /// observer and the instance's metrics before the policies.
    async fn start_first(
        &self,
        name: &str,
        out: &mut OperatorRound,
    ) -> anyhow::Result<(RunningOperator, Observer, Snapshot)> {
        let (cfg, timeout) = (self.ctx.cfg, self.ctx.cfg.timeout());
        let mut op = RunningOperator::start(&launch(self.ctx, name), timeout).await?;
        out.convergence.startup_s = since(op.ready, op.started);
        sleep_alive(&mut op, Duration::from_secs(1)).await?;
        out.memory.rss_before_policies_bytes = op.rss();
        let m_start = op.metrics().await?;
        out.memory.idle_cached_pods = m_start.sum(&series(metric::CACHED_PODS, ""), &[]);

        workload::create_policies(&self.ctx.client, &self.nss, &cfg.rollout_max_unavailable)
            .await?;
        let obs = Observer::start(&self.ctx.observer, &self.nss, true, timeout).await?;
        // The policies' first status (no Pod yet) is written before the clock starts.
        let zero: HashMap<String, i64> = self.nss.iter().map(|ns| (ns.clone(), 0)).collect();
        obs.wait_policies_ready(&zero, timeout).await?;
        sleep_alive(&mut op, Duration::from_millis(500)).await?;
        // The baseline of the per-Pod figure: the policies' fixed costs (their views, queues,
        // status) are in it, so they are not charged to the Pods.
        out.memory.idle_rss_bytes = op.rss();
        Ok((op, obs, m_start))
    }

    /// Creates the N main Pods and times the sidecars (observer) and the policies' Ready.
    async fn converge(
        &self,
        op: &mut RunningOperator,
        obs: &Observer,
        floor: &FloorRound,
        out: &mut OperatorRound,
    ) -> anyhow::Result<()> {
        let (cfg, n, timeout) = (self.ctx.cfg, self.ctx.cfg.n, self.ctx.cfg.timeout());
        let m0 = op.metrics().await?;
        let cpu0 = op.cpu_seconds();
        self.say(&format!("creating {n} main Pods"));
        let t0 = Instant::now();
        let mains = workload::main_pods(n, &self.nss);
        workload::create_pods(&self.ctx.client, mains, cfg.concurrency, BENCH_MANAGER).await?;
        let c = &mut out.convergence;
        c.mains_s = secs(t0.elapsed());
        c.converge_s = since(obs.wait_first_sidecars(n, timeout).await?, t0);
        c.ratio = ratio(c.converge_s, floor.floor_s);
        c.ratio_ideal = ratio(c.converge_s, floor.ideal_s);
        c.ready_s = since(obs.wait_policies_ready(&self.per_ns, timeout).await?, t0);
        let (bound, ready) = obs.live_bound_ready();
        c.sidecars_bound_s = bound.map_or(0.0, |t| since(t, t0));
        c.sidecars_ready_s = ready.map_or(0.0, |t| since(t, t0));
        self.say(&format!(
            "converged in {:.2}s, Ready in {:.2}s",
            c.converge_s, c.ready_s
        ));
        sleep_alive(op, Duration::from_secs(2)).await?;
        let m1 = op.metrics().await?;
        let c = &mut out.convergence;
        c.curves.latencies_ms = obs.latencies_ms();
        c.curves.sidecars_s = obs.sidecar_times(t0);
        c.latency_ms = Latency::of(&c.curves.latencies_ms);
        c.sidecars_seen = obs.sidecars_seen();
        out.cost = convergence_cost(&m1.since(&m0), n);
        out.cost.cpu_s = round3(op.cpu_seconds() - cpu0);
        out.memory.rss_after_converge_bytes = op.rss();
        Ok(())
    }

    /// The idle period: writes, CPU, steady memory. Returns the metrics at its end.
    async fn idle(
        &self,
        op: &mut RunningOperator,
        out: &mut OperatorRound,
    ) -> anyhow::Result<Snapshot> {
        let idle_secs = self.ctx.cfg.idle_secs;
        self.say(&format!("idle for {idle_secs}s"));
        let m2 = op.metrics().await?;
        let cpu2 = op.cpu_seconds();
        sleep_alive(op, Duration::from_secs(idle_secs)).await?;
        let m3 = op.metrics().await?;
        out.idle.idle_cpu_s = round3(op.cpu_seconds() - cpu2);
        let idle = ApiCounts::from_delta(&m3.since(&m2));
        out.idle.idle_writes = idle.writes();
        out.idle.idle_writes_by = writes_by(&idle);
        let mem = &mut out.memory;
        mem.steady_rss_bytes = op.rss();
        mem.cached_pods = m3.sum(&series(metric::CACHED_PODS, ""), &[]);
        let cached = mem.cached_pods - mem.idle_cached_pods;
        mem.bytes_per_cached_pod = if cached > 0.0 {
            ((mem.steady_rss_bytes as f64 - mem.idle_rss_bytes as f64) / cached).round()
        } else {
            0.0
        };
        Ok(m3)
    }

    /// Deletes the sidecars (no operator runs) and starts a fresh instance `name`, which
    /// finds the N main Pods and no sidecar; returns it once every policy is Ready again.
    async fn cold_start(
        &self,
        obs: &Observer,
        floor: &FloorRound,
        name: &str,
        out: &mut ColdStart,
    ) -> anyhow::Result<RunningOperator> {
        let (n, timeout) = (self.ctx.cfg.n, self.ctx.cfg.timeout());
        self.say("cold start (operator stopped, deleting the sidecars)");
        workload::delete_sidecars(&self.ctx.client, &self.nss).await?;
        obs.wait_live(0, "the sidecars to be gone", timeout, |_| true)
            .await?;
        let t_c = Instant::now();
        let mut cold = RunningOperator::start(&launch(self.ctx, name), timeout).await?;
        out.cold_start_ready_s = since(cold.ready, t_c);
        let t_cd = obs
            .wait_live(n, "the cold-started operator's sidecars", timeout, |l| {
                l.seen >= t_c
            })
            .await?;
        out.cold_start_s = since(t_cd, t_c);
        out.cold_start_ratio = ratio(out.cold_start_s, floor.sidecars_s);
        let mc = cold.metrics().await?;
        out.cold_start_api_calls_per_sidecar =
            ApiCounts::from_delta(&mc).per(n).by_verb_without_events();
        obs.wait_policies_ready(&self.per_ns, timeout).await?;
        sleep_alive(&mut cold, Duration::from_secs(2)).await?;
        out.cold_start_steady_rss_bytes = cold.rss();
        out.cold_start_peak_rss_bytes = cold.peak_rss();
        Ok(cold)
    }

    /// A template change rolled out by `cold` (converged and Ready by now). Returns its
    /// metrics at the end.
    async fn rollout(
        &self,
        cold: &mut RunningOperator,
        obs: &Observer,
        out: &mut Rollout,
    ) -> anyhow::Result<Snapshot> {
        let (cfg, n, timeout) = (self.ctx.cfg, self.ctx.cfg.n, self.ctx.cfg.timeout());
        let old_hashes = obs.live_hashes();
        anyhow::ensure!(
            old_hashes.len() == 1,
            "expected one template hash before the rollout, found {old_hashes:?}"
        );
        self.say(&format!(
            "rollout (template change, maxUnavailable {})",
            cfg.rollout_max_unavailable
        ));
        let m4 = cold.metrics().await?;
        let seen_before = obs.sidecars_seen();
        let t_r = Instant::now();
        workload::change_template(&self.ctx.client, &self.nss, 2).await?;
        let done = obs
            .wait_live(n, "every sidecar at the new template hash", timeout, |l| {
                !l.hash.is_empty() && !old_hashes.contains(&l.hash)
            })
            .await;
        // A rollout that outlasts the step timeout is a result to report (kwok's name-based
        // deletes can keep one going at N = 10,000), not a reason to lose the round.
        (out.rollout_s, out.rollout_finished) = match done {
            Ok(t_done) => (since(t_done, t_r), true),
            Err(e) => {
                say(&format!("  rollout not finished: {e:#}"));
                (t_r.elapsed().as_secs_f64(), false)
            }
        };
        out.rollout_extra_sidecars = obs.sidecars_seen().saturating_sub(seen_before + n);
        sleep_alive(cold, Duration::from_secs(1)).await?;
        let m5 = cold.metrics().await?;
        out.rollout_api_calls_per_sidecar = ApiCounts::from_delta(&m5.since(&m4))
            .per(n)
            .by_verb_without_events();
        Ok(m5)
    }
}

/// Main Pods per namespace when `n` are spread over `nss` ([`workload::PER_NAMESPACE`]
/// each, the last namespace takes the rest).
fn pods_per_namespace(n: usize, nss: &[String]) -> HashMap<String, i64> {
    nss.iter()
        .enumerate()
        .map(|(i, ns)| {
            let first = i * workload::PER_NAMESPACE;
            let count = n.saturating_sub(first).min(workload::PER_NAMESPACE);
            (ns.clone(), count as i64)
        })
        .collect()
}

/// `a / b` to 3 decimals; 0 when `b` is not positive.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { round3(a / b) } else { 0.0 }
}

/// Requests, Events, reconciles and status writes of the convergence, from the metrics
/// difference `d` over it (`cpu_s` is left to the caller).
fn convergence_cost(d: &Snapshot, n: usize) -> ConvergenceCost {
    let calls = ApiCounts::from_delta(d);
    let per = calls.per(n);
    let reconciles = series(metric::RECONCILES, "_total");
    let pod = [("controller", "pod")];
    let count = d.sum(&series(metric::RECONCILE_DURATION_SECONDS, "_count"), &pod);
    let sum = d.sum(&series(metric::RECONCILE_DURATION_SECONDS, "_sum"), &pod);
    ConvergenceCost {
        api_calls_per_sidecar: per.by_verb_without_events(),
        api_calls_per_sidecar_by_resource: per.by_resource.clone(),
        event_writes_per_sidecar: round3(calls.event_writes() / n as f64),
        reconciles_per_pod: round3(d.sum(&reconciles, &pod) / n as f64),
        policy_reconciles: d.sum(&reconciles, &[("controller", "policy")]),
        status_writes: d.sum(&series(metric::STATUS_WRITES, "_total"), &[]),
        mean_pod_reconcile_ms: ratio(sum * 1000.0, count),
        cpu_s: 0.0,
    }
}

/// Writes (create, delete, patch, update) by `resource/verb`.
fn writes_by(calls: &ApiCounts) -> BTreeMap<String, f64> {
    calls
        .by_resource
        .iter()
        .flat_map(|(res, verbs)| {
            verbs
                .iter()
                .filter(|(v, _)| matches!(v.as_str(), "create" | "delete" | "patch" | "update"))
                .map(move |(v, c)| (format!("{res}/{v}"), *c))
        })
        .collect()
}

/// Rounds the per-sidecar request rates to 3 decimals.
fn round_values(out: &mut OperatorRound) {
    for m in [
        &mut out.cost.api_calls_per_sidecar,
        &mut out.rollout.rollout_api_calls_per_sidecar,
        &mut out.cold_start.cold_start_api_calls_per_sidecar,
    ] {
        for v in m.values_mut() {
            *v = round3(*v);
        }
    }
    for verbs in out.cost.api_calls_per_sidecar_by_resource.values_mut() {
        for v in verbs.values_mut() {
            *v = round3(*v);
        }
    }
}

/// How the run starts an operator named `name` (its log file), with no extra flags.
pub(crate) fn launch<'a>(ctx: &'a Ctx<'_>, name: &'a str) -> Launch<'a> {
    Launch {
        mode: &ctx.cfg.operator,
        kubeconfig: ctx.kubeconfig,
        concurrency: ctx.cfg.concurrency,
        pod_events: ctx.cfg.pod_events,
        log_dir: &ctx.cfg.out_dir,
        name,
        extra_args: &[],
    }
}

/// Sleeps `d`, failing early if the operator dies.
async fn sleep_alive(op: &mut RunningOperator, d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        op.check_alive()?;
        tokio::time::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500)),
        )
        .await;
    }
    op.check_alive()
}

/// Records watch errors and failed reconciles of a metrics difference, if any, under
/// `<prefix>watch_errors` and `<prefix>reconcile_errors`.
fn record_errors(errors: &mut BTreeMap<String, f64>, d: &Snapshot, prefix: &str) {
    for key in [metric::WATCH_ERRORS, metric::RECONCILE_ERRORS] {
        let v = d.sum(&series(key, "_total"), &[]);
        if v > 0.0 {
            errors.insert(format!("{prefix}{key}"), v);
        }
    }
}

/// Keeps the instance's final `/metrics` next to its log (`<name>.metrics.txt`).
async fn save_metrics(op: &RunningOperator, dir: &Path, name: &str) {
    if let Ok(text) = op.metrics_text().await {
        let _ = std::fs::write(dir.join(format!("{name}.metrics.txt")), text);
    }
}
