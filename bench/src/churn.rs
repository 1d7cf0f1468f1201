//! Steady churn: how fast one Pod gets its sidecar in a living cluster, not in a burst.
//!
//! In a namespace of its own, with a fresh operator and one policy, the benchmark's client
//! creates main Pods at a fixed rate for `churn_secs` and deletes each one `delete_after`
//! after its create returned (grace period 0), so the namespace holds a steady population
//! of about `rate × delete_after` main Pods and their sidecars. The main Pods are *not*
//! pre-bound: the scheduler binds them, as in a real cluster.
//!
//! The latency is timed by the independent observer: for `SameNode` (which waits for the
//! main Pod's Node) from the first event showing the main Pod bound, for `Any` from its
//! first event, to its sidecar's first event.
//!
//! Where the tail comes from, per run:
//! - **API server**: the latency of the benchmark's own main-Pod creates, the same kind of
//!   write the operator's sidecar create is, under the same load;
//! - **queueing**: the operator's `queue_wait_seconds{controller="pod"}` over the run;
//! - **the reconcile** (the sidecar create included): `reconcile_duration_seconds`;
//! - **status and event writes**: of the Pods at or above the p99, the share whose window
//!   (start → sidecar) saw a policy status change, or an Event write, arrive at the
//!   observer, against the same share over all Pods; and a run at the first rate with
//!   `--pod-events=false`, which writes no Events.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, PostParams};
use serde::Serialize;
use sidecar_api::{Placement, SidecarPolicy};
use sidecar_controller::metrics::name as metric;

use crate::metrics::series;
use crate::observe::{Observer, Watches, signed_ms};
use crate::operator::{ApiCounts, RunningOperator};
use crate::round::launch;
use crate::rounds::{Latency, nearest_rank, round3};
use crate::workload::{self, BENCH_MANAGER};
use crate::{Ctx, say, secs};

/// What the churn section measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnSection {
    /// Seconds of creates per run.
    pub secs: u64,
    /// Seconds from a main Pod's create to its delete.
    pub delete_after_s: f64,
    /// How the near-maximum rate was chosen.
    pub max_rate_basis: String,
    /// The runs, in the order they ran.
    pub runs: Vec<ChurnRun>,
}

/// One run at one rate and placement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnRun {
    /// `SameNode` or `Any`.
    pub placement: String,
    /// The operator's `--pod-events`.
    pub pod_events: bool,
    /// Main Pods per second asked for.
    pub rate: f64,
    /// Main Pods per second created (creates returned / seconds of creates).
    pub achieved_rate: f64,
    /// Main Pods created.
    pub created: usize,
    /// Main Pods whose sidecar the observer never saw before the Pod was deleted.
    pub without_sidecar: usize,
    /// From the main Pod's binding (`SameNode`) or first event (`Any`) to its sidecar's
    /// first event, at the observer.
    pub latency_ms: Latency,
    /// What `latency_ms` is measured from: `binding` or `create`.
    pub latency_from: String,
    /// The benchmark's own main-Pod creates, request to response (the API server's write
    /// latency under this load).
    pub create_ms: Latency,
    /// The operator's Pod queue wait, p50 and p99 (upper bounds of histogram buckets).
    pub queue_wait_ms: Quantiles,
    /// The operator's Pod reconcile duration, p50 and p99 (upper bounds of histogram
    /// buckets: coarse, ×4 apart).
    pub reconcile_ms: Quantiles,
    /// The operator's status writes per second over the run.
    pub status_writes_per_s: f64,
    /// The operator's Event writes per second over the run.
    pub event_writes_per_s: f64,
    /// What the slowest Pods had in common.
    pub tail: Tail,
    /// The latency samples (ms), for the pictures.
    #[serde(skip)]
    pub samples_ms: Vec<f64>,
}

/// p50 and p99 of an operator histogram.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The Pods at or above the run's p99 latency, against all Pods of the run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tail {
    /// The p99 latency, ms.
    pub threshold_ms: f64,
    /// Pods at or above it.
    pub pods: usize,
    /// Share of those whose window saw a policy status change arrive at the observer.
    pub with_status_write: f64,
    /// The same share over all Pods.
    pub all_with_status_write: f64,
    /// Share of the tail Pods whose window saw an Event write arrive.
    pub with_event_write: f64,
    /// The same share over all Pods.
    pub all_with_event_write: f64,
}

/// One run's settings.
#[derive(Debug, Clone, Copy)]
struct Plan {
    placement: Placement,
    rate: f64,
    pod_events: bool,
}

/// The runs: both placements at `rate` and at `max_rate` (if any), and `SameNode` at `rate`
/// without Pod events.
fn plans(rate: f64, max_rate: Option<f64>) -> Vec<Plan> {
    let mut out = Vec::new();
    for r in std::iter::once(rate).chain(max_rate) {
        for placement in [Placement::SameNode, Placement::Any] {
            out.push(Plan {
                placement,
                rate: r,
                pod_events: true,
            });
        }
        if r == rate {
            out.push(Plan {
                placement: Placement::SameNode,
                rate,
                pod_events: false,
            });
        }
    }
    out
}

/// Runs the section after the rounds; `None` when `churn_secs` or `churn_rate` is 0.
/// `floor` is the median phased floor of the rounds (it sets the near-maximum rate).
pub(crate) async fn churn_section(
    ctx: &mut Ctx<'_>,
    floor_s: f64,
) -> anyhow::Result<Option<ChurnSection>> {
    let cfg = ctx.cfg;
    if cfg.churn_secs == 0 || cfg.churn_rate <= 0.0 {
        return Ok(None);
    }
    // A churned Pod costs its main create, delete and binding, its sidecar's create, binding
    // and delete, and kwok's status writes for both, where the floor's burst counts two
    // creates: a quarter of its pair throughput. (Half of it, 92 Pods/s at N = 1,000 here,
    // overloaded the API server: creates took up to 0.9 s and latencies grew to 11 s.)
    let derived = (0.25 * cfg.n as f64 / floor_s.max(1e-3)).round();
    let (max_rate, basis) = match cfg.churn_max_rate {
        Some(r) if r > 0.0 => (Some(r), format!("{r} Pods/s, given (--churn-max-rate)")),
        Some(_) => (None, "not run (--churn-max-rate 0)".to_string()),
        None => (
            Some(derived),
            format!(
                "{derived} Pods/s: a quarter of the phased floor's burst throughput ({} main Pods + sidecars in {floor_s:.2} s), as a churned Pod also costs two bindings, two deletes and kwok's status writes",
                cfg.n
            ),
        ),
    };
    let max_rate = max_rate.filter(|r| *r > cfg.churn_rate);
    let mut out = ChurnSection {
        secs: cfg.churn_secs,
        delete_after_s: cfg.churn_delete_after.as_secs_f64(),
        max_rate_basis: basis,
        runs: Vec::new(),
    };
    for (i, plan) in plans(cfg.churn_rate, max_rate).into_iter().enumerate() {
        let run = one_run(ctx, i, plan).await?;
        say(&format!(
            "churn: {} {} Pods/s{}: latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} Pods, {:.1}/s achieved; API server create p99 {:.1} ms, queue wait p99 ≤ {} ms)",
            run.placement,
            run.rate,
            if run.pod_events {
                ""
            } else {
                ", no Pod events"
            },
            run.latency_ms.p50,
            run.latency_ms.p99,
            run.latency_ms.max,
            run.created,
            run.achieved_rate,
            run.create_ms.p99,
            run.queue_wait_ms.p99
        ));
        out.runs.push(run);
    }
    Ok(Some(out))
}

async fn one_run(ctx: &mut Ctx<'_>, i: usize, plan: Plan) -> anyhow::Result<ChurnRun> {
    let cfg = ctx.cfg;
    let timeout = cfg.timeout();
    let ns = ctx
        .fresh_namespaces_n(&format!("churn-{i}"), 1)
        .await?
        .remove(0);
    let name = format!("operator-churn-{i}");
    let mut l = launch(ctx, &name);
    l.pod_events = plan.pod_events;
    let mut op = RunningOperator::start(&l, timeout).await?;
    let result = drive(ctx, &ns, plan, &mut op).await;
    op.stop().await;
    ctx.drop_namespaces(std::slice::from_ref(&ns)).await?;
    result
}

/// The churn itself, with the operator `op` running.
async fn drive(
    ctx: &Ctx<'_>,
    ns: &str,
    plan: Plan,
    op: &mut RunningOperator,
) -> anyhow::Result<ChurnRun> {
    let cfg = ctx.cfg;
    let timeout = cfg.timeout();
    let mut policy: SidecarPolicy = workload::policy(ns, 1, &cfg.rollout_max_unavailable);
    policy.spec.placement = plan.placement;
    Api::<SidecarPolicy>::namespaced(ctx.client.clone(), ns)
        .create(&PostParams::default(), &policy)
        .await
        .with_context(|| format!("creating the churn policy in {ns}"))?;
    let nss = [ns.to_string()];
    let watches = Watches {
        policies: true,
        events: true,
        ..Watches::default()
    };
    let obs = Observer::start_with(&ctx.observer, &nss, watches, timeout).await?;
    let total = ((plan.rate * cfg.churn_secs as f64).round() as usize).max(1);
    let mut pods = workload::main_pods(total, &nss);
    for p in &mut pods {
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name = None; // the scheduler binds them
        }
    }
    say(&format!(
        "churn: {} at {} Pods/s for {} s{} (each deleted {:.0} s after its create)",
        plan.placement.as_str(),
        plan.rate,
        cfg.churn_secs,
        if plan.pod_events {
            ""
        } else {
            ", operator without Pod events"
        },
        cfg.churn_delete_after.as_secs_f64()
    ));
    let before = op.metrics().await?;
    let t0 = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let interval = Duration::from_secs_f64(1.0 / plan.rate);
    let mut done: Vec<Done> = Vec::with_capacity(total);
    for (k, pod) in pods.into_iter().enumerate() {
        tokio::time::sleep_until(t0 + interval * k as u32).await;
        let (api, delay) = (api.clone(), cfg.churn_delete_after);
        tasks.spawn(async move { create_then_delete(&api, pod, delay).await });
        // Creates that return stay in flight: a slow server shows as a lower achieved rate.
        while let Some(d) = tasks.try_join_next() {
            done.push(d??);
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while let Some(d) = tokio::time::timeout_at(deadline, tasks.join_next())
        .await
        .context("timed out waiting for the churn's creates and deletes")?
    {
        done.push(d??);
        op.check_alive()?;
    }
    let last_create = done.iter().map(|d| d.created_at).max().unwrap_or(t0);
    let create_ms: Vec<f64> = done.iter().map(|d| d.create_ms).collect();
    let created_s = secs(last_create.saturating_duration_since(t0)).max(1e-3);
    let after = op.metrics().await?;
    let run_s = secs(t0.elapsed());
    let from_bound = plan.placement == Placement::SameNode;
    let windows = obs.windows(from_bound);
    let (status_times, event_times) = obs.writes_seen();
    drop(obs);
    let d = after.since(&before);
    let samples: Vec<f64> = windows.iter().map(|(a, b)| signed_ms(*a, *b)).collect();
    let latency = Latency::of(&samples);
    let pod = [("controller", "pod")];
    let quantiles = |name: &str| {
        let q = |p| {
            d.quantile(&series(name, ""), &pod, p)
                .map_or(0.0, |s| round3(s * 1000.0))
        };
        Quantiles {
            p50: q(0.5),
            p99: q(0.99),
        }
    };
    let calls = ApiCounts::from_delta(&d);
    Ok(ChurnRun {
        placement: plan.placement.as_str().into(),
        pod_events: plan.pod_events,
        rate: plan.rate,
        achieved_rate: round3(total as f64 / created_s),
        created: total,
        without_sidecar: total.saturating_sub(windows.len()),
        latency_ms: latency,
        latency_from: if from_bound { "binding" } else { "create" }.into(),
        create_ms: Latency::of(&create_ms),
        queue_wait_ms: quantiles(metric::QUEUE_WAIT_SECONDS),
        reconcile_ms: quantiles(metric::RECONCILE_DURATION_SECONDS),
        status_writes_per_s: round3(
            d.sum(&series(metric::STATUS_WRITES, "_total"), &[]) / run_s.max(1e-3),
        ),
        event_writes_per_s: round3(calls.event_writes() / run_s.max(1e-3)),
        tail: tail(&windows, &samples, &status_times, &event_times),
        samples_ms: samples,
    })
}

struct Done {
    created_at: tokio::time::Instant,
    create_ms: f64,
}

/// Creates `pod`, waits `delay`, deletes it (grace period 0).
async fn create_then_delete(api: &Api<Pod>, pod: Pod, delay: Duration) -> anyhow::Result<Done> {
    let pp = PostParams {
        field_manager: Some(BENCH_MANAGER.to_string()),
        ..PostParams::default()
    };
    let name = pod.name_any();
    let sent = tokio::time::Instant::now();
    api.create(&pp, &pod)
        .await
        .with_context(|| format!("creating Pod {name}"))?;
    let created_at = tokio::time::Instant::now();
    let create_ms = created_at.duration_since(sent).as_secs_f64() * 1000.0;
    tokio::time::sleep_until(created_at + delay).await;
    match api
        .delete(&name, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e).with_context(|| format!("deleting Pod {name}")),
    }
    Ok(Done {
        created_at,
        create_ms,
    })
}

/// What the Pods at or above the p99 latency (nearest rank, unrounded) had in common: a
/// status change or an Event write arriving at the observer within their window, against
/// all Pods. `samples_ms[i]` is the latency of `windows[i]`.
fn tail(
    windows: &[(Instant, Instant)],
    samples_ms: &[f64],
    status: &[Instant],
    events: &[Instant],
) -> Tail {
    let mut sorted = samples_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p99 = nearest_rank(&sorted, 99.0);
    // `times` are in arrival order: the first at or after `a` decides.
    let hit = |times: &[Instant], (a, b): (Instant, Instant)| -> bool {
        times
            .get(times.partition_point(|t| *t < a))
            .is_some_and(|t| *t <= b)
    };
    let share = |ws: &[(Instant, Instant)], times: &[Instant]| -> f64 {
        if ws.is_empty() {
            return 0.0;
        }
        round3(ws.iter().filter(|w| hit(times, **w)).count() as f64 / ws.len() as f64)
    };
    let slow: Vec<(Instant, Instant)> = windows
        .iter()
        .zip(samples_ms)
        .filter(|(_, ms)| **ms >= p99)
        .map(|(w, _)| *w)
        .collect();
    Tail {
        threshold_ms: round3(p99),
        pods: slow.len(),
        with_status_write: share(&slow, status),
        all_with_status_write: share(windows, status),
        with_event_write: share(&slow, events),
        all_with_event_write: share(windows, events),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_both_placements_and_the_no_events_control() {
        let p = plans(20.0, Some(70.0));
        let key: Vec<(&str, f64, bool)> = p
            .iter()
            .map(|p| (p.placement.as_str(), p.rate, p.pod_events))
            .collect();
        assert_eq!(
            key,
            [
                ("SameNode", 20.0, true),
                ("Any", 20.0, true),
                ("SameNode", 20.0, false),
                ("SameNode", 70.0, true),
                ("Any", 70.0, true),
            ]
        );
        assert_eq!(plans(20.0, None).len(), 3);
    }

    #[test]
    fn the_tail_is_attributed_to_writes_in_its_windows() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Ten Pods of 10 ms each and one of 100 ms (from 200 to 300 ms): the p99.
        let mut windows: Vec<(Instant, Instant)> =
            (0..10).map(|i| (at(i * 20), at(i * 20 + 10))).collect();
        windows.push((at(200), at(300)));
        let status = [at(250)]; // inside the slow window only
        let events = [at(5), at(250)]; // in the first and the slow window
        let ms: Vec<f64> = windows.iter().map(|(a, b)| signed_ms(*a, *b)).collect();
        let t = tail(&windows, &ms, &status, &events);
        assert_eq!((t.pods, t.threshold_ms), (1, 100.0));
        assert_eq!(t.with_status_write, 1.0);
        assert_eq!(t.all_with_status_write, round3(1.0 / 11.0));
        assert_eq!(t.with_event_write, 1.0);
        assert_eq!(t.all_with_event_write, round3(2.0 / 11.0));
        let none = tail(&windows, &ms, &[at(400)], &[]);
        assert_eq!(
            (none.with_status_write, none.all_with_event_write),
            (0.0, 0.0)
        );
    }
}
