//! `sidecar-operator`: run the operator, print the CRD, check policies offline, print the
//! version.
//!
//! Modules: `check` (the offline `check` subcommand: reading files, the report), `leader`
//! (leader election with a Lease).

mod check;
mod explain;
mod http;
mod leader;
mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use sidecar_controller::{Counter, Metrics, Operator, OperatorConfig, WriteGate};

/// Gives every Pod a SidecarPolicy selects a companion sidecar Pod.
#[derive(Parser, Debug)]
#[command(name = "sidecar-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator (in-cluster config, or --kubeconfig / $KUBECONFIG).
    Run(Box<RunArgs>),
    /// Print the SidecarPolicy and ClusterSidecarPolicy CRDs as YAML (install with
    /// kubectl apply -f -).
    Crd,
    /// Validate SidecarPolicies offline and preview the sidecar Pods they would create.
    ///
    /// Checks each policy with the API server's admission rules, then prints which Pods (from
    /// the same files, workload templates included) it selects and the sidecar Pods the operator
    /// would create, as YAML. No cluster needed. Exits 1 on invalid input.
    Check(check::CheckArgs),
    /// Print the MutatingWebhookConfiguration of Container mode as YAML (what deploy/ ships).
    WebhookConfig(webhook::ConfigArgs),
    /// Explain, from a live cluster, which policies give a Pod its sidecars and why the
    /// others do not (reads only).
    Explain(explain::ExplainArgs),
    /// Print the version.
    Version,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// Kubeconfig file (default: in-cluster config, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SIDECAR_NAMESPACE")]
    namespace: Option<String>,
    /// Manage only namespaces whose labels match this selector (e.g. `sidecars=enabled`).
    /// Needs list/watch on namespaces (see deploy/10-rbac.yaml).
    #[arg(long, env = "SIDECAR_NAMESPACE_SELECTOR")]
    namespace_selector: Option<String>,
    /// Apply ClusterSidecarPolicies too (needs list/watch on clustersidecarpolicies and
    /// namespaces cluster-wide). Off with --namespace.
    #[arg(long, env = "SIDECAR_CLUSTER_POLICIES", default_value_t = true, action = clap::ArgAction::Set)]
    cluster_policies: bool,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SIDECAR_METRICS_ADDR", default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,
    /// Concurrent Pod reconciles.
    #[arg(long, env = "SIDECAR_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Log format.
    #[arg(long, env = "SIDECAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `sidecar_controller=debug`).
    #[arg(long, env = "SIDECAR_LOG", default_value = "info")]
    log: String,
    /// Reporting instance on Events and leader identity (e.g. the Pod name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Publish Normal events on main Pods when their sidecar is created or replaced.
    #[arg(long, env = "SIDECAR_POD_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pod_events: bool,
    /// Run controllers only while holding a Lease (for more than one replica).
    #[arg(long, env = "SIDECAR_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "SIDECAR_LEASE_NAME",
        default_value = "sidecar-operator-leader"
    )]
    lease_name: String,
    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        env = "SIDECAR_LEASE_NAMESPACE",
        default_value = "sidecar-system"
    )]
    lease_namespace: String,
    /// Lease duration in seconds: a standby takes over this long after the leader vanished.
    #[arg(long, env = "SIDECAR_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,
    /// Renew deadline in seconds (default: two thirds of the lease duration): a leader that
    /// has not renewed the Lease for this long stops writing at once and stands by, so it
    /// stops before a standby can take over. Must be shorter than the lease duration.
    #[arg(long, env = "SIDECAR_LEASE_RENEW_DEADLINE")]
    lease_renew_deadline: Option<f64>,
    /// Seconds between two attempts to acquire or renew the Lease (default: 2/15 of the
    /// lease duration). Must be shorter than the renew deadline.
    #[arg(long, env = "SIDECAR_LEASE_RETRY_PERIOD")]
    lease_retry_period: Option<f64>,
    #[command(flatten)]
    webhook: webhook::WebhookArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", sidecar_api::crd_yaml()?);
            print!("---\n{}", sidecar_api::cluster_crd_yaml()?);
            Ok(())
        }
        Command::Version => {
            println!("sidecar-operator {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Check(args) => {
            let ok = check::run(&args, &mut std::io::stdout().lock(), &mut std::io::stderr())
                .context("writing the check report")?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::WebhookConfig(args) => {
            print!("{}", webhook::config_yaml(&args)?);
            Ok(())
        }
        Command::Run(args) => run(*args).await,
        Command::Explain(args) => explain::run(args).await,
    }
}

fn init_logging(args: &RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .with_context(|| format!("--log {:?} is not a valid filter", args.log))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

pub(crate) async fn kube_config(
    kubeconfig: Option<&std::path::Path>,
) -> anyhow::Result<kube::Config> {
    match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))
        }
        None => kube::Config::infer()
            .await
            .context("no cluster configuration found (not in a cluster, no --kubeconfig, no $KUBECONFIG, no ~/.kube/config)"),
    }
}

/// The Lease timing, when leader election is on.
fn lease_timing(args: &RunArgs) -> anyhow::Result<Option<leader::Timing>> {
    if !args.leader_elect {
        return Ok(None);
    }
    leader::Timing::from_secs(
        args.lease_duration,
        args.lease_renew_deadline,
        args.lease_retry_period,
    )
    .map(Some)
    .map_err(anyhow::Error::msg)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args)?;
    let config = kube_config(args.kubeconfig.as_deref()).await?;
    let timing = lease_timing(&args)?;
    // One set of metrics for the process: the operators it runs in turn (one per term of
    // leadership) and its Lease client count into them.
    let metrics = Arc::new(Metrics::default());
    let gate = WriteGate::new();
    let leader_gauge = prometheus_client::metrics::gauge::Gauge::default();
    let mut registry = registry(&metrics, timing.is_some(), &gate, &leader_gauge);
    let mut readiness = http::Readiness::default();
    // The webhook runs on every replica, leader or not, for as long as the process does.
    let _webhook = match webhook::start(&args, &config, &metrics, &mut registry).await? {
        Some(w) => {
            readiness.webhook = Some(Arc::new(w.readiness()));
            Some(w)
        }
        None => None,
    };
    let registry = Arc::new(std::sync::Mutex::new(registry));
    let server = http::serve(args.metrics_addr, &readiness, registry).await?;
    tracing::info!(addr = %args.metrics_addr, namespace = args.namespace.as_deref().unwrap_or("<all>"), "starting");

    let identity = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("sidecar-operator-{}", std::process::id()));
    let mut opts = OperatorConfig {
        namespace: args.namespace.clone(),
        namespace_selector: args.namespace_selector.clone(),
        concurrency: args.concurrency,
        instance: Some(identity.clone()),
        pod_events: args.pod_events,
        metrics: Some(metrics.clone()),
        write_gate: timing.map(|_| gate.clone()),
        cluster_policies: args.cluster_policies,
        ..OperatorConfig::default()
    };
    // The webhook never serves the operator's own namespace either: no repair there.
    opts.unserved_namespaces
        .push(args.webhook.operator_namespace().to_string());
    // Without a webhook nothing would inject a replacement: Container mode evicts nothing.
    opts.webhook = match &_webhook {
        Some(_) => args.webhook.reach()?,
        None => sidecar_controller::WebhookReach::Off,
    };
    let result = match timing {
        None => run_alone(config, opts, &readiness).await,
        Some(timing) => {
            // The elector keeps the write gate open exactly while this instance holds the
            // Lease; every write of the operator's client passes the gate.
            let lease_client = sidecar_controller::counting_client(
                config.clone(),
                Arc::new(Counter::new(metrics.api_requests.clone())),
            )
            .context("building the Lease client")?;
            let elector = leader::Elector::new(
                kube::Api::namespaced(lease_client, &args.lease_namespace),
                &args.lease_name,
                &identity,
                timing,
                gate.clone(),
                leader_gauge,
            );
            let term = Term {
                config,
                opts,
                gate,
                readiness: &readiness,
                identity: &identity,
            };
            run_elected(term, elector, &args).await
        }
    };
    server.abort();
    tracing::info!("stopped");
    result
}

/// The process's metrics: the controllers', and with leader election the leader gauge and
/// the count of writes the gate fenced.
fn registry(
    metrics: &Metrics,
    elected: bool,
    gate: &WriteGate,
    leader: &prometheus_client::metrics::gauge::Gauge,
) -> prometheus_client::registry::Registry {
    let mut registry = http::prometheus_registry();
    metrics.register(&mut registry);
    if elected {
        let r = registry.sub_registry_with_prefix("sidecar_operator");
        r.register(
            "leader",
            "1 while this instance holds the leader Lease and may write",
            leader.clone(),
        );
        r.register(
            "writes_fenced",
            "Writes not sent because this instance's leadership had lapsed",
            gate.fenced(),
        );
    }
    registry
}

/// Without leader election: run until a shutdown signal.
async fn run_alone(
    config: kube::Config,
    opts: OperatorConfig,
    readiness: &http::Readiness,
) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let op = tokio::select! {
        r = Operator::start(config, opts) => r.context("starting the controllers")?,
        _ = &mut shutdown => return Ok(()),
    };
    readiness.running(Some(op.health()));
    tracing::info!(pods = op.cached_pods(), "caches synced; reconciling");
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight work");
    readiness.running(None);
    op.stop().await;
    Ok(())
}

/// What each term of leadership starts the controllers with.
struct Term<'a> {
    config: kube::Config,
    opts: OperatorConfig,
    gate: WriteGate,
    readiness: &'a http::Readiness,
    identity: &'a str,
}

/// With leader election: stand by, lead while the gate is open, stand by again when
/// leadership lapses; until a shutdown signal. Releases the Lease at the end.
async fn run_elected(
    term: Term<'_>,
    elector: leader::Elector,
    args: &RunArgs,
) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let (stop_elector, stop_rx) = tokio::sync::oneshot::channel();
    let elector = tokio::spawn(elector.run(stop_rx));
    let identity = term.identity;
    let result = loop {
        term.readiness.standing_by(true); // a healthy standby is ready
        tracing::info!(lease = %args.lease_name, namespace = %args.lease_namespace, %identity, "standing by: waiting for leadership");
        tokio::select! {
            _ = term.gate.opened() => {}
            _ = &mut shutdown => break Ok(()),
        }
        match lead(&term, &mut shutdown).await {
            Ok(true) => continue,
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // Releases the Lease if it is still ours, after the controllers stopped.
    let _ = stop_elector.send(());
    let _ = elector.await;
    result
}

/// One term of leadership: `Ok(true)` when it lapsed (stand by again), `Ok(false)` on
/// shutdown.
async fn lead(
    term: &Term<'_>,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> anyhow::Result<bool> {
    let identity = term.identity;
    tracing::info!(%identity, "leading: starting the controllers");
    term.readiness.standing_by(false);
    let op = tokio::select! {
        r = Operator::start(term.config.clone(), term.opts.clone()) => r.context("starting the controllers")?,
        _ = term.gate.closed() => {
            tracing::warn!("leadership lapsed while the caches synced; standing by");
            return Ok(true);
        }
        _ = &mut *shutdown => return Ok(false),
    };
    term.readiness.running(Some(op.health()));
    tracing::info!(pods = op.cached_pods(), "caches synced; reconciling");
    tokio::select! {
        _ = term.gate.closed() => {
            // Writes are already refused by the gate; stop everything at once (no
            // queued key is processed) and compete again from scratch.
            term.readiness.running(None);
            op.abort().await;
            tracing::warn!(%identity, "leadership lapsed (Lease lost or not renewed within the renew deadline): stopped all work; standing by");
            Ok(true)
        }
        _ = &mut *shutdown => {
            tracing::info!("shutting down: finishing in-flight work");
            term.readiness.running(None);
            op.stop().await;
            Ok(false)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut i), Ok(mut t)) => {
            tokio::select! { _ = i.recv() => {}, _ = t.recv() => {} }
        }
        _ => std::future::pending::<()>().await,
    }
}
