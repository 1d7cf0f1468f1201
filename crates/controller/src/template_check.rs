//! The API server's verdict on each policy's template, from one server-side dry run per
//! template hash (see [`sidecar_planner::template_check`]). The pod controller creates a
//! policy's sidecars only once its current template is accepted (Container-mode policies,
//! whose template is not a Pod, are not checked); a template the namespace
//! refuses (Pod Security, quota, LimitRange) is checked again with a growing delay, so
//! fixing the namespace is enough.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use sidecar_api::Mode;
use sidecar_api::constants::{FIELD_MANAGER, reason};
use sidecar_planner::{PolicyView, Verdict, dry_run_sidecar, injection_probe, recheck_delay};

use crate::Error;
use crate::context::Context;
use crate::keys::PolicyKey;

/// The last verdict on one policy's template.
#[derive(Debug)]
pub(crate) struct Checked {
    hash: String,
    verdict: Verdict,
    /// Namespace refusals in a row (for the recheck delay).
    refusals: u32,
    /// When a namespace refusal is checked again.
    recheck_at: Option<Instant>,
}

/// Verdicts by policy.
#[derive(Debug, Default)]
pub(crate) struct TemplateChecks(HashMap<PolicyKey, Checked>);

/// May sidecars of template `hash` of policy `key` be created?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Accepted by the API server.
    Open,
    /// Refused.
    Closed,
    /// Not checked yet.
    Unknown,
}

impl TemplateChecks {
    pub(crate) fn gate(&self, key: &PolicyKey, hash: &str) -> Gate {
        match self.0.get(key) {
            Some(c) if c.hash == hash && c.verdict == Verdict::Accepted => Gate::Open,
            Some(c) if c.hash == hash => Gate::Closed,
            _ => Gate::Unknown,
        }
    }

    /// Whether the current template needs a (new) dry run at `now`: `Ok(())` if so,
    /// `Err(Some(wait))` for a namespace refusal to check again later, `Err(None)` when
    /// the verdict stands.
    fn due(&self, key: &PolicyKey, hash: &str, now: Instant) -> Result<(), Option<Duration>> {
        match self.0.get(key) {
            Some(c) if c.hash == hash => match c.recheck_at {
                Some(t) if now >= t => Ok(()),
                Some(t) => Err(Some(t - now)),
                None => Err(None),
            },
            _ => Ok(()),
        }
    }

    /// The problem to report for the current template, if refused.
    pub(crate) fn problem(&self, key: &PolicyKey, hash: &str) -> Option<String> {
        self.0
            .get(key)
            .filter(|c| c.hash == hash)
            .and_then(|c| c.verdict.problem())
    }

    pub(crate) fn forget(&mut self, key: &PolicyKey) {
        self.0.remove(key);
    }

    /// Records a verdict; returns whether it changed what is known of this template.
    fn record(
        &mut self,
        key: &PolicyKey,
        hash: &str,
        verdict: Verdict,
        now: Instant,
        accepted_again: Option<Duration>,
    ) -> (bool, u32) {
        let prev = self.0.get(key).filter(|c| c.hash == hash);
        let changed = prev.is_none_or(|c| c.verdict != verdict);
        let again = rechecked(&verdict);
        let refusals = match (again, prev) {
            (true, Some(c)) => c.refusals.saturating_add(1),
            (true, None) => 1,
            (false, _) => 0,
        };
        let recheck_at = if again {
            Some(now + recheck_delay(refusals))
        } else {
            accepted_again.map(|d| now + d)
        };
        self.0.insert(
            key.clone(),
            Checked {
                hash: hash.to_string(),
                verdict,
                refusals,
                recheck_at,
            },
        );
        (changed, refusals)
    }
}

/// Checks `policy`'s template with the API server when it is new to the operator (or a
/// namespace refusal is due for a recheck). On acceptance, the policy's main Pods are
/// reconciled (their creates waited for it); on refusal, a Warning event, and for a
/// namespace refusal a recheck later.
pub(crate) async fn check_template(
    ctx: &Context,
    key: &PolicyKey,
    policy: &PolicyView,
) -> Result<(), Error> {
    if !wants_check(policy) {
        return Ok(());
    }
    let now = Instant::now();
    let due = ctx.policy_state.templates().due(key, &policy.hash, now);
    match due {
        Ok(()) => {}
        // Not due yet: ask again for the recheck (the queue keeps one deadline per key,
        // the earliest, so an earlier run, such as a debounced status, superseded it).
        Err(Some(wait)) => {
            ctx.queues.policies.add_after(key.clone(), wait);
            return Ok(());
        }
        Err(None) => return Ok(()),
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.0);
    let pp = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    if policy.mode() == Mode::Container {
        return check_injection(ctx, key, policy, &api, &pp, now).await;
    }
    let answer = api.create(&pp, &dry_run_sidecar(policy)).await;
    // The server names the generated Pod; one name stands for all, so that rechecks of
    // one refusal say the same thing (one status write, one event).
    let message = match &answer {
        Err(kube::Error::Api(s)) => scrub_generated_name(&s.message, &dry_run_prefix(policy)),
        _ => String::new(),
    };
    let refusal = match &answer {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some((s.code, message.as_str())),
        Err(_) => Some((0, "")),
    };
    let Some(verdict) = Verdict::of(refusal) else {
        return match answer {
            Err(e) => Err(Error::CheckTemplate {
                name: key.1.clone(),
                source: e,
            }),
            Ok(_) => Ok(()),
        };
    };
    let problem = verdict.problem();
    let accepted = verdict == Verdict::Accepted;
    let changed = record(ctx, key, &policy.hash, verdict, now, None);
    if !changed {
        return Ok(());
    }
    match problem {
        None => {
            tracing::info!(namespace = %key.0, policy = %key.1, hash = %policy.hash, "the API server accepts the template");
        }
        Some(message) => {
            tracing::warn!(namespace = %key.0, policy = %key.1, hash = %policy.hash, %message, "the API server refuses the template");
            ctx.warn_policy(key, reason::INVALID_TEMPLATE, "CheckTemplate", &message);
        }
    }
    // The creates that waited for the verdict go ahead.
    if accepted {
        ctx.trigger_selected(policy);
    }
    Ok(())
}

/// Container mode: dry-runs [`injection_probe`]'s Pods, without and with the sidecars; a
/// refusal with them only is recorded (the status then lists the namespace, and every
/// webhook replica creates Pods there without the sidecars) and checked again with a growing
/// delay, as is a stand-in the namespace refuses even without them (no verdict).
async fn check_injection(
    ctx: &Context,
    key: &PolicyKey,
    policy: &PolicyView,
    api: &Api<Pod>,
    pp: &PostParams,
    now: Instant,
) -> Result<(), Error> {
    let (without, with) = injection_probe(policy);
    let prefix = without.metadata.generate_name.clone().unwrap_or_default();
    let refusal = |answer: &Result<Pod, kube::Error>| match answer {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(s)) => Ok(Some((s.code, scrub_generated_name(&s.message, &prefix)))),
        Err(_) => Err(()),
    };
    let answers = (api.create(pp, &without).await, api.create(pp, &with).await);
    let (Ok(a), Ok(b)) = (refusal(&answers.0), refusal(&answers.1)) else {
        let err = match answers {
            (Err(e), _) | (_, Err(e)) => e,
            _ => return Ok(()),
        };
        return Err(Error::CheckTemplate {
            name: key.1.clone(),
            source: err,
        });
    };
    fn as_ref(r: &Option<(u16, String)>) -> Option<(u16, &str)> {
        r.as_ref().map(|(c, m)| (*c, m.as_str()))
    }
    let Some(verdict) = Verdict::of_injection(as_ref(&a), as_ref(&b)) else {
        // Nothing said (the namespace going away...): the next run asks again.
        return Ok(());
    };
    if verdict == Verdict::Undecided {
        tracing::debug!(namespace = %key.0, policy = %key.1, without = ?a, "injection check: the namespace refuses even the stand-in; no verdict");
    }
    let again = rechecked(&verdict);
    let message = match &verdict {
        Verdict::RefusedByNamespace { message } => Some(message.clone()),
        _ => None,
    };
    if record(ctx, key, &policy.hash, verdict, now, Some(ACCEPTED_RECHECK)) {
        match message {
            Some(m) => {
                tracing::warn!(namespace = %key.0, policy = %key.1, hash = %policy.hash, message = %m, "the namespace refuses Pods with the policy's sidecars; new Pods are created without them");
                ctx.warn_policy(
                    key,
                    reason::NAMESPACE_REFUSES_INJECTION,
                    "CheckInjection",
                    &format!("The namespace refuses a Pod with this policy's sidecars (server-side dry run), so new Pods are created without them: {m}"),
                );
            }
            None if !again => {
                tracing::info!(namespace = %key.0, policy = %key.1, hash = %policy.hash, "the namespace accepts Pods with the policy's sidecars");
            }
            None => {}
        }
        // The status (and through it every webhook replica) learns the verdict.
        ctx.queues.policies.add(key.clone());
    }
    Ok(())
}

/// A verdict that is checked again later, with a growing delay.
fn rechecked(verdict: &Verdict) -> bool {
    matches!(
        verdict,
        Verdict::RefusedByNamespace { .. } | Verdict::Undecided
    )
}

/// How often Container mode checks again a namespace that accepted Pods with the sidecars:
/// a quota, LimitRange or admission policy added later is not watched, and would otherwise
/// make every new Pod there refused until the template changes.
const ACCEPTED_RECHECK: Duration = Duration::from_secs(600);

/// Records `verdict` on template `hash` of policy `key` and, for one checked again (refused,
/// undecided, or accepted with `accepted_again`), asks for that check; returns whether it
/// changed what is known.
fn record(
    ctx: &Context,
    key: &PolicyKey,
    hash: &str,
    verdict: Verdict,
    now: Instant,
    accepted_again: Option<Duration>,
) -> bool {
    let again = rechecked(&verdict);
    let (changed, refusals) =
        ctx.policy_state
            .templates()
            .record(key, hash, verdict, now, accepted_again);
    let next = if again {
        Some(recheck_delay(refusals))
    } else {
        accepted_again
    };
    if let Some(wait) = next {
        ctx.queues.policies.add_after(key.clone(), wait);
    }
    changed
}

/// The namespace's admission refuses Pods with Container-mode policy `key`'s current
/// sidecars: the API server's message.
impl TemplateChecks {
    pub(crate) fn injection_refused(&self, key: &PolicyKey, hash: &str) -> Option<String> {
        match self.0.get(key) {
            Some(Checked {
                hash: h,
                verdict: Verdict::RefusedByNamespace { message },
                ..
            }) if h == hash => Some(message.clone()),
            _ => None,
        }
    }
}

/// Whether `policy`'s template is checked at all: not for a policy going away, paused or
/// unusable. Pod mode dry-runs a sidecar Pod; Container mode a Pod with and without the
/// sidecars (see [`check_injection`]).
fn wants_check(policy: &PolicyView) -> bool {
    !(policy.deleting || policy.paused() || policy.selector.is_err())
}

fn dry_run_prefix(policy: &PolicyView) -> String {
    dry_run_sidecar(policy)
        .metadata
        .generate_name
        .unwrap_or_default()
}

/// `message` with every `"<prefix><generated suffix>"` replaced by `"<sidecar>"`.
fn scrub_generated_name(message: &str, prefix: &str) -> String {
    let needle = format!("\"{prefix}");
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(&needle) {
        out.push_str(&rest[..i]);
        let after = &rest[i + needle.len()..];
        match after.find('"') {
            Some(j) => {
                out.push_str("\"<sidecar>\"");
                rest = &after[j + 1..];
            }
            None => {
                rest = &rest[i..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_scrubbed_from_messages() {
        let m = r#"pods "dry-run-priv-fb7xw" is forbidden: violates PodSecurity "restricted:latest": x"#;
        assert_eq!(
            scrub_generated_name(m, "dry-run-priv-"),
            r#"pods "<sidecar>" is forbidden: violates PodSecurity "restricted:latest": x"#
        );
        assert_eq!(scrub_generated_name("no name", "dry-run-priv-"), "no name");
        assert_eq!(
            scrub_generated_name(r#"a "dry-run-priv-unterminated"#, "dry-run-priv-"),
            r#"a "dry-run-priv-unterminated"#
        );
    }

    #[test]
    fn namespace_refusals_are_due_again_later() {
        let mut t = TemplateChecks::default();
        let key = PolicyKey::new("a", "p");
        let t0 = Instant::now();
        assert_eq!(t.due(&key, "h1", t0), Ok(()), "never checked");
        let refused = Verdict::RefusedByNamespace {
            message: "quota".into(),
        };
        assert_eq!(t.record(&key, "h1", refused.clone(), t0, None), (true, 1));
        assert_eq!(t.gate(&key, "h1"), Gate::Closed);
        assert_eq!(t.due(&key, "h1", t0), Err(Some(Duration::from_secs(1))));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(t.due(&key, "h1", t1), Ok(()));
        assert_eq!(
            t.record(&key, "h1", refused, t1, None),
            (false, 2),
            "same refusal"
        );
        assert_eq!(t.due(&key, "h1", t1), Err(Some(Duration::from_secs(2))));
        assert_eq!(t.due(&key, "h2", t1), Ok(()), "a new template");
        assert_eq!(t.gate(&key, "h2"), Gate::Unknown);
        assert_eq!(t.record(&key, "h1", Verdict::Accepted, t1, None), (true, 0));
        assert_eq!(
            t.due(&key, "h1", t1),
            Err(None),
            "Pod mode: accepted for good"
        );
        // Container mode checks an accepting namespace again now and then.
        let ten = Duration::from_secs(600);
        assert_eq!(
            t.record(&key, "h1", Verdict::Accepted, t1, Some(ten)),
            (false, 0)
        );
        assert_eq!(t.due(&key, "h1", t1), Err(Some(ten)));
        assert_eq!(t.due(&key, "h1", t1 + ten), Ok(()));
        t.record(&key, "h1", Verdict::Accepted, t1, None);
        assert_eq!(t.gate(&key, "h1"), Gate::Open);
        assert_eq!(t.due(&key, "h1", t1), Err(None));
        let invalid = Verdict::InvalidTemplate {
            message: "bad".into(),
        };
        t.record(&key, "h3", invalid, t1, None);
        assert_eq!(t.due(&key, "h3", t1 + Duration::from_secs(3600)), Err(None));
        assert!(t.problem(&key, "h3").is_some());
    }
}
