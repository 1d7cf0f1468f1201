//! Container mode, part 2: every selected Pod is checked against the policy's current
//! sidecars. Pods that missed them (created while the webhook was down, or bare) or carry an
//! older template's are reported; with updateStrategy RollingUpdate, those a controller owns
//! are evicted through the Eviction API — within maxUnavailable and every
//! PodDisruptionBudget, as an independent watcher checks — and come back injected.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt as _;
use serde_json::json;
use sidecar_api::constants::{condition, reason};
use sidecar_api::{SidecarPolicy, template_hash};
use sidecar_controller::metrics::DriftLabels;
use sidecar_e2e::{
    AvailabilityWatch, Scene, TIMEOUT, cond, deployment, native_sidecar_policy, pod, pod_ready,
    status_current, wait_policy_event, wait_policy_event_of, wait_until,
};
use sidecar_planner::PodView;
use sidecar_testenv::kwok::POD_READY_DELAY_ANNOTATION;
use sidecar_webhook::certs::Lifetimes;

const WEB: (&str, &str) = ("app", "web");

/// A Container-mode policy `mesh` over `app=web` injecting native sidecar `proxy` of
/// `image`, with `strategy` as spec.updateStrategy (`null`: the default).
fn mesh(image: &str, strategy: serde_json::Value) -> SidecarPolicy {
    let mut policy = native_sidecar_policy("mesh", "web", "proxy", image);
    if !strategy.is_null() {
        policy.spec.update_strategy = serde_json::from_value(strategy).expect("static strategy");
    }
    policy
}

/// The injection the Pod records for policy `mesh` (its template hash).
fn mesh_hash(p: &Pod) -> Option<String> {
    PodView::from_pod(p)?
        .injected_hash("mesh")
        .map(str::to_string)
}

fn owned_by_replica_set(p: &Pod) -> bool {
    p.owner_references()
        .iter()
        .any(|o| o.kind == "ReplicaSet" && o.controller == Some(true))
}

/// An independent watch of the Deployment's `replicas`: how many are unavailable (not there,
/// terminating, or not Ready) at every resourceVersion.
async fn watch_unavailable(scene: &Scene, replicas: usize) -> AvailabilityWatch {
    watch_unavailable_of(scene, replicas, owned_by_replica_set).await
}

/// [`watch_unavailable`] of the Pods `which` picks (of `replicas`).
pub(crate) async fn watch_unavailable_of(
    scene: &Scene,
    replicas: usize,
    which: impl Fn(&Pod) -> bool + Clone + Send + 'static,
) -> AvailabilityWatch {
    let picked = which.clone();
    let live = move |p: &&Pod| picked(p) && p.metadata.deletion_timestamp.is_none();
    AvailabilityWatch::start_counting(
        scene.api::<Pod>(),
        move |pods| {
            let ready = pods
                .values()
                .filter(|p| live(p))
                .filter(|p| pod_ready(p))
                .count();
            replicas.saturating_sub(ready)
        },
        move |pods| {
            let states: Vec<String> = pods
                .values()
                .filter(|p| which(p))
                .map(|p| {
                    format!(
                        "{} ready={} deleting={} mesh={:?}",
                        p.name_any(),
                        pod_ready(p),
                        p.metadata.deletion_timestamp.is_some(),
                        mesh_hash(p)
                    )
                })
                .collect();
            states.join("; ")
        },
    )
    .await
}

#[tokio::test]
async fn drifted_pods_are_reported_then_evicted_within_a_pdb_and_bare_pods_left_alone() {
    let scene = Scene::new("repair").await;
    let webhook = scene.start_webhook().await;
    let op = scene.start_operator().await;
    // The default strategy in Container mode: report only.
    let policy = scene.create(&mesh("envoy:1", json!(null))).await;
    let hash = template_hash(&policy.spec);
    scene.wait_injecting(&[WEB], "proxy").await;
    // Replacements take 2 s to be Ready, so a second eviction right after a first one meets
    // the PodDisruptionBudget (below) with no disruption left.
    let mut web = serde_json::to_value(deployment("web", 2, &[WEB])).expect("JSON");
    web["spec"]["template"]["metadata"]["annotations"] = json!({POD_READY_DELAY_ANNOTATION: "2s"});
    scene
        .create(&serde_json::from_value::<Deployment>(web).expect("Deployment"))
        .await;
    let originals: Vec<String> = scene
        .wait_pods("2 injected Ready replicas", |pods| {
            let ok: Vec<String> = pods
                .iter()
                .filter(|p| mesh_hash(p).as_deref() == Some(hash.as_str()) && pod_ready(p))
                .filter_map(|p| p.uid())
                .collect();
            (ok.len() == 2).then_some(ok)
        })
        .await;

    // The webhook goes away; the Deployment is scaled up and a bare Pod created meanwhile
    // (failurePolicy Ignore: they are created without the sidecar).
    let addr = webhook.addr;
    drop(webhook);
    scene
        .merge::<Deployment>("web", json!({"spec": {"replicas": 5}}))
        .await;
    // No controller: reported, never evicted (and kept out of the PDB, which needs every
    // Pod it selects to have a controller with a scale).
    scene.create(&pod("bare", &[WEB, ("bare", "true")])).await;
    let drifted = scene
        .wait_pods(
            "3 new replicas and the bare Pod, without the sidecar",
            |pods| {
                let without: Vec<Pod> = pods
                    .iter()
                    .filter(|p| mesh_hash(p).is_none() && p.metadata.deletion_timestamp.is_none())
                    .cloned()
                    .collect();
                (without.len() == 4).then_some(without)
            },
        )
        .await;
    let mut names: Vec<String> = drifted.iter().map(|p| p.name_any()).collect();
    names.sort();
    let reported = scene
        .wait_policy("mesh", "4 of 6 selected Pods named as missing", |p| {
            let d = p.status.as_ref().and_then(|s| s.drift.as_ref());
            status_current(p)
                && d.is_some_and(|d| {
                    (d.missing_pods, d.outdated_pods, d.evicting_pods) == (4, 0, 0)
                        && d.pods
                            == names
                                .iter()
                                .map(|n| format!("{n} (missing)"))
                                .collect::<Vec<_>>()
                })
        })
        .await;
    let progressing = cond(&reported, condition::PROGRESSING).expect("Progressing");
    assert_eq!(progressing.reason, reason::WAITING_FOR_NEW_PODS);
    assert!(
        progressing
            .message
            .contains("4 of 6 selected Pods run without the current sidecar")
            && progressing
                .message
                .contains("RollingUpdate with allowEviction: true evicts them"),
        "{}",
        progressing.message
    );
    let uids_before: Vec<String> = drifted
        .iter()
        .map(|p| p.uid().unwrap_or_default())
        .collect();
    // The drift metric, per policy.
    let gauge = |drift: &'static str| {
        op.metrics()
            .drifted_pods
            .get_or_create(&DriftLabels {
                namespace: scene.name().to_string(),
                policy: "mesh".into(),
                drift,
            })
            .get()
    };
    assert_eq!((gauge("missing"), gauge("outdated")), (4, 0));

    // The webhook is back and a PodDisruptionBudget allows one disruption at a time.
    let _webhook = scene
        .start_webhook_with(Lifetimes::default(), Some(addr))
        .await;
    scene.wait_injecting(&[WEB], "proxy").await;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"maxUnavailable": 1, "selector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "bare", "operator": "DoesNotExist"}],
        }},
    }))
    .expect("static PDB");
    scene.create(&pdb).await;
    let pdbs = scene.api::<PodDisruptionBudget>();
    wait_until(TIMEOUT, "the PDB to count the 5 replicas", async || {
        let s = pdbs.get("web").await.ok()?.status?;
        (s.current_healthy == Some(5) && s.disruptions_allowed == Some(1)).then_some(())
    })
    .await;
    // OnDelete (the default) only reported: no Pod was evicted all this time.
    let now: Vec<Pod> = scene.list_pods().await;
    for uid in &uids_before {
        assert!(
            now.iter().any(|p| p.uid().as_deref() == Some(uid.as_str())
                && p.metadata.deletion_timestamp.is_none()),
            "OnDelete evicts nothing: {uid} is gone"
        );
    }

    // RollingUpdate with a budget of 2: the PDB's 1 is the tighter and must hold.
    let watch = watch_unavailable(&scene, 5).await;
    scene
        .merge::<SidecarPolicy>(
            "mesh",
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "maxUnavailable": 2, "allowEviction": true}}}),
        )
        .await;
    let repaired = scene
        .wait_policy_within(
            "mesh",
            std::time::Duration::from_secs(180),
            "every replica injected, the bare Pod left alone",
            |p| {
                let d = p.status.as_ref().and_then(|s| s.drift.as_ref());
                status_current(p)
                    && p.status
                        .as_ref()
                        .map(|s| (s.matched_pods, s.updated_pods, s.ready_pods))
                        == Some((6, 5, 5))
                    && d.is_some_and(|d| {
                        (d.missing_pods, d.outdated_pods, d.evicting_pods) == (1, 0, 0)
                            && d.pods == ["bare (missing)"]
                    })
            },
        )
        .await;
    let progressing = cond(&repaired, condition::PROGRESSING).expect("Progressing");
    assert_eq!(
        progressing.reason,
        reason::NOT_EVICTABLE,
        "{}",
        progressing.message
    );
    watch.assert_at_most(1, "repair", "PDB maxUnavailable 1, policy maxUnavailable 2");
    assert_eq!(
        gauge("missing"),
        1,
        "the bare Pod, still missing the sidecar"
    );
    let pods = scene.list_pods().await;
    let bare = pods
        .iter()
        .find(|p| p.name_any() == "bare")
        .expect("bare Pod");
    assert_eq!(
        bare.uid(),
        drifted
            .iter()
            .find(|p| p.name_any() == "bare")
            .and_then(|p| p.uid())
    );
    let replicas: Vec<&Pod> = pods
        .iter()
        .filter(|p| owned_by_replica_set(p) && p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(replicas.len(), 5);
    assert!(
        replicas
            .iter()
            .all(|p| mesh_hash(p).as_deref() == Some(hash.as_str()))
    );
    // The 3 drifted replicas were replaced; the 2 injected from the start were kept.
    for p in &replicas {
        assert!(
            !uids_before.contains(&p.uid().unwrap_or_default()),
            "{} replaced",
            p.name_any()
        );
    }
    for uid in &originals {
        assert!(
            replicas
                .iter()
                .any(|p| p.uid().as_deref() == Some(uid.as_str())),
            "the injected replica {uid} was never evicted"
        );
    }
    // Events: the repair started, a budget refused an eviction, the repair completed.
    wait_policy_event_of(
        &scene,
        "Normal",
        "mesh",
        reason::REPAIRING,
        "at most 2 unavailable",
    )
    .await;
    wait_policy_event(
        &scene,
        "mesh",
        reason::EVICTION_BLOCKED,
        "PodDisruptionBudget",
    )
    .await;
    wait_policy_event_of(
        &scene,
        "Normal",
        "mesh",
        reason::REPAIRED,
        "runs the current sidecar",
    )
    .await;
    op.stop().await;
}

#[tokio::test]
async fn a_template_change_rolls_every_pod_to_the_new_hash_one_at_a_time() {
    let scene = Scene::new("repair-roll").await;
    let _webhook = scene.start_webhook().await;
    let op = scene.start_operator().await;
    let rolling = json!({"type": "RollingUpdate", "maxUnavailable": 1, "allowEviction": true});
    let policy = scene.create(&mesh("envoy:1", rolling.clone())).await;
    let old = template_hash(&policy.spec);
    scene.wait_injecting(&[WEB], "proxy").await;
    scene.create(&deployment("web", 4, &[WEB])).await;
    scene
        .wait_pods("4 injected Ready replicas", |pods| {
            let ok = pods
                .iter()
                .filter(|p| mesh_hash(p).as_deref() == Some(old.as_str()) && pod_ready(p))
                .count();
            (ok == 4).then_some(())
        })
        .await;
    scene.wait_converged("mesh", 4).await;

    let watch = watch_unavailable(&scene, 4).await;
    let changed = scene
        .merge::<SidecarPolicy>(
            "mesh",
            json!({"spec": {"template": {"spec": {"initContainers": [
                {"name": "proxy", "image": "envoy:2", "restartPolicy": "Always"}]}}}}),
        )
        .await;
    let new = template_hash(&changed.spec);
    assert_ne!(new, old);
    scene
        .wait_pods_within(
            std::time::Duration::from_secs(180),
            "every replica rolled to the new template",
            |pods| {
                let live: Vec<&Pod> = pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                let done = live.len() == 4
                    && live
                        .iter()
                        .all(|p| mesh_hash(p).as_deref() == Some(new.as_str()) && pod_ready(p));
                done.then_some(())
            },
        )
        .await;
    let converged = scene.wait_converged("mesh", 4).await;
    assert!(
        converged.status.as_ref().is_some_and(|s| s.drift.is_none()),
        "no drift left: {:?}",
        converged.status
    );
    watch.assert_at_most(1, "roll", "policy maxUnavailable 1, no PDB");
    op.stop().await;
}

/// Upgrades: CRDs before 2026-12-02 defaulted `updateStrategy.type` to RollingUpdate and
/// stored it in every policy, and client-side `kubectl apply` (like `kubectl create`, Helm 3
/// and typed clients) records a defaulted field as its own (kubernetes#112701). Before, that
/// ownership counted as "someone wrote RollingUpdate" and the upgraded operator started
/// evicting; now only `allowEviction: true`, which no CRD ever defaulted, does. On a private
/// control plane: the test swaps the cluster-wide CRD.
#[tokio::test]
async fn a_policy_applied_under_the_old_crd_evicts_nothing_after_the_upgrade() {
    let mut old = sidecar_api::crd();
    let mut v = serde_json::to_value(&old).expect("CRD JSON");
    let type_ = v.pointer_mut(
        "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/updateStrategy/properties/type",
    )
    .expect("the updateStrategy.type schema");
    type_["default"] = json!("RollingUpdate");
    old = serde_json::from_value(v).expect("old CRD");
    let (cp, cfg, client, ns) = crate::faults::private_plane(&old, "upgrade").await;
    let scene = Scene::in_namespace(&client, ns);
    let _webhook = scene.start_webhook().await;
    // Pods of a Deployment, created before their policy: no sidecar.
    scene.create(&deployment("web", 2, &[WEB])).await;
    let before: Vec<String> = scene
        .wait_pods("2 Ready replicas without the sidecar", |pods| {
            let ok: Vec<String> = pods
                .iter()
                .filter(|p| mesh_hash(p).is_none() && pod_ready(p))
                .filter_map(|p| p.uid())
                .collect();
            (ok.len() == 2).then_some(ok)
        })
        .await;
    // Client-side apply, as most users write policies, with no `type`.
    let policy = json!({
        "apiVersion": "sidecars.dev/v1alpha1", "kind": "SidecarPolicy",
        "metadata": {"name": "mesh", "namespace": scene.name()},
        "spec": {
            "mode": "Container",
            "selector": {"matchLabels": {"app": "web"}},
            "updateStrategy": {"maxUnavailable": 1},
            "template": {"spec": {"initContainers": [
                {"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"}]}},
        },
    });
    let out =
        crate::refusal::kubectl_create_with(cp.cp.kubectl(), "apply", scene.name(), policy).await;
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: SidecarPolicy = scene.api::<SidecarPolicy>().get("mesh").await.expect("get");
    assert_eq!(
        stored.spec.update_strategy.type_,
        Some(sidecar_api::UpdateStrategyType::RollingUpdate),
        "the old CRD defaulted it"
    );
    let owned = stored.metadata.managed_fields.iter().flatten().any(|e| {
        e.fields_v1
            .as_ref()
            .is_some_and(|f| f.0.pointer("/f:spec/f:updateStrategy/f:type").is_some())
    });
    assert!(
        owned,
        "client-side apply owns the defaulted type (the old rule's trigger): {:?}",
        stored.metadata.managed_fields
    );
    // The upgrade: the current CRD, then the operator.
    sidecar_testenv::install_crd(&client, &sidecar_api::crd())
        .await
        .expect("upgrade the CRD");
    let op = sidecar_controller::Operator::start(
        cfg,
        sidecar_controller::OperatorConfig::namespace(scene.name()),
    )
    .await
    .expect("operator starts");
    let reported = scene
        .wait_policy("mesh", "the 2 replicas reported, report only", |p| {
            let d = p.status.as_ref().and_then(|s| s.drift.as_ref());
            status_current(p) && d.is_some_and(|d| d.missing_pods == 2 && d.evicting_pods == 0)
        })
        .await;
    let progressing = cond(&reported, condition::PROGRESSING).expect("Progressing");
    assert_eq!(
        progressing.reason,
        reason::WAITING_FOR_NEW_PODS,
        "{}",
        progressing.message
    );
    let live: Vec<String> = scene
        .list_pods()
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.uid())
        .collect();
    assert_eq!(live.len(), 2);
    assert!(
        live.iter().all(|u| before.contains(u)),
        "no Pod was evicted"
    );

    // Consent, written explicitly: the repair starts.
    scene
        .merge::<SidecarPolicy>(
            "mesh",
            json!({"spec": {"updateStrategy": {"allowEviction": true}}}),
        )
        .await;
    scene
        .wait_pods("both replicas replaced with the sidecar", |pods| {
            let live: Vec<&Pod> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let done = live.len() == 2
                && live.iter().all(|p| {
                    mesh_hash(p).is_some() && !before.contains(&p.uid().unwrap_or_default())
                });
            done.then_some(())
        })
        .await;
    op.stop().await;
}

/// Pods the webhook left alone because they already have a container of the sidecar's name
/// are reported (NameCollision), never evicted: their replacements would collide again.
#[tokio::test]
async fn pods_that_collide_with_the_sidecars_name_are_never_evicted() {
    let scene = Scene::new("repair-collide").await;
    let _webhook = scene.start_webhook().await;
    let op = scene.start_operator().await;
    scene
        .create(&mesh(
            "envoy:1",
            json!({"type": "RollingUpdate", "maxUnavailable": "100%", "allowEviction": true}),
        ))
        .await;
    scene.wait_injecting(&[WEB], "proxy").await;
    // The app's own container is called `proxy` too.
    let mut web = serde_json::to_value(deployment("web", 2, &[WEB])).expect("JSON");
    web["spec"]["template"]["spec"]["containers"][0]["name"] = json!("proxy");
    scene
        .create(&serde_json::from_value::<Deployment>(web).expect("Deployment"))
        .await;
    let first: Vec<String> = scene
        .wait_pods("2 Ready replicas the webhook skipped", |pods| {
            let skipped: Vec<String> = pods
                .iter()
                .filter(|p| {
                    pod_ready(p)
                        && PodView::from_pod(p).is_some_and(|v| v.skipped_for("mesh").is_some())
                })
                .filter_map(|p| p.uid())
                .collect();
            (skipped.len() == 2).then_some(skipped)
        })
        .await;
    let reported = scene
        .wait_policy("mesh", "2 collisions, nothing to evict", |p| {
            let d = p.status.as_ref().and_then(|s| s.drift.as_ref());
            status_current(p)
                && d.is_some_and(|d| d.missing_pods == 2)
                && cond(p, condition::DEGRADED).is_some_and(|c| c.reason == reason::NAME_COLLISION)
        })
        .await;
    let progressing = cond(&reported, condition::PROGRESSING).expect("Progressing");
    assert_eq!(
        (
            progressing.reason.as_str(),
            progressing.message.contains("their replacements would too")
        ),
        (reason::NOT_EVICTABLE, true),
        "{}",
        progressing.message
    );
    let now: Vec<String> = scene
        .list_pods()
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.uid())
        .collect();
    assert!(
        first.iter().all(|u| now.contains(u)),
        "no colliding Pod was evicted: {first:?} now {now:?}"
    );
    op.stop().await;
}
