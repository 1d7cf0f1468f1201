//! `sidecar-operator explain pod` against the live control plane: one policy per reason, and
//! the verdict changes once the operator gave the Pod its sidecar.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sidecar_api::{ClusterSidecarPolicy, SidecarPolicy};
use sidecar_e2e::{minimal_policy, native_sidecar_policy, pod, wait_until};
use sidecar_testenv::{TestNamespace, install_crd, shared};

use crate::process::{BIN, Proc};

/// `explain pod ns/name -o json` as a user runs it: (policy name → (verdict, detail)).
fn explain(ns: &str, name: &str) -> (Value, BTreeMap<String, (String, String)>) {
    let out = std::process::Command::new(BIN)
        .args([
            "explain",
            "pod",
            &format!("{ns}/{name}"),
            "-o",
            "json",
            "--kubeconfig",
        ])
        .arg(shared().kubeconfig())
        .output()
        .expect("run explain");
    assert!(
        out.status.success(),
        "explain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let verdicts = doc["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (s("name"), (s("verdict"), s("detail")))
        })
        .collect();
    (doc, verdicts)
}

#[tokio::test]
async fn explain_pod_says_why_each_policy_does_or_does_not_give_its_sidecars() {
    let client = shared().client().await;
    for crd in [sidecar_api::crd(), sidecar_api::cluster_crd()] {
        install_crd(&client, &crd).await.expect("CRD");
    }
    let ns = TestNamespace::create(&client, "explain").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    pods.create(&PostParams::default(), &pod("web-0", &[("app", "web")]))
        .await
        .expect("main Pod");
    let policies: Api<SidecarPolicy> = Api::namespaced(client.clone(), ns.name());
    let mut paused = minimal_policy("paused", "web");
    paused.spec.paused = true;
    for p in [
        minimal_policy("agent", "web"),
        minimal_policy("db", "db"),
        paused,
        native_sidecar_policy("logs", "web", "shipper", "busybox:1.36"),
    ] {
        policies
            .create(&PostParams::default(), &p)
            .await
            .expect("policy");
    }
    // A cluster policy for namespaces this one is not (named after it: cluster policies of
    // the shared plane are global).
    let csp: ClusterSidecarPolicy = serde_json::from_value(json!({
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "ClusterSidecarPolicy",
        "metadata": {"name": ns.name()},
        "spec": {
            "namespaceSelector": {"matchLabels": {"team": format!("none-{}", ns.name())}},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]}},
        },
    }))
    .expect("csp");
    let csps: Api<ClusterSidecarPolicy> = Api::all(client.clone());
    csps.create(&PostParams::default(), &csp)
        .await
        .expect("csp");

    // No operator yet: nothing is served.
    let (doc, v) = explain(ns.name(), "web-0");
    assert_eq!(doc["pod"]["name"], "web-0");
    let want = [
        ("agent", "pending", "to be created"),
        ("db", "not-selected", "spec.selector"),
        ("paused", "paused", "paused"),
        ("logs", "webhook-missed", "webhook was unavailable"),
        (ns.name(), "namespace-not-selected", "namespaceSelector"),
    ];
    for (name, verdict, words) in want {
        let (got, detail) = v.get(name).unwrap_or_else(|| panic!("{name} in {doc:#}"));
        assert_eq!(got, verdict, "{name}: {detail}");
        assert!(detail.contains(words), "{name}: {detail}");
    }
    // An operator gives it agent's sidecar.
    let op = Proc::start(shared().kubeconfig(), ns.name(), &[], "explain");
    wait_until(Duration::from_secs(60), "explain: agent served", || async {
        let (_, v) = explain(ns.name(), "web-0");
        (v.get("agent").map(|(g, _)| g.as_str()) == Some("served")).then_some(())
    })
    .await;
    let (doc, _) = explain(ns.name(), "web-0");
    let agent = doc["policies"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "agent"))
        .expect("agent");
    assert_eq!(agent["sidecars"], json!(["web-0-agent"]));
    assert_eq!(agent["haveHash"], agent["templateHash"], "{agent}");
    // The Pod opts out: the policies that select it say so.
    let patch = json!({"metadata": {"annotations": {"sidecars.dev/inject": "false"}}});
    pods.patch("web-0", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("opt out");
    let (_, v) = explain(ns.name(), "web-0");
    assert_eq!(v["agent"].0, "opted-out", "{v:?}");
    assert_eq!(v["db"].0, "not-selected", "the selector comes first");
    drop(op);
    let _ = csps.delete(ns.name(), &Default::default()).await;
}
