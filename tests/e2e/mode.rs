//! `spec.mode: Container` and the companion-Pod controllers: a Container-mode policy gets no
//! sidecar Pod (those it had in Pod mode go), and its status counts the selected Pods and
//! those that record its injection (`sidecars.dev/injected`; written here by hand, as the
//! admission webhook, a later step, will).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use sidecar_api::constants::{ANNOTATION_INJECTED, condition, condition_status, reason};
use sidecar_api::{Mode, SidecarPolicy, template_hash};
use sidecar_e2e::{Scene, cond_is, is_sidecar, pod, policy, sidecar_names, status_current};
use sidecar_planner::sidecar_name;

const WEB: (&str, &str) = ("app", "web");

#[tokio::test]
async fn a_policy_switched_to_container_mode_loses_its_sidecar_pods_and_counts_injections() {
    let scene = Scene::new("mode-switch").await;
    let op = scene.start_operator().await;
    let agent = policy("agent", &[WEB], &[("team", "obs")], "SameNode");
    let mut container_spec = agent.spec.clone();
    container_spec.mode = Mode::Container;
    let container_hash = template_hash(&container_spec);
    scene.create(&agent).await;

    // `plain` predates injection; `injected` records the Container-mode template's hash.
    scene.create(&pod("plain", &[WEB])).await;
    let mut injected = pod("injected", &[WEB]);
    injected.metadata.annotations = Some(
        [(
            ANNOTATION_INJECTED.to_owned(),
            format!("agent={container_hash}"),
        )]
        .into(),
    );
    scene.create(&injected).await;
    let both = BTreeSet::from([
        sidecar_name("plain", "agent"),
        sidecar_name("injected", "agent"),
    ]);
    scene
        .wait_pods("a sidecar Pod for each Pod in Pod mode", |pods| {
            (sidecar_names(pods) == both).then_some(())
        })
        .await;

    scene
        .merge::<SidecarPolicy>("agent", json!({"spec": {"mode": "Container"}}))
        .await;
    scene
        .wait_pods("no sidecar Pod in Container mode", |pods| {
            let mains = pods.iter().filter(|p| !is_sidecar(p)).count();
            (sidecar_names(pods).is_empty() && mains == 2).then_some(())
        })
        .await;
    let p = scene
        .wait_policy(
            "agent",
            "Container-mode counts: 2 selected, 1 carrying the current sidecar, Ready",
            |p| {
                let counts = p.status.as_ref().map(|s| {
                    (
                        s.matched_pods,
                        s.sidecar_pods,
                        s.updated_pods,
                        s.ready_pods,
                        s.template_hash.clone(),
                    )
                });
                status_current(p)
                    && counts == Some((2, 1, 1, 1, Some(container_hash.clone())))
                    && cond_is(
                        p,
                        condition::PROGRESSING,
                        condition_status::FALSE,
                        reason::WAITING_FOR_NEW_PODS,
                    )
                    && cond_is(
                        p,
                        condition::RECONCILING,
                        condition_status::FALSE,
                        reason::WAITING_FOR_NEW_PODS,
                    )
            },
        )
        .await;
    let progressing = p
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == condition::PROGRESSING)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        progressing.starts_with("1 of 2 selected Pods run without the current sidecar"),
        "{progressing}"
    );
    scene
        .hold_pods(
            Duration::from_secs(5),
            "no sidecar Pod comes back",
            |pods| sidecar_names(pods).is_empty(),
        )
        .await;
    op.stop().await;
}
