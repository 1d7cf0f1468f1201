//! A `sidecar-operator run` process (the binary Cargo built for these tests) and what it
//! exposes on its metrics server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The operator binary, built by Cargo for this package's integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_sidecar-operator");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `sidecar-operator run` process, killed on drop.
pub struct Proc {
    pub child: Child,
    port: u16,
    log: PathBuf,
}

impl Proc {
    pub fn start(kubeconfig: &Path, ns: &str, extra: &[&str], tag: &str) -> Proc {
        let mut args = vec!["--namespace".to_string(), ns.to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::run(kubeconfig, &args, &[], &format!("{ns}-{tag}"), tag)
    }

    /// `sidecar-operator run --kubeconfig K --metrics-addr ... --instance TAG ARGS` with
    /// environment `env`, logging to a file named after `log_name`.
    pub fn run(
        kubeconfig: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log_name: &str,
        tag: &str,
    ) -> Proc {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("sidecar-operator-{log_name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg(format!("--instance={tag}"))
            .args(args)
            .env_remove("KUBECONFIG")
            .envs(env.iter().copied())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start sidecar-operator");
        Proc { child, port, log }
    }

    /// GET a path of its metrics server; `None` if unreachable.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        let code = body.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body))
    }

    /// Value of a metric line (exact series name + labels) from /metrics.
    pub fn metric(&self, series: &str) -> f64 {
        self.get("/metrics")
            .and_then(|(_, body)| {
                body.lines()
                    .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Requests the process sent, by (resource, verb), from its `api_requests` counter;
    /// `None` if /metrics is unreachable.
    pub fn api_requests(&self) -> Option<BTreeMap<(String, String), f64>> {
        let (_, body) = self.get("/metrics")?;
        let mut out = BTreeMap::new();
        for line in body.lines() {
            let Some(rest) = line.strip_prefix("sidecar_operator_api_requests_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let label = |k: &str| {
                labels.split(',').find_map(|kv| {
                    kv.strip_prefix(&format!("{k}=\""))
                        .and_then(|v| v.strip_suffix('"'))
                        .map(str::to_string)
                })
            };
            if let (Some(res), Some(verb), Ok(v)) =
                (label("resource"), label("verb"), value.parse())
            {
                out.insert((res, verb), v);
            }
        }
        Some(out)
    }

    /// Writes (create, delete, patch, update of any resource, Events and the Lease
    /// included) the process sent; `None` if /metrics is unreachable.
    pub fn writes(&self) -> Option<f64> {
        let calls = self.api_requests()?;
        Some(
            calls
                .iter()
                .filter(|((_, verb), _)| {
                    matches!(
                        verb.as_str(),
                        "create" | "dry-run" | "delete" | "patch" | "update"
                    )
                })
                .map(|(_, v)| v)
                .sum(),
        )
    }

    pub fn log_tail(&self) -> String {
        sidecar_testenv::process::log_tail(&self.log, 30)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
