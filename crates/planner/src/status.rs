//! A policy's status, computed from the cached Pods. Pure: the time is a parameter.
//!
//! Conditions keep their `lastTransitionTime` while their status does not change, so
//! a recomputation that changes nothing yields a status equal to the stored one and the
//! controller writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use sidecar_api::constants::{condition, condition_status, reason};
use sidecar_api::{Mode, PolicyDrift, SidecarPolicyStatus, UpdateStrategyType, ready_text};

use crate::eligibility::{Ineligible, eligibility};
use crate::injected::observe_injected;
use crate::naming::sidecar_name;
use crate::plan::Holder;
use crate::repair::Drift;
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
    /// Container mode: the selected Pods without the current sidecars (see
    /// [`Observed::drifted`]).
    pub drifted: Vec<(String, Drift)>,
    /// Container mode: the repair, as its last step saw it.
    pub repair: RepairSeen,
    /// Pods left to policies that outrank this one (see [`Observed::conflicts`]).
    pub conflicts: Vec<(String, String)>,
    /// Container mode: selected Pods created without the sidecars because their namespace
    /// would have refused them with them (see [`Observed::refused`]).
    pub refused_by_namespace: Vec<(String, String)>,
    /// Container mode: namespaces whose admission refuses a Pod with the current sidecars,
    /// per the dry run of [`crate::injection_probe`], with the API server's message.
    pub injection_refused: Vec<(String, String)>,
}

/// Container mode's repair as the controller last saw it (from [`crate::plan_repair`], and
/// the last PodDisruptionBudget refusal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairSeen {
    /// updateStrategy RollingUpdate is in effect.
    pub active: bool,
    /// RollingUpdate was asked for in a namespace the webhook never serves.
    pub unserved: bool,
    /// RollingUpdate was asked for in a namespace that refuses Pods with the sidecars.
    pub refused: bool,
    /// Evictions whose replacements are not Ready with the sidecars yet.
    pub in_flight: u32,
    /// Evictable drifted Pods waiting for the budget.
    pub waiting: u32,
    /// `maxUnavailable`, resolved.
    pub max_unavailable: u32,
    /// A replacement that came up without the sidecars (the webhook is not injecting).
    pub halted: Option<String>,
    /// The last eviction the API server refused (a PodDisruptionBudget's 429, or another
    /// error), while its backoff runs: `pod: the API server's message`.
    pub blocked: Option<String>,
    /// Drifted Pods nothing would recreate (never evicted).
    pub unowned: Vec<String>,
    /// Evictions whose replacement is missing or not selected (see [`crate::Stall`]).
    pub stalled: Vec<crate::Stall>,
}

impl RepairSeen {
    /// From one repair step, with the PodDisruptionBudget refusal still in effect.
    pub fn of(step: &crate::Repair, blocked: Option<String>) -> RepairSeen {
        RepairSeen {
            active: step.active,
            unserved: step.unserved,
            refused: step.refused,
            in_flight: step.in_flight + u32::try_from(step.evict.len()).unwrap_or(u32::MAX),
            waiting: step.waiting,
            max_unavailable: step.max_unavailable,
            halted: step.halted.clone(),
            blocked: blocked.filter(|_| step.active),
            unowned: step.unowned.clone(),
            stalled: step.stalled.clone(),
        }
    }
}

/// Most drifted Pods named in `status.drift.pods`.
pub const DRIFT_NAMES: usize = 20;

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

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.matched += o.matched;
        self.sidecars += o.sidecars;
        self.updated += o.updated;
        self.ready += o.ready;
        self.converged += o.converged;
        self.available += o.available;
        self.missing += o.missing;
        self.failed += o.failed;
    }
}

impl Problems {
    /// Adds what one namespace of a ClusterSidecarPolicy (`ns`, its instance there) saw: the
    /// names it reports become `ns/name`, and the first message of each kind is kept, naming
    /// its namespace. Counts of the repair add up.
    pub fn absorb(&mut self, ns: &str, o: Problems) {
        let named = |v: Vec<String>| v.into_iter().map(move |n| format!("{ns}/{n}"));
        let said = |m: Option<String>| m.map(|m| format!("in namespace {ns}: {m}"));
        if self.refused.is_none() {
            self.refused = said(o.refused);
        }
        if self.invalid_template.is_none() {
            self.invalid_template = said(o.invalid_template);
        }
        self.collisions.extend(named(o.collisions));
        self.failing.extend(named(o.failing));
        self.drifted
            .extend(o.drifted.into_iter().map(|(n, d)| (format!("{ns}/{n}"), d)));
        let (r, x) = (&mut self.repair, o.repair);
        r.active |= x.active;
        r.unserved |= x.unserved;
        r.refused |= x.refused;
        r.in_flight += x.in_flight;
        r.waiting += x.waiting;
        r.max_unavailable += x.max_unavailable;
        if r.halted.is_none() {
            r.halted = said(x.halted);
        }
        if r.blocked.is_none() {
            r.blocked = said(x.blocked);
        }
        r.unowned.extend(named(x.unowned));
        r.stalled
            .extend(x.stalled.into_iter().map(|s| crate::Stall {
                pod: format!("{ns}/{}", s.pod),
                why: s.why,
            }));
        self.refused_by_namespace.extend(o.refused_by_namespace);
        self.injection_refused.extend(o.injection_refused);
        self.conflicts.extend(
            o.conflicts
                .into_iter()
                .map(|(p, w)| (format!("{ns}/{p}"), w)),
        );
    }
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
    /// Container mode: the selected Pods that are missing or outdated, sorted by name.
    pub drifted: Vec<(String, Drift)>,
    /// Selected Pods left to a policy that outranks this one (see [`PolicyView::outranks`]):
    /// `(pod, winner's id)`, sorted. Such Pods are not counted as matched.
    pub conflicts: Vec<(String, String)>,
    /// Container mode: the selected Pods the webhook created without the sidecars because
    /// their namespace would have refused them with them: `(namespace, pod)`, sorted.
    pub refused: Vec<(String, String)>,
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
    observe_among(policy, &[], pods, by_name)
}

/// [`observe`], with `rivals` the other policies of the namespace: in Pod mode, a main Pod
/// for which a rival that outranks `policy` wants the same sidecar name is the rival's (see
/// [`crate::plan::conflict_winner`]); it goes to [`Observed::conflicts`], not to the counts.
/// In Container mode the Pods themselves record the conflicts the webhook decided.
pub fn observe_among<'a>(
    policy: &PolicyView,
    rivals: &[&PolicyView],
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
        if let Some(w) = crate::plan::conflict_winner(m, policy, rivals) {
            o.conflicts.push((m.name.clone(), w.name.clone()));
            continue;
        }
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

/// `Ready`: every selected Pod has a Ready, up-to-date sidecar — or the operator has done
/// all it will do without the user (`progressing` says it waits for Pods or sidecars to be
/// deleted or recreated: OnDelete, or Pods no controller recreates) and every sidecar there
/// is Ready. kstatus reads `Ready` when `Reconciling` and `Stalled` are `False`, so
/// report-only drift reads `Current` to GitOps tools rather than `InProgress` forever; the
/// drift stays in `Progressing`, `status.drift` and the metric.
fn ready_verdict(policy: &PolicyView, c: Counts, progressing: &Verdict) -> Verdict {
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
    } else if let Some(waiting) = waiting_for_user(policy, c, progressing) {
        let message = format!(
            "{}; the rest waits for you, not for the operator (see Progressing and status.drift)",
            tally()
        );
        (true, waiting, message)
    } else {
        (false, reason::SIDECARS_NOT_READY, tally())
    }
}

/// The reason the operator waits for the user, when it has nothing left to do itself and
/// every sidecar that exists is Ready (see [`ready_verdict`]).
fn waiting_for_user(policy: &PolicyView, c: Counts, progressing: &Verdict) -> Option<&'static str> {
    let (moving, why, _) = progressing;
    let report_only = !moving
        && [
            reason::WAITING_FOR_DELETE,
            reason::WAITING_FOR_NEW_PODS,
            reason::NOT_EVICTABLE,
        ]
        .contains(why);
    let all_ready = match policy.mode() {
        Mode::Pod => c.missing == 0 && c.ready == c.sidecars,
        Mode::Container => c.available == c.sidecars,
    };
    (report_only && all_ready && !policy.paused()).then_some(*why)
}

/// `Progressing`: the operator is creating or replacing sidecars (True), or why not.
fn progressing_verdict(policy: &PolicyView, c: Counts, problems: &Problems) -> Verdict {
    let stale = c.sidecars - c.updated - c.failed;
    let missing = c.missing;
    if policy.paused() {
        (false, reason::PAUSED, "the policy is paused".into())
    } else if policy.mode() == Mode::Container {
        injected_progress(c, problems)
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

/// Up to [`DRIFT_NAMES`] names, and how many more.
fn some_names<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let n = names.len();
    let shown: Vec<&str> = names.take(DRIFT_NAMES).collect();
    match n.saturating_sub(DRIFT_NAMES) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// `Progressing` in Container mode. Sidecars reach Pods when they are created; what runs
/// without the current ones is reported, and evicted only with RollingUpdate (`True` while
/// that repair has work: evictions in flight, waiting, or blocked by a budget).
fn injected_progress(c: Counts, problems: &Problems) -> Verdict {
    let without = c.matched - c.updated;
    let repair = &problems.repair;
    if without <= 0 && repair.in_flight == 0 {
        let message = "every selected Pod runs the current sidecar".into();
        return (false, reason::CONVERGED, message);
    }
    let outdated = c.sidecars - c.updated;
    let names = some_names(problems.drifted.iter().map(|(n, _)| n.as_str()));
    let refused = i32::try_from(problems.refused_by_namespace.len()).unwrap_or(i32::MAX);
    let mut whys = Vec::new();
    match c.missing - refused {
        m if m <= 0 => {}
        m if outdated == 0 && refused == 0 => whys.push(format!(
            "{m} not injected: created while the webhook was unavailable or before the policy"
        )),
        m => whys.push(format!(
            "{m} not injected (created while the webhook was unavailable or before the policy)"
        )),
    }
    if refused > 0 {
        whys.push(format!(
            "{refused} left without it because their namespace would refuse them with it (see \
             Degraded)"
        ));
    }
    if outdated > 0 {
        whys.push(format!("{outdated} injected from an older template"));
    }
    let why = whys.join(", ");
    let tally = format!(
        "{without} of {} selected Pods run without the current sidecar ({why})",
        c.matched
    );
    let unowned = if repair.unowned.is_empty() {
        String::new()
    } else {
        format!(
            "; not evicted, since no controller would recreate them: {}",
            some_names(repair.unowned.iter().map(String::as_str))
        )
    };
    if without <= 0 {
        let message = format!(
            "every selected Pod runs the current sidecar; waiting for {} evicted Pods' \
             replacements to be Ready with it",
            repair.in_flight
        );
        (true, reason::REPAIRING, message)
    } else if repair.unserved {
        let message = format!(
            "{tally}: {names}; RollingUpdate evicts nothing in this namespace: the webhook never \
             serves it, so no replacement would get the sidecar"
        );
        (false, reason::WAITING_FOR_NEW_PODS, message)
    } else if repair.refused {
        let message = format!(
            "{tally}: {names}; RollingUpdate evicts nothing where the namespace refuses Pods with \
             the sidecars: the replacements would come without them (see Degraded)"
        );
        (false, reason::NOT_EVICTABLE, message)
    } else if !repair.active {
        let message = format!(
            "{tally}: {names}; they get it when they are recreated (spec.updateStrategy type \
             RollingUpdate with allowEviction: true evicts them)"
        );
        (false, reason::WAITING_FOR_NEW_PODS, message)
    } else if let Some(pod) = &repair.halted {
        let message = format!(
            "{tally}; eviction stopped: {pod} replaced an evicted Pod without the sidecar (see \
             Degraded)"
        );
        (false, reason::WEBHOOK_NOT_INJECTING, message)
    } else if let Some(stall) = repair.stalled.first() {
        let more = match repair.stalled.len() - 1 {
            0 => String::new(),
            n => format!(" ({n} more evictions stalled)"),
        };
        match &stall.why {
            crate::StallReason::NotCreated => (
                false,
                reason::REPLACEMENT_NOT_CREATED,
                format!(
                    "{tally}; Pod {} was evicted and its controller has not created a \
                     replacement (its creates refused? see its events, e.g. FailedCreate): \
                     nothing more of that workload is evicted, and its budget stays held until \
                     the replacement is there{more}",
                    stall.pod
                ),
            ),
            crate::StallReason::NotSelected(new) => (
                false,
                reason::REPLACEMENT_NOT_SELECTED,
                format!(
                    "{tally}; Pod {} was evicted and its controller replaced it with {new}, \
                     which this policy does not select (labels set after admission?): that \
                     workload is not repaired, as evicting more of it would never bring the \
                     sidecar{more}",
                    stall.pod
                ),
            ),
        }
    } else if let Some(refusal) = repair.blocked.as_ref().filter(|_| repair.waiting > 0) {
        let message = format!(
            "{tally}; the API server refused an eviction (a PodDisruptionBudget, or see the \
             message), retried with backoff: {refusal}"
        );
        (true, reason::EVICTION_BLOCKED, message)
    } else if repair.in_flight > 0 || repair.waiting > 0 {
        let message = format!(
            "{tally}: evicting them for their controllers to recreate, at most {} unavailable \
             at once: {} evicted and awaiting a Ready replacement with it, {} waiting{unowned}",
            repair.max_unavailable, repair.in_flight, repair.waiting
        );
        (true, reason::REPAIRING, message)
    } else {
        // What is left is never evicted: no controller would recreate it, or its
        // replacement would collide again.
        let mut kept = Vec::new();
        if !repair.unowned.is_empty() {
            let pods = some_names(repair.unowned.iter().map(String::as_str));
            kept.push(format!(
                "no controller would recreate {pods} (delete and recreate them)"
            ));
        }
        if !problems.collisions.is_empty() {
            let pods = some_names(problems.collisions.iter().map(String::as_str));
            kept.push(format!(
                "{pods} already have a name this policy adds, and their replacements would too \
                 (see Degraded)"
            ));
        }
        let message = format!("{tally}: {names}; none is evicted: {}", kept.join("; "));
        (false, reason::NOT_EVICTABLE, message)
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
    } else if let Some(pod) = problems
        .repair
        .halted
        .as_ref()
        .filter(|_| problems.repair.active)
    {
        let message = format!(
            "Pod {pod} replaced a Pod evicted to get the current sidecar, but came up without it: \
             the admission webhook did not inject it (is the operator's webhook running and \
             reachable from the API server?); eviction stops, but for a probe after 1 minute, then 2, 4... up to 60, until a \
             replacement has it"
        );
        (true, reason::WEBHOOK_NOT_INJECTING, message)
    } else if !problems.refused_by_namespace.is_empty() || !problems.injection_refused.is_empty() {
        (
            true,
            reason::NAMESPACE_REFUSES_INJECTION,
            namespace_refusal(policy, problems),
        )
    } else if !problems.failing.is_empty() {
        let message = format!(
            "sidecars keep ending Failed or Succeeded and are replaced with a growing delay: {}",
            some_names(problems.failing.iter().map(String::as_str))
        );
        (true, reason::SIDECARS_FAILING, message)
    } else if !problems.collisions.is_empty() && policy.mode() == Mode::Container {
        let message = format!(
            "selected Pods already had a container or volume of a name this policy adds, so \
             its sidecars were not injected into them: {}; rename the template's or the Pod's",
            some_names(problems.collisions.iter().map(String::as_str))
        );
        (true, reason::NAME_COLLISION, message)
    } else if !problems.collisions.is_empty() {
        let message = format!(
            "Pods not managed by this policy hold sidecar names: {}; rename or delete them",
            some_names(problems.collisions.iter().map(String::as_str))
        );
        (true, reason::NAME_COLLISION, message)
    } else {
        (false, reason::AS_EXPECTED, "no problem seen".into())
    }
}

/// Most namespaces named in a condition message.
const NAMESPACE_NAMES: usize = 20;

/// `Degraded`'s message when namespaces would refuse the sidecars: which namespaces (at most
/// [`NAMESPACE_NAMES`]), how many Pods each, and what the template fails of the Pod Security
/// Standards (the Pods' creation warnings and `NotInjected` Events quote each refusal).
fn namespace_refusal(policy: &PolicyView, problems: &Problems) -> String {
    let mut by_ns: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (ns, _) in &problems.injection_refused {
        by_ns.entry(ns.as_str()).or_default();
    }
    for (ns, pod) in &problems.refused_by_namespace {
        by_ns.entry(ns.as_str()).or_default().push(pod.as_str());
    }
    let shown: Vec<String> = by_ns
        .iter()
        .take(NAMESPACE_NAMES)
        .map(|(ns, pods)| {
            let first = pods.first().copied().unwrap_or_default();
            match pods.len() {
                0 => ns.to_string(),
                1 => format!("{ns} (Pod {first})"),
                n => format!("{ns} ({n} Pods, e.g. {first})"),
            }
        })
        .collect();
    let more = match by_ns.len().saturating_sub(NAMESPACE_NAMES) {
        0 => String::new(),
        n => format!(" and {n} more namespaces"),
    };
    let template = match problems.injection_refused.first() {
        // The API server's own words, for the first namespace.
        Some((ns, message)) => format!(
            " (a server-side dry run of a Pod with the sidecars in {ns} was refused: {message})"
        ),
        None => crate::pod_security::template_hint(&policy.policy.spec.template),
    };
    format!(
        "namespaces would refuse selected Pods with this policy's sidecars, so the webhook \
         created them without: {}{more}{template}; the Pods' creation warnings and NotInjected \
         Events quote each refusal; make the template comply (or change the namespace): new Pods \
         get the sidecars once it does",
        shown.join(", ")
    )
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
        drifted: Vec::new(),
        repair: problems.repair.clone(),
        conflicts: Vec::new(),
        refused_by_namespace: problems.refused_by_namespace.clone(),
        injection_refused: problems.injection_refused.clone(),
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

/// `status.drift`: Container mode, when some selected Pod lacks the current sidecars or an
/// eviction is in flight.
fn drift(policy: &PolicyView, c: Counts, problems: &Problems) -> Option<PolicyDrift> {
    let outdated = c.sidecars - c.updated;
    let evicting = i32::try_from(problems.repair.in_flight).unwrap_or(i32::MAX);
    if policy.mode() != Mode::Container || c.missing + outdated + evicting == 0 {
        return None;
    }
    let refused = i32::try_from(problems.refused_by_namespace.len()).unwrap_or(i32::MAX);
    Some(PolicyDrift {
        missing_pods: c.missing - refused,
        refused_pods: refused,
        outdated_pods: outdated,
        evicting_pods: evicting,
        pods: problems
            .drifted
            .iter()
            .take(DRIFT_NAMES)
            .map(|(n, d)| format!("{n} ({})", d.as_str()))
            .collect(),
    })
}

/// Most namespaces listed in `status.injectionRefusedIn`.
pub const REFUSED_NAMESPACES: usize = 500;

/// `status.injectionRefusedIn`: the namespaces whose admission refuses the current
/// sidecars, sorted, at most [`REFUSED_NAMESPACES`]; `None` when there is none.
fn injection_refused_in(problems: &Problems) -> Option<Vec<String>> {
    let mut out: Vec<String> = problems
        .injection_refused
        .iter()
        .map(|(ns, _)| ns.clone())
        .collect();
    out.sort_unstable();
    out.dedup();
    out.truncate(REFUSED_NAMESPACES);
    (!out.is_empty()).then_some(out)
}

/// `Conflicted`: which Pods the policy leaves to policies that outrank it, and to which.
fn conflicted_verdict(problems: &Problems) -> Verdict {
    let Some((_, first)) = problems.conflicts.first() else {
        return (
            false,
            reason::NO_CONFLICT,
            "no policy outranks this one on its Pods".into(),
        );
    };
    let mut winners: Vec<&str> = problems.conflicts.iter().map(|(_, w)| w.as_str()).collect();
    winners.sort_unstable();
    winners.dedup();
    let others = winners.len() - 1;
    let pods = some_names(problems.conflicts.iter().map(|(p, _)| p.as_str()));
    let and_others = match others {
        0 => String::new(),
        n => format!(" (and {n} other policies)"),
    };
    (
        true,
        reason::CONFLICT,
        format!(
            "{}{and_others} gives {} selected Pods the same sidecar Pod name or injects the same \
             container or volume name, and outranks this policy (spec.priority, then SidecarPolicy \
             before ClusterSidecarPolicy, then name): those Pods are left to it: {pods}",
            crate::cluster::describe(first),
            problems.conflicts.len(),
        ),
    )
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
        (condition::READY, ready_verdict(policy, c, &progressing)),
        (condition::PROGRESSING, progressing),
        (condition::DEGRADED, degraded),
        (condition::PAUSED, paused_verdict(policy)),
        (condition::RECONCILING, reconciling),
        (condition::STALLED, stalled),
    ];
    // Conflicted appears once a conflict does, and stays (False) once it is over.
    let had_conflict = old.is_some_and(|o| {
        o.conditions
            .iter()
            .any(|c| c.type_ == condition::CONFLICTED)
    });
    let conflicted = (!problems.conflicts.is_empty() || had_conflict)
        .then(|| (condition::CONFLICTED, conflicted_verdict(problems)));
    let conditions = verdicts
        .into_iter()
        .chain(conflicted)
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
        drift: drift(policy, c, problems),
        injection_refused_in: injection_refused_in(problems),
        conditions,
    }
}
