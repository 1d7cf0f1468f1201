//! Tables: where a cluster policy applies, and which of two policies wins a Pod.

use std::collections::HashSet;

use serde_json::{Value, json};
use sidecar_api::constants::{LABEL_CLUSTER_POLICY, LABEL_POLICY, condition};

use crate::test_fixtures::{cluster, main_pod, namespaced, sidecar};
use crate::*;

#[test]
fn a_cluster_policy_applies_where_its_selector_matches_and_skips_system_namespaces() {
    let left_out: HashSet<String> = ["kube-system", "sidecar-system"].map(String::from).into();
    let team = json!({"matchLabels": {"team": "pay"}});
    let named = json!({"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["kube-system", "shop"]}]});
    // (case, namespaceSelector, namespace, its labels, applies)
    let cases = [
        (
            "matching labels",
            &team,
            "shop",
            vec![("team", "pay")],
            true,
        ),
        (
            "other labels",
            &team,
            "shop",
            vec![("team", "search")],
            false,
        ),
        ("no labels", &team, "shop", vec![], false),
        (
            "left out though matching",
            &team,
            "kube-system",
            vec![("team", "pay")],
            false,
        ),
        (
            "the operator's own",
            &team,
            "sidecar-system",
            vec![("team", "pay")],
            false,
        ),
        (
            "left out, named explicitly",
            &named,
            "kube-system",
            vec![("kubernetes.io/metadata.name", "kube-system")],
            true,
        ),
        (
            "named among others",
            &named,
            "shop",
            vec![("kubernetes.io/metadata.name", "shop")],
            true,
        ),
    ];
    for (case, selector, ns, labels, want) in cases {
        let p = cluster("agent", selector.clone(), json!({}));
        let labels = Labels::from_iter(labels);
        assert_eq!(p.applies_in(ns, &labels, &left_out), want, "{case}");
    }
    let plain = namespaced("agent", json!({}));
    assert!(
        !plain.applies_in("shop", &Labels::from_iter([("team", "pay")]), &left_out),
        "a SidecarPolicy is no cluster policy"
    );
}

#[test]
fn a_cluster_policys_instance_never_meets_a_namespaced_policy_of_its_name() {
    let base = cluster("agent", json!({"matchLabels": {"team": "pay"}}), json!({}));
    let inst = base.instance("shop");
    assert_eq!(
        (inst.name.as_str(), inst.namespace.as_str()),
        ("csp/agent", "shop")
    );
    assert_eq!(inst.object_name(), "agent");
    assert_eq!(inst.kind(), "ClusterSidecarPolicy");
    let ns = namespaced("agent", json!({}));
    let m = main_pod("web-0");
    let (a, b) = (render(&m, &inst), render(&m, &ns));
    assert_eq!(a.metadata.name.as_deref(), Some("web-0-csp-agent"));
    assert_eq!(b.metadata.name.as_deref(), Some("web-0-agent"));
    let labels = a.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(LABEL_CLUSTER_POLICY).map(String::as_str),
        Some("agent")
    );
    assert!(!labels.contains_key(LABEL_POLICY));
    // Each sidecar reads back as its own policy's, and plans leave the other alone.
    let (sa, sb) = (sidecar(&m, &inst), sidecar(&m, &ns));
    assert_eq!(
        sa.sidecar_key().map(|(_, id)| id.into_owned()),
        Some("csp/agent".into())
    );
    assert_eq!(
        sb.sidecar_key().map(|(_, id)| id.into_owned()),
        Some("agent".into())
    );
    let plan = plan_pod(&m, &[&inst, &ns], &[&sa, &sb], |n| {
        [&sa, &sb].into_iter().find(|s| s.name == n)
    });
    assert!(plan.is_empty(), "{plan:?}");
    let event_ref = inst.object_ref();
    assert_eq!(event_ref.kind.as_deref(), Some("ClusterSidecarPolicy"));
    assert_eq!(event_ref.namespace, None);
}

#[test]
fn the_winner_of_a_pod_is_by_priority_then_kind_then_name() {
    let sel = json!({"matchLabels": {"team": "pay"}});
    // (case, a, b, a outranks b)
    let cases = [
        (
            "same kind: the first name",
            namespaced("a", json!({})),
            namespaced("b", json!({})),
            true,
        ),
        (
            "priority before name",
            namespaced("b", json!({"priority": 1})),
            namespaced("a", json!({})),
            true,
        ),
        (
            "negative priority loses",
            namespaced("a", json!({"priority": -1})),
            namespaced("b", json!({})),
            false,
        ),
        (
            "namespaced before cluster",
            namespaced("z", json!({})),
            cluster("a", sel.clone(), json!({})),
            true,
        ),
        (
            "cluster with priority first",
            cluster("z", sel.clone(), json!({"priority": 5})),
            namespaced("a", json!({})),
            true,
        ),
    ];
    for (case, a, b, want) in cases {
        assert_eq!(a.outranks(&b), want, "{case}");
        assert_eq!(b.outranks(&a), !want, "{case}: exactly one wins");
    }
}

/// A SidecarPolicy `csp-agent` and a ClusterSidecarPolicy `agent` both want `web-0-csp-agent`.
#[test]
fn one_sidecar_name_two_policies_the_winner_takes_it_without_flapping() {
    let sel = json!({"matchLabels": {"team": "pay"}});
    let m = main_pod("web-0");
    for (case, ns_extra, csp_extra, namespaced_wins) in [
        (
            "namespaced wins at equal priority",
            json!({}),
            json!({}),
            true,
        ),
        (
            "a higher priority wins",
            json!({}),
            json!({"priority": 10}),
            false,
        ),
    ] {
        let ns = namespaced("csp-agent", ns_extra);
        let csp = cluster("agent", sel.clone(), csp_extra).instance("shop");
        assert_eq!(
            sidecar_name("web-0", &ns.name),
            sidecar_name("web-0", &csp.name)
        );
        let (winner, loser) = if namespaced_wins {
            (&ns, &csp)
        } else {
            (&csp, &ns)
        };
        let all = [&ns, &csp];
        // Nothing there: only the winner creates.
        let plan = plan_pod(&m, &all, &[], |_| None);
        assert_eq!(plan.creates.len(), 1, "{case}: {plan:?}");
        let created = sidecar(&m, winner);
        assert_eq!(
            created.sidecar_key().map(|(_, id)| id.into_owned()),
            Some(winner.name.clone()),
            "{case}"
        );
        assert!(plan.collisions.is_empty(), "{case}");
        // The winner's sidecar there: nothing to do (the loser does not see a collision).
        let plan = plan_pod(&m, &all, &[&created], |n| {
            (n == created.name).then_some(&created)
        });
        assert!(plan.is_empty(), "{case}: {plan:?}");
        // The loser's sidecar there (made before the winner existed): it is deleted, and the
        // winner waits for the name.
        let old = sidecar(&m, loser);
        let plan = plan_pod(&m, &all, &[&old], |n| (n == old.name).then_some(&old));
        assert_eq!(plan.deletes.len(), 1, "{case}: {plan:?}");
        assert_eq!(plan.deletes[0].reason, DeleteReason::Conflict, "{case}");
        assert_eq!(plan.deletes[0].policy, loser.name, "{case}");
        assert!(
            plan.creates.is_empty() && plan.collisions.is_empty(),
            "{case}: {plan:?}"
        );
        assert_eq!(plan.waiting_for, vec![old.name.clone()], "{case}");
        // The status: the loser counts no Pod and names the winner; the winner counts it.
        let by_name = |n: &str| (n == created.name).then_some(&created);
        let lost = observe_among(loser, &all, [&m], by_name);
        assert_eq!(lost.counts.matched, 0, "{case}");
        assert_eq!(
            lost.conflicts,
            vec![("web-0".to_string(), winner.name.clone())],
            "{case}"
        );
        let won = observe_among(winner, &all, [&m], by_name);
        assert_eq!((won.counts.matched, won.counts.ready), (1, 1), "{case}");
        assert!(
            won.conflicts.is_empty() && won.collisions.is_empty(),
            "{case}"
        );
        let problems = Problems {
            conflicts: lost.conflicts.clone(),
            ..Problems::default()
        };
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        let status = compute_status(loser, lost.counts, &problems, None, now.clone());
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::CONFLICTED)
            .expect("Conflicted");
        assert_eq!(c.status, "True", "{case}");
        assert!(
            c.message.contains(winner.object_name()),
            "{case}: {}",
            c.message
        );
        assert!(c.message.contains("web-0"), "{case}: {}", c.message);
        // Resolved: Conflicted stays, False; a status without it before never gets it.
        let after = compute_status(
            loser,
            lost.counts,
            &Problems::default(),
            Some(&status),
            now.clone(),
        );
        let c = after
            .conditions
            .iter()
            .find(|c| c.type_ == condition::CONFLICTED);
        assert_eq!(c.map(|c| c.status.as_str()), Some("False"), "{case}");
        let never = compute_status(winner, won.counts, &Problems::default(), None, now);
        assert!(
            never
                .conditions
                .iter()
                .all(|c| c.type_ != condition::CONFLICTED),
            "{case}"
        );
    }
    // A paused policy that would win takes nothing: the other keeps its sidecar.
    let staged = namespaced("csp-agent", json!({"paused": true}));
    let csp = cluster("agent", sel, json!({})).instance("shop");
    let held = sidecar(&m, &csp);
    let plan = plan_pod(&m, &[&staged, &csp], &[&held], |n| {
        (n == held.name).then_some(&held)
    });
    assert!(plan.is_empty(), "a paused rival deletes nothing: {plan:?}");
    assert_eq!(
        conflict_winner(&m, &csp, &[&staged, &csp]).map(|w| w.name.clone()),
        None
    );
}

#[test]
fn in_container_mode_the_higher_priority_injects_and_the_other_records_the_winner() {
    let container = |name: &str, extra: Value| {
        let mut e = json!({"mode": "Container",
            "template": {"spec": {"initContainers": [
                {"name": "shipper", "image": "agent:1", "restartPolicy": "Always"}]}}});
        if let (Some(base), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        namespaced(name, e)
    };
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "web:1"}]},
    }))
    .expect("pod");
    let a = container("a-log", json!({}));
    let b = container("b-log", json!({"priority": 5}));
    let csp = cluster(
        "log",
        json!({"matchLabels": {"team": "pay"}}),
        json!({"mode": "Container",
        "template": {"spec": {"initContainers": [
            {"name": "shipper", "image": "agent:1", "restartPolicy": "Always"}]}}}),
    )
    .instance("shop");
    let out = crate::inject::inject(&pod, &[&a, &csp, &b]);
    let injected: Vec<&str> = out.injected.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(injected, ["b-log"], "priority first");
    let tokens: Vec<String> = out
        .skipped
        .iter()
        .map(|(p, s)| format!("{p}={}", s.token().unwrap_or_default()))
        .collect();
    assert_eq!(
        tokens,
        [
            "a-log=initContainer/shipper@b-log",
            "csp/log=initContainer/shipper@b-log"
        ]
    );
    // A reinvocation on the mutated Pod changes nothing: the winner is still named.
    let stored = out.pod.expect("mutated");
    let again = crate::inject::inject(&stored, &[&a, &csp, &b]);
    assert!(again.pod.is_none(), "{:?}", again.pod);
    let tokens_again: Vec<String> = again
        .skipped
        .iter()
        .filter_map(|(p, s)| Some(format!("{p}={}", s.token()?)))
        .collect();
    assert_eq!(tokens_again, tokens);
    // The losers' status reads the record: the winner, and the Pod not counted.
    let mut stored = stored;
    stored.metadata.uid = Some("uid-web-0".into());
    let view = PodView::from_pod(&stored).expect("view");
    let lost = observe(&csp, [&view], |_| None);
    assert_eq!(lost.counts.matched, 0);
    assert_eq!(
        lost.conflicts,
        vec![("web-0".to_string(), "b-log".to_string())]
    );
    assert!(
        lost.drifted.is_empty(),
        "a lost Pod is no drift (no repair evicts it)"
    );
}
