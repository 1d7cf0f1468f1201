//! A policy's status, computed from the cached Pods. Pure: the time is a parameter.
//!
//! Conditions keep their `lastTransitionTime` while their status does not change, so
//! a recomputation that changes nothing yields a status equal to the stored one and the
//! controller writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use sidecar_api::constants::{condition, condition_status, reason};
use sidecar_api::{Mode, SidecarPolicyStatus, UpdateStrategyType, ready_text};

use crate::eligibility::{Ineligible, eligibility};
use crate::injected::observe_injected;
use crate::naming::sidecar_name;
use crate::plan::Holder;
use crate::view::{PodView, PolicyView};

/// Problems the controller saw while applying plans for this policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems {
    /// The last refusal of a sidecar create by the API server (its message).
    pub refused: Option<String>,
    /// Names held by Pods that are not this policy's sidecars (see [`Observed::collisions`]).
    pub collisions: Vec<String>,
    /// Why the API server refuses a Pod built from the current template (server-side dry
    /// run; see [`crate::Verdict::problem`]): nothing is created while this is set.
    pub invalid_template: Option<String>,
    /// Sidecars that keep failing: replaced at least [`FAILING_AFTER`] times in a row and
    /// not Ready now (see [`crate::failing`]).
    pub failing: Vec<String>,
}

/// Counts behind the status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Eligible main Pods (pause ignored).
    pub matched: i32,
    /// Sidecars of this policy that exist and are not being deleted.
    pub sidecars: i32,
    /// Of those, built from the current template hash.
    pub updated: i32,
    /// Of those, Ready (any hash).
    pub ready: i32,
    /// Eligible main Pods whose sidecar exists, is up to date and Ready.
    pub converged: i32,
    /// Eligible main Pods whose sidecar exists and is Ready (any template hash).
    pub available: i32,
    /// Eligible main Pods without a sidecar.
    pub missing: i32,
    /// Sidecars counted in `sidecars` that ended `Failed` or `Succeeded` (being replaced).
    pub failed: i32,
}

/// What a policy's status is computed from: counts and the names held by other Pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The counts.
    pub counts: Counts,
    /// Sidecar names of eligible main Pods held by a Pod that is neither their sidecar nor
    /// a predecessor going away (see [`crate::holder`]); sorted. Computed from the caches
    /// at every status computation, so a collision clears as soon as the holder or the
    /// main Pod is gone.
    pub collisions: Vec<String>,
}

/// Counts for `policy` from the Pods of its namespace (`pods`; `by_name` looks one up by
/// name). Only the sidecar of a live, selected main Pod counts (one per main Pod, at its
/// deterministic name, owned by it): orphans and leftovers never inflate `sidecarPods` or
/// `readyPods`. A sidecar that ended `Failed`/`Succeeded` counts as neither ready nor up
/// to date. A Container-mode policy has no sidecar Pods: see [`observe_injected`].
pub fn observe<'a>(
    policy: &PolicyView,
    pods: impl IntoIterator<Item = &'a PodView>,
    by_name: impl Fn(&str) -> Option<&'a PodView>,
) -> Observed {
    if policy.mode() == Mode::Container {
        return observe_injected(policy, pods);
    }
    let mut o = Observed::default();
    let c = &mut o.counts;
    for m in pods {
        let eligible = match eligibility(m, policy) {
            Ok(()) => true,
            Err(Ineligible::Paused) => false,
            Err(_) => continue,
        };
        c.matched += 1;
        let name = sidecar_name(&m.name, &policy.name);
        let Some(s) = by_name(&name) else {
            c.missing += 1;
            continue;
        };
        match crate::plan::holder(m, &policy.name, s) {
            Holder::Ours if !s.deleting => {}
            Holder::Foreign if eligible => {
                o.collisions.push(name);
                c.missing += 1;
                continue;
            }
            _ => {
                c.missing += 1;
                continue;
            }
        }
        c.sidecars += 1;
        if s.terminal() {
            c.failed += 1;
            continue;
        }
        let current = s.template_hash() == Some(&policy.hash);
        c.updated += i32::from(current);
        if s.ready {
            c.ready += 1;
            c.available += 1;
            c.converged += i32::from(current);
        }
    }
    o.collisions.sort_unstable();
    o
}

fn cond(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok {
            condition_status::TRUE
        } else {
            condition_status::FALSE
        }
        .into(),
        reason: reason.into(),
        message,
        observed_generation: None,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

/// A condition's verdict: (status is True, reason, message).
type Verdict = (bool, &'static str, String);

/// `Ready`: every selected Pod has a Ready, up-to-date sidecar.
fn ready_verdict(policy: &PolicyView, c: Counts) -> Verdict {
    let tally = || match policy.mode() {
        Mode::Pod => format!(
            "{}/{} sidecars ready and up to date",
            c.converged, c.matched
        ),
        Mode::Container => format!(
            "{}/{} selected Pods ready with the current sidecar",
            c.converged, c.matched
        ),
    };
    if let Err(e) = &policy.selector {
        let message = format!("the operator cannot act on this policy: {e}");
        (false, reason::INVALID_SPEC, message)
    } else if c.matched == 0 {
        (true, reason::NO_MATCHING_PODS, "no Pod is selected".into())
    } else if c.converged == c.matched {
        (true, reason::ALL_SIDECARS_READY, tally())
    } else {
        (false, reason::SIDECARS_NOT_READY, tally())
    }
}

/// `Progressing`: the operator is creating or replacing sidecars (True), or why not.
fn progressing_verdict(policy: &PolicyView, c: Counts, problems: &Problems) -> Verdict {
    let stale = c.sidecars - c.updated - c.failed;
    let missing = c.missing;
    if policy.paused() {
        (false, reason::PAUSED, "the policy is paused".into())
    } else if policy.mode() == Mode::Container {
        injected_progress(c)
    } else if stale > 0 && policy.strategy() == UpdateStrategyType::OnDelete && missing == 0 {
        let message = format!(
            "{stale} sidecars run an older template; OnDelete replaces them when they are deleted"
        );
        (false, reason::WAITING_FOR_DELETE, message)
    } else if missing > 0 && problems.invalid_template.is_some() {
        let message = format!(
            "{missing} sidecars missing: the API server refuses the template (see Degraded)"
        );
        (false, reason::INVALID_TEMPLATE, message)
    } else if missing > 0 && problems.refused.is_some() {
        let message =
            format!("{missing} sidecars missing: the API server refuses them (see Degraded)");
        (false, reason::CREATE_REFUSED, message)
    } else if c.failed > 0 {
        let message = format!(
            "{} sidecars ended Failed or Succeeded and are being replaced; {missing} missing, {stale} to replace",
            c.failed
        );
        (true, reason::ROLLING_OUT, message)
    } else if missing > 0 || stale > 0 {
        let message = format!("{missing} sidecars missing, {stale} to replace");
        (true, reason::ROLLING_OUT, message)
    } else {
        let message = "every selected Pod has an up-to-date sidecar".into();
        (false, reason::CONVERGED, message)
    }
}

/// `Progressing` in Container mode: sidecars reach Pods only when they are created, so
/// nothing is in flight (`False`); the message says how many run without the current one.
fn injected_progress(c: Counts) -> Verdict {
    let without = c.matched - c.updated;
    if without > 0 {
        let message = format!(
            "{without} of {} selected Pods run without the current sidecar: Pods get it when \
             they are created",
            c.matched
        );
        (false, reason::WAITING_FOR_NEW_PODS, message)
    } else {
        let message = "every selected Pod runs the current sidecar".into();
        (false, reason::CONVERGED, message)
    }
}

/// `Degraded`: the most serious problem seen (invalid spec, invalid template, refused
/// creates, failing sidecars, name collisions), or none.
fn degraded_verdict(policy: &PolicyView, problems: &Problems) -> Verdict {
    if let Err(e) = &policy.selector {
        (true, reason::INVALID_SPEC, e.clone())
    } else if let Some(msg) = &problems.invalid_template {
        (true, reason::INVALID_TEMPLATE, msg.clone())
    } else if let Some(msg) = &problems.refused {
        let message = format!("the API server refused a sidecar: {msg}");
        (true, reason::CREATE_REFUSED, message)
    } else if !problems.failing.is_empty() {
        let message = format!(
            "sidecars keep ending Failed or Succeeded and are replaced with a growing delay: {}",
            problems.failing.join(", ")
        );
        (true, reason::SIDECARS_FAILING, message)
    } else if !problems.collisions.is_empty() && policy.mode() == Mode::Container {
        let message = format!(
            "selected Pods already had a container or volume of a name this policy adds, so \
             its sidecars were not injected into them: {}; rename the template's or the Pod's",
            problems.collisions.join(", ")
        );
        (true, reason::NAME_COLLISION, message)
    } else if !problems.collisions.is_empty() {
        let message = format!(
            "Pods not managed by this policy hold sidecar names: {}; rename or delete them",
            problems.collisions.join(", ")
        );
        (true, reason::NAME_COLLISION, message)
    } else {
        (false, reason::AS_EXPECTED, "no problem seen".into())
    }
}

/// `Paused`: `spec.paused`.
fn paused_verdict(policy: &PolicyView) -> Verdict {
    if policy.paused() {
        let message = "spec.paused is true: nothing is created or deleted".into();
        (true, reason::PAUSED, message)
    } else {
        (false, reason::ACTIVE, "the policy is active".into())
    }
}

/// `Stalled` (kstatus): a problem that no retry fixes stands between the policy and
/// convergence — an invalid spec; an invalid template while a sidecar is missing or stale;
/// refused creates while a sidecar is missing; a name collision — with `Degraded`'s reason
/// and message for it. A refusal or template problem with nothing left to create is not
/// stalled (the Pod it concerned went), nor are failing sidecars (replaced with backoff).
fn stalled_verdict(policy: &PolicyView, c: Counts, problems: &Problems) -> Verdict {
    let stale = c.sidecars - c.updated - c.failed;
    let cleared = Problems {
        invalid_template: problems
            .invalid_template
            .clone()
            .filter(|_| c.missing > 0 || stale > 0),
        refused: problems.refused.clone().filter(|_| c.missing > 0),
        failing: Vec::new(),
        collisions: problems.collisions.clone(),
    };
    let (stuck, reason, message) = degraded_verdict(policy, &cleared);
    if stuck {
        (true, reason, message)
    } else {
        let message = "nothing stops progress".into();
        (false, reason::AS_EXPECTED, message)
    }
}

/// `Reconciling` (kstatus): `True` while sidecars are being created, replaced or waited
/// for (`Progressing`'s reason and message, or the sidecars not Ready yet); `False` once
/// converged, paused, stalled, or waiting for the user (`OnDelete`).
fn reconciling_verdict(c: Counts, progressing: &Verdict, stalled: &Verdict) -> Verdict {
    let (moving, reason, message) = progressing;
    if stalled.0 {
        let message = "stalled (see Stalled)".into();
        (false, stalled.1, message)
    } else if *moving {
        (true, reason, message.clone())
    } else if *reason == reason::CONVERGED && c.converged < c.matched {
        let message = format!(
            "waiting for sidecars to be Ready: {}/{} ready and up to date",
            c.converged, c.matched
        );
        (true, reason::SIDECARS_NOT_READY, message)
    } else {
        (false, reason, message.clone())
    }
}

/// The status for `policy`, given its counts, the problems seen, the stored status and now.
pub fn compute_status(
    policy: &PolicyView,
    c: Counts,
    problems: &Problems,
    old: Option<&SidecarPolicyStatus>,
    now: Time,
) -> SidecarPolicyStatus {
    let progressing = progressing_verdict(policy, c, problems);
    let degraded = degraded_verdict(policy, problems);
    let stalled = stalled_verdict(policy, c, problems);
    let reconciling = reconciling_verdict(c, &progressing, &stalled);
    let verdicts = [
        (condition::READY, ready_verdict(policy, c)),
        (condition::PROGRESSING, progressing),
        (condition::DEGRADED, degraded),
        (condition::PAUSED, paused_verdict(policy)),
        (condition::RECONCILING, reconciling),
        (condition::STALLED, stalled),
    ];
    let conditions = verdicts
        .into_iter()
        .map(|(type_, (ok, reason, message))| {
            let mut c = cond(type_, ok, reason, message);
            c.observed_generation = Some(policy.generation);
            let prev = old.and_then(|o| o.conditions.iter().find(|p| p.type_ == c.type_));
            c.last_transition_time = match prev {
                Some(p) if p.status == c.status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            c
        })
        .collect();
    SidecarPolicyStatus {
        observed_generation: Some(policy.generation),
        template_hash: Some(policy.hash.clone()),
        matched_pods: c.matched,
        sidecar_pods: c.sidecars,
        updated_pods: c.updated,
        ready_pods: c.ready,
        ready: Some(ready_text(c.ready, c.matched)),
        conditions,
    }
}
