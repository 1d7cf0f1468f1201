//! ClusterSidecarPolicy on a private control plane: a cluster-wide operator (which a cluster
//! policy needs) would manage every other test's namespaces of the shared one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use sidecar_api::constants::{LABEL_CLUSTER_POLICY, LABEL_POLICY};
use sidecar_api::{ClusterSidecarPolicy, SidecarPolicy};
use sidecar_controller::{Operator, OperatorConfig};
use sidecar_e2e::{Scene, TIMEOUT, minimal_policy, pod, wait_until};
use sidecar_planner::sidecar_name;
use sidecar_testenv::TestNamespace;

/// The label that puts a namespace in the test's cluster policy's scope.
const TEAM: &str = "team";

/// A private control plane with both CRDs.
async fn private_plane() -> (sidecar_testenv::Running, kube::Config, Client) {
    let (cp, cfg, client, _ns) = crate::faults::private_plane(&sidecar_api::crd(), "csp").await;
    sidecar_testenv::install_crd(&client, &sidecar_api::cluster_crd())
        .await
        .expect("CRD");
    (cp, cfg, client)
}

fn cluster_policy(name: &str, spec: serde_json::Value) -> ClusterSidecarPolicy {
    let mut spec_json = json!({
        "namespaceSelector": {"matchLabels": {TEAM: "payments"}},
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]}},
    });
    if let (Some(base), Some(extra)) = (spec_json.as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    ClusterSidecarPolicy::new(name, serde_json::from_value(spec_json).expect("spec"))
}

async fn label_namespace(client: &Client, ns: &str, value: Option<&str>) {
    let api: Api<Namespace> = Api::all(client.clone());
    let patch = json!({"metadata": {"labels": {TEAM: value}}});
    api.patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label the namespace");
}

/// For `scene` on a private plane: the cluster webhook for the `TEAM=payments` namespaces, a
/// cluster-wide operator, and Container-mode cluster policy `logs` injecting native sidecar
/// `log-shipper` there.
async fn logs_in_container_mode(
    scene: &Scene,
    cfg: &kube::Config,
) -> (
    sidecar_e2e::webhook::TestWebhook,
    Operator,
    Api<ClusterSidecarPolicy>,
) {
    let webhook = scene
        .start_cluster_webhook(&format!("{TEAM}=payments"))
        .await;
    let op = Operator::start(cfg.clone(), OperatorConfig::all_namespaces())
        .await
        .expect("operator starts");
    let csps: Api<ClusterSidecarPolicy> = Api::all(scene.client.clone());
    let spec = json!({
        "mode": "Container",
        "template": {"spec": {"initContainers": [{
            "name": "log-shipper", "image": "busybox:1.36", "restartPolicy": "Always",
        }]}},
    });
    csps.create(&PostParams::default(), &cluster_policy("logs", spec))
        .await
        .expect("create the cluster policy");
    (webhook, op, csps)
}

/// name → uid of the Pods of `ns` labelled `key=value`.
async fn pods_labelled(
    client: &Client,
    ns: &str,
    key: &str,
    value: &str,
) -> BTreeMap<String, String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(&format!("{key}={value}")))
        .await
        .expect("list Pods");
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

async fn cluster_status(api: &Api<ClusterSidecarPolicy>, name: &str) -> Option<(i32, i32, String)> {
    let p = api.get(name).await.ok()?;
    let s = p.status?;
    Some((
        s.namespaces,
        s.policy.matched_pods,
        s.policy.ready.unwrap_or_default(),
    ))
}

/// The scenario: a cluster policy over three labelled namespaces, a SidecarPolicy of
/// the same name in one of them, kube-system labelled too (left out), relabelling in and out.
#[tokio::test]
async fn cluster_policy_spans_labelled_namespaces_and_follows_relabelling() {
    let (_cp, cfg, client) = private_plane().await;
    let mut names = Vec::new();
    let mut namespaces = Vec::new();
    for (prefix, team) in [
        ("csp-a", true),
        ("csp-b", true),
        ("csp-c", true),
        ("csp-d", false),
    ] {
        let labels: &[(&str, &str)] = if team { &[(TEAM, "payments")] } else { &[] };
        let ns = TestNamespace::try_create(&client, prefix, labels)
            .await
            .expect("namespace");
        names.push(ns.name().to_string());
        namespaces.push(ns);
    }
    label_namespace(&client, "kube-system", Some("payments")).await;
    for ns in names.iter().map(String::as_str).chain(["kube-system"]) {
        Api::<Pod>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &pod("web-0", &[("app", "web")]))
            .await
            .expect("main Pod");
    }
    // A SidecarPolicy of the same name in the first namespace.
    Api::<SidecarPolicy>::namespaced(client.clone(), &names[0])
        .create(&PostParams::default(), &minimal_policy("agent", "web"))
        .await
        .expect("namespaced policy");
    let op = Operator::start(cfg.clone(), OperatorConfig::all_namespaces())
        .await
        .expect("operator starts");
    let csps: Api<ClusterSidecarPolicy> = Api::all(client.clone());
    csps.create(&PostParams::default(), &cluster_policy("agent", json!({})))
        .await
        .expect("create the cluster policy");

    let ours = sidecar_name("web-0", "csp/agent");
    assert_eq!(ours, "web-0-csp-agent");
    for ns in &names[..3] {
        wait_until(
            TIMEOUT,
            &format!("the cluster policy's sidecar in {ns}"),
            async || {
                let pods = pods_labelled(&client, ns, LABEL_CLUSTER_POLICY, "agent").await;
                pods.contains_key(&ours).then_some(())
            },
        )
        .await;
    }
    wait_until(
        TIMEOUT,
        "the namespaced policy's sidecar beside it",
        async || {
            let pods = pods_labelled(&client, &names[0], LABEL_POLICY, "agent").await;
            pods.contains_key(&sidecar_name("web-0", "agent"))
                .then_some(())
        },
    )
    .await;
    wait_until(TIMEOUT, "status: 3 namespaces, 3/3 ready", async || {
        (cluster_status(&csps, "agent").await? == (3, 3, "3/3".to_string())).then_some(())
    })
    .await;
    assert!(
        pods_labelled(&client, &names[3], LABEL_CLUSTER_POLICY, "agent")
            .await
            .is_empty(),
        "an unlabelled namespace gets nothing"
    );
    assert!(
        pods_labelled(&client, "kube-system", LABEL_CLUSTER_POLICY, "agent")
            .await
            .is_empty(),
        "kube-system is left out unless named"
    );
    let namespaced = pods_labelled(&client, &names[0], LABEL_POLICY, "agent").await;
    assert_eq!(
        namespaced.len(),
        1,
        "the namespaced policy keeps its own: {namespaced:?}"
    );

    // Relabel: d in, b out. Only those two namespaces change; nothing is listed again.
    let before: Vec<_> = futures::future::join_all(
        [&names[0], &names[2]].map(|ns| pods_labelled(&client, ns, LABEL_CLUSTER_POLICY, "agent")),
    )
    .await;
    let lists = op.api_calls().list;
    label_namespace(&client, &names[3], Some("payments")).await;
    label_namespace(&client, &names[1], None).await;
    wait_until(
        TIMEOUT,
        "a sidecar in the namespace labelled in",
        async || {
            let pods = pods_labelled(&client, &names[3], LABEL_CLUSTER_POLICY, "agent").await;
            pods.contains_key(&ours).then_some(())
        },
    )
    .await;
    wait_until(
        TIMEOUT,
        "no sidecar left in the namespace labelled out",
        async || {
            pods_labelled(&client, &names[1], LABEL_CLUSTER_POLICY, "agent")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    wait_until(TIMEOUT, "status: 3 namespaces again", async || {
        (cluster_status(&csps, "agent").await? == (3, 3, "3/3".to_string())).then_some(())
    })
    .await;
    let after: Vec<_> = futures::future::join_all(
        [&names[0], &names[2]].map(|ns| pods_labelled(&client, ns, LABEL_CLUSTER_POLICY, "agent")),
    )
    .await;
    assert_eq!(
        before, after,
        "the other namespaces' sidecars are the same Pods"
    );
    assert_eq!(
        op.api_calls().list,
        lists,
        "relabelling moves Pods in and out of scope from the cache, with no LIST"
    );
    let main_b = Api::<Pod>::namespaced(client.clone(), &names[1])
        .get("web-0")
        .await
        .expect("the main Pod of the namespace labelled out");
    assert!(
        main_b.metadata.deletion_timestamp.is_none(),
        "main Pods are never touched"
    );

    // Deleting the cluster policy removes its sidecars, not the namespaced policy's.
    csps.delete("agent", &DeleteParams::default())
        .await
        .expect("delete the cluster policy");
    for ns in [&names[0], &names[2], &names[3]] {
        wait_until(
            TIMEOUT,
            &format!("the cluster policy's sidecar gone from {ns}"),
            async || {
                pods_labelled(&client, ns, LABEL_CLUSTER_POLICY, "agent")
                    .await
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
    }
    assert_eq!(
        pods_labelled(&client, &names[0], LABEL_POLICY, "agent").await,
        namespaced,
        "the namespaced policy's sidecar is untouched"
    );
    op.stop().await;
    drop(namespaces);
}

/// Container mode: a cluster policy's containers are injected by the webhook into Pods of
/// every namespace it applies in, recorded as `csp/{name}`, and counted in its status.
#[tokio::test]
async fn cluster_policy_injects_in_container_mode() {
    let (_cp, cfg, client) = private_plane().await;
    let a = TestNamespace::try_create(&client, "cspc-a", &[(TEAM, "payments")])
        .await
        .expect("namespace");
    let b = TestNamespace::try_create(&client, "cspc-b", &[(TEAM, "payments")])
        .await
        .expect("namespace");
    let scene = Scene::in_namespace(&client, a);
    let (webhook, op, csps) = logs_in_container_mode(&scene, &cfg).await;
    for ns in [scene.name(), b.name()] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        sidecar_e2e::webhook::wait_injecting(&pods, &[("app", "web")], "log-shipper").await;
        let created = pods
            .create(&PostParams::default(), &pod("web-0", &[("app", "web")]))
            .await
            .expect("main Pod");
        let inits = created
            .spec
            .and_then(|s| s.init_containers)
            .unwrap_or_default();
        assert!(
            inits.iter().any(|c| c.name == "log-shipper"),
            "injected in {ns}: {inits:?}"
        );
        let record = created
            .metadata
            .annotations
            .and_then(|a| a.get(sidecar_api::constants::ANNOTATION_INJECTED).cloned())
            .unwrap_or_default();
        assert!(
            record.starts_with("csp/logs="),
            "recorded as csp/logs: {record}"
        );
    }
    wait_until(
        TIMEOUT,
        "status: 2 namespaces, 2 injected Pods",
        async || {
            let p = csps.get("logs").await.ok()?;
            let s = p.status?;
            (s.namespaces == 2 && s.policy.matched_pods == 2 && s.policy.updated_pods == 2)
                .then_some(())
        },
    )
    .await;
    scene.delete_webhook_configuration(&webhook).await;
    op.stop().await;
    drop(b);
}

/// Pod mode: a SidecarPolicy `csp-agent` and a ClusterSidecarPolicy `agent` want the same
/// sidecar name, `web-0-csp-agent`. At equal priority the SidecarPolicy has it and the cluster
/// policy says Conflicted (with an Event); a priority hands it over once, with no flapping.
#[tokio::test]
async fn conflicting_sidecar_names_go_to_the_winner_in_pod_mode() {
    let (_cp, cfg, client) = private_plane().await;
    let ns = TestNamespace::try_create(&client, "cspx", &[(TEAM, "payments")])
        .await
        .expect("namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    pods.create(&PostParams::default(), &pod("web-0", &[("app", "web")]))
        .await
        .expect("main Pod");
    let policies: Api<SidecarPolicy> = Api::namespaced(client.clone(), ns.name());
    policies
        .create(&PostParams::default(), &minimal_policy("csp-agent", "web"))
        .await
        .expect("namespaced policy");
    let op = Operator::start(cfg.clone(), OperatorConfig::all_namespaces())
        .await
        .expect("operator starts");
    let csps: Api<ClusterSidecarPolicy> = Api::all(client.clone());
    csps.create(&PostParams::default(), &cluster_policy("agent", json!({})))
        .await
        .expect("cluster policy");
    let name = "web-0-csp-agent";
    let conflicted = |conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        conds
            .iter()
            .find(|c| c.type_ == "Conflicted")
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    wait_until(
        TIMEOUT,
        "the cluster policy Conflicted, naming the winner",
        async || {
            let s = csps.get("agent").await.ok()?.status?;
            let (status, message) = conflicted(&s.policy.conditions)?;
            (status == "True"
                && message.contains("SidecarPolicy csp-agent")
                && message.contains(&format!("{}/web-0", ns.name()))
                && s.policy.matched_pods == 0)
                .then_some(())
        },
    )
    .await;
    let holder = |p: &Pod| {
        let l = p.metadata.labels.clone().unwrap_or_default();
        (
            l.get(LABEL_POLICY).cloned(),
            l.get(LABEL_CLUSTER_POLICY).cloned(),
        )
    };
    wait_until(TIMEOUT, "the SidecarPolicy's sidecar", async || {
        let p = pods.get_opt(name).await.ok()??;
        (holder(&p) == (Some("csp-agent".into()), None)).then_some(())
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    wait_until(
        TIMEOUT,
        "a Conflict Warning on the cluster policy",
        async || {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Conflict")
                        && e.regarding.as_ref().and_then(|r| r.kind.as_deref())
                            == Some("ClusterSidecarPolicy")
                })
                .then_some(())
        },
    )
    .await;
    let winner = policies.get("csp-agent").await.expect("policy");
    assert!(
        winner
            .status
            .as_ref()
            .is_none_or(|s| s.conditions.iter().all(|c| c.type_ != "Conflicted")),
        "the winner has no conflict"
    );

    // A priority makes the cluster policy the winner: the name changes hands once.
    let creates = op.api_calls().create;
    csps.patch(
        "agent",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"priority": 10}})),
    )
    .await
    .expect("priority");
    wait_until(TIMEOUT, "the cluster policy's sidecar", async || {
        let p = pods.get_opt(name).await.ok()??;
        let deleting = p.metadata.deletion_timestamp.is_some();
        (!deleting && holder(&p) == (None, Some("agent".into()))).then_some(())
    })
    .await;
    wait_until(
        TIMEOUT,
        "the SidecarPolicy Conflicted, the cluster policy not",
        async || {
            let lost = policies.get("csp-agent").await.ok()?.status?;
            let won = csps.get("agent").await.ok()?.status?;
            let (lost_c, _) = conflicted(&lost.conditions)?;
            let (won_c, _) = conflicted(&won.policy.conditions)?;
            (lost_c == "True" && won_c == "False" && won.policy.ready.as_deref() == Some("1/1"))
                .then_some(())
        },
    )
    .await;
    let sidecars = pods
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=sidecar-operator"))
        .await
        .expect("list");
    assert_eq!(sidecars.items.len(), 1, "one sidecar for the name");
    // Creates since the priority (a dry run of the new template may be one): the one
    // sidecar; a flapping handover would create again and again.
    let pods_created = op.api_calls().create - creates;
    assert!(pods_created <= 2, "{pods_created} creates for one handover");
    op.stop().await;
}

/// Container mode: two SidecarPolicies inject an init container of the same name; the
/// higher priority's goes in, the other records the winner and says Conflicted.
#[tokio::test]
async fn conflicting_container_names_go_to_the_higher_priority() {
    let scene = Scene::new("conflict").await;
    let _op = scene.start_operator().await;
    let webhook = scene.start_webhook().await;
    let mut low = sidecar_e2e::native_sidecar_policy("a-log", "web", "shipper", "busybox:1.36");
    let mut high = sidecar_e2e::native_sidecar_policy("b-log", "web", "shipper", "busybox:1.37");
    high.spec.priority = Some(5);
    low.spec.priority = None;
    scene.create(&low).await;
    scene.create(&high).await;
    // Both are in the webhook's index once b-log's image is the one a Pod would get.
    wait_until(
        TIMEOUT,
        "the webhook to inject b-log's shipper",
        async || {
            let shown = scene.dry_run(&pod("probe", &[("app", "web")])).await;
            let inits = shown.spec?.init_containers?;
            inits
                .iter()
                .any(|c| c.name == "shipper" && c.image.as_deref() == Some("busybox:1.37"))
                .then_some(())
        },
    )
    .await;
    let created = scene.create(&pod("web-0", &[("app", "web")])).await;
    let annotations = created.metadata.annotations.unwrap_or_default();
    let injected = annotations
        .get(sidecar_api::constants::ANNOTATION_INJECTED)
        .cloned()
        .unwrap_or_default();
    assert!(injected.starts_with("b-log="), "{injected}");
    assert_eq!(
        annotations
            .get(sidecar_api::constants::ANNOTATION_SKIPPED)
            .map(String::as_str),
        Some("a-log=initContainer/shipper@b-log")
    );
    scene
        .wait_policy("a-log", "Conflicted, naming b-log", |p| {
            p.status.as_ref().is_some_and(|s| {
                s.matched_pods == 0
                    && s.conditions.iter().any(|c| {
                        c.type_ == "Conflicted"
                            && c.status == "True"
                            && c.message.contains("SidecarPolicy b-log")
                            && c.message.contains("web-0")
                    })
            })
        })
        .await;
    scene
        .wait_policy("b-log", "the Pod counted by the winner", |p| {
            p.status.as_ref().is_some_and(|s| {
                s.matched_pods == 1
                    && s.updated_pods == 1
                    && s.conditions.iter().all(|c| c.type_ != "Conflicted")
            })
        })
        .await;
    sidecar_e2e::wait_policy_event(&scene, "a-log", "Conflict", "b-log").await;
    scene.delete_webhook_configuration(&webhook).await;
}

/// Container mode: a cluster policy whose sidecar Pod Security `restricted` refuses, over a
/// namespace that enforces it and one that does not. Pods of the first are created without
/// the sidecar (recorded), those of the second with it; the status names the refusing
/// namespace only; relabelled `privileged`, it gets the sidecar for new Pods.
#[tokio::test]
async fn cluster_policy_leaves_out_a_namespace_that_would_refuse_its_sidecar() {
    let (_cp, cfg, client) = private_plane().await;
    let enforce = "pod-security.kubernetes.io/enforce";
    let strict = TestNamespace::try_create(
        &client,
        "cspr-strict",
        &[(TEAM, "payments"), (enforce, "restricted")],
    )
    .await
    .expect("namespace");
    let open = TestNamespace::try_create(&client, "cspr-open", &[(TEAM, "payments")])
        .await
        .expect("namespace");
    let scene = Scene::in_namespace(&client, strict);
    let (webhook, op, csps) = logs_in_container_mode(&scene, &cfg).await;
    let open_pods: Api<Pod> = Api::namespaced(client.clone(), open.name());
    sidecar_e2e::webhook::wait_injecting(&open_pods, &[("app", "web")], "log-shipper").await;
    let probe = sidecar_e2e::restricted_pod("refusal-probe", &[("app", "web")]);
    crate::refusal::wait_refused(&scene.pods, &probe, "csp/logs=refused-by-namespace").await;
    let web = sidecar_e2e::restricted_pod("web-0", &[("app", "web")]);
    for (pods, injected) in [(&scene.pods, false), (&open_pods, true)] {
        let created = pods
            .create(&PostParams::default(), &web)
            .await
            .expect("every Pod is created");
        let inits = created.spec.and_then(|s| s.init_containers);
        let has = inits.iter().flatten().any(|c| c.name == "log-shipper");
        assert_eq!(has, injected, "{:?}", created.metadata.namespace);
    }
    let (strict_name, open_name) = (scene.name().to_string(), open.name().to_string());
    wait_until(
        TIMEOUT,
        "Degraded NamespaceRefusesInjection naming the restricted namespace",
        async || {
            let p = csps.get("logs").await.ok()?;
            let degraded = p
                .status?
                .policy
                .conditions
                .into_iter()
                .find(|c| c.type_ == sidecar_api::constants::condition::DEGRADED)?;
            (degraded.reason == sidecar_api::constants::reason::NAMESPACE_REFUSES_INJECTION
                && degraded.message.contains(&strict_name)
                && !degraded.message.contains(&open_name))
            .then_some(())
        },
    )
    .await;
    crate::refusal::set_enforce(&client, scene.name(), "privileged").await;
    scene.wait_injecting(&[("app", "web")], "log-shipper").await;
    scene.delete_webhook_configuration(&webhook).await;
    op.stop().await;
    drop(open);
}

/// The user the next test's operator runs as (impersonated by the admin client).
const BLIND: &str = "csp-blind-operator";

/// Grants [`BLIND`] the rules `rules` through ClusterRole (and ClusterRoleBinding) `name`.
async fn grant(client: &Client, name: &str, rules: serde_json::Value) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let role: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).expect("role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": BLIND}],
    }))
    .expect("binding");
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("ClusterRole");
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("ClusterRoleBinding");
}

/// A first list of ClusterSidecarPolicies that the API server refuses (a 403: the RBAC not
/// in effect yet, as right after an install or upgrade; a 404 is the same without the CRD)
/// does not read as "no cluster policy exists": the operator gets ready and serves the
/// SidecarPolicies, but deletes no cluster policy's sidecar — not even one whose cluster
/// policy is gone — and expands none, until a list succeeds; then it applies the cluster
/// policies that exist and removes the sidecars of those that do not.
#[tokio::test]
async fn a_refused_cluster_policy_list_deletes_nothing_until_one_succeeds() {
    let (_cp, cfg, client) = private_plane().await;
    let ns = TestNamespace::try_create(&client, "csp-blind", &[(TEAM, "payments")])
        .await
        .expect("namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    for (name, app) in [("web-0", "web"), ("db-0", "db")] {
        pods.create(&PostParams::default(), &pod(name, &[("app", app)]))
            .await
            .expect("main Pod");
    }
    let csps: Api<ClusterSidecarPolicy> = Api::all(client.clone());
    for name in ["agent", "gone"] {
        csps.create(&PostParams::default(), &cluster_policy(name, json!({})))
            .await
            .expect("cluster policy");
    }
    let (agent, gone) = (
        sidecar_name("web-0", "csp/agent"),
        sidecar_name("web-0", "csp/gone"),
    );
    let sidecars = async || {
        let a = pods_labelled(&client, ns.name(), LABEL_CLUSTER_POLICY, "agent").await;
        let g = pods_labelled(&client, ns.name(), LABEL_CLUSTER_POLICY, "gone").await;
        (a, g)
    };
    // An operator with every right makes both cluster policies' sidecars, and stops.
    let op = Operator::start(cfg.clone(), OperatorConfig::all_namespaces())
        .await
        .expect("operator starts");
    let before = wait_until(TIMEOUT, "both cluster policies' sidecars", async || {
        let (a, g) = sidecars().await;
        (a.contains_key(&agent) && g.contains_key(&gone)).then_some((a, g))
    })
    .await;
    op.stop().await;

    // The next one may do everything it needs but list cluster policies.
    grant(
        &client,
        "csp-blind-operator",
        json!([
            {"apiGroups": [""], "resources": ["pods", "pods/eviction", "namespaces", "events"], "verbs": ["*"]},
            {"apiGroups": ["sidecars.dev"], "resources": ["sidecarpolicies", "sidecarpolicies/status"], "verbs": ["*"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["*"]},
        ]),
    )
    .await;
    csps.delete("gone", &DeleteParams::default())
        .await
        .expect("delete a cluster policy while no operator runs");
    let mut blind = cfg.clone();
    blind.auth_info.impersonate = Some(BLIND.into());
    let op = Operator::start(blind, OperatorConfig::all_namespaces())
        .await
        .expect("ready though the cluster policies cannot be listed");
    // It serves the SidecarPolicies...
    Api::<SidecarPolicy>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &minimal_policy("log", "db"))
        .await
        .expect("namespaced policy");
    pods.create(&PostParams::default(), &pod("web-1", &[("app", "web")]))
        .await
        .expect("main Pod");
    wait_until(TIMEOUT, "the SidecarPolicy's sidecar", async || {
        let log = pods_labelled(&client, ns.name(), LABEL_POLICY, "log").await;
        log.contains_key(&sidecar_name("db-0", "log")).then_some(())
    })
    .await;
    // ...and neither deletes nor makes any cluster policy's sidecar.
    let changed = sidecar_e2e::poll(sidecar_e2e::QUIET, async || {
        (sidecars().await != before).then_some(())
    })
    .await;
    assert!(
        changed.is_none(),
        "the cluster policies' sidecars changed while they could not be listed: {:?} -> {:?}",
        before,
        sidecars().await
    );

    // The right arrives: the next list applies `agent` (web-1 gets its sidecar, web-0 keeps
    // its own) and finds `gone` gone (its sidecar is deleted).
    grant(
        &client,
        "csp-blind-operator-clusters",
        json!([{"apiGroups": ["sidecars.dev"],
                "resources": ["clustersidecarpolicies", "clustersidecarpolicies/status"],
                "verbs": ["*"]}]),
    )
    .await;
    let web_1 = sidecar_name("web-1", "csp/agent");
    let (a, _) = wait_until(
        TIMEOUT,
        "agent applied, gone's sidecar removed",
        async || {
            let (a, g) = sidecars().await;
            (a.contains_key(&web_1) && g.is_empty()).then_some((a, g))
        },
    )
    .await;
    assert_eq!(
        a.get(&agent),
        before.0.get(&agent),
        "web-0's sidecar is the same Pod"
    );
    op.stop().await;
    drop(ns);
}
