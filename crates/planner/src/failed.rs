//! Sidecars that end `Failed` or `Succeeded`: when to replace them, and when a pair
//! "keeps failing". Like a DaemonSet's failed Pods: replaced at once the first time, then
//! with a delay that doubles per replacement in a row, so a sidecar that fails as soon as
//! it starts never becomes a hot loop. Time is a parameter.

use std::time::Duration;

use crate::view::PodView;

/// Replacements in a row after which a pair counts as "keeps failing" (`Degraded`).
pub const FAILING_AFTER: u32 = 2;

/// A pair not replaced for this long starts again from an immediate replacement.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(600);

/// Longest delay between two replacements of one pair.
pub const MAX_REPLACEMENT_DELAY: Duration = Duration::from_secs(300);

/// The delay before the replacement that follows `count` replacements in a row:
/// none, then 1 s, 2 s, 4 s … up to [`MAX_REPLACEMENT_DELAY`].
pub fn replacement_delay(count: u32) -> Duration {
    match count {
        0 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 1).min(16)).min(MAX_REPLACEMENT_DELAY),
    }
}

/// Whether a failed sidecar replaced `count` times in a row, the last one `since_last`
/// ago, is replaced now: `Ok(count after this replacement)`, or `Err(time left to wait)`.
pub fn failed_replacement(count: u32, since_last: Duration) -> Result<u32, Duration> {
    let count = if since_last >= FAILURE_MEMORY {
        0
    } else {
        count
    };
    let delay = replacement_delay(count);
    if since_last >= delay {
        Ok(count.saturating_add(1))
    } else {
        Err(delay - since_last)
    }
}

/// The sidecars among `replaced` (sidecar name → replacements in a row) that keep
/// failing: replaced at least [`FAILING_AFTER`] times and not running Ready now
/// (`current` looks a sidecar up by name). Sorted.
pub fn failing<'a, N: AsRef<str>>(
    replaced: impl IntoIterator<Item = (N, u32)>,
    current: impl Fn(&str) -> Option<&'a PodView>,
) -> Vec<String> {
    let mut out: Vec<String> = replaced
        .into_iter()
        .filter(|(name, n)| {
            *n >= FAILING_AFTER
                && !current(name.as_ref()).is_some_and(|s| s.ready && !s.terminal() && !s.deleting)
        })
        .map(|(name, _)| name.as_ref().to_string())
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Phase;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn replacements_back_off_and_are_forgotten() {
        // (replacements so far, time since the last, expected)
        let cases = [
            (0, S(0), Ok(1)),
            (1, S(0), Err(S(1))),
            (1, S(1), Ok(2)),
            (2, S(1), Err(S(1))),
            (2, S(2), Ok(3)),
            (5, S(10), Err(S(6))),
            (9, S(200), Err(S(56))),
            (20, S(299), Err(S(1))),
            (20, S(300), Ok(21)),
            (20, FAILURE_MEMORY, Ok(1)),
        ];
        for (count, since, want) in cases {
            assert_eq!(
                failed_replacement(count, since),
                want,
                "{count} replacements, last {since:?} ago"
            );
        }
        assert_eq!(replacement_delay(u32::MAX), MAX_REPLACEMENT_DELAY);
    }

    #[test]
    fn a_pair_keeps_failing_until_its_sidecar_runs_ready() {
        let view = |name: &str, phase: Phase, ready: bool| PodView {
            name: name.into(),
            phase,
            ready,
            ..PodView::default()
        };
        let pods = [
            view("a", Phase::Failed, false),
            view("b", Phase::Running, true),
            view("c", Phase::Pending, false),
            view("e", Phase::Running, true),
        ];
        let find = |n: &str| pods.iter().find(|p| p.name == n);
        let replaced = [("a", 2), ("b", 5), ("c", 3), ("d", 2), ("e", 1), ("f", 1)];
        // a: failed again; c: not ready yet; d: missing (waiting for its delay).
        assert_eq!(failing(replaced, find), ["a", "c", "d"]);
    }
}
