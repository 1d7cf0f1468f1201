use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::*;

/// A Pod from the JSON of its spec (and annotations).
fn pod(spec: Value, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "annotations": annotations},
        "spec": spec,
    }))
    .expect("a Pod")
}

/// A container that passes restricted.
fn hardened(name: &str) -> Value {
    json!({
        "name": name,
        "image": "app:1",
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    })
}

/// `hardened` with one key of its securityContext replaced (`null` removes it).
fn hardened_with(name: &str, key: &str, value: Value) -> Value {
    let mut c = hardened(name);
    let ctx = c["securityContext"].as_object_mut().expect("an object");
    if value.is_null() {
        ctx.remove(key);
    } else {
        ctx.insert(key.into(), value);
    }
    c
}

fn with_containers(containers: Vec<Value>) -> Pod {
    pod(json!({"containers": containers}), json!({}))
}

fn labels(level: Option<&str>) -> Labels {
    let mut l = Labels::default();
    if let Some(v) = level {
        l.insert(LABEL_ENFORCE, v);
    }
    l
}

#[test]
fn the_enforced_level_comes_from_the_namespace_label() {
    let cases = [
        (None, Level::Privileged),
        (Some("privileged"), Level::Privileged),
        (Some("baseline"), Level::Baseline),
        (Some("restricted"), Level::Restricted),
        // Pod Security admission enforces an unknown value as restricted.
        (Some("strict"), Level::Restricted),
    ];
    for (label, want) in cases {
        assert_eq!(Level::enforced(&labels(label)), want, "{label:?}");
    }
}

/// `(case, Pod, fails baseline, fails restricted)`: one row per Pod Security check.
fn table() -> Vec<(&'static str, Pod, bool, bool)> {
    let plain = json!({"name": "c", "image": "x"});
    vec![
        (
            "hardened",
            with_containers(vec![hardened("c")]),
            false,
            false,
        ),
        (
            "plain container",
            with_containers(vec![plain.clone()]),
            false,
            true,
        ),
        (
            "privileged",
            with_containers(vec![hardened_with("c", "privileged", json!(true))]),
            true,
            true,
        ),
        (
            "privileged false",
            with_containers(vec![hardened_with("c", "privileged", json!(false))]),
            false,
            false,
        ),
        (
            "baseline capability added",
            with_containers(vec![hardened_with(
                "c",
                "capabilities",
                json!({"drop": ["ALL"], "add": ["CHOWN"]}),
            )]),
            false,
            true,
        ),
        (
            "NET_BIND_SERVICE added",
            with_containers(vec![hardened_with(
                "c",
                "capabilities",
                json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}),
            )]),
            false,
            false,
        ),
        (
            "NET_ADMIN added",
            with_containers(vec![hardened_with(
                "c",
                "capabilities",
                json!({"drop": ["ALL"], "add": ["NET_ADMIN"]}),
            )]),
            true,
            true,
        ),
        (
            "capabilities not dropped",
            with_containers(vec![hardened_with("c", "capabilities", Value::Null)]),
            false,
            true,
        ),
        (
            "allowPrivilegeEscalation unset",
            with_containers(vec![hardened_with(
                "c",
                "allowPrivilegeEscalation",
                Value::Null,
            )]),
            false,
            true,
        ),
        (
            "runAsNonRoot unset",
            with_containers(vec![hardened_with("c", "runAsNonRoot", Value::Null)]),
            false,
            true,
        ),
        (
            "runAsNonRoot on the Pod",
            pod(
                json!({
                    "securityContext": {"runAsNonRoot": true},
                    "containers": [hardened_with("c", "runAsNonRoot", Value::Null)],
                }),
                json!({}),
            ),
            false,
            false,
        ),
        (
            "runAsNonRoot false on the container beats the Pod",
            pod(
                json!({
                    "securityContext": {"runAsNonRoot": true},
                    "containers": [hardened_with("c", "runAsNonRoot", json!(false))],
                }),
                json!({}),
            ),
            false,
            true,
        ),
        (
            "runAsUser 0",
            with_containers(vec![hardened_with("c", "runAsUser", json!(0))]),
            false,
            true,
        ),
        (
            "runAsUser 1000",
            with_containers(vec![hardened_with("c", "runAsUser", json!(1000))]),
            false,
            false,
        ),
        (
            "seccomp unset",
            with_containers(vec![hardened_with("c", "seccompProfile", Value::Null)]),
            false,
            true,
        ),
        (
            "seccomp on the Pod",
            pod(
                json!({
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [hardened_with("c", "seccompProfile", Value::Null)],
                }),
                json!({}),
            ),
            false,
            false,
        ),
        (
            "seccomp Unconfined",
            with_containers(vec![hardened_with(
                "c",
                "seccompProfile",
                json!({"type": "Unconfined"}),
            )]),
            true,
            true,
        ),
        (
            "hostPort",
            with_containers(vec![{
                let mut c = hardened("c");
                c["ports"] = json!([{"containerPort": 80, "hostPort": 8080}]);
                c
            }]),
            true,
            true,
        ),
        (
            "containerPort only",
            with_containers(vec![{
                let mut c = hardened("c");
                c["ports"] = json!([{"containerPort": 80}]);
                c
            }]),
            false,
            false,
        ),
        (
            "hostPath volume",
            pod(
                json!({
                    "containers": [hardened("c")],
                    "volumes": [{"name": "h", "hostPath": {"path": "/var/log"}}],
                }),
                json!({}),
            ),
            true,
            true,
        ),
        (
            "emptyDir and configMap volumes",
            pod(
                json!({
                    "containers": [hardened("c")],
                    "volumes": [
                        {"name": "e", "emptyDir": {}},
                        {"name": "c", "configMap": {"name": "cm"}},
                    ],
                }),
                json!({}),
            ),
            false,
            false,
        ),
        (
            "nfs volume",
            pod(
                json!({
                    "containers": [hardened("c")],
                    "volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}],
                }),
                json!({}),
            ),
            false,
            true,
        ),
        (
            "hostNetwork",
            pod(
                json!({"hostNetwork": true, "containers": [hardened("c")]}),
                json!({}),
            ),
            true,
            true,
        ),
        (
            "procMount Unmasked",
            with_containers(vec![hardened_with("c", "procMount", json!("Unmasked"))]),
            true,
            true,
        ),
        (
            "SELinux user",
            with_containers(vec![hardened_with(
                "c",
                "seLinuxOptions",
                json!({"user": "system_u"}),
            )]),
            true,
            true,
        ),
        (
            "SELinux container_t",
            with_containers(vec![hardened_with(
                "c",
                "seLinuxOptions",
                json!({"type": "container_t"}),
            )]),
            false,
            false,
        ),
        (
            "AppArmor Unconfined field",
            with_containers(vec![hardened_with(
                "c",
                "appArmorProfile",
                json!({"type": "Unconfined"}),
            )]),
            true,
            true,
        ),
        (
            "AppArmor unconfined annotation",
            pod(
                json!({"containers": [hardened("c")]}),
                json!({"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}),
            ),
            true,
            true,
        ),
        (
            "a probe naming a host",
            with_containers(vec![{
                let mut c = hardened("c");
                c["readinessProbe"] = json!({"httpGet": {"host": "example.com", "port": 80}});
                c
            }]),
            true,
            true,
        ),
        (
            "windows hostProcess",
            with_containers(vec![hardened_with(
                "c",
                "windowsOptions",
                json!({"hostProcess": true}),
            )]),
            true,
            true,
        ),
        (
            "an unsafe sysctl",
            pod(
                json!({
                    "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
                    "containers": [hardened("c")],
                }),
                json!({}),
            ),
            true,
            true,
        ),
        (
            "image volume",
            pod(
                json!({
                    "containers": [hardened("c")],
                    "volumes": [{"name": "i", "image": {"reference": "data:1"}}],
                }),
                json!({}),
            ),
            false,
            false,
        ),
        (
            "runAsNonRoot unset in a user namespace",
            pod(
                json!({
                    "hostUsers": false,
                    "containers": [hardened_with("c", "runAsNonRoot", Value::Null)],
                }),
                json!({}),
            ),
            false,
            false,
        ),
        (
            "procMount Unmasked in a user namespace",
            pod(
                json!({
                    "hostUsers": false,
                    "containers": [hardened_with("c", "procMount", json!("Unmasked"))],
                }),
                json!({}),
            ),
            false,
            true,
        ),
        (
            "an empty AppArmor annotation",
            pod(
                json!({"containers": [hardened("c")]}),
                json!({"container.apparmor.security.beta.kubernetes.io/c": ""}),
            ),
            false,
            false,
        ),
        (
            "a native sidecar without a securityContext",
            pod(
                json!({
                    "initContainers": [{"name": "s", "image": "x", "restartPolicy": "Always"}],
                    "containers": [hardened("c")],
                }),
                json!({}),
            ),
            false,
            true,
        ),
    ]
}

#[test]
fn each_check_of_both_levels() {
    for (case, pod, baseline, restricted) in table() {
        assert!(violations(Level::Privileged, &pod).is_empty(), "{case}");
        let b = violations(Level::Baseline, &pod);
        assert_eq!(!b.is_empty(), baseline, "{case} at baseline: {b:?}");
        let r = violations(Level::Restricted, &pod);
        assert_eq!(!r.is_empty(), restricted, "{case} at restricted: {r:?}");
    }
}

#[test]
fn violations_name_the_check_and_the_container() {
    let pod = pod(
        json!({
            "initContainers": [{"name": "agent", "image": "x", "restartPolicy": "Always"}],
            "containers": [hardened("app")],
        }),
        json!({}),
    );
    let v = violations(Level::Restricted, &pod).join("; ");
    assert!(v.contains("allowPrivilegeEscalation != false"), "{v}");
    assert!(v.contains("runAsNonRoot != true"), "{v}");
    assert!(v.contains("container \"agent\""), "{v}");
    assert!(!v.contains("\"app\""), "{v}");
}

#[test]
fn only_a_refusal_the_injection_causes_counts() {
    let ok = with_containers(vec![hardened("app")]);
    let ok_with_sidecar =
        with_containers(vec![hardened("app"), json!({"name": "s", "image": "x"})]);
    let refused = with_containers(vec![json!({"name": "app", "image": "x"})]);
    let refused_with_sidecar = with_containers(vec![
        json!({"name": "app", "image": "x"}),
        json!({"name": "s", "image": "x"}),
    ]);
    let hardened_pair = with_containers(vec![hardened("app"), hardened("s")]);
    let r = refusal(Level::Restricted, &ok, &ok_with_sidecar).expect("refused");
    assert!(r.contains("Pod Security \"restricted\""), "{r}");
    assert!(r.contains("container \"s\""), "{r}");
    // The namespace accepts it at baseline, and anything when privileged.
    assert_eq!(refusal(Level::Baseline, &ok, &ok_with_sidecar), None);
    assert_eq!(refusal(Level::Privileged, &ok, &ok_with_sidecar), None);
    // A Pod refused without the sidecar is refused anyway: not the injection's doing.
    assert_eq!(
        refusal(Level::Restricted, &refused, &refused_with_sidecar),
        None
    );
    // A sidecar that complies is never refused.
    assert_eq!(refusal(Level::Restricted, &ok, &hardened_pair), None);
}
