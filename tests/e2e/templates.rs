//! Templates the API server refuses are reported before any Pod depends on them (issue
//! 12): one server-side dry run per template change finds what admission of the CRD
//! cannot see — Pod validation, the namespace's Pod Security level — with zero creates
//! attempted, and the report clears when the template or the namespace is fixed.
//!
//! Each test runs its own operator instance in its own namespace.

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use sidecar_api::SidecarPolicy;
use sidecar_api::constants::{condition, condition_status, reason};
use sidecar_e2e::{
    QUIET, Scene, WEB, agent, cond, cond_is, create_pods, describe_policy, policy_with,
    privileged_template_spec, restricted_pod, wait_policy_event,
};

/// The `Degraded` message of a policy.
fn degraded_message(p: &SidecarPolicy) -> String {
    cond(p, condition::DEGRADED)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn invalid_template(p: &SidecarPolicy) -> bool {
    cond_is(
        p,
        condition::DEGRADED,
        condition_status::TRUE,
        reason::INVALID_TEMPLATE,
    )
}

/// A template that passes the CRD's admission but not Pod validation (an env var from an
/// unsupported field path): reported with no Pod selected yet, nothing created for the Pods
/// selected later, and cleared by a template change.
#[tokio::test]
async fn template_pod_validation_refuses_is_reported_before_any_create() {
    let scene = Scene::new("tp-invalid").await;
    let op = scene.start_operator().await;
    let mut bad = agent("info");
    bad["env"] = json!([{"name": "WHERE", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]);
    let spec = json!({"template": {"spec": {"containers": [bad]}}});
    scene.create(&policy_with("shipper", WEB, spec)).await;
    let p = scene
        .wait_policy(
            "shipper",
            "Degraded=True InvalidTemplate, no Pod yet",
            |p| invalid_template(p) && p.status.as_ref().is_some_and(|s| s.matched_pods == 0),
        )
        .await;
    let message = degraded_message(&p);
    eprintln!("[templates] {message}");
    assert!(
        message.contains("fieldPath") && message.contains("spec.bogus"),
        "the server's message names the field: {message}"
    );
    wait_policy_event(&scene, "shipper", reason::INVALID_TEMPLATE, "spec.bogus").await;

    create_pods(&scene, &["web-0", "web-1"], &[WEB]).await;
    scene
        .wait_policy("shipper", "2 matched, still InvalidTemplate", |p| {
            invalid_template(p)
                && p.status.as_ref().is_some_and(|s| s.matched_pods == 2)
                && cond_is(
                    p,
                    condition::PROGRESSING,
                    condition_status::FALSE,
                    reason::INVALID_TEMPLATE,
                )
        })
        .await;
    scene
        .hold_pods(QUIET, "no sidecar for the refused template", |pods| {
            sidecar_e2e::sidecar_names(pods).is_empty()
        })
        .await;
    let calls = op.api_calls();
    eprintln!("[templates] before the fix: {calls:?}");
    assert_eq!(calls.create, 0, "not one Pod create attempted: {calls:?}");
    assert_eq!(
        calls.dry_run, 1,
        "one dry run for the one template: {calls:?}"
    );

    let fixed = json!({"spec": {"template": {"spec": {"containers": [agent("info")]}}}});
    scene.merge::<SidecarPolicy>("shipper", fixed).await;
    let p = scene.wait_converged("shipper", 2).await;
    eprintln!("[templates] fixed: {}", describe_policy(&p));
    let calls = op.api_calls();
    assert_eq!(calls.create, 2, "one create per sidecar: {calls:?}");
    assert_eq!(calls.dry_run, 2, "one dry run per template: {calls:?}");
    op.stop().await;
}

/// A template the namespace's Pod Security level refuses: the message says it is the
/// namespace, nothing is created, and relaxing the namespace clears it without touching
/// the policy (the check is repeated with backoff).
#[tokio::test]
async fn template_the_namespace_refuses_clears_when_the_namespace_is_fixed() {
    let scene = Scene::restricted("tp-psa").await;
    let op = scene.start_operator().await;
    let spec = json!({"template": {"spec": privileged_template_spec()}});
    scene.create(&policy_with("priv", WEB, spec)).await;
    scene.create(&restricted_pod("web-0", &[WEB])).await;
    let p = scene
        .wait_policy(
            "priv",
            "Degraded=True InvalidTemplate from Pod Security",
            |p| invalid_template(p) && p.status.as_ref().is_some_and(|s| s.matched_pods == 1),
        )
        .await;
    let message = degraded_message(&p);
    eprintln!("[templates] {message}");
    assert!(
        message.contains("the namespace refuses") && message.contains("violates PodSecurity"),
        "says the namespace refuses it, with the server's words: {message}"
    );
    assert_eq!(op.api_calls().create, 0, "{:?}", op.api_calls());

    // Relax the namespace; the policy is not touched.
    let generation = p.metadata.generation;
    let namespaces: Api<Namespace> = Api::all(scene.client.clone());
    let relax =
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}});
    namespaces
        .patch(scene.name(), &PatchParams::default(), &Patch::Merge(&relax))
        .await
        .expect("relabel the namespace");
    let p = scene.wait_converged("priv", 1).await;
    assert_eq!(
        p.metadata.generation, generation,
        "the policy was not changed"
    );
    let calls = op.api_calls();
    eprintln!("[templates] after the namespace was relaxed: {calls:?}");
    assert_eq!(calls.create, 1, "{calls:?}");
    assert!(calls.dry_run >= 2, "checked again: {calls:?}");
    op.stop().await;
}
