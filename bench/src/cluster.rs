//! The cluster-policy section: one ClusterSidecarPolicy over `cluster_namespaces`
//! namespaces (the N main Pods spread over them) against the phased floor in as many other
//! namespaces, the sidecars rendered from that policy. Its ratio is to be compared with the
//! namespaced rounds' (one SidecarPolicy per namespace): a cluster policy should cost nothing
//! more per Pod.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, PostParams};
use serde::Serialize;
use serde_json::json;
use sidecar_api::ClusterSidecarPolicy;
use sidecar_api::constants::LABEL_NAMESPACE_NAME;
use sidecar_planner::{PodView, PolicyView};

use crate::observe::Observer;
use crate::operator::RunningOperator;
use crate::round::launch;
use crate::rounds::round3;
use crate::workload::{self, BENCH_MANAGER, SIDECAR_MANAGER};
use crate::{Ctx, say, secs, since};

/// What the cluster-policy section measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterSection {
    /// Main Pods (and sidecars).
    pub n: usize,
    /// Namespaces the cluster policy applies in (and the floor's).
    pub namespaces: usize,
    /// Seconds: the benchmark's client creates the N main Pods, then the N sidecars.
    pub floor_s: f64,
    /// Seconds from the first main Pod create to the N-th sidecar at the watcher.
    pub converge_s: f64,
    /// converge_s / floor_s.
    pub ratio: f64,
    /// Seconds until the cluster policy's status says N/N ready.
    pub ready_s: f64,
    /// `status.namespaces` of the cluster policy at the end.
    pub status_namespaces: i32,
}

/// Runs the section; `None` when `cluster_namespaces` is 0.
pub(crate) async fn cluster_section(ctx: &mut Ctx<'_>) -> anyhow::Result<Option<ClusterSection>> {
    let (cfg, k) = (ctx.cfg, ctx.cfg.cluster_namespaces);
    if k == 0 {
        return Ok(None);
    }
    let (n, timeout) = (cfg.n, cfg.timeout());
    run(ctx, n, k, timeout).await.map(Some)
}

async fn run(
    ctx: &mut Ctx<'_>,
    n: usize,
    k: usize,
    timeout: Duration,
) -> anyhow::Result<ClusterSection> {
    let cfg = ctx.cfg;
    let mut out = ClusterSection {
        n,
        namespaces: k,
        ..ClusterSection::default()
    };
    // The floor, in namespaces of its own.
    say(&format!(
        "cluster policy: floor, {n} main Pods and sidecars over {k} namespaces"
    ));
    let floor_nss = ctx.fresh_namespaces_n("csp-floor", k).await?;
    let floor_policy = policy(&ctx.run_id, &floor_nss);
    let obs = Observer::start(&ctx.observer, &floor_nss, false, timeout).await?;
    let t0 = Instant::now();
    let created = workload::create_pods(
        &ctx.client,
        workload::main_pods(n, &floor_nss),
        cfg.concurrency,
        BENCH_MANAGER,
    )
    .await?;
    let mains_s = secs(t0.elapsed());
    let sidecars = render(&floor_policy, &created);
    anyhow::ensure!(sidecars.len() == n, "rendered {} sidecars", sidecars.len());
    let t1 = Instant::now();
    workload::create_pods(&ctx.client, sidecars, cfg.concurrency, SIDECAR_MANAGER).await?;
    out.floor_s = round3(mains_s + secs(t1.elapsed()));
    obs.wait_live(n, "the floor's sidecars at the watcher", timeout, |_| true)
        .await?;
    drop(obs);
    ctx.drop_namespaces(&floor_nss).await?;

    // The operator: one cluster policy, created before the Pods.
    let nss = ctx.fresh_namespaces_n("csp-op", k).await?;
    let op = RunningOperator::start(&launch(ctx, "operator-cluster"), timeout).await?;
    let api: Api<ClusterSidecarPolicy> = Api::all(ctx.client.clone());
    let p = policy(&ctx.run_id, &nss);
    let name = p.name_any();
    api.create(&PostParams::default(), &p)
        .await
        .context("creating the ClusterSidecarPolicy")?;
    let applied = wait_status(&api, &name, timeout, |s| s.namespaces as usize == k).await;
    let obs = Observer::start(&ctx.observer, &nss, false, timeout).await?;
    if let Err(e) = applied {
        op.stop().await;
        return Err(e);
    }
    say(&format!(
        "cluster policy: operator, {n} main Pods over {k} namespaces"
    ));
    let t0 = Instant::now();
    workload::create_pods(
        &ctx.client,
        workload::main_pods(n, &nss),
        cfg.concurrency,
        BENCH_MANAGER,
    )
    .await?;
    out.converge_s = since(obs.wait_first_sidecars(n, timeout).await?, t0);
    out.ratio = round3(out.converge_s / out.floor_s.max(1e-9));
    let ready = format!("{n}/{n}");
    let status = wait_status(&api, &name, timeout, |s| {
        s.policy.ready.as_deref() == Some(ready.as_str())
    })
    .await?;
    out.ready_s = secs(t0.elapsed());
    out.status_namespaces = status.namespaces;
    op.stop().await;
    drop(obs);
    let _ = api.delete(&name, &DeleteParams::default()).await;
    ctx.drop_namespaces(&nss).await?;
    Ok(out)
}

/// The section's cluster policy: the rounds' policy spec, over exactly `namespaces`.
fn policy(run_id: &str, namespaces: &[String]) -> ClusterSidecarPolicy {
    let inner = workload::policy("x", 1, "100%").spec;
    let mut spec = serde_json::to_value(&inner).expect("spec JSON");
    spec["namespaceSelector"] = json!({"matchExpressions": [{
        "key": LABEL_NAMESPACE_NAME, "operator": "In", "values": namespaces,
    }]});
    ClusterSidecarPolicy::new(
        &format!("bench-{run_id}"),
        serde_json::from_value(spec).expect("ClusterSidecarPolicy spec"),
    )
}

/// The sidecars the cluster policy's instances would create for `mains`.
fn render(policy: &ClusterSidecarPolicy, mains: &[Pod]) -> Vec<Pod> {
    let mut p = policy.clone();
    p.metadata.uid = Some("floor".into());
    p.metadata.generation = Some(1);
    let base = PolicyView::cluster(Arc::new(p));
    mains
        .iter()
        .filter_map(|m| {
            let view = base.instance(&m.namespace()?);
            Some(sidecar_planner::render(&PodView::from_pod(m)?, &view))
        })
        .collect()
}

/// Reads the cluster policy's status every 100 ms until `ok` holds.
async fn wait_status(
    api: &Api<ClusterSidecarPolicy>,
    name: &str,
    timeout: Duration,
    ok: impl Fn(&sidecar_api::ClusterSidecarPolicyStatus) -> bool,
) -> anyhow::Result<sidecar_api::ClusterSidecarPolicyStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = api.get(name).await.ok().and_then(|p| p.status)
            && ok(&s)
        {
            return Ok(s);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {}s waiting for the status of ClusterSidecarPolicy {name}",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
