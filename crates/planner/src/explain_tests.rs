//! One Pod, one policy per reason: the verdict `explain pod` gives.

use std::collections::HashSet;

use serde_json::json;

use crate::test_fixtures::{cluster, main_pod, namespaced, sidecar};
use crate::*;

#[test]
fn every_reason_a_policy_gives_or_withholds_its_sidecars() {
    let team = json!({"matchLabels": {"team": "pay"}});
    let container = |extra: serde_json::Value| {
        let mut e = json!({"mode": "Container", "template": {"spec": {"initContainers": [
            {"name": "shipper", "image": "agent:1", "restartPolicy": "Always"}]}}});
        if let (Some(b), Some(x)) = (e.as_object_mut(), extra.as_object()) {
            b.extend(x.clone());
        }
        e
    };
    let served = namespaced("served", json!({}));
    let other_app = namespaced(
        "other-app",
        json!({"selector": {"matchLabels": {"app": "db"}}}),
    );
    let paused = namespaced("paused", json!({"paused": true}));
    let stale = namespaced("stale", json!({}));
    let csp_in = cluster("fleet", team.clone(), json!({}));
    let csp_out = cluster(
        "elsewhere",
        json!({"matchLabels": {"team": "search"}}),
        json!({}),
    );
    // A SidecarPolicy csp-fleet wants web-0-csp-fleet too, and outranks the cluster policy.
    let rival = namespaced("csp-fleet", json!({}));
    let injected = namespaced("injected", container(json!({})));
    let missed = namespaced("missed", container(json!({})));
    let lost = namespaced("lost", container(json!({})));
    let collide = namespaced("collide", json!({}));
    let m = {
        let mut m = main_pod("web-0");
        m.ready = true;
        m.injected = Some(format!("injected={}", injected.hash).into());
        m.skipped = Some("lost=initContainer/shipper@injected".into());
        m
    };
    let served_sc = sidecar(&m, &served);
    let mut stale_sc = sidecar(&m, &stale);
    stale_sc
        .labels
        .insert(sidecar_api::constants::LABEL_TEMPLATE_HASH, "old");
    let rival_sc = sidecar(&m, &rival.clone());
    // A Pod of someone else's at collide's sidecar name.
    let foreign = PodView {
        namespace: "shop".into(),
        name: "web-0-collide".into(),
        uid: "uid-foreign".into(),
        ..PodView::default()
    };
    let pods = [
        served_sc.clone(),
        stale_sc.clone(),
        rival_sc.clone(),
        foreign,
    ];
    let by_name = |n: &str| pods.iter().find(|p| p.name == n);
    let all = [
        &served, &other_app, &paused, &stale, &csp_in, &csp_out, &rival, &injected, &missed, &lost,
        &collide,
    ];
    let labels = Labels::from_iter([("team", "pay")]);
    let got = explain_pod(&m, &labels, &all, &HashSet::new(), by_name);
    let verdict = |name: &str| {
        got.iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} explained: {got:?}"))
    };
    // (policy, verdict, words of the detail)
    let want = [
        ("served", PodVerdict::Served, "current template, Ready"),
        ("other-app", PodVerdict::NotSelected, "spec.selector"),
        ("paused", PodVerdict::Paused, "paused"),
        ("stale", PodVerdict::Served, "older template"),
        ("fleet", PodVerdict::Conflict, "SidecarPolicy csp-fleet"),
        (
            "elsewhere",
            PodVerdict::NamespaceNotSelected,
            "namespaceSelector",
        ),
        ("csp-fleet", PodVerdict::Served, "web-0-csp-fleet"),
        (
            "injected",
            PodVerdict::Served,
            "injected at the current template",
        ),
        (
            "missed",
            PodVerdict::WebhookMissed,
            "webhook was unavailable",
        ),
        ("lost", PodVerdict::Conflict, "SidecarPolicy injected"),
        ("collide", PodVerdict::NameCollision, "left alone"),
    ];
    for (name, v, words) in want {
        let e = verdict(name);
        assert_eq!(e.verdict, v, "{name}: {e:?}");
        assert!(e.detail.contains(words), "{name}: {:?}", e.detail);
    }
    assert_eq!(got.len(), want.len(), "one verdict per policy");
    assert_eq!(verdict("fleet").kind, "ClusterSidecarPolicy");
    assert_eq!(verdict("stale").have_hash.as_deref(), Some("old"));
    assert_eq!(verdict("injected").sidecars, ["shipper"]);
    assert_eq!(verdict("served").sidecars, ["web-0-served"]);
    // Pod-side reasons, one Pod each.
    let p = &served;
    // (case, what changes on the Pod, verdict)
    type Case = (&'static str, fn(&mut PodView), PodVerdict);
    let cases: [Case; 4] = [
        ("opted out", |m| m.opted_out = true, PodVerdict::OptedOut),
        (
            "unscheduled",
            |m| m.node_name = None,
            PodVerdict::Unscheduled,
        ),
        (
            "terminating",
            |m| m.deleting = true,
            PodVerdict::Terminating,
        ),
        (
            "terminal",
            |m| m.phase = Phase::Succeeded,
            PodVerdict::Terminal,
        ),
    ];
    for (case, change, want) in cases {
        let mut m = main_pod("web-1");
        change(&mut m);
        let got = explain_pod(&m, &labels, &[p], &HashSet::new(), |_| None);
        assert_eq!(got[0].verdict, want, "{case}: {:?}", got[0]);
    }
    let mut invalid = namespaced("bad", json!({}));
    invalid.selector = Err("spec.selector: nope".into());
    let got = explain_pod(
        &main_pod("web-2"),
        &labels,
        &[&invalid],
        &HashSet::new(),
        |_| None,
    );
    assert_eq!(got[0].verdict, PodVerdict::InvalidSpec);
    assert!(got[0].detail.contains("nope"));
}
