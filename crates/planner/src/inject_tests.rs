//! Unit tests of `inject.rs`, as tables.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use sidecar_api::{SidecarPolicy, SidecarPolicySpec};

use super::*;

/// A policy selecting `app=web` whose template is `template` (the `template.spec` and
/// `template.metadata` of the policy).
fn policy(name: &str, template: Value, paused: bool) -> PolicyView {
    let spec: SidecarPolicySpec = serde_json::from_value(json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": template,
        "paused": paused,
    }))
    .expect("spec");
    let mut p = SidecarPolicy::new(name, spec);
    p.metadata.namespace = Some("shop".into());
    p.metadata.generation = Some(1);
    let selector = p.spec.selector.clone();
    let mut view = PolicyView::new(Arc::new(p));
    // Until the API has `mode: Container`, a template of init containers only fails the
    // Pod-mode rule "at least one container": select as the selector says.
    view.selector = kube_core::Selector::try_from(selector)
        .map(crate::labels::LabelMatcher::from)
        .map_err(|e| e.to_string());
    view
}

/// A native sidecar `name` with volume `vol` (empty: none).
fn native(name: &str, vol: &str) -> Value {
    let mut t = json!({"spec": {"initContainers": [
        {"name": name, "image": "agent:1", "restartPolicy": "Always"}]}});
    if !vol.is_empty() {
        t["spec"]["volumes"] = json!([{"name": vol, "emptyDir": {}}]);
    }
    t
}

fn pod(labels: Value, annotations: Value, spec: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-0", "namespace": "shop", "labels": labels, "annotations": annotations},
        "spec": spec,
    }))
    .expect("pod")
}

fn web(spec: Value) -> Pod {
    pod(json!({"app": "web"}), json!({}), spec)
}

fn app() -> Value {
    json!({"containers": [{"name": "app", "image": "web:1"}]})
}

fn names(list: Option<&Vec<k8s_openapi::api::core::v1::Container>>) -> Vec<&str> {
    list.into_iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect()
}

#[test]
fn sidecars_go_in_once_before_the_pods_own_init_containers_in_policy_order() {
    let mesh = policy("a-mesh", native("proxy", "certs"), false);
    let log = policy("b-log", native("shipper", "buffer"), false);
    let mut spec = app();
    spec["initContainers"] = json!([{"name": "migrate", "image": "db:1"}]);
    let original = web(spec);
    // The cache's order does not matter.
    let out = inject(&original, &[&log, &mesh]);
    let injected = out.pod.clone().expect("a mutated Pod");
    let s = injected.spec.as_ref().expect("spec");
    assert_eq!(
        names(s.init_containers.as_ref()),
        ["proxy", "shipper", "migrate"]
    );
    assert_eq!(names(Some(&s.containers)), ["app"]);
    let vols: Vec<_> = s
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(vols, ["certs", "buffer"]);
    let record = format!("a-mesh={},b-log={}", mesh.hash, log.hash);
    assert_eq!(
        injected
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_INJECTED)),
        Some(&record)
    );
    assert_eq!(
        out.injected,
        [
            ("a-mesh".to_string(), mesh.hash.clone()),
            ("b-log".to_string(), log.hash.clone())
        ]
    );
    assert!(out.skipped.is_empty() && out.untouched.is_none());
    // Reinvocation: idempotent.
    let again = inject(&injected, &[&mesh, &log]);
    assert_eq!(again.pod, None, "nothing changes the second time");
    assert_eq!(
        again.skipped,
        [
            ("a-mesh".to_string(), Skip::AlreadyInjected),
            ("b-log".to_string(), Skip::AlreadyInjected)
        ]
    );
    assert!(again.skipped.iter().all(|(_, s)| !s.is_problem()));
}

#[test]
fn nothing_the_pod_has_is_overridden() {
    let shipper = native("shipper", "buffer");
    // (case, Pod spec, policies' templates, injected, skipped)
    type Case<'a> = (
        &'a str,
        Value,
        Vec<(&'a str, Value)>,
        Vec<&'a str>,
        Vec<(&'a str, Skip)>,
    );
    let taken = |kind, name: &str| Skip::NameTaken(kind, name.to_string());
    let cases: Vec<Case> = vec![
        (
            "a container of the same name",
            json!({"containers": [{"name": "shipper", "image": "mine:1"}]}),
            vec![("log", shipper.clone())],
            vec![],
            vec![("log", taken("init container", "shipper"))],
        ),
        (
            "a volume of the same name",
            json!({"containers": [{"name": "app", "image": "web:1"}],
                   "volumes": [{"name": "buffer", "emptyDir": {}}]}),
            vec![("log", shipper.clone())],
            vec![],
            vec![("log", taken("volume", "buffer"))],
        ),
        (
            "a name an earlier policy injected",
            app(),
            vec![("a-log", shipper.clone()), ("b-log", native("shipper", ""))],
            vec!["a-log"],
            vec![(
                "b-log",
                Skip::Conflict("init container", "shipper".into(), "a-log".into()),
            )],
        ),
        (
            "a plain container of the template",
            json!({"containers": [{"name": "app", "image": "web:1"}, {"name": "tail", "image": "x:1"}]}),
            vec![(
                "log",
                json!({"spec": {"containers": [{"name": "tail", "image": "t:1"}]}}),
            )],
            vec![],
            vec![("log", taken("container", "tail"))],
        ),
    ];
    for (case, spec, templates, want_in, want_skipped) in cases {
        let views: Vec<PolicyView> = templates
            .into_iter()
            .map(|(n, t)| policy(n, t, false))
            .collect();
        let refs: Vec<&PolicyView> = views.iter().collect();
        let original = web(spec);
        let out = inject(&original, &refs);
        let got_in: Vec<&str> = out.injected.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(got_in, want_in, "{case}: injected");
        let want_skipped: Vec<(String, Skip)> = want_skipped
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect();
        assert_eq!(out.skipped, want_skipped, "{case}: skipped");
        assert!(out.skipped.iter().all(|(_, s)| s.is_problem()), "{case}");
        // Nothing of the Pod's is changed; the skip is recorded beside it.
        let new = out.pod.clone().expect("the skip is recorded on the Pod");
        let annotations = new.metadata.annotations.clone().unwrap_or_default();
        let want_record: Vec<String> = out
            .skipped
            .iter()
            .map(|(p, s)| format!("{p}={}", s.token().unwrap()))
            .collect();
        assert_eq!(
            annotations.get(ANNOTATION_SKIPPED),
            Some(&want_record.join(",")),
            "{case}: the skip record"
        );
        let (before, after) = (original.spec.as_ref().unwrap(), new.spec.as_ref().unwrap());
        for c in &before.containers {
            assert!(after.containers.contains(c), "{case}: {} kept", c.name);
        }
        if want_in.is_empty() {
            assert_eq!(before, after, "{case}: the Pod's spec is not changed");
            // A reinvocation changes nothing more.
            assert_eq!(inject(&new, &refs).pod, None, "{case}: reinvoked");
        }
    }
}

#[test]
fn metadata_is_added_never_overridden() {
    let mut t = native("shipper", "");
    t["metadata"] = json!({"labels": {"team": "obs", "app": "agent"},
                           "annotations": {"prometheus.io/scrape": "true"}});
    let log = policy("log", t, false);
    let out = inject(&web(app()), &[&log]);
    let p = out.pod.expect("mutated");
    let labels = p.metadata.labels.expect("labels");
    assert_eq!(
        labels.get("app").map(String::as_str),
        Some("web"),
        "the Pod's own label stays"
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("obs"));
    let ann = p.metadata.annotations.expect("annotations");
    assert_eq!(
        ann.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
}

/// A mirror Pod (the API server's copy of a kubelet's static Pod) runs what the kubelet's
/// file says, never its API object: injecting into it would record sidecars that never run.
#[test]
fn mirror_pods_are_never_injected() {
    let log = policy("log", native("shipper", ""), false);
    let mirror = pod(
        json!({"app": "web"}),
        json!({"kubernetes.io/config.mirror": "8f2c"}),
        app(),
    );
    let out = inject(&mirror, &[&log]);
    assert_eq!(out.pod, None, "{out:?}");
    assert!(out.injected.is_empty() && out.skipped.is_empty(), "{out:?}");
    assert_eq!(out.untouched, Some(Untouched::Mirror));
}

#[test]
fn pods_and_policies_left_out() {
    let log = policy("log", native("shipper", ""), false);
    let paused = policy("paused", native("other", ""), true);
    // (case, Pod, untouched)
    let cases = [
        (
            "opted out",
            pod(
                json!({"app": "web"}),
                json!({ANNOTATION_INJECT: INJECT_DISABLED}),
                app(),
            ),
            Some(Untouched::OptedOut),
        ),
        (
            "the operator's own Pod",
            pod(
                json!({"app": "web", LABEL_MANAGED_BY: MANAGED_BY_VALUE}),
                json!({}),
                app(),
            ),
            Some(Untouched::Operator),
        ),
        (
            "not selected",
            pod(json!({"app": "db"}), json!({}), app()),
            None,
        ),
    ];
    for (case, p, want) in cases {
        let out = inject(&p, &[&log, &paused]);
        assert_eq!(out.untouched, want, "{case}");
        assert_eq!(out.pod, None, "{case}");
        assert!(out.injected.is_empty() && out.skipped.is_empty(), "{case}");
    }
    // A paused policy injects nothing; the other still does.
    let out = inject(&web(app()), &[&paused, &log]);
    let got: Vec<&str> = out.injected.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(got, ["log"]);
}

#[test]
fn the_record_reads_back() {
    let p = pod(
        json!({}),
        json!({ANNOTATION_INJECTED: "a=1, b=2,junk"}),
        app(),
    );
    assert_eq!(
        recorded(&p),
        [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string())
        ]
    );
}

/// A container that passes Pod Security `restricted`.
fn hardened(name: &str, native: bool) -> Value {
    let mut c = json!({
        "name": name,
        "image": "x:1",
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    if native {
        c["restartPolicy"] = json!("Always");
    }
    c
}

#[test]
fn a_policy_the_namespace_would_refuse_is_skipped_and_recorded_the_others_go_in() {
    let loose = policy("a-loose", native("agent", ""), false);
    let strict = policy(
        "b-strict",
        json!({"spec": {"initContainers": [hardened("proxy", true)]}}),
        false,
    );
    let original = web(json!({"containers": [hardened("app", false)]}));
    // (level, injected, skipped as refused)
    let cases: [(Level, &[&str], &[&str]); 3] = [
        (Level::Privileged, &["a-loose", "b-strict"], &[]),
        (Level::Baseline, &["a-loose", "b-strict"], &[]),
        (Level::Restricted, &["b-strict"], &["a-loose"]),
    ];
    for (level, injected, refused) in cases {
        let out = inject_in(&original, &[&loose, &strict], level);
        let got: Vec<&str> = out.injected.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(got, injected, "{level:?}");
        let skipped: Vec<&str> = out
            .skipped
            .iter()
            .filter(|(_, s)| matches!(s, Skip::RefusedByNamespace(_)))
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(skipped, refused, "{level:?}");
        let pod = out.pod.expect("a mutated Pod");
        let skipped = pod_annotation(&pod, ANNOTATION_SKIPPED).cloned();
        let want = (!refused.is_empty()).then(|| "a-loose=refused-by-namespace".to_string());
        assert_eq!(skipped, want, "{level:?}");
        let inits = names(pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()));
        assert_eq!(inits.contains(&"agent"), refused.is_empty(), "{level:?}");
    }
}

#[test]
fn the_refusal_says_which_check_and_container_and_a_pod_refused_anyway_is_not_blamed() {
    let loose = policy("a-loose", native("agent", ""), false);
    let out = inject_in(
        &web(json!({"containers": [hardened("app", false)]})),
        &[&loose],
        Level::Restricted,
    );
    let Some((_, Skip::RefusedByNamespace(why))) = out.skipped.first() else {
        panic!("refused: {out:?}");
    };
    assert!(why.contains("allowPrivilegeEscalation"), "{why}");
    assert!(why.contains("\"agent\""), "{why}");
    // A Pod the namespace refuses as it is: the injection changes nothing of that.
    let out = inject_in(&web(app()), &[&loose], Level::Restricted);
    assert_eq!(out.injected.len(), 1, "{out:?}");
}

#[test]
fn a_pod_level_setting_covers_the_sidecar_too() {
    // runAsNonRoot and seccomp on the Pod apply to every container, the sidecar's too.
    let sidecar = json!({
        "name": "agent", "image": "x:1", "restartPolicy": "Always",
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
    });
    let p = policy("a", json!({"spec": {"initContainers": [sidecar]}}), false);
    let original = web(json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "web:1", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
    }));
    let out = inject_in(&original, &[&p], Level::Restricted);
    assert_eq!(out.injected.len(), 1, "{:?}", out.skipped);
}

#[test]
fn a_namespace_the_policys_status_lists_as_refusing_gets_no_sidecar_at_that_hash() {
    let mut p = policy("log", native("agent", ""), false);
    let at = |hash: &str, namespaces: &[&str]| sidecar_api::SidecarPolicyStatus {
        template_hash: Some(hash.to_string()),
        injection_refused_in: Some(namespaces.iter().map(|n| n.to_string()).collect()),
        ..Default::default()
    };
    let hash = p.hash.clone();
    // (case, status, injected)
    let cases = [
        (
            "listed at the current hash",
            Some(at(&hash, &["shop"])),
            false,
        ),
        (
            "another namespace listed",
            Some(at(&hash, &["other"])),
            true,
        ),
        (
            "listed for an older template",
            Some(at("old", &["shop"])),
            true,
        ),
        ("no status", None, true),
    ];
    for (case, status, injected) in cases {
        let mut object = (*p.policy).clone();
        object.status = status;
        p.policy = Arc::new(object);
        let out = inject(&web(app()), &[&p]);
        assert_eq!(out.injected.len() == 1, injected, "{case}: {out:?}");
        if !injected {
            let skipped = out
                .pod
                .as_ref()
                .and_then(|p| pod_annotation(p, ANNOTATION_SKIPPED));
            assert_eq!(
                skipped.map(String::as_str),
                Some("log=refused-by-namespace"),
                "{case}"
            );
        }
    }
}

/// [`Injection::added`] is exactly what turns the Pod into the injected one: init containers
/// before the Pod's own, containers and volumes after, labels and annotations beside (the
/// webhook's patch is built from it, not from a diff).
#[test]
fn the_additions_are_the_whole_difference() {
    let full = json!({
        "metadata": {"labels": {"mesh": "on", "app": "not-this"}, "annotations": {"a/b": "1"}},
        "spec": {
            "initContainers": [{"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"}],
            "containers": [{"name": "exporter", "image": "exp:1"}],
            "volumes": [{"name": "certs", "emptyDir": {}}],
        },
    });
    let mesh = policy("a-mesh", full, false);
    let log = policy("b-log", native("shipper", "buffer"), false);
    let mut own = app();
    own["initContainers"] = json!([{"name": "migrate", "image": "db:1"}]);
    own["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    let taken = pod(
        json!({"app": "web"}),
        json!({}),
        json!({"containers": [{"name": "app", "image": "web:1"}, {"name": "shipper", "image": "x"}]}),
    );
    // (case, Pod, policies)
    let cases = [
        ("nothing optional", web(app()), vec![&mesh, &log]),
        (
            "its own of each",
            pod(
                json!({"app": "web", "mesh": "mine"}),
                json!({"a/b": "mine", "keep": "me"}),
                own,
            ),
            vec![&mesh, &log],
        ),
        ("only a skip recorded", taken, vec![&log]),
    ];
    for (case, p, policies) in cases {
        let out = inject(&p, &policies);
        let want = out.pod.clone().expect(case);
        assert!(!out.added.is_empty(), "{case}");
        let a = out.added.clone();
        let mut got = p.clone();
        let spec = got.spec.get_or_insert_with(PodSpec::default);
        if !a.init_containers.is_empty() {
            let own = spec.init_containers.take().unwrap_or_default();
            spec.init_containers = Some(a.init_containers.into_iter().chain(own).collect());
        }
        spec.containers.extend(a.containers);
        if !a.volumes.is_empty() {
            spec.volumes.get_or_insert_with(Vec::new).extend(a.volumes);
        }
        let meta = &mut got.metadata;
        if !a.labels.is_empty() {
            meta.labels
                .get_or_insert_with(BTreeMap::new)
                .extend(a.labels);
        }
        if !a.annotations.is_empty() {
            meta.annotations
                .get_or_insert_with(BTreeMap::new)
                .extend(a.annotations);
        }
        assert_eq!(got, want, "{case}");
    }
    // Nothing changes, nothing is added.
    let again = inject(
        &inject(&web(app()), &[&mesh]).pod.expect("injected"),
        &[&mesh],
    );
    assert!(again.pod.is_none() && again.added.is_empty());
}
