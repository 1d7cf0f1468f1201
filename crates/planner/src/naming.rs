//! Deterministic sidecar names.
//!
//! The sidecar of main Pod `M` for policy `P` is named `M-P` (for ClusterSidecarPolicy `P`,
//! whose id is `csp/P`: `M-csp-P`). When that is longer than 63
//! characters (the limit of a DNS label, so the name also works as a hostname and a label
//! value), it is cut to 54 characters (trailing `-` and `.` removed) and suffixed with
//! `-` and 8 hex characters of SHA-256(`M` NUL `P`), so distinct long pairs keep distinct
//! names. Because the name is a pure function of the pair, a repeated create yields
//! `AlreadyExists` instead of a duplicate.
//!
//! Short names can still collide (`a-b` + `c` and `a` + `b-c` both give `a-b-c`), and
//! any user may create a Pod of that name. The planner detects a name held by a Pod that
//! is not this pair's sidecar and reports it instead of touching it.

use sha2::{Digest as _, Sha256};

/// Longest sidecar name.
pub const MAX_NAME: usize = 63;
const HASH_LEN: usize = 8;

/// The sidecar name for main Pod `main` and policy `policy`.
pub fn sidecar_name(main: &str, policy: &str) -> String {
    // A ClusterSidecarPolicy's id `csp/{name}` gives `M-csp-{name}`.
    let full = format!("{main}-{}", policy.replace('/', "-"));
    if full.len() <= MAX_NAME {
        return full;
    }
    let mut h = Sha256::new();
    h.update(main.as_bytes());
    h.update([0u8]);
    h.update(policy.as_bytes());
    let digest = h.finalize();
    let hex: String = digest
        .iter()
        .take(HASH_LEN / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    // Names are ASCII (DNS subdomains), so byte slicing is on char boundaries.
    let cut = MAX_NAME - HASH_LEN - 1;
    let prefix = full
        .get(..cut)
        .unwrap_or(&full)
        .trim_end_matches(['-', '.']);
    format!("{prefix}-{hex}")
}
