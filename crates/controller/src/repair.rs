//! Container mode's repair, applied: one step of [`sidecar_planner::plan_repair`] is sent
//! as evictions (the Eviction API, so every PodDisruptionBudget holds), each with a uid
//! precondition and a Normal Event on the Pod. What was sent is remembered (see
//! [`RepairMemory`]) until the replacement is Ready with the sidecars. A budget's refusal
//! (429) stops the step and is retried with backoff, shown in status and as a Warning Event;
//! a repair's start and end are Normal Events on the policy.

use std::time::{Duration, Instant};

use futures::StreamExt as _;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, EvictParams, Preconditions};
use sidecar_api::constants::reason;
use sidecar_planner::{Evict, Repair, RepairLimits, SentEviction};

use crate::context::Context;
use crate::keys::PolicyKey;

/// How long a sent eviction is remembered at most without a Ready replacement. Past the
/// replacement deadline (see [`crate::OperatorConfig::replacement_deadline`]) one with no
/// replacement halts its workload's repair and keeps holding the budget (an owner that
/// still wants the replica must not lose another); one whose owner has no Pod left is done
/// (scaled to zero, deleted). This bound only keeps the memory finite.
pub(crate) const SENT_MEMORY: Duration = Duration::from_secs(6 * 3600);
/// While replacements come up without the sidecars (the webhook is not injecting), one
/// eviction (a probe) is tried after this long, then after twice as long each time the probe
/// halts the repair again, up to [`HALTED_RETRY_MAX`]: a real outage costs a few Pods an
/// hour, not one a minute.
pub(crate) const HALTED_RETRY: Duration = Duration::from_secs(60);
pub(crate) const HALTED_RETRY_MAX: Duration = Duration::from_secs(3600);
/// Backoff after a PodDisruptionBudget refused an eviction: doubled per refusal in a row.
const BLOCKED_FIRST: Duration = Duration::from_secs(2);
const BLOCKED_MAX: Duration = Duration::from_secs(60);

/// What the operator remembers of one policy's repair between steps.
#[derive(Debug, Default)]
pub(crate) struct RepairMemory {
    /// Evictions sent, with when.
    sent: Vec<(SentEviction, Instant)>,
    /// The last refusal by a budget: message, when to retry, refusals in a row.
    blocked: Option<(String, Instant, u32)>,
    /// The last step was halted (a replacement without the sidecars) by the eviction of
    /// this uid.
    halting: Option<String>,
    /// That eviction was just forgotten: the next step may send one probe.
    probe_due: bool,
    /// Halts in a row (each a probe whose replacement came without the sidecars too).
    halts: u32,
    /// A repair is under way (its start was announced).
    started: bool,
}

impl RepairMemory {
    /// The evictions still remembered at `now`, forgetting the expired ones: after
    /// [`SENT_MEMORY`], and the halting one after [`HALTED_RETRY`] (a probe is then due).
    pub(crate) fn sent(&mut self, now: Instant, deadline: Duration) -> Vec<SentEviction> {
        let halting = self.halting.clone();
        let retry = self.halted_retry();
        let mut probe = false;
        self.sent.retain(|(e, at)| {
            let age = now.duration_since(*at);
            let halted_out = halting.as_deref() == Some(e.uid.as_str()) && age >= retry;
            probe |= halted_out;
            age < SENT_MEMORY && !halted_out
        });
        self.probe_due |= probe;
        self.sent
            .iter()
            .map(|(e, at)| SentEviction {
                overdue: now.duration_since(*at) >= deadline,
                ..e.clone()
            })
            .collect()
    }

    /// How long the halting eviction waits before a probe: [`HALTED_RETRY`], doubled per halt
    /// in a row after the first, at most [`HALTED_RETRY_MAX`].
    fn halted_retry(&self) -> Duration {
        HALTED_RETRY
            .saturating_mul(1 << self.halts.saturating_sub(1).min(6))
            .min(HALTED_RETRY_MAX)
    }

    /// The limits of the next step at `now`, in a namespace the webhook serves or not.
    pub(crate) fn limits(&self, served: bool, now: Instant) -> RepairLimits {
        RepairLimits {
            served,
            probe: self.probe_due,
            blocked: self.blocked(now).is_some(),
            refused: false,
        }
    }

    /// The refusal in effect at `now` (its message), if its backoff still runs.
    pub(crate) fn blocked(&self, now: Instant) -> Option<String> {
        self.blocked
            .as_ref()
            .filter(|(_, until, _)| *until > now)
            .map(|(m, _, _)| m.clone())
    }

    /// When the repair must look again by itself, with no Pod event to wake it: a budget's
    /// backoff ends, or a sent eviction is forgotten (see [`RepairMemory::sent`]).
    fn next_check(&self, now: Instant, deadline: Duration) -> Option<Duration> {
        let blocked = self.blocked.as_ref().map(|(_, until, _)| *until);
        let forgotten = self.sent.iter().map(|(e, at)| {
            let keep = if self.halting.as_deref() == Some(e.uid.as_str()) {
                self.halted_retry()
            } else {
                SENT_MEMORY
            };
            *at + keep
        });
        // An eviction turning overdue may halt its workload's repair.
        let overdue = self.sent.iter().map(|(_, at)| *at + deadline);
        blocked
            .into_iter()
            .chain(forgotten)
            .chain(overdue)
            .filter(|at| *at > now)
            .min()
            .map(|at| at - now)
    }

    /// The step was planned: forget what it found done, remember whether it was halted.
    /// Returns the announcement due: `Some(true)` a repair starts, `Some(false)` it ended.
    fn planned(&mut self, step: &Repair) -> Option<bool> {
        self.sent.retain(|(e, _)| !step.done.contains(&e.uid));
        self.halts = match (&self.halting, &step.halting) {
            (_, None) => 0,
            (prev, Some(uid)) if prev.as_ref() != Some(uid) => self.halts.saturating_add(1),
            _ => self.halts,
        };
        self.halting = step.halting.clone();
        self.probe_due = false;
        if !step.active {
            // Turned off (OnDelete, paused): it ends without completing.
            self.started = false;
            return None;
        }
        match (self.started, step.working()) {
            (false, true) if !step.evict.is_empty() => {
                self.started = true;
                Some(true)
            }
            (true, false) => {
                self.started = false;
                Some(false)
            }
            _ => None,
        }
    }
}

/// Sends the step's evictions; announces a repair's start and end.
pub(crate) async fn apply(ctx: &Context, key: &PolicyKey, step: Repair) {
    if step.active && step.working() {
        tracing::debug!(namespace = %key.0, policy = %key.1, evict = step.evict.len(), in_flight = step.in_flight, waiting = step.waiting, max_unavailable = step.max_unavailable, halted = ?step.halted, "repair step");
    }
    if !step.active {
        // Nothing to repair (Pod mode, OnDelete, paused...): nothing is kept for it, and
        // what a repair turned off remembered is dropped.
        ctx.policy_state.peek_repair(key, |m| m.planned(&step));
        return;
    }
    let announce = ctx.policy_state.with_repair(key, |m| m.planned(&step));
    match announce {
        Some(true) => ctx.notice_policy(
            key,
            reason::REPAIRING,
            "Evict",
            &format!(
                "Evicting selected Pods that run without the current sidecar, at most {} unavailable at once, so that their controllers recreate them with it",
                step.max_unavailable
            ),
        ),
        Some(false) => ctx.notice_policy(
            key,
            reason::REPAIRED,
            "Evict",
            "Every selected Pod a controller owns runs the current sidecar again",
        ),
        None => {}
    }
    send(ctx, key, step).await;
    // Each run arms the next deadline itself: a delayed add due sooner (a debounced status
    // run) supersedes a later one, and that run comes back here.
    if let Some(wait) = ctx.policy_state.with_repair(key, |m| {
        m.next_check(Instant::now(), ctx.repair.replacement_deadline)
    }) {
        ctx.queues.policies.add_after(key.clone(), wait);
    }
}

/// Sends the step's evictions (none while a budget's refusal backs off).
async fn send(ctx: &Context, key: &PolicyKey, step: Repair) {
    if ctx
        .policy_state
        .with_repair(key, |m| m.blocked(Instant::now()))
        .is_some()
    {
        return;
    }
    let api: Api<Pod> = Api::namespaced(ctx.evictions.clone(), &key.0);
    // The step is within the budget already: its evictions go concurrently.
    let sent: Vec<(Evict, Sent)> = futures::stream::iter(step.evict)
        .map(|e| async {
            let r = evict(ctx, &api, key, &e).await;
            (e, r)
        })
        .buffer_unordered(EVICTIONS_IN_FLIGHT)
        .collect()
        .await;
    let mut refusal = None;
    for (e, r) in sent {
        match r {
            // Remembered only while the policy exists (a policy deleted meanwhile was
            // forgotten; nothing is kept for it again).
            Sent::Done if ctx.caches.policies().get(key).is_some() => {
                ctx.policy_state.with_repair(key, |m| {
                    m.sent.push((e.sent(), Instant::now()));
                });
            }
            Sent::Done => {}
            Sent::Gone => {}
            Sent::Refused(message) => {
                refusal.get_or_insert((e.name, message));
            }
        }
    }
    match refusal {
        Some((pod, message)) => blocked(ctx, key, &pod, &message),
        None => ctx.policy_state.with_repair(key, |m| m.blocked = None),
    }
}

/// Concurrent evictions of one repair step.
const EVICTIONS_IN_FLIGHT: usize = 16;

/// The API server refused evicting `pod` (a budget's 429, or another error): back off and
/// say so; `apply` arms the retry.
fn blocked(ctx: &Context, key: &PolicyKey, pod: &str, message: &str) {
    let delay = ctx.policy_state.with_repair(key, |m| {
        let n = m.blocked.as_ref().map_or(0, |b| b.2) + 1;
        let delay = BLOCKED_FIRST
            .saturating_mul(1 << (n - 1).min(6))
            .min(BLOCKED_MAX);
        m.blocked = Some((format!("{pod}: {message}"), Instant::now() + delay, n));
        delay
    });
    ctx.warn_policy(
        key,
        reason::EVICTION_BLOCKED,
        "Evict",
        &format!(
            "The API server refused evicting Pod {pod} ({message}); retrying in {} s",
            delay.as_secs()
        ),
    );
    // Its status shows the refusal now; the retry after the backoff is armed by `apply`.
    ctx.queues.policies.add(key.clone());
}

/// What one eviction came to.
enum Sent {
    /// Accepted: the Pod is being deleted.
    Done,
    /// The Pod was gone, or is another Pod by now (uid precondition).
    Gone,
    /// Refused: by a PodDisruptionBudget (429), or for another reason (RBAC, a Pod under
    /// several budgets, a server error), which backs off the same way and is shown in status
    /// rather than failing the policy's reconcile and its status with it.
    Refused(String),
}

async fn evict(ctx: &Context, api: &Api<Pod>, key: &PolicyKey, e: &Evict) -> Sent {
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(e.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        }),
        ..EvictParams::default()
    };
    match api.evict(&e.name, &params).await {
        Ok(_) => {
            ctx.metrics.evicted("evicted");
            tracing::info!(namespace = %key.0, pod = %e.name, policy = %key.1, drift = e.drift.as_str(), "evicted Pod for its sidecars");
            let pod = OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: e.name.clone(),
                uid: e.uid.clone(),
                ..OwnerReference::default()
            };
            ctx.events.on_main(
                Some(&pod),
                &key.0,
                reason::EVICTED,
                "Evict",
                format!(
                    "Evicted so that its controller recreates it with the current sidecars of SidecarPolicy {} ({})",
                    key.1,
                    match e.drift {
                        sidecar_planner::Drift::Missing => "it was created without them",
                        sidecar_planner::Drift::Outdated => "it has an older template's",
                        sidecar_planner::Drift::Refused => "its namespace refused them",
                    }
                ),
            );
            Sent::Done
        }
        Err(kube::Error::Api(s)) if s.code == 429 => {
            ctx.metrics.evicted("blocked");
            Sent::Refused(format!(
                "a PodDisruptionBudget does not allow it now: {}",
                s.message
            ))
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            ctx.metrics.evicted("gone");
            Sent::Gone
        }
        Err(err) => {
            tracing::warn!(namespace = %key.0, pod = %e.name, policy = %key.1, error = %err, "eviction failed");
            ctx.metrics.evicted("error");
            Sent::Refused(match err {
                kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
                other => other.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;

    fn sent(uid: &str) -> SentEviction {
        SentEviction {
            name: uid.into(),
            overdue: false,
            uid: uid.into(),
            owner_uid: "rs".into(),
            siblings: Arc::new(BTreeSet::new()),
        }
    }

    #[test]
    fn the_next_check_is_the_earliest_deadline_and_halting_shortens_the_memory() {
        let t0 = Instant::now();
        let long = SENT_MEMORY * 2;
        let mut m = RepairMemory::default();
        assert_eq!(m.next_check(t0, long), None, "nothing to wait for");
        m.sent.push((sent("a"), t0));
        assert_eq!(m.next_check(t0, long), Some(SENT_MEMORY));
        // The replacement deadline wakes the repair too: a stall is seen without a Pod event.
        let deadline = Duration::from_secs(120);
        assert_eq!(m.next_check(t0, deadline), Some(deadline));
        m.blocked = Some(("web-0: no".into(), t0 + Duration::from_secs(4), 2));
        assert_eq!(m.next_check(t0, long), Some(Duration::from_secs(4)));
        assert_eq!(m.blocked(t0).as_deref(), Some("web-0: no"));
        assert_eq!(m.blocked(t0 + Duration::from_secs(5)), None, "backoff over");
        m.blocked = None;
        m.sent.push((sent("b"), t0));
        m.halting = Some("a".into());
        assert_eq!(m.next_check(t0, long), Some(HALTED_RETRY));
        assert!(!m.limits(true, t0).probe);
        let left = m.sent(t0 + HALTED_RETRY, long);
        assert_eq!(
            left.iter().map(|e| e.uid.as_str()).collect::<Vec<_>>(),
            ["b"],
            "only the halting eviction is forgotten after a minute"
        );
        assert!(m.limits(true, t0).probe, "and one probe is then due");
    }

    #[test]
    fn probes_of_a_halted_repair_back_off_to_an_hour() {
        let mut m = RepairMemory::default();
        let halted = |uid: &str| Repair {
            active: true,
            halted: Some("web-x".into()),
            halting: Some(uid.into()),
            ..Repair::default()
        };
        let mut delays = Vec::new();
        for i in 0..9 {
            m.planned(&halted(&format!("u{i}")));
            delays.push(m.halted_retry().as_secs());
        }
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        // The same halt seen again is no new one; a step that is not halted starts over.
        m.planned(&halted("u8"));
        assert_eq!(m.halted_retry().as_secs(), 3600);
        m.planned(&Repair {
            active: true,
            ..Repair::default()
        });
        assert_eq!(m.halted_retry(), HALTED_RETRY);
    }

    #[test]
    fn an_eviction_turns_overdue_at_the_deadline_and_is_remembered_long_after() {
        let t0 = Instant::now();
        let deadline = Duration::from_secs(120);
        let mut m = RepairMemory::default();
        m.sent.push((sent("a"), t0));
        let overdue = |m: &mut RepairMemory, at: Duration| {
            m.sent(t0 + at, deadline)
                .iter()
                .map(|e| e.overdue)
                .collect::<Vec<_>>()
        };
        assert_eq!(overdue(&mut m, Duration::from_secs(60)), [false]);
        assert_eq!(overdue(&mut m, deadline), [true]);
        // Ten minutes no longer forget it: its budget stays held.
        assert_eq!(overdue(&mut m, Duration::from_secs(601)), [true]);
        assert_eq!(overdue(&mut m, SENT_MEMORY), Vec::<bool>::new());
    }

    #[test]
    fn a_repair_is_announced_once_when_it_starts_and_once_when_it_ends() {
        let mut m = RepairMemory::default();
        let working = Repair {
            active: true,
            evict: vec![Evict {
                name: "web-0".into(),
                uid: "u0".into(),
                drift: sidecar_planner::Drift::Missing,
                owner_uid: "rs".into(),
                siblings: Arc::new(BTreeSet::new()),
            }],
            ..Repair::default()
        };
        let waiting = Repair {
            active: true,
            in_flight: 1,
            ..Repair::default()
        };
        let idle = Repair {
            active: true,
            ..Repair::default()
        };
        assert_eq!(m.planned(&idle), None, "nothing to repair: no announcement");
        assert_eq!(m.planned(&working), Some(true));
        assert_eq!(m.planned(&waiting), None);
        assert_eq!(m.planned(&idle), Some(false));
        assert_eq!(m.planned(&idle), None);
        // Turned off mid-way: no completion is claimed.
        assert_eq!(m.planned(&working), Some(true));
        assert_eq!(m.planned(&Repair::default()), None);
        assert_eq!(m.planned(&idle), None);
    }
}
