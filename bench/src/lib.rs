//! `make bench`: the operator against the physical floor, on the local control plane.
//!
//! Rounds alternate (floor, operator, floor, operator, …); medians are reported.
//!
//! - **Floor**: a plain client (JSON, `concurrency` requests in flight) creates N main
//!   Pods, then N sidecar-shaped Pods rendered by [`sidecar_planner::render`] from the
//!   created Pods (the very Pods the operator would create). No operator runs then (it
//!   would delete those "orphans" of a policy that does not exist).
//! - **Operator**: a fresh operator instance (all namespaces) is started and ready, the
//!   policies exist, the same client creates N main Pods; an independent observer
//!   (its own client and watches) times the sidecars (convergence, Pod → sidecar
//!   latency) and the policies' status (Ready). Then: idle period (writes, CPU, steady
//!   memory); cold start (operator stopped, sidecars deleted, a fresh instance started
//!   with the N main Pods present); rollout (template change) by that fresh instance.
//!
//! Main Pods are bare Pods with `spec.nodeName` preassigned round-robin to the two kwok
//! Nodes, so the scheduler is not in their path (it does bind the sidecars, in the floor
//! and the operator rounds alike, but neither measurement waits for binding).

pub mod metrics;
pub mod observe;
pub mod operator;
pub mod report;
pub mod sys;
pub mod workload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::Client;

use observe::Observer;
pub use operator::OperatorMode;
use operator::{ApiCounts, Launch, RunningOperator};
pub use report::Report;
use report::{Apf, FloorRound, Latency, OperatorRound, round3};
use sys::Machine;
use workload::{BENCH_MANAGER, SIDECAR_MANAGER};

/// Where the control plane comes from.
#[derive(Debug, Clone)]
pub enum Cluster {
    /// Start a fresh one ([`sidecar_testenv::start`]) and stop it at the end.
    Start,
    /// Use a running one through this admin kubeconfig; it is left running (only the
    /// namespaces the benchmark created are deleted).
    Existing(PathBuf),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Main Pods (and so sidecars) per round.
    pub n: usize,
    /// Rounds of each kind (floor and operator alternate).
    pub rounds: usize,
    /// Idle period after convergence, seconds.
    pub idle_secs: u64,
    /// Requests in flight of the benchmark's client; also the operator's `--concurrency`.
    pub concurrency: usize,
    /// The control plane.
    pub cluster: Cluster,
    /// The operator under test.
    pub operator: OperatorMode,
    /// The operator's `--pod-events` (Normal events on main Pods).
    pub pod_events: bool,
    /// `maxUnavailable` of the policies (drives the rollout).
    pub rollout_max_unavailable: String,
    /// Where `report.json`, `report.md` and the operator logs go.
    pub out_dir: PathBuf,
    /// Longest wait for any one step (default: 120 s + 0.1 s per Pod).
    pub timeout: Option<Duration>,
}

impl Config {
    /// Defaults for `n` Pods: 3 rounds, 60 s idle, 16 in flight, a fresh control plane,
    /// the release binary, `maxUnavailable: 100%`, output in `target/bench`.
    pub fn new(n: usize) -> Config {
        Config {
            n,
            rounds: 3,
            idle_secs: 60,
            concurrency: 16,
            cluster: Cluster::Start,
            operator: OperatorMode::Process(target_dir().join("release/sidecar-operator")),
            pod_events: true,
            rollout_max_unavailable: "100%".into(),
            out_dir: target_dir().join("bench"),
            timeout: None,
        }
    }

    fn timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| Duration::from_secs(120 + self.n as u64 / 10))
    }
}

/// The workspace's target directory (`$CARGO_TARGET_DIR`, else `<repo>/target`).
pub fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

static T0: OnceLock<Instant> = OnceLock::new();

/// A progress line on stderr.
pub fn say(msg: &str) {
    let t0 = T0.get_or_init(Instant::now);
    eprintln!("[bench {:>7.1}s] {msg}", t0.elapsed().as_secs_f64());
}

fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

fn since(later: Instant, earlier: Instant) -> f64 {
    secs(later.saturating_duration_since(earlier))
}

/// Runs the benchmark and writes `report.json` and `report.md` into `out_dir`.
/// Everything it started is stopped at the end, on error too.
pub async fn run(cfg: &Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    T0.get_or_init(Instant::now);
    anyhow::ensure!(cfg.n > 0 && cfg.rounds > 0, "n and rounds must be positive");
    if let OperatorMode::Process(bin) = &cfg.operator {
        anyhow::ensure!(
            bin.is_file(),
            "the operator binary {} does not exist (cargo build --release -p sidecar-operator)",
            bin.display()
        );
    }
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let machine = Machine::probe();
    say(&format!(
        "N={} rounds={} idle={}s concurrency={} on {} CPU(s) {} (load {})",
        cfg.n,
        cfg.rounds,
        cfg.idle_secs,
        cfg.concurrency,
        machine.nproc,
        machine.cpu_model,
        machine.loadavg_start
    ));
    let (mut running, kubeconfig) = match &cfg.cluster {
        Cluster::Start => {
            say("starting a local control plane");
            let r = sidecar_testenv::start(&sidecar_testenv::Options::default())
                .await
                .context("starting the control plane")?;
            let kc = r.cp.kubeconfig().to_path_buf();
            (Some(r), kc)
        }
        Cluster::Existing(kc) => (None, kc.clone()),
    };
    let mut cleanup = Vec::new();
    let result = bench(cfg, &kubeconfig, machine, &mut cleanup).await;
    if !cleanup.is_empty() && running.is_none() {
        say(&format!("deleting {} leftover namespace(s)", cleanup.len()));
        if let Ok(client) = sidecar_testenv::client_from_kubeconfig(&kubeconfig).await {
            let _ = workload::delete_namespaces(&client, &cleanup, cfg.timeout()).await;
        }
    }
    if let Some(r) = running.as_mut() {
        say("stopping the control plane");
        r.stop();
    }
    let mut report = result?;
    report.total_s = secs(started.elapsed());
    report.machine.loadavg_end = sys::loadavg();
    write_report(cfg, &report)?;
    say(&format!(
        "done in {:.0}s: ratio {:.2}, latency p50 {:.0} ms p99 {:.0} ms, report in {}",
        report.total_s,
        report.ratio,
        report.latency_ms.p50,
        report.latency_ms.p99,
        cfg.out_dir.display()
    ));
    Ok(report)
}

fn write_report(cfg: &Config, report: &Report) -> anyhow::Result<()> {
    let json = cfg.out_dir.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let md = cfg.out_dir.join("report.md");
    std::fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    Ok(())
}

/// Shared state of a run.
struct Ctx<'a> {
    cfg: &'a Config,
    kubeconfig: &'a Path,
    /// The client that creates Pods (floor and operator rounds alike).
    client: Client,
    /// The observer's own client.
    observer: Client,
    run_id: String,
    namespaces: usize,
    /// Namespaces that exist now (deleted at the end if the run fails).
    live: &'a mut Vec<String>,
}

async fn bench(
    cfg: &Config,
    kubeconfig: &Path,
    machine: Machine,
    live: &mut Vec<String>,
) -> anyhow::Result<Report> {
    let client = sidecar_testenv::client_from_kubeconfig(kubeconfig).await?;
    let observer = sidecar_testenv::client_from_kubeconfig(kubeconfig).await?;
    sidecar_testenv::install_crd(&client, &sidecar_api::crd())
        .await
        .context("installing the SidecarPolicy CRD")?;
    let server_version = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_default();
    let apf = probe_apf(&client).await;
    say(&format!(
        "Kubernetes {server_version}; priority and fairness {} (admin requests → FlowSchema {:?}, priority level {:?})",
        if apf.enabled { "on" } else { "off" },
        apf.flow_schema,
        apf.priority_level
    ));
    let mut ctx = Ctx {
        cfg,
        kubeconfig,
        client,
        observer,
        run_id: format!("{}-{:04x}", std::process::id(), rand::random::<u16>()),
        namespaces: workload::namespace_count(cfg.n),
        live,
    };
    let mut report = Report {
        n: cfg.n,
        rounds: cfg.rounds,
        namespaces: ctx.namespaces,
        concurrency: cfg.concurrency,
        idle_secs: cfg.idle_secs,
        rollout_max_unavailable: cfg.rollout_max_unavailable.clone(),
        cpu_rss_scope: cfg.operator.scope().into(),
        operator: match &cfg.operator {
            OperatorMode::Process(p) => format!("process {}", p.display()),
            OperatorMode::InProcess => "in-process".into(),
        },
        operator_flags: format!(
            "--concurrency {} --pod-events {}, all namespaces, log level info",
            cfg.concurrency, cfg.pod_events
        ),
        apf,
        server_version,
        machine,
        notes: notes(cfg),
        ..Report::default()
    };
    for r in 1..=cfg.rounds {
        let floor = floor_round(&mut ctx, r).await?;
        say(&format!(
            "round {r}/{} floor: {:.2}s ({:.2}s mains + {:.2}s sidecars)",
            cfg.rounds, floor.floor_s, floor.mains_s, floor.sidecars_s
        ));
        let op = operator_round(&mut ctx, r, &floor).await?;
        say(&format!(
            "round {r}/{} operator: converge {:.2}s (ratio {:.2}), ready {:.2}s, latency p50 {:.0} ms p99 {:.0} ms, \
             calls/sidecar {:?}, idle writes {}, rollout {:.2}s, cold start {:.2}s",
            cfg.rounds,
            op.converge_s,
            op.ratio,
            op.ready_s,
            op.latency_ms.p50,
            op.latency_ms.p99,
            op.api_calls_per_sidecar,
            op.idle_writes,
            op.rollout_s,
            op.cold_start_s
        ));
        report.floor_rounds.push(floor);
        report.operator_rounds.push(op);
        // Partial results survive a later failure.
        report.summarize();
        write_report(cfg, &report)?;
    }
    Ok(report)
}

fn notes(cfg: &Config) -> Vec<String> {
    let mut n = vec![
        "Main Pods are bare Pods with spec.nodeName preassigned round-robin to kwok-node-0/1: the scheduler is not in their path. Sidecars (SameNode: required node affinity) are bound by the scheduler in both the floor and the operator rounds; neither measurement waits for that.".to_string(),
        "Floor: the benchmark's client creates N main Pods, then N sidecar-shaped Pods rendered by sidecar_planner::render from the created Pods (same JSON, same field manager), with the same number of requests in flight as the operator's --concurrency. floor_s is the sum of both phases (rendering excluded).".to_string(),
        "Convergence: from the first main-Pod create to the receive time, at an independent watcher, of the N-th main Pod's first sidecar. Latency: watcher receive time of the main Pod's first event → of its sidecar's first event.".to_string(),
        "The operator and the benchmark use the admin kubeconfig (system:masters): API priority and fairness classifies those requests as exempt, so APF never queues or rejects them here.".to_string(),
        format!("Rollout (after the cold start, by the cold-started instance once every policy is Ready): every policy's template changes at once, updateStrategy RollingUpdate with maxUnavailable {}; timed until every live sidecar carries the new template hash and no stale one is left.", cfg.rollout_max_unavailable),
        "Cold start (after the idle period): operator stopped, sidecars deleted with grace period 0 (N main Pods and the policies remain), then a fresh operator started; timed from its start (process spawn) to the N-th new sidecar at the watcher. Its ratio is to the floor's N sidecar creates alone.".to_string(),
        "API calls per sidecar: difference of the operator's sidecar_operator_api_requests_total from the first main-Pod create to 2 s after every policy is Ready, divided by N; Events are counted apart (event_writes_per_sidecar). Idle writes count every create/delete/patch/update, Events included.".to_string(),
        "kwok (the fake kubelet, v0.8.0) removes a terminating Pod with a DELETE by name, grace 0, without a uid precondition, sometimes more than once; when the operator has already re-created a sidecar of the same name (rollout), kwok deletes the new one too and the operator creates it again. rollout_extra_sidecars counts those; they lengthen the rollout and raise its creates per sidecar. A real kubelet deletes with a uid precondition.".to_string(),
        "ready_s waits for kwok to mark every main Pod and sidecar Running/Ready (sidecars_ready_s in the rounds); the policy status follows within the operator's 0.5 s status debounce.".to_string(),
        "bytes_per_cached_pod = (RSS at the end of the idle period − RSS of the same instance when ready with no Pod) / (cached Pods then − cached Pods at start).".to_string(),
    ];
    if let OperatorMode::InProcess = cfg.operator {
        n.push("CPU and memory figures are of the whole benchmark process (in-process operator): a correctness check, not a measurement of the operator alone.".into());
    }
    n
}

/// Observes APF from the response headers of one admin request, and resolves the
/// FlowSchema and priority level uids to names.
async fn probe_apf(client: &Client) -> Apf {
    use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
    let req = match http::Request::get("/api").body(kube::client::Body::from(Vec::new())) {
        Ok(r) => r,
        Err(e) => {
            return Apf {
                note: format!("could not build the probe request: {e}"),
                ..Apf::default()
            };
        }
    };
    let resp = match client.send(req).await {
        Ok(r) => r,
        Err(e) => {
            return Apf {
                note: format!("probe request failed: {e}"),
                ..Apf::default()
            };
        }
    };
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let fs_uid = header("x-kubernetes-pf-flowschema-uid");
    let pl_uid = header("x-kubernetes-pf-prioritylevel-uid");
    let enabled = fs_uid.is_some() || pl_uid.is_some();
    let (fs, pl) = futures::join!(
        name_by_uid::<FlowSchema>(client, fs_uid.as_deref()),
        name_by_uid::<PriorityLevelConfiguration>(client, pl_uid.as_deref())
    );
    Apf {
        enabled,
        flow_schema: fs.or(fs_uid).unwrap_or_default(),
        priority_level: pl.or(pl_uid).unwrap_or_default(),
        note: "from the X-Kubernetes-PF-FlowSchema-UID / -PriorityLevel-UID headers of an admin GET /api (kube-apiserver runs with its default --enable-priority-and-fairness=true)".into(),
    }
}

/// The name of the cluster-scoped object of kind `K` with uid `uid`.
async fn name_by_uid<K>(client: &kube::Client, uid: Option<&str>) -> Option<String>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    use kube::ResourceExt as _;
    let uid = uid?;
    let list = kube::Api::<K>::all(client.clone())
        .list(&Default::default())
        .await
        .ok()?;
    list.items
        .into_iter()
        .find(|o| o.uid().as_deref() == Some(uid))
        .map(|o| o.name_any())
}

async fn floor_round(ctx: &mut Ctx<'_>, r: usize) -> anyhow::Result<FloorRound> {
    let cfg = ctx.cfg;
    let timeout = cfg.timeout();
    say(&format!(
        "round {r}/{} floor: creating {} namespace(s)",
        cfg.rounds, ctx.namespaces
    ));
    let nss = workload::create_namespaces(
        &ctx.client,
        &format!("bench-r{r}-floor"),
        ctx.namespaces,
        &ctx.run_id,
        timeout,
    )
    .await?;
    ctx.live.extend(nss.iter().cloned());
    let obs = Observer::start(&ctx.observer, &nss, false, timeout).await?;
    say(&format!(
        "round {r}/{} floor: creating {} main Pods",
        cfg.rounds, cfg.n
    ));
    let t0 = Instant::now();
    let created = workload::create_pods(
        &ctx.client,
        workload::main_pods(cfg.n, &nss),
        cfg.concurrency,
        BENCH_MANAGER,
    )
    .await?;
    let mains_s = secs(t0.elapsed());
    let sidecars = workload::render_sidecars(&created, &cfg.rollout_max_unavailable);
    anyhow::ensure!(
        sidecars.len() == cfg.n,
        "rendered {} sidecars",
        sidecars.len()
    );
    say(&format!(
        "round {r}/{} floor: creating {} sidecar-shaped Pods",
        cfg.rounds, cfg.n
    ));
    let t1 = Instant::now();
    workload::create_pods(&ctx.client, sidecars, cfg.concurrency, SIDECAR_MANAGER).await?;
    let sidecars_s = secs(t1.elapsed());
    obs.wait_live(
        cfg.n,
        "the floor's sidecars at the watcher",
        timeout,
        |_| true,
    )
    .await?;
    let sidecars_seen = obs.sidecars_seen();
    drop(obs);
    say(&format!(
        "round {r}/{} floor: deleting the namespaces",
        cfg.rounds
    ));
    workload::delete_namespaces(&ctx.client, &nss, timeout).await?;
    ctx.live.retain(|n| !nss.contains(n));
    Ok(FloorRound {
        round: r,
        mains_s,
        sidecars_s,
        floor_s: round3(mains_s + sidecars_s),
        sidecars_seen,
    })
}

fn launch<'a>(ctx: &'a Ctx<'_>, name: &'a str) -> Launch<'a> {
    Launch {
        mode: &ctx.cfg.operator,
        kubeconfig: ctx.kubeconfig,
        concurrency: ctx.cfg.concurrency,
        pod_events: ctx.cfg.pod_events,
        log_dir: &ctx.cfg.out_dir,
        name,
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

/// Records watch errors and failed reconciles of a metrics difference, if any.
fn record_errors(out: &mut OperatorRound, d: &metrics::Snapshot, prefix: &str) {
    for (name, key) in [
        ("sidecar_operator_watch_errors_total", "watch_errors"),
        (
            "sidecar_operator_reconcile_errors_total",
            "reconcile_errors",
        ),
    ] {
        let v = d.sum(name, &[]);
        if v > 0.0 {
            out.errors.insert(format!("{prefix}{key}"), v);
        }
    }
}

/// Keeps the instance's final `/metrics` next to its log (`<name>.metrics.txt`).
async fn save_metrics(op: &RunningOperator, dir: &Path, name: &str) {
    if let Ok(text) = op.metrics_text().await {
        let _ = std::fs::write(dir.join(format!("{name}.metrics.txt")), text);
    }
}

const CACHED: &str = "sidecar_operator_cached_pods";
const RECONCILES: &str = "sidecar_operator_reconciles_total";

async fn operator_round(
    ctx: &mut Ctx<'_>,
    r: usize,
    floor: &FloorRound,
) -> anyhow::Result<OperatorRound> {
    let cfg = ctx.cfg;
    let n = cfg.n;
    let timeout = cfg.timeout();
    let rounds = cfg.rounds;
    let mut out = OperatorRound {
        round: r,
        idle_s: cfg.idle_secs as f64,
        ..OperatorRound::default()
    };
    say(&format!(
        "round {r}/{rounds} operator: creating {} namespace(s), starting the operator",
        ctx.namespaces
    ));
    let nss = workload::create_namespaces(
        &ctx.client,
        &format!("bench-r{r}-op"),
        ctx.namespaces,
        &ctx.run_id,
        timeout,
    )
    .await?;
    ctx.live.extend(nss.iter().cloned());

    let name = format!("operator-r{r}");
    let mut op = RunningOperator::start(&launch(ctx, &name), timeout).await?;
    out.startup_s = since(op.ready, op.started);
    sleep_alive(&mut op, Duration::from_secs(1)).await?;
    out.idle_rss_bytes = op.rss();
    let m_start = op.metrics().await?;
    out.idle_cached_pods = m_start.sum(CACHED, &[]);

    workload::create_policies(&ctx.client, &nss, &cfg.rollout_max_unavailable).await?;
    let obs = Observer::start(&ctx.observer, &nss, true, timeout).await?;
    // The policies' first status (no Pod yet) is written before the clock starts.
    let zero: HashMap<String, i64> = nss.iter().map(|ns| (ns.clone(), 0)).collect();
    obs.wait_policies_ready(&zero, timeout).await?;
    sleep_alive(&mut op, Duration::from_millis(500)).await?;

    // Convergence.
    let m0 = op.metrics().await?;
    let cpu0 = op.cpu_seconds();
    say(&format!(
        "round {r}/{rounds} operator: creating {n} main Pods"
    ));
    let t0 = Instant::now();
    workload::create_pods(
        &ctx.client,
        workload::main_pods(n, &nss),
        cfg.concurrency,
        BENCH_MANAGER,
    )
    .await?;
    out.mains_s = secs(t0.elapsed());
    let t_conv = obs.wait_first_sidecars(n, timeout).await?;
    out.converge_s = since(t_conv, t0);
    out.ratio = if floor.floor_s > 0.0 {
        round3(out.converge_s / floor.floor_s)
    } else {
        0.0
    };
    let per_ns: HashMap<String, i64> = nss
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let first = i * workload::PER_NAMESPACE;
            let count = n.saturating_sub(first).min(workload::PER_NAMESPACE);
            (ns.clone(), count as i64)
        })
        .collect();
    let t_ready = obs.wait_policies_ready(&per_ns, timeout).await?;
    out.ready_s = since(t_ready, t0);
    let (bound, ready) = obs.live_bound_ready();
    out.sidecars_bound_s = bound.map_or(0.0, |t| since(t, t0));
    out.sidecars_ready_s = ready.map_or(0.0, |t| since(t, t0));
    say(&format!(
        "round {r}/{rounds} operator: converged in {:.2}s, Ready in {:.2}s",
        out.converge_s, out.ready_s
    ));
    sleep_alive(&mut op, Duration::from_secs(2)).await?;
    let m1 = op.metrics().await?;
    out.cpu_s = round3(op.cpu_seconds() - cpu0);
    out.rss_after_converge_bytes = op.rss();
    out.latency_ms = Latency::of(&obs.latencies_ms());
    out.sidecars_seen = obs.sidecars_seen();
    let d = m1.since(&m0);
    let calls = ApiCounts::from_delta(&d);
    let per = calls.per(n);
    out.api_calls_per_sidecar = per.by_verb_without_events();
    out.api_calls_per_sidecar_by_resource = per.by_resource.clone();
    out.event_writes_per_sidecar = round3(calls.event_writes() / n as f64);
    out.reconciles_per_pod = round3(d.sum(RECONCILES, &[("controller", "pod")]) / n as f64);
    out.policy_reconciles = d.sum(RECONCILES, &[("controller", "policy")]);
    out.status_writes = d.sum("sidecar_operator_status_writes_total", &[]);
    let rc = d.sum(
        "sidecar_operator_reconcile_duration_seconds_count",
        &[("controller", "pod")],
    );
    let rs = d.sum(
        "sidecar_operator_reconcile_duration_seconds_sum",
        &[("controller", "pod")],
    );
    out.mean_pod_reconcile_ms = if rc > 0.0 {
        round3(rs / rc * 1000.0)
    } else {
        0.0
    };

    // Idle.
    say(&format!(
        "round {r}/{rounds} operator: idle for {}s",
        cfg.idle_secs
    ));
    let m2 = op.metrics().await?;
    let cpu2 = op.cpu_seconds();
    sleep_alive(&mut op, Duration::from_secs(cfg.idle_secs)).await?;
    let m3 = op.metrics().await?;
    out.idle_cpu_s = round3(op.cpu_seconds() - cpu2);
    out.steady_rss_bytes = op.rss();
    out.cached_pods = m3.sum(CACHED, &[]);
    let idle = ApiCounts::from_delta(&m3.since(&m2));
    out.idle_writes = idle.writes();
    out.idle_writes_by = idle
        .by_resource
        .iter()
        .flat_map(|(res, verbs)| {
            verbs
                .iter()
                .filter(|(v, _)| matches!(v.as_str(), "create" | "delete" | "patch" | "update"))
                .map(move |(v, c)| (format!("{res}/{v}"), *c))
        })
        .collect();
    let cached = out.cached_pods - out.idle_cached_pods;
    out.bytes_per_cached_pod = if cached > 0.0 {
        ((out.steady_rss_bytes as f64 - out.idle_rss_bytes as f64) / cached).round()
    } else {
        0.0
    };

    // The first instance is done: peak, metrics, errors.
    out.peak_rss_bytes = op.peak_rss();
    save_metrics(&op, &cfg.out_dir, &name).await;
    record_errors(&mut out, &m3.since(&m_start), "");
    op.stop().await;

    // Cold start (before the rollout, so that no delete of the rollout is still in
    // flight — see the kwok note — when the fresh instance creates its sidecars).
    say(&format!(
        "round {r}/{rounds} operator: cold start (operator stopped, deleting the sidecars)"
    ));
    workload::delete_sidecars(&ctx.client, &nss).await?;
    obs.wait_live(0, "the sidecars to be gone", timeout, |_| true)
        .await?;
    let cold_name = format!("operator-r{r}-cold");
    let t_c = Instant::now();
    let mut cold = RunningOperator::start(&launch(ctx, &cold_name), timeout).await?;
    out.cold_start_ready_s = since(cold.ready, t_c);
    let t_cd = obs
        .wait_live(n, "the cold-started operator's sidecars", timeout, |l| {
            l.seen >= t_c
        })
        .await?;
    out.cold_start_s = since(t_cd, t_c);
    out.cold_start_ratio = if floor.sidecars_s > 0.0 {
        round3(out.cold_start_s / floor.sidecars_s)
    } else {
        0.0
    };
    let mc = cold.metrics().await?;
    out.cold_start_api_calls_per_sidecar =
        ApiCounts::from_delta(&mc).per(n).by_verb_without_events();
    obs.wait_policies_ready(&per_ns, timeout).await?;
    sleep_alive(&mut cold, Duration::from_secs(2)).await?;
    out.cold_start_steady_rss_bytes = cold.rss();
    out.cold_start_peak_rss_bytes = cold.peak_rss();

    // Rollout, by the cold-started instance (converged and Ready by now).
    let old_hashes = obs.live_hashes();
    anyhow::ensure!(
        old_hashes.len() == 1,
        "expected one template hash before the rollout, found {old_hashes:?}"
    );
    say(&format!(
        "round {r}/{rounds} operator: rollout (template change, maxUnavailable {})",
        cfg.rollout_max_unavailable
    ));
    let m4 = cold.metrics().await?;
    let seen_before = obs.sidecars_seen();
    let t_r = Instant::now();
    workload::change_template(&ctx.client, &nss, 2).await?;
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
    sleep_alive(&mut cold, Duration::from_secs(1)).await?;
    let m5 = cold.metrics().await?;
    out.rollout_api_calls_per_sidecar = ApiCounts::from_delta(&m5.since(&m4))
        .per(n)
        .by_verb_without_events();
    record_errors(&mut out, &m5, "cold_");
    save_metrics(&cold, &cfg.out_dir, &cold_name).await;
    cold.stop().await;
    drop(obs);

    say(&format!(
        "round {r}/{rounds} operator: deleting the namespaces"
    ));
    workload::delete_namespaces(&ctx.client, &nss, timeout).await?;
    ctx.live.retain(|n| !nss.contains(n));
    for m in [
        &mut out.api_calls_per_sidecar,
        &mut out.rollout_api_calls_per_sidecar,
        &mut out.cold_start_api_calls_per_sidecar,
    ] {
        for v in m.values_mut() {
            *v = round3(*v);
        }
    }
    for verbs in out.api_calls_per_sidecar_by_resource.values_mut() {
        for v in verbs.values_mut() {
            *v = round3(*v);
        }
    }
    Ok(out)
}
