//! Table-driven tests of every planning rule.

use std::sync::Arc;

use sidecar_api::constants::*;
use sidecar_api::{SidecarPolicy, SidecarPolicySpec};

use crate::test_fixtures::main_pod;
use crate::*;

fn policy(name: &str, json: serde_json::Value) -> PolicyView {
    let mut spec = serde_json::json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"team": "obs"}},
                     "spec": {"containers": [{"name": "shipper", "image": "fluent-bit:3.1",
                              "args": ["--pod=$(MAIN_POD_NAME)"],
                              "env": [{"name": "MAIN_POD_NAME", "value": "spoofed"}, {"name": "X", "value": "1"}]}]}},
    });
    if let (Some(base), Some(over)) = (spec.as_object_mut(), json.as_object()) {
        for (k, v) in over {
            base.insert(k.clone(), v.clone());
        }
    }
    let spec: SidecarPolicySpec = serde_json::from_value(spec).expect("spec");
    let mut p = SidecarPolicy::new(name, spec);
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.generation = Some(1);
    PolicyView::new(Arc::new(p))
}

fn sidecar_for(main: &PodView, p: &PolicyView) -> PodView {
    let pod = render(main, p);
    let mut v = PodView::from_pod(&{
        let mut pod = pod;
        pod.metadata.uid = Some(format!(
            "uid-sc-{}",
            pod.metadata.name.clone().unwrap_or_default()
        ));
        pod
    })
    .expect("view");
    v.phase = Phase::Running;
    v
}

fn plan(main: &PodView, policies: &[&PolicyView], sidecars: &[&PodView]) -> PodPlan {
    plan_pod(main, policies, sidecars, |n| {
        sidecars.iter().copied().find(|s| s.name == n)
    })
}

#[test]
fn eligibility_rules() {
    let web = policy("ship", serde_json::json!({}));
    let any = policy("any", serde_json::json!({"placement": "Any"}));
    let paused = policy("p", serde_json::json!({"paused": true}));
    let mut deleting = policy("d", serde_json::json!({}));
    deleting.deleting = true;
    let expr = policy(
        "expr",
        serde_json::json!({"selector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["web", "api"]},
            {"key": "canary", "operator": "DoesNotExist"}]}}),
    );
    let empty = policy("empty", serde_json::json!({"selector": {}}));
    let container = policy("inj", serde_json::json!({"mode": "Container"}));

    let m = main_pod("web-0");
    let with = |f: &dyn Fn(&mut PodView)| {
        let mut p = main_pod("web-0");
        f(&mut p);
        p
    };
    let cases: Vec<(&str, PodView, &PolicyView, Result<(), Ineligible>)> = vec![
        ("selected and bound", m.clone(), &web, Ok(())),
        ("matchExpressions In", m.clone(), &expr, Ok(())),
        (
            "DoesNotExist excludes",
            with(&|p| {
                p.labels.insert("canary", "1");
            }),
            &expr,
            Err(Ineligible::NotSelected),
        ),
        (
            "other labels",
            with(&|p| {
                p.labels.insert("app", "db");
            }),
            &web,
            Err(Ineligible::NotSelected),
        ),
        (
            "other namespace",
            with(&|p| p.namespace = "other".into()),
            &web,
            Err(Ineligible::NotSelected),
        ),
        (
            "opted out",
            with(&|p| p.opted_out = true),
            &web,
            Err(Ineligible::OptedOut),
        ),
        (
            "terminating",
            with(&|p| p.deleting = true),
            &web,
            Err(Ineligible::Terminating),
        ),
        (
            "succeeded",
            with(&|p| p.phase = Phase::Succeeded),
            &web,
            Err(Ineligible::Terminal),
        ),
        (
            "failed",
            with(&|p| p.phase = Phase::Failed),
            &web,
            Err(Ineligible::Terminal),
        ),
        (
            "unbound SameNode",
            with(&|p| p.node_name = None),
            &web,
            Err(Ineligible::Unscheduled),
        ),
        ("unbound Any", with(&|p| p.node_name = None), &any, Ok(())),
        ("paused", m.clone(), &paused, Err(Ineligible::Paused)),
        (
            "Container mode: no sidecar Pod",
            m.clone(),
            &container,
            Err(Ineligible::ContainerMode),
        ),
        (
            "Container mode, unbound",
            with(&|p| p.node_name = None),
            &container,
            Err(Ineligible::ContainerMode),
        ),
        (
            "Container mode, not selected",
            with(&|p| {
                p.labels.insert("app", "db");
            }),
            &container,
            Err(Ineligible::NotSelected),
        ),
        (
            "policy deleting",
            m.clone(),
            &deleting,
            Err(Ineligible::PolicyDeleting),
        ),
        (
            "empty selector selects nothing",
            m.clone(),
            &empty,
            Err(Ineligible::InvalidSpec),
        ),
        (
            "sidecar",
            with(&|p| {
                p.labels.insert(LABEL_MANAGED_BY, MANAGED_BY_VALUE);
            }),
            &web,
            Err(Ineligible::IsSidecar),
        ),
    ];
    for (what, pod, pol, want) in cases {
        assert_eq!(eligibility(&pod, pol), want, "{what}");
    }
}

#[test]
fn names_are_deterministic_bounded_and_distinct() {
    let long_main = "a".repeat(253);
    let cases = [
        ("web-0", "ship", "web-0-ship"),
        ("web-7d9f-abcde", "metrics", "web-7d9f-abcde-metrics"),
    ];
    for (m, p, want) in cases {
        assert_eq!(sidecar_name(m, p), want);
    }
    for (m, p) in [
        (long_main.as_str(), "ship"),
        ("x", &*"p".repeat(62)),
        (&*format!("{}.x-y", "b".repeat(50)), "policy"),
        (&*format!("{}.c", "c".repeat(53)), "policy-with-a-long-name"),
    ] {
        let n = sidecar_name(m, p);
        assert!(n.len() <= 63, "{n} is {} chars", n.len());
        assert_eq!(n, sidecar_name(m, p), "deterministic");
        assert!(
            !n.contains("-.") && !n.contains(".-") && !n.contains("--"),
            "{n}"
        );
        assert!(
            n.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()),
            "{n}"
        );
    }
    // Two long pairs sharing the cut prefix still get distinct names.
    let a = sidecar_name(&long_main, "one");
    let b = sidecar_name(&long_main, "two");
    assert_ne!(a, b);
    assert_eq!(a[..54], b[..54]);
    // Pinned value: names must not change across releases.
    assert_eq!(
        sidecar_name(&long_main, "ship"),
        format!("{}-d18e1d34", "a".repeat(54))
    );
    assert_eq!(sidecar_name(&"a".repeat(60), "ship").len(), 63);
}

#[test]
fn render_builds_the_documented_sidecar() {
    let p = policy("ship", serde_json::json!({}));
    let m = main_pod("web-0");
    let pod = render(&m, &p);
    let meta = &pod.metadata;
    assert_eq!(meta.name.as_deref(), Some("web-0-ship"));
    assert_eq!(meta.namespace.as_deref(), Some("shop"));
    let labels = meta.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("obs"));
    assert_eq!(
        labels.get(LABEL_MANAGED_BY).map(String::as_str),
        Some(MANAGED_BY_VALUE)
    );
    assert_eq!(labels.get(LABEL_POLICY).map(String::as_str), Some("ship"));
    assert_eq!(
        labels.get(LABEL_MAIN_UID).map(String::as_str),
        Some("uid-web-0")
    );
    assert_eq!(labels.get(LABEL_TEMPLATE_HASH), Some(&p.hash));
    let owners = meta.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            owners[0].uid.as_str()
        ),
        ("Pod", "web-0", "uid-web-0")
    );
    assert_eq!(owners[0].controller, Some(true));
    let spec = pod.spec.expect("spec");
    let env: Vec<(String, String)> = spec.containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        env,
        vec![
            s("MAIN_POD_NAME", "web-0"),
            s("MAIN_POD_NAMESPACE", "shop"),
            s("MAIN_POD_UID", "uid-web-0"),
            s("MAIN_POD_NODE", "node-a"),
            s("X", "1"),
        ],
        "ours first, the spoofed MAIN_POD_NAME dropped, the user's others kept"
    );
    let terms = spec
        .affinity
        .and_then(|a| a.node_affinity)
        .and_then(|n| n.required_during_scheduling_ignored_during_execution)
        .expect("required node affinity")
        .node_selector_terms;
    assert_eq!(terms.len(), 1);
    let f = &terms[0].match_fields.clone().unwrap_or_default()[0];
    assert_eq!(
        (f.key.as_str(), f.operator.as_str()),
        ("metadata.name", "In")
    );
    assert_eq!(
        f.values.clone().unwrap_or_default(),
        vec!["node-a".to_string()]
    );
}

#[test]
fn same_node_is_added_to_every_existing_term_and_any_adds_none() {
    let p = policy(
        "ship",
        serde_json::json!({"template": {"spec": {
            "containers": [{"name": "c", "image": "i"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["elsewhere"]}]}]}}}}}}),
    );
    let pod = render(&main_pod("web-0"), &p);
    let terms = pod
        .spec
        .and_then(|s| s.affinity)
        .and_then(|a| a.node_affinity)
        .and_then(|n| n.required_during_scheduling_ignored_during_execution)
        .expect("affinity")
        .node_selector_terms;
    assert_eq!(terms.len(), 2);
    for t in terms {
        let fields = t.match_fields.unwrap_or_default();
        assert_eq!(fields.len(), 1, "the user's metadata.name pin is replaced");
        assert_eq!(
            fields[0].values.clone().unwrap_or_default(),
            vec!["node-a".to_string()]
        );
    }
    let any = policy("any", serde_json::json!({"placement": "Any"}));
    let mut m = main_pod("web-0");
    m.node_name = None;
    let pod = render(&m, &any);
    assert!(pod.spec.and_then(|s| s.affinity).is_none());
}

#[test]
fn plan_creates_missing_and_keeps_existing() {
    let p = policy("ship", serde_json::json!({}));
    let q = policy("metrics", serde_json::json!({}));
    let m = main_pod("web-0");
    let plan1 = plan(&m, &[&p, &q], &[]);
    let names: Vec<_> = plan1
        .creates
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(
        names,
        vec!["web-0-ship", "web-0-metrics"],
        "two policies, two sidecars"
    );
    let s1 = sidecar_for(&m, &p);
    let s2 = sidecar_for(&m, &q);
    assert!(
        plan(&m, &[&p, &q], &[&s1, &s2]).is_empty(),
        "converged: nothing to do"
    );
}

#[test]
fn plan_deletes_what_is_no_longer_wanted() {
    let p = policy("ship", serde_json::json!({}));
    let m = main_pod("web-0");
    let s = sidecar_for(&m, &p);
    let del = |main: &PodView, pols: &[&PolicyView]| -> Vec<DeleteReason> {
        plan(main, pols, &[&s])
            .deletes
            .iter()
            .map(|d| d.reason)
            .collect()
    };
    let mut relabelled = m.clone();
    relabelled.labels.insert("app", "db");
    let mut opted = m.clone();
    opted.opted_out = true;
    let mut done = m.clone();
    done.phase = Phase::Succeeded;
    let mut going = m.clone();
    going.deleting = true;
    let moved = policy(
        "ship",
        serde_json::json!({"selector": {"matchLabels": {"app": "api"}}}),
    );
    let mut deleting = p.clone();
    deleting.deleting = true;
    let switched = policy("ship", serde_json::json!({"mode": "Container"}));
    let cases: Vec<(&str, &PodView, Vec<&PolicyView>, Vec<DeleteReason>)> = vec![
        (
            "switched to Container mode",
            &m,
            vec![&switched],
            vec![DeleteReason::NotWanted(Ineligible::ContainerMode)],
        ),
        ("policy gone", &m, vec![], vec![DeleteReason::PolicyGone]),
        (
            "policy deleting",
            &m,
            vec![&deleting],
            vec![DeleteReason::PolicyGone],
        ),
        (
            "relabelled",
            &relabelled,
            vec![&p],
            vec![DeleteReason::NotWanted(Ineligible::NotSelected)],
        ),
        (
            "selector changed",
            &m,
            vec![&moved],
            vec![DeleteReason::NotWanted(Ineligible::NotSelected)],
        ),
        (
            "opted out",
            &opted,
            vec![&p],
            vec![DeleteReason::NotWanted(Ineligible::OptedOut)],
        ),
        (
            "completed",
            &done,
            vec![&p],
            vec![DeleteReason::NotWanted(Ineligible::Terminal)],
        ),
        (
            "main terminating",
            &going,
            vec![&p],
            vec![DeleteReason::NotWanted(Ineligible::Terminating)],
        ),
    ];
    for (what, main, pols, want) in cases {
        assert_eq!(del(main, &pols), want, "{what}");
        assert!(
            plan(main, &pols, &[&s]).creates.is_empty(),
            "{what}: never recreate"
        );
    }
    // Deletes carry the uid precondition.
    let d = &plan(&m, &[], &[&s]).deletes[0];
    assert_eq!(
        (d.name.as_str(), d.uid.as_str()),
        (s.name.as_str(), s.uid.as_str())
    );
}

#[test]
fn paused_policy_neither_creates_nor_deletes() {
    let paused = policy(
        "ship",
        serde_json::json!({"paused": true, "selector": {"matchLabels": {"app": "api"}}}),
    );
    let live = policy("ship", serde_json::json!({}));
    let m = main_pod("web-0");
    let s = sidecar_for(&m, &live);
    assert!(plan(&m, &[&paused], &[&s]).is_empty());
    assert!(plan(&m, &[&paused], &[]).is_empty());
}

#[test]
fn sidecars_never_get_sidecars_even_when_selected() {
    // The template labels of `ship` (team=obs) are matched by `obs`.
    let ship = policy("ship", serde_json::json!({}));
    // `obs`'s own template is labelled differently: a policy selecting its own sidecars
    // is an invalid spec (see `stored_policy_the_crd_refuses_selects_nothing`).
    let obs = policy(
        "obs",
        serde_json::json!({"selector": {"matchLabels": {"team": "obs"}},
                           "template": {"metadata": {"labels": {"team": "audit"}},
                                        "spec": {"containers": [{"name": "a", "image": "a"}]}}}),
    );
    assert!(obs.selector.is_ok(), "{:?}", obs.selector);
    let sc = sidecar_for(&main_pod("web-0"), &ship);
    assert!(
        obs.selects(&sc.labels),
        "precondition: the selector matches the sidecar's labels"
    );
    assert!(plan(&sc, &[&ship, &obs], &[]).is_empty());
}

#[test]
fn terminating_sidecar_blocks_recreation_until_gone() {
    let p = policy("ship", serde_json::json!({}));
    let m = main_pod("web-0");
    let mut s = sidecar_for(&m, &p);
    s.deleting = true;
    assert!(plan(&m, &[&p], &[&s]).is_empty());
}

#[test]
fn foreign_pod_holding_the_name_is_reported_not_touched() {
    let p = policy("ship", serde_json::json!({}));
    let m = main_pod("web-0");
    let foreign = PodView {
        name: "web-0-ship".into(),
        uid: "uid-foreign".into(),
        namespace: "shop".into(),
        ..PodView::default()
    };
    let plan1 = plan_pod(&m, &[&p], &[], |n| (n == "web-0-ship").then_some(&foreign));
    assert!(plan1.creates.is_empty() && plan1.deletes.is_empty());
    assert_eq!(
        plan1.collisions,
        vec![Collision {
            name: "web-0-ship".into(),
            policy: "ship".into(),
            holder_uid: "uid-foreign".into()
        }]
    );
    // A sidecar of ours whose owner reference is gone (orphaned by `--cascade=orphan`, or
    // removed by hand) is not a collision: it is deleted, and the create waits for it.
    let mut orphan = sidecar_for(&m, &p);
    orphan.owner = None;
    let plan2 = plan(&m, &[&p], &[&orphan]);
    assert!(plan2.creates.is_empty() && plan2.collisions.is_empty());
    assert_eq!(
        plan2.deletes,
        [DeleteSidecar {
            name: "web-0-ship".into(),
            uid: orphan.uid.clone(),
            policy: "ship".into(),
            reason: DeleteReason::Orphaned,
        }]
    );
    assert_eq!(plan2.waiting_for, ["web-0-ship"]);
    // Ambiguous short names: (a-b, c) and (a, b-c) both want "a-b-c".
    let c = policy(
        "c",
        serde_json::json!({"selector": {"matchLabels": {"app": "web"}}}),
    );
    let bc = policy("b-c", serde_json::json!({}));
    let ab = main_pod("a-b");
    let a = main_pod("a");
    let taken = sidecar_for(&ab, &c);
    assert_eq!(taken.name, "a-b-c");
    let plan3 = plan_pod(&a, &[&bc], &[], |n| (n == taken.name).then_some(&taken));
    assert_eq!(plan3.collisions.len(), 1);
    assert!(plan3.creates.is_empty());
}

/// Who holds a pair's name, as a table: (holder, expected).
#[test]
fn holders_of_a_pairs_name() {
    let p = policy("ship", serde_json::json!({}));
    let m = main_pod("web-0");
    let ours = sidecar_for(&m, &p);
    // The same name recreated (a StatefulSet's web-0): the old Pod's sidecar.
    let mut earlier_main = m.clone();
    earlier_main.uid = "uid-web-0-before".into();
    let predecessor = sidecar_for(&earlier_main, &p);
    let mut orphan = ours.clone();
    orphan.owner = None;
    let other_policy = sidecar_for(&m, &policy("other", serde_json::json!({})));
    let mut renamed = other_policy.clone();
    renamed.name = ours.name.clone();
    let mut other_owner = predecessor.clone();
    if let Some(o) = other_owner.owner.as_mut() {
        o.name = "someone-else".into();
    }
    let foreign = PodView {
        name: ours.name.clone(),
        uid: "uid-foreign".into(),
        namespace: "shop".into(),
        ..PodView::default()
    };
    let cases = [
        ("ours", &ours, Holder::Ours),
        ("predecessor", &predecessor, Holder::Predecessor),
        ("orphan", &orphan, Holder::Predecessor),
        ("another policy's sidecar", &renamed, Holder::Foreign),
        (
            "a sidecar of another main Pod",
            &other_owner,
            Holder::Foreign,
        ),
        ("a user's Pod", &foreign, Holder::Foreign),
    ];
    for (what, h, want) in cases {
        assert_eq!(holder(&m, "ship", h), want, "{what}");
    }
}

/// A main Pod recreated under its name: the old sidecar, terminating, is waited for; not
/// yet terminating, it is deleted first. Never a collision.
#[test]
fn recreated_main_pod_waits_for_its_predecessors_sidecar() {
    let p = policy("ship", serde_json::json!({}));
    let m = main_pod("web-0");
    let mut earlier = m.clone();
    earlier.uid = "uid-web-0-before".into();
    let mut old = sidecar_for(&earlier, &p);
    old.deleting = true;
    let waiting = plan_pod(&m, &[&p], &[], |n| (n == old.name).then_some(&old));
    assert_eq!(
        waiting,
        PodPlan {
            waiting_for: vec!["web-0-ship".into()],
            ..PodPlan::default()
        }
    );
    old.deleting = false;
    let deleting = plan_pod(&m, &[&p], &[], |n| (n == old.name).then_some(&old));
    assert_eq!(deleting.deletes.len(), 1);
    assert_eq!(deleting.deletes[0].reason, DeleteReason::Orphaned);
    assert_eq!(deleting.deletes[0].uid, old.uid);
    assert!(deleting.collisions.is_empty() && deleting.creates.is_empty());
    assert_eq!(deleting.blocked_names().collect::<Vec<_>>(), ["web-0-ship"]);
}

/// A sidecar that ended Failed or Succeeded is replaced (deleted; recreated once gone),
/// unless the policy is paused; a terminating one is left to finish.
#[test]
fn terminal_sidecars_are_replaced() {
    let p = policy("ship", serde_json::json!({}));
    let paused = policy("ship", serde_json::json!({"paused": true}));
    let m = main_pod("web-0");
    for phase in [Phase::Failed, Phase::Succeeded] {
        let mut s = sidecar_for(&m, &p);
        s.phase = phase;
        let replan = plan(&m, &[&p], &[&s]);
        assert_eq!(replan.deletes.len(), 1, "{phase:?}");
        assert_eq!(replan.deletes[0].reason, DeleteReason::Failed);
        assert!(replan.creates.is_empty(), "recreated only once gone");
        assert!(plan(&m, &[&paused], &[&s]).is_empty(), "paused: {phase:?}");
        s.deleting = true;
        assert!(plan(&m, &[&p], &[&s]).is_empty(), "terminating: {phase:?}");
    }
}

/// Sidecars reached without a main Pod: deleted when they have no owner Pod, unless their
/// policy is paused or unreadable.
#[test]
fn orphaned_sidecars_are_deleted_unless_their_policy_holds_them() {
    let p = policy("ship", serde_json::json!({}));
    let paused = policy("ship", serde_json::json!({"paused": true}));
    let invalid = policy("ship", serde_json::json!({"selector": {}}));
    let m = main_pod("web-0");
    let owned = sidecar_for(&m, &p);
    let mut orphan = owned.clone();
    orphan.owner = None;
    let mut terminating = orphan.clone();
    terminating.deleting = true;
    // A Pod of a workload that carries our labels (copied into a Deployment's or a Job's
    // template): its controller would recreate it at once, a delete/recreate loop. Only a
    // Pod without a controller owner is an orphan of ours.
    let owned_by = |api_version: &str, kind: &str| {
        let mut pod = render(&m, &p);
        pod.metadata.uid = Some(format!("uid-{kind}-pod"));
        pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: "web".into(),
                uid: format!("uid-{kind}"),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        PodView::from_pod(&pod).expect("view")
    };
    let of_replica_set = owned_by("apps/v1", "ReplicaSet");
    let of_job = owned_by("batch/v1", "Job");
    let of_stateful_set = owned_by("apps/v1", "StatefulSet");
    let of_custom = owned_by("example.com/v1", "Pod");
    let cases: [(&str, &PodView, Option<&PolicyView>, bool); 12] = [
        ("owned", &owned, Some(&p), false),
        ("orphan", &orphan, Some(&p), true),
        ("orphan, policy gone", &orphan, None, true),
        ("orphan, paused policy", &orphan, Some(&paused), false),
        ("orphan, invalid policy", &orphan, Some(&invalid), false),
        ("terminating orphan", &terminating, Some(&p), false),
        ("a main Pod", &m, Some(&p), false),
        (
            "labelled Pod of a ReplicaSet",
            &of_replica_set,
            Some(&p),
            false,
        ),
        (
            "labelled Pod of a ReplicaSet, policy gone",
            &of_replica_set,
            None,
            false,
        ),
        ("labelled Pod of a Job", &of_job, None, false),
        (
            "labelled Pod of a StatefulSet",
            &of_stateful_set,
            None,
            false,
        ),
        (
            "labelled Pod owned by a custom kind Pod",
            &of_custom,
            None,
            false,
        ),
    ];
    for (what, s, policy, deleted) in cases {
        let d = plan_orphan(s, policy);
        assert_eq!(d.is_some(), deleted, "{what}: {d:?}");
        if let Some(d) = d {
            assert_eq!(
                (d.reason, d.uid.as_str()),
                (DeleteReason::Orphaned, s.uid.as_str())
            );
        }
    }
}

/// A Pod of another namespace carrying our labels, a main Pod's uid and an owner reference to
/// it (whoever may create Pods there can write all of that) is nobody's sidecar here: the main
/// Pod still gets its own, and the forged Pod is neither deleted nor taken for a duplicate.
#[test]
fn a_forged_sidecar_in_another_namespace_is_nobodys() {
    let p = policy("ship", serde_json::json!({}));
    let victim = main_pod("web-0");
    let ours = sidecar_for(&victim, &p);
    let mut forged = ours.clone();
    forged.namespace = "attacker".into();
    forged.uid = "uid-forged".into();
    let mut forged_copy = forged.clone();
    forged_copy.name = "web-0-ship-copy".into();
    let mut forged_failed = forged.clone();
    forged_failed.phase = Phase::Failed;
    assert!(ours.is_sidecar_of(&victim));
    assert!(!forged.is_sidecar_of(&victim), "another namespace");
    // (case, policies, sidecars indexed under the victim's uid, creates, deletes)
    type Case<'a> = (
        &'a str,
        Vec<&'a PolicyView>,
        Vec<&'a PodView>,
        Vec<&'a str>,
        Vec<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "forged at the deterministic name",
            vec![&p],
            vec![&forged],
            vec!["web-0-ship"],
            vec![],
        ),
        (
            "forged beside the real one",
            vec![&p],
            vec![&ours, &forged_copy],
            vec![],
            vec![],
        ),
        ("forged, policy gone", vec![], vec![&forged], vec![], vec![]),
        (
            "forged, Failed",
            vec![&p],
            vec![&forged_failed],
            vec!["web-0-ship"],
            vec![],
        ),
    ];
    for (case, policies, sidecars, creates, deletes) in cases {
        // Names are looked up in the victim's namespace only.
        let got = plan_pod(&victim, &policies, &sidecars, |n| {
            sidecars
                .iter()
                .copied()
                .find(|s| s.name == n && s.namespace == victim.namespace)
        });
        let created: Vec<String> = got
            .creates
            .iter()
            .map(|c| c.metadata.name.clone().unwrap_or_default())
            .collect();
        let deleted: Vec<&str> = got.deletes.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(created, creates, "{case}: creates");
        assert_eq!(deleted, deletes, "{case}: deletes");
        assert!(got.collisions.is_empty(), "{case}: {got:?}");
    }
}

#[test]
fn duplicate_sidecars_of_one_pair_are_reduced_to_one() {
    let p = policy("ship", serde_json::json!({}));
    let m = main_pod("web-0");
    let s = sidecar_for(&m, &p);
    let mut extra = s.clone();
    extra.name = "web-0-ship-copy".into();
    extra.uid = "uid-copy".into();
    let plan1 = plan(&m, &[&p], &[&s, &extra]);
    assert_eq!(plan1.deletes.len(), 1);
    assert_eq!(plan1.deletes[0].name, "web-0-ship-copy");
    assert_eq!(plan1.deletes[0].reason, DeleteReason::Duplicate);
}

mod status {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use sidecar_api::constants::{condition, reason};

    /// The counts of `p` over `mains`, looking Pods up among `sidecars`.
    fn counts<'a>(
        p: &PolicyView,
        mains: impl IntoIterator<Item = &'a PodView>,
        sidecars: &[&'a PodView],
    ) -> Counts {
        observe(p, mains, |n| sidecars.iter().copied().find(|s| s.name == n)).counts
    }

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("time"))
    }

    fn cond<'a>(s: &'a sidecar_api::SidecarPolicyStatus, ty: &str) -> (&'a str, &'a str) {
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == ty)
            .expect("condition");
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn counts_and_conditions_follow_the_pods() {
        let p = policy("ship", serde_json::json!({}));
        let mains: Vec<PodView> = (0..3).map(|i| main_pod(&format!("web-{i}"))).collect();
        let mut scs: Vec<PodView> = mains.iter().map(|m| sidecar_for(m, &p)).collect();
        scs[0].ready = true;
        scs[1].ready = true;
        let mut stale = scs[2].clone();
        stale.labels.insert(LABEL_TEMPLATE_HASH, "old");

        // 2 of 3 ready and current, one not ready: not Ready, converging.
        let c = counts(&p, &mains, &scs.iter().collect::<Vec<_>>());
        assert_eq!(
            (
                c.matched,
                c.sidecars,
                c.updated,
                c.ready,
                c.converged,
                c.missing
            ),
            (3, 3, 3, 2, 2, 0)
        );
        let s = compute_status(&p, c, &Problems::default(), None, t(100));
        assert_eq!(
            cond(&s, condition::READY),
            ("False", reason::SIDECARS_NOT_READY)
        );
        assert_eq!(
            cond(&s, condition::PROGRESSING),
            ("False", reason::CONVERGED)
        );
        assert_eq!(s.ready.as_deref(), Some("2/3"));

        // A stale sidecar: RollingOut.
        let mixed = [scs[0].clone(), scs[1].clone(), stale];
        let c = counts(&p, &mains, &mixed.iter().collect::<Vec<_>>());
        assert_eq!((c.updated, c.sidecars), (2, 3));
        let s2 = compute_status(&p, c, &Problems::default(), Some(&s), t(200));
        assert_eq!(
            cond(&s2, condition::PROGRESSING),
            ("True", reason::ROLLING_OUT)
        );
        // Unchanged condition keeps its transition time; a changed one gets `now`.
        let ltt = |s: &sidecar_api::SidecarPolicyStatus, ty: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == ty)
                .map(|c| c.last_transition_time.clone())
        };
        assert_eq!(ltt(&s2, condition::READY), Some(t(100)));
        assert_eq!(ltt(&s2, condition::PROGRESSING), Some(t(200)));

        // Missing sidecars refused by the server: Degraded and not Progressing.
        let c = counts(&p, &mains, &[]);
        assert_eq!(c.missing, 3);
        let problems = Problems {
            refused: Some("quota".into()),
            ..Problems::default()
        };
        let s3 = compute_status(&p, c, &problems, Some(&s2), t(300));
        assert_eq!(
            cond(&s3, condition::DEGRADED),
            ("True", reason::CREATE_REFUSED)
        );
        assert_eq!(
            cond(&s3, condition::PROGRESSING),
            ("False", reason::CREATE_REFUSED)
        );

        // Recomputing with nothing changed yields an equal status (no write).
        let again = compute_status(&p, c, &problems, Some(&s3), t(400));
        assert_eq!(again, s3);
    }

    /// kstatus's abnormal-true conditions: `Reconciling` while sidecars are created,
    /// replaced or waited for; `Stalled` when no retry fixes it; neither once converged,
    /// paused or waiting for the user (`OnDelete`).
    #[test]
    fn reconciling_and_stalled_follow_kstatus() {
        let p = policy("ship", serde_json::json!({}));
        let paused = policy("ship", serde_json::json!({"paused": true}));
        let on_delete = policy(
            "ship",
            serde_json::json!({"updateStrategy": {"type": "OnDelete"}}),
        );
        let mains: Vec<PodView> = (0..2).map(|i| main_pod(&format!("web-{i}"))).collect();
        let ready: Vec<PodView> = mains
            .iter()
            .map(|m| PodView {
                ready: true,
                ..sidecar_for(m, &p)
            })
            .collect();
        let not_ready: Vec<PodView> = mains.iter().map(|m| sidecar_for(m, &p)).collect();
        let mut stale = ready.clone();
        stale[1].labels.insert(LABEL_TEMPLATE_HASH, "old");
        let problem = |refused: Option<&str>, collisions: &[&str], failing: &[&str]| Problems {
            refused: refused.map(Into::into),
            collisions: collisions.iter().map(|s| s.to_string()).collect(),
            failing: failing.iter().map(|s| s.to_string()).collect(),
            ..Problems::default()
        };
        let none = Problems::default();
        let invalid_template = Problems {
            invalid_template: Some("spec.containers[0].image: Required value".into()),
            ..Problems::default()
        };
        // (case, policy, sidecars, problems, Reconciling, Stalled)
        type Case<'a> = (
            &'a str,
            &'a PolicyView,
            &'a [PodView],
            Problems,
            (&'a str, &'a str),
            (&'a str, &'a str),
        );
        let cases: Vec<Case> = vec![
            (
                "converged",
                &p,
                &ready,
                none.clone(),
                ("False", reason::CONVERGED),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "sidecars missing",
                &p,
                &[],
                none.clone(),
                ("True", reason::ROLLING_OUT),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "waiting for Ready",
                &p,
                &not_ready,
                none.clone(),
                ("True", reason::SIDECARS_NOT_READY),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "rolling out",
                &p,
                &stale,
                none.clone(),
                ("True", reason::ROLLING_OUT),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "OnDelete waits for the user",
                &on_delete,
                &stale,
                none.clone(),
                ("False", reason::WAITING_FOR_DELETE),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "paused",
                &paused,
                &[],
                none.clone(),
                ("False", reason::PAUSED),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "refused",
                &p,
                &[],
                problem(Some("quota"), &[], &[]),
                ("False", reason::CREATE_REFUSED),
                ("True", reason::CREATE_REFUSED),
            ),
            (
                "invalid template",
                &p,
                &[],
                invalid_template,
                ("False", reason::INVALID_TEMPLATE),
                ("True", reason::INVALID_TEMPLATE),
            ),
            (
                "name collision",
                &p,
                &ready[..1],
                problem(None, &["web-1-ship"], &[]),
                ("False", reason::NAME_COLLISION),
                ("True", reason::NAME_COLLISION),
            ),
            (
                "failing: retried with backoff",
                &p,
                &ready,
                problem(None, &[], &["web-0-ship"]),
                ("False", reason::CONVERGED),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "a refusal with nothing left to create",
                &p,
                &ready,
                problem(Some("quota"), &[], &[]),
                ("False", reason::CONVERGED),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "a collision behind failing sidecars",
                &p,
                &ready[..1],
                problem(None, &["web-1-ship"], &["web-0-ship"]),
                ("False", reason::NAME_COLLISION),
                ("True", reason::NAME_COLLISION),
            ),
        ];
        for (case, policy, sidecars, problems, reconciling, stalled) in cases {
            let c = counts(policy, &mains, &sidecars.iter().collect::<Vec<_>>());
            let s = compute_status(policy, c, &problems, None, t(1));
            assert_eq!(
                cond(&s, condition::RECONCILING),
                reconciling,
                "{case}: Reconciling"
            );
            assert_eq!(cond(&s, condition::STALLED), stalled, "{case}: Stalled");
            let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
            assert_eq!(types, condition::ALL, "{case}");
        }
    }

    /// Only the sidecar of a live, selected main Pod counts; a failed one counts as
    /// neither ready nor up to date; names held by others are collisions (not while
    /// paused), and never a predecessor's sidecar.
    #[test]
    fn observe_counts_only_sidecars_of_live_selected_pods() {
        let p = policy("ship", serde_json::json!({}));
        let mains: Vec<PodView> = (0..4).map(|i| main_pod(&format!("web-{i}"))).collect();
        let mut pods: Vec<PodView> = mains.iter().map(|m| sidecar_for(m, &p)).collect();
        for s in &mut pods {
            s.ready = true;
        }
        pods[1].phase = Phase::Failed;
        pods[1].ready = false;
        // web-2's name is held by a user's Pod.
        pods[2] = PodView {
            name: pods[2].name.clone(),
            uid: "uid-foreign".into(),
            namespace: "shop".into(),
            ..PodView::default()
        };
        // web-3's sidecar belongs to an earlier web-3 (recreated), still terminating.
        let mut earlier = mains[3].clone();
        earlier.uid = "uid-web-3-before".into();
        pods[3] = sidecar_for(&earlier, &p);
        pods[3].deleting = true;
        // Orphans and sidecars of Pods that are gone or not selected never count.
        let gone = main_pod("gone-0");
        let mut unselected = main_pod("other-0");
        unselected.labels = Labels::from_iter([("app", "other")]);
        let mut orphan = sidecar_for(&gone, &p);
        orphan.owner = None;
        orphan.ready = true;
        let mut of_unselected = sidecar_for(&unselected, &p);
        of_unselected.ready = true;
        pods.extend([orphan, of_unselected, unselected]);
        let all: Vec<&PodView> = mains.iter().chain(&pods).collect();
        let find = |n: &str| all.iter().copied().find(|v| v.name == n);
        let o = observe(&p, mains.iter().chain(&pods), find);
        let c = o.counts;
        assert_eq!(
            (
                c.matched, c.sidecars, c.updated, c.ready, c.failed, c.missing
            ),
            (4, 2, 1, 1, 1, 2)
        );
        assert_eq!(o.collisions, [sidecar_name("web-2", "ship")]);
        let s = compute_status(&p, c, &Problems::default(), None, t(1));
        assert_eq!(s.ready.as_deref(), Some("1/4"));
        let progressing = s
            .conditions
            .iter()
            .find(|c| c.type_ == condition::PROGRESSING)
            .expect("Progressing");
        assert!(
            progressing.message.contains("1 sidecars ended Failed"),
            "{}",
            progressing.message
        );
        let paused = policy("ship", serde_json::json!({"paused": true}));
        assert!(observe(&paused, &mains, find).collisions.is_empty());
    }

    /// Degraded says why, in this order: InvalidSpec, InvalidTemplate, CreateRefused, SidecarsFailing,
    /// NameCollision; a policy the operator cannot act on is never Ready.
    #[test]
    fn degraded_reasons_in_order_and_invalid_spec_is_not_ready() {
        let p = policy("ship", serde_json::json!({}));
        let invalid = policy("ship", serde_json::json!({"selector": {}}));
        let full = Problems {
            refused: Some("quota".into()),
            failing: vec!["web-0-ship".into()],
            collisions: vec!["web-1-ship".into()],
            invalid_template: None,
            ..Problems::default()
        };
        let c = Counts::default();
        let cases = [
            (&invalid, Problems::default(), reason::INVALID_SPEC),
            (&invalid, full.clone(), reason::INVALID_SPEC),
            (
                &p,
                Problems {
                    invalid_template: Some("refused".into()),
                    ..full.clone()
                },
                reason::INVALID_TEMPLATE,
            ),
            (&p, full.clone(), reason::CREATE_REFUSED),
            (
                &p,
                Problems {
                    refused: None,
                    ..full.clone()
                },
                reason::SIDECARS_FAILING,
            ),
            (
                &p,
                Problems {
                    collisions: vec!["web-1-ship".into()],
                    ..Problems::default()
                },
                reason::NAME_COLLISION,
            ),
            (&p, Problems::default(), reason::AS_EXPECTED),
        ];
        for (policy, problems, want) in cases {
            let s = compute_status(policy, c, &problems, None, t(1));
            assert_eq!(cond(&s, condition::DEGRADED).1, want, "{problems:?}");
        }
        let s = compute_status(&invalid, c, &Problems::default(), None, t(1));
        assert_eq!(
            cond(&s, condition::READY),
            ("False", reason::INVALID_SPEC),
            "no matched Pod, but not Ready either"
        );
    }

    #[test]
    fn paused_and_empty_policies() {
        let paused = policy("p", serde_json::json!({"paused": true}));
        let m = main_pod("web-0");
        let c = counts(&paused, [&m], &[]);
        assert_eq!(
            c.matched, 1,
            "a paused policy still reports what it matches"
        );
        let s = compute_status(&paused, c, &Problems::default(), None, t(1));
        assert_eq!(cond(&s, condition::PAUSED), ("True", reason::PAUSED));
        assert_eq!(cond(&s, condition::PROGRESSING), ("False", reason::PAUSED));
        let none = policy(
            "n",
            serde_json::json!({"selector": {"matchLabels": {"app": "nothing"}}}),
        );
        let s = compute_status(
            &none,
            counts(&none, [&m], &[]),
            &Problems::default(),
            None,
            t(1),
        );
        assert_eq!(
            cond(&s, condition::READY),
            ("True", reason::NO_MATCHING_PODS)
        );
        assert_eq!(s.ready.as_deref(), Some("0/0"));
    }
}

/// A policy stored under an older, laxer CRD, which the current rules refuse, selects
/// nothing and says why, naming the field; so does a name too long for a label value.
#[test]
fn stored_policy_the_crd_refuses_selects_nothing() {
    let m = main_pod("web-0");
    let cases = [
        (
            "ship",
            serde_json::json!({"updateStrategy": {"maxUnavailable": "0%"}}),
            "spec.updateStrategy.maxUnavailable",
        ),
        (
            "ship",
            serde_json::json!({"template": {"spec": {"containers": []}}}),
            "spec.template.spec.containers",
        ),
        (
            "ship",
            serde_json::json!({"selector": {"matchLabels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE}}}),
            "spec.selector",
        ),
        (
            &"p".repeat(64),
            serde_json::json!({}),
            "metadata.name is 64 characters long",
        ),
    ];
    for (name, spec, field) in cases {
        let p = policy(name, spec);
        let why = p.selector.as_ref().expect_err("refused");
        assert!(why.contains(field), "{name}: {why:?} names {field}");
        assert_eq!(eligibility(&m, &p), Err(Ineligible::InvalidSpec));
        assert!(plan(&m, &[&p], &[]).is_empty(), "{name}: no create");
        // Sidecars made before the CRD changed are kept: no delete either.
        let made = sidecar_for(&m, &policy(name, serde_json::json!({})));
        assert!(plan(&m, &[&p], &[&made]).is_empty(), "{name}: no delete");
    }
    assert!(
        policy(&"p".repeat(63), serde_json::json!({}))
            .selector
            .is_ok()
    );
}

/// A status-only revision keeps what was derived from the spec; a new generation
/// derives it again.
#[test]
fn policy_update_rederives_only_on_a_new_generation() {
    let v1 = policy("ship", serde_json::json!({}));
    let mut echo = (*v1.policy).clone();
    echo.spec.template.metadata = None; // a different spec under the same generation
    let same = PolicyView::update(Arc::new(echo.clone()), &v1);
    assert_eq!(same.hash, v1.hash, "same generation: derived values reused");
    echo.metadata.generation = Some(2);
    let next = PolicyView::update(Arc::new(echo), &v1);
    assert_ne!(next.hash, v1.hash, "new generation: derived again");
    assert_eq!(next.generation, 2);
}

/// Rollout steps as a table: the budget counts sidecars not Ready, missing, and deletes
/// sent but not yet seen.
#[test]
fn rollout_steps_stay_within_max_unavailable() {
    let strategy = |max: serde_json::Value| {
        policy(
            "ship",
            serde_json::json!({"updateStrategy": {"type": "RollingUpdate", "maxUnavailable": max}}),
        )
    };
    let mains: Vec<PodView> = (0..4).map(|i| main_pod(&format!("web-{i}"))).collect();
    let stale_ready = |p: &PolicyView| -> Vec<PodView> {
        mains
            .iter()
            .map(|m| {
                let mut s = sidecar_for(m, p);
                s.labels.insert(LABEL_TEMPLATE_HASH, "old");
                s.ready = true;
                s
            })
            .collect()
    };
    let steps = |p: &PolicyView, sidecars: &[PodView], pending: &[&str]| -> Vec<String> {
        let all: Vec<&PodView> = mains.iter().chain(sidecars).collect();
        plan_rollout(
            p,
            &mains,
            |n| all.iter().copied().find(|v| v.name == n),
            |uid| pending.contains(&uid),
        )
        .into_iter()
        .map(|r| r.main_name)
        .collect()
    };
    let one = strategy(serde_json::json!(1));
    let two = strategy(serde_json::json!(2));
    let sc = stale_ready(&one);
    assert_eq!(steps(&one, &sc, &[]), ["web-0"]);
    assert_eq!(steps(&two, &stale_ready(&two), &[]), ["web-0", "web-1"]);
    // A delete already sent (not yet in the cache) spends the budget.
    let pending = [sc[0].uid.as_str()];
    assert!(steps(&one, &sc, &pending).is_empty());
    let sc2 = stale_ready(&two);
    assert_eq!(steps(&two, &sc2, &[sc2[0].uid.as_str()]), ["web-1"]);
    // A stale sidecar that is not Ready costs nothing and goes first.
    let mut unready = sc.clone();
    unready[3].ready = false;
    assert_eq!(steps(&one, &unready, &[]), ["web-3"]);
    // A missing sidecar counts as unavailable.
    assert!(steps(&one, &sc[1..], &[]).is_empty());
    // Failed sidecars are the pod controller's; up-to-date ones are never touched.
    let mut failed = sc.clone();
    failed[0].phase = Phase::Failed;
    failed[0].ready = false;
    assert!(
        steps(&one, &failed, &[]).is_empty(),
        "one unavailable already"
    );
    let current: Vec<PodView> = mains.iter().map(|m| sidecar_for(m, &one)).collect();
    assert!(steps(&one, &current, &[]).is_empty());
    // Paused or OnDelete: nothing.
    let paused = policy("ship", serde_json::json!({"paused": true}));
    assert!(steps(&paused, &stale_ready(&paused), &[]).is_empty());
    let on_delete = policy(
        "ship",
        serde_json::json!({"updateStrategy": {"type": "OnDelete"}}),
    );
    assert!(steps(&on_delete, &stale_ready(&on_delete), &[]).is_empty());
}

/// Until the ClusterSidecarPolicies are listed, their sidecars are not judged (a policy missing
/// from a list that never happened is not gone); a SidecarPolicy's always are.
#[test]
fn cluster_policies_sidecars_wait_for_a_list_to_be_judged() {
    let m = main_pod("web-0");
    let namespaced = sidecar_for(&m, &policy("ship", serde_json::json!({})));
    let csp = crate::test_fixtures::cluster(
        "ship",
        serde_json::json!({"matchLabels": {"t": "a"}}),
        serde_json::json!({}),
    );
    let of_cluster = sidecar_for(&m, &csp.instance("shop"));
    // (case, sidecar, cluster policies listed, judgeable)
    let cases = [
        ("SidecarPolicy's, listed", &namespaced, true, true),
        ("SidecarPolicy's, not listed", &namespaced, false, true),
        ("ClusterSidecarPolicy's, listed", &of_cluster, true, true),
        (
            "ClusterSidecarPolicy's, not listed",
            &of_cluster,
            false,
            false,
        ),
        ("a main Pod", &m, false, true),
    ];
    for (case, s, known, want) in cases {
        assert_eq!(judgeable(s, known), want, "{case}");
    }
    // Not judged means not planned: no PolicyGone for a sidecar of an unlisted cluster policy.
    let kept: Vec<&PodView> = [&of_cluster]
        .into_iter()
        .filter(|s| judgeable(s, false))
        .collect();
    assert!(plan(&m, &[], &kept).is_empty());
    assert_eq!(
        plan(&m, &[], &[&of_cluster]).deletes.len(),
        1,
        "judged: policy gone"
    );
}
