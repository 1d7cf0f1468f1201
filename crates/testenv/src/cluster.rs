//! Starting and stopping a control plane: the components in order
//! ([`components`]), each checked through its work before the next starts
//! ([`readiness`]), with the bookkeeping of a start in [`starter`].

mod components;
mod readiness;
mod starter;

use std::path::PathBuf;
use std::time::Duration;

use crate::process::Proc;
use crate::{ControlPlane, Error, pki};

use components::Layout;
use starter::{Starter, default_base_dir, free_ports, remove_stale_dirs};

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of fake kwok Nodes (at least 1; default 2).
    pub nodes: usize,
    /// Parent of the work directory (default: `/dev/shm` when writable, else the temp dir).
    pub base_dir: Option<PathBuf>,
    /// Also copy the admin kubeconfig here.
    pub kubeconfig_out: Option<PathBuf>,
    /// Print progress lines on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 2,
            base_dir: None,
            kubeconfig_out: None,
            progress: true,
        }
    }
}

/// A running control plane: the client view plus the component processes.
/// Dropping it stops the components (reverse start order) and removes the work dir.
#[derive(Debug)]
pub struct Running {
    /// How to reach it.
    pub cp: ControlPlane,
    procs: Vec<Proc>,
    progress: bool,
}

impl Running {
    /// Process ids of the components, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    /// `Some((name, status))` of the first component that has exited.
    pub fn exited(&mut self) -> Option<(String, String)> {
        self.procs
            .iter_mut()
            .find_map(|p| p.exited().map(|s| (p.name.clone(), s.to_string())))
    }

    fn component(&mut self, name: &str) -> Result<&mut Proc, Error> {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::Binaries(format!("no component named {name}")))
    }

    /// Stops component `name` (SIGTERM, then SIGKILL) — fault tests: API server outage.
    pub fn stop_component(&mut self, name: &str) -> Result<(), Error> {
        self.component(name)?.stop(Duration::from_secs(10));
        Ok(())
    }

    /// Starts a stopped component again with the same flags.
    pub fn start_component(&mut self, name: &str) -> Result<(), Error> {
        self.component(name)?.respawn()
    }

    /// The etcd client URL (for fault tests that compact the history).
    pub fn etcd_url(&self) -> Option<String> {
        self.procs.iter().find(|p| p.name == "etcd").and_then(|p| {
            p.args()
                .iter()
                .find_map(|a| a.strip_prefix("--listen-client-urls=").map(str::to_string))
        })
    }

    /// Stops every component (SIGTERM, then SIGKILL after a grace period), in reverse
    /// start order, and removes the work directory.
    pub fn stop(&mut self) {
        for p in self.procs.iter_mut().rev() {
            if self.progress {
                eprintln!("[testenv] stopping {}", p.name);
            }
            p.stop(Duration::from_secs(10));
        }
        self.procs.clear();
        let _ = std::fs::remove_dir_all(&self.cp.dir);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a control plane and waits until it is ready (see the crate docs).
pub async fn start(opts: &Options) -> Result<Running, Error> {
    match start_once(opts).await {
        // A component can die while the plane comes up for reasons of its own (kwok v0.8.0
        // was seen to crash with "concurrent map writes" on start): one more try, on new
        // ports in a new directory, before failing the run.
        Err(e @ Error::Exited { .. }) => {
            eprintln!("[testenv] a component died while starting ({e}); starting again");
            start_once(opts).await
        }
        other => other,
    }
}

async fn start_once(opts: &Options) -> Result<Running, Error> {
    let bin = crate::ensure_binaries()?;
    let base = opts.base_dir.clone().unwrap_or_else(default_base_dir);
    remove_stale_dirs(&base);
    let suffix: u32 = rand::random();
    let dir = base.join(format!(
        "sidecar-testenv-{}-{suffix:08x}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;

    let mut st = Starter::new(opts.progress);
    st.say(&format!("starting control plane in {}", dir.display()));
    let pki = pki::generate(&dir.join("pki"))?;
    let ports = free_ports()?;
    let server = format!("https://127.0.0.1:{}", ports.apiserver);
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, pki::admin_kubeconfig(&pki, &server))
        .map_err(|e| Error::io(&kubeconfig, e))?;
    let cp = ControlPlane {
        kubeconfig: kubeconfig.clone(),
        kubectl: bin.join("kubectl"),
        server,
        dir: dir.clone(),
    };
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    let layout = Layout {
        bin: &bin,
        dir: &dir,
        logs: &logs,
        ports: &ports,
        pki: &pki,
        kubeconfig: &kubeconfig,
    };

    components::etcd(&mut st, &layout)?;
    readiness::etcd(&mut st, ports.etcd).await?;
    components::apiserver(&mut st, &layout)?;
    let client = crate::client_from_kubeconfig(&kubeconfig).await?;
    readiness::apiserver(&mut st, &client).await?;
    components::controller_manager(&mut st, &layout)?;
    components::scheduler(&mut st, &layout)?;
    components::kwok(&mut st, &layout)?;
    readiness::nodes(&mut st, &client, opts.nodes).await?;
    readiness::default_service_account(&mut st, &client).await?;
    readiness::gc_canary(&mut st, &client).await?;

    if let Some(out) = &opts.kubeconfig_out {
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::copy(&kubeconfig, out).map_err(|e| Error::io(out, e))?;
    }
    st.say("control plane ready");
    let procs = std::mem::take(&mut st.procs);
    Ok(Running {
        cp,
        procs,
        progress: opts.progress,
    })
}
