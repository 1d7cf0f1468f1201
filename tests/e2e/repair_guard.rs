//! Container mode's repair can never lose replicas: each workload keeps its own budget, an
//! eviction whose replacement does not come (refused) or comes unselected halts that
//! workload's repair, and nothing is evicted where no webhook would inject a replacement.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sidecar_api::constants::{condition, reason};
use sidecar_api::{SidecarPolicy, template_hash};
use sidecar_controller::WebhookReach;
use sidecar_e2e::{
    AvailabilityWatch, Scene, TIMEOUT, cond, deployment, native_sidecar_policy, pod_ready,
    status_current, wait_until,
};
use sidecar_planner::PodView;
use sidecar_testenv::kwok::POD_READY_DELAY_ANNOTATION;

/// A Container-mode policy `mesh` over `selector` injecting native sidecar `proxy` of
/// `image`, evicting drifted Pods (RollingUpdate) at most `max` at once.
fn mesh(selector: serde_json::Value, image: &str, max: serde_json::Value) -> SidecarPolicy {
    let mut p = native_sidecar_policy("mesh", "web", "proxy", image);
    p.spec.selector = serde_json::from_value(selector).expect("selector");
    p.spec.update_strategy = serde_json::from_value(
        json!({"type": "RollingUpdate", "maxUnavailable": max, "allowEviction": true}),
    )
    .expect("strategy");
    p
}

fn mesh_hash(p: &Pod) -> Option<String> {
    PodView::from_pod(p)?
        .injected_hash("mesh")
        .map(str::to_string)
}

fn live(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
}

/// Waits until `n` Pods of the scene are Ready: their uids.
async fn ready_uids(scene: &Scene, n: usize, what: &str) -> BTreeSet<String> {
    scene
        .wait_pods(what, |pods| {
            let ok: BTreeSet<String> = pods
                .iter()
                .filter(|p| pod_ready(p))
                .filter_map(|p| p.uid())
                .collect();
            (ok.len() == n).then_some(ok)
        })
        .await
}

/// The uids of the scene's Pods that are not being deleted.
async fn live_uids(scene: &Scene) -> BTreeSet<String> {
    let pods = scene.list_pods().await;
    pods.iter()
        .filter(|p| live(p))
        .filter_map(|p| p.uid())
        .collect()
}

fn label(p: &Pod, key: &str) -> Option<String> {
    p.labels().get(key).cloned()
}

/// A Deployment of `replicas` Pods labelled `app=web, tier=<tier>`, Ready 2 s after they
/// start (so evictions overlap).
fn tier(tier: &str, replicas: i32) -> Deployment {
    let mut d = serde_json::to_value(deployment(
        tier,
        replicas,
        &[("app", "web"), ("tier", tier)],
    ))
    .expect("JSON");
    d["spec"]["template"]["metadata"]["annotations"] = json!({POD_READY_DELAY_ANNOTATION: "2s"});
    serde_json::from_value(d).expect("Deployment")
}

/// Counts, at every resourceVersion, how many of `tier`'s `replicas` are unavailable.
async fn watch_tier(scene: &Scene, tier: &'static str, replicas: usize) -> AvailabilityWatch {
    let which = move |p: &Pod| label(p, "tier").as_deref() == Some(tier);
    crate::repair::watch_unavailable_of(scene, replicas, which).await
}

/// The scenario: a 2-replica and a 10-replica Deployment under one policy whose 50%
/// budget is 6 Pods. Before each workload had its own budget, one step could evict both
/// replicas of the small one.
#[tokio::test]
async fn a_small_workload_beside_a_big_one_never_loses_both_replicas() {
    let scene = Scene::new("guard-tiers").await;
    let _webhook = scene.start_webhook().await;
    let op = scene.start_operator().await;
    let selector = json!({"matchLabels": {"app": "web"}});
    let policy = scene
        .create(&mesh(selector.clone(), "envoy:1", json!("50%")))
        .await;
    let old = template_hash(&policy.spec);
    scene.wait_injecting(&[("app", "web")], "proxy").await;
    scene.create(&tier("small", 2)).await;
    scene.create(&tier("big", 10)).await;
    scene
        .wait_pods("12 injected Ready replicas", |pods| {
            let ok = pods
                .iter()
                .filter(|p| mesh_hash(p).as_deref() == Some(old.as_str()) && pod_ready(p))
                .count();
            (ok == 12).then_some(())
        })
        .await;
    let small = watch_tier(&scene, "small", 2).await;
    let changed = scene
        .merge::<SidecarPolicy>(
            "mesh",
            json!({"spec": {"template": {"spec": {"initContainers": [
                {"name": "proxy", "image": "envoy:2", "restartPolicy": "Always"}]}}}}),
        )
        .await;
    let new = template_hash(&changed.spec);
    scene
        .wait_pods_within(
            Duration::from_secs(180),
            "every replica rolled to the new template",
            |pods| {
                let live: Vec<&Pod> = pods.iter().filter(|p| live(p)).collect();
                let done = live.len() == 12
                    && live
                        .iter()
                        .all(|p| mesh_hash(p).as_deref() == Some(new.as_str()) && pod_ready(p));
                done.then_some(())
            },
        )
        .await;
    small.assert_at_most(1, "roll", "the small workload's own 50% of 2 is 1");
    op.stop().await;
}

/// No webhook runs in this deployment: a replacement would come back without the sidecar
/// as surely as the Pod it replaced. Before, RollingUpdate evicted (and halted only after a
/// replacement showed it); now nothing is evicted, and the status says why.
#[tokio::test]
async fn without_a_webhook_nothing_is_evicted() {
    let scene = Scene::new("guard-nohook").await;
    let op = scene
        .start_operator_with(|c| c.webhook = WebhookReach::Off)
        .await;
    scene.create(&tier("web", 2)).await;
    let before = ready_uids(&scene, 2, "2 Ready replicas").await;
    let selector = json!({"matchLabels": {"app": "web"}});
    scene.create(&mesh(selector, "envoy:1", json!(1))).await;
    let p = scene
        .wait_policy(
            "mesh",
            "WaitingForNewPods: the webhook never serves it",
            |p| {
                status_current(p)
                    && cond(p, condition::PROGRESSING).is_some_and(|c| {
                        c.reason == reason::WAITING_FOR_NEW_PODS
                            && c.message.contains("never serves")
                    })
            },
        )
        .await;
    let drift = p.status.and_then(|s| s.drift).expect("drift reported");
    assert_eq!(drift.missing_pods, 2);
    assert_eq!(drift.evicting_pods, 0);
    let after = live_uids(&scene).await;
    assert_eq!(after, before, "no Pod was evicted");
    op.stop().await;
}

/// The policy selects `role=primary`, a label something sets after admission: the evicted
/// Pod's replacement is not selected (so not injected). Before, the repair waited 10 minutes
/// and evicted the next Pod, and so on; now it stops after one and says why.
#[tokio::test]
async fn a_replacement_the_policy_does_not_select_ends_that_workloads_repair() {
    let scene = Scene::new("guard-unsel").await;
    let _webhook = scene.start_webhook().await;
    let op = scene.start_operator().await;
    let selector = json!({"matchLabels": {"app": "web", "role": "primary"}});
    scene.create(&mesh(selector, "envoy:1", json!(1))).await;
    scene.create(&tier("web", 3)).await;
    let pods = scene
        .wait_pods("3 Ready replicas", |pods| {
            let ok: Vec<Pod> = pods.iter().filter(|p| pod_ready(p)).cloned().collect();
            (ok.len() == 3).then_some(ok)
        })
        .await;
    let watch = watch_tier(&scene, "web", 3).await;
    // Labelled after admission: selected now, without the sidecar.
    let api: Api<Pod> = scene.api();
    for p in &pods {
        let patch = json!({"metadata": {"labels": {"role": "primary"}}});
        api.patch(
            &p.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("label the Pod");
    }
    let p = scene
        .wait_policy("mesh", "Progressing ReplacementNotSelected", |p| {
            status_current(p)
                && cond(p, condition::PROGRESSING)
                    .is_some_and(|c| c.reason == reason::REPLACEMENT_NOT_SELECTED)
        })
        .await;
    eprintln!("[guard] {:?}", cond(&p, condition::PROGRESSING));
    let originals: BTreeSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
    let left = scene
        .list_pods()
        .await
        .iter()
        .filter(|p| live(p) && p.uid().is_some_and(|u| originals.contains(&u)))
        .count();
    assert_eq!(left, 2, "one Pod evicted, the others left alone");
    watch.assert_at_most(1, "repair", "maxUnavailable 1");
    op.stop().await;
}

/// A namespace whose admission refuses Pods with the sidecars (here a ValidatingAdmissionPolicy;
/// Pod Security or a quota alike) gets no eviction at all: a replacement would come without
/// them. Before, the repair evicted every drifted replica once, each replaced without the
/// sidecars (seen: all 3 of 3 replaced, `refusedPods: 3`).
#[tokio::test]
async fn nothing_is_evicted_where_the_namespace_refuses_the_sidecars() {
    let scene = Scene::new("guard-nsrefuses").await;
    scene.create(&tier("web", 3)).await;
    let before = ready_uids(&scene, 3, "3 Ready replicas, no webhook yet").await;
    let vap = NoProxy::install(&scene, false).await;
    vap.wait_enforced(&scene, &with_proxy(false)).await;
    let _webhook = scene.start_webhook().await;
    let op = scene.start_operator().await;
    let selector = json!({"matchLabels": {"app": "web"}});
    scene.create(&mesh(selector, "envoy:1", json!(1))).await;
    let p = scene
        .wait_policy(
            "mesh",
            "Progressing NotEvictable: the namespace refuses",
            |p| {
                status_current(p)
                    && cond(p, condition::PROGRESSING).is_some_and(|c| {
                        c.reason == reason::NOT_EVICTABLE && c.message.contains("namespace refuses")
                    })
            },
        )
        .await;
    eprintln!("[guard] {:?}", cond(&p, condition::PROGRESSING));
    let after = live_uids(&scene).await;
    assert_eq!(after, before, "no Pod was evicted");
    vap.remove(&scene).await;
    op.stop().await;
}

/// A Pod with an init container `proxy`, opted out of injection, owned (as a controller's
/// Pods are) or not.
fn with_proxy(owned: bool) -> Pod {
    let mut v = serde_json::to_value(sidecar_e2e::restricted_pod("probe", &[("x", "y")]))
        .expect("Pod JSON");
    v["metadata"]["annotations"] = json!({"sidecars.dev/inject": "false"});
    v["spec"]["initContainers"] = json!([{"name": "proxy", "image": "envoy:1"}]);
    if owned {
        v["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "probe",
            "uid": "00000000-0000-0000-0000-000000000001",
        }]);
    }
    serde_json::from_value(v).expect("Pod")
}

/// A ValidatingAdmissionPolicy that refuses Pods with an init container `proxy` in the
/// scene's namespace (those a controller owns only, with `owned`: the injection check's
/// stand-in, which no controller owns, passes it).
struct NoProxy(String);

impl NoProxy {
    async fn install(scene: &Scene, owned: bool) -> NoProxy {
        let name = format!("no-proxy-{}", scene.name());
        let owned_only = if owned {
            "has(object.metadata.ownerReferences) && "
        } else {
            ""
        };
        let vap: ValidatingAdmissionPolicy = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["pods"],
                }]},
                "validations": [{
                    "expression": format!("!({owned_only}has(object.spec.initContainers) && object.spec.initContainers.exists(c, c.name == 'proxy'))"),
                    "message": "no proxy here",
                }],
            },
        }))
        .expect("VAP");
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": scene.name()}}},
            },
        }))
        .expect("binding");
        let client = &scene.client;
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .create(&PostParams::default(), &vap)
            .await
            .expect("VAP");
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .expect("binding");
        NoProxy(name)
    }

    /// Waits until the API server enforces it on `probe` (a Pod with `proxy`; dry runs).
    async fn wait_enforced(&self, scene: &Scene, probe: &Pod) {
        wait_until(TIMEOUT, "the VAP to refuse Pods with proxy", async || {
            let err = sidecar_e2e::webhook::try_dry_run(&scene.pods, probe)
                .await
                .err()?;
            err.to_string().contains("no proxy here").then_some(())
        })
        .await;
    }

    async fn remove(self, scene: &Scene) {
        let client = &scene.client;
        let dp = DeleteParams::default();
        let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .delete(&self.0, &dp)
            .await;
        let _ = Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .delete(&self.0, &dp)
            .await;
    }
}

/// A ValidatingAdmissionPolicy (it runs after the mutating webhooks) refuses the Pods a
/// controller creates with the injected `proxy` (not the injection check's stand-in, so the
/// check passes): the evicted Pod's replacement is never created. Before, the eviction was
/// forgotten after 10 minutes and the next replica evicted, draining the Deployment; now the
/// repair of that workload halts at the deadline with its budget held.
#[tokio::test]
async fn refused_replacements_halt_the_repair_with_the_budget_held() {
    let scene = Scene::new("guard-refused").await;
    scene.create(&tier("web", 3)).await;
    scene
        .wait_pods("3 Ready replicas, no webhook yet", |pods| {
            (pods.iter().filter(|p| pod_ready(p)).count() == 3).then_some(())
        })
        .await;
    let vap = NoProxy::install(&scene, true).await;
    let _webhook = scene.start_webhook().await;
    let op = scene
        .start_operator_with(|c| c.replacement_deadline = Duration::from_secs(3))
        .await;
    let selector = json!({"matchLabels": {"app": "web"}});
    scene.create(&mesh(selector, "envoy:1", json!(1))).await;
    // The API server refuses a controller's Pod with the sidecar (a dry run shows it).
    vap.wait_enforced(&scene, &with_proxy(true)).await;
    let watch = watch_tier(&scene, "web", 3).await;
    let p = scene
        .wait_policy("mesh", "Progressing ReplacementNotCreated", |p| {
            status_current(p)
                && cond(p, condition::PROGRESSING)
                    .is_some_and(|c| c.reason == reason::REPLACEMENT_NOT_CREATED)
        })
        .await;
    eprintln!("[guard] {:?}", cond(&p, condition::PROGRESSING));
    let drift = p.status.and_then(|s| s.drift).expect("drift");
    assert_eq!(drift.evicting_pods, 1, "its budget still held");
    let live_pods = scene.list_pods().await.iter().filter(|p| live(p)).count();
    assert_eq!(live_pods, 2, "one replica lost, never more");
    watch.assert_at_most(1, "repair", "maxUnavailable 1, replacements refused");
    vap.remove(&scene).await;
    op.stop().await;
}
