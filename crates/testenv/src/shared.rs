//! One control plane per test process, shared by every test in it.
//!
//! The components are started from a dedicated supervisor thread that lives as long as
//! the process: `PR_SET_PDEATHSIG` fires when the *thread* that forked a child exits, so
//! starting them from a short-lived test thread would kill them when that test ends.
//! At process exit (normal or killed), the kernel kills the components; a normal exit
//! also removes the work directory through an `atexit` hook.
//!
//! `SIDECAR_TESTENV_KUBECONFIG=<path>` makes tests use an already running control plane
//! (for example the one `make cluster` started) instead of starting their own.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use crate::{ControlPlane, Options, start};

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
static CLEANUP: Mutex<Option<(Vec<u32>, PathBuf)>> = Mutex::new(None);

/// The control plane shared by all tests of this process, started on first use.
///
/// Panics with the startup error (component log tails included) if it cannot start.
pub fn shared() -> &'static ControlPlane {
    let r = SHARED.get_or_init(|| {
        if let Some(kc) = std::env::var_os("SIDECAR_TESTENV_KUBECONFIG") {
            return existing(PathBuf::from(kc));
        }
        start_supervised()
    });
    match r {
        Ok(cp) => cp,
        Err(e) => panic!("sidecar-testenv: the control plane did not start: {e}"),
    }
}

pub(crate) fn kubectl_for_cleanup() -> Option<&'static ControlPlane> {
    SHARED.get().and_then(|r| r.as_ref().ok())
}

fn existing(kubeconfig: PathBuf) -> Result<ControlPlane, String> {
    let bin = crate::bin_dir().map_err(|e| e.to_string())?;
    Ok(ControlPlane {
        kubectl: bin.join("kubectl"),
        server: String::new(),
        dir: kubeconfig.parent().map(PathBuf::from).unwrap_or_default(),
        kubeconfig,
    })
}

fn start_supervised() -> Result<ControlPlane, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("testenv-supervisor".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            match rt.block_on(start(&Options::default())) {
                Ok(running) => {
                    if let Ok(mut c) = CLEANUP.lock() {
                        *c = Some((running.pids(), running.cp.dir().to_path_buf()));
                    }
                    register_atexit();
                    let _ = tx.send(Ok(running.cp.clone()));
                    // Keep the components' parent thread (and the processes) alive
                    // until the process exits.
                    let _keep = running;
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        });
    if let Err(e) = spawned {
        return Err(format!("spawning the supervisor thread: {e}"));
    }
    rx.recv()
        .unwrap_or_else(|_| Err("the supervisor thread died while starting".into()))
}

extern "C" fn cleanup_at_exit() {
    let taken = CLEANUP.lock().ok().and_then(|mut c| c.take());
    if let Some((pids, dir)) = taken {
        for pid in pids.iter().rev() {
            crate::process::signal(*pid, libc::SIGKILL);
        }
        // Give the kernel a moment to release etcd's files before removing them.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[allow(unsafe_code)]
fn register_atexit() {
    // SAFETY: `cleanup_at_exit` is a plain extern "C" fn with no arguments, as atexit(3)
    // requires; it only takes a mutex, sends signals and removes a directory.
    unsafe {
        libc::atexit(cleanup_at_exit);
    }
}
