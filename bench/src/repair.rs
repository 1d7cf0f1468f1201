//! The repair section (Container mode, updateStrategy RollingUpdate): a Deployment's N Pods
//! run without the sidecar (created before their policy); how long until all N are replaced
//! by Pods Ready with it?
//!
//! - The floor: the benchmark's own client evicts the N Pods (same concurrency, no budget)
//!   the moment the webhook injects, and waits for N Ready, injected replacements.
//! - The operator: the same Deployment in another namespace; its policy, created with
//!   OnDelete (report only) and the webhook injecting, is switched to RollingUpdate with
//!   `maxUnavailable: 100%`; the clock runs from the switch to N Ready, injected Pods.
//!
//! Both namespaces are sent to the same webhook (the operator binary's), so the two differ
//! only in who sends the evictions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde::Serialize;
use serde_json::json;
use sidecar_api::SidecarPolicy;
use tokio::sync::Notify;

use crate::admission::{
    WITH_LABEL, container_policy, has_sidecar, start_webhook_operator, wait_injecting,
};
use crate::observe::pod_ready;
use crate::operator::OperatorMode;
use crate::{Ctx, say, secs};

/// What the repair section measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairSection {
    /// Drifted Pods repaired (the Deployment's replicas).
    pub n: usize,
    /// Seconds from the first eviction to N Ready, injected Pods: the benchmark's client.
    pub floor_s: f64,
    /// Seconds from the switch to RollingUpdate to N Ready, injected Pods: the operator.
    pub repair_s: f64,
    /// repair_s / floor_s.
    pub ratio: f64,
    /// Evictions the operator sent (goal: N; more means a Pod was evicted twice).
    pub evictions: f64,
    /// Evictions a PodDisruptionBudget refused (none here: there is no budget).
    pub blocked: f64,
}

const DEPLOYMENT: &str = "bench-repair";

/// Runs the section; `None` with an in-process operator or `repair_n` 0.
pub(crate) async fn repair_section(ctx: &mut Ctx<'_>) -> anyhow::Result<Option<RepairSection>> {
    let n = ctx.cfg.repair_n;
    if n == 0 || !matches!(ctx.cfg.operator, OperatorMode::Process(_)) {
        return Ok(None);
    }
    let timeout = ctx.cfg.timeout();
    let home = ctx.fresh_namespaces("rep-home").await?;
    let floor_ns = ctx.fresh_namespaces("rep-floor").await?;
    let op_ns = ctx.fresh_namespaces("rep-op").await?;
    let (floor, opn) = (floor_ns[0].clone(), op_ns[0].clone());
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    for ns in [&floor, &opn] {
        let patch = json!({"metadata": {"labels": {WITH_LABEL: "on"}}});
        namespaces
            .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let (op, configuration) = start_webhook_operator(ctx, "operator-repair", &home[0]).await?;
    say(&format!(
        "repair: {n} Pods of a Deployment in each of two namespaces, created without the sidecar"
    ));
    for ns in [&floor, &opn] {
        Api::<Deployment>::namespaced(ctx.client.clone(), ns)
            .create(&PostParams::default(), &deployment(n))
            .await
            .with_context(|| format!("creating the Deployment in {ns}"))?;
    }
    let (floor_pods, op_pods) = (
        Watched::start(ctx, &floor).await?,
        Watched::start(ctx, &opn).await?,
    );
    for pods in [&floor_pods, &op_pods] {
        pods.wait_replaced(n, false, timeout).await?;
    }
    // Both policies report only first; the webhook injects in both.
    for ns in [&floor, &opn] {
        Api::<SidecarPolicy>::namespaced(ctx.client.clone(), ns)
            .create(&PostParams::default(), &container_policy())
            .await
            .with_context(|| format!("creating the Container-mode policy in {ns}"))?;
    }
    for ns in [&floor, &opn] {
        wait_injecting(ctx, ns, timeout).await?;
    }

    say(&format!("repair floor: the benchmark evicts {n} Pods"));
    let started = Instant::now();
    evict_all(ctx, &floor_pods).await?;
    floor_pods.wait_replaced(n, true, timeout).await?;
    let floor_s = secs(started.elapsed());

    say(&format!(
        "repair: the operator evicts {n} Pods (RollingUpdate, maxUnavailable 100%)"
    ));
    let before = op.metrics().await?;
    let started = Instant::now();
    let patch = json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "maxUnavailable": "100%", "allowEviction": true}}});
    Api::<SidecarPolicy>::namespaced(ctx.client.clone(), &opn)
        .patch(
            &container_policy().metadata.name.unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    op_pods.wait_replaced(n, true, timeout).await?;
    let repair_s = secs(started.elapsed());
    let counted = op.metrics().await?.since(&before);
    let evictions =
        |result: &str| counted.sum("sidecar_operator_evictions_total", &[("result", result)]);
    let out = RepairSection {
        n,
        floor_s,
        repair_s,
        ratio: crate::round3(if floor_s > 0.0 {
            repair_s / floor_s
        } else {
            0.0
        }),
        evictions: evictions("evicted"),
        blocked: evictions("blocked"),
    };
    op.stop().await;
    Api::<MutatingWebhookConfiguration>::all(ctx.client.clone())
        .delete(&configuration, &DeleteParams::default())
        .await?;
    let all: Vec<String> = [home, floor_ns, op_ns].concat();
    ctx.drop_namespaces(&all).await?;
    Ok(Some(out))
}

/// A Deployment of `n` Pods the Container-mode policy selects.
fn deployment(n: usize) -> Deployment {
    let labels = crate::workload::main_labels();
    serde_json::from_value(json!({
        "metadata": {"name": DEPLOYMENT},
        "spec": {
            "replicas": n,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
            },
        },
    }))
    .expect("static Deployment JSON")
}

/// Evicts every Pod of `pods`' namespace, `concurrency` at a time: the floor's client.
async fn evict_all(ctx: &Ctx<'_>, pods: &Watched) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pods.ns);
    let results: Vec<kube::Result<_>> = futures::stream::iter(pods.store.state())
        .map(|p| {
            let api = api.clone();
            async move {
                let name = p.metadata.name.clone().unwrap_or_default();
                api.evict(&name, &EvictParams::default()).await
            }
        })
        .buffer_unordered(ctx.cfg.concurrency)
        .collect()
        .await;
    for r in results {
        r.context("the floor's eviction")?;
    }
    Ok(())
}

/// The Pods of one namespace, from a watch (a reflector), so that waiting on them sends no
/// request while it is timed.
struct Watched {
    ns: String,
    store: reflector::Store<Pod>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watched {
    /// Starts watching namespace `ns` with the observer's client; returns once listed.
    async fn start(ctx: &Ctx<'_>, ns: &str) -> anyhow::Result<Watched> {
        let (store, writer) = reflector::store();
        let changed = Arc::new(Notify::new());
        let notify = changed.clone();
        let pods: Api<Pod> = Api::namespaced(ctx.observer.clone(), ns);
        let stream = reflector::reflector(writer, watcher(pods, watcher::Config::default()))
            .default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while stream.next().await.is_some() {
                notify.notify_waiters();
            }
        });
        store
            .wait_until_ready()
            .await
            .context("the repair section's Pod watch")?;
        Ok(Watched {
            ns: ns.to_string(),
            store,
            changed,
            task,
        })
    }

    /// Waits until the namespace holds exactly `n` live Pods, all Ready and (with
    /// `injected`) all with the sidecar, or (without) none with it.
    async fn wait_replaced(
        &self,
        n: usize,
        injected: bool,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a change between the two is not missed.
            let changed = self.changed.notified();
            let pods = self.store.state();
            let live: Vec<&Pod> = pods
                .iter()
                .map(|p| p.as_ref())
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let ok = live
                .iter()
                .filter(|p| pod_ready(p) && has_sidecar(p) == injected)
                .count();
            if live.len() == n && ok == n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!(
                    "{ok} of {n} Pods of {} Ready {} the sidecar after {}s ({} live)",
                    self.ns,
                    if injected { "with" } else { "without" },
                    timeout.as_secs(),
                    live.len()
                );
            }
        }
    }
}
