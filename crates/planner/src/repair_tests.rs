//! Container mode's repair step, as tables.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use sidecar_api::{SidecarPolicy, SidecarPolicySpec};

use crate::repair::*;
use crate::*;

fn policy(strategy: serde_json::Value, paused: bool) -> PolicyView {
    let spec = json!({
        "mode": "Container",
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"spec": {"initContainers": [
            {"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"}]}},
        "updateStrategy": strategy,
        "paused": paused,
    });
    let spec: SidecarPolicySpec = serde_json::from_value(spec).expect("spec");
    let mut p = SidecarPolicy::new("mesh", spec);
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some("uid-mesh".into());
    PolicyView::new(Arc::new(p))
}

fn rolling(max: serde_json::Value) -> PolicyView {
    policy(
        json!({"type": "RollingUpdate", "maxUnavailable": max, "allowEviction": true}),
        false,
    )
}

/// Selected Pod `name` owned by `owner` (a ReplicaSet uid; "" for none, "job:" prefix for
/// a Job), with record `current` (true), an older one (false) or none, Ready or not.
fn pod(name: &str, owner: &str, record: Option<bool>, ready: bool, p: &PolicyView) -> PodView {
    let injected = record.map(|current| {
        let hash = if current { p.hash.as_str() } else { "old" };
        format!("mesh={hash}").into()
    });
    let owner = (!owner.is_empty()).then(|| {
        let (api_version, kind, uid) = match owner.split_once(':') {
            Some(("job", uid)) => (OwnerApi::Other, "Job", uid),
            Some((kind, uid)) => (OwnerApi::Apps, kind, uid),
            None => (OwnerApi::Apps, "ReplicaSet", owner),
        };
        OwnerView {
            api_version,
            kind: kind.into(),
            name: format!("{uid}-name"),
            uid: uid.into(),
        }
    });
    PodView {
        namespace: "shop".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: Labels::from_iter([("app", "web")]),
        phase: Phase::Running,
        ready,
        owner,
        injected,
        ..PodView::default()
    }
}

fn sent(pod: &str, owner: &str, siblings: &[&str]) -> SentEviction {
    SentEviction {
        name: pod.into(),
        overdue: false,
        uid: format!("uid-{pod}"),
        owner_uid: owner.into(),
        siblings: Arc::new(
            siblings
                .iter()
                .map(|s| format!("uid-{s}"))
                .collect::<BTreeSet<_>>(),
        ),
    }
}

fn names(r: &Repair) -> Vec<&str> {
    r.evict.iter().map(|e| e.name.as_str()).collect()
}

#[test]
fn container_mode_reports_only_unless_rolling_update_is_asked_for() {
    let on_delete_default = policy(json!({}), false);
    let pods = [pod("a", "rs", None, true, &on_delete_default)];
    let r = plan_repair(
        &on_delete_default,
        &pods,
        &[sent("x", "rs", &[])],
        RepairLimits::default(),
    );
    assert!(!r.active);
    assert!(r.evict.is_empty());
    assert_eq!(
        r.done,
        vec!["uid-x"],
        "a repair turned off forgets its evictions"
    );
    let paused = policy(
        json!({"type": "RollingUpdate", "allowEviction": true}),
        true,
    );
    assert!(
        plan_repair(&paused, &pods, &[], RepairLimits::default())
            .evict
            .is_empty()
    );
    let pod_mode = {
        let mut spec = rolling(json!(1)).policy.spec.clone();
        spec.mode = sidecar_api::Mode::Pod;
        spec.template =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "a", "image": "b"}]}}))
                .expect("template");
        let mut p = SidecarPolicy::new("mesh", spec);
        p.metadata.namespace = Some("shop".into());
        PolicyView::new(Arc::new(p))
    };
    assert!(!plan_repair(&pod_mode, &pods, &[], RepairLimits::default()).active);
}

#[test]
fn the_budget_bounds_evictions_and_unready_drifted_pods_go_first_for_free() {
    let p = rolling(json!(1));
    // (case, pods, sent, evicted now, waiting)
    type Case<'a> = (&'a str, Vec<PodView>, Vec<SentEviction>, Vec<&'a str>, u32);
    let cases: Vec<Case> = vec![
        (
            "one at a time, by name",
            vec![
                pod("c", "rs", None, true, &p),
                pod("b", "rs", Some(false), true, &p),
                pod("a", "rs", Some(true), true, &p),
                pod("d", "rs", None, true, &p),
            ],
            vec![],
            vec!["b"],
            2,
        ),
        (
            "an unready drifted Pod is evicted at no cost, the ready one waits",
            vec![
                pod("a", "rs", None, true, &p),
                pod("z", "rs", None, false, &p),
            ],
            vec![],
            vec!["z"],
            1,
        ),
        (
            "an unready Pod with the sidecar spends the budget",
            vec![
                pod("a", "rs", None, true, &p),
                pod("b", "rs", Some(true), false, &p),
            ],
            vec![],
            vec![],
            1,
        ),
        (
            "an eviction the cache has not seen yet holds the budget",
            vec![
                pod("a", "rs", None, true, &p),
                pod("b", "rs", None, true, &p),
            ],
            vec![sent("a", "rs", &["a", "b"])],
            vec![],
            1,
        ),
        (
            "an evicted Pod gone and not yet replaced holds the budget",
            vec![pod("b", "rs", None, true, &p)],
            vec![sent("a", "rs", &["a", "b"])],
            vec![],
            1,
        ),
        (
            "a replacement not Ready yet holds the budget",
            vec![
                pod("b", "rs", None, true, &p),
                pod("a2", "rs", Some(true), false, &p),
            ],
            vec![sent("a", "rs", &["a", "b"])],
            vec![],
            1,
        ),
        (
            "a replacement Ready with the sidecars frees it",
            vec![
                pod("b", "rs", None, true, &p),
                pod("a2", "rs", Some(true), true, &p),
            ],
            vec![sent("a", "rs", &["a", "b"])],
            vec!["b"],
            0,
        ),
        (
            "a sibling that existed before is no replacement",
            vec![
                pod("b", "rs", None, true, &p),
                pod("c", "rs", Some(true), true, &p),
            ],
            vec![sent("a", "rs", &["a", "b", "c"])],
            vec![],
            1,
        ),
        (
            "another owner's new Pod is no replacement",
            vec![
                pod("b", "rs", None, true, &p),
                pod("x", "rs2", Some(true), true, &p),
            ],
            vec![sent("a", "rs", &["a", "b"])],
            vec![],
            1,
        ),
    ];
    for (case, pods, sent, want, waiting) in cases {
        let r = plan_repair(&p, &pods, &sent, RepairLimits::default());
        assert_eq!(names(&r), want, "{case}");
        assert_eq!(r.waiting, waiting, "{case}: waiting");
        assert_eq!(r.halted, None, "{case}");
    }
}

#[test]
fn percentages_resolve_over_the_selected_pods() {
    let p = rolling(json!("50%"));
    let pods: Vec<PodView> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| pod(n, "rs", None, true, &p))
        .collect();
    let r = plan_repair(&p, &pods, &[], RepairLimits::default());
    assert_eq!((names(&r), r.max_unavailable), (vec!["a", "b"], 2));
    // Each eviction remembers its owner's Pods of the moment.
    assert_eq!(r.evict[0].owner_uid, "rs");
    assert_eq!(r.evict[0].siblings.len(), 4);
    assert_eq!(r.evict[0].drift, Drift::Missing);
}

#[test]
fn a_replacement_without_the_sidecars_halts_the_repair() {
    let p = rolling(json!(3));
    let pods = [
        pod("b", "rs", None, true, &p),
        pod("c", "rs", None, true, &p),
        pod("a2", "rs", None, true, &p),
    ];
    let r = plan_repair(
        &p,
        &pods,
        &[sent("a", "rs", &["a", "b", "c"])],
        RepairLimits::default(),
    );
    assert_eq!(r.halted.as_deref(), Some("a2"));
    assert!(r.evict.is_empty(), "{:?}", names(&r));
    assert_eq!((r.in_flight, r.waiting), (1, 2));
}

#[test]
fn a_replacement_from_an_older_template_is_drifted_not_a_halt() {
    let p = rolling(json!(1));
    let pods = [
        pod("b", "rs", None, true, &p),
        pod("a2", "rs", Some(false), true, &p),
    ];
    let r = plan_repair(
        &p,
        &pods,
        &[sent("a", "rs", &["a", "b"])],
        RepairLimits::default(),
    );
    assert_eq!(r.halted, None);
    assert_eq!(r.done, vec!["uid-a"]);
    assert_eq!(names(&r), vec!["a2"], "evicted again, by name first");
    assert_eq!(r.waiting, 1);
}

#[test]
fn pods_no_controller_recreates_are_reported_never_evicted() {
    let p = rolling(json!("100%"));
    let pods = [
        pod("bare", "", None, true, &p),
        pod("job-pod", "job:j1", Some(false), true, &p),
        pod("workflow-step", "Workflow:w1", None, true, &p),
        pod("db-0", "StatefulSet:ss", None, true, &p),
        pod("agent-x", "DaemonSet:ds", None, true, &p),
        pod("web", "rs", None, true, &p),
    ];
    let r = plan_repair(&p, &pods, &[], RepairLimits::default());
    assert_eq!(names(&r), vec!["agent-x", "db-0", "web"]);
    assert_eq!(r.unowned, vec!["bare", "job-pod", "workflow-step"]);
}

/// The allowlist names kinds of one API group each: `apps/v1` ReplicaSet, StatefulSet and
/// DaemonSet, core `v1` ReplicationController. A custom resource that happens to share the
/// kind's name (`ReplicaSet` of `example.com`) recreates nothing the operator knows of: never
/// evicted. Nor is a mirror Pod (a kubelet's static Pod, owned by its Node): it is not even
/// selected, since no webhook can ever give it the sidecars.
#[test]
fn only_the_builtin_controllers_of_their_own_group_are_evicted() {
    let p = rolling(json!("100%"));
    let owned = |name: &str, api_version: &str, kind: &str, annotations: serde_json::Value| {
        let raw: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                "labels": {"app": "web"}, "annotations": annotations,
                "ownerReferences": [{"apiVersion": api_version, "kind": kind, "name": "w",
                                     "uid": format!("owner-{name}"), "controller": true}],
            },
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .expect("pod");
        PodView::from_pod(&raw).expect("view")
    };
    // (Pod, owner apiVersion, owner kind, a mirror Pod, a recreating owner, evicted)
    let cases = [
        ("rs", "apps/v1", "ReplicaSet", false, true, true),
        ("ss", "apps/v1", "StatefulSet", false, true, true),
        ("ds", "apps/v1", "DaemonSet", false, true, true),
        ("rc", "v1", "ReplicationController", false, true, true),
        (
            "crd-rs",
            "example.com/v1",
            "ReplicaSet",
            false,
            false,
            false,
        ),
        (
            "crd-ss",
            "apps.kruise.io/v1beta1",
            "StatefulSet",
            false,
            false,
            false,
        ),
        ("core-rs", "v1", "ReplicaSet", false, false, false),
        (
            "apps-rc",
            "apps/v1",
            "ReplicationController",
            false,
            false,
            false,
        ),
        ("mirror", "v1", "Node", true, false, false),
        ("mirror-rs", "apps/v1", "ReplicaSet", true, true, false),
    ];
    let pods: Vec<PodView> = cases
        .iter()
        .map(|(n, v, k, mirror, _, _)| {
            let annotations = if *mirror {
                json!({"kubernetes.io/config.mirror": "8f2c"})
            } else {
                json!({})
            };
            owned(n, v, k, annotations)
        })
        .collect();
    let r = plan_repair(&p, &pods, &[], RepairLimits::default());
    for ((name, _, kind, mirror, recreates, evicted), v) in cases.iter().zip(&pods) {
        assert_eq!(recreating_owner(v).is_some(), *recreates, "{name} ({kind})");
        assert_eq!(selected(&p, v), !mirror, "{name}: selected");
        assert_eq!(names(&r).contains(name), *evicted, "{name}: evicted {r:?}");
        let reported = r.unowned.iter().any(|u| u == name);
        assert_eq!(
            reported,
            !evicted && !mirror,
            "{name}: reported unowned {r:?}"
        );
    }
}

#[test]
fn ready_with_sidecars_reads_the_injected_containers_statuses() {
    let p = rolling(json!(1));
    let mut m = pod("a", "rs", Some(true), true, &p);
    assert!(ready_with_sidecars(&p, &m));
    m.unready = Some("main,proxy".into());
    assert!(
        !ready_with_sidecars(&p, &m),
        "its native sidecar is not ready"
    );
    m.unready = Some("main".into());
    assert!(
        ready_with_sidecars(&p, &m),
        "only the policy's containers count"
    );
    // A replacement whose sidecar is not ready yet is not done.
    let mut r = pod("a2", "rs", Some(true), true, &p);
    r.unready = Some("proxy".into());
    let step = plan_repair(
        &p,
        &[r],
        &[sent("a", "rs", &["a"])],
        RepairLimits::default(),
    );
    assert_eq!((step.done.len(), step.in_flight), (0, 1));
}

#[test]
fn every_evictable_pod_within_a_larger_budget_goes_in_one_step() {
    let p = rolling(json!(2));
    let pods = [
        pod("a", "rs", Some(true), true, &p),
        pod("b", "rs", Some(true), true, &p),
        pod("c", "rs", None, true, &p),
        pod("d", "rs", None, true, &p),
        pod("e", "rs", None, true, &p),
        pod("bare", "", None, true, &p),
    ];
    let r = plan_repair(&p, &pods, &[], RepairLimits::default());
    assert_eq!(names(&r), vec!["c", "d"]);
    assert_eq!(
        (r.waiting, r.unowned.clone()),
        (1, vec!["bare".to_string()])
    );
}

#[test]
fn pods_left_alone_for_a_name_collision_are_not_evicted_nor_a_halt() {
    let p = rolling(json!(2));
    let mut collided = pod("a", "rs", None, true, &p);
    collided.skipped = Some("mesh=container/proxy".into());
    let r = plan_repair(
        &p,
        std::slice::from_ref(&collided),
        &[],
        RepairLimits::default(),
    );
    assert!(r.evict.is_empty(), "its replacement would collide again");
    // A replacement that collided too is done, not a sign that the webhook is down.
    let mut again = pod("a2", "rs", None, true, &p);
    again.skipped = Some("mesh=container/proxy".into());
    let r = plan_repair(
        &p,
        &[again],
        &[sent("a", "rs", &["a"])],
        RepairLimits::default(),
    );
    assert_eq!((r.halted, r.done), (None, vec!["uid-a".to_string()]));
}

#[test]
fn one_replacement_answers_one_eviction() {
    let p = rolling(json!(2));
    // Two evictions of one owner, one replacement from an older template so far.
    let pods = [
        pod("c", "rs", None, true, &p),
        pod("r1", "rs", Some(false), true, &p),
    ];
    let sent = [
        sent("a", "rs", &["a", "b", "c"]),
        sent("b", "rs", &["a", "b", "c"]),
    ];
    let r = plan_repair(&p, &pods, &sent, RepairLimits::default());
    assert_eq!(r.done, vec!["uid-a"], "r1 answers the first eviction only");
    assert_eq!(r.in_flight, 1, "the second still holds the budget");
    assert_eq!(names(&r), vec!["c"], "budget 2 - 1 in flight: one more");
}

#[test]
fn a_probe_sends_one_eviction_and_unserved_namespaces_none() {
    let p = rolling(json!("100%"));
    let pods: Vec<PodView> = ["a", "b", "c"]
        .iter()
        .map(|n| pod(n, "rs", None, false, &p))
        .collect();
    let probe = RepairLimits {
        probe: true,
        ..RepairLimits::default()
    };
    assert_eq!(names(&plan_repair(&p, &pods, &[], probe)), vec!["a"]);
    let refused = RepairLimits {
        refused: true,
        ..RepairLimits::default()
    };
    let r = plan_repair(&p, &pods, &[sent("x", "rs", &[])], refused);
    assert!(r.refused && !r.unserved && r.evict.is_empty(), "{r:?}");
    assert_eq!(r.done, ["uid-x"]);
    let unserved = RepairLimits {
        served: false,
        ..RepairLimits::default()
    };
    let r = plan_repair(&p, &pods, &[sent("x", "rs", &[])], unserved);
    assert!(!r.active && r.unserved && r.evict.is_empty());
    assert_eq!(r.done, vec!["uid-x"]);
    // While halted, nothing but the probe goes.
    let halted = [
        pod("a", "rs", None, true, &p),
        pod("b2", "rs", None, true, &p),
    ];
    let r = plan_repair(
        &p,
        &halted,
        &[sent("b", "rs", &["a", "b"])],
        RepairLimits::default(),
    );
    assert_eq!(
        (r.halted.as_deref(), r.halting.as_deref()),
        (Some("b2"), Some("uid-b"))
    );
    assert!(r.evict.is_empty());
}

#[test]
fn evictions_of_one_owner_share_its_pod_set() {
    let p = rolling(json!("100%"));
    let pods: Vec<PodView> = ["a", "b"]
        .iter()
        .map(|n| pod(n, "rs", None, true, &p))
        .collect();
    let r = plan_repair(&p, &pods, &[], RepairLimits::default());
    assert!(Arc::ptr_eq(&r.evict[0].siblings, &r.evict[1].siblings));
}

#[test]
fn while_a_refusal_backs_off_every_candidate_waits() {
    let p = rolling(json!("100%"));
    let pods = [
        pod("a", "rs", None, true, &p),
        pod("b", "rs", None, false, &p),
    ];
    let blocked = RepairLimits {
        blocked: true,
        ..RepairLimits::default()
    };
    let r = plan_repair(&p, &pods, &[], blocked);
    assert!(r.active && r.evict.is_empty());
    assert_eq!(r.waiting, 2, "the free, not-Ready one too");
}

#[test]
fn each_workload_keeps_its_own_budget_beside_the_policys() {
    let p = rolling(json!("50%"));
    let mut pods: Vec<PodView> = (0..10)
        .map(|i| pod(&format!("b-{i}"), "big", None, true, &p))
        .collect();
    pods.extend((0..2).map(|i| pod(&format!("s-{i}"), "small", None, true, &p)));
    let r = plan_repair(&p, &pods, &[], RepairLimits::default());
    // The policy's 50% of 12 is 6; the big one's own 50% of 10 is 5, the small one's 1.
    assert_eq!(names(&r), ["b-0", "b-1", "b-2", "b-3", "b-4", "s-0"]);
    assert_eq!(r.waiting, 6);
    // With one of the small workload's evictions in flight, its other Pod waits whatever
    // the policy's budget (an integer applies to each workload as it is).
    let big = rolling(json!("90%"));
    let pods = [
        pod("a-1", "small", None, true, &big),
        pod("b-0", "big", None, true, &big),
        pod("b-1", "big", None, true, &big),
        pod("b-2", "big", None, true, &big),
    ];
    let r = plan_repair(
        &big,
        &pods,
        &[sent("a-0", "small", &["a-0", "a-1"])],
        RepairLimits::default(),
    );
    // The policy's 90% of 4 less 1 in flight leaves 2, both taken by the big workload (its
    // own 90% of 3 is 2); a-1 waits for its own workload's budget.
    assert_eq!(names(&r), ["b-0", "b-1"]);
    assert_eq!(r.waiting, 2);
}

#[test]
fn pods_not_ready_take_a_share_of_the_step_and_only_pods_never_started_are_free() {
    let p = rolling(json!(5));
    let not_ready: Vec<PodView> = (0..20)
        .map(|i| pod(&format!("p-{i:02}"), "rs", None, false, &p))
        .collect();
    let r = plan_repair(&p, &not_ready, &[], RepairLimits::default());
    assert_eq!(
        r.evict.len(),
        5,
        "20 not-Ready Pods never go at once: {r:?}"
    );
    assert_eq!(r.waiting, 15);
    let pending: Vec<PodView> = (0..3)
        .map(|i| PodView {
            phase: Phase::Pending,
            ..pod(&format!("q-{i}"), "rs", None, false, &p)
        })
        .collect();
    let one = rolling(json!(1));
    let r = plan_repair(&one, &pending, &[], RepairLimits::default());
    assert_eq!(names(&r), ["q-0", "q-1", "q-2"], "never started: free");
}

#[test]
fn a_replacement_that_never_comes_halts_its_workload_and_keeps_the_budget() {
    let p = rolling(json!(2));
    let overdue = |mut e: SentEviction| {
        e.overdue = true;
        e
    };
    // (case, pods, sent, evicted now, stalled, done)
    type Case<'a> = (
        &'a str,
        Vec<PodView>,
        Vec<SentEviction>,
        Vec<&'a str>,
        Vec<Stall>,
        Vec<&'a str>,
    );
    let unselected = PodView {
        labels: Labels::from_iter([("app", "web-legacy")]),
        ..pod("a2", "rs", None, true, &p)
    };
    let cases: Vec<Case> = vec![
        (
            "not yet due: in flight, the rest of the budget goes on",
            vec![
                pod("b", "rs", None, true, &p),
                pod("x", "rs2", None, true, &p),
            ],
            vec![sent("a", "rs", &["a", "b"])],
            vec!["b"],
            vec![],
            vec![],
        ),
        (
            "due and no replacement: its workload halts, the budget stays held",
            vec![
                pod("b", "rs", None, true, &p),
                pod("x", "rs2", None, true, &p),
            ],
            vec![overdue(sent("a", "rs", &["a", "b"]))],
            vec!["x"],
            vec![Stall {
                pod: "a".into(),
                why: StallReason::NotCreated,
            }],
            vec![],
        ),
        (
            "due, and its owner has no Pod left: scaled to zero or deleted",
            vec![pod("x", "rs2", None, true, &p)],
            vec![overdue(sent("a", "rs", &["a"]))],
            vec!["x"],
            vec![],
            vec!["uid-a"],
        ),
        (
            "replaced by a Pod the policy does not select: that workload is not repaired",
            vec![pod("b", "rs", None, true, &p), unselected],
            vec![sent("a", "rs", &["a", "b"])],
            vec![],
            vec![Stall {
                pod: "a".into(),
                why: StallReason::NotSelected("a2".into()),
            }],
            vec![],
        ),
    ];
    for (case, pods, sent, want, stalled, done) in cases {
        let r = plan_repair(&p, &pods, &sent, RepairLimits::default());
        assert_eq!(names(&r), want, "{case}");
        assert_eq!(r.stalled, stalled, "{case}");
        assert_eq!(r.done, done, "{case}");
        let held = u32::from(done.is_empty());
        assert_eq!(r.in_flight, held, "{case}: budget held");
    }
}
