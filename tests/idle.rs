//! "Idle: no writes" checks: what an operator instance sent while nothing changed.

use std::time::Duration;

use sidecar_controller::{ApiCalls, Operator};

/// One line of an operator's API calls: `get=… list=… watch=… create=… delete=… patch=…
/// update=… events=…`.
pub fn describe_calls(c: &ApiCalls) -> String {
    format!(
        "get={} list={} watch={} create={} delete={} patch={} update={} events={}",
        c.get, c.list, c.watch, c.create, c.delete, c.patch, c.update, c.events
    )
}

/// The counters of an operator instance at the start of an idle period; [`IdleCheck::
/// assert_no_writes`] at its end asserts that it sent no write, no Event and no status
/// write in between.
#[derive(Debug)]
pub struct IdleCheck {
    calls: ApiCalls,
    status_writes: u64,
    reconciles: (u64, u64),
}

impl IdleCheck {
    /// Takes the counters of `op` now.
    pub fn start(op: &Operator) -> IdleCheck {
        IdleCheck {
            calls: op.api_calls(),
            status_writes: op.metrics().status_writes.get(),
            reconciles: reconciles(op),
        }
    }

    /// The (Pod, policy) reconciles of `op` since [`IdleCheck::start`].
    pub fn reconciles_since(&self, op: &Operator) -> (u64, u64) {
        let (pod, policy) = reconciles(op);
        (pod - self.reconciles.0, policy - self.reconciles.1)
    }

    /// Prints what `op` sent since [`IdleCheck::start`] (tagged `[tag]`, over `idle`) and
    /// asserts that none of it was a write, an Event or a status write; returns the calls.
    pub fn assert_no_writes(&self, op: &Operator, tag: &str, idle: Duration) -> ApiCalls {
        let calls = op.api_calls().since(&self.calls);
        let status_writes = op.metrics().status_writes.get() - self.status_writes;
        eprintln!(
            "[{tag}] idle {}s: {}; status writes {status_writes}",
            idle.as_secs(),
            describe_calls(&calls)
        );
        assert_eq!(calls.writes(), 0, "no write while idle: {calls:?}");
        assert_eq!(calls.events, 0, "no Event while idle: {calls:?}");
        assert_eq!(status_writes, 0, "no status write while idle");
        calls
    }
}

/// The (Pod, policy) reconciles of `op` so far.
fn reconciles(op: &Operator) -> (u64, u64) {
    let m = op.metrics();
    (m.reconcile_count("pod"), m.reconcile_count("policy"))
}
