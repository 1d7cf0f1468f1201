//! The admission section: the same burst of N Pod creates without the webhook, with it,
//! and without it again, in one run. With the webhook, the operator binary serves it on
//! 127.0.0.1 (its own CA) for the "with" namespaces only, each holding a Container-mode
//! policy that selects every Pod.
//!
//! Reported: create throughput with / without (the mean of the two runs without), the API
//! server's own `apiserver_admission_webhook_admission_duration_seconds` for our webhook
//! (p50/p99 interpolated in its buckets, and the share under 5 ms), the webhook's own
//! handler latency, and the operator process's CPU and RSS over the burst.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::json;
use sidecar_api::SidecarPolicy;

use crate::metrics::Snapshot;
use crate::operator::{Launch, OperatorMode, RunningOperator};
use crate::{Ctx, say, secs, workload};

/// The webhook's name in the API server's metrics.
const WEBHOOK: &str = sidecar_webhook::registration::WEBHOOK_NAME;

/// Label that sends a namespace's Pods to the benchmark's webhook.
pub(crate) const WITH_LABEL: &str = "sidecar-bench/webhook";

/// What the admission section measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Admission {
    /// Pods per burst.
    pub n: usize,
    /// Seconds of the bursts without the webhook (before and after).
    pub without_s: Vec<f64>,
    /// Seconds of the burst with it.
    pub with_s: f64,
    /// Create throughput with the webhook / without (mean of the two runs without).
    pub throughput_ratio: f64,
    /// Pods of the burst with the webhook that came out injected (goal: all).
    pub injected: usize,
    /// The API server's admission duration for our webhook, ms (interpolated in its
    /// buckets, which are 5, 25, 100 ms…: coarse).
    pub apiserver_p50_ms: f64,
    pub apiserver_p99_ms: f64,
    /// Share of admissions the API server timed under 5 ms (its first bucket).
    pub apiserver_under_5ms: f64,
    /// The webhook handler's own latency (decode, inject, encode), ms.
    pub handler_p50_ms: f64,
    pub handler_p99_ms: f64,
    /// CPU seconds of the operator process over the burst with the webhook, and over the
    /// first burst without (its controllers see every Pod either way).
    pub cpu_s: f64,
    pub cpu_without_s: f64,
    /// CPU seconds of the API server over the same two bursts (its own
    /// `process_cpu_seconds_total`): what the webhook costs it.
    pub apiserver_cpu_s: f64,
    pub apiserver_cpu_without_s: f64,
    /// TLS connections the API server opened to the webhook during the burst.
    pub connections: f64,
    /// Webhook calls per Pod (the API server calls again after in-tree admission changed
    /// the injected Pod, `reinvocationPolicy: IfNeeded`).
    pub calls_per_pod: f64,
    /// Its RSS at the end of the burst.
    pub rss_bytes: u64,
}

/// Runs the section; `None` with an in-process operator (the webhook lives in the binary).
pub(crate) async fn admission_section(ctx: &mut Ctx<'_>) -> anyhow::Result<Option<Admission>> {
    let OperatorMode::Process(_) = &ctx.cfg.operator else {
        return Ok(None);
    };
    let n = ctx.cfg.n;
    let timeout = ctx.cfg.timeout();
    let mut sets = Vec::new();
    for phase in ["adm-a", "adm-b", "adm-c"] {
        let nss = ctx.fresh_namespaces(phase).await?;
        for ns in &nss {
            Api::<SidecarPolicy>::namespaced(ctx.client.clone(), ns)
                .create(&PostParams::default(), &container_policy())
                .await
                .with_context(|| format!("creating the Container-mode policy in {ns}"))?;
        }
        sets.push(nss);
    }
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    for ns in &sets[1] {
        let patch = json!({"metadata": {"labels": {WITH_LABEL: "on"}}});
        namespaces
            .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    // The operator runs (webhook and controllers) through all three bursts: only the
    // namespace label decides whether the API server calls the webhook, so the bursts
    // differ in the webhook alone. Its Secret goes in a namespace of the run.
    let (op, configuration) =
        start_webhook_operator(ctx, "operator-admission", &sets[0][0]).await?;
    wait_injecting(ctx, &sets[1][0], timeout).await?;

    say(&format!("admission: {n} Pod creates, webhook not called"));
    let without = burst(ctx, &sets[0], || op.cpu_seconds()).await?;
    let handler_before = op.metrics().await?;
    say(&format!("admission: {n} Pod creates, webhook called"));
    let with = burst(ctx, &sets[1], || op.cpu_seconds()).await?;
    let rss_bytes = op.rss();
    let handler = op.metrics().await?.since(&handler_before);
    say(&format!(
        "admission: {n} Pod creates, webhook not called, again"
    ));
    let again = burst(ctx, &sets[2], || 0.0).await?;
    op.stop().await;
    let configs: Api<MutatingWebhookConfiguration> = Api::all(ctx.client.clone());
    configs
        .delete(&configuration, &DeleteParams::default())
        .await?;

    let all: Vec<String> = sets.concat();
    ctx.drop_namespaces(&all).await?;

    let injected = with.created.iter().filter(|p| has_sidecar(p)).count();
    let times = webhook_times(&with.server, |name| name == WEBHOOK);
    let handler_buckets = handler
        .buckets("sidecar_webhook_admission_duration_seconds_bucket", |_| {
            true
        });
    let (a, b, c) = (without.secs, with.secs, again.secs);
    let mean_without = (a + c) / 2.0;
    let out = Admission {
        n,
        without_s: vec![crate::round3(a), crate::round3(c)],
        with_s: crate::round3(b),
        throughput_ratio: crate::round3(if b > 0.0 { mean_without / b } else { 0.0 }),
        injected,
        apiserver_p50_ms: times.p50_ms,
        apiserver_p99_ms: times.p99_ms,
        apiserver_under_5ms: times.under_5ms,
        handler_p50_ms: crate::round3(quantile(&handler_buckets, 0.5) * 1000.0),
        handler_p99_ms: crate::round3(quantile(&handler_buckets, 0.99) * 1000.0),
        cpu_s: crate::round3(with.cpu_s),
        cpu_without_s: crate::round3(without.cpu_s),
        apiserver_cpu_s: crate::round3(with.apiserver_cpu_s()),
        apiserver_cpu_without_s: crate::round3(without.apiserver_cpu_s()),
        connections: handler.sum("sidecar_webhook_connections_total", &[]),
        calls_per_pod: crate::round3(
            handler.sum("sidecar_webhook_admissions_total", &[]) / n as f64,
        ),
        rss_bytes,
    };
    if injected != n {
        say(&format!(
            "admission: only {injected} of {n} Pods were injected"
        ));
    }
    Ok(Some(out))
}

/// Starts the operator binary with its webhook on 127.0.0.1, for the namespaces labelled
/// [`WITH_LABEL`], its Secret in namespace `home` (never injected); returns it and the name
/// of its MutatingWebhookConfiguration (delete it after).
pub(crate) async fn start_webhook_operator(
    ctx: &Ctx<'_>,
    name: &str,
    home: &str,
) -> anyhow::Result<(RunningOperator, String)> {
    let port = crate::operator::free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let configuration = format!("sidecar-bench-{name}-{}", ctx.run_id);
    let extra = vec![
        "--webhook-addr".to_string(),
        format!("127.0.0.1:{port}"),
        "--webhook-url".into(),
        url,
        "--webhook-configuration".into(),
        configuration.clone(),
        "--webhook-namespace-selector".into(),
        format!("{WITH_LABEL}=on"),
        "--operator-namespace".into(),
        home.to_string(),
    ];
    let launch = Launch {
        extra_args: &extra,
        ..crate::round::launch(ctx, name)
    };
    let op = RunningOperator::start(&launch, ctx.cfg.timeout()).await?;
    Ok((op, configuration))
}

/// Every Pod Container mode selects gets this native sidecar.
pub(crate) fn container_policy() -> SidecarPolicy {
    let spec = serde_json::from_value(json!({
        "mode": "Container",
        "selector": {"matchLabels": {"app": "bench-main"}},
        "template": {"spec": {"initContainers": [
            {"name": "bench-agent", "image": "busybox:1.36", "restartPolicy": "Always"}]}},
    }))
    .expect("static Container-mode spec");
    SidecarPolicy::new("bench-inject", spec)
}

pub(crate) fn has_sidecar(p: &Pod) -> bool {
    let inits = p.spec.as_ref().and_then(|s| s.init_containers.as_ref());
    inits.is_some_and(|i| i.iter().any(|c| c.name == "bench-agent"))
}

/// One burst of N main-Pod creates, spread over `nss`, and what it cost.
pub(crate) struct Burst {
    /// Seconds from the first create to the last one's return.
    pub secs: f64,
    /// The Pods as the API server returned them (after admission).
    pub created: Vec<Pod>,
    /// The API server's metrics over the burst (a difference).
    pub server: Snapshot,
    /// CPU seconds `cpu` counted over the burst.
    pub cpu_s: f64,
}

impl Burst {
    /// The API server's own CPU seconds over the burst.
    pub fn apiserver_cpu_s(&self) -> f64 {
        self.server.sum("process_cpu_seconds_total", &[])
    }
}

/// Creates N main Pods in `nss` (the run's concurrency), timing them and reading the API
/// server's metrics and `cpu` (a process's CPU seconds) around them.
pub(crate) async fn burst(
    ctx: &Ctx<'_>,
    nss: &[String],
    cpu: impl Fn() -> f64,
) -> anyhow::Result<Burst> {
    let server_before = apiserver_metrics(ctx).await?;
    let cpu_before = cpu();
    let started = Instant::now();
    let created = workload::create_pods(
        &ctx.client,
        workload::main_pods(ctx.cfg.n, nss),
        ctx.cfg.concurrency,
        workload::BENCH_MANAGER,
    )
    .await?;
    let took = secs(started.elapsed());
    let cpu_s = cpu() - cpu_before;
    let server = apiserver_metrics(ctx).await?.since(&server_before);
    Ok(Burst {
        secs: took,
        created,
        server,
        cpu_s,
    })
}

/// The API server's admission time for the mutating webhooks whose name `keep` accepts
/// (Pod CREATE), from its `apiserver_admission_webhook_admission_duration_seconds`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WebhookTimes {
    /// Interpolated in its buckets (5, 25, 100 ms…: coarse), ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Share of admissions under 5 ms (its first bucket).
    pub under_5ms: f64,
}

pub(crate) fn webhook_times(server: &Snapshot, keep: impl Fn(&str) -> bool) -> WebhookTimes {
    let b = server.buckets(
        "apiserver_admission_webhook_admission_duration_seconds_bucket",
        |l| {
            let is = |k: &str, v: &str| l.get(k).map(String::as_str) == Some(v);
            l.get("name").is_some_and(|n| keep(n))
                && is("operation", "CREATE")
                && is("type", "admit")
        },
    );
    let total = b.last().map_or(0.0, |b| b.1);
    let under = b
        .iter()
        .find(|(le, _)| (*le - 0.005).abs() < 1e-9)
        .map_or(0.0, |b| b.1);
    WebhookTimes {
        p50_ms: crate::round3(quantile(&b, 0.5) * 1000.0),
        p99_ms: crate::round3(quantile(&b, 0.99) * 1000.0),
        under_5ms: crate::round3(if total > 0.0 { under / total } else { 0.0 }),
    }
}

/// Waits until a dry-run create in `ns` comes back injected (the configuration applied,
/// its CA trusted, the webhook's policy index synced).
pub(crate) async fn wait_injecting(
    ctx: &Ctx<'_>,
    ns: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_dry_run(ctx, ns, timeout, true).await
}

/// Waits until a dry-run create in `ns` is admitted, with the sidecar if `injected`, else
/// without it (no webhook left in the path that injects or refuses).
pub(crate) async fn wait_dry_run(
    ctx: &Ctx<'_>,
    ns: &str,
    timeout: Duration,
    injected: bool,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let probe = workload::main_pods(1, &[ns.to_string()]).remove(0);
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(p) = api.create(&dry, &probe).await
            && has_sidecar(&p) == injected
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "a dry-run create in {ns} did not come back {} within {}s",
                if injected {
                    "injected"
                } else {
                    "admitted without a sidecar"
                },
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn apiserver_metrics(ctx: &Ctx<'_>) -> anyhow::Result<Snapshot> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = ctx
        .client
        .request_text(req)
        .await
        .context("reading the API server's /metrics")?;
    Snapshot::parse(&text)
}

/// The `q` quantile of cumulative buckets `(upper bound, count)`, interpolated linearly
/// inside its bucket (as Prometheus' `histogram_quantile`); 0 without samples.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower;
            }
            let inside = count - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return lower + (le - lower) * frac;
        }
        (lower, below) = (le, count);
    }
    lower
}

#[cfg(test)]
mod tests {
    use super::{WebhookTimes, quantile, webhook_times};
    use crate::metrics::Snapshot;

    #[test]
    fn webhook_times_add_the_kept_webhooks_pod_creates() {
        let line = |name: &str, op: &str, le: &str, v: u32| {
            format!(
                "apiserver_admission_webhook_admission_duration_seconds_bucket{{name=\"{name}\",operation=\"{op}\",type=\"admit\",le=\"{le}\"}} {v}\n"
            )
        };
        let text = [
            line("mutate.kyverno.svc-fail", "CREATE", "0.005", 10),
            line("mutate.kyverno.svc-fail", "CREATE", "0.025", 40),
            line("mutate.kyverno.svc-fail", "CREATE", "+Inf", 40),
            line("mutate.kyverno.svc-ignore", "CREATE", "0.005", 30),
            line("mutate.kyverno.svc-ignore", "CREATE", "0.025", 60),
            line("mutate.kyverno.svc-ignore", "CREATE", "+Inf", 60),
            line("mutate.kyverno.svc-fail", "UPDATE", "0.005", 0),
            line("mutate.kyverno.svc-fail", "UPDATE", "+Inf", 500),
            line("other.webhook", "CREATE", "0.005", 0),
            line("other.webhook", "CREATE", "+Inf", 900),
        ]
        .concat();
        let s = Snapshot::parse(&text).unwrap();
        let t = webhook_times(&s, |n| n.starts_with("mutate.kyverno.svc"));
        // 100 creates: 40 under 5 ms, the rest under 25 ms; p50 lies 10/60 into (5, 25].
        assert_eq!(t.under_5ms, 0.4);
        assert!(
            (t.p50_ms - (5.0 + 20.0 * 10.0 / 60.0)).abs() < 1e-3,
            "{t:?}"
        );
        assert!(t.p99_ms > 24.0 && t.p99_ms <= 25.0, "{t:?}");
        assert_eq!(
            webhook_times(&s, |n| n == "absent"),
            WebhookTimes::default()
        );
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let b = [
            (0.005, 90.0),
            (0.025, 99.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 0.5) - 0.005 * 50.0 / 90.0).abs() < 1e-9);
        assert!((quantile(&b, 0.99) - 0.025).abs() < 1e-9);
        assert_eq!(quantile(&[], 0.5), 0.0);
        assert_eq!(quantile(&[(f64::INFINITY, 0.0)], 0.5), 0.0);
    }
}
