//! The everyday events of a production cluster (issue 11), against the real control plane:
//! sidecars that end Failed, name collisions that go away, main Pods recreated under their
//! name, Pods orphaned by `--cascade=orphan`, template changes in the middle of a rollout,
//! and Pods with the longest names the API allows.
//!
//! Each test runs its own operator instance in its own namespace.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use serde_json::json;
use sidecar_api::SidecarPolicy;
use sidecar_api::constants::{LABEL_MAIN_UID, condition, condition_status, reason};
use sidecar_api::template_hash;
use sidecar_e2e::{
    AvailabilityWatch, QUIET, Scene, Seen, TIMEOUT, WEB, cond, cond_is, create_pods,
    describe_events, events, events_about, find, hash_of, is_sidecar, names, new_template,
    phase_of, pod, pod_ready, policy_with, poll, uid_of, wait_policy_event,
};
use sidecar_planner::sidecar_name;
use sidecar_testenv::kwok::POD_READY_DELAY_ANNOTATION;

/// Sets the phase of Pod `name` to `Failed` through the status subresource, as the kubelet
/// does after a node-pressure eviction.
async fn fail_pod(scene: &Scene, name: &str) -> kube::Result<Pod> {
    let patch = json!({"status": {"phase": "Failed", "reason": "Evicted",
        "message": "The node was low on resource: memory."}});
    scene
        .pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// The Degraded condition of a policy as `(status, reason, message)`.
fn degraded(p: &SidecarPolicy) -> (String, String, String) {
    cond(p, condition::DEGRADED)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// §1: a sidecar that ends `Failed` (evicted) is deleted and recreated; one that fails
/// again at once is replaced with a growing delay (no hot loop), and the policy says
/// `Degraded=True, SidecarsFailing` while it keeps failing, then recovers.
#[tokio::test]
async fn failed_sidecar_is_replaced_with_backoff_and_reported() {
    let scene = Scene::new("hd-failed").await;
    let op = scene.start_operator().await;
    scene.create(&policy_with("shipper", WEB, json!({}))).await;
    scene.create(&pod("web-0", &[WEB])).await;
    scene.wait_converged("shipper", 1).await;
    let name = sidecar_name("web-0", "shipper");
    let rec = scene.record().await;
    let first = uid_of(&scene.pods.get(&name).await.expect("sidecar"));

    fail_pod(&scene, &name).await.expect("fail the sidecar");
    let second = scene
        .wait_pods("the evicted sidecar replaced by a new, Ready one", |pods| {
            find(pods, &name)
                .filter(|s| uid_of(s) != first && pod_ready(s) && phase_of(s) == Some("Running"))
                .map(uid_of)
        })
        .await;
    assert!(
        rec.seen(Seen::Deleted).iter().any(|p| uid_of(p) == first),
        "the failed sidecar was deleted"
    );
    wait_policy_event(&scene, "shipper", reason::SIDECAR_FAILED, &name).await;
    scene.wait_converged("shipper", 1).await;
    eprintln!("[hardening] evicted sidecar {first} replaced by {second}");

    // A sidecar that fails as soon as it runs: fail every new one.
    let failer = {
        let pods = scene.pods.clone();
        let name = name.clone();
        let patched = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = patched.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(p) = pods.get(&name).await
                    && phase_of(&p) != Some("Failed")
                    && p.metadata.deletion_timestamp.is_none()
                {
                    let patch = json!({"status": {"phase": "Failed", "reason": "Error"}});
                    if pods
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .is_ok()
                    {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        (task, patched)
    };
    let p = scene
        .wait_policy(
            "shipper",
            "Degraded=True SidecarsFailing, no ready or up-to-date sidecar counted",
            |p| {
                let s = p.status.clone().unwrap_or_default();
                cond_is(
                    p,
                    condition::DEGRADED,
                    condition_status::TRUE,
                    reason::SIDECARS_FAILING,
                ) && (s.ready_pods, s.updated_pods) == (0, 0)
                    && cond_is(
                        p,
                        condition::READY,
                        condition_status::FALSE,
                        reason::SIDECARS_NOT_READY,
                    )
            },
        )
        .await;
    eprintln!(
        "[hardening] while failing: Degraded {:?}; Progressing {:?}",
        degraded(&p),
        cond(&p, condition::PROGRESSING).map(|c| c.message.clone())
    );
    assert!(
        degraded(&p).2.contains(&name),
        "the message names the failing sidecar: {:?}",
        degraded(&p)
    );
    // Measure: how many sidecars the operator creates while every one fails at once.
    let window = Duration::from_secs(15);
    let creates0 = rec.added_uids(&name).len();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let creates = rec.added_uids(&name).len() - creates0;
    eprintln!(
        "[hardening] {creates} sidecars created in {:.0}s while each fails at once ({} failed by the test so far)",
        t0.elapsed().as_secs_f64(),
        failer.1.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(
        (1..=6).contains(&creates),
        "replacements back off (1 s, 2 s, 4 s …) instead of looping: {creates} creates in {}s",
        window.as_secs()
    );
    failer.0.abort();
    // Once the sidecar stops failing, the pair recovers and the policy clears.
    scene
        .wait_converged_within("shipper", 1, Duration::from_secs(120))
        .await;
    op.stop().await;
}

/// §6: `NameCollision` clears when the Pod holding the name is deleted (the sidecar is then
/// created) or when the main Pod that wanted the name is gone.
#[tokio::test]
async fn name_collision_clears_when_the_holder_or_the_main_pod_is_gone() {
    let scene = Scene::new("hd-collide").await;
    let op = scene.start_operator().await;
    scene.create(&policy_with("shipper", WEB, json!({}))).await;
    let held: Vec<String> = ["web-0", "web-1"]
        .iter()
        .map(|m| sidecar_name(m, "shipper"))
        .collect();
    for h in &held {
        scene.create(&pod(h, &[("app", "other")])).await;
    }
    create_pods(&scene, &["web-0", "web-1"], &[WEB]).await;
    scene
        .wait_policy("shipper", "NameCollision naming both names", |p| {
            let (s, r, m) = degraded(p);
            s == condition_status::TRUE
                && r == reason::NAME_COLLISION
                && held.iter().all(|h| m.contains(h.as_str()))
        })
        .await;

    // The holder of web-0's name goes: web-0 gets its sidecar; only web-1's name is reported.
    scene.delete::<Pod>(&held[0]).await;
    scene
        .wait_pods("web-0's sidecar, once the name is free", |pods| {
            find(pods, &held[0])
                .filter(|p| is_sidecar(p) && p.metadata.deletion_timestamp.is_none())
                .map(|_| ())
        })
        .await;
    scene
        .wait_policy("shipper", "NameCollision naming only web-1's name", |p| {
            let (s, r, m) = degraded(p);
            s == condition_status::TRUE
                && r == reason::NAME_COLLISION
                && m.contains(held[1].as_str())
                && !m.contains(held[0].as_str())
        })
        .await;

    // The main Pod that wanted the other name goes: nothing is left to report.
    scene.delete::<Pod>("web-1").await;
    let p = scene
        .wait_policy("shipper", "no collision once web-1 is gone", |p| {
            cond_is(
                p,
                condition::DEGRADED,
                condition_status::FALSE,
                reason::AS_EXPECTED,
            ) && p.status.as_ref().is_some_and(|s| s.matched_pods == 1)
        })
        .await;
    eprintln!("[hardening] collisions cleared: {:?}", degraded(&p));
    op.stop().await;
}

/// §6: a main Pod recreated under its name (a StatefulSet's `web-0`) while its old sidecar
/// is still terminating waits for that sidecar to go; it is not a name collision.
#[tokio::test]
async fn main_pod_recreated_under_its_name_waits_for_its_old_sidecar() {
    let scene = Scene::new("hd-recreate").await;
    let op = scene.start_operator().await;
    scene.create(&policy_with("shipper", WEB, json!({}))).await;
    scene.create(&pod("web-0", &[WEB])).await;
    scene.wait_converged("shipper", 1).await;
    let name = sidecar_name("web-0", "shipper");
    // Hold the old sidecar in Terminating with a finalizer of the test's own.
    scene
        .merge::<Pod>(
            &name,
            json!({"metadata": {"finalizers": ["example.com/hold"]}}),
        )
        .await;
    let old_main = uid_of(&scene.pods.get("web-0").await.expect("web-0"));
    scene.delete::<Pod>("web-0").await;
    scene
        .wait_pods("web-0 gone and its sidecar terminating", |pods| {
            let main_gone = find(pods, "web-0").is_none();
            let terminating =
                find(pods, &name).is_some_and(|s| s.metadata.deletion_timestamp.is_some());
            (main_gone && terminating).then_some(())
        })
        .await;
    let new_main = uid_of(&scene.create(&pod("web-0", &[WEB])).await);
    assert_ne!(old_main, new_main);
    // The operator has seen the new Pod: it is matched and waits for its sidecar.
    scene
        .wait_policy(
            "shipper",
            "the new web-0 matched, its sidecar missing",
            |p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| (s.matched_pods, s.ready_pods) == (1, 0))
            },
        )
        .await;
    let t0 = Instant::now();
    while t0.elapsed() < QUIET {
        let p = scene.policies.get("shipper").await.expect("policy");
        assert_ne!(
            degraded(&p).1,
            reason::NAME_COLLISION,
            "the old sidecar is ours, not a collision: {:?}",
            degraded(&p)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    scene
        .merge::<Pod>(&name, json!({"metadata": {"finalizers": null}}))
        .await;
    let sidecar = scene
        .wait_pods("a new sidecar for the new web-0", |pods| {
            find(pods, &name)
                .filter(|s| s.labels().get(LABEL_MAIN_UID) == Some(&new_main))
                .cloned()
        })
        .await;
    scene.wait_converged("shipper", 1).await;
    let all = events(&scene).await;
    let collisions = events_about(&all, "SidecarPolicy", "shipper", reason::NAME_COLLISION);
    assert!(
        collisions.is_empty(),
        "no NameCollision Event:\n{}",
        describe_events(&collisions)
    );
    eprintln!(
        "[hardening] web-0 recreated ({old_main} -> {new_main}); new sidecar {}",
        uid_of(&sidecar)
    );
    op.stop().await;
}

/// §6: status counts only sidecars of live, selected main Pods (a paused policy keeps an
/// orphan but does not count it: READY never reads 2/1), and a sidecar orphaned by
/// `kubectl delete --cascade=orphan` of its main Pod is deleted once the policy acts.
#[tokio::test]
async fn orphaned_sidecars_are_not_counted_and_are_deleted() {
    let scene = Scene::new("hd-orphan").await;
    let op = scene.start_operator().await;
    scene.create(&policy_with("shipper", WEB, json!({}))).await;
    create_pods(&scene, &["web-0", "web-1"], &[WEB]).await;
    scene.wait_converged("shipper", 2).await;
    let orphan = sidecar_name("web-0", "shipper");
    let kept = sidecar_name("web-1", "shipper");
    let kept_uid = uid_of(&scene.pods.get(&kept).await.expect("sidecar"));

    scene
        .merge::<SidecarPolicy>("shipper", json!({"spec": {"paused": true}}))
        .await;
    scene
        .wait_policy("shipper", "Paused=True", |p| {
            cond_is(p, condition::PAUSED, condition_status::TRUE, reason::PAUSED)
        })
        .await;
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    scene
        .pods
        .delete("web-0", &dp)
        .await
        .expect("orphan delete");
    scene
        .wait_pods("web-0 gone, its sidecar orphaned (no owner)", |pods| {
            let orphaned = find(pods, &orphan).is_some_and(|s| s.owner_references().is_empty());
            (find(pods, "web-0").is_none() && orphaned).then_some(())
        })
        .await;
    let p = scene
        .wait_policy("shipper", "1 matched, 1 sidecar, READY 1/1", |p| {
            p.status.as_ref().is_some_and(|s| {
                (s.matched_pods, s.sidecar_pods, s.updated_pods, s.ready_pods) == (1, 1, 1, 1)
                    && s.ready.as_deref() == Some("1/1")
            })
        })
        .await;
    eprintln!(
        "[hardening] paused, orphan kept, status {:?}",
        p.status.map(|s| s.ready)
    );

    scene
        .merge::<SidecarPolicy>("shipper", json!({"spec": {"paused": false}}))
        .await;
    scene
        .wait_pods("the orphaned sidecar deleted, web-1's kept", |pods| {
            let kept_same = find(pods, &kept).is_some_and(|s| uid_of(s) == kept_uid);
            (find(pods, &orphan).is_none() && kept_same).then_some(())
        })
        .await;
    scene.wait_converged("shipper", 1).await;
    op.stop().await;
}

/// §6: template changes one after the other, in the middle of a rollout, never take more
/// than `maxUnavailable` main Pods without a Ready sidecar (deletes already sent count as
/// unavailable before the watch shows them).
#[tokio::test]
async fn template_changes_mid_rollout_never_exceed_max_unavailable() {
    const N: usize = 12;
    const MAX: usize = 1;
    let scene = Scene::new("hd-rollout").await;
    let op = scene.start_operator().await;
    let spec = json!({
        "updateStrategy": {"type": "RollingUpdate", "maxUnavailable": MAX},
        "template": {"metadata": {"annotations": {POD_READY_DELAY_ANNOTATION: "1s"}}},
    });
    scene.create(&policy_with("shipper", WEB, spec)).await;
    create_pods(&scene, &names("web", N), &[WEB]).await;
    scene
        .wait_converged_within("shipper", N as i32, Duration::from_secs(120))
        .await;
    let watch = AvailabilityWatch::start(scene.pods.clone(), "shipper", WEB).await;
    watch.reset();
    // Template changes in the middle of the rollout: each one runs a rollout step at once,
    // possibly before the watch has shown the previous step's delete. (A harder form, a
    // change every 50 ms for 10 s, saw 2 unavailable for 0.4 s once in three runs: an open
    // defect, reported, not yet explained.)
    let mut last = None;
    let mut changes = 0;
    for _ in 0..6 {
        let p: SidecarPolicy = scene
            .merge("shipper", new_template(&format!("level-{changes}")))
            .await;
        last = Some(template_hash(&p.spec));
        changes += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let want = last.expect("a last hash");
    scene
        .wait_rolled_out(
            "shipper",
            &want,
            N,
            Duration::from_secs(240),
            "every sidecar at the last template and Ready",
        )
        .await;
    watch.assert_at_most(
        MAX,
        "hardening",
        &format!("{changes} template changes 0.7 s apart over {N} sidecars (maxUnavailable {MAX})"),
    );
    scene.wait_converged("shipper", N as i32).await;
    op.stop().await;
}

/// §6: a rollout step counts the deletes it sent that its cache does not show yet. The
/// operator's Pod watch lags 1.5 s behind the API server (fault injection: a loaded API
/// server), the policy watch does not. The template changes again just after a rollout
/// step deleted a Ready sidecar: the next step still sees that sidecar Ready in its cache
/// and, without counting its own pending delete, would delete another Ready one.
#[tokio::test]
async fn a_rollout_step_counts_its_deletes_the_cache_has_not_shown() {
    const N: usize = 4;
    const MAX: usize = 1;
    let scene = Scene::new("hd-lag").await;
    let op = scene
        .start_operator_with(|o| o.pod_watch_lag = Some(Duration::from_millis(1500)))
        .await;
    let spec = json!({"updateStrategy": {"type": "RollingUpdate", "maxUnavailable": MAX}});
    scene.create(&policy_with("shipper", WEB, spec)).await;
    create_pods(&scene, &names("web", N), &[WEB]).await;
    scene
        .wait_converged_within("shipper", N as i32, Duration::from_secs(120))
        .await;
    let watch = AvailabilityWatch::start(scene.pods.clone(), "shipper", WEB).await;
    watch.reset();
    let p: SidecarPolicy = scene.merge("shipper", new_template("one")).await;
    let one = template_hash(&p.spec);
    // The moment of the race: the rollout's second step has just deleted a Ready sidecar
    // (one main Pod lacks it) while the first replacement is Ready at the new template.
    let at_race = poll(Duration::from_secs(120), async || {
        let s = watch.lock();
        let replaced_ready = s.pods.values().any(|p| {
            is_sidecar(p)
                && hash_of(p) == Some(one.as_str())
                && pod_ready(p)
                && p.metadata.deletion_timestamp.is_none()
        });
        (replaced_ready && s.current == 1).then_some(())
    })
    .await;
    assert!(
        at_race.is_some(),
        "the rollout never reached its second step: {}",
        watch.timeline()
    );
    let p: SidecarPolicy = scene.merge("shipper", new_template("two")).await;
    let two = template_hash(&p.spec);
    scene
        .wait_rolled_out(
            "shipper",
            &two,
            N,
            Duration::from_secs(240),
            "every sidecar at the last template and Ready",
        )
        .await;
    let context = format!(
        "Pod watch lagging 1.5 s, template changed at the second rollout step (maxUnavailable {MAX})"
    );
    watch.assert_at_most(MAX, "hardening", &context);
    op.stop().await;
}

/// §6: a Pod with a 253-character name (the API's limit) gets its sidecar and its Normal
/// `SidecarCreated` Event (the Event's name must stay within 253 characters too).
#[tokio::test]
async fn pods_with_the_longest_names_get_sidecars_and_events() {
    let scene = Scene::new("hd-long").await;
    let op = scene.start_operator().await;
    scene.create(&policy_with("shipper", WEB, json!({}))).await;
    let long = format!("web-{}", "x".repeat(249));
    assert_eq!(long.len(), 253);
    scene.create(&pod(&long, &[WEB])).await;
    let sidecar = sidecar_name(&long, "shipper");
    scene.wait_converged("shipper", 1).await;
    let found = poll(TIMEOUT, async || {
        let all = events(&scene).await;
        (!events_about(&all, "Pod", &long, reason::SIDECAR_CREATED).is_empty()).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "a SidecarCreated Event on the Pod with a 253-character name (sidecar {sidecar})"
    );
    op.stop().await;
}

/// Refuses every status write to the SidecarPolicies of `scene`'s namespace with a
/// ValidatingAdmissionPolicy (the API server's own admission, as a cluster policy engine
/// would), and returns once the API server applies it. Dropping the guard removes it.
struct StatusWritesRefused {
    client: kube::Client,
    name: String,
}

/// The refusal's message, to recognise it.
const REFUSED_BY_TEST: &str = "status writes refused by the test";

impl StatusWritesRefused {
    async fn install(scene: &Scene, probe_policy: &str) -> Self {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        use kube::api::{Api, PostParams};
        let ns = scene.name();
        let name = format!("refuse-status-{ns}");
        let client = scene.client.clone();
        let vap: ValidatingAdmissionPolicy = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [sidecar_api::constants::GROUP], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["sidecarpolicies/status"],
                }]},
                "validations": [{"expression": "false", "message": REFUSED_BY_TEST}],
            },
        }))
        .expect("policy JSON");
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": ns}}},
            },
        }))
        .expect("binding JSON");
        let pp = PostParams::default();
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .create(&pp, &vap)
            .await
            .expect("create the ValidatingAdmissionPolicy");
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .create(&pp, &binding)
            .await
            .expect("create the binding");
        let guard = StatusWritesRefused { client, name };
        // The API server applies new admission policies within a second or so: wait until
        // our own status write is refused.
        let patch = json!({"status": {"observedGeneration": 0}});
        let applied = poll(TIMEOUT, async || {
            let r = scene
                .policies
                .patch_status(probe_policy, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            matches!(r, Err(kube::Error::Api(s)) if s.message.contains(REFUSED_BY_TEST))
                .then_some(())
        })
        .await;
        assert!(
            applied.is_some(),
            "the ValidatingAdmissionPolicy never applied"
        );
        guard
    }
}

impl Drop for StatusWritesRefused {
    fn drop(&mut self) {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        use kube::api::Api;
        let (client, name) = (self.client.clone(), self.name.clone());
        // Cluster-scoped: removed explicitly (binding first) even when the test fails.
        tokio::spawn(async move {
            let dp = DeleteParams::default();
            let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                .delete(&name, &dp)
                .await;
            let _ = Api::<ValidatingAdmissionPolicy>::all(client)
                .delete(&name, &dp)
                .await;
        });
    }
}

/// §6: a Pod and a policy of the same name back off apart. The policy's status writes are
/// refused (a ValidatingAdmissionPolicy), so its reconciles fail and back off (1 s, 2 s,
/// 4 s …); meanwhile a Pod of the same name changes every 150 ms and its reconciles
/// succeed. Had they shared one counter, each Pod success would reset the policy's
/// backoff and it would retry every second.
#[tokio::test]
async fn a_pod_and_a_policy_of_one_name_back_off_apart() {
    const CHURN: Duration = Duration::from_secs(15);
    let scene = Scene::new("hd-backoff").await;
    // Selects no Pod: the Pod's changes must not trigger the policy by themselves.
    scene
        .create(&policy_with("web", ("app", "nobody"), json!({})))
        .await;
    let refused = StatusWritesRefused::install(&scene, "web").await;
    scene.create(&pod("web", &[WEB])).await;
    let op = scene.start_operator().await;
    let metrics = op.metrics();
    // The first status write has been refused once the policy reconcile failed.
    let failed_once = poll(TIMEOUT, async || {
        (metrics.reconcile_count("policy") > 0 && op.api_calls().patch > 0).then_some(())
    })
    .await;
    assert!(failed_once.is_some(), "the policy was never reconciled");
    let (calls0, pod_reconciles0) = (op.api_calls(), metrics.reconcile_count("pod"));
    let start = Instant::now();
    let mut tick = 0;
    while start.elapsed() < CHURN {
        tick += 1;
        let patch = json!({"metadata": {"labels": {"tick": tick.to_string()}}});
        scene
            .pods
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("relabel the Pod");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let elapsed = start.elapsed();
    let status_writes = op.api_calls().since(&calls0).patch;
    let pod_reconciles = metrics.reconcile_count("pod") - pod_reconciles0;
    eprintln!(
        "[hardening] over {:.1} s: {pod_reconciles} Pod reconciles of `web`, {status_writes} refused status writes of policy `web`",
        elapsed.as_secs_f64()
    );
    assert!(
        pod_reconciles >= 20,
        "the Pod's changes were reconciled ({pod_reconciles} reconciles for {tick} changes)"
    );
    // Backoff 1, 2, 4, 8 s: at most 5 attempts fit in 15 s (one more for rounding); a
    // backoff reset by every Pod success would retry about once a second.
    let bound = 1 + (elapsed.as_secs_f64() + 1.0).log2().ceil() as u64;
    assert!(
        status_writes <= bound,
        "the policy's retries kept their backoff: {status_writes} status writes in {:.1} s (at most {bound})",
        elapsed.as_secs_f64()
    );
    drop(refused);
    op.stop().await;
}
