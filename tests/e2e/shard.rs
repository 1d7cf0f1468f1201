//! Sharding by `--namespace-selector`: two instances, each managing the namespaces whose
//! label selects it; a namespace that moves from one to the other keeps its sidecars; and
//! one instance whose selector a namespace comes to match by relabelling.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use sidecar_api::SidecarPolicy;
use sidecar_controller::metrics::VerbLabel;
use sidecar_controller::{Operator, OperatorConfig};
use sidecar_e2e::{
    Scene, Seen, TIMEOUT, is_sidecar, minimal_policy, pod, uid_of, wait_pod, wait_until,
};
use sidecar_planner::sidecar_name;
use sidecar_testenv::{TestNamespace, install_crd, shared};

const PODS: usize = 20;

/// LIST requests of `resource` (`pods`, `sidecarpolicies`) `op` has sent so far.
fn lists(op: &Operator, resource: &'static str) -> u64 {
    op.metrics()
        .api_requests
        .get_or_create(&VerbLabel {
            verb: "list",
            resource,
        })
        .get()
}

/// Sidecar name → uid, of the live sidecars among `pods`.
fn sidecar_uids(pods: &[Pod]) -> BTreeMap<String, String> {
    pods.iter()
        .filter(|p| is_sidecar(p) && p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), uid_of(p)))
        .collect()
}

async fn set_shard(client: &kube::Client, ns: &str, key: &str, value: &str) {
    let patch = json!({"metadata": {"labels": {key: value}}});
    Api::<Namespace>::all(client.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("relabel the namespace");
}

async fn matched_pods(policies: &Api<sidecar_api::SidecarPolicy>, name: &str) -> Option<i32> {
    let p = policies.get(name).await.ok()?;
    Some(p.status?.matched_pods)
}

#[tokio::test]
async fn a_namespace_moved_between_shards_keeps_its_sidecars() {
    let scene = Scene::new("shard").await;
    let client = scene.client.clone();
    // Both instances watch all namespaces: a label value of this run only, so no other
    // test's namespace is in either scope.
    let key = "e2e.sidecars.dev/shard";
    let (a, b) = (format!("{}-a", scene.name()), format!("{}-b", scene.name()));
    set_shard(&client, scene.name(), key, &a).await;
    // Pods of a namespace neither instance manages: what a cluster-wide relist would cost.
    let filler = TestNamespace::create(&client, "shard-filler").await;
    let filler_pods: Api<Pod> = Api::namespaced(client.clone(), filler.name());
    futures::stream::iter(0..120)
        .map(|i| {
            let api = filler_pods.clone();
            async move {
                api.create(&PostParams::default(), &pod(&format!("f-{i}"), &[]))
                    .await
                    .expect("filler Pod")
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;

    let start = |value: String| async move {
        let opts = OperatorConfig {
            namespace_selector: Some(format!("{key}={value}")),
            instance: Some(value),
            ..OperatorConfig::all_namespaces()
        };
        Operator::start(shared().kube_config().await, opts)
            .await
            .expect("operator starts")
    };
    let op_a = start(a.clone()).await;
    let op_b = start(b.clone()).await;

    scene
        .create_policy("agent", &[("app", "web")], &[], "SameNode")
        .await;
    futures::stream::iter(0..PODS)
        .map(|i| {
            let api = scene.pods.clone();
            async move {
                api.create(
                    &PostParams::default(),
                    &pod(&format!("web-{i}"), &[("app", "web")]),
                )
                .await
                .expect("Pod")
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let before = scene
        .wait_pods("every Pod to have its sidecar under shard a", |pods| {
            let uids = sidecar_uids(pods);
            let all =
                (0..PODS).all(|i| uids.contains_key(&sidecar_name(&format!("web-{i}"), "agent")));
            (all && uids.len() == PODS).then_some(uids)
        })
        .await;
    wait_until(TIMEOUT, "status matchedPods 20 from shard a", async || {
        (matched_pods(&scene.policies, "agent").await? == PODS as i32).then_some(())
    })
    .await;
    assert_eq!(op_b.cached_pods(), 0, "shard b caches nothing of shard a");
    scene.wait_settled().await;

    // Move the namespace to shard b, watched by an independent recorder.
    let rec = scene.record().await;
    let (lists_a, lists_b) = (
        (lists(&op_a, "pods"), lists(&op_a, "sidecarpolicies")),
        (lists(&op_b, "pods"), lists(&op_b, "sidecarpolicies")),
    );
    let creates_b = op_b.api_calls().create;
    set_shard(&client, scene.name(), key, &b).await;
    wait_until(
        TIMEOUT,
        "shard a to forget the namespace, shard b to adopt it",
        async || (op_a.cached_pods() == 0 && op_b.cached_pods() == 2 * PODS).then_some(()),
    )
    .await;
    let calls_a = op_a.api_calls();
    // A short "nothing happens" window, checked to its end so the record below is full.
    let mut changed = None;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        let now = sidecar_uids(&scene.list_pods().await);
        if now != before && changed.is_none() {
            changed = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deleted: Vec<String> = rec
        .seen(Seen::Deleted)
        .iter()
        .map(|p| p.name_any())
        .collect();
    let added: Vec<String> = rec.seen(Seen::Added).iter().map(|p| p.name_any()).collect();
    let moved_lists = |op: &Operator, before: (u64, u64)| {
        (
            lists(op, "pods") - before.0,
            lists(op, "sidecarpolicies") - before.1,
        )
    };
    let (la, lb) = (moved_lists(&op_a, lists_a), moved_lists(&op_b, lists_b));
    eprintln!(
        "[shard] after the move: {} deletes {deleted:?}, {} adds {added:?}; LISTs (pods, policies): shard a {la:?}, shard b {lb:?}; cached Pods a {} b {}; pairs not converged a {} b {}",
        deleted.len(),
        added.len(),
        op_a.cached_pods(),
        op_b.cached_pods(),
        op_a.metrics().pairs_not_converged.get(),
        op_b.metrics().pairs_not_converged.get(),
    );
    assert!(
        deleted.is_empty(),
        "no Pod deleted by the move: {deleted:?}"
    );
    assert!(added.is_empty(), "no Pod created by the move: {added:?}");
    assert_eq!(
        changed, None,
        "every sidecar kept with its uid; before the move: {before:?}"
    );
    assert_eq!(la, (0, 0), "the shard that loses a namespace lists nothing");
    assert!(
        lb.0 <= 1 && lb.1 <= 1,
        "the shard that gains it lists that namespace only (one page of its {} Pods, its policies), not the {}+ Pods of the cluster: {lb:?}",
        2 * PODS,
        2 * PODS + 120
    );
    assert_eq!(
        op_a.metrics().pairs_not_converged.get(),
        0,
        "shard a forgot the namespace's policy"
    );

    // Shard b manages it now; shard a sends nothing for it.
    scene
        .create(&pod(&format!("web-{PODS}"), &[("app", "web")]))
        .await;
    let sc = sidecar_name(&format!("web-{PODS}"), "agent");
    scene
        .wait_pods("the sidecar of a Pod created after the move", |pods| {
            pods.iter().any(|p| p.name_any() == sc).then_some(())
        })
        .await;
    wait_until(TIMEOUT, "status matchedPods 21 from shard b", async || {
        (matched_pods(&scene.policies, "agent").await? == PODS as i32 + 1).then_some(())
    })
    .await;
    assert_eq!(op_b.api_calls().create - creates_b, 1, "shard b created it");
    let since = op_a.api_calls().since(&calls_a);
    assert_eq!(
        since.writes(),
        0,
        "shard a wrote nothing after the move: {since:?}"
    );
    assert_eq!(op_a.cached_pods(), 0);
    drop(filler);
    op_a.stop().await;
    op_b.stop().await;
}

/// `--namespace-selector` (one instance): only the selected namespaces are managed, and a
/// namespace labelled later comes into scope.
#[tokio::test]
async fn namespace_selector_limits_the_scope_and_follows_relabelling() {
    let client = shared().client().await;
    install_crd(&client, &sidecar_api::crd())
        .await
        .expect("CRD");
    let key = format!("sidecars-scope-{}", std::process::id());
    let a = TestNamespace::create_labeled(&client, "scope-a", &[(key.as_str(), "on")]).await;
    let b = TestNamespace::create(&client, "scope-b").await;
    let opts = sidecar_controller::OperatorConfig {
        namespace_selector: Some(format!("{key}=on")),
        ..sidecar_controller::OperatorConfig::all_namespaces()
    };
    let op = sidecar_controller::Operator::start(shared().kube_config().await, opts)
        .await
        .expect("operator");
    for ns in [a.name(), b.name()] {
        Api::<SidecarPolicy>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &minimal_policy("agent", "web"))
            .await
            .expect("policy");
        Api::<Pod>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &pod("web-0", &[("app", "web")]))
            .await
            .expect("Pod");
    }
    let sc = sidecar_name("web-0", "agent");
    let pods_a: Api<Pod> = Api::namespaced(client.clone(), a.name());
    let pods_b: Api<Pod> = Api::namespaced(client.clone(), b.name());
    wait_pod(&pods_a, &sc, true, "sidecar in the selected namespace").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        pods_b.get_opt(&sc).await.expect("get").is_none(),
        "a namespace outside the selector is left alone"
    );
    // Labelling the second namespace brings it into scope.
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let patch = serde_json::json!({"metadata": {"labels": {key.as_str(): "on"}}});
    ns_api
        .patch(
            b.name(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("label namespace");
    wait_pod(&pods_b, &sc, true, "sidecar once the namespace is labelled").await;
    assert_eq!(op.api_calls().create, 2);
    op.stop().await;
}
