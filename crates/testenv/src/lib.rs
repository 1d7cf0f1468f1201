//! A real, local Kubernetes control plane for tests, the demo and benchmarks.
//!
//! [`start`] generates a throw-away PKI and admin kubeconfig, then starts, on free
//! 127.0.0.1 ports: etcd → kube-apiserver → kube-controller-manager (garbage collector,
//! namespaces, ServiceAccounts, workloads) → kube-scheduler → kwok (fake kubelet). It
//! creates fake Nodes and returns only when a Node is Ready, the `default/default`
//! ServiceAccount exists and a garbage-collection canary has been collected.
//!
//! The binaries are built from pinned Go modules by `hack/control-plane.sh` into a cache
//! outside the repository; [`start`] builds them first if they are missing.
//!
//! Tests share one control plane per test process through [`shared`], and isolate
//! themselves with a [`TestNamespace`]. Components die with the process that started
//! them (see [`process`]), so no component outlives a test run, even a killed one.

mod cluster;
pub mod kwok;
mod namespace;
pub mod pki;
pub mod process;
mod shared;

use std::path::{Path, PathBuf};

pub use cluster::{Options, Running, start};
pub use namespace::{TestNamespace, install_crd};
pub use shared::shared;

/// Everything that can go wrong while starting the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating PKI: {0}")]
    Pki(String),
    /// The control-plane binaries are missing and could not be built.
    #[error("control-plane binaries: {0}")]
    Binaries(String),
    /// A component could not be started.
    #[error("starting {name} ({bin}): {source}")]
    Spawn {
        /// Component name.
        name: String,
        /// Binary path.
        bin: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A component exited while the control plane was starting.
    #[error("{name} exited with {status}; last lines of its log {log}:\n{tail}")]
    Exited {
        /// Component name.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// A readiness condition did not hold in time.
    #[error("timed out after {secs}s waiting for {what}{detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// Seconds waited.
        secs: u64,
        /// The last observation, if any (starts with a separator).
        detail: String,
    },
    /// The kubeconfig could not be loaded.
    #[error("loading kubeconfig {path}: {message}")]
    Kubeconfig {
        /// Its path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// An API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// The call.
        what: String,
        /// The client error.
        source: kube::Error,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Error::Kube { what, source }
    }
}

/// A started control plane, as clients see it: where to reach it and with what.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    server: String,
    dir: PathBuf,
}

impl ControlPlane {
    /// Path of the admin kubeconfig (`system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Path of the kubectl binary that matches the server version.
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    /// A `kubectl` command with `--kubeconfig` set to the admin kubeconfig.
    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// The API server URL (`https://127.0.0.1:<port>`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The work directory (PKI, logs, etcd data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin client configuration (for clients that add their own layers).
    pub async fn kube_config(&self) -> kube::Config {
        match config_from_kubeconfig(&self.kubeconfig).await {
            Ok(c) => c,
            Err(e) => panic!("sidecar-testenv: {e}"),
        }
    }

    /// A new admin client for the current tokio runtime.
    pub async fn try_client(&self) -> Result<kube::Client, Error> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// A new admin client for the current tokio runtime; panics if the kubeconfig is
    /// unusable (test helper).
    pub async fn client(&self) -> kube::Client {
        match self.try_client().await {
            Ok(c) => c,
            Err(e) => panic!("sidecar-testenv: {e}"),
        }
    }
}

/// Loads a client configuration from a kubeconfig file.
pub async fn config_from_kubeconfig(path: &Path) -> Result<kube::Config, Error> {
    let err = |message: String| Error::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))
}

/// Builds a client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    let config = config_from_kubeconfig(path).await?;
    kube::Client::try_from(config).map_err(|e| Error::Kubeconfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The directory holding the pinned control-plane binaries (built or not).
pub fn bin_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("SIDECAR_K8S_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("hack/control-plane.sh"))
        .arg("bindir")
        .output()
        .map_err(|e| Error::Binaries(format!("running hack/control-plane.sh: {e}")))?;
    if !out.status.success() {
        return Err(Error::Binaries(String::from_utf8_lossy(&out.stderr).into()));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The names of the binaries the control plane needs.
pub const BINARIES: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
];

/// Makes sure every binary exists, building the missing ones (progress on stderr).
pub fn ensure_binaries() -> Result<PathBuf, Error> {
    let dir = bin_dir()?;
    if BINARIES.iter().all(|b| dir.join(b).is_file()) {
        return Ok(dir);
    }
    eprintln!(
        "[testenv] control-plane binaries missing in {}; building them",
        dir.display()
    );
    let status = std::process::Command::new("bash")
        .arg(repo_root().join("hack/control-plane.sh"))
        .arg("build")
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| Error::Binaries(format!("running hack/control-plane.sh build: {e}")))?;
    if !status.success() {
        return Err(Error::Binaries(format!(
            "hack/control-plane.sh build failed ({status}); see its output above"
        )));
    }
    Ok(dir)
}

/// A helper tool `hack/control-plane.sh` builds from a pinned Go module into the cache
/// (`kstatus`, `helm`), built if missing (with its progress on stderr); its path.
pub fn hack_tool(name: &str) -> PathBuf {
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("hack/control-plane.sh"))
        .arg(name)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running hack/control-plane.sh {name}: {e}"));
    assert!(
        out.status.success(),
        "hack/control-plane.sh {name} failed to build it; see its output above"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `helm` (built by [`hack_tool`]) run from the repository root, with its configuration,
/// cache and data under `home` (no user's Helm repositories or plugins) and no
/// `$KUBECONFIG`: a caller that talks to a cluster passes `--kubeconfig`.
pub fn helm(home: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(hack_tool("helm"));
    c.current_dir(repo_root())
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG");
    c
}

/// The repository root (this crate lives in `crates/testenv`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
