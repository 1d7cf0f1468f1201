//! The bookkeeping of a start: the component processes started so far (stopped again if
//! the start fails), progress lines, and waiting on a readiness probe while watching that
//! no component died. Also the work directory and the ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;
use crate::process::Proc;

/// The ports of the components, all distinct.
pub(super) struct Ports {
    pub(super) etcd: u16,
    pub(super) etcd_peer: u16,
    pub(super) apiserver: u16,
    pub(super) kcm: u16,
    pub(super) scheduler: u16,
    pub(super) kwok: u16,
}

pub(super) fn free_ports() -> Result<Ports, Error> {
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

pub(super) fn default_base_dir() -> PathBuf {
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
pub(super) fn remove_stale_dirs(base: &Path) {
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

/// A start in progress.
pub(super) struct Starter {
    pub(super) procs: Vec<Proc>,
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
    pub(super) fn new(progress: bool) -> Starter {
        Starter {
            procs: Vec::new(),
            progress,
            t0: Instant::now(),
        }
    }

    pub(super) fn say(&self, msg: &str) {
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
    pub(super) async fn wait<F, Fut>(
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

pub(super) async fn http_get_plain(port: u16, path: &str) -> Result<String, String> {
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
