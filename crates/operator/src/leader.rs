//! Leader election on a `coordination.k8s.io` Lease, in the design of client-go's
//! `leaderelection` package:
//!
//! - Every retry period each candidate reads the Lease. The holder renews it (a `PUT`
//!   carrying the `resourceVersion` it read, so a concurrent change makes it fail with 409);
//!   a standby takes it over only once it has seen the same version of the Lease for a
//!   whole lease duration, counted on its own clock from the moment it first read that
//!   version (no comparison of wall clocks between machines).
//! - The leader may write only until `renew deadline` after it *started* its last
//!   successful renewal ([`WriteGate`]); `renew deadline < lease duration`, so it stops
//!   before any standby can have taken over, whether or not it can reach the API server,
//!   and whether or not its own timers have fired (see `sidecar_controller::WriteGate`).
//! - A Lease write is sent only on a fresh read: if more than a retry period passed
//!   between reading the Lease and the write (the process was frozen, the API server
//!   slow), it reads again instead. So a process resumed after a freeze does not write
//!   the Lease on the strength of what it read before.
//!
//! The decision itself is the pure function [`decide`].

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use prometheus_client::metrics::gauge::Gauge;
use sidecar_controller::WriteGate;
use tokio::time::Instant;

/// The three durations of leader election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A standby takes over a Lease whose record it has seen unchanged this long.
    pub lease_duration: Duration,
    /// The leader stops writing this long after it started its last successful renewal.
    pub renew_deadline: Duration,
    /// Time between two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Timing {
    /// From the command-line values (seconds); the defaults keep client-go's ratios
    /// (15 s / 10 s / 2 s): renew deadline ⅔ and retry period 2/15 of the lease duration.
    pub fn from_secs(
        lease_duration: u64,
        renew_deadline: Option<f64>,
        retry_period: Option<f64>,
    ) -> Result<Timing, String> {
        if lease_duration < 2 {
            return Err(format!(
                "--lease-duration is {lease_duration} s; use at least 2 (default 15)"
            ));
        }
        let lease = Duration::from_secs(lease_duration);
        let secs = |flag: &str, v: f64| -> Result<Duration, String> {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{flag} is {v}; use a positive number of seconds"))
        };
        let renew = match renew_deadline {
            Some(v) => secs("--lease-renew-deadline", v)?,
            None => lease * 2 / 3,
        };
        let retry = match retry_period {
            Some(v) => secs("--lease-retry-period", v)?,
            None => lease * 2 / 15,
        };
        if renew >= lease {
            return Err(format!(
                "--lease-renew-deadline ({} s) must be shorter than --lease-duration ({} s): the leader must stop writing before a standby may take over; lower it (default: two thirds of the lease duration)",
                renew.as_secs_f64(),
                lease.as_secs_f64()
            ));
        }
        if retry >= renew {
            return Err(format!(
                "--lease-retry-period ({} s) must be shorter than --lease-renew-deadline ({} s), or the leader cannot renew in time; lower it (default: 2/15 of the lease duration)",
                retry.as_secs_f64(),
                renew.as_secs_f64()
            ));
        }
        Ok(Timing {
            lease_duration: lease,
            renew_deadline: renew,
            retry_period: retry,
        })
    }
}

/// What a candidate does with the Lease it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// There is no Lease: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Free (released) or expired: take it over.
    Take,
    /// Another candidate holds it and it has not expired: stand by.
    Wait,
}

/// The decision, from the Lease as read (`None`: it does not exist), our identity, and how
/// long (on our own clock) we have seen this exact version of it. A Lease whose record
/// names no duration expires after `fallback`.
pub fn decide(
    lease: Option<&LeaseSpec>,
    me: &str,
    unchanged_for: Duration,
    fallback: Duration,
) -> Step {
    let Some(spec) = lease else {
        return Step::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => Step::Renew,
        None | Some("") => Step::Take,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(fallback, Duration::from_secs);
            if unchanged_for >= duration {
                Step::Take
            } else {
                Step::Wait
            }
        }
    }
}

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    gate: WriteGate,
    leader: Gauge,
    /// `resourceVersion` of the Lease as last read, and when we first read that version.
    observed: Option<(String, Instant)>,
}

/// Result of one attempt.
enum Held {
    Yes,
    No,
    /// The read was too old to act on; nothing was written.
    Stale,
}

impl Elector {
    /// A candidate that opens `gate` while it holds the Lease and sets `leader` to 1.
    pub fn new(
        api: Api<Lease>,
        name: &str,
        identity: &str,
        timing: Timing,
        gate: WriteGate,
        leader: Gauge,
    ) -> Elector {
        Elector {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            gate,
            leader,
            observed: None,
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != rv) {
            self.observed = Some((rv, Instant::now()));
        }
    }

    fn params() -> PostParams {
        PostParams {
            field_manager: Some(sidecar_api::constants::FIELD_MANAGER.into()),
            ..PostParams::default()
        }
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Reads the Lease, then creates, renews, takes over or waits.
    async fn attempt(&mut self) -> Result<Held, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let read_at = Instant::now();
        let now = MicroTime(Timestamp::now());
        let step = match &current {
            None => Step::Create,
            Some(lease) => {
                self.observe(lease);
                let unchanged_for = self
                    .observed
                    .as_ref()
                    .map(|(_, at)| at.elapsed())
                    .unwrap_or_default();
                let spec = lease.spec.clone().unwrap_or_default();
                decide(
                    Some(&spec),
                    &self.identity,
                    unchanged_for,
                    self.timing.lease_duration,
                )
            }
        };
        if step == Step::Wait {
            return Ok(Held::No);
        }
        // Never write on the strength of an old read (a freeze between read and write).
        if read_at.elapsed() >= self.timing.retry_period {
            return Ok(Held::Stale);
        }
        let result = match (step, current) {
            (Step::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(self.duration_secs()),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&Self::params(), &lease).await
            }
            (step, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if step == Step::Take {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.renew_time = Some(now);
                spec.lease_duration_seconds = Some(self.duration_secs());
                // Carries the resourceVersion read: a concurrent change fails with 409.
                self.api.replace(&self.name, &Self::params(), &lease).await
            }
        };
        match result {
            Ok(lease) => {
                self.observe(&lease);
                Ok(Held::Yes)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Held::No),
            Err(e) => Err(e),
        }
    }

    /// Competes for the Lease until `stop` fires, keeping the write gate open exactly
    /// while it holds it; then releases the Lease if it still holds it.
    pub async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        loop {
            let started = Instant::now();
            let was_leading = self.gate.is_open();
            let attempt = tokio::time::timeout(self.timing.renew_deadline, self.attempt());
            let result = tokio::select! {
                r = attempt => r,
                _ = &mut stop => break,
            };
            match result {
                Ok(Ok(Held::Yes)) => {
                    self.gate.open_until(started + self.timing.renew_deadline);
                    if !was_leading {
                        tracing::info!(identity = %self.identity, lease = %self.name, "acquired the Lease");
                    }
                }
                Ok(Ok(Held::No)) => {
                    if was_leading {
                        tracing::warn!(identity = %self.identity, lease = %self.name, "another instance holds the Lease now");
                    }
                    self.gate.close();
                }
                Ok(Ok(Held::Stale)) => {
                    tracing::warn!(lease = %self.name, "the Lease read is too old to act on (was this process frozen?); reading it again");
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.name, error = %e, "reading or writing the Lease failed; retrying (a leader stops writing at its renew deadline)");
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "a Lease request took longer than the renew deadline; retrying");
                }
            }
            self.leader.set(i64::from(self.gate.is_open()));
            // A leader wakes at its deadline at the latest, so that it notices the lapse.
            let mut wake = Instant::now() + self.timing.retry_period;
            if let Some(until) = self.gate.valid_until().filter(|_| self.gate.is_open()) {
                wake = wake.min(until);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = &mut stop => break,
            }
        }
        self.release().await;
        self.leader.set(0);
    }

    /// Gives the Lease up (holder cleared, duration 1 s) so that a standby takes over at
    /// once; only while the write gate is still open, i.e. while it is surely ours.
    async fn release(&mut self) {
        let ours = self.gate.is_open();
        self.gate.close();
        if !ours {
            return;
        }
        let mut lease = match self.api.get_opt(&self.name).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reading the Lease to release it failed; it expires on its own");
                return;
            }
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(&self.name, &Self::params(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.name, "released the Lease"),
            Err(e) => {
                tracing::warn!(error = %e, "releasing the Lease failed; it expires on its own");
            }
        }
    }
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
