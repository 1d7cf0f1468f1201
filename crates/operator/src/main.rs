//! `sidecar-operator`: run the operator, print the CRD, check policies offline, print the
//! version.

mod check;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use sidecar_controller::{Operator, OperatorConfig};

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
    Run(RunArgs),
    /// Print the SidecarPolicy CRD as YAML (install with kubectl apply -f -).
    Crd,
    /// Validate SidecarPolicies offline and preview the sidecar Pods they would create.
    ///
    /// Checks each policy with the API server's admission rules, then prints which Pods (from
    /// the same files, workload templates included) it selects and the sidecar Pods the operator
    /// would create, as YAML. No cluster needed. Exits 1 on invalid input.
    Check(check::CheckArgs),
    /// Print the version.
    Version,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
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
        Command::Run(args) => run(args).await,
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

async fn kube_config(args: &RunArgs) -> anyhow::Result<kube::Config> {
    match &args.kubeconfig {
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

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args)?;
    let config = kube_config(&args).await?;
    // Readiness: a standby (leader election) is ready; a running operator is ready while
    // its caches are synced and its watches connected.
    let ready = Arc::new(AtomicBool::new(false));
    let health: Arc<std::sync::Mutex<Option<sidecar_controller::Health>>> = Arc::default();
    let registry = Arc::new(std::sync::Mutex::new(prometheus_registry()));
    let server = serve(
        args.metrics_addr,
        ready.clone(),
        health.clone(),
        registry.clone(),
    )
    .await?;
    tracing::info!(addr = %args.metrics_addr, namespace = args.namespace.as_deref().unwrap_or("<all>"), "starting");

    let identity = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("sidecar-operator-{}", std::process::id()));
    let mut leadership = None;
    if args.leader_elect {
        ready.store(true, Ordering::SeqCst); // a healthy standby is ready
        let client = kube::Client::try_from(config.clone()).context("building the lease client")?;
        let lm = kube_lease_manager::LeaseManagerBuilder::new(client, &args.lease_name)
            .with_namespace(&args.lease_namespace)
            .with_identity(&identity)
            .with_duration(args.lease_duration.max(2))
            .with_grace((args.lease_duration.max(2) / 3).max(1))
            .with_field_manager(sidecar_api::constants::FIELD_MANAGER)
            .build()
            .await
            .with_context(|| {
                format!(
                    "setting up Lease {}/{}",
                    args.lease_namespace, args.lease_name
                )
            })?;
        let (mut rx, task) = lm.watch().await;
        tracing::info!(lease = %args.lease_name, namespace = %args.lease_namespace, %identity, "waiting for leadership");
        loop {
            if *rx.borrow_and_update() {
                break;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { anyhow::bail!("the lease manager stopped") },
                _ = shutdown_signal() => { server.abort(); return Ok(()); }
            }
        }
        tracing::info!(%identity, "acquired leadership");
        leadership = Some((rx, task));
    }

    let opts = OperatorConfig {
        namespace: args.namespace.clone(),
        namespace_selector: args.namespace_selector.clone(),
        concurrency: args.concurrency,
        instance: Some(identity.clone()),
        pod_events: args.pod_events,
        ..OperatorConfig::default()
    };
    ready.store(false, Ordering::SeqCst);
    let op = tokio::select! {
        r = Operator::start(config, opts) => r.context("starting the controllers")?,
        _ = shutdown_signal() => { server.abort(); return Ok(()); }
    };
    if let Ok(mut reg) = registry.lock() {
        op.metrics().register(&mut reg);
    }
    if let Ok(mut h) = health.lock() {
        *h = Some(op.health());
    }
    tracing::info!(pods = op.cached_pods(), "caches synced; reconciling");
    let lost = match leadership.as_mut() {
        Some((rx, _)) => {
            tokio::select! {
                _ = shutdown_signal() => false,
                _ = async { while rx.changed().await.is_ok() { if !*rx.borrow() { break; } } } => true,
            }
        }
        None => {
            shutdown_signal().await;
            false
        }
    };
    tracing::info!(
        lost_leadership = lost,
        "shutting down: finishing in-flight work"
    );
    ready.store(false, Ordering::SeqCst);
    if let Ok(mut h) = health.lock() {
        *h = None;
    }
    op.stop().await;
    if let Some((rx, task)) = leadership {
        drop(rx); // releases the Lease
        let _ = task.await;
    }
    server.abort();
    if lost {
        anyhow::bail!("lost leadership; exiting so that a fresh process competes again");
    }
    tracing::info!("stopped");
    Ok(())
}

fn prometheus_registry() -> prometheus_client::registry::Registry {
    prometheus_client::registry::Registry::default()
}

async fn serve(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    health: Arc<std::sync::Mutex<Option<sidecar_controller::Health>>>,
    registry: Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = match health.lock().ok().and_then(|h| h.clone()) {
                    Some(h) => h.is_ready(),
                    None => ready.load(Ordering::SeqCst),
                };
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let mut body = String::new();
                let ok = registry
                    .lock()
                    .ok()
                    .map(|r| prometheus_client::encoding::text::encode(&mut body, &r).is_ok())
                    .unwrap_or(false);
                async move {
                    if ok {
                        (
                            StatusCode::OK,
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                    } else {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(header::CONTENT_TYPE, "text/plain")],
                            String::new(),
                        )
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-addr {addr}"))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    }))
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
