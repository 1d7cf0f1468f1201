//! `sidecar-bench`: `make bench` (see the library docs for what is measured).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sidecar_bench::{Cluster, Config, OperatorMode};

/// Measures the sidecar operator against the physical floor on a local control plane;
/// writes target/bench/report.json and report.md.
#[derive(Parser, Debug)]
// A flag given twice keeps its last value, so BENCH_ARGS can override the Makefile's.
#[command(name = "sidecar-bench", about, args_override_self = true)]
struct Args {
    /// Main Pods (and sidecars) per round; spread over ⌈N/1000⌉ namespaces.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Rounds of each kind (floor and operator alternate); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Idle period after convergence, seconds.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Requests in flight of the benchmark's client, and the operator's --concurrency.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Use this running control plane (admin kubeconfig) instead of starting one.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The operator binary (default: <target>/release/sidecar-operator).
    #[arg(long, conflicts_with = "in_process")]
    operator_bin: Option<PathBuf>,
    /// Run the operator inside this process (CPU and memory are then the whole process's).
    #[arg(long)]
    in_process: bool,
    /// The operator's --pod-events (a Normal event on each main Pod per sidecar created).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pod_events: bool,
    /// maxUnavailable of the policies, which drives the rollout.
    #[arg(long, default_value = "100%")]
    max_unavailable: String,
    /// Output directory (default: <target>/bench).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only the admission section (Container mode's webhook), no floor or operator rounds.
    #[arg(long, conflicts_with = "repair_only")]
    admission_only: bool,
    /// Only the repair section (Container mode's eviction of drifted Pods).
    #[arg(long)]
    repair_only: bool,
    /// Drifted Pods of the repair section (0 skips it).
    #[arg(long, default_value_t = 200)]
    repair_n: usize,
    /// Namespaces of the cluster-policy section (0 skips it).
    #[arg(long, default_value_t = 10)]
    cluster_namespaces: usize,
    /// Main Pods per second of the steady-churn section (0 skips it).
    #[arg(long, default_value_t = 20.0)]
    churn_rate: f64,
    /// Seconds of creates of each churn run (0 skips the section).
    #[arg(long, default_value_t = 60)]
    churn_secs: u64,
    /// The churn's near-maximum rate, Pods/s (default: a quarter of the phased floor's burst
    /// throughput; 0: none).
    #[arg(long)]
    churn_max_rate: Option<f64>,
    /// Seconds each churned main Pod lives before its delete.
    #[arg(long, default_value_t = 10.0)]
    churn_delete_after: f64,
    /// Run the admission section (Container mode's webhook).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    admission: bool,
    /// Also run Kyverno's rounds (`make bench-peers`): the directory of its binaries
    /// (`hack/peers.sh build`).
    #[arg(long, requires = "kyverno_crds")]
    kyverno_bin_dir: Option<PathBuf>,
    /// Kyverno's CRDs (`hack/peers.sh crds`).
    #[arg(long, requires = "kyverno_bin_dir")]
    kyverno_crds: Option<PathBuf>,
    /// Longest wait for any one step, seconds (default: 120 + N/10).
    #[arg(long)]
    timeout_secs: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let a = Args::parse();
    let mut cfg = Config::new(a.n);
    cfg.rounds = a.rounds;
    cfg.idle_secs = a.idle_secs;
    cfg.concurrency = a.concurrency;
    cfg.pod_events = a.pod_events;
    cfg.rollout_max_unavailable = a.max_unavailable;
    if let Some(kc) = a.kubeconfig {
        cfg.cluster = Cluster::Existing(kc);
    }
    if a.in_process {
        cfg.operator = OperatorMode::InProcess;
    } else if let Some(bin) = a.operator_bin {
        cfg.operator = OperatorMode::Process(bin);
    }
    if let Some(out) = a.out {
        cfg.out_dir = out;
    }
    cfg.timeout = a.timeout_secs.map(Duration::from_secs);
    cfg.repair_n = a.repair_n;
    cfg.cluster_namespaces = a.cluster_namespaces;
    cfg.admission = a.admission;
    if let (Some(bin_dir), Some(crds)) = (a.kyverno_bin_dir, a.kyverno_crds) {
        cfg.peers = Some(sidecar_bench::peers::KyvernoPaths { bin_dir, crds });
    }
    cfg.churn_rate = a.churn_rate;
    cfg.churn_secs = a.churn_secs;
    cfg.churn_max_rate = a.churn_max_rate;
    cfg.churn_delete_after = Duration::from_secs_f64(a.churn_delete_after.max(0.0));
    if a.admission_only {
        cfg.rounds = 0;
        cfg.repair_n = 0;
    }
    if a.repair_only {
        cfg.rounds = 0;
        cfg.admission = false;
    }

    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("sidecar-bench: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    // Interrupting drops the run: the operator child is killed, the control plane
    // stopped (their Drop implementations).
    tokio::select! {
        r = sidecar_bench::run(&cfg) => match r {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sidecar-bench: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ = int.recv() => { eprintln!("sidecar-bench: interrupted; stopping"); ExitCode::from(130) }
        _ = term.recv() => { eprintln!("sidecar-bench: terminated; stopping"); ExitCode::from(143) }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    #[test]
    fn a_flag_given_twice_keeps_its_last_value() {
        let a = super::Args::try_parse_from(["sidecar-bench", "--out", "a", "--out", "b"])
            .expect("BENCH_ARGS may repeat a flag of the Makefile's");
        assert_eq!(a.out.as_deref(), Some(std::path::Path::new("b")));
    }
}
