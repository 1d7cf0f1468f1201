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

mod admission;
pub mod churn;
mod cluster;
mod floor;
mod markdown;
pub mod metrics;
pub mod observe;
pub mod operator;
pub mod peers;
pub mod pictures;
mod repair;
pub mod report;
mod round;
pub mod rounds;
pub mod sys;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::Client;

pub use operator::OperatorMode;
pub use report::Report;
use report::{Apf, round3};
use sys::Machine;

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
    /// Run the admission section (the operator binary only).
    pub admission: bool,
    /// Drifted Pods of the repair section (the operator binary only; 0: skip it).
    pub repair_n: usize,
    /// Namespaces of the cluster-policy section (one ClusterSidecarPolicy over them, the N
    /// main Pods spread over them; 0: skip it).
    pub cluster_namespaces: usize,
    /// Main Pods per second of the steady-churn section's first rate (0: skip it).
    pub churn_rate: f64,
    /// Seconds of creates of each churn run (0: skip the section).
    pub churn_secs: u64,
    /// The churn's second, near-maximum rate; `None`: a quarter of the phased floor's burst
    /// throughput; 0: no second rate.
    pub churn_max_rate: Option<f64>,
    /// How long each churned main Pod lives.
    pub churn_delete_after: Duration,
    /// `make bench-peers`: also run Kyverno's rounds (after the floor and operator rounds).
    pub peers: Option<peers::KyvernoPaths>,
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
            admission: true,
            repair_n: 200,
            cluster_namespaces: 10,
            churn_rate: 20.0,
            churn_secs: 60,
            churn_max_rate: None,
            churn_delete_after: Duration::from_secs(10),
            peers: None,
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

pub(crate) fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

pub(crate) fn since(later: Instant, earlier: Instant) -> f64 {
    secs(later.saturating_duration_since(earlier))
}

/// Runs the benchmark and writes `report.json` and `report.md` into `out_dir`.
/// Everything it started is stopped at the end, on error too.
pub async fn run(cfg: &Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    T0.get_or_init(Instant::now);
    anyhow::ensure!(cfg.n > 0, "n must be positive");
    anyhow::ensure!(
        cfg.rounds > 0 || matches!(cfg.operator, OperatorMode::Process(_)),
        "rounds must be positive (0 rounds runs the admission section only, which needs the operator binary)"
    );
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
    if cfg.rounds == 0 {
        say(&format!(
            "done in {:.0}s (no rounds), report in {}",
            report.total_s,
            cfg.out_dir.display()
        ));
    } else {
        say(&format!(
            "done in {:.0}s: ratio {:.2}, latency p50 {:.0} ms p99 {:.0} ms, report in {}",
            report.total_s,
            report.ratio,
            report.latency_ms.p50,
            report.latency_ms.p99,
            cfg.out_dir.display()
        ));
    }
    Ok(report)
}

fn write_report(cfg: &Config, report: &Report) -> anyhow::Result<()> {
    let json = cfg.out_dir.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let pictures = pictures::write_pictures(report, &cfg.out_dir)?;
    let mut text = report.markdown();
    if !pictures.is_empty() {
        text.push_str("\nPictures of round 1: ");
        let links: Vec<String> = pictures.iter().map(|f| format!("[{f}]({f})")).collect();
        text.push_str(&links.join(", "));
        text.push('\n');
        for f in &pictures {
            text.push_str(&format!("\n![{f}]({f})\n"));
        }
    }
    let md = cfg.out_dir.join("report.md");
    std::fs::write(&md, text).with_context(|| format!("writing {}", md.display()))?;
    Ok(())
}

/// Shared state of a run.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) kubeconfig: &'a Path,
    /// The client that creates Pods (floor and operator rounds alike).
    pub(crate) client: Client,
    /// The observer's own client.
    pub(crate) observer: Client,
    pub(crate) run_id: String,
    pub(crate) namespaces: usize,
    /// Namespaces that exist now (deleted at the end if the run fails).
    pub(crate) live: &'a mut Vec<String>,
}

impl Ctx<'_> {
    /// Creates the round's `ctx.namespaces` namespaces `<prefix>-<i>-<random>` and keeps
    /// them for the clean-up of a failed run.
    pub(crate) async fn fresh_namespaces(&mut self, prefix: &str) -> anyhow::Result<Vec<String>> {
        self.fresh_namespaces_n(prefix, self.namespaces).await
    }

    /// [`Ctx::fresh_namespaces`] with `count` namespaces instead of the rounds' number.
    pub(crate) async fn fresh_namespaces_n(
        &mut self,
        prefix: &str,
        count: usize,
    ) -> anyhow::Result<Vec<String>> {
        let timeout = self.cfg.timeout();
        let nss =
            workload::create_namespaces(&self.client, prefix, count, &self.run_id, timeout).await?;
        self.live.extend(nss.iter().cloned());
        Ok(nss)
    }

    /// Deletes namespaces made by [`Ctx::fresh_namespaces`] and waits until they are gone.
    pub(crate) async fn drop_namespaces(&mut self, nss: &[String]) -> anyhow::Result<()> {
        workload::delete_namespaces(&self.client, nss, self.cfg.timeout()).await?;
        self.live.retain(|n| !nss.contains(n));
        Ok(())
    }
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
    sidecar_testenv::install_crd(&client, &sidecar_api::cluster_crd())
        .await
        .context("installing the ClusterSidecarPolicy CRD")?;
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
    let mut report = new_report(cfg, ctx.namespaces, apf, server_version, machine);
    for r in 1..=cfg.rounds {
        let floor = floor::floor_round(&mut ctx, r).await?;
        say(&format!(
            "round {r}/{} floor: {:.2}s ({:.2}s mains + {:.2}s sidecars)",
            cfg.rounds, floor.floor_s, floor.mains_s, floor.sidecars_s
        ));
        let op = round::operator_round(&mut ctx, r, &floor).await?;
        say(&format!(
            "round {r}/{} operator: converge {:.2}s (ratio {:.2}), ready {:.2}s, latency p50 {:.0} ms p99 {:.0} ms, \
             calls/sidecar {:?}, idle writes {}, rollout {:.2}s, cold start {:.2}s",
            cfg.rounds,
            op.convergence.converge_s,
            op.convergence.ratio,
            op.convergence.ready_s,
            op.convergence.latency_ms.p50,
            op.convergence.latency_ms.p99,
            op.cost.api_calls_per_sidecar,
            op.idle.idle_writes,
            op.rollout.rollout_s,
            op.cold_start.cold_start_s
        ));
        report.floor_rounds.push(floor);
        report.operator_rounds.push(op);
        // Partial results survive a later failure.
        report.summarize();
        write_report(cfg, &report)?;
    }
    let peers = peers::peers_section(&mut ctx, &report).await?;
    report.peers = peers;
    if report.peers.is_some() {
        write_report(cfg, &report)?;
    }
    if cfg.rounds > 0 {
        report.churn = churn::churn_section(&mut ctx, report.floor_s).await?;
        if report.churn.is_some() {
            write_report(cfg, &report)?;
        }
    }
    if cfg.admission {
        report.admission = admission::admission_section(&mut ctx).await?;
    }
    if let Some(a) = &report.admission {
        say(&format!(
            "admission: throughput with/without the webhook {:.2}, API server p50 {:.1} ms p99 {:.1} ms ({:.0}% under 5 ms), handler p99 {:.2} ms, {} of {} injected",
            a.throughput_ratio,
            a.apiserver_p50_ms,
            a.apiserver_p99_ms,
            a.apiserver_under_5ms * 100.0,
            a.handler_p99_ms,
            a.injected,
            a.n
        ));
    }
    if cfg.rounds > 0 {
        report.cluster = cluster::cluster_section(&mut ctx).await?;
    }
    if let Some(c) = &report.cluster {
        say(&format!(
            "cluster policy: {} Pods over {} namespaces converged in {:.2}s, floor {:.2}s (ratio {:.2}; namespaced rounds {:.2}), Ready in {:.2}s",
            c.n, c.namespaces, c.converge_s, c.floor_s, c.ratio, report.ratio, c.ready_s
        ));
        write_report(cfg, &report)?;
    }
    report.repair = repair::repair_section(&mut ctx).await?;
    if let Some(r) = &report.repair {
        say(&format!(
            "repair: {} drifted Pods replaced in {:.2}s, floor {:.2}s (ratio {:.2}), {} evictions",
            r.n, r.repair_s, r.floor_s, r.ratio, r.evictions
        ));
    }
    Ok(report)
}

/// The report before any round: the setup of the run.
fn new_report(
    cfg: &Config,
    namespaces: usize,
    apf: Apf,
    server_version: String,
    machine: Machine,
) -> Report {
    Report {
        n: cfg.n,
        rounds: cfg.rounds,
        namespaces,
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
    }
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
        "bytes_per_cached_pod = (RSS at the end of the idle period − RSS of the same instance with the policies created and no Pod) / (cached Pods then − cached Pods at start): the policies' fixed costs are not charged to the Pods.".to_string(),
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
