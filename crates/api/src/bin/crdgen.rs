//! Prints a CRD as YAML: `crdgen [sidecarpolicies]` the content of
//! `crds/sidecarpolicies.sidecars.dev.yaml`, `crdgen clustersidecarpolicies` that of
//! `crds/clustersidecarpolicies.sidecars.dev.yaml` (`make crds` writes both).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let which = std::env::args().nth(1);
    let yaml = match which.as_deref() {
        None | Some("sidecarpolicies") => sidecar_api::crd_yaml(),
        Some("clustersidecarpolicies") => sidecar_api::cluster_crd_yaml(),
        Some(other) => {
            eprintln!(
                "crdgen: unknown CRD {other:?}: say sidecarpolicies or clustersidecarpolicies"
            );
            return ExitCode::FAILURE;
        }
    };
    let yaml = match yaml {
        Ok(yaml) => yaml,
        Err(err) => {
            eprintln!("crdgen: {err}");
            return ExitCode::FAILURE;
        }
    };
    match std::io::stdout().lock().write_all(yaml.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("crdgen: writing stdout: {err}");
            ExitCode::FAILURE
        }
    }
}
