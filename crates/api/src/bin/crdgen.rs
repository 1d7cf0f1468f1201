//! Prints the `SidecarPolicy` CRD as YAML: the content of `crds/sidecarpolicies.sidecars.dev.yaml`.
//!
//! Usage: `cargo run -q -p sidecar-api --bin crdgen > crds/sidecarpolicies.sidecars.dev.yaml`

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match sidecar_api::crd_yaml() {
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
