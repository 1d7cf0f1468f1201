//! The harness's own tests: the control plane `sidecar-testenv` starts is real —
//! scheduling, kwok readiness, garbage collection, Pod Security admission, CRDs
//! ([`install_crd`]) and version metadata, each checked against the live servers.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use sidecar_testenv::{TestNamespace, install_crd, shared};

/// A bare Pod (one `busybox` container) with `labels`.
fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    let labels: serde_json::Map<_, _> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }))
    .expect("static Pod JSON")
}

/// True when the Pod's `Ready` condition is `True`.
fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Polls `probe` every 200 ms until it yields `Some`; panics naming `what` after `timeout`.
async fn wait_until<T, F: Future<Output = Option<T>>>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {}s waiting for {what}",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn pod_is_scheduled_onto_a_kwok_node_and_becomes_ready() {
    let client = shared().client().await;
    let ns = TestNamespace::create(&client, "cp-ready").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    pods.create(&PostParams::default(), &pod("web-0", &[("app", "web")]))
        .await
        .expect("create Pod");
    let p = wait_until(Duration::from_secs(60), "Pod web-0 Ready", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("web-0").await.ok()?;
            pod_ready(&p).then_some(p)
        }
    })
    .await;
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    assert!(
        node.starts_with("kwok-node-"),
        "scheduled onto {node:?}, not a kwok Node"
    );
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
}

#[tokio::test]
async fn pod_owned_by_another_pod_is_garbage_collected() {
    let client = shared().client().await;
    let ns = TestNamespace::create(&client, "cp-gc").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let owner = pods
        .create(&PostParams::default(), &pod("owner", &[]))
        .await
        .expect("create owner");
    let mut dependent = pod("dependent", &[]);
    dependent.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().expect("uid"),
            controller: Some(true),
            block_owner_deletion: None,
        },
    ]);
    pods.create(&PostParams::default(), &dependent)
        .await
        .expect("create dependent");
    pods.delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    wait_until(
        Duration::from_secs(90),
        "dependent Pod garbage-collected",
        || {
            let pods = pods.clone();
            async move { matches!(pods.get_opt("dependent").await, Ok(None)).then_some(()) }
        },
    )
    .await;
    assert!(pods.get_opt("owner").await.expect("get owner").is_none());
}

#[tokio::test]
async fn restricted_namespace_rejects_a_privileged_pod() {
    let client = shared().client().await;
    let ns = TestNamespace::create_labeled(
        &client,
        "cp-psa",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let mut p = pod("privileged", &[]);
    if let Some(spec) = p.spec.as_mut() {
        spec.containers[0].security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
    }
    let err = pods
        .create(&PostParams::default(), &p)
        .await
        .expect_err("a privileged Pod must be refused in a restricted namespace");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status
            .message
            .contains("violates PodSecurity \"restricted:latest\"")
            && status.message.contains("privileged"),
        "unexpected message: {}",
        status.message
    );
}

#[tokio::test]
async fn crd_installs_with_server_side_apply_and_is_established() {
    let client = shared().client().await;
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.testenv.sidecars.dev"},
        "spec": {
            "group": "testenv.sidecars.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                }}}
            }]
        }
    }))
    .expect("static CRD");
    install_crd(&client, &crd).await.expect("install CRD");
    // Applying again is a no-op, not an error.
    install_crd(&client, &crd).await.expect("re-apply CRD");
    let got = Api::<CustomResourceDefinition>::all(client.clone())
        .get("widgets.testenv.sidecars.dev")
        .await
        .expect("get CRD");
    let managers: Vec<String> = got
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.operation.as_deref() == Some("Apply"))
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"sidecar-testenv".to_string()),
        "{managers:?}"
    );
    // The new resource is served.
    let ns = TestNamespace::create(&client, "cp-crd").await;
    let out = shared()
        .kubectl()
        .args(["get", "widgets", "-n", ns.name(), "-o", "name"])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn server_and_kubectl_report_the_pinned_version() {
    let client: Client = shared().client().await;
    let v = client.apiserver_version().await.expect("GET /version");
    assert_eq!(v.git_version, "v1.36.3");
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "36"));
    let out = shared()
        .kubectl()
        .args(["version", "-o", "json"])
        .output()
        .expect("run kubectl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("kubectl version JSON");
    assert_eq!(json["clientVersion"]["gitVersion"], "v1.36.3");
    assert_eq!(json["serverVersion"]["gitVersion"], "v1.36.3");
}
