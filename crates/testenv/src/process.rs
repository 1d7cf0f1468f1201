//! Child processes of the control plane.
//!
//! Each component runs in its own process group (so a Ctrl-C on the terminal reaches
//! only our supervisor, which then stops components in reverse start order) and with
//! `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when the thread that started it
//! dies — even if the test harness itself is `SIGKILL`ed. No component can outlive the
//! process that started it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// One running component.
#[derive(Debug)]
pub struct Proc {
    /// Component name (`etcd`, `kube-apiserver`, …).
    pub name: String,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    child: Child,
}

impl Proc {
    /// Starts `bin` with `args`, output to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, bin: &Path, args: &[String], log_dir: &Path) -> Result<Proc, Error> {
        let log = log_dir.join(format!("{name}.log"));
        let child = Self::start(name, bin, args, &log)?;
        Ok(Proc {
            name: name.to_string(),
            log,
            bin: bin.to_path_buf(),
            args: args.to_vec(),
            child,
        })
    }

    /// Starts the same command again (after [`Proc::stop`]); output appends to the log.
    pub fn respawn(&mut self) -> Result<(), Error> {
        self.child = Self::start(&self.name, &self.bin, &self.args, &self.log)?;
        Ok(())
    }

    fn start(name: &str, bin: &Path, args: &[String], log: &Path) -> Result<Child, Error> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(log, e))?;
        let err = out.try_clone().map_err(|e| Error::io(log, e))?;
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        die_with_parent(&mut cmd);
        cmd.spawn().map_err(|e| Error::Spawn {
            name: name.to_string(),
            bin: bin.to_path_buf(),
            source: e,
        })
    }

    /// The command-line flags.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `n` lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; reaps the process.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a file (empty if unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends `sig` to the process group led by `pid` (components are group leaders).
pub fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    #[allow(unsafe_code)]
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(-pid, sig);
        libc::kill(pid, sig);
    }
}

#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (setpgid, prctl, getppid, _exit); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
