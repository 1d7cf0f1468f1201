//! Fault tolerance (CI-sized forms; `make test-faults` runs the long forms):
//! crashes at random moments, an API server outage with a compacted history (watches
//! get 410 Gone and relist), concurrent writers, surprising objects, stored policies that
//! a later, stricter CRD refuses, and no hot loop on an idle converged namespace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::{Value, json};
use sidecar_api::SidecarPolicy;
use sidecar_api::constants::{
    LABEL_MAIN_UID, LABEL_MANAGED_BY, LABEL_POLICY, MANAGED_BY_VALUE, condition, condition_status,
    reason,
};
use sidecar_controller::metrics::CategoryLabel;
use sidecar_controller::{Operator, OperatorConfig};
use sidecar_e2e::{
    IdleCheck, PodRecorder, Scene, Seen, TIMEOUT, generation_observed, is_sidecar, pod, policy,
    poll, sidecar_names, wait_until,
};
use sidecar_planner::sidecar_name;
use sidecar_testenv::shared;

/// Long forms run with `SIDECAR_LONG_FAULTS=1` (`make test-faults`).
fn long() -> bool {
    std::env::var_os("SIDECAR_LONG_FAULTS").is_some()
}

/// Replays the recorder's journal: the most live sidecars any (main uid, policy) pair
/// ever had at once.
fn max_sidecars_per_pair(rec: &PodRecorder) -> usize {
    let mut live: HashMap<String, (String, String)> = HashMap::new();
    let mut max = 0;
    for (seen, p) in rec.journal() {
        if !is_sidecar(&p) {
            continue;
        }
        let l = p.labels();
        let pair = (
            l.get(LABEL_MAIN_UID).cloned().unwrap_or_default(),
            l.get(LABEL_POLICY).cloned().unwrap_or_default(),
        );
        let uid = p.uid().unwrap_or_default();
        match seen {
            Seen::Added => {
                live.insert(uid, pair.clone());
                max = max.max(live.values().filter(|v| **v == pair).count());
            }
            Seen::Deleted => {
                live.remove(&uid);
            }
        }
    }
    max
}

async fn create_many(scene: &Scene, prefix: &str, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| {
            let pods = scene.pods.clone();
            let p = pod(&format!("{prefix}-{i}"), &[("app", "burst")]);
            async move {
                pods.create(&PostParams::default(), &p)
                    .await
                    .expect("create Pod")
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

async fn wait_converged(scene: &Scene, prefix: &str, n: usize, policy: &str) {
    scene
        .wait_pods("every burst Pod to have exactly its sidecar", |pods| {
            let sidecars: Vec<&Pod> = pods.iter().filter(|p| is_sidecar(p)).collect();
            let all = (0..n).all(|i| {
                let want = sidecar_name(&format!("{prefix}-{i}"), policy);
                sidecars.iter().any(|s| s.name_any() == want)
            });
            (all && sidecars.len() == n).then_some(())
        })
        .await;
}

#[tokio::test]
async fn crash_at_random_moments_never_duplicates_nor_loses_a_sidecar() {
    let (n, rounds) = if long() { (500, 10) } else { (100, 4) };
    let scene = Scene::new("crash").await;
    let rec = scene.record().await;
    scene
        .create_policy("agent", &[("app", "burst")], &[], "SameNode")
        .await;
    let seed: u64 = rand::random();
    eprintln!("[crash] seed {seed}, {n} Pods, {rounds} kills");
    let mut rng = seed;
    let mut next = move || {
        // xorshift: reproducible from the printed seed.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut op = scene.start_operator().await;
    let burst = {
        let pods = scene.pods.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..n)
                .map(|i| {
                    let pods = pods.clone();
                    let p = pod(&format!("burst-{i}"), &[("app", "burst")]);
                    async move { pods.create(&PostParams::default(), &p).await.map(|_| ()) }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await
        })
    };
    for round in 0..rounds {
        let after = Duration::from_millis(100 + next() % 900);
        tokio::time::sleep(after).await;
        // Dropping aborts every task where it stands, in-flight requests included: a crash.
        drop(op);
        eprintln!("[crash] round {round}: killed after {after:?}");
        op = scene.start_operator().await;
    }
    for r in burst.await.expect("burst task") {
        r.expect("create Pod");
    }
    wait_converged(&scene, "burst", n, "agent").await;
    let max = max_sidecars_per_pair(&rec);
    let added = rec
        .seen(Seen::Added)
        .iter()
        .filter(|p| is_sidecar(p))
        .count();
    eprintln!("[crash] converged; sidecars added {added}, max per pair {max}");
    assert_eq!(max, 1, "a (Pod, policy) pair had {max} sidecars at once");
    assert_eq!(added, n, "sidecars were created and deleted again");
    drop(op);
}

#[tokio::test]
async fn concurrent_writers_cause_no_error_storm_and_the_truth_wins() {
    let scene = Scene::new("conflict").await;
    scene
        .create_policy("agent", &[("app", "burst")], &[], "SameNode")
        .await;
    let op = scene.start_operator().await;
    create_many(&scene, "w", 10).await;
    wait_converged(&scene, "w", 10, "agent").await;
    let uids: BTreeMap<String, String> = scene
        .list_pods()
        .await
        .iter()
        .filter(|p| is_sidecar(p))
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect();
    // Another writer lies in the status and edits the sidecars' labels for a while.
    let stop_at = Instant::now() + Duration::from_secs(if long() { 60 } else { 8 });
    let mut writes = 0;
    while Instant::now() < stop_at {
        let lie = json!({"status": {"matchedPods": 999, "ready": "0/999"}});
        let _ = scene
            .policies
            .patch_status("agent", &PatchParams::default(), &Patch::Merge(&lie))
            .await;
        for name in uids.keys() {
            let label = json!({"metadata": {"labels": {"edited-by": format!("writer-{writes}")}}});
            let _ = scene
                .pods
                .patch(name, &PatchParams::default(), &Patch::Merge(&label))
                .await;
        }
        writes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let policies = scene.policies.clone();
    wait_until(Duration::from_secs(30), "status back to the truth", || {
        let policies = policies.clone();
        async move {
            let s = policies.get("agent").await.ok()?.status?;
            (s.matched_pods == 10 && s.ready.as_deref() == Some("10/10")).then_some(())
        }
    })
    .await;
    let now: BTreeMap<String, String> = scene
        .list_pods()
        .await
        .iter()
        .filter(|p| is_sidecar(p))
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect();
    assert_eq!(now, uids, "label edits by others must not replace sidecars");
    let errors: u64 = ["create", "delete", "patch-status"]
        .iter()
        .map(|c| {
            op.metrics()
                .errors
                .get_or_create(&sidecar_controller::metrics::CategoryLabel { category: c })
                .get()
        })
        .sum();
    let reconciles = op.metrics().reconcile_count("policy");
    eprintln!(
        "[conflict] {writes} writer rounds; operator errors {errors}, policy reconciles {reconciles}"
    );
    assert_eq!(errors, 0, "merge patches never conflict; no error storm");
    assert!(
        reconciles < 10 * writes as u64 + 50,
        "{reconciles} policy reconciles for {writes} writer rounds"
    );
}

#[tokio::test]
async fn surprising_objects_are_handled_without_crash_or_loop() {
    let scene = Scene::new("odd").await;
    let op = scene.start_operator().await;
    // Every selector operator.
    let spec = json!({
        "selector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["odd", "odder"]},
            {"key": "tier", "operator": "NotIn", "values": ["db"]},
            {"key": "team", "operator": "Exists"},
            {"key": "canary", "operator": "DoesNotExist"},
        ]},
        "template": {"spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]}},
    });
    let p = SidecarPolicy::new("exprs", serde_json::from_value(spec).expect("spec"));
    scene.create(&p).await;
    let long_name = format!("{}-x", "m".repeat(251));
    assert_eq!(long_name.len(), 253);
    let cases = [
        (
            long_name.as_str(),
            vec![("app", "odd"), ("team", "a")],
            true,
        ),
        (
            "in-odder",
            vec![("app", "odder"), ("team", "a"), ("tier", "web")],
            true,
        ),
        (
            "not-in-db",
            vec![("app", "odd"), ("team", "a"), ("tier", "db")],
            false,
        ),
        ("no-team", vec![("app", "odd")], false),
        (
            "canary",
            vec![("app", "odd"), ("team", "a"), ("canary", "1")],
            false,
        ),
    ];
    for (name, labels, _) in &cases {
        scene.create(&pod(name, labels)).await;
    }
    let want: Vec<String> = cases
        .iter()
        .filter(|c| c.2)
        .map(|c| sidecar_name(c.0, "exprs"))
        .collect();
    assert!(want.iter().all(|n| n.len() <= 63), "{want:?}");
    scene
        .wait_pods("sidecars of exactly the selected Pods", |pods| {
            let mut got: Vec<String> = pods
                .iter()
                .filter(|p| is_sidecar(p))
                .map(|p| p.name_any())
                .collect();
            got.sort();
            let mut w = want.clone();
            w.sort();
            (got == w).then_some(())
        })
        .await;

    // A sidecar whose owner reference is removed by hand would never be garbage-collected
    // with its main Pod (the same state as one orphaned by `--cascade=orphan`): it is
    // replaced by a sidecar the main Pod owns, without a hot loop.
    let victim = sidecar_name("in-odder", "exprs");
    let old_uid = scene
        .pods
        .get(&victim)
        .await
        .expect("victim")
        .metadata
        .uid
        .unwrap_or_default();
    let no_owner = json!({"metadata": {"ownerReferences": null}});
    scene.merge::<Pod>(&victim, no_owner).await;
    scene
        .wait_pods("the ownerless sidecar replaced by an owned one", |pods| {
            pods.iter()
                .find(|p| p.name_any() == victim)
                .filter(|p| {
                    p.metadata.uid.as_deref() != Some(old_uid.as_str())
                        && p.owner_references().iter().any(|o| o.name == "in-odder")
                })
                .map(|_| ())
        })
        .await;
    // The status may still take one more write (its counts follow the relabelled Pod a
    // debounce later); a loop would keep writing after the namespace settled.
    scene.wait_settled().await;
    let before = (op.api_calls(), op.metrics().reconcile_count("pod"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = (op.api_calls(), op.metrics().reconcile_count("pod"));
    eprintln!(
        "[odd] 5 s after the collision: writes {}, pod reconciles {}",
        after.0.writes() - before.0.writes(),
        after.1 - before.1
    );
    assert_eq!(
        after.0.writes(),
        before.0.writes(),
        "no write loop on a collision"
    );
    assert!(
        after.1 - before.1 < 5,
        "no reconcile loop: {} in 5 s",
        after.1 - before.1
    );
    let p = scene.policies.get("exprs").await.expect("policy");
    assert!(
        !p.status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| { c.type_ == condition::DEGRADED && c.reason == reason::NAME_COLLISION }),
        "our own sidecar is not a collision: {:?}",
        p.status
    );
}

/// Compacts etcd's whole history through its HTTP gateway, so that watches resuming
/// from an older resourceVersion get 410 Gone.
async fn compact_etcd(etcd: &str) {
    let http = |path: &str, body: serde_json::Value| {
        let url = format!("{etcd}{path}");
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-s", "-X", "POST", &url, "-d", &body.to_string()])
                .output()
                .await
                .expect("curl");
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
        }
    };
    let range = http("/v3/kv/range", json!({"key": "AA=="})).await;
    let rev = range["header"]["revision"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let done = http(
        "/v3/kv/compaction",
        json!({"revision": rev, "physical": true}),
    )
    .await;
    eprintln!("[outage] compacted etcd at revision {rev}: {done}");
}

/// A private control plane, for a test that stops its API server or changes the CRD:
/// started, with `crd` installed and one namespace; with a client and its config.
pub(crate) async fn private_plane(
    crd: &CustomResourceDefinition,
    prefix: &str,
) -> (
    sidecar_testenv::Running,
    kube::Config,
    kube::Client,
    sidecar_testenv::TestNamespace,
) {
    let cp = sidecar_testenv::start(&sidecar_testenv::Options {
        progress: false,
        ..Default::default()
    })
    .await
    .expect("private control plane");
    let cfg = sidecar_testenv::config_from_kubeconfig(cp.cp.kubeconfig())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg.clone()).expect("client");
    sidecar_testenv::install_crd(&client, crd)
        .await
        .expect("CRD");
    let ns = sidecar_testenv::TestNamespace::try_create(&client, prefix, &[])
        .await
        .expect("ns");
    (cp, cfg, client, ns)
}

#[tokio::test]
async fn api_server_outage_with_compaction_reconnects_and_converges() {
    // A private control plane: this test stops its API server.
    let (mut cp, cfg, client, ns) = private_plane(&sidecar_api::crd(), "outage").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let policies: Api<SidecarPolicy> = Api::namespaced(client.clone(), ns.name());
    policies
        .create(
            &PostParams::default(),
            &policy("agent", &[("app", "web")], &[], "SameNode"),
        )
        .await
        .expect("policy");
    let op = Operator::start(cfg, OperatorConfig::namespace(ns.name()))
        .await
        .expect("operator");
    for i in 0..3 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("web-{i}"), &[("app", "web")]),
        )
        .await
        .expect("Pod");
    }
    let count_sidecars = |pods: Api<Pod>| async move {
        let l = pods.list(&Default::default()).await.ok()?;
        Some(
            l.items
                .iter()
                .filter(|p| is_sidecar(p) && p.metadata.deletion_timestamp.is_none())
                .count(),
        )
    };
    wait_until(Duration::from_secs(60), "3 sidecars", || {
        let pods = pods.clone();
        async move { (count_sidecars(pods).await? == 3).then_some(()) }
    })
    .await;
    let creates_before = op.api_calls().create;

    let etcd = cp.etcd_url().expect("etcd url");
    cp.stop_component("kube-apiserver").expect("stop apiserver");
    let down = Duration::from_secs(if long() { 20 } else { 10 });
    let t0 = Instant::now();
    let health = op.health();
    wait_until(
        Duration::from_secs(60),
        "operator not ready during the outage",
        || {
            let h = health.clone();
            async move { (!h.is_ready()).then_some(()) }
        },
    )
    .await;
    eprintln!(
        "[outage] not ready {:?} after the API server stopped",
        t0.elapsed()
    );
    compact_etcd(&etcd).await;
    tokio::time::sleep(down.saturating_sub(t0.elapsed())).await;
    cp.start_component("kube-apiserver")
        .expect("start apiserver");
    wait_until(Duration::from_secs(120), "operator ready again", || {
        let h = health.clone();
        async move { h.is_ready().then_some(()) }
    })
    .await;
    eprintln!(
        "[outage] ready again {:?} after the API server stopped",
        t0.elapsed()
    );
    // Changes after the outage converge: two more Pods.
    for i in 3..5 {
        let p = pod(&format!("web-{i}"), &[("app", "web")]);
        wait_until(
            Duration::from_secs(60),
            "Pod created after the outage",
            || {
                let pods = pods.clone();
                let p = p.clone();
                async move {
                    pods.create(&PostParams::default(), &p)
                        .await
                        .ok()
                        .map(|_| ())
                }
            },
        )
        .await;
    }
    wait_until(
        Duration::from_secs(60),
        "5 sidecars after the outage",
        || {
            let pods = pods.clone();
            async move { (count_sidecars(pods).await? == 5).then_some(()) }
        },
    )
    .await;
    let calls = op.api_calls();
    eprintln!(
        "[outage] after recovery: {calls:?}; watch errors {}",
        op.metrics().watch_errors.get()
    );
    assert_eq!(
        calls.create - creates_before,
        2,
        "no burst of duplicate creates after the relist"
    );
    assert!(
        op.metrics().watch_errors.get() > 0,
        "the outage was seen by the watches"
    );
    drop(op);
    drop(ns);
    cp.stop();
}

/// Failed reconciles of `op` so far in error `category` (`create-refused`, `patch-status`…).
fn errors_in(op: &Operator, category: &'static str) -> u64 {
    op.metrics()
        .errors
        .get_or_create(&CategoryLabel { category })
        .get()
}

/// The policy's `Degraded` condition as (status, reason, message).
fn degraded(p: &SidecarPolicy) -> Option<(&str, &str, &str)> {
    let s = p.status.as_ref()?;
    let c = s
        .conditions
        .iter()
        .find(|c| c.type_ == condition::DEGRADED)?;
    Some((c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

/// Removes every CEL rule (`x-kubernetes-validations`) and every `minItems`, `maximum` and
/// `minimum` bound below `v`.
fn strip_rules(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.remove("minItems");
            map.remove("maximum");
            map.remove("minimum");
            map.values_mut().for_each(strip_rules);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_rules),
        _ => {}
    }
}

/// The project's CRD, generated like `install_crd` and `make crds` do
/// ([`sidecar_api::crd`]), without its CEL rules and `minItems` bounds: an older, more
/// lenient version of the same CRD.
fn relaxed_crd() -> CustomResourceDefinition {
    let mut v = serde_json::to_value(sidecar_api::crd()).expect("CRD JSON");
    strip_rules(&mut v);
    let text = v.to_string();
    assert!(
        !text.contains("x-kubernetes-validations") && !text.contains("minItems"),
        "every rule and bound is stripped"
    );
    serde_json::from_value(v).expect("relaxed CRD")
}

/// A policy the relaxed CRD stores and the strict one refuses.
struct Invalid {
    name: &'static str,
    /// Edits the spec of the valid policy into this one.
    edit: fn(&mut Value),
    /// Words of the strict CRD's refusal (a fragment of `tests/bad-policies/*.yaml`); the
    /// operator's `Degraded` message carries the same words.
    refused_with: &'static str,
    /// The field the operator's message names.
    field: &'static str,
}

const INVALID: [Invalid; 5] = [
    // Under a selector-less CRD this would select every Pod of the namespace.
    Invalid {
        name: "empty-selector",
        edit: |spec| spec["selector"] = json!({}),
        refused_with: "spec.selector must not be empty",
        field: "spec.selector",
    },
    // A selector that does not parse (`In` needs values).
    Invalid {
        name: "in-without-values",
        edit: |spec| {
            spec["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "In"}]});
        },
        refused_with: "values must be non-empty when operator is In or NotIn",
        field: "spec.selector.matchExpressions[0].values",
    },
    // A sidecar without containers: the API server would refuse every such Pod, forever.
    Invalid {
        name: "no-containers",
        edit: |spec| spec["template"]["spec"]["containers"] = json!([]),
        refused_with: "spec.template.spec.containers must list at least one container",
        field: "spec.template.spec.containers",
    },
    // A rollout that could never progress.
    Invalid {
        name: "max-unavailable-zero",
        edit: |spec| {
            spec["updateStrategy"] = json!({"type": "RollingUpdate", "maxUnavailable": "0%"});
        },
        refused_with: "must be a positive integer or a percentage between 1% and 100%",
        field: "spec.updateStrategy.maxUnavailable",
    },
    // A policy that would select the operator's own sidecars.
    Invalid {
        name: "selects-sidecars",
        edit: |spec| {
            spec["selector"] = json!({"matchLabels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE}});
        },
        refused_with: "spec.selector must not select sidecar Pods",
        field: "spec.selector",
    },
];

#[tokio::test]
async fn stored_policies_a_stricter_crd_refuses_are_reported_without_crash_or_loop() {
    const N: usize = 3;
    let idle = Duration::from_secs(if long() { 60 } else { 10 });
    // A private control plane: this test installs another version of the CRD.
    let (mut cp, cfg, client, ns) = private_plane(&relaxed_crd(), "stored").await;
    let scene = Scene {
        pods: Api::namespaced(client.clone(), ns.name()),
        policies: Api::namespaced(client.clone(), ns.name()),
        client: client.clone(),
        ns,
    };
    let good = policy("good", &[("app", "web")], &[("team", "obs")], "SameNode");
    let invalid: Vec<SidecarPolicy> = INVALID
        .iter()
        .map(|case| {
            let mut v = serde_json::to_value(&good).expect("policy JSON");
            v["metadata"]["name"] = json!(case.name);
            (case.edit)(&mut v["spec"]);
            serde_json::from_value(v).expect("invalid policy")
        })
        .collect();
    scene.create(&good).await;
    for p in &invalid {
        scene.create(p).await;
    }
    for i in 0..N {
        scene
            .create(&pod(&format!("web-{i}"), &[("app", "web")]))
            .await;
    }

    // The strict CRD, same name: an update. The stored policies stay; new ones like them
    // are refused.
    sidecar_testenv::install_crd(&client, &sidecar_api::crd())
        .await
        .expect("strict CRD");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    // The API server swaps in the new schema shortly after the update: wait until it refuses.
    for (case, p) in INVALID.iter().zip(&invalid) {
        let mut again = p.clone();
        again.metadata.name = Some(format!("{}-again", case.name));
        let mut last = None;
        let refused = poll(TIMEOUT, async || {
            let r = scene.policies.create(&dry_run, &again).await;
            let hit = matches!(&r, Err(kube::Error::Api(s))
                if s.code == 422 && s.message.contains(case.refused_with));
            last = Some(r.map(|_| ()));
            hit.then_some(())
        })
        .await;
        assert!(
            refused.is_some(),
            "the strict CRD must refuse {} with {:?}; last answer: {last:?}",
            case.name,
            case.refused_with
        );
    }
    let mut again = good.clone();
    again.metadata.name = Some("good-again".into());
    scene
        .policies
        .create(&dry_run, &again)
        .await
        .expect("the strict CRD accepts the valid policy");

    let t0 = Instant::now();
    let op = Operator::start(cfg, OperatorConfig::namespace(scene.name()))
        .await
        .expect("operator starts");
    let want: std::collections::BTreeSet<String> = (0..N)
        .map(|i| sidecar_name(&format!("web-{i}"), "good"))
        .collect();
    scene
        .wait_pods("the valid policy's sidecars, and no other", |pods| {
            (sidecar_names(pods) == want).then_some(())
        })
        .await;
    scene
        .wait_policy("good", "3/3 ready, not degraded", |p| {
            generation_observed(p)
                && p.status.as_ref().and_then(|s| s.ready.as_deref()) == Some("3/3")
                && degraded(p).is_some_and(|d| d.0 == condition_status::FALSE)
        })
        .await;
    for case in &INVALID {
        let what = format!(
            "0 matched, Degraded=True {} naming {} with {:?}",
            reason::INVALID_SPEC,
            case.field,
            case.refused_with
        );
        let p = scene
            .wait_policy(case.name, &what, |p| {
                generation_observed(p)
                    && p.status.as_ref().is_some_and(|s| s.matched_pods == 0)
                    && degraded(p).is_some_and(|(status, reason, message)| {
                        status == condition_status::TRUE
                            && reason == reason::INVALID_SPEC
                            && message.contains(case.field)
                            && message.contains(case.refused_with)
                    })
            })
            .await;
        let s = p.status.as_ref().expect("status");
        eprintln!(
            "[stored] {}: matched {} sidecars {}; Degraded {:?}",
            case.name,
            s.matched_pods,
            s.sidecar_pods,
            degraded(&p)
        );
        assert_eq!((s.matched_pods, s.sidecar_pods), (0, 0), "{}", case.name);
    }
    scene.wait_settled().await;
    eprintln!(
        "[stored] reported in {:.1}s: {:?}; status writes {}, refused creates {}, reconciles pod {} policy {}",
        t0.elapsed().as_secs_f64(),
        op.api_calls(),
        op.metrics().status_writes.get(),
        errors_in(&op, "create-refused"),
        op.metrics().reconcile_count("pod"),
        op.metrics().reconcile_count("policy"),
    );
    assert_eq!(
        errors_in(&op, "patch-status"),
        0,
        "the status writes pass the stricter CRD (validation ratcheting)"
    );
    assert_eq!(sidecar_names(&scene.list_pods().await), want);

    assert_eq!(
        errors_in(&op, "create-refused"),
        0,
        "no create is even tried for a policy the operator knows the server would refuse"
    );

    // Idle: nothing at all.
    let before = scene.fingerprint().await;
    let check = IdleCheck::start(&op);
    tokio::time::sleep(idle).await;
    check.assert_no_writes(&op, "stored", idle);
    let (pod_reconciles, policy_reconciles) = check.reconciles_since(&op);
    eprintln!("[stored] reconciles while idle: pod {pod_reconciles} policy {policy_reconciles}");
    assert!(op.is_ready(), "the operator is up");
    assert_eq!(scene.fingerprint().await, before, "nothing was written");
    assert!(
        pod_reconciles + policy_reconciles <= 1,
        "no reconcile loop: {pod_reconciles} Pod and {policy_reconciles} policy reconciles in {}s",
        idle.as_secs()
    );

    // Still alive: a new Pod gets the valid policy's sidecar, and nothing from the others.
    scene
        .create(&pod(&format!("web-{N}"), &[("app", "web")]))
        .await;
    let mut want = want;
    want.insert(sidecar_name(&format!("web-{N}"), "good"));
    scene
        .wait_pods("the new Pod's sidecar of the valid policy", |pods| {
            (sidecar_names(pods) == want).then_some(())
        })
        .await;
    let four = format!("{}/{}", N + 1, N + 1);
    scene
        .wait_policy("good", "4/4 ready", |p| {
            p.status.as_ref().and_then(|s| s.ready.as_deref()) == Some(four.as_str())
        })
        .await;
    assert_eq!(sidecar_names(&scene.list_pods().await), want);
    drop(op);
    drop(scene);
    cp.stop();
}

#[tokio::test]
async fn idle_converged_namespace_has_no_hot_loop() {
    const N: usize = 100;
    let idle = Duration::from_secs(if long() { 300 } else { 20 });
    let scene = Scene::new("hot").await;
    scene
        .create_policy("agent", &[("app", "burst")], &[], "SameNode")
        .await;
    let op = scene.start_operator().await;
    let t0 = Instant::now();
    create_many(&scene, "idle", N).await;
    wait_converged(&scene, "idle", N, "agent").await;
    let ready = format!("{N}/{N}");
    scene
        .wait_policy("agent", "all sidecars ready", |p| {
            generation_observed(p)
                && p.status.as_ref().and_then(|s| s.ready.as_deref()) == Some(ready.as_str())
        })
        .await;
    scene.wait_settled().await;
    let converged = t0.elapsed();
    let before = scene.fingerprint().await;
    let check = IdleCheck::start(&op);
    eprintln!(
        "[idle] {N} Pods converged and settled in {:.1}s: {:?}; status writes {}, reconciles pod {} policy {}",
        converged.as_secs_f64(),
        op.api_calls(),
        op.metrics().status_writes.get(),
        op.metrics().reconcile_count("pod"),
        op.metrics().reconcile_count("policy"),
    );
    tokio::time::sleep(idle).await;
    check.assert_no_writes(&op, "idle", idle);
    let (pod_reconciles, policy_reconciles) = check.reconciles_since(&op);
    eprintln!("[idle] reconciles while idle: pod {pod_reconciles} policy {policy_reconciles}");
    assert_eq!(scene.fingerprint().await, before, "nothing changed");
    // Nothing changes, so nothing is reconciled: a hot loop would reconcile thousands of
    // times; a relist would reconcile all 100 Pods.
    assert!(
        pod_reconciles + policy_reconciles <= 2,
        "no reconcile loop: {pod_reconciles} Pod and {policy_reconciles} policy reconciles in {}s",
        idle.as_secs()
    );
}

/// Edits of a valid spec into values the CRD once let through but the operator's types
/// cannot hold (an `IntOrString` is 32 bits), with the field each is reported under.
type Undecodable = (&'static str, fn(&mut Value), &'static str);

const UNDECODABLE: [Undecodable; 2] = [
    (
        "huge-max-unavailable",
        |spec| {
            spec["updateStrategy"] =
                json!({"type": "RollingUpdate", "maxUnavailable": 3_000_000_000_u64})
        },
        "spec.updateStrategy.maxUnavailable",
    ),
    (
        "negative-huge-max-unavailable",
        |spec| {
            spec["updateStrategy"] =
                json!({"type": "RollingUpdate", "maxUnavailable": -3_000_000_000_i64})
        },
        "spec.updateStrategy.maxUnavailable",
    ),
];

/// Creates main Pod `name` (`app=web`) and waits until the namespace's sidecars are `want`
/// plus its sidecar of policy `good` (and nothing of the other policies).
async fn new_pod_gets_only_good_sidecar(
    scene: &Scene,
    want: &mut BTreeSet<String>,
    name: &str,
    what: &str,
) {
    scene.create(&pod(name, &[("app", "web")])).await;
    want.insert(sidecar_name(name, "good"));
    scene
        .wait_pods(what, |pods| (sidecar_names(pods) == *want).then_some(()))
        .await;
}

/// Issue 11 §2: stored policies that do not decode into the operator's types are reported
/// on themselves and never stall a watch: neither for a running operator (watch event)
/// nor after a restart (the initial LIST), and every other namespace keeps converging.
#[tokio::test]
async fn undecodable_stored_policies_never_stall_the_operator() {
    let (mut cp, cfg, client, bad_ns) = private_plane(&relaxed_crd(), "undecodable").await;
    let good_ns = sidecar_testenv::TestNamespace::try_create(&client, "decodable", &[])
        .await
        .expect("ns");
    let scene = Scene {
        pods: Api::namespaced(client.clone(), good_ns.name()),
        policies: Api::namespaced(client.clone(), good_ns.name()),
        client: client.clone(),
        ns: good_ns,
    };
    let good = policy("good", &[("app", "web")], &[("team", "obs")], "SameNode");
    scene.create(&good).await;
    scene.create(&pod("web-0", &[("app", "web")])).await;
    let opts = OperatorConfig {
        sync_timeout: Duration::from_secs(30),
        ..OperatorConfig::all_namespaces()
    };
    let op = Operator::start(cfg.clone(), opts.clone())
        .await
        .expect("operator starts");
    let mut want = BTreeSet::from([sidecar_name("web-0", "good")]);
    scene
        .wait_pods("the good policy's sidecar", |pods| {
            (sidecar_names(pods) == want).then_some(())
        })
        .await;

    // Read and written as plain JSON: these objects do not decode into `SidecarPolicy`.
    let bad_dynamic: Api<kube::core::DynamicObject> = Api::namespaced_with(
        client.clone(),
        bad_ns.name(),
        &kube::discovery::ApiResource::erase::<SidecarPolicy>(&()),
    );
    // Written through the lax CRD while the operator runs: each reaches it as a watch event.
    for (name, edit, _) in &UNDECODABLE {
        let mut v = serde_json::to_value(&good).expect("policy JSON");
        v["metadata"]["name"] = json!(name);
        edit(&mut v["spec"]);
        let dynamic: kube::core::DynamicObject = serde_json::from_value(v).expect("dynamic");
        bad_dynamic
            .create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|e| panic!("the lax CRD stores {name}: {e}"));
    }
    let condition_of =
        |p: &kube::core::DynamicObject, type_: &str| -> Option<(String, String, String)> {
            let c = p.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == type_)?
                .clone();
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            Some((text("status"), text("reason"), text("message")))
        };
    let check_reported = async |phase: &str| {
        for (name, _, field) in &UNDECODABLE {
            let what =
                format!("{phase}: {name} Degraded=True InvalidSpec naming {field}, not Ready");
            let mut last = None;
            let found = poll(TIMEOUT, async || {
                let p = bad_dynamic.get(name).await.ok()?;
                let degraded = condition_of(&p, condition::DEGRADED);
                let ready = condition_of(&p, condition::READY);
                last = Some(p.data["status"].clone());
                let hit = degraded.as_ref().is_some_and(|(s, r, m)| {
                    s == condition_status::TRUE && r == reason::INVALID_SPEC && m.contains(field)
                }) && ready.is_some_and(|(s, r, _)| {
                    s == condition_status::FALSE && r == reason::INVALID_SPEC
                });
                hit.then_some(degraded)
            })
            .await;
            let Some(degraded) = found else {
                panic!("timed out waiting for {what}; last status: {last:?}");
            };
            eprintln!("[undecodable] {phase}: {name}: {degraded:?}");
        }
    };
    check_reported("running").await;
    // The watch is alive: a new Pod still gets its sidecar.
    new_pod_gets_only_good_sidecar(
        &scene,
        &mut want,
        "web-1",
        "web-1's sidecar after the undecodable policies",
    )
    .await;
    op.stop().await;

    // The strict CRD, then a restart: the initial LIST holds the undecodable policies.
    sidecar_testenv::install_crd(&client, &sidecar_api::crd())
        .await
        .expect("strict CRD");
    let op = Operator::start(cfg, opts)
        .await
        .expect("the operator syncs although some stored policies do not decode");
    check_reported("restarted").await;
    new_pod_gets_only_good_sidecar(
        &scene,
        &mut want,
        "web-2",
        "web-2's sidecar after the restart",
    )
    .await;
    scene
        .wait_policy("good", "3/3 ready", |p| {
            p.status.as_ref().and_then(|s| s.ready.as_deref()) == Some("3/3")
        })
        .await;
    eprintln!(
        "[undecodable] restarted operator: {:?}; watch errors {}",
        op.api_calls(),
        op.metrics().watch_errors.get()
    );
    drop(op);
    drop(scene);
    drop(bad_ns);
    cp.stop();
}

/// A TCP forwarder to the API server that a test can cut: while cut, every open
/// connection is dropped and new ones are closed at once (a network blip, or a load
/// balancer resetting long-lived connections). The API server itself stays up, with its
/// watch cache: watches resume from their resourceVersion, without a relist.
struct Cuttable {
    url: String,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn start(upstream: String) -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the forwarder");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Cuttable { url, cut, task }
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn readiness_returns_after_a_network_cut_without_any_event() {
    let scene = Scene::new("ready-cut").await;
    scene
        .create_policy("agent", &[("app", "web")], &[], "SameNode")
        .await;
    scene.create(&pod("web-0", &[("app", "web")])).await;
    let mut cfg = shared().kube_config().await;
    let upstream = cfg
        .cluster_url
        .authority()
        .expect("API server address")
        .to_string();
    let proxy = Cuttable::start(upstream).await;
    cfg.cluster_url = proxy.url.parse().expect("forwarder URL");
    let op = Operator::start(cfg, OperatorConfig::namespace(scene.name()))
        .await
        .expect("operator");
    let sc = sidecar_name("web-0", "agent");
    scene
        .wait_pods("the sidecar Ready", |pods| {
            pods.iter()
                .any(|p| p.name_any() == sc && sidecar_e2e::pod_ready(p))
                .then_some(())
        })
        .await;
    scene.wait_settled().await;
    let health = op.health();
    assert!(health.is_ready(), "ready once converged");
    let lists_before = op.api_calls().list;

    proxy.cut.send_replace(true);
    wait_until(Duration::from_secs(60), "not ready while cut off", || {
        let h = health.clone();
        async move { (!h.is_ready()).then_some(()) }
    })
    .await;
    // Long enough for the watches to fail their reconnects too.
    let errors = op.metrics().watch_errors.get();
    wait_until(Duration::from_secs(30), "a failed reconnect", || {
        let m = op.metrics();
        async move { (m.watch_errors.get() > errors).then_some(()) }
    })
    .await;
    proxy.cut.send_replace(false);
    let t0 = Instant::now();
    let back = poll(Duration::from_secs(20), || {
        let h = health.clone();
        async move { h.is_ready().then(Instant::now) }
    })
    .await;
    eprintln!(
        "[ready-cut] ready again {:?} after the connection returned; watch errors {}; LISTs since the cut {}",
        back.map(|b| b - t0),
        op.metrics().watch_errors.get(),
        op.api_calls().list - lists_before,
    );
    assert!(
        back.is_some(),
        "ready within 20 s of the connection's return, with no event in the namespace"
    );
    drop(op);
}
