//! Starting and stopping the components, in order, with readiness checks.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Node, ServiceAccount};
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::{Api, Client};

use crate::process::Proc;
use crate::{ControlPlane, Error, kwok, pki};

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

struct Ports {
    etcd: u16,
    etcd_peer: u16,
    apiserver: u16,
    kcm: u16,
    scheduler: u16,
    kwok: u16,
}

fn free_ports() -> Result<Ports, Error> {
    // Hold all listeners until every port is chosen so that no two are equal.
    let mut held = Vec::new();
    for _ in 0..6 {
        let l =
            TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?;
        held.push(l);
    }
    let p: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0))
        .collect();
    Ok(Ports {
        etcd: p[0],
        etcd_peer: p[1],
        apiserver: p[2],
        kcm: p[3],
        scheduler: p[4],
        kwok: p[5],
    })
}

fn default_base_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let probe = shm.join(format!(".sidecar-testenv-probe-{}", std::process::id()));
        if std::fs::write(&probe, b"").is_ok() {
            let _ = std::fs::remove_file(probe);
            return shm.to_path_buf();
        }
    }
    std::env::temp_dir()
}

/// Removes work directories left behind by control planes whose process is gone.
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("sidecar-testenv-") else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

struct Starter {
    procs: Vec<Proc>,
    progress: bool,
    t0: Instant,
}

impl Drop for Starter {
    /// A start that failed stops what it had started (a successful one has moved its
    /// processes into [`Running`]).
    fn drop(&mut self) {
        for p in self.procs.iter_mut().rev() {
            p.stop(Duration::from_secs(2));
        }
    }
}

impl Starter {
    fn say(&self, msg: &str) {
        if self.progress {
            eprintln!("[testenv] {:>5.1}s {msg}", self.t0.elapsed().as_secs_f64());
        }
    }

    fn check_alive(&mut self) -> Result<(), Error> {
        for p in &mut self.procs {
            if let Some(status) = p.exited() {
                return Err(Error::Exited {
                    name: p.name.clone(),
                    status: status.to_string(),
                    log: p.log.clone(),
                    tail: p.log_tail(30),
                });
            }
        }
        Ok(())
    }

    /// Polls `probe` every 200 ms until it returns `Ok(true)`; fails early if a component died.
    async fn wait<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, String>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            self.check_alive()?;
            match probe().await {
                Ok(true) => {
                    self.say(&format!("{what}: ok"));
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: what.to_string(),
                    secs: timeout.as_secs(),
                    detail: if last.is_empty() {
                        last
                    } else {
                        format!(": {last}")
                    },
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn http_get_plain(port: u16, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(body)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn p(path: &Path) -> String {
    path.display().to_string()
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

    let mut st = Starter {
        procs: Vec::new(),
        progress: opts.progress,
        t0: Instant::now(),
    };
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
        server: server.clone(),
        dir: dir.clone(),
    };
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;

    // etcd
    let etcd_url = format!("http://127.0.0.1:{}", ports.etcd);
    let peer_url = format!("http://127.0.0.1:{}", ports.etcd_peer);
    st.procs.push(Proc::spawn(
        "etcd",
        &bin.join("etcd"),
        &args(&[
            "--name=default",
            &format!("--data-dir={}", p(&dir.join("etcd"))),
            &format!("--listen-client-urls={etcd_url}"),
            &format!("--advertise-client-urls={etcd_url}"),
            &format!("--listen-peer-urls={peer_url}"),
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync=true",
            "--auto-compaction-retention=1",
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ]),
        &logs,
    )?);
    let etcd_port = ports.etcd;
    st.wait("etcd /health", Duration::from_secs(30), || async move {
        Ok(http_get_plain(etcd_port, "/health")
            .await?
            .contains("\"health\":\"true\""))
    })
    .await?;

    // kube-apiserver
    st.procs.push(Proc::spawn(
        "kube-apiserver",
        &bin.join("kube-apiserver"),
        &args(&[
            &format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            &format!("--secure-port={}", ports.apiserver),
            "--endpoint-reconciler-type=none",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--authorization-mode=Node,RBAC",
            &format!("--client-ca-file={}", p(&pki.ca_cert)),
            &format!("--tls-cert-file={}", p(&pki.server_cert)),
            &format!("--tls-private-key-file={}", p(&pki.server_key)),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            &format!("--service-account-key-file={}", p(&pki.sa_pub)),
            &format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
            "--profiling=false",
        ]),
        &logs,
    )?);
    let client = crate::client_from_kubeconfig(&kubeconfig).await?;
    {
        let client = client.clone();
        st.wait(
            "kube-apiserver /readyz",
            Duration::from_secs(120),
            move || {
                let client = client.clone();
                async move {
                    let req = http::Request::get("/readyz")
                        .body(Vec::new())
                        .map_err(|e| e.to_string())?;
                    match client.request_text(req).await {
                        Ok(body) => Ok(body.trim() == "ok"),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await?;
    }

    // controller-manager, scheduler, kwok
    let kc = p(&kubeconfig);
    st.procs.push(Proc::spawn(
        "kube-controller-manager",
        &bin.join("kube-controller-manager"),
        &args(&[
            &format!("--kubeconfig={kc}"),
            &format!("--authentication-kubeconfig={kc}"),
            &format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", ports.kcm),
            &format!("--root-ca-file={}", p(&pki.ca_cert)),
            &format!("--service-account-private-key-file={}", p(&pki.sa_key)),
            "--leader-elect=false",
            "--controllers=*",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
        ]),
        &logs,
    )?);
    st.procs.push(Proc::spawn(
        "kube-scheduler",
        &bin.join("kube-scheduler"),
        &args(&[
            &format!("--kubeconfig={kc}"),
            &format!("--authentication-kubeconfig={kc}"),
            &format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", ports.scheduler),
            "--leader-elect=false",
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
        ]),
        &logs,
    )?);
    let stages = dir.join("kwok-stages.yaml");
    std::fs::write(&stages, kwok::STAGES).map_err(|e| Error::io(&stages, e))?;
    st.procs.push(Proc::spawn(
        "kwok",
        &bin.join("kwok"),
        &args(&[
            &format!("--kubeconfig={kc}"),
            &format!("--config={}", p(&stages)),
            "--manage-all-nodes=true",
            &format!("--server-address=127.0.0.1:{}", ports.kwok),
        ]),
        &logs,
    )?);

    // Nodes
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = (0..opts.nodes.max(1))
        .map(|i| format!("kwok-node-{i}"))
        .collect();
    for name in &names {
        match nodes
            .create(&PostParams::default(), &kwok::fake_node(name))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("creating Node {name}"))(e)),
        }
    }
    {
        let nodes = nodes.clone();
        let n = names.len();
        st.wait(
            &format!("{n} kwok Node(s) Ready"),
            Duration::from_secs(60),
            move || {
                let nodes = nodes.clone();
                async move {
                    let list = nodes
                        .list(&Default::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let ready = list.items.iter().filter(|n| node_ready(n)).count();
                    Ok(ready >= n)
                }
            },
        )
        .await?;
    }

    // default ServiceAccount: proves the controller-manager works.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    st.wait(
        "ServiceAccount default/default",
        Duration::from_secs(90),
        || {
            let sas = sas.clone();
            async move {
                sas.get_opt("default")
                    .await
                    .map(|o| o.is_some())
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await?;

    gc_canary(&mut st, &client).await?;

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

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates an owner ConfigMap and a dependent that names it in `ownerReferences`,
/// deletes the owner, and waits for the garbage collector to delete the dependent.
async fn gc_canary(st: &mut Starter, client: &Client) -> Result<(), Error> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "testenv-gc-canary-owner"}
    }))
    .expect("static JSON");
    let owner = cms
        .create(&PostParams::default(), &owner)
        .await
        .map_err(Error::kube("creating GC canary owner"))?;
    let dependent: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "testenv-gc-canary-dependent",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap",
                "name": owner.metadata.name, "uid": owner.metadata.uid,
            }],
        }
    }))
    .expect("static JSON");
    cms.create(&PostParams::default(), &dependent)
        .await
        .map_err(Error::kube("creating GC canary dependent"))?;
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    cms.delete("testenv-gc-canary-owner", &dp)
        .await
        .map_err(Error::kube("deleting GC canary owner"))?;
    st.wait(
        "garbage collector (canary dependent deleted)",
        Duration::from_secs(120),
        || {
            let cms = cms.clone();
            async move {
                cms.get_opt("testenv-gc-canary-dependent")
                    .await
                    .map(|o| o.is_none())
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await
}
