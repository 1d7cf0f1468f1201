//! The binary under the shipped least-privilege RBAC of `deploy/`: it works, and it uses
//! exactly what it is granted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use sidecar_api::{ClusterSidecarPolicy, SidecarPolicy};
use sidecar_e2e::webhook::wait_injecting;
use sidecar_e2e::{minimal_policy as policy, native_sidecar_policy, pod, wait_pod, wait_until};
use sidecar_planner::sidecar_name;
use sidecar_testenv::{TestNamespace, install_crd, shared};

use crate::process::Proc;
use crate::refused_policy;

const SA_NS: &str = "sidecar-system";
const SA: &str = "sidecar-operator";

fn kubectl_apply(path: &str) {
    let out = shared()
        .kubectl()
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(sidecar_testenv::repo_root().join(path))
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl apply -f {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a kubeconfig that authenticates as ServiceAccount `ns/sa` with a short-lived
/// token from the TokenRequest API.
pub async fn service_account_kubeconfig(
    client: &Client,
    ns: &str,
    sa: &str,
    dir: &Path,
) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    wait_until(Duration::from_secs(30), "the ServiceAccount", || {
        let sas = sas.clone();
        async move { sas.get_opt(sa).await.ok().flatten().map(|_| ()) }
    })
    .await;
    let req: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}
    }))
    .expect("static JSON");
    let tr: TokenRequest = sas
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await
        .expect("TokenRequest");
    let token = tr
        .status
        .and_then(|s| s.token)
        .expect("TokenRequest returned a token");
    let admin = std::fs::read_to_string(shared().kubeconfig()).expect("admin kubeconfig");
    let cluster: String = admin
        .lines()
        .skip_while(|l| !l.starts_with("clusters:"))
        .take_while(|l| !l.starts_with("users:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let kc = format!(
        "apiVersion: v1\nkind: Config\n{cluster}users:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context: {{cluster: sidecar-testenv, user: sa}}\ncurrent-context: sa\n"
    );
    let path = dir.join("sa.kubeconfig");
    std::fs::write(&path, kc).expect("write kubeconfig");
    path
}

#[tokio::test]
async fn operator_runs_under_the_shipped_least_privilege_rbac() {
    let client = shared().client().await;
    install_crd(&client, &sidecar_api::crd())
        .await
        .expect("CRD");
    for f in [
        "deploy/00-namespace.yaml",
        "deploy/10-rbac.yaml",
        "deploy/20-user-roles.yaml",
    ] {
        kubectl_apply(f);
    }
    // Pod Security `baseline`, so that a privileged sidecar is refused (below).
    let ns = TestNamespace::create_labeled(&client, "rbac", &[(PSA_ENFORCE, "baseline")]).await;
    let dir = std::env::temp_dir().join(format!("sidecar-rbac-{}", ns.name()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kc = service_account_kubeconfig(&client, SA_NS, SA, &dir).await;

    // The ServiceAccount cannot read Secrets.
    let sa_client = sidecar_testenv::client_from_kubeconfig(&kc)
        .await
        .expect("SA client");
    let err = Api::<Secret>::namespaced(sa_client.clone(), ns.name())
        .list(&Default::default())
        .await
        .expect_err("the operator's ServiceAccount must not list Secrets");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err:?}"
    );
    // Only the webhook's own Secret, by name: not another one of its namespace.
    let other = Api::<Secret>::namespaced(sa_client.clone(), SA_NS)
        .get("another-secret")
        .await
        .expect_err("only the webhook's Secret may be read");
    assert!(
        matches!(&other, kube::Error::Api(s) if s.code == 403),
        "{other:?}"
    );
    // The webhook's Secret as shipped (empty; the operator fills it).
    let shipped_secret =
        sidecar_e2e::yaml_file_documents(&sidecar_e2e::repo_path("deploy/40-webhook.yaml"))
            .into_iter()
            .find(|d| d["kind"] == "Secret")
            .expect("deploy/40-webhook.yaml ships the Secret");
    let shipped_secret: Secret = serde_json::from_value(shipped_secret).expect("Secret");
    let secrets = Api::<Secret>::namespaced(client.clone(), SA_NS);
    let _ = secrets
        .delete(WEBHOOK_SECRET, &DeleteParams::default())
        .await;
    secrets
        .create(&PostParams::default(), &shipped_secret)
        .await
        .expect("the shipped Secret");

    // With leader election on a Lease in the operator's namespace (the shipped Role).
    let lease = format!("rbac-{}", ns.name());
    // And the webhook, reached by the API server on 127.0.0.1 (beside the cluster, so the
    // operator applies its configuration itself, by the shipped name), for this namespace.
    let webhook_port = crate::process::free_port();
    let webhook_addr = format!("127.0.0.1:{webhook_port}");
    let webhook_url = format!("https://{webhook_addr}");
    let only_here = format!("kubernetes.io/metadata.name={}", ns.name());
    // Installed by an admin (the operator may not create it), as printed by the binary.
    let printed = std::process::Command::new(crate::process::BIN)
        .args([
            "webhook-config",
            "--url",
            &webhook_url,
            "--webhook-namespace-selector",
            &only_here,
        ])
        .output()
        .expect("webhook-config");
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let config_file = dir.join("webhook-config.yaml");
    std::fs::write(&config_file, &printed.stdout).expect("write");
    kubectl_apply(config_file.to_str().expect("path"));
    let op = Proc::start(
        &kc,
        ns.name(),
        &[
            "--leader-elect",
            "--lease-namespace",
            SA_NS,
            "--lease-name",
            &lease,
            "--lease-duration",
            "4",
            "--webhook-addr",
            &webhook_addr,
            "--webhook-url",
            &webhook_url,
            "--webhook-namespace-selector",
            &only_here,
            "--webhook-cert-check",
            "1",
        ],
        "rbac",
    );
    wait_until(Duration::from_secs(60), "operator /readyz", || async {
        (op.get("/readyz").map(|(c, _)| c) == Some(200)).then_some(())
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let policies: Api<SidecarPolicy> = Api::namespaced(client.clone(), ns.name());
    pods.create(&PostParams::default(), &pod("web-0", &[("app", "web")]))
        .await
        .expect("main Pod");
    policies
        .create(&PostParams::default(), &policy("agent", "web"))
        .await
        .expect("policy");
    let sc = sidecar_name("web-0", "agent");
    let first = wait_pod(
        &pods,
        &sc,
        true,
        "sidecar created by the SA-authenticated operator",
    )
    .await;
    let uid1 = first.and_then(|p| p.metadata.uid).expect("uid");

    // Status is written (policies/status patch is granted).
    wait_until(Duration::from_secs(30), "policy status written", || {
        let policies = policies.clone();
        async move {
            let p = policies.get("agent").await.ok()?;
            (p.status?.matched_pods == 1).then_some(())
        }
    })
    .await;

    // Recreate after a hand delete.
    pods.delete(&sc, &DeleteParams::default())
        .await
        .expect("delete sidecar");
    wait_until(Duration::from_secs(60), "sidecar recreated", || {
        let pods = pods.clone();
        let sc = sc.clone();
        let uid1 = uid1.clone();
        async move {
            let p = pods.get_opt(&sc).await.ok().flatten()?;
            (p.metadata.uid.as_deref() != Some(uid1.as_str())).then_some(())
        }
    })
    .await;

    // A refusal that clears and comes back repeats its Warning, which the events API
    // aggregates into a series (events patch).
    policies
        .create(&PostParams::default(), &refused_policy("priv", "web"))
        .await
        .expect("policy");
    // Pod Security refuses the template's dry run (InvalidTemplate, checked again with
    // backoff), so nothing is created until the namespace allows it.
    let dry_runs =
        || op.metric("sidecar_operator_api_requests_total{verb=\"dry-run\",resource=\"pods\"}");
    wait_until(
        Duration::from_secs(30),
        "privileged template refused and checked again",
        || async { (dry_runs() >= 3.0).then_some(()) },
    )
    .await;
    set_psa(&client, ns.name(), "privileged").await;
    let priv_sc = sidecar_name("web-0", "priv");
    wait_pod(&pods, &priv_sc, true, "privileged sidecar once allowed").await;
    // The template is now accepted: refusals of the recreated sidecar are create refusals
    // (CreateRefused). One that clears and comes back repeats the same Warning.
    let refusals =
        || op.metric("sidecar_operator_reconcile_errors_total{category=\"create-refused\"}");
    for round in 0..2 {
        set_psa(&client, ns.name(), "baseline").await;
        pods.delete(&priv_sc, &DeleteParams::default())
            .await
            .expect("delete sidecar");
        wait_until(
            Duration::from_secs(30),
            "the recreated privileged sidecar refused",
            || async { (refusals() >= f64::from(round + 1)).then_some(()) },
        )
        .await;
        if round == 0 {
            set_psa(&client, ns.name(), "privileged").await;
            wait_pod(&pods, &priv_sc, true, "privileged sidecar allowed again").await;
        }
    }
    wait_until(
        Duration::from_secs(60),
        "the repeated Warning patched",
        || async {
            let patched = op
                .api_requests()?
                .get(&("events".to_string(), "patch".to_string()))
                .copied();
            (patched >= Some(1.0)).then_some(())
        },
    )
    .await;

    // Container mode: the webhook, under the same ServiceAccount, injects a native sidecar.
    let injector = native_sidecar_policy("inject", "injected", "shipper", "busybox:1.36");
    policies
        .create(&PostParams::default(), &injector)
        .await
        .expect("Container-mode policy");
    wait_injecting(&pods, &[("app", "injected")], "shipper").await;
    let injected = pods
        .create(
            &PostParams::default(),
            &pod("injected-0", &[("app", "injected")]),
        )
        .await
        .expect("Pod");
    let inits = injected
        .spec
        .and_then(|s| s.init_containers)
        .unwrap_or_default();
    assert_eq!(inits.len(), 1, "the native sidecar, once");
    let filled = secrets.get(WEBHOOK_SECRET).await.expect("Secret");
    assert!(
        filled
            .data
            .is_some_and(|d| d.contains_key("tls.crt") && d.contains_key("ca.crt")),
        "the operator filled the shipped Secret"
    );

    // Container mode's repair (pods/eviction): a ReplicaSet's Pod created before its
    // policy is evicted, and its replacement comes up injected.
    let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "drifted"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "drifted"}},
            "template": {
                "metadata": {"labels": {"app": "drifted"}},
                "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
            },
        },
    }))
    .expect("static ReplicaSet");
    Api::<ReplicaSet>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &rs)
        .await
        .expect("ReplicaSet");
    let has_shipper = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.name == "shipper"))
    };
    let selected = || async {
        let list = pods
            .list(&kube::api::ListParams::default().labels("app=drifted"))
            .await
            .ok()?;
        Some(list.items)
    };
    wait_until(Duration::from_secs(60), "the ReplicaSet's Pod", || async {
        selected()
            .await?
            .iter()
            .any(|p| !has_shipper(p))
            .then_some(())
    })
    .await;
    let mut repair = injector.clone();
    repair.metadata.name = Some("repair".into());
    repair.spec.selector = serde_json::from_value(serde_json::json!({
        "matchLabels": {"app": "drifted"}
    }))
    .expect("selector");
    repair.spec.update_strategy.type_ = Some(sidecar_api::UpdateStrategyType::RollingUpdate);
    repair.spec.update_strategy.allow_eviction = Some(true);
    policies
        .create(&PostParams::default(), &repair)
        .await
        .expect("repairing policy");
    wait_until(
        Duration::from_secs(150),
        "the drifted Pod evicted and replaced with its sidecar",
        || async {
            let pods = selected().await?;
            let live: Vec<&Pod> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            (live.len() == 1 && has_shipper(live[0])).then_some(())
        },
    )
    .await;

    // Delete the policies: the sidecar goes.
    for name in ["agent", "priv", "inject", "repair"] {
        policies
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete policy");
    }
    wait_pod(&pods, &sc, false, "sidecar deleted after the policy").await;
    // Least privilege, checked against use: every (resource, verb) the shipped ClusterRole
    // and Role grant was used by the operator (its request counter saw it), and it used
    // nothing else.
    let used = used_requests(&op);
    // The configuration is written when its caBundle changes, not on every check (once a
    // second here, for the whole test).
    let config_patches = op
        .api_requests()
        .expect("/metrics")
        .get(&(
            "mutatingwebhookconfigurations".to_string(),
            "patch".to_string(),
        ))
        .copied();
    assert_eq!(config_patches, Some(1.0), "one caBundle write");
    let granted = shipped_grants(&client).await;
    eprintln!("[rbac] used (resource, verb): {used:?}");
    eprintln!("[rbac] granted (group, resource, verb): {granted:?}");
    // This instance watches one namespace, so it reads no cluster policy nor any namespace:
    // `cluster_policies_run_under_the_shipped_rbac` checks those grants.
    let unused: Vec<_> = granted
        .iter()
        .filter(|(_, res, _)| !CLUSTER_GRANTS.contains(&res.as_str()))
        .filter(|(group, res, verb)| {
            group_of(res) != Some(group.as_str()) || !used.contains(&(res.clone(), verb.clone()))
        })
        .collect();
    assert!(
        unused.is_empty(),
        "deploy/10-rbac.yaml grants what the operator never used: {unused:?} (used: {used:?})"
    );
    assert_all_granted(&used, &granted);

    // Every documented metric family is exported.
    let (_, metrics) = op.get("/metrics").expect("/metrics");
    for family in [
        "sidecar_operator_reconciles_total{controller=\"pod\",result=\"ok\"}",
        "sidecar_operator_reconcile_duration_seconds_bucket",
        "sidecar_operator_sidecars_created_total",
        "sidecar_operator_sidecars_deleted_total{reason=\"policy-gone\"}",
        "sidecar_operator_status_writes_total",
        "sidecar_operator_watch_errors_total",
        "sidecar_operator_api_requests_total{verb=\"create\",resource=\"pods\"}",
        "sidecar_operator_pairs_not_converged",
        "sidecar_operator_cached_pods",
        "sidecar_operator_leader 1",
        "sidecar_operator_writes_fenced_total 0",
        "sidecar_operator_evictions_total{result=\"evicted\"}",
        "sidecar_webhook_admissions_total{result=\"injected\",reason=\"\"}",
        "sidecar_webhook_admission_duration_seconds_bucket",
        "sidecar_webhook_certificate_expiry_timestamp_seconds",
    ] {
        assert!(
            metrics.contains(family),
            "/metrics lacks {family}:\n{metrics}"
        );
    }
    assert_eq!(op.get("/healthz").map(|(c, _)| c), Some(200));
    let errors = op.metric("sidecar_operator_reconcile_errors_total{category=\"create\"}");
    assert_eq!(errors, 0.0, "operator log:\n{}", op.log_tail());

    // The configuration goes with the test (it names this test's namespace only).
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let _ = configs.delete(SA, &DeleteParams::default()).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Every (resource, verb) used is granted.
fn assert_all_granted(
    used: &BTreeSet<(String, String)>,
    granted: &BTreeSet<(String, String, String)>,
) {
    let ungranted: Vec<_> = used
        .iter()
        .filter(|(res, verb)| {
            !group_of(res).is_some_and(|g| granted.contains(&(g.into(), res.clone(), verb.clone())))
        })
        .collect();
    assert!(ungranted.is_empty(), "used but not granted: {ungranted:?}");
}

/// The (resource, verb) pairs `op` sent, as RBAC authorizes them.
fn used_requests(op: &Proc) -> BTreeSet<(String, String)> {
    op.api_requests()
        .expect("/metrics")
        .into_iter()
        .filter(|(_, n)| *n > 0.0)
        // A server-side dry run (the template check) is authorized as a create.
        .map(|((res, verb), _)| {
            let verb = if verb == "dry-run" {
                "create".into()
            } else {
                verb
            };
            (res, verb)
        })
        .collect()
}

/// The resources granted for ClusterSidecarPolicies, which only a cluster-wide instance reads.
const CLUSTER_GRANTS: [&str; 3] = [
    "clustersidecarpolicies",
    "clustersidecarpolicies/status",
    "namespaces",
];

/// A cluster-wide instance (limited here to the test's namespaces by a selector) applies a
/// ClusterSidecarPolicy under the shipped RBAC, using exactly its cluster grants; writing a
/// cluster policy is for cluster admins: `edit` and `view` users cannot, `view` can read.
#[tokio::test]
async fn cluster_policies_run_under_the_shipped_rbac() {
    let client = shared().client().await;
    for crd in [sidecar_api::crd(), sidecar_api::cluster_crd()] {
        install_crd(&client, &crd).await.expect("CRD");
    }
    for f in [
        "deploy/00-namespace.yaml",
        "deploy/10-rbac.yaml",
        "deploy/20-user-roles.yaml",
    ] {
        kubectl_apply(f);
    }
    let key = format!("sidecars-csp-rbac-{}", std::process::id());
    let ns = TestNamespace::create_labeled(&client, "csp-rbac", &[(key.as_str(), "on")]).await;
    let dir = std::env::temp_dir().join(format!("sidecar-csp-rbac-{}", ns.name()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kc = service_account_kubeconfig(&client, SA_NS, SA, &dir).await;
    let args = ["--namespace-selector".to_string(), format!("{key}=on")];
    let op = Proc::run(&kc, &args, &[], &format!("{}-csp", ns.name()), "csp-rbac");
    wait_until(Duration::from_secs(60), "operator /readyz", || async {
        (op.get("/readyz").map(|(c, _)| c) == Some(200)).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    pods.create(&PostParams::default(), &pod("web-0", &[("app", "web")]))
        .await
        .expect("main Pod");
    // Named after the namespace: cluster policies of the shared plane are global.
    let name = ns.name().to_string();
    let csp: ClusterSidecarPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "ClusterSidecarPolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {key.as_str(): "on"}},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]}},
        },
    }))
    .expect("ClusterSidecarPolicy");
    let csps: Api<ClusterSidecarPolicy> = Api::all(client.clone());
    csps.create(&PostParams::default(), &csp)
        .await
        .expect("create the cluster policy");
    let sc = sidecar_name("web-0", &sidecar_planner::cluster_id(&name));
    wait_pod(&pods, &sc, true, "the cluster policy's sidecar").await;
    wait_until(
        Duration::from_secs(30),
        "cluster policy status written",
        || {
            let csps = csps.clone();
            let name = name.clone();
            async move {
                let s = csps.get(&name).await.ok()?.status?;
                (s.namespaces == 1 && s.policy.matched_pods == 1).then_some(())
            }
        },
    )
    .await;
    let used = used_requests(&op);
    let granted = shipped_grants(&client).await;
    for (res, verb) in [
        ("clustersidecarpolicies", "list"),
        ("clustersidecarpolicies", "watch"),
        ("clustersidecarpolicies/status", "patch"),
        ("namespaces", "list"),
        ("namespaces", "watch"),
    ] {
        assert!(
            used.contains(&(res.to_string(), verb.to_string())),
            "{res} {verb} unused: {used:?}"
        );
        assert!(
            granted.contains(&(
                group_of(res).unwrap_or_default().to_string(),
                res.to_string(),
                verb.to_string()
            )),
            "{res} {verb} not granted: {granted:?}"
        );
    }
    assert_all_granted(&used, &granted);

    // Users: `edit` and `view` everywhere (ClusterRoleBindings), impersonated.
    let mut bindings = Vec::new();
    for role in ["edit", "view"] {
        let user = format!("{name}-{role}");
        let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }))
        .expect("binding");
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .expect("bind");
        bindings.push(user);
    }
    let admin_cfg = shared().kube_config().await;
    let as_user = |user: &str| {
        let mut cfg = admin_cfg.clone();
        cfg.auth_info.impersonate = Some(user.to_string());
        Client::try_from(cfg).expect("impersonating client")
    };
    let mut other = csp.clone();
    other.metadata.name = Some(format!("{name}-by-user"));
    for user in &bindings {
        let c = as_user(user);
        let err = Api::<ClusterSidecarPolicy>::all(c.clone())
            .create(&PostParams::default(), &other)
            .await
            .expect_err("only cluster admins create cluster policies");
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 403),
            "{user}: {err:?}"
        );
    }
    // The view user reads them (aggregated to view), and the edit user can write a
    // SidecarPolicy: the bindings are in effect.
    wait_until(
        Duration::from_secs(30),
        "view aggregates reading cluster policies",
        || {
            let c = as_user(&bindings[1]);
            let name = name.clone();
            async move {
                Api::<ClusterSidecarPolicy>::all(c)
                    .get(&name)
                    .await
                    .ok()
                    .map(|_| ())
            }
        },
    )
    .await;
    Api::<SidecarPolicy>::namespaced(as_user(&bindings[0]), ns.name())
        .create(&PostParams::default(), &policy("agent", "web"))
        .await
        .expect("edit writes SidecarPolicies");

    csps.delete(&name, &DeleteParams::default())
        .await
        .expect("delete the cluster policy");
    wait_pod(
        &pods,
        &sc,
        false,
        "the cluster policy's sidecar deleted with it",
    )
    .await;
    for b in bindings {
        let _ = Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&b, &DeleteParams::default())
            .await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The webhook's Secret, as deploy/ names it.
const WEBHOOK_SECRET: &str = "sidecar-operator-webhook-tls";

const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

async fn set_psa(client: &Client, ns: &str, level: &str) {
    let patch = serde_json::json!({"metadata": {"labels": {PSA_ENFORCE: level}}});
    Api::<Namespace>::all(client.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label namespace");
}

/// The API group of each resource name the operator's request counter uses.
fn group_of(resource: &str) -> Option<&'static str> {
    match resource {
        "pods" | "pods/eviction" | "namespaces" => Some(""),
        "sidecarpolicies"
        | "sidecarpolicies/status"
        | "clustersidecarpolicies"
        | "clustersidecarpolicies/status" => Some(sidecar_api::constants::GROUP),
        "events" => Some("events.k8s.io"),
        "leases" => Some("coordination.k8s.io"),
        "secrets" => Some(""),
        "mutatingwebhookconfigurations" => Some("admissionregistration.k8s.io"),
        _ => None,
    }
}

/// (group, resource, verb) granted by the ClusterRole and the leader-election Role of
/// deploy/10-rbac.yaml, as stored by the API server.
async fn shipped_grants(client: &Client) -> BTreeSet<(String, String, String)> {
    let mut rules = Vec::new();
    for name in [SA, "sidecar-operator-webhook"] {
        let cr = Api::<ClusterRole>::all(client.clone()).get(name).await;
        rules.extend(cr.expect("ClusterRole").rules.unwrap_or_default());
    }
    for name in [
        "sidecar-operator-leader-election",
        "sidecar-operator-webhook",
    ] {
        let role = Api::<Role>::namespaced(client.clone(), SA_NS)
            .get(name)
            .await;
        rules.extend(role.expect("Role").rules.unwrap_or_default());
    }
    let mut out = BTreeSet::new();
    for rule in rules {
        // Names limit only the webhook's own two objects.
        let by_name = rule
            .resources
            .iter()
            .flatten()
            .all(|r| r == "secrets" || r == "mutatingwebhookconfigurations");
        assert!(
            (rule.resource_names.is_none() || by_name) && rule.non_resource_urls.is_none(),
            "{rule:?}"
        );
        if by_name {
            assert!(
                rule.resource_names.as_ref().is_some_and(|n| n.len() == 1),
                "the webhook's objects are granted by name: {rule:?}"
            );
        }
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    assert!(g != "*" && r != "*" && v != "*", "a wildcard in {rule:?}");
                    out.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    out
}
