//! Container-mode status: counts from the Pods' injection records, as tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::json;
use sidecar_api::constants::{ANNOTATION_INJECTED, condition, reason};
use sidecar_api::{SidecarPolicy, SidecarPolicySpec};

use crate::*;

fn policy(name: &str, over: serde_json::Value) -> PolicyView {
    let mut spec = json!({
        "mode": "Container",
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"spec": {"initContainers": [
            {"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"}]}},
    });
    for (k, v) in over.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let spec: SidecarPolicySpec = serde_json::from_value(spec).expect("spec");
    let mut p = SidecarPolicy::new(name, spec);
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.generation = Some(1);
    let view = PolicyView::new(Arc::new(p));
    assert!(view.selector.is_ok(), "{:?}", view.selector);
    view
}

/// A selected Pod recording `record` (the annotation's value), Ready or not.
fn pod(name: &str, record: Option<&str>, ready: bool) -> PodView {
    PodView {
        namespace: "shop".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: Labels::from_iter([("app", "web")]),
        phase: Phase::Running,
        ready,
        injected: record.map(Into::into),
        ..PodView::default()
    }
}

fn counts(p: &PolicyView, pods: &[PodView]) -> Counts {
    let none = |_: &str| None;
    observe(p, pods, none).counts
}

#[test]
fn pod_view_keeps_the_injection_record() {
    let annotations = BTreeMap::from([(ANNOTATION_INJECTED.to_owned(), "a=111, b=222".into())]);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("web-0".into()),
            uid: Some("u".into()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    };
    let view = PodView::from_pod(&pod).expect("view");
    assert_eq!(view.injected_hash("a"), Some("111"));
    assert_eq!(view.injected_hash("b"), Some("222"));
    assert_eq!(view.injected_hash("c"), None);
    let bare = PodView::from_pod(&Pod {
        metadata: ObjectMeta {
            annotations: None,
            ..pod.metadata
        },
        ..Pod::default()
    })
    .expect("view");
    assert_eq!(
        (bare.injected.as_deref(), bare.injected_hash("a")),
        (None, None)
    );
}

#[test]
fn container_mode_counts_selected_pods_and_their_injections() {
    let p = policy("inj", json!({}));
    let h = p.hash.clone();
    let current = format!("other=0000000000,inj={h}");
    let with = |f: fn(&mut PodView)| {
        let mut v = pod("x", Some(&current), true);
        f(&mut v);
        v
    };
    // (what, pods, matched, sidecars, updated, ready, missing)
    let cases: Vec<(&str, Vec<PodView>, [i32; 5])> = vec![
        ("none", vec![], [0, 0, 0, 0, 0]),
        (
            "current, Ready",
            vec![pod("a", Some(&current), true)],
            [1, 1, 1, 1, 0],
        ),
        (
            "current, not Ready",
            vec![pod("a", Some(&current), false)],
            [1, 1, 1, 0, 0],
        ),
        (
            "older hash",
            vec![pod("a", Some("inj=0123456789"), true)],
            [1, 1, 0, 0, 0],
        ),
        ("not injected", vec![pod("a", None, true)], [1, 0, 0, 0, 1]),
        (
            "another policy only",
            vec![pod("a", Some("other=1"), true)],
            [1, 0, 0, 0, 1],
        ),
        (
            "unscheduled counts",
            vec![with(|v| v.node_name = None)],
            [1, 1, 1, 1, 0],
        ),
        (
            "opted out",
            vec![with(|v| v.opted_out = true)],
            [0, 0, 0, 0, 0],
        ),
        (
            "terminating",
            vec![with(|v| v.deleting = true)],
            [0, 0, 0, 0, 0],
        ),
        (
            "finished",
            vec![with(|v| v.phase = Phase::Succeeded)],
            [0, 0, 0, 0, 0],
        ),
        (
            "not selected",
            vec![with(|v| {
                v.labels.insert("app", "db");
            })],
            [0, 0, 0, 0, 0],
        ),
        (
            "a sidecar Pod",
            vec![with(|v| {
                v.labels.insert(
                    sidecar_api::constants::LABEL_MANAGED_BY,
                    sidecar_api::constants::MANAGED_BY_VALUE,
                );
            })],
            [0, 0, 0, 0, 0],
        ),
    ];
    for (what, pods, [matched, sidecars, updated, ready, missing]) in cases {
        let c = counts(&p, &pods);
        assert_eq!(
            [c.matched, c.sidecars, c.updated, c.ready, c.missing],
            [matched, sidecars, updated, ready, missing],
            "{what}"
        );
        assert_eq!(c.converged, c.ready, "{what}");
    }
    // Paused: still counted (paused only stops the webhook from injecting).
    let paused = policy("inj", json!({"paused": true}));
    assert_eq!(
        counts(&paused, &[pod("a", Some(&current), true)]).matched,
        1
    );
    let mut deleting = policy("inj", json!({}));
    deleting.deleting = true;
    assert_eq!(
        counts(&deleting, &[pod("a", None, true)]),
        Counts::default()
    );
}

#[test]
fn container_mode_conditions_never_claim_a_rollout() {
    let p = policy("inj", json!({}));
    let current = format!("inj={}", p.hash);
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let status = |pods: &[PodView]| {
        let c = counts(&p, pods);
        compute_status(&p, c, &Problems::default(), None, now.clone())
    };
    let cond = |s: &sidecar_api::SidecarPolicyStatus, t: &str| {
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    };
    let s = status(&[pod("a", Some(&current), true), pod("b", None, true)]);
    assert_eq!((s.matched_pods, s.sidecar_pods, s.updated_pods), (2, 1, 1));
    assert_eq!(s.ready.as_deref(), Some("1/2"));
    let (st, why, msg) = cond(&s, condition::PROGRESSING);
    assert_eq!(
        (st.as_str(), why.as_str()),
        ("False", reason::WAITING_FOR_NEW_PODS)
    );
    assert!(
        msg.starts_with("1 of 2 selected Pods run without the current sidecar"),
        "{msg}"
    );
    assert_eq!(cond(&s, condition::RECONCILING).0, "False");
    assert_eq!(cond(&s, condition::STALLED).0, "False");
    // Report only: the operator has done all it will do, so Ready (kstatus Current), with
    // the tally; the drift stays in Progressing and status.drift.
    let (st, why, msg) = cond(&s, condition::READY);
    assert_eq!(
        (st.as_str(), why.as_str()),
        ("True", reason::WAITING_FOR_NEW_PODS)
    );
    assert!(
        msg.starts_with("1/2 selected Pods ready with the current sidecar; the rest waits for you"),
        "{msg}"
    );
    // A Pod with the sidecar that is not Ready is still waited for.
    let s = status(&[pod("a", Some(&current), false), pod("b", None, true)]);
    let (st, why, _) = cond(&s, condition::READY);
    assert_eq!(
        (st.as_str(), why.as_str()),
        ("False", reason::SIDECARS_NOT_READY)
    );

    let s = status(&[pod("a", Some(&current), true)]);
    assert_eq!(cond(&s, condition::READY).0, "True");
    let (st, why, _) = cond(&s, condition::PROGRESSING);
    assert_eq!((st.as_str(), why.as_str()), ("False", reason::CONVERGED));
    // Injected but not Ready yet: waiting for the Pod, as for a sidecar Pod.
    let s = status(&[pod("a", Some(&current), false)]);
    assert_eq!(cond(&s, condition::RECONCILING).0, "True");
}

#[test]
fn container_mode_plans_no_rollout() {
    let p = policy("inj", json!({}));
    let pods = [pod("a", Some("inj=0123456789"), true)];
    let none = |_: &str| None;
    assert!(plan_rollout(&p, &pods, none, |_| false).is_empty());
}

#[test]
fn pods_the_webhook_skipped_are_named_with_the_name_they_already_had() {
    let p = policy("mesh", json!({}));
    let skipped = |name: &str, record: &str| PodView {
        skipped: Some(record.into()),
        ..pod(name, None, true)
    };
    // (case, Pods, collisions)
    let cases: Vec<(&str, Vec<PodView>, Vec<&str>)> = vec![
        ("none skipped", vec![pod("a", None, true)], vec![]),
        (
            "skipped for this policy",
            vec![
                skipped("b", "mesh=initContainer/proxy"),
                skipped("a", "mesh=volume/certs"),
            ],
            vec!["a (volume/certs)", "b (initContainer/proxy)"],
        ),
        (
            "skipped for another policy",
            vec![skipped("a", "log=container/tail")],
            vec![],
        ),
        (
            "skipped once, injected since (a reinvocation)",
            vec![PodView {
                injected: Some(format!("mesh={}", p.hash).into()),
                ..skipped("a", "mesh=initContainer/proxy")
            }],
            vec![],
        ),
    ];
    for (case, pods, want) in cases {
        let got = observe(&p, &pods, |_: &str| None).collisions;
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn pods_a_namespace_refused_are_reported_by_namespace_and_never_evicted() {
    let p = policy(
        "log",
        json!({"updateStrategy": {"type": "RollingUpdate", "allowEviction": true}}),
    );
    let refused = |name: &str| PodView {
        skipped: Some("log=refused-by-namespace".into()),
        owner: Some(OwnerView {
            api_version: OwnerApi::Apps,
            kind: "ReplicaSet".into(),
            name: "web-1".into(),
            uid: "rs".into(),
        }),
        ..pod(name, None, true)
    };
    let pods = [
        refused("web-a"),
        refused("web-b"),
        pod("ok", Some(&format!("log={}", p.hash)), true),
    ];
    let seen = observe(&p, &pods, |_: &str| None);
    assert_eq!(
        seen.refused,
        [
            ("shop".to_string(), "web-a".to_string()),
            ("shop".into(), "web-b".into())
        ]
    );
    assert!(seen.collisions.is_empty(), "{:?}", seen.collisions);
    assert_eq!((seen.counts.matched, seen.counts.missing), (3, 2));
    assert_eq!(drift_of(&p, &pods[0]), Some(Drift::Refused));
    // Never evicted: their replacements would be refused the same way.
    let step = plan_repair(&p, &pods, &[], RepairLimits::default());
    assert!(step.evict.is_empty(), "{step:?}");

    let problems = Problems {
        refused_by_namespace: seen.refused.clone(),
        drifted: seen.drifted.clone(),
        ..Problems::default()
    };
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let status = compute_status(&p, seen.counts, &problems, None, now);
    let get = |t: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
            .expect("condition")
    };
    let (s, r, m) = get(condition::DEGRADED);
    assert_eq!(
        (s.as_str(), r.as_str()),
        ("True", reason::NAMESPACE_REFUSES_INJECTION)
    );
    assert!(m.contains("shop (2 Pods, e.g. web-a)"), "{m}");
    // The template's sidecar has no securityContext: what it fails is said.
    assert!(
        m.contains("\"restricted\"") && m.contains("allowPrivilegeEscalation"),
        "{m}"
    );
    let (s, r, _) = get(condition::STALLED);
    assert_eq!(
        (s.as_str(), r.as_str()),
        ("True", reason::NAMESPACE_REFUSES_INJECTION)
    );
    let (_, _, m) = get(condition::PROGRESSING);
    assert!(
        m.contains("2 left without it because their namespace would refuse"),
        "{m}"
    );
    let drift = status.drift.expect("drift");
    assert!(
        drift.pods.contains(&"web-a (refused)".to_string()),
        "{:?}",
        drift.pods
    );
    assert_eq!((drift.missing_pods, drift.refused_pods), (0, 2));
}

#[test]
fn refusing_namespaces_named_are_capped() {
    let p = policy("log", json!({}));
    let refused: Vec<(String, String)> = (0..30)
        .map(|i| (format!("ns-{i:02}"), format!("web-{i}")))
        .collect();
    let problems = Problems {
        refused_by_namespace: refused,
        ..Problems::default()
    };
    let c = Counts {
        matched: 30,
        missing: 30,
        ..Counts::default()
    };
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let status = compute_status(&p, c, &problems, None, now);
    let m = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::DEGRADED)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(m.contains("ns-19") && !m.contains("ns-20 ("), "{m}");
    assert!(m.contains("and 10 more namespaces"), "{m}");
}

#[test]
fn condition_messages_stay_small_whatever_the_number_of_pods() {
    let p = policy("log", json!({}));
    let many = |prefix: &str| -> Vec<String> {
        (0..5000)
            .map(|i| format!("{prefix}-{i:04} (initContainer/proxy)"))
            .collect()
    };
    let problems = Problems {
        collisions: many("collides"),
        failing: many("fails"),
        ..Problems::default()
    };
    let c = Counts {
        matched: 5000,
        missing: 5000,
        ..Counts::default()
    };
    for problems in [
        problems.clone(),
        Problems {
            failing: Vec::new(),
            ..problems
        },
    ] {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let status = compute_status(&p, c, &problems, None, now);
        for cond in &status.conditions {
            assert!(
                cond.message.len() < 4096,
                "{}: {} bytes",
                cond.type_,
                cond.message.len()
            );
        }
    }
}

#[test]
fn a_refused_dry_run_lists_the_namespace_and_says_the_servers_words() {
    let p = policy("log", json!({}));
    let problems = Problems {
        injection_refused: vec![(
            "shop".to_string(),
            "exceeded quota: cpu, requested: requests.cpu=2".to_string(),
        )],
        ..Problems::default()
    };
    let c = Counts::default();
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let status = compute_status(&p, c, &problems, None, now);
    assert_eq!(status.injection_refused_in, Some(vec!["shop".to_string()]));
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::DEGRADED)
        .expect("Degraded");
    assert_eq!(degraded.reason, reason::NAMESPACE_REFUSES_INJECTION);
    assert!(
        degraded.message.contains("exceeded quota"),
        "{}",
        degraded.message
    );
    let none = compute_status(
        &p,
        c,
        &Problems::default(),
        None,
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    );
    assert_eq!(
        none.injection_refused_in, None,
        "cleared (a merge patch writes null)"
    );
}
