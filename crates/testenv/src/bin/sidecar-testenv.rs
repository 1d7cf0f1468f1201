//! `sidecar-testenv`: runs the local control plane in the foreground (`make cluster`).
//!
//! Usage: `sidecar-testenv [--kubeconfig-out PATH] [--nodes N]`
//! Stops every component on Ctrl-C / SIGTERM, or when one of them exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

fn usage() -> ExitCode {
    eprintln!("usage: sidecar-testenv [--kubeconfig-out PATH] [--nodes N]");
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut opts = sidecar_testenv::Options {
        kubeconfig_out: Some(PathBuf::from("target/cluster/kubeconfig")),
        ..Default::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kubeconfig-out" => match args.next() {
                Some(p) => opts.kubeconfig_out = Some(PathBuf::from(p)),
                None => return usage(),
            },
            "--nodes" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => opts.nodes = n,
                None => return usage(),
            },
            "-h" | "--help" => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("sidecar-testenv: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let mut running = tokio::select! {
        r = sidecar_testenv::start(&opts) => match r {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sidecar-testenv: the control plane did not start: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ = int.recv() => return ExitCode::from(130),
        _ = term.recv() => return ExitCode::from(143),
    };
    let kubeconfig = opts
        .kubeconfig_out
        .as_ref()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .unwrap_or_else(|| running.cp.kubeconfig().to_path_buf());
    let kubectl = running.cp.kubectl_path().to_path_buf();
    println!();
    println!("Control plane ready: {}", running.cp.server());
    println!("  kubeconfig: {}", kubeconfig.display());
    println!("  kubectl:    {}", kubectl.display());
    println!("  logs:       {}/logs", running.cp.dir().display());
    println!();
    println!("Try:");
    println!(
        "  {} --kubeconfig {} get nodes",
        kubectl.display(),
        kubeconfig.display()
    );
    println!();
    println!("Press Ctrl-C to stop.");
    let code = loop {
        tokio::select! {
            _ = int.recv() => break ExitCode::SUCCESS,
            _ = term.recv() => break ExitCode::SUCCESS,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if let Some((name, status)) = running.exited() {
                    eprintln!("sidecar-testenv: {name} exited ({status}); stopping the control plane");
                    break ExitCode::FAILURE;
                }
            }
        }
    };
    running.stop();
    if let Some(out) = &opts.kubeconfig_out {
        let _ = std::fs::remove_file(out);
    }
    code
}
