//! The write gate: "this instance may write until instant T".
//!
//! Leader election opens the gate up to the renew deadline of its last successful
//! renewal (measured from *before* that renewal was sent); every request the operator's
//! client sends passes through [`crate::counting_client`]'s layer, which refuses a write
//! (create, delete, patch, update) locally, without sending it, once the gate is closed
//! or its deadline has passed. The check reads the monotonic clock at the moment the
//! request enters the client, so it needs no timer to fire: a process that was frozen
//! (SIGSTOP, a stalled VM, a long GC-like pause) and resumes after its deadline cannot
//! send a single write, even before its own timers have caught up.
//!
//! Why this is enough: a standby takes a Lease over only after it has seen the Lease
//! record unchanged for the full lease duration, counted on its own clock from the moment
//! it observed the record. The leader's last renewal was stored after the leader started
//! sending it, so the standby's count starts later than the leader's; with
//! `renew deadline < lease duration`, the leader's gate closes at least
//! `lease duration − renew deadline` before any standby may act (that margin absorbs
//! clock-rate differences and a write already on the wire).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter as PromCounter;
use tokio::sync::Notify;

/// Nanoseconds since `base`; `0` means closed.
#[derive(Debug)]
struct Inner {
    base: Instant,
    until: AtomicU64,
    changed: Notify,
    fenced: PromCounter,
}

/// Shared "writes allowed until" instant; cheap to clone. See the module docs.
///
/// Instants are [`tokio::time::Instant`]s: the monotonic clock in production (it keeps
/// counting while the process is stopped), the paused clock in unit tests.
#[derive(Debug, Clone)]
pub struct WriteGate(Arc<Inner>);

impl Default for WriteGate {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteGate {
    /// A closed gate (no write passes until [`WriteGate::open_until`]).
    pub fn new() -> Self {
        WriteGate(Arc::new(Inner {
            // Leave room below `now` so that `open_until(now)` is never the "closed" zero.
            base: Instant::now()
                .checked_sub(Duration::from_secs(1))
                .unwrap_or_else(Instant::now),
            until: AtomicU64::new(0),
            changed: Notify::new(),
            fenced: PromCounter::default(),
        }))
    }

    /// Allows writes until `until` (replaces any earlier deadline, later or not).
    pub fn open_until(&self, until: Instant) {
        let nanos = until
            .checked_duration_since(self.0.base)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        self.0.until.store(nanos, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }

    /// Refuses writes from now on.
    pub fn close(&self) {
        self.0.until.store(0, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }

    /// The instant writes stop being allowed; `None` when closed.
    pub fn valid_until(&self) -> Option<Instant> {
        match self.0.until.load(Ordering::SeqCst) {
            0 => None,
            n => Some(self.0.base + Duration::from_nanos(n)),
        }
    }

    /// Writes are allowed at `now`.
    pub fn allows_at(&self, now: Instant) -> bool {
        self.valid_until().is_some_and(|t| now < t)
    }

    /// Writes are allowed right now (reads the clock).
    pub fn is_open(&self) -> bool {
        self.allows_at(Instant::now())
    }

    /// Writes the gate refused (the `writes_fenced` metric).
    pub fn fenced(&self) -> PromCounter {
        self.0.fenced.clone()
    }

    /// Resolves once the gate is open.
    pub async fn opened(&self) {
        loop {
            let notified = self.0.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_open() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once the gate is closed: closed explicitly, or its deadline passed without
    /// a renewal. (After a freeze this fires late; the request layer does not depend on it.)
    pub async fn closed(&self) {
        loop {
            let notified = self.0.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some(until) = self.valid_until().filter(|t| Instant::now() < *t) else {
                return;
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

/// A write refused by the [`WriteGate`]: never sent to the API server.
#[derive(Debug, thiserror::Error)]
#[error(
    "write not sent: this instance's leadership lapsed (the Lease was not renewed within the renew deadline)"
)]
pub struct Fenced;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_read_from_the_clock_not_from_timers() {
        let g = WriteGate::new();
        let t0 = Instant::now();
        assert!(!g.allows_at(t0), "a new gate is closed");
        g.open_until(t0 + Duration::from_secs(4));
        assert!(g.allows_at(t0));
        assert!(g.allows_at(t0 + Duration::from_millis(3999)));
        assert!(
            !g.allows_at(t0 + Duration::from_secs(4)),
            "deadline is exclusive"
        );
        assert!(!g.allows_at(t0 + Duration::from_secs(60)), "frozen past it");
        g.open_until(t0 + Duration::from_secs(8));
        assert!(
            g.allows_at(t0 + Duration::from_secs(5)),
            "a renewal extends it"
        );
        g.close();
        assert!(!g.allows_at(t0));
        assert_eq!(g.valid_until(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_resolves_at_the_deadline_and_on_close() {
        let g = WriteGate::new();
        g.open_until(Instant::now() + Duration::from_secs(4));
        let t0 = tokio::time::Instant::now();
        g.closed().await;
        assert!(t0.elapsed() >= Duration::from_secs(4));

        g.open_until(Instant::now() + Duration::from_secs(60));
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.closed().await });
        tokio::task::yield_now().await;
        g.close();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("closed() resolves on close()")
            .expect("task");
    }
}
