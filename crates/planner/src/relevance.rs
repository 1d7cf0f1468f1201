//! Which Pod changes can change a decision. Most watch events are kwok or the kubelet
//! writing status (a main Pod becomes Running and Ready, a sidecar is scheduled); the
//! pod controller's plan reads none of that, and the policy's status reads readiness (a
//! sidecar's; in Container mode a main Pod's and its containers') but not a node. Events
//! that change nothing a decision reads are dropped before they reach a queue.

use crate::labels::Labels;
use crate::view::{OwnerView, PodView};

/// What reconciles should follow after a Pod changed from `old` to `new` (`None`: it did
/// not exist before / exists no more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relevance {
    /// The pod controller (the main Pod's reconcile; a sidecar's main Pod's).
    pub pod: bool,
    /// The status of the policies the Pod concerns.
    pub status: bool,
}

/// What the pod controller and eligibility read of a Pod: who it is, what selects it,
/// where it runs, whether it is going or finished — not its readiness, nor a phase change
/// other than to `Failed`/`Succeeded`.
#[derive(PartialEq)]
struct Decided<'a> {
    uid: &'a str,
    labels: &'a Labels,
    opted_out: bool,
    owner: Option<&'a OwnerView>,
    node_name: Option<&'a str>,
    deleting: bool,
    terminal: bool,
    /// Container mode: the injections it records (counted by the policies' status).
    injected: Option<&'a str>,
}

fn decided(v: &PodView) -> Decided<'_> {
    Decided {
        uid: &v.uid,
        labels: &v.labels,
        opted_out: v.opted_out,
        owner: v.owner.as_ref(),
        // A main Pod's node places its sidecar; a sidecar's own node decides nothing.
        node_name: v.node_name.as_deref().filter(|_| !v.is_sidecar()),
        deleting: v.deleting,
        terminal: v.terminal(),
        injected: v.injected.as_deref(),
    }
}

/// See [`Relevance`]. A Pod that appears or goes always matters. A main Pod matters to
/// both when what decisions read of it changed. A sidecar matters to its main Pod's
/// reconcile the same way, and to its policy's status also when its readiness changed
/// (its node, say, matters to neither).
pub fn relevance(old: Option<&PodView>, new: Option<&PodView>) -> Relevance {
    let (Some(o), Some(n)) = (old, new) else {
        return Relevance {
            pod: true,
            status: true,
        };
    };
    let decision = decided(o) != decided(n);
    let sidecar = o.is_sidecar() || n.is_sidecar();
    // Readiness: a sidecar's counts in its policy's status; a main Pod's in Container mode
    // (ready with its injected sidecars, and the repair's maxUnavailable budget).
    let readiness = o.ready != n.ready || (!sidecar && o.unready != n.unready);
    Relevance {
        pod: decision,
        status: decision || readiness,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Phase;

    fn main_pod() -> PodView {
        PodView {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "u1".into(),
            labels: Labels::from_iter([("app", "web")]),
            phase: Phase::Pending,
            ..PodView::default()
        }
    }

    fn sidecar() -> PodView {
        PodView {
            name: "web-0-log".into(),
            uid: "s1".into(),
            labels: Labels::from_iter([
                (
                    sidecar_api::constants::LABEL_MANAGED_BY,
                    sidecar_api::constants::MANAGED_BY_VALUE,
                ),
                (sidecar_api::constants::LABEL_MAIN_UID, "u1"),
                (sidecar_api::constants::LABEL_POLICY, "log"),
            ]),
            owner: Some(OwnerView {
                api_version: crate::view::OwnerApi::Core,
                kind: "Pod".into(),
                name: "web-0".into(),
                uid: "u1".into(),
            }),
            ..main_pod()
        }
    }

    #[test]
    fn only_what_decisions_read_triggers() {
        let both = Relevance {
            pod: true,
            status: true,
        };
        let none = Relevance {
            pod: false,
            status: false,
        };
        let status_only = Relevance {
            pod: false,
            status: true,
        };
        let with = |base: PodView, f: fn(&mut PodView)| {
            let mut v = base;
            f(&mut v);
            v
        };
        // (case, old, new, expected)
        let cases: Vec<(&str, PodView, PodView, Relevance)> = vec![
            (
                "main scheduled",
                main_pod(),
                with(main_pod(), |v| v.node_name = Some("n1".into())),
                both,
            ),
            (
                "main Running",
                main_pod(),
                with(main_pod(), |v| v.phase = Phase::Running),
                none,
            ),
            (
                "main Ready",
                main_pod(),
                with(main_pod(), |v| v.ready = true),
                status_only,
            ),
            (
                "main's native sidecar ready",
                with(main_pod(), |v| v.unready = Some("proxy".into())),
                main_pod(),
                status_only,
            ),
            (
                "main Failed",
                main_pod(),
                with(main_pod(), |v| v.phase = Phase::Failed),
                both,
            ),
            (
                "main relabelled",
                main_pod(),
                with(main_pod(), |v| {
                    v.labels = Labels::from_iter([("app", "db")])
                }),
                both,
            ),
            (
                "main opted out",
                main_pod(),
                with(main_pod(), |v| v.opted_out = true),
                both,
            ),
            (
                "main terminating",
                main_pod(),
                with(main_pod(), |v| v.deleting = true),
                both,
            ),
            (
                "sidecar scheduled",
                sidecar(),
                with(sidecar(), |v| v.node_name = Some("n1".into())),
                none,
            ),
            (
                "sidecar Running",
                sidecar(),
                with(sidecar(), |v| v.phase = Phase::Running),
                none,
            ),
            (
                "sidecar Ready",
                sidecar(),
                with(sidecar(), |v| v.ready = true),
                status_only,
            ),
            (
                "sidecar Failed",
                sidecar(),
                with(sidecar(), |v| v.phase = Phase::Failed),
                both,
            ),
            (
                "sidecar terminating",
                sidecar(),
                with(sidecar(), |v| v.deleting = true),
                both,
            ),
            (
                "sidecar owner removed",
                sidecar(),
                with(sidecar(), |v| v.owner = None),
                both,
            ),
            (
                "main's injection record",
                main_pod(),
                with(main_pod(), |v| v.injected = Some("log=abc".into())),
                both,
            ),
        ];
        for (case, old, new, want) in cases {
            assert_eq!(relevance(Some(&old), Some(&new)), want, "{case}");
        }
        assert_eq!(relevance(None, Some(&sidecar())), both, "added");
        assert_eq!(relevance(Some(&main_pod()), None), both, "deleted");
    }
}
