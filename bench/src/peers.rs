//! `make bench-peers`: the peer a user would pick instead, in the same run, against the
//! same floor and the same watcher.
//!
//! **Kyverno** (pinned in `hack/kyverno/go.mod`, built by `hack/peers.sh`), out of cluster
//! against the local API server: its admission controller (webhook on 127.0.0.1, which it
//! registers itself through `--serverIP`) and its background controller, both with the
//! admin kubeconfig. One ClusterPolicy with a `generate` rule (`synchronize: true`) gives
//! each main Pod of the round's namespaces a companion Pod owned by it, on its Node: the
//! operator's job. Its rounds run after every floor and operator round (its webhooks stay
//! registered while it runs), and it is stopped, and its webhook configurations deleted,
//! before anything else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt as _};
use serde::Serialize;
use serde_json::json;
use sidecar_api::constants::LABEL_MAIN_UID;
use sidecar_testenv::process::Proc;

use crate::admission::{self, WebhookTimes};
use crate::metrics::{Snapshot, http_get};
use crate::observe::{Observer, Watches};
use crate::operator::free_port;
use crate::report::Report;
use crate::rounds::{FloorRound, Latency, median, round3};
use crate::sys::{self, RssSampler};
use crate::workload::{self, BENCH_MANAGER, RUN_LABEL};
use crate::{Ctx, say, secs, since};

/// Where Kyverno is (`hack/peers.sh build` and `hack/peers.sh crds`).
#[derive(Debug, Clone)]
pub struct KyvernoPaths {
    /// Holds `kyverno` and `background-controller`.
    pub bin_dir: PathBuf,
    /// Kyverno's `config/crds`.
    pub crds: PathBuf,
}

/// The peers section.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeersSection {
    /// What ran.
    pub peer: String,
    /// Every round converged (else `converge_s` includes timeouts).
    pub all_converged: bool,
    /// Median over the rounds of the peer's convergence, seconds.
    pub converge_s: f64,
    /// converge_s / the phased floor (median).
    pub ratio: f64,
    /// converge_s / the ideal floor (median).
    pub ratio_ideal: f64,
    /// The operator's convergence in the same run (median).
    pub operator_converge_s: f64,
    /// Peak RSS of the peer's processes (summed), median.
    pub peak_rss_bytes: u64,
    /// The operator's peak RSS in the same run (median).
    pub operator_peak_rss_bytes: u64,
    /// The rounds.
    pub rounds: Vec<PeerRound>,
    /// Kyverno's `mutate` rule injecting Container mode's native sidecar at admission
    /// (the operator's own webhook is the admission section of the same run).
    pub injection: Option<PeerInjection>,
    /// How it was set up.
    pub notes: Vec<String>,
}

/// One round of the peer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerRound {
    /// Round number.
    pub round: usize,
    /// Every main Pod got its companion within the step timeout.
    pub converged: bool,
    /// First main-Pod create → N-th companion Pod at the observer, seconds (the timeout
    /// when it did not converge).
    pub converge_s: f64,
    /// converge_s / the round's phased floor.
    pub ratio: f64,
    /// converge_s / the round's ideal floor.
    pub ratio_ideal: f64,
    /// The benchmark's N main-Pod creates (the peer's admission webhook is in their path).
    pub mains_s: f64,
    /// Main Pod → companion latency at the observer.
    pub latency_ms: Latency,
    /// Companions seen.
    pub sidecars_seen: usize,
    /// Companions owned by their main Pod (ownerReference with its uid) at the end.
    pub owned: usize,
    /// CPU seconds of the peer's processes over the convergence (+2 s).
    pub cpu_s: f64,
    /// Peak RSS of the peer's processes, summed (each one's own peak).
    pub peak_rss_bytes: u64,
    /// RSS of the peer's processes after the convergence, summed.
    pub rss_after_bytes: u64,
    /// The peer's own API requests per companion made, by operation and kind (its
    /// `kyverno_client_queries_total`, both processes, watches left out); empty if it
    /// exposed none.
    pub api_calls_per_sidecar: BTreeMap<String, f64>,
    /// The latency samples (ms), for the pictures.
    #[serde(skip)]
    pub latencies_ms: Vec<f64>,
    /// Seconds after the first main-Pod create at which each companion was first seen.
    #[serde(skip)]
    pub sidecars_s: Vec<f64>,
    /// A Kyverno process that exited during the round (its controllers quit when they
    /// cannot renew their Lease under load): the round's figures stand, its CPU counts
    /// the processes still running, and no further round runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exited: Option<String>,
}

/// A burst of N main-Pod creates with Kyverno's `mutate` rule injecting the same native
/// sidecar as Container mode's webhook, and the same burst without any webhook after
/// Kyverno stopped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerInjection {
    /// Pods per burst.
    pub n: usize,
    /// Seconds of the burst with Kyverno's webhook in the path.
    pub with_s: f64,
    /// Seconds of the same burst with no webhook (Kyverno stopped, its webhooks deleted).
    pub without_s: f64,
    /// Create throughput with / without.
    pub throughput_ratio: f64,
    /// Pods of the burst that came out injected (goal: all).
    pub injected: usize,
    /// The API server's admission time for Kyverno's mutating webhooks (Pod CREATE).
    pub apiserver: WebhookTimes,
    /// CPU seconds of Kyverno's admission controller (where mutation runs) over the burst.
    pub cpu_s: f64,
    /// CPU seconds of the API server over the burst with Kyverno, and without.
    pub apiserver_cpu_s: f64,
    pub apiserver_cpu_without_s: f64,
    /// RSS of Kyverno's admission controller after the burst.
    pub rss_bytes: u64,
}

impl PeerInjection {
    /// The figures of burst `with` (Kyverno's admission controller at `rss_bytes` after
    /// it) against burst `without`.
    fn of(with: &admission::Burst, without: &admission::Burst, rss_bytes: u64) -> Self {
        PeerInjection {
            n: with.created.len(),
            with_s: round3(with.secs),
            without_s: round3(without.secs),
            throughput_ratio: round3(without.secs / with.secs.max(1e-9)),
            injected: with
                .created
                .iter()
                .filter(|p| admission::has_sidecar(p))
                .count(),
            apiserver: admission::webhook_times(&with.server, |name| {
                name.starts_with(KYVERNO_MUTATE_WEBHOOKS)
            }),
            cpu_s: round3(with.cpu_s),
            apiserver_cpu_s: round3(with.apiserver_cpu_s()),
            apiserver_cpu_without_s: round3(without.apiserver_cpu_s()),
            rss_bytes,
        }
    }
}

/// CPU seconds between two readings of the same processes, over those readable both times.
fn cpu_since(before: &[Option<f64>], after: &[Option<f64>]) -> f64 {
    before
        .iter()
        .zip(after)
        .filter_map(|(b, a)| Some((*a)? - (*b)?))
        .sum()
}

/// The names of Kyverno's mutating webhooks (`-fail` and `-ignore`).
const KYVERNO_MUTATE_WEBHOOKS: &str = "mutate.kyverno.svc";

/// Label of Kyverno's companions (the observer's sidecar selector).
const COMPANION_LABEL: &str = "sidecar-bench/role=kyverno-companion";
const POLICY: &str = "sidecar-bench-companion";
const INJECT_POLICY: &str = "sidecar-bench-inject";
const KYVERNO_NS: &str = "kyverno";

/// The running Kyverno: both processes, their samplers and metrics ports.
struct Kyverno {
    /// (process, its RSS sampler, its metrics port).
    procs: Vec<(Proc, RssSampler, u16)>,
}

impl Kyverno {
    /// Each process's CPU seconds (`None` once it is gone).
    fn cpu_each(&self) -> Vec<Option<f64>> {
        self.procs
            .iter()
            .map(|(p, _, _)| sys::cpu_seconds(p.pid()))
            .collect()
    }
    /// The admission controller (the first process): CPU seconds and RSS.
    fn admission_cpu_seconds(&self) -> f64 {
        sys::cpu_seconds(self.procs[0].0.pid()).unwrap_or(0.0)
    }
    fn admission_rss(&self) -> u64 {
        sys::rss(self.procs[0].0.pid()).unwrap_or(0)
    }
    fn rss(&self) -> u64 {
        self.procs
            .iter()
            .map(|(p, _, _)| sys::rss(p.pid()).unwrap_or(0))
            .sum()
    }
    fn peak_rss(&self) -> u64 {
        self.procs.iter().map(|(_, s, _)| s.peak()).sum()
    }
    /// Why a process is gone (its status and log), if one is.
    fn exited(&mut self) -> Option<(String, String)> {
        self.procs.iter_mut().find_map(|(p, _, _)| {
            let status = p.exited()?;
            Some((
                format!("Kyverno exited ({status}); its log {}", p.log.display()),
                p.log_tail(30),
            ))
        })
    }
    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.exited() {
            Some((why, tail)) => bail!("{why}:\n{tail}"),
            None => Ok(()),
        }
    }
    /// The sum over both processes of `kyverno_client_queries_total` by operation.
    async fn queries(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (_, _, port) in &self.procs {
            let Ok((200, body)) = http_get(*port, "/metrics").await else {
                continue;
            };
            let Ok(snap) = Snapshot::parse(&body) else {
                continue;
            };
            for (labels, v) in snap.series("kyverno_client_queries_total") {
                let get = |k: &str| labels.get(k).map_or("?", String::as_str);
                let key = format!("{} {}", get("operation"), get("resource_kind"));
                *out.entry(key).or_insert(0.0) += v;
            }
        }
        out
    }
    fn stop(mut self) {
        for (p, _, _) in &mut self.procs {
            p.stop(Duration::from_secs(10));
        }
    }
}

/// Runs the Kyverno rounds (one per floor round) and the comparison; `None` without
/// [`crate::Config::peers`].
/// `report` holds the floor and operator rounds, summarized.
pub(crate) async fn peers_section(
    ctx: &mut Ctx<'_>,
    report: &Report,
) -> anyhow::Result<Option<PeersSection>> {
    let Some(paths) = ctx.cfg.peers.clone() else {
        return Ok(None);
    };
    let timeout = ctx.cfg.timeout();
    say("peers: installing Kyverno's CRDs and starting Kyverno out of cluster");
    install(ctx, &paths).await?;
    let mut kyverno = start(ctx, &paths)?;
    // The injection burst first: after a generate round that did not converge, Kyverno's
    // background controller may still be working on its UpdateRequests.
    let mutate = inject_burst(ctx, &mut kyverno, timeout).await;
    let result = rounds(ctx, &mut kyverno, &report.floor_rounds, timeout).await;
    say("peers: stopping Kyverno and removing its webhooks");
    kyverno.stop();
    remove_webhooks(&ctx.client).await;
    let rounds = result?;
    let (with, rss_bytes) = mutate?;
    let without = without_webhooks(ctx).await?;
    let injection = PeerInjection::of(&with, &without, rss_bytes);
    if injection.injected != injection.n {
        say(&format!(
            "peers: Kyverno injected {} of {} Pods",
            injection.injected, injection.n
        ));
    }
    let injection = Some(injection);
    let med =
        |f: &dyn Fn(&PeerRound) -> f64| round3(median(&rounds.iter().map(f).collect::<Vec<_>>()));
    let converge_s = med(&|r| r.converge_s);
    Ok(Some(PeersSection {
        peer: format!(
            "Kyverno {} (admission controller + background controller, out of cluster, admin kubeconfig)",
            kyverno_version(&paths)
        ),
        all_converged: rounds.iter().all(|r| r.converged),
        converge_s,
        ratio: round3(converge_s / report.floor_s.max(1e-9)),
        ratio_ideal: round3(converge_s / report.ideal_floor_s.max(1e-9)),
        operator_converge_s: report.converge_s,
        peak_rss_bytes: med(&|r| r.peak_rss_bytes as f64) as u64,
        operator_peak_rss_bytes: report.peak_rss_bytes,
        rounds,
        injection,
        notes: vec![
            "Kyverno's ClusterPolicy: one generate rule (synchronize: true) matching the main Pods of the round's namespaces, creating <pod>-companion with an ownerReference to the main Pod's uid and required node affinity to its spec.nodeName, the same container as the operator's sidecar; generate runs in the background controller from the UpdateRequests the admission controller creates.".into(),
            "Kyverno's ConfigMap sets updateRequestThreshold 1000 (the default 0 skips every UpdateRequest out of cluster) and its default resourceFilters; ClusterRoleBindings to cluster-admin for Kyverno's three ServiceAccount names exist only for its policy validation (SubjectAccessReviews); both processes run with the admin kubeconfig, like the operator.".into(),
            "Kyverno's CPU and RSS are the sum of its two processes (Go, GOMAXPROCS unset: both cores).".into(),
            "Injection: a second ClusterPolicy (background: false, autogen off) whose mutate rule (patchStrategicMerge) adds Container mode's native sidecar (initContainers bench-agent, restartPolicy Always) to the main Pods of fresh namespaces of the run; one burst of N creates with it, then, Kyverno stopped and its webhooks deleted, the same burst with no webhook. Kyverno's CPU and RSS there are its admission controller's (mutation runs in it). The operator's webhook doing the same is the admission section of this run.".into(),
            "Not measured: churn with Kyverno.".into(),
        ],
    }))
}

/// Requests between two scrapes per companion made, watches left out (they are per
/// process, not per companion).
fn per_companion(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    companions: usize,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(k, _)| !k.starts_with("watch "))
        .map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (k.clone(), round3(d / companions.max(1) as f64))
        })
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn kyverno_version(paths: &KyvernoPaths) -> String {
    paths
        .bin_dir
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("kyverno-")
                .to_string()
        })
        .unwrap_or_default()
}

async fn rounds(
    ctx: &mut Ctx<'_>,
    kyverno: &mut Kyverno,
    floors: &[FloorRound],
    timeout: Duration,
) -> anyhow::Result<Vec<PeerRound>> {
    let n = ctx.cfg.n;
    let mut out = Vec::new();
    for (i, floor) in floors.iter().enumerate() {
        let r = i + 1;
        let nss = ctx.fresh_namespaces(&format!("peer-r{r}")).await?;
        create_policy(&ctx.client, companion_policy(&ctx.run_id), timeout).await?;
        wait_live(ctx, kyverno, timeout).await?;
        let watches = Watches {
            sidecars: Some(COMPANION_LABEL.into()),
            ..Watches::default()
        };
        let obs = Observer::start_with(&ctx.observer, &nss, watches, timeout).await?;
        say(&format!("peers: round {r}: Kyverno, {n} main Pods"));
        let q0 = kyverno.queries().await;
        let cpu0 = kyverno.cpu_each();
        let t0 = Instant::now();
        workload::create_pods(
            &ctx.client,
            workload::main_pods(n, &nss),
            ctx.cfg.concurrency,
            BENCH_MANAGER,
        )
        .await?;
        let mains_s = secs(t0.elapsed());
        // A peer that does not converge is a result, not a failure of the run.
        let (converged, converge_s) = match obs.wait_first_sidecars(n, timeout).await {
            Ok(at) => (true, since(at, t0)),
            Err(e) => {
                say(&format!(
                    "peers: round {r}: Kyverno did not converge: {e:#}"
                ));
                (false, secs(t0.elapsed()))
            }
        };
        // A peer that quits under the load is a result too (the first line of why).
        let exited = kyverno.exited().map(|(why, _)| why);
        if let Some(why) = &exited {
            say(&format!("peers: round {r}: {why}"));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu_s = round3(cpu_since(&cpu0, &kyverno.cpu_each()));
        let q1 = kyverno.queries().await;
        let latencies = obs.latencies_ms();
        let owned = owned_companions(&ctx.client, &nss).await?;
        let round = PeerRound {
            round: r,
            converged,
            converge_s,
            ratio: round3(converge_s / floor.floor_s.max(1e-9)),
            ratio_ideal: round3(converge_s / floor.ideal_s.max(1e-9)),
            mains_s,
            latency_ms: Latency::of(&latencies),
            sidecars_seen: obs.sidecars_seen(),
            owned,
            cpu_s,
            peak_rss_bytes: kyverno.peak_rss(),
            rss_after_bytes: kyverno.rss(),
            api_calls_per_sidecar: per_companion(&q0, &q1, obs.sidecars_seen()),
            latencies_ms: latencies,
            sidecars_s: obs.sidecar_times(t0),
            exited,
        };
        say(&format!(
            "peers: round {r}: Kyverno {} in {:.2}s (ratio {:.2} to the phased floor, {:.2} to the ideal), latency p50 {:.0} ms p99 {:.0} ms, {} of {n} owned, CPU {:.1} s, peak RSS {:.0} MiB, requests/companion {:?}",
            if converged {
                "converged"
            } else {
                "stopped waiting"
            },
            round.converge_s,
            round.ratio,
            round.ratio_ideal,
            round.latency_ms.p50,
            round.latency_ms.p99,
            round.owned,
            round.cpu_s,
            round.peak_rss_bytes as f64 / 1048576.0,
            round.api_calls_per_sidecar
        ));
        drop(obs);
        delete_policy(&ctx.client, POLICY).await;
        ctx.drop_namespaces(&nss).await?;
        let stop = round.exited.is_some();
        out.push(round);
        if stop {
            break;
        }
    }
    Ok(out)
}

/// With Kyverno running: its mutate policy, then a burst of N creates injected by it;
/// returns the burst and the admission controller's RSS after it. The policy is deleted
/// on every path.
async fn inject_burst(
    ctx: &mut Ctx<'_>,
    kyverno: &mut Kyverno,
    timeout: Duration,
) -> anyhow::Result<(admission::Burst, u64)> {
    let nss = ctx.fresh_namespaces("peer-inject").await?;
    let result = inject_burst_in(ctx, kyverno, &nss, timeout).await;
    delete_policy(&ctx.client, INJECT_POLICY).await;
    ctx.drop_namespaces(&nss).await?;
    result
}

async fn inject_burst_in(
    ctx: &Ctx<'_>,
    kyverno: &mut Kyverno,
    nss: &[String],
    timeout: Duration,
) -> anyhow::Result<(admission::Burst, u64)> {
    let n = ctx.cfg.n;
    create_policy(&ctx.client, inject_policy(&ctx.run_id), timeout).await?;
    admission::wait_injecting(ctx, &nss[0], timeout).await?;
    say(&format!(
        "peers: {n} Pod creates, Kyverno's mutate rule injecting"
    ));
    let with = admission::burst(ctx, nss, || kyverno.admission_cpu_seconds()).await?;
    kyverno.check_alive()?;
    Ok((with, kyverno.admission_rss()))
}

/// With Kyverno gone: the same burst with no webhook, for the throughput ratio.
async fn without_webhooks(ctx: &mut Ctx<'_>) -> anyhow::Result<admission::Burst> {
    let nss = ctx.fresh_namespaces("peer-plain").await?;
    // Until the API server has dropped Kyverno's webhooks, creates would go to its
    // stopped process.
    admission::wait_dry_run(ctx, &nss[0], ctx.cfg.timeout(), false).await?;
    say(&format!("peers: {} Pod creates, no webhook", ctx.cfg.n));
    let without = admission::burst(ctx, &nss, || 0.0).await;
    ctx.drop_namespaces(&nss).await?;
    without
}

fn kubectl(ctx: &Ctx<'_>) -> anyhow::Result<Command> {
    let bin = sidecar_testenv::bin_dir().context("the control plane's bin dir (kubectl)")?;
    let mut c = Command::new(bin.join("kubectl"));
    c.arg(format!("--kubeconfig={}", ctx.kubeconfig.display()));
    Ok(c)
}

fn run(mut c: Command, what: &str) -> anyhow::Result<()> {
    let out = c
        .output()
        .with_context(|| format!("running kubectl to {what}"))?;
    if !out.status.success() {
        bail!(
            "kubectl could not {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Kyverno's CRDs, its namespace and ConfigMap, and the bindings its policy validation
/// checks.
async fn install(ctx: &Ctx<'_>, paths: &KyvernoPaths) -> anyhow::Result<()> {
    let mut c = kubectl(ctx)?;
    c.args(["apply", "--server-side", "--force-conflicts", "-R", "-f"])
        .arg(&paths.crds);
    run(c, "apply Kyverno's CRDs")?;
    let mut c = kubectl(ctx)?;
    c.args([
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=120s",
    ]);
    run(c, "wait for Kyverno's CRDs")?;
    let client = &ctx.client;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": KYVERNO_NS}}))?;
    apply(&Api::<Namespace>::all(client.clone()), KYVERNO_NS, &ns).await?;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kyverno", "namespace": KYVERNO_NS},
        "data": {
            "updateRequestThreshold": "1000",
            "generateSuccessEvents": "false",
            "excludeGroups": "system:nodes",
            "resourceFilters": "[*/*,kyverno,*] [Event,*,*] [*/*,kube-system,*] [*/*,kube-public,*] [*/*,kube-node-lease,*] [Node,*,*] [Node/?*,*,*] [APIService,*,*] [TokenReview,*,*] [SubjectAccessReview,*,*] [SelfSubjectAccessReview,*,*] [Binding,*,*] [Pod/binding,*,*] [ReplicaSet,*,*] [ReplicaSet/?*,*,*] [EphemeralReport,*,*] [ClusterEphemeralReport,*,*]",
            "webhooks": r#"{"namespaceSelector":{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kyverno","kube-system"]}]}}"#,
        },
    }))?;
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), KYVERNO_NS),
        "kyverno",
        &cm,
    )
    .await?;
    for sa in [
        "kyverno-admission-controller",
        "kyverno-background-controller",
        "kyverno-reports-controller",
    ] {
        let name = format!("sidecar-bench-{sa}");
        let crb: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": KYVERNO_NS}],
        }))?;
        apply(&Api::<ClusterRoleBinding>::all(client.clone()), &name, &crb).await?;
    }
    Ok(())
}

async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let pp = PatchParams::apply(BENCH_MANAGER).force();
    let mut v = serde_json::to_value(obj)?;
    v["apiVersion"] = json!(K::api_version(&Default::default()));
    v["kind"] = json!(K::kind(&Default::default()));
    api.patch(name, &pp, &Patch::Apply(&v))
        .await
        .with_context(|| format!("applying {} {name}", K::kind(&Default::default())))?;
    Ok(())
}

/// Starts both controllers (the admission one serving its webhook on 127.0.0.1).
fn start(ctx: &Ctx<'_>, paths: &KyvernoPaths) -> anyhow::Result<Kyverno> {
    let kc = format!("--kubeconfig={}", ctx.kubeconfig.display());
    let common = |sa: &str, pod: &str| -> Vec<String> {
        [
            format!("KYVERNO_NAMESPACE={KYVERNO_NS}"),
            format!("KYVERNO_SERVICEACCOUNT_NAME={sa}"),
            format!("KYVERNO_DEPLOYMENT={sa}"),
            "KYVERNO_SVC=kyverno-svc".into(),
            "INIT_CONFIG=kyverno".into(),
            "METRICS_CONFIG=kyverno-metrics".into(),
            format!("KYVERNO_POD_NAME={pod}"),
        ]
        .into()
    };
    let (webhook, m1, r1, m2, r2) = (
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
    );
    let admission: Vec<String> = common("kyverno-admission-controller", "kyverno-admission-local")
        .into_iter()
        .chain([
            paths.bin_dir.join("kyverno").display().to_string(),
            kc.clone(),
            format!("--serverIP=127.0.0.1:{webhook}"),
            "--webhookServerHost=127.0.0.1".into(),
            format!("--webhookServerPort={webhook}"),
            "--caSecretName=kyverno-svc.kyverno.svc.kyverno-tls-ca".into(),
            "--tlsSecretName=kyverno-svc.kyverno.svc.kyverno-tls-pair".into(),
            "--backgroundServiceAccountName=system:serviceaccount:kyverno:kyverno-background-controller".into(),
            "--reportsServiceAccountName=system:serviceaccount:kyverno:kyverno-reports-controller".into(),
            "--metricsHost=127.0.0.1".into(),
            format!("--metricsPort={m1}"),
            format!("--controllerRuntimeMetricsAddress=127.0.0.1:{r1}"),
            "--admissionReports=false".into(),
            "--autoMemLimitEnabled=false".into(),
            "--disableLogColor".into(),
            "--v=2".into(),
        ])
        .collect();
    let background: Vec<String> =
        common("kyverno-background-controller", "kyverno-background-local")
            .into_iter()
            .chain([
                paths
                    .bin_dir
                    .join("background-controller")
                    .display()
                    .to_string(),
                kc,
                "--metricsHost=127.0.0.1".into(),
                format!("--metricsPort={m2}"),
                format!("--controllerRuntimeMetricsAddress=127.0.0.1:{r2}"),
                "--autoMemLimitEnabled=false".into(),
                "--disableLogColor".into(),
                "--v=2".into(),
            ])
            .collect();
    let env = Path::new("/usr/bin/env");
    let mut procs = Vec::new();
    for (name, args, port) in [
        ("kyverno-admission", admission, m1),
        ("kyverno-background", background, m2),
    ] {
        let p = Proc::spawn(name, env, &args, &ctx.cfg.out_dir)
            .with_context(|| format!("starting {name}"))?;
        let s = RssSampler::start(p.pid());
        procs.push((p, s, port));
    }
    Ok(Kyverno { procs })
}

fn policy_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kyverno.io", "v1", "ClusterPolicy"),
        "clusterpolicies",
    )
}

/// The generate ClusterPolicy: a companion Pod per main Pod of this run's namespaces.
fn companion_policy(run_id: &str) -> serde_json::Value {
    let (role_key, role_value) = COMPANION_LABEL.split_once('=').expect("label");
    json!({
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "background": false,
            "rules": [{
                "name": "companion-pod",
                "match": {"any": [{"resources": {
                    "kinds": ["Pod"],
                    "selector": {"matchLabels": workload::main_labels()},
                    "namespaceSelector": {"matchLabels": {RUN_LABEL: run_id}},
                }}]},
                "generate": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": "{{request.object.metadata.name}}-companion",
                    "namespace": "{{request.object.metadata.namespace}}",
                    "synchronize": true,
                    "data": {
                        "metadata": {
                            "labels": {
                                role_key: role_value,
                                LABEL_MAIN_UID: "{{request.object.metadata.uid}}",
                            },
                            "ownerReferences": [{
                                "apiVersion": "v1", "kind": "Pod",
                                "name": "{{request.object.metadata.name}}",
                                "uid": "{{request.object.metadata.uid}}",
                            }],
                        },
                        "spec": {
                            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchExpressions": [{
                                    "key": "kubernetes.io/hostname", "operator": "In",
                                    "values": ["{{request.object.spec.nodeName}}"],
                                }]}],
                            }}},
                            "containers": [{
                                "name": "agent",
                                "image": "busybox:1.36",
                                "args": ["sh", "-c", "echo shipping logs; sleep 1d"],
                                "env": [{"name": "REVISION", "value": "1"}],
                            }],
                        },
                    },
                },
            }],
        },
    })
}

/// The mutate ClusterPolicy: Container mode's native sidecar in every main Pod of this
/// run's namespaces, at admission.
fn inject_policy(run_id: &str) -> serde_json::Value {
    json!({
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {
            "name": INJECT_POLICY,
            // Pods only: no rules generated for Deployments, Jobs….
            "annotations": {"pod-policies.kyverno.io/autogen-controllers": "none"},
        },
        "spec": {
            "background": false,
            "rules": [{
                "name": "native-sidecar",
                "match": {"any": [{"resources": {
                    "kinds": ["Pod"],
                    "operations": ["CREATE"],
                    "selector": {"matchLabels": workload::main_labels()},
                    "namespaceSelector": {"matchLabels": {RUN_LABEL: run_id}},
                }}]},
                "mutate": {"patchStrategicMerge": {"spec": {"initContainers": [
                    {"name": "bench-agent", "image": "busybox:1.36", "restartPolicy": "Always"},
                ]}}},
            }],
        },
    })
}

/// Creates ClusterPolicy `obj` and waits until Kyverno has read it.
async fn create_policy(
    client: &Client,
    obj: serde_json::Value,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &policy_resource());
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let obj: DynamicObject = serde_json::from_value(obj)?;
    let deadline = Instant::now() + timeout;
    // Until Kyverno's policy webhook answers, a write may be refused; it is retried.
    loop {
        // Applied, not created: a policy left by an earlier run on the same cluster is
        // replaced (its namespace selector names that run).
        match api
            .patch(
                &name,
                &PatchParams::apply(BENCH_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
        {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("creating Kyverno's ClusterPolicy {name}"));
            }
        }
    }
    // Ready once Kyverno has read it (status.conditions Ready=True).
    loop {
        let p = api.get(&name).await?;
        let ready = p.data["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Kyverno's ClusterPolicy {name} is not Ready after {}s",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the pipeline works end to end: a probe main Pod in a namespace of its
/// own (this run's label) gets its companion; then the namespace is deleted.
async fn wait_live(
    ctx: &mut Ctx<'_>,
    kyverno: &mut Kyverno,
    timeout: Duration,
) -> anyhow::Result<()> {
    let probe = ctx.fresh_namespaces_n("peer-probe", 1).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &probe[0]);
    let mut main = workload::main_pods(1, &probe).remove(0);
    main.metadata.name = Some("probe".into());
    let deadline = Instant::now() + timeout;
    let mut created = false;
    loop {
        kyverno.check_alive()?;
        if !created {
            created = api.create(&PostParams::default(), &main).await.is_ok();
        }
        if created && api.get_opt("probe-companion").await?.is_some() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Kyverno gave the probe Pod no companion in {}s (logs in the output directory)",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ctx.drop_namespaces(&probe).await
}

async fn owned_companions(client: &Client, nss: &[String]) -> anyhow::Result<usize> {
    let mut n = 0;
    for ns in nss {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let lp = ListParams::default().labels(COMPANION_LABEL);
        for p in api.list(&lp).await?.items {
            let main = p.labels().get(LABEL_MAIN_UID).cloned().unwrap_or_default();
            if p.owner_references()
                .iter()
                .any(|o| o.kind == "Pod" && o.uid == main)
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

async fn delete_policy(client: &Client, name: &str) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &policy_resource());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// Kyverno's webhook configurations outlive it; with it stopped they would refuse every
/// Pod create, so they go with it.
async fn remove_webhooks(client: &Client) {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    let lp = ListParams::default().labels("webhook.kyverno.io/managed-by=kyverno");
    let dp = DeleteParams::default();
    let v: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let m: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if let Err(e) = v.delete_collection(&dp, &lp).await {
        say(&format!(
            "  could not delete Kyverno's validating webhooks: {e}"
        ));
    }
    if let Err(e) = m.delete_collection(&dp, &lp).await {
        say(&format!(
            "  could not delete Kyverno's mutating webhooks: {e}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_counts_the_processes_readable_both_times() {
        assert_eq!(
            cpu_since(&[Some(1.0), Some(2.0)], &[Some(4.0), Some(2.5)]),
            3.5
        );
        // The second process exited in between: only the first one's seconds count.
        assert_eq!(cpu_since(&[Some(1.0), Some(2.0)], &[Some(4.0), None]), 3.0);
    }

    #[test]
    fn requests_are_per_companion_made_without_watches() {
        let m = |kv: &[(&str, f64)]| -> BTreeMap<String, f64> {
            kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let before = m(&[("create pods", 10.0), ("watch Pod", 3.0)]);
        let after = m(&[
            ("create pods", 60.0),
            ("get pods", 100.0),
            ("watch Pod", 9.0),
        ]);
        assert_eq!(
            per_companion(&before, &after, 50),
            m(&[("create pods", 1.0), ("get pods", 2.0)])
        );
    }
}
