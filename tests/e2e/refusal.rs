//! A namespace that would refuse a sidecar never stops creating Pods: Pod Security admission
//! runs after the mutating webhooks and judges the Pod *with* the sidecar, so the webhook
//! leaves out what the namespace would refuse, says so (a warning to the creator, a record on
//! the Pod, the policy's status), and injects again once the namespace allows it.

use std::io::Write as _;
use std::process::{Output, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sidecar_api::constants::{
    ANNOTATION_INJECTED, ANNOTATION_SKIPPED, condition, condition_status, reason,
};
use sidecar_e2e::webhook::try_dry_run;
use sidecar_e2e::{
    Scene, TIMEOUT, cond, cond_is, deployment, native_sidecar_policy, restricted_pod,
};
use sidecar_e2e::{status_current, wait_until};
use sidecar_testenv::shared;

const WEB: (&str, &str) = ("app", "web");
const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// The message of the policy's `Degraded` condition ("" without one).
fn degraded_message(p: &sidecar_api::SidecarPolicy) -> String {
    cond(p, condition::DEGRADED)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// [`deployment`] whose Pods pass Pod Security `restricted`.
fn restricted_deployment(name: &str, replicas: i32) -> Deployment {
    let pod = serde_json::to_value(restricted_pod("x", &[WEB])).expect("Pod JSON");
    let mut d = serde_json::to_value(deployment(name, replicas, &[WEB])).expect("JSON");
    d["spec"]["template"]["spec"] = pod["spec"].clone();
    serde_json::from_value(d).expect("Deployment")
}

fn inits(p: &Pod) -> Vec<String> {
    let spec = p.spec.as_ref();
    let list = spec.and_then(|s| s.init_containers.as_ref());
    list.into_iter().flatten().map(|c| c.name.clone()).collect()
}

fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    let a = p.metadata.annotations.as_ref()?;
    a.get(key).map(String::as_str)
}

/// Waits until `pod` would be admitted into `pods`' namespace without any sidecar, with the
/// skip record `record` (dry runs): the webhook knows the policy and the namespace's verdict.
pub(crate) async fn wait_refused(pods: &Api<Pod>, pod: &Pod, record: &str) {
    let what = format!("the webhook to record {record}");
    wait_until(TIMEOUT, &what, async || {
        let shown = try_dry_run(pods, pod).await.ok()?;
        (annotation(&shown, ANNOTATION_SKIPPED) == Some(record) && inits(&shown).is_empty())
            .then_some(())
    })
    .await;
}

/// `kubectl create -n ns -f -` of `object`: what kubectl printed and its status.
pub(crate) async fn kubectl_create(ns: &str, object: Value) -> Output {
    kubectl_create_with(shared().kubectl(), "create", ns, object).await
}

/// `kubectl <verb> -n ns -f -` of `object` with `kubectl` (a command with its kubeconfig).
pub(crate) async fn kubectl_create_with(
    mut kubectl: std::process::Command,
    verb: &'static str,
    ns: &str,
    object: Value,
) -> Output {
    let ns = ns.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = kubectl
            .args([verb, "-n", &ns, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(object.to_string().as_bytes())
            .expect("write the object");
        drop(stdin);
        child.wait_with_output().expect("kubectl output")
    })
    .await
    .expect("kubectl task")
}

pub(crate) async fn set_enforce(client: &kube::Client, ns: &str, level: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let patch = json!({"metadata": {"labels": {ENFORCE: level}}});
    api.patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label the namespace");
}

/// Waits until Deployment `name` has `replicas` Pods, all updated and available.
async fn wait_rolled_out(scene: &Scene, name: &str, replicas: i32) {
    let api: Api<Deployment> = scene.api();
    let what = format!("Deployment {name}: {replicas} updated, available replicas");
    wait_until(TIMEOUT, &what, async || {
        let d = api.get(name).await.ok()?;
        let s = d.status?;
        let current = s.observed_generation == d.metadata.generation;
        let counts = (
            s.replicas.unwrap_or(0),
            s.updated_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        );
        (current && counts == (replicas, replicas, replicas)).then_some(())
    })
    .await;
}

/// The scenario: a Container-mode policy whose sidecar (no securityContext) Pod
/// Security `restricted` refuses, in a namespace that enforces it. Before the fix the webhook
/// injected it and the API server then refused every Pod: the Deployment created none.
#[tokio::test]
async fn a_restricted_namespace_creates_every_pod_without_the_sidecar_it_refuses() {
    let scene = Scene::restricted("cm-psa").await;
    let _webhook = scene.start_webhook().await;
    let op = scene.start_operator().await;
    scene
        .create(&native_sidecar_policy(
            "log",
            "web",
            "log-shipper",
            "busybox:1.36",
        ))
        .await;
    let probe = restricted_pod("refusal-probe", &[WEB]);
    wait_refused(&scene.pods, &probe, "log=refused-by-namespace").await;

    // Scale-up and rollout: the ReplicaSets create every Pod, without the sidecar.
    scene.create(&restricted_deployment("web", 2)).await;
    wait_rolled_out(&scene, "web", 2).await;
    let _: Deployment = scene.merge("web", json!({"spec": {"replicas": 4}})).await;
    wait_rolled_out(&scene, "web", 4).await;
    let rollout = json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}});
    let _: Deployment = scene.merge("web", rollout).await;
    wait_rolled_out(&scene, "web", 4).await;
    let pods = scene
        .wait_pods("4 Pods of the new ReplicaSet", |pods| {
            let live: Vec<Pod> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    let a = p.metadata.annotations.as_ref();
                    a.and_then(|a| a.get("rev")).is_some()
                })
                .cloned()
                .collect();
            (live.len() == 4).then_some(live)
        })
        .await;
    for p in &pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        assert!(inits(p).is_empty(), "{name}: created without the sidecar");
        assert_eq!(
            annotation(p, ANNOTATION_SKIPPED),
            Some("log=refused-by-namespace"),
            "{name}"
        );
        assert_eq!(annotation(p, ANNOTATION_INJECTED), None, "{name}");
    }

    // kubectl prints the webhook's warning to whoever creates such a Pod.
    let bare = serde_json::to_value(restricted_pod("by-kubectl", &[WEB])).expect("JSON");
    let out = kubectl_create(scene.name(), bare).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl create: {stderr}");
    assert!(
        stderr.contains("Warning:") && stderr.contains("Pod Security \"restricted\""),
        "the warning names the level: {stderr}"
    );
    assert!(
        stderr.contains("allowPrivilegeEscalation") && stderr.contains("log-shipper"),
        "the warning names the check and the container: {stderr}"
    );

    // The policy names the namespace and the reason, and is stalled (kstatus Failed).
    let p = scene
        .wait_policy("log", "Degraded NamespaceRefusesInjection", |p| {
            status_current(p)
                && cond_is(
                    p,
                    condition::DEGRADED,
                    condition_status::TRUE,
                    reason::NAMESPACE_REFUSES_INJECTION,
                )
                && cond_is(
                    p,
                    condition::STALLED,
                    condition_status::TRUE,
                    reason::NAMESPACE_REFUSES_INJECTION,
                )
        })
        .await;
    let message = degraded_message(&p);
    assert!(message.contains(scene.name()), "{message}");
    assert!(message.contains("restricted"), "{message}");
    let drift = p.status.and_then(|s| s.drift).expect("status.drift");
    assert!(
        drift.pods.iter().any(|d| d.ends_with("(refused)")),
        "{:?}",
        drift.pods
    );

    // Once the namespace allows it, new Pods get the sidecar again.
    set_enforce(&scene.client, scene.name(), "privileged").await;
    scene.wait_injecting(&[WEB], "log-shipper").await;
    let after = scene.create(&restricted_pod("after", &[WEB])).await;
    assert_eq!(inits(&after), ["log-shipper"]);
    op.stop().await;
}

/// A Pod with `requests.cpu` (a quota on it requires one), labelled `app=web`.
fn with_cpu(name: &str, cpu: &str) -> Pod {
    let mut v = serde_json::to_value(restricted_pod(name, &[WEB])).expect("Pod JSON");
    v["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": cpu}});
    serde_json::from_value(v).expect("Pod")
}

/// Everything but Pod Security, by a server-side dry run: a ResourceQuota the sidecar's
/// requests would exceed. Before, the webhook injected it and the quota refused every Pod:
/// the Deployment created none. Now the policy's status lists the namespace, every webhook
/// replica leaves the sidecar out there, and raising the quota brings it back.
#[tokio::test]
async fn a_quota_the_sidecar_would_exceed_leaves_it_out_until_the_quota_allows_it() {
    let scene = Scene::new("cm-quota").await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "cpu"},
        "spec": {"hard": {"requests.cpu": "1"}},
    }))
    .expect("quota");
    // Once the webhook is called (its probe Pod has no requests, which the quota needs).
    let _webhook = scene.start_webhook().await;
    scene.create(&quota).await;
    let op = scene.start_operator().await;
    let mut policy = native_sidecar_policy("log", "web", "log-shipper", "busybox:1.36");
    if let Some(spec) = policy.spec.template.spec.as_mut() {
        let init = spec.init_containers.as_mut().expect("init containers");
        init[0].resources =
            Some(serde_json::from_value(json!({"requests": {"cpu": "2"}})).expect("resources"));
    }
    scene.create(&policy).await;
    let p = scene
        .wait_policy(
            "log",
            "the namespace listed, Degraded NamespaceRefusesInjection",
            |p| {
                let listed = p
                    .status
                    .as_ref()
                    .and_then(|s| s.injection_refused_in.clone())
                    .is_some_and(|l| l.iter().any(|n| n == scene.name()));
                status_current(p)
                    && listed
                    && cond_is(
                        p,
                        condition::DEGRADED,
                        condition_status::TRUE,
                        reason::NAMESPACE_REFUSES_INJECTION,
                    )
            },
        )
        .await;
    let degraded = degraded_message(&p);
    assert!(
        degraded.contains("exceeded quota"),
        "the server's words: {degraded}"
    );
    wait_refused(
        &scene.pods,
        &with_cpu("probe", "100m"),
        "log=refused-by-namespace",
    )
    .await;

    let mut d = serde_json::to_value(restricted_deployment("web", 2)).expect("JSON");
    d["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "100m"}});
    scene
        .create(&serde_json::from_value::<Deployment>(d).expect("Deployment"))
        .await;
    wait_rolled_out(&scene, "web", 2).await;
    for p in scene.list_pods().await {
        assert!(
            inits(&p).is_empty(),
            "{:?} without the sidecar",
            p.metadata.name
        );
        assert_eq!(
            annotation(&p, ANNOTATION_SKIPPED),
            Some("log=refused-by-namespace")
        );
    }

    // Raised: the recheck clears it, and new Pods get the sidecar.
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> = scene.api();
    quotas
        .patch(
            "cpu",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"hard": {"requests.cpu": "10"}}})),
        )
        .await
        .expect("raise the quota");
    scene
        .wait_policy("log", "the namespace no longer listed", |p| {
            status_current(p)
                && p.status
                    .as_ref()
                    .is_some_and(|s| s.injection_refused_in.is_none())
        })
        .await;
    let probe = with_cpu("probe", "100m");
    wait_until(
        TIMEOUT,
        "the webhook to inject log-shipper again",
        async || {
            let shown = try_dry_run(&scene.pods, &probe).await.ok()?;
            (inits(&shown) == ["log-shipper"]).then_some(())
        },
    )
    .await;
    op.stop().await;
}
