//! The sidecar controller against the real control plane: each test runs its own operator
//! instance ([`Operator`], watching only the test's namespace) in its own namespace, and
//! checks what ends up in the cluster, independently of the operator (lists, and a watch
//! that records every Pod created or deleted, so short-lived mistakes are caught too).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Container, NodeSelectorRequirement, Pod};
use kube::ResourceExt as _;
use kube::api::PostParams;
use serde_json::json;
use sidecar_api::constants::{
    ANNOTATION_INJECT, ENV_MAIN_POD_NAME, ENV_MAIN_POD_NAMESPACE, ENV_MAIN_POD_NODE,
    ENV_MAIN_POD_UID, INJECT_DISABLED, LABEL_MAIN_UID, LABEL_MANAGED_BY, LABEL_POLICY,
    LABEL_TEMPLATE_HASH, MANAGED_BY_VALUE,
};
use sidecar_api::{Placement, SidecarPolicy, template_hash};
use sidecar_controller::ApiCalls;
use sidecar_e2e::{
    QUIET, Scene, create_pods, deployment, describe_calls, find, gated_pod, is_sidecar, job,
    node_of, phase_of, pod, policy, print_operator_events, sidecar_names, sidecars, uid_of,
};
use sidecar_planner::sidecar_name;
use sidecar_testenv::kwok::POD_COMPLETE_DELAY_ANNOTATION;

/// Main Pods: not sidecars, not terminating.
fn mains(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| !is_sidecar(p) && p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The sidecar names of every (main, policy) pair.
fn pairs<'a>(mains: impl IntoIterator<Item = &'a str>, policies: &[&str]) -> BTreeSet<String> {
    mains
        .into_iter()
        .flat_map(|m| policies.iter().map(move |p| sidecar_name(m, p)))
        .collect()
}

/// Waits until the namespace's sidecars are exactly the names `expected` computes from its
/// Pods (`None`: not yet), every one bound to a node; returns the Pods.
async fn wait_sidecars_for(
    scene: &Scene,
    what: &str,
    expected: impl Fn(&[Pod]) -> Option<BTreeSet<String>>,
) -> Vec<Pod> {
    scene
        .wait_pods(what, |pods| {
            let want = expected(pods)?;
            let have = sidecars(pods);
            let done = have.keys().eq(want.iter()) && have.values().all(|s| node_of(s).is_some());
            done.then(|| pods.to_vec())
        })
        .await
}

/// Waits until the namespace's sidecars are exactly `expected`, all bound; returns the Pods.
async fn wait_sidecars(scene: &Scene, expected: &BTreeSet<String>) -> Vec<Pod> {
    let what = format!("exactly the sidecars {expected:?}, bound to nodes");
    wait_sidecars_for(scene, &what, |_| Some(expected.clone())).await
}

/// Checks everything the design says about the sidecar of `main` for `policy` (as stored
/// by the server, defaults applied): name, labels, owner, env vars, placement.
fn assert_sidecar_of(sidecar: &Pod, main: &Pod, policy: &SidecarPolicy) {
    let (main_name, main_uid) = (main.name_any(), uid_of(main));
    let ctx = format!(
        "sidecar {} of {main_name} for policy {}",
        sidecar.name_any(),
        policy.name_any()
    );
    assert_eq!(
        sidecar.name_any(),
        sidecar_name(&main_name, &policy.name_any()),
        "{ctx}: name"
    );

    let labels = sidecar.labels();
    let template_labels = policy
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let hash = template_hash(&policy.spec);
    let ours = [
        (LABEL_MANAGED_BY, MANAGED_BY_VALUE),
        (LABEL_POLICY, policy.name_any().as_str()),
        (LABEL_MAIN_UID, main_uid.as_str()),
        (LABEL_TEMPLATE_HASH, hash.as_str()),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    for (k, v) in template_labels.into_iter().chain(ours) {
        assert_eq!(labels.get(&k), Some(&v), "{ctx}: label {k} in {labels:?}");
    }

    let owners = sidecar.owner_references();
    assert_eq!(owners.len(), 1, "{ctx}: exactly one owner: {owners:?}");
    let o = &owners[0];
    assert_eq!(
        (
            o.api_version.as_str(),
            o.kind.as_str(),
            o.name.as_str(),
            o.uid.as_str(),
            o.controller
        ),
        (
            "v1",
            "Pod",
            main_name.as_str(),
            main_uid.as_str(),
            Some(true)
        ),
        "{ctx}: owner reference {o:?}"
    );

    let main_node = node_of(main).unwrap_or_default();
    let main_ns = main.namespace().unwrap_or_default();
    // With `Any`, the sidecar may have been made before its main Pod was bound: then the
    // node is empty (the env of a Pod cannot change later).
    let env_node = sidecar_env(sidecar, ENV_MAIN_POD_NODE).unwrap_or_default();
    let node_value = match policy.spec.placement {
        Placement::Any if env_node.is_empty() => "",
        _ => main_node,
    };
    let injected = [
        (ENV_MAIN_POD_NAME, main_name.as_str()),
        (ENV_MAIN_POD_NAMESPACE, main_ns.as_str()),
        (ENV_MAIN_POD_UID, main_uid.as_str()),
        (ENV_MAIN_POD_NODE, node_value),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let spec = sidecar.spec.as_ref().expect("sidecar spec");
    let template_spec = policy.spec.template.spec.as_ref().expect("template spec");
    assert_eq!(
        spec.containers.len(),
        template_spec.containers.len(),
        "{ctx}"
    );
    for (c, t) in spec.containers.iter().zip(&template_spec.containers) {
        let want: Vec<(String, String)> = injected.iter().cloned().chain(env_of(t)).collect();
        assert_eq!(env_of(c), want, "{ctx}: env of container {}", c.name);
    }

    let pins: Vec<&NodeSelectorRequirement> = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.iter())
        .into_iter()
        .flatten()
        .flat_map(|t| t.match_fields.iter().flatten())
        .filter(|f| f.key == "metadata.name")
        .collect();
    if policy.spec.placement == Placement::SameNode {
        let want = NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![main_node.to_string()]),
        };
        assert!(
            !main_node.is_empty(),
            "{ctx}: SameNode sidecar of an unbound Pod"
        );
        assert_eq!(pins, [&want], "{ctx}: required node affinity");
        assert_eq!(
            node_of(sidecar),
            Some(main_node),
            "{ctx}: on the main Pod's node"
        );
    } else {
        assert!(
            pins.is_empty(),
            "{ctx}: Any placement pins no node: {pins:?}"
        );
    }
}

/// A container's env as (name, value); the API server drops empty values, so none = "".
fn env_of(c: &Container) -> Vec<(String, String)> {
    let vars = c.env.iter().flatten();
    vars.map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

/// The value of env var `name` in the first container of `p`.
fn sidecar_env(p: &Pod, name: &str) -> Option<String> {
    let container = p.spec.as_ref()?.containers.first()?;
    let env = env_of(container);
    env.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// [`assert_sidecar_of`] for every (main, policy) pair named in `pairs`, found in `pods`.
fn assert_sidecars(pods: &[Pod], pairs: &[(&str, &SidecarPolicy)]) {
    for (main, policy) in pairs {
        let main = find(pods, main).unwrap_or_else(|| panic!("main Pod {main} missing"));
        let name = sidecar_name(&main.name_any(), &policy.name_any());
        let sidecar = find(pods, &name).unwrap_or_else(|| panic!("sidecar {name} missing"));
        assert_sidecar_of(sidecar, main, policy);
    }
}

/// Prints `c` on one line, tagged `[api-calls] what`.
fn print_calls(what: &str, c: &ApiCalls) {
    eprintln!(
        "[api-calls] {what}: {} (writes={})",
        describe_calls(c),
        c.writes()
    );
}

#[tokio::test]
async fn deployment_pods_each_get_one_sidecar_on_their_node() {
    let scene = Scene::new("ctl-deploy").await;
    let op = scene.start_operator().await;
    let shipper = policy("shipper", &[("app", "web")], &[("team", "obs")], "SameNode");
    let shipper = scene.create(&shipper).await;
    scene.create(&deployment("web", 3, &[("app", "web")])).await;

    let pods = wait_sidecars_for(&scene, "3 Deployment Pods with a sidecar each", |pods| {
        let mains = mains(pods);
        let named = mains
            .iter()
            .map(|m| m.metadata.name.as_deref().unwrap_or_default());
        (mains.len() == 3).then(|| pairs(named, &["shipper"]))
    })
    .await;
    let mains = mains(&pods);
    assert_eq!(mains.len(), 3);
    for main in mains {
        let kind = main.owner_references().first().map(|o| o.kind.clone());
        assert_eq!(
            kind.as_deref(),
            Some("ReplicaSet"),
            "{} is a Deployment Pod",
            main.name_any()
        );
        assert_sidecars(&pods, &[(&main.name_any(), &shipper)]);
    }
    op.stop().await;
}

#[tokio::test]
async fn pods_that_predate_the_policy_get_sidecars() {
    let scene = Scene::new("ctl-predate").await;
    let op = scene.start_operator().await;
    create_pods(&scene, &["web-0", "web-1"], &[("app", "web")]).await;
    create_pods(&scene, &["db-0"], &[("app", "db")]).await;
    scene
        .wait_pods("3 Pods running, no sidecar", |pods| {
            let running = pods
                .iter()
                .filter(|p| phase_of(p) == Some("Running"))
                .count();
            (running == 3 && sidecar_names(pods).is_empty()).then_some(())
        })
        .await;

    let shipper = policy("shipper", &[("app", "web")], &[("team", "obs")], "SameNode");
    let shipper = scene.create(&shipper).await;
    let pods = wait_sidecars(&scene, &pairs(["web-0", "web-1"], &["shipper"])).await;
    assert_sidecars(&pods, &[("web-0", &shipper), ("web-1", &shipper)]);
    op.stop().await;
}

#[tokio::test]
async fn deleted_sidecar_is_recreated_but_not_after_its_main_pod_is_deleted() {
    let scene = Scene::new("ctl-recreate").await;
    let op = scene.start_operator().await;
    let shipper = policy("shipper", &[("app", "web")], &[("team", "obs")], "SameNode");
    let shipper = scene.create(&shipper).await;
    create_pods(&scene, &["web-0"], &[("app", "web")]).await;
    let name = sidecar_name("web-0", "shipper");
    let pods = wait_sidecars(&scene, &BTreeSet::from([name.clone()])).await;
    let first = uid_of(find(&pods, &name).expect("sidecar"));

    let record = scene.record().await;
    scene.delete::<Pod>(&name).await;
    let second = scene
        .wait_pods(
            "the deleted sidecar recreated (new uid) and bound",
            |pods| {
                let s = find(pods, &name)?;
                (uid_of(s) != first && node_of(s).is_some()).then(|| uid_of(s))
            },
        )
        .await;
    assert_sidecars(&scene.list_pods().await, &[("web-0", &shipper)]);

    scene.delete::<Pod>("web-0").await;
    scene
        .wait_pods(
            "main Pod deleted and its sidecar garbage-collected",
            |pods| pods.is_empty().then_some(()),
        )
        .await;
    scene
        .hold_pods(QUIET, "no Pod in the namespace", |pods| pods.is_empty())
        .await;
    assert_eq!(
        record.added_uids(&name),
        [second],
        "the sidecar was created exactly once after the manual delete, never for the deleted main Pod"
    );
    op.stop().await;
}

#[tokio::test]
async fn terminating_main_pod_loses_its_sidecar_for_good() {
    let scene = Scene::new("ctl-terminating").await;
    let op = scene.start_operator().await;
    scene
        .create_policy("shipper", &[("app", "web")], &[("team", "obs")], "SameNode")
        .await;
    let mut main = pod("web-0", &[("app", "web")]);
    main.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    scene.create(&main).await;
    let name = sidecar_name("web-0", "shipper");
    wait_sidecars(&scene, &BTreeSet::from([name.clone()])).await;

    let record = scene.record().await;
    scene.delete::<Pod>("web-0").await;
    let terminating = |pods: &[Pod]| {
        find(pods, "web-0").is_some_and(|m| m.metadata.deletion_timestamp.is_some())
            && find(pods, &name).is_none()
    };
    scene
        .wait_pods(
            "main Pod terminating (held by a finalizer), its sidecar deleted",
            |pods| terminating(pods).then_some(()),
        )
        .await;
    scene
        .hold_pods(
            QUIET,
            "no sidecar for the terminating main Pod",
            terminating,
        )
        .await;
    assert_eq!(
        record.added_uids(&name),
        Vec::<String>::new(),
        "sidecar recreated"
    );

    scene
        .merge::<Pod>("web-0", json!({"metadata": {"finalizers": null}}))
        .await;
    scene
        .wait_pods("main Pod gone", |pods| pods.is_empty().then_some(()))
        .await;
    op.stop().await;
}

#[tokio::test]
async fn sidecars_no_longer_wanted_are_deleted() {
    let scene = Scene::new("ctl-unwanted").await;
    let op = scene.start_operator().await;
    let shipper = policy("shipper", &[("app", "web")], &[("team", "obs")], "SameNode");
    let shipper = scene.create(&shipper).await;
    scene
        .create_policy("narrow", &[("group", "a")], &[("team", "obs")], "SameNode")
        .await;
    scene
        .create_policy("doomed", &[("role", "x")], &[("team", "obs")], "SameNode")
        .await;
    create_pods(&scene, &["keep", "relabel", "optout"], &[("app", "web")]).await;
    create_pods(&scene, &["sel-a"], &[("group", "a")]).await;
    create_pods(&scene, &["sel-b"], &[("group", "b")]).await;
    create_pods(&scene, &["victim"], &[("role", "x")]).await;
    let mut before = pairs(["keep", "relabel", "optout"], &["shipper"]);
    before.extend(pairs(["sel-a"], &["narrow"]));
    before.extend(pairs(["victim"], &["doomed"]));
    let pods = wait_sidecars(&scene, &before).await;
    let keep = sidecar_name("keep", "shipper");
    let keep_uid = uid_of(find(&pods, &keep).expect("sidecar of keep"));

    // Four ways to stop wanting a sidecar, at once.
    scene
        .merge::<Pod>("relabel", json!({"metadata": {"labels": {"app": "other"}}}))
        .await;
    scene
        .merge::<Pod>(
            "optout",
            json!({"metadata": {"annotations": {ANNOTATION_INJECT: INJECT_DISABLED}}}),
        )
        .await;
    scene
        .merge::<SidecarPolicy>(
            "narrow",
            json!({"spec": {"selector": {"matchLabels": {"group": "b"}}}}),
        )
        .await;
    scene.delete::<SidecarPolicy>("doomed").await;

    // The newly selected Pod gets one; only `keep`'s sidecar survives, untouched.
    let after = BTreeSet::from([keep.clone(), sidecar_name("sel-b", "narrow")]);
    let pods = wait_sidecars(&scene, &after).await;
    assert_eq!(
        uid_of(find(&pods, &keep).expect("sidecar of keep")),
        keep_uid
    );
    let narrow = scene.policies.get("narrow").await.expect("get narrow");
    assert_sidecars(&pods, &[("keep", &shipper), ("sel-b", &narrow)]);
    let main_names: BTreeSet<String> = mains(&pods).iter().map(|p| p.name_any()).collect();
    let all = ["keep", "optout", "relabel", "sel-a", "sel-b", "victim"];
    assert!(
        main_names.iter().eq(all.iter()),
        "main Pods untouched: {main_names:?}"
    );
    scene
        .hold_pods(QUIET, "the deleted sidecars stay deleted", |pods| {
            sidecar_names(pods) == after
        })
        .await;
    op.stop().await;
}

/// Converges two policies on two Pods, stops the operator (`kill`: abruptly, as a crash),
/// deletes one policy, checks that nothing removes its sidecars while no operator runs, then
/// starts a new instance: it removes exactly the orphans.
async fn orphans_are_removed_by_the_next_instance(prefix: &str, kill: bool) {
    let scene = Scene::new(prefix).await;
    let op = scene.start_operator().await;
    scene
        .create_policy("shipper", &[("app", "web")], &[("team", "obs")], "SameNode")
        .await;
    scene
        .create_policy("stays", &[("app", "web")], &[("team", "ops")], "SameNode")
        .await;
    create_pods(&scene, &["web-0", "web-1"], &[("app", "web")]).await;
    let all = pairs(["web-0", "web-1"], &["shipper", "stays"]);
    let pods = wait_sidecars(&scene, &all).await;
    let kept = pairs(["web-0", "web-1"], &["stays"]);
    let kept_uids: Vec<String> = kept
        .iter()
        .map(|n| uid_of(find(&pods, n).expect("sidecar")))
        .collect();

    if kill {
        drop(op);
    } else {
        op.stop().await;
    }
    scene.delete::<SidecarPolicy>("shipper").await;
    scene
        .hold_pods(
            Duration::from_secs(3),
            "orphans left alone while no operator runs",
            |pods| sidecar_names(pods) == all,
        )
        .await;

    let op = scene.start_operator().await;
    let pods = wait_sidecars(&scene, &kept).await;
    let uids: Vec<String> = kept
        .iter()
        .map(|n| uid_of(find(&pods, n).expect("sidecar")))
        .collect();
    assert_eq!(uids, kept_uids, "the other policy's sidecars are untouched");
    op.stop().await;
}

#[tokio::test]
async fn policy_deleted_while_the_operator_was_stopped_leaves_no_orphans() {
    orphans_are_removed_by_the_next_instance("ctl-orphans-stop", false).await;
}

#[tokio::test]
async fn policy_deleted_while_the_operator_was_killed_leaves_no_orphans() {
    orphans_are_removed_by_the_next_instance("ctl-orphans-kill", true).await;
}

#[tokio::test]
async fn two_policies_give_two_sidecars_and_sidecars_get_none() {
    let scene = Scene::new("ctl-two").await;
    let op = scene.start_operator().await;
    let record = scene.record().await;
    // Both sidecars of web-0 carry role=agent, which is exactly what `meta` selects.
    let logs = scene
        .create_policy("logs", &[("app", "web")], &[("role", "agent")], "SameNode")
        .await;
    let metrics = scene
        .create_policy("metrics", &[("app", "web")], &[("role", "agent")], "Any")
        .await;
    let meta = scene
        .create_policy("meta", &[("role", "agent")], &[("team", "obs")], "SameNode")
        .await;
    create_pods(&scene, &["web-0"], &[("app", "web")]).await;
    // A real Pod `meta` selects: proves `meta` works, so its silence on sidecars means something.
    create_pods(&scene, &["agent-0"], &[("role", "agent")]).await;

    let mut expected = pairs(["web-0"], &["logs", "metrics"]);
    expected.extend(pairs(["agent-0"], &["meta"]));
    let pods = wait_sidecars(&scene, &expected).await;
    assert_sidecars(
        &pods,
        &[("web-0", &logs), ("web-0", &metrics), ("agent-0", &meta)],
    );
    scene
        .hold_pods(QUIET, "exactly 3 sidecars, none of a sidecar", |pods| {
            sidecar_names(pods) == expected && pods.len() == 5
        })
        .await;
    let created: BTreeSet<String> = record
        .seen(sidecar_e2e::Seen::Added)
        .iter()
        .map(|p| p.name_any())
        .collect();
    let mut all = expected.clone();
    all.extend(["web-0".to_string(), "agent-0".to_string()]);
    assert_eq!(created, all, "Pods ever created in the namespace");
    assert_eq!(
        record.seen(sidecar_e2e::Seen::Added).len(),
        5,
        "no Pod created twice"
    );
    op.stop().await;
}

#[tokio::test]
async fn completed_job_pod_loses_its_sidecar() {
    let scene = Scene::new("ctl-job").await;
    let op = scene.start_operator().await;
    let record = scene.record().await;
    let shipper = scene
        .create_policy("archiver", &[("app", "batch")], &[("team", "obs")], "Any")
        .await;
    // kwok completes a Job's Pod 5 s after it runs: time enough to see its sidecar.
    let delay = [(POD_COMPLETE_DELAY_ANNOTATION, "5s")];
    scene
        .create(&job("report", &[("app", "batch")], &delay))
        .await;

    let (main, pods) = scene
        .wait_pods("the Job's Pod with its sidecar", |pods| {
            let main = mains(pods).into_iter().next()?.name_any();
            find(pods, &sidecar_name(&main, "archiver")).map(|_| (main, pods.to_vec()))
        })
        .await;
    let sidecar = sidecar_name(&main, "archiver");
    assert_sidecars(&pods, &[(&main, &shipper)]);

    scene
        .wait_pods("the Job's Pod Succeeded and its sidecar deleted", |pods| {
            let done = find(pods, &main).is_some_and(|m| phase_of(m) == Some("Succeeded"));
            (done && find(pods, &sidecar).is_none()).then_some(())
        })
        .await;
    scene
        .hold_pods(QUIET, "no sidecar for the completed Pod", |pods| {
            find(pods, &sidecar).is_none() && find(pods, &main).is_some()
        })
        .await;
    assert_eq!(
        record.added_uids(&sidecar).len(),
        1,
        "sidecar created exactly once"
    );
    op.stop().await;
}

#[tokio::test]
async fn unbound_pod_waits_for_its_node_with_same_node_but_not_with_any() {
    let scene = Scene::new("ctl-unbound").await;
    let op = scene.start_operator().await;
    let same = scene
        .create_policy("same", &[("app", "same")], &[("team", "obs")], "SameNode")
        .await;
    let any = scene
        .create_policy("any", &[("app", "any")], &[("team", "obs")], "Any")
        .await;
    scene
        .create(&gated_pod("held-same", &[("app", "same")]))
        .await;
    scene
        .create(&gated_pod("held-any", &[("app", "any")]))
        .await;
    let same_sidecar = sidecar_name("held-same", "same");
    let any_sidecar = sidecar_name("held-any", "any");

    // `Any`: a sidecar at once, while its main Pod cannot be bound.
    let pods = scene
        .wait_pods("a sidecar for the unbound Pod with placement Any", |pods| {
            find(pods, &any_sidecar).map(|_| pods.to_vec())
        })
        .await;
    assert_eq!(node_of(find(&pods, "held-any").expect("held-any")), None);
    assert_sidecars(&pods, &[("held-any", &any)]);

    // `SameNode`: nothing while unbound.
    scene
        .hold_pods(
            QUIET,
            "no sidecar for the unbound Pod with placement SameNode",
            |pods| {
                find(pods, &same_sidecar).is_none()
                    && find(pods, "held-same").is_some_and(|m| node_of(m).is_none())
            },
        )
        .await;
    scene.ungate_pod("held-same").await;
    let pods = wait_sidecars(&scene, &BTreeSet::from([any_sidecar, same_sidecar])).await;
    assert_sidecars(&pods, &[("held-same", &same)]);
    op.stop().await;
}

#[tokio::test]
async fn restarted_operator_writes_nothing_on_a_converged_namespace() {
    let scene = Scene::new("ctl-idle").await;
    let op = scene.start_operator().await;
    scene
        .create_policy("shipper", &[("app", "web")], &[("team", "obs")], "SameNode")
        .await;
    create_pods(&scene, &["web-0", "web-1", "web-2"], &[("app", "web")]).await;
    let expected = pairs(["web-0", "web-1", "web-2"], &["shipper"]);
    scene
        .wait_pods("3 sidecars Ready", |pods| {
            let ready = sidecars(pods)
                .values()
                .filter(|s| sidecar_e2e::pod_ready(s))
                .count();
            (sidecar_names(pods) == expected && ready == 3).then_some(())
        })
        .await;
    // Let kwok and the first instance's status writes finish.
    scene.wait_settled().await;
    print_calls("first instance, convergence", &op.api_calls());
    op.stop().await;

    let before = scene.fingerprint().await;
    let op = scene.start_operator().await;
    tokio::time::sleep(QUIET).await;
    let calls = op.api_calls();
    let after = scene.fingerprint().await;
    print_calls("restarted instance, 5 s on a converged namespace", &calls);
    print_operator_events(&scene).await;
    assert!(
        calls.watch + calls.list > 0,
        "the counter sees the instance's requests: {calls:?}"
    );
    assert_eq!(
        (calls.create, calls.delete),
        (0, 0),
        "no Pod (or Event) created or deleted: {calls:?}"
    );
    assert_eq!(calls.update, 0, "no update: {calls:?}");
    assert_eq!(
        calls.patch, 0,
        "no patch (status unchanged, so not rewritten): {calls:?}"
    );
    assert_eq!(before, after, "no object in the namespace changed");
    op.stop().await;
}

#[tokio::test]
async fn two_hundred_pods_get_one_sidecar_each_with_one_create_each() {
    const N: usize = 200;
    let scene = Scene::new("ctl-load").await;
    let op = scene.start_operator().await;
    scene
        .create_policy(
            "shipper",
            &[("app", "load")],
            &[("team", "obs")],
            "SameNode",
        )
        .await;
    let start = Instant::now();
    let names: Vec<String> = (0..N).map(|i| format!("load-{i:03}")).collect();
    futures::stream::iter(&names)
        .map(|name| {
            let pods = scene.pods.clone();
            async move {
                pods.create(&PostParams::default(), &pod(name, &[("app", "load")]))
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("create 200 Pods");
    let created = start.elapsed();
    let expected = pairs(names.iter().map(String::as_str), &["shipper"]);
    let pods = scene
        .wait_pods_within(
            Duration::from_secs(180),
            "200 sidecars, each on its main Pod's node",
            |pods| {
                let have = sidecars(pods);
                let done = have.keys().eq(expected.iter())
                    && have.values().all(|s| {
                        let main = s
                            .owner_references()
                            .first()
                            .map(|o| o.name.clone())
                            .unwrap_or_default();
                        node_of(s).is_some() && find(pods, &main).and_then(node_of) == node_of(s)
                    });
                done.then(|| pods.to_vec())
            },
        )
        .await;
    let converged = start.elapsed();
    scene.wait_settled().await;
    let calls = op.api_calls();
    eprintln!(
        "[api-calls] {N} Pods created by the test in {:.1}s; {N} sidecars bound at {:.1}s",
        created.as_secs_f64(),
        converged.as_secs_f64()
    );
    print_calls(&format!("operator, {N} sidecars"), &calls);
    let total = calls.get + calls.list + calls.watch + calls.writes();
    eprintln!(
        "[api-calls] per sidecar: {:.3} requests in all, {:.3} creates, {:.3} writes",
        total as f64 / N as f64,
        calls.create as f64 / N as f64,
        calls.writes() as f64 / N as f64
    );
    print_operator_events(&scene).await;
    assert_eq!(sidecars(&pods).len(), N);
    assert_eq!(
        calls.create, N as u64,
        "exactly one create per sidecar (no retries): {calls:?}"
    );
    assert_eq!(calls.delete, 0, "{calls:?}");
    assert_eq!(calls.get, 0, "no GET per reconcile: {calls:?}");
    assert!(calls.list <= 4, "LISTs only when watches start: {calls:?}");
    op.stop().await;
}
