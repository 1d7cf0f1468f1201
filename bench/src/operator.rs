//! The operator under test: the release binary as a child process (the real thing:
//! its CPU and memory are its own), or an in-process [`sidecar_controller::Operator`]
//! (for the CI-sized check: CPU and memory are then those of the whole test process).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use sidecar_controller::metrics::name;
use sidecar_controller::{Operator, OperatorConfig};
use sidecar_testenv::process::Proc;

use crate::metrics::{Snapshot, http_get, series};
use crate::sys::{self, RssSampler};

/// How the operator runs during the benchmark.
#[derive(Debug, Clone)]
pub enum OperatorMode {
    /// The `sidecar-operator` binary at this path, as a child process.
    Process(PathBuf),
    /// [`sidecar_controller::Operator`] inside the benchmark process.
    InProcess,
}

impl OperatorMode {
    /// Whose CPU and memory the figures are (for the report).
    pub fn scope(&self) -> &'static str {
        match self {
            OperatorMode::Process(_) => "operator process",
            OperatorMode::InProcess => {
                "whole benchmark process (in-process operator + watchers + client)"
            }
        }
    }
}

/// How to start one operator instance.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// How it runs.
    pub mode: &'a OperatorMode,
    /// Admin kubeconfig.
    pub kubeconfig: &'a Path,
    /// `--concurrency`.
    pub concurrency: usize,
    /// `--pod-events`.
    pub pod_events: bool,
    /// Log file directory (child process).
    pub log_dir: &'a Path,
    /// Log file name stem (child process).
    pub name: &'a str,
    /// More arguments of `run` (child process only).
    pub extra_args: &'a [String],
}

enum Kind {
    Process { proc: Option<Proc>, port: u16 },
    InProcess { op: Option<Operator> },
}

/// A running operator instance, with an RSS sampler on its process.
pub struct RunningOperator {
    kind: Kind,
    pid: u32,
    sampler: RssSampler,
    /// When it was started (spawn / `Operator::start` called).
    pub started: Instant,
    /// When `/readyz` first answered 200 (caches synced).
    pub ready: Instant,
}

impl std::fmt::Debug for RunningOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningOperator")
            .field("pid", &self.pid)
            .finish()
    }
}

/// A free port on 127.0.0.1 (the operator's metrics or webhook address).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("choosing a free port")?;
    Ok(l.local_addr()?.port())
}

impl RunningOperator {
    /// Starts an instance watching all namespaces and waits until it is ready.
    pub async fn start(l: &Launch<'_>, timeout: Duration) -> anyhow::Result<RunningOperator> {
        let started = Instant::now();
        match l.mode {
            OperatorMode::Process(bin) => {
                let port = free_port()?;
                let args: Vec<String> = vec![
                    "run".into(),
                    "--kubeconfig".into(),
                    l.kubeconfig.display().to_string(),
                    "--metrics-addr".into(),
                    format!("127.0.0.1:{port}"),
                    "--concurrency".into(),
                    l.concurrency.to_string(),
                    "--pod-events".into(),
                    l.pod_events.to_string(),
                ]
                .into_iter()
                .chain(l.extra_args.iter().cloned())
                .collect();
                // The log appends: start each instance with a fresh file.
                let _ = std::fs::remove_file(l.log_dir.join(format!("{}.log", l.name)));
                let proc = Proc::spawn(l.name, bin, &args, l.log_dir)
                    .with_context(|| format!("starting {}", bin.display()))?;
                let pid = proc.pid();
                let sampler = RssSampler::start(pid);
                let mut me = RunningOperator {
                    kind: Kind::Process {
                        proc: Some(proc),
                        port,
                    },
                    pid,
                    sampler,
                    started,
                    ready: started,
                };
                me.wait_ready(port, timeout).await?;
                me.ready = Instant::now();
                Ok(me)
            }
            OperatorMode::InProcess => {
                let config = sidecar_testenv::config_from_kubeconfig(l.kubeconfig).await?;
                let pid = std::process::id();
                let sampler = RssSampler::start(pid);
                let opts = OperatorConfig {
                    concurrency: l.concurrency,
                    pod_events: l.pod_events,
                    sync_timeout: timeout,
                    ..OperatorConfig::all_namespaces()
                };
                let op = Operator::start(config, opts)
                    .await
                    .context("starting the in-process operator")?;
                Ok(RunningOperator {
                    kind: Kind::InProcess { op: Some(op) },
                    pid,
                    sampler,
                    started,
                    ready: Instant::now(),
                })
            }
        }
    }

    async fn wait_ready(&mut self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Kind::Process {
                proc: Some(proc), ..
            } = &mut self.kind
                && let Some(status) = proc.exited()
            {
                bail!(
                    "the operator exited ({status}) before it was ready; its log {}:\n{}",
                    proc.log.display(),
                    proc.log_tail(30)
                );
            }
            if let Ok((200, _)) = http_get(port, "/readyz").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the operator was not ready after {}s", timeout.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Process id whose CPU and memory are measured.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        sys::cpu_seconds(self.pid).unwrap_or(0.0)
    }

    /// RSS now.
    pub fn rss(&self) -> u64 {
        sys::rss(self.pid).unwrap_or(0)
    }

    /// Peak RSS so far.
    pub fn peak_rss(&self) -> u64 {
        self.sampler.peak()
    }

    /// Scrapes the operator's metrics.
    pub async fn metrics(&self) -> anyhow::Result<Snapshot> {
        Snapshot::parse(&self.metrics_text().await?)
    }

    /// The operator's `/metrics` text.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        match &self.kind {
            Kind::Process { port, .. } => {
                let (code, body) = http_get(*port, "/metrics")
                    .await
                    .context("scraping the operator's /metrics")?;
                if code != 200 {
                    bail!("/metrics answered {code}");
                }
                Ok(body)
            }
            Kind::InProcess { op } => {
                let op = op.as_ref().context("operator stopped")?;
                let mut reg = prometheus_client::registry::Registry::default();
                op.metrics().register(&mut reg);
                let mut body = String::new();
                prometheus_client::encoding::text::encode(&mut body, &reg)
                    .context("encoding metrics")?;
                Ok(body)
            }
        }
    }

    /// Fails if the operator process has exited (with its log tail).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Kind::Process {
            proc: Some(proc), ..
        } = &mut self.kind
            && let Some(status) = proc.exited()
        {
            bail!(
                "the operator exited ({status}); its log {}:\n{}",
                proc.log.display(),
                proc.log_tail(30)
            );
        }
        Ok(())
    }

    /// Graceful stop (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        match &mut self.kind {
            Kind::Process { proc, .. } => {
                if let Some(mut p) = proc.take() {
                    let _ =
                        tokio::task::spawn_blocking(move || p.stop(Duration::from_secs(10))).await;
                }
            }
            Kind::InProcess { op } => {
                if let Some(op) = op.take() {
                    op.stop().await;
                }
            }
        }
    }
}

impl Drop for RunningOperator {
    /// On error paths: the child is killed (no grace), the in-process tasks aborted.
    fn drop(&mut self) {
        match &mut self.kind {
            Kind::Process { proc, .. } => {
                if let Some(mut p) = proc.take() {
                    p.stop(Duration::from_millis(500));
                }
            }
            Kind::InProcess { op } => drop(op.take()),
        }
    }
}

/// Request counts by verb and resource, from a `/metrics` difference.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApiCounts {
    /// `resource → verb → count`.
    pub by_resource: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
}

impl ApiCounts {
    /// From a difference of the operator's `api_requests` counter.
    pub fn from_delta(d: &Snapshot) -> ApiCounts {
        let mut by_resource: std::collections::BTreeMap<
            String,
            std::collections::BTreeMap<String, f64>,
        > = Default::default();
        for (labels, v) in d.series(&series(name::API_REQUESTS, "_total")) {
            if v == 0.0 {
                continue;
            }
            let res = labels.get("resource").cloned().unwrap_or_default();
            let verb = labels.get("verb").cloned().unwrap_or_default();
            *by_resource.entry(res).or_default().entry(verb).or_default() += v;
        }
        ApiCounts { by_resource }
    }

    /// By verb, over every resource except Events (events are counted apart).
    pub fn by_verb_without_events(&self) -> std::collections::BTreeMap<String, f64> {
        let mut out = std::collections::BTreeMap::new();
        for (res, verbs) in &self.by_resource {
            if res == "events" {
                continue;
            }
            for (verb, v) in verbs {
                *out.entry(verb.clone()).or_default() += v;
            }
        }
        out
    }

    /// Event writes (creates and patches).
    pub fn event_writes(&self) -> f64 {
        self.by_resource
            .get("events")
            .map(|v| v.values().sum::<f64>() + 0.0)
            .unwrap_or(0.0)
    }

    /// Writes (create, delete, patch, update), Events included.
    pub fn writes(&self) -> f64 {
        self.by_resource
            .values()
            .flat_map(|v| v.iter())
            .filter(|(verb, _)| matches!(verb.as_str(), "create" | "delete" | "patch" | "update"))
            .map(|(_, v)| v)
            .sum::<f64>()
            + 0.0 // an empty float sum is -0.0
    }

    /// Every count divided by `n`.
    pub fn per(&self, n: usize) -> ApiCounts {
        let n = n.max(1) as f64;
        ApiCounts {
            by_resource: self
                .by_resource
                .iter()
                .map(|(r, verbs)| {
                    (
                        r.clone(),
                        verbs.iter().map(|(k, v)| (k.clone(), v / n)).collect(),
                    )
                })
                .collect(),
        }
    }
}
