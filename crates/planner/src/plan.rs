//! The diff for one main Pod: which sidecars to create and which to delete.

use k8s_openapi::api::core::v1::Pod;

use crate::eligibility::{Ineligible, eligibility};
use crate::naming::sidecar_name;
use crate::render::render;
use crate::view::{PodView, PolicyView};

/// Why a sidecar is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// No live policy of that name exists in the namespace.
    PolicyGone,
    /// The policy no longer wants a sidecar for this Pod.
    NotWanted(Ineligible),
    /// Another sidecar of ours for the same pair holds the deterministic name.
    Duplicate,
    /// The sidecar ended `Failed` or `Succeeded` (evicted, exited under
    /// `restartPolicy: Never`…): it is replaced, like a DaemonSet replaces failed Pods.
    Failed,
    /// Built from an older template: replaced by the rollout (see [`crate::plan_rollout`]).
    Stale,
    /// The sidecar has lost its main Pod: no controller owner reference (orphaned by
    /// `--cascade=orphan`), or its owner is an earlier Pod of the main Pod's name.
    Orphaned,
    /// A policy that outranks this one wants the same sidecar name for the main Pod (see
    /// [`conflict_winner`]): the name goes to the winner.
    Conflict,
}

impl DeleteReason {
    /// A short, stable word for logs, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::PolicyGone => "policy-gone",
            DeleteReason::NotWanted(i) => i.as_str(),
            DeleteReason::Duplicate => "duplicate",
            DeleteReason::Failed => "failed",
            DeleteReason::Stale => "rollout",
            DeleteReason::Orphaned => "orphaned",
            DeleteReason::Conflict => "conflict",
        }
    }
}

/// A sidecar to delete, with the uid it must still have (delete precondition), so a
/// Pod recreated under the same name in the meantime is never deleted by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteSidecar {
    /// Sidecar name.
    pub name: String,
    /// Sidecar uid (precondition).
    pub uid: String,
    /// Its policy (label value).
    pub policy: String,
    /// Why.
    pub reason: DeleteReason,
}

/// The deterministic name is held by a Pod that is not this pair's sidecar: it is
/// never touched, only reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// The wanted name.
    pub name: String,
    /// The policy that wants it.
    pub policy: String,
    /// uid of the Pod holding the name.
    pub holder_uid: String,
}

/// What to do for one main Pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodPlan {
    /// Sidecar Pods to create.
    pub creates: Vec<Pod>,
    /// Sidecars to delete.
    pub deletes: Vec<DeleteSidecar>,
    /// Names held by foreign Pods.
    pub collisions: Vec<Collision>,
    /// Wanted names held by a Pod that is going away (a terminating sidecar, or one of an
    /// earlier Pod of this name being deleted now): the create waits for its deletion.
    pub waiting_for: Vec<String>,
}

impl PodPlan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty()
            && self.deletes.is_empty()
            && self.collisions.is_empty()
            && self.waiting_for.is_empty()
    }

    /// Names whose holder's deletion should bring this main Pod back to the planner.
    pub fn blocked_names(&self) -> impl Iterator<Item = &str> {
        self.collisions
            .iter()
            .map(|c| c.name.as_str())
            .chain(self.waiting_for.iter().map(String::as_str))
    }
}

/// Who holds the deterministic name of a (main Pod, policy) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// This pair's sidecar.
    Ours,
    /// A sidecar this operator made for the same policy and an earlier Pod of the main
    /// Pod's name (a StatefulSet's `web-0` recreated), or one that lost its owner: it is
    /// going away (deleted by the planner, or already terminating), never a collision.
    Predecessor,
    /// Any other Pod: a name collision, reported and never touched.
    Foreign,
}

/// Classifies `holder`, the Pod at the deterministic name of (`main`, `policy`).
pub fn holder(main: &PodView, policy: &str, holder: &PodView) -> Holder {
    let same_policy = holder.sidecar_key().is_some_and(|(_, p)| p == policy);
    if same_policy && holder.is_sidecar_of(main) {
        return Holder::Ours;
    }
    let earlier_owner = match &holder.owner {
        None => true,
        Some(o) => o.is_pod() && o.name == main.name && o.uid != main.uid,
    };
    if same_policy && earlier_owner {
        Holder::Predecessor
    } else {
        Holder::Foreign
    }
}

/// Whether the planner may judge `sidecar` (keep, replace or delete it) from the policies it
/// is given. Not a ClusterSidecarPolicy's sidecar while the cluster policies have not been
/// listed (`clusters_known` false: the first list was refused, a 403 or 404, and is being
/// retried): a policy missing from a list that never succeeded is not gone. Such a sidecar is
/// left as it is, neither counted nor deleted, until a list succeeds.
pub fn judgeable(sidecar: &PodView, clusters_known: bool) -> bool {
    clusters_known
        || sidecar
            .sidecar_key()
            .is_none_or(|(_, id)| crate::cluster::cluster_name(&id).is_none())
}

/// For a Pod labelled as one of this operator's sidecars, when it is not reached through a
/// main Pod: delete it if it has no controller owner at all (its main Pod was deleted with
/// `--cascade=orphan`, which removes the reference, or someone removed it by hand; the
/// garbage collector would never remove it). One whose controller is a Pod is its main
/// Pod's business ([`plan_pod`]); one with any other controller (a ReplicaSet, a Job: our
/// labels copied into a workload's template) was never made by the operator, and deleting
/// it would only have its controller recreate it, again and again: it is left alone.
/// `policy` is its policy (by the label), if it exists: a paused policy, or one the
/// operator cannot read, keeps what exists.
pub fn plan_orphan(sidecar: &PodView, policy: Option<&PolicyView>) -> Option<DeleteSidecar> {
    let (_, pname) = sidecar.sidecar_key()?;
    if sidecar.deleting || sidecar.owner.is_some() {
        return None;
    }
    if policy.is_some_and(|p| !p.deleting && (p.paused() || p.selector.is_err())) {
        return None;
    }
    Some(DeleteSidecar {
        name: sidecar.name.clone(),
        uid: sidecar.uid.clone(),
        policy: pname.to_string(),
        reason: DeleteReason::Orphaned,
    })
}

/// The policy among `rivals` that outranks `policy` and wants, for `main`, the very sidecar
/// name `policy` wants (`policy` eligible or only paused; the rival eligible, not paused):
/// the best-ranked such policy, if any.
/// `policy` then leaves `main` to it. A name two policies share comes from a SidecarPolicy
/// `csp-x` and a ClusterSidecarPolicy `x`, or from long names cut to the same hash.
pub fn conflict_winner<'p>(
    main: &PodView,
    policy: &PolicyView,
    rivals: &[&'p PolicyView],
) -> Option<&'p PolicyView> {
    let wants = |p: &PolicyView| matches!(eligibility(main, p), Ok(()) | Err(Ineligible::Paused));
    if !wants(policy) {
        return None;
    }
    let name = sidecar_name(&main.name, &policy.name);
    // A paused rival takes nothing: pausing (or staging) a policy never deletes another's
    // sidecars. (Its own sidecar, if it has one at the name, stays: a collision then.)
    rivals
        .iter()
        .copied()
        .filter(|q| q.name != policy.name && q.outranks(policy))
        .filter(|q| eligibility(main, q).is_ok())
        .filter(|q| sidecar_name(&main.name, &q.name) == name)
        .min_by(|a, b| a.precedence().cmp(&b.precedence()))
}

/// Plans one main Pod.
///
/// - `policies`: the policies of the Pod's namespace (deleting ones included);
/// - `sidecars`: the Pods labelled `sidecars.dev/main-uid = main.uid` (from the cache's
///   index), whatever their state; only those that [`PodView::is_sidecar_of`] `main` (of its
///   namespace, owned by it) are considered ours: nothing else is counted, kept or deleted;
/// - `by_name`: looks a Pod of the main Pod's namespace up by name (for collisions).
///
/// Rules: sidecars never get sidecars; a paused policy's sidecars are neither created
/// nor deleted; a sidecar whose policy is gone or no longer wants it is deleted; a
/// sidecar of ours not at the deterministic name is a duplicate and deleted; a wanted,
/// missing sidecar is created unless its name is held (a terminating sidecar of ours
/// still holds it: its deletion event brings the Pod back here); a sidecar of an earlier
/// Pod of the same name is deleted first, and is not a collision. A sidecar that ended
/// `Failed` or `Succeeded` is deleted so that it is recreated (the controller spaces these
/// replacements out per pair). Stale template hashes are left alone: replacing them is the
/// rollout's job (policy controller).
pub fn plan_pod<'a>(
    main: &PodView,
    policies: &[&PolicyView],
    sidecars: &[&PodView],
    by_name: impl Fn(&str) -> Option<&'a PodView>,
) -> PodPlan {
    let mut plan = PodPlan::default();
    if main.is_sidecar() {
        return plan;
    }
    let ours: Vec<&PodView> = sidecars
        .iter()
        .copied()
        .filter(|s| s.is_sidecar_of(main))
        .collect();

    for s in &ours {
        let Some((_, pname)) = s.sidecar_key() else {
            continue;
        };
        let policy = policies.iter().find(|p| p.name == pname && !p.deleting);
        let reason = match policy {
            None => Some(DeleteReason::PolicyGone),
            // Paused, or a spec the operator cannot act on (`InvalidSpec`): keep what
            // exists; a policy it cannot read says nothing about which sidecars are unwanted.
            Some(p) if p.paused() || p.selector.is_err() => None,
            Some(p) => match eligibility(main, p) {
                Err(why) => Some(DeleteReason::NotWanted(why)),
                Ok(()) if conflict_winner(main, p, policies).is_some() => {
                    Some(DeleteReason::Conflict)
                }
                Ok(()) if s.name != sidecar_name(&main.name, &p.name) => {
                    Some(DeleteReason::Duplicate)
                }
                Ok(()) if s.terminal() => Some(DeleteReason::Failed),
                Ok(()) => None,
            },
        };
        if let Some(reason) = reason
            && !s.deleting
        {
            plan.deletes.push(DeleteSidecar {
                name: s.name.clone(),
                uid: s.uid.clone(),
                policy: pname.to_string(),
                reason,
            });
        }
    }

    for p in policies {
        if eligibility(main, p).is_err() || conflict_winner(main, p, policies).is_some() {
            continue;
        }
        let name = sidecar_name(&main.name, &p.name);
        if ours
            .iter()
            .any(|s| s.name == name && s.sidecar_key().is_some_and(|(_, id)| id == p.name))
        {
            continue;
        }
        // The name is held by the sidecar of a policy this one outranks: that one is deleted
        // (above, or by a run that saw it first); the create waits for it.
        let loser_holds = |h: &PodView| {
            h.is_sidecar_of(main)
                && h.sidecar_key().is_some_and(|(_, id)| {
                    id != p.name.as_str() && policies.iter().any(|q| q.name == id && p.outranks(q))
                })
        };
        match by_name(&name) {
            Some(h) if loser_holds(h) => plan.waiting_for.push(name),
            Some(h) => match holder(main, &p.name, h) {
                Holder::Ours => {}
                Holder::Predecessor => {
                    if !h.deleting {
                        plan.deletes.push(DeleteSidecar {
                            name: h.name.clone(),
                            uid: h.uid.clone(),
                            policy: p.name.clone(),
                            reason: DeleteReason::Orphaned,
                        });
                    }
                    plan.waiting_for.push(name);
                }
                Holder::Foreign => plan.collisions.push(Collision {
                    name,
                    policy: p.name.clone(),
                    holder_uid: h.uid.clone(),
                }),
            },
            None => plan.creates.push(render(main, p)),
        }
    }
    plan
}
