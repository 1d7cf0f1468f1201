//! What GitOps tools see (issue 17 §1): the real kstatus library (`hack/kstatus`, built
//! from `sigs.k8s.io/cli-utils` by `hack/control-plane.sh`), fed `kubectl get -o json` of
//! policies in each state, as Flux, kpt and Config Sync would read them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::json;
use sidecar_api::constants::{condition, condition_status, reason};
use sidecar_e2e::fixtures::{
    WEB, compliant_template_spec, names, policy_with, privileged_template_spec, restricted_pod,
};
use sidecar_e2e::{Scene, cond_is, create_all, status_current};
use sidecar_testenv::kwok::POD_READY_DELAY_ANNOTATION;
use sidecar_testenv::shared;

/// kstatus's verdict per policy of the scene's namespace: name → (status, message).
async fn kstatus(scene: &Scene) -> BTreeMap<String, (String, String)> {
    let cp = shared();
    let json = cp
        .kubectl()
        .args(["get", "sidecarpolicies", "-n", scene.name(), "-o", "json"])
        .output()
        .expect("kubectl get");
    assert!(
        json.status.success(),
        "kubectl get: {}",
        String::from_utf8_lossy(&json.stderr)
    );
    let mut child = Command::new(sidecar_testenv::hack_tool("kstatus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kstatus");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&json.stdout)
        .expect("feed kstatus");
    let out = child.wait_with_output().expect("kstatus output");
    assert!(
        out.status.success(),
        "kstatus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let name = parts.next()?.to_string();
            let status = parts.next()?.to_string();
            Some((name, (status, parts.next().unwrap_or("").to_string())))
        })
        .collect()
}

/// A converged policy is `Current`, so is one whose stale sidecars wait for the user
/// (OnDelete), one waiting for its sidecars to become Ready
/// `InProgress`, and one whose sidecars Pod Security refuses `Failed` at once (before, it
/// read `InProgress`, so a Flux `wait: true` waited for its timeout). A paused policy whose
/// Pods lack sidecars reads `InProgress` (kstatus falls back to `Ready=False`).
#[tokio::test]
async fn gitops_tools_tell_stuck_policies_from_slow_ones() {
    let scene = Scene::restricted("ks").await;
    let op = scene.start_operator().await;
    create_all(
        &scene,
        names("web", 2)
            .iter()
            .map(|n| restricted_pod(n, &[WEB]))
            .collect(),
    )
    .await;
    let compliant = compliant_template_spec();
    scene
        .create(&policy_with(
            "done",
            WEB,
            json!({"template": {"spec": compliant}}),
        ))
        .await;
    scene.wait_converged("done", 2).await;
    // Report only: OnDelete, then a template change. The operator has done all it will do
    // without the user: Current (before, InProgress forever: Ready stayed False).
    let on_delete = json!({"updateStrategy": {"type": "OnDelete"},
        "template": {"spec": compliant_template_spec()}});
    scene.create(&policy_with("waiting", WEB, on_delete)).await;
    scene.wait_converged("waiting", 2).await;
    let changed = json!({"spec": {"template": {"metadata": {"labels": {"rev": "2"}}}}});
    let _: sidecar_api::SidecarPolicy = scene.merge("waiting", changed).await;
    scene
        .wait_policy("waiting", "Progressing WaitingForDelete", |p| {
            status_current(p)
                && cond_is(
                    p,
                    condition::PROGRESSING,
                    condition_status::FALSE,
                    reason::WAITING_FOR_DELETE,
                )
        })
        .await;

    let slow = json!({"template": {
        "metadata": {"annotations": {POD_READY_DELAY_ANNOTATION: "1h"}},
        "spec": compliant_template_spec()}});
    scene.create(&policy_with("slow", WEB, slow)).await;
    let paused = json!({"paused": true, "template": {"spec": compliant_template_spec()}});
    scene.create(&policy_with("paused", WEB, paused)).await;
    let refused = json!({"template": {"spec": privileged_template_spec()}});
    scene.create(&policy_with("refused", WEB, refused)).await;
    // Two sidecars of `slow` exist, not Ready.
    scene
        .wait_policy("slow", "2 sidecars, not Ready", |p| {
            status_current(p)
                && p.status
                    .as_ref()
                    .is_some_and(|s| s.sidecar_pods == 2 && s.ready_pods == 0)
        })
        .await;
    scene
        .wait_policy("refused", "Stalled=True InvalidTemplate", |p| {
            status_current(p)
                && cond_is(
                    p,
                    condition::STALLED,
                    condition_status::TRUE,
                    reason::INVALID_TEMPLATE,
                )
        })
        .await;
    scene
        .wait_policy("paused", "status current", status_current)
        .await;

    let got = kstatus(&scene).await;
    eprintln!("[kstatus] {got:#?}");
    let status = |name: &str| got.get(name).map(|(s, _)| s.as_str());
    assert_eq!(status("done"), Some("Current"), "{got:#?}");
    assert_eq!(
        status("waiting"),
        Some("Current"),
        "report-only drift: {got:#?}"
    );
    // Paused: Reconciling and Stalled are False, and kstatus falls back to Ready, which
    // keeps its meaning (its Pods have no Ready sidecar): InProgress until unpaused.
    assert_eq!(status("paused"), Some("InProgress"), "{got:#?}");
    assert_eq!(status("slow"), Some("InProgress"), "{got:#?}");
    assert_eq!(status("refused"), Some("Failed"), "{got:#?}");
    assert!(
        got["refused"].1.contains("PodSecurity") || got["refused"].1.contains("forbidden"),
        "the Failed message is the server's reason: {got:#?}"
    );
    op.stop().await;
}
