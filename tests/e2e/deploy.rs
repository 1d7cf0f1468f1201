//! The operator as users run it: the `sidecar-operator` binary, authenticated as the
//! ServiceAccount of `deploy/` (least-privilege RBAC), and leader election between
//! two processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use sidecar_api::SidecarPolicy;
use sidecar_e2e::{pod, wait_until};
use sidecar_planner::sidecar_name;
use sidecar_testenv::{TestNamespace, install_crd, shared};

const SA_NS: &str = "sidecar-system";
const SA: &str = "sidecar-operator";

/// The operator binary built by cargo for this workspace (built on demand).
pub(crate) fn operator_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/sidecar-operator
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("sidecar-operator"))
        .expect("target dir");
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "-p",
                "sidecar-operator",
                "--bin",
                "sidecar-operator",
            ])
            .current_dir(sidecar_testenv::repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building sidecar-operator failed");
    });
    assert!(bin.is_file(), "{} missing", bin.display());
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `sidecar-operator run` process, killed on drop.
pub(crate) struct Proc {
    pub(crate) child: Child,
    port: u16,
    log: PathBuf,
}

impl Proc {
    pub(crate) fn start(kubeconfig: &Path, ns: &str, extra: &[&str], tag: &str) -> Proc {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("sidecar-operator-{ns}-{tag}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(operator_bin())
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", ns])
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg(format!("--instance={tag}"))
            .args(extra)
            .env_remove("KUBECONFIG")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start sidecar-operator");
        Proc { child, port, log }
    }

    /// GET a path of its metrics server; `None` if unreachable.
    pub(crate) fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        let code = body.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body))
    }

    /// Value of a metric line (exact series name + labels) from /metrics.
    pub(crate) fn metric(&self, series: &str) -> f64 {
        self.get("/metrics")
            .and_then(|(_, body)| {
                body.lines()
                    .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Requests the process sent, by (resource, verb), from its `api_requests` counter;
    /// `None` if /metrics is unreachable.
    pub(crate) fn api_requests(&self) -> Option<BTreeMap<(String, String), f64>> {
        let (_, body) = self.get("/metrics")?;
        let mut out = BTreeMap::new();
        for line in body.lines() {
            let Some(rest) = line.strip_prefix("sidecar_operator_api_requests_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let label = |k: &str| {
                labels.split(',').find_map(|kv| {
                    kv.strip_prefix(&format!("{k}=\""))
                        .and_then(|v| v.strip_suffix('"'))
                        .map(str::to_string)
                })
            };
            if let (Some(res), Some(verb), Ok(v)) =
                (label("resource"), label("verb"), value.parse())
            {
                out.insert((res, verb), v);
            }
        }
        Some(out)
    }

    /// Writes (create, delete, patch, update of any resource, Events and the Lease
    /// included) the process sent; `None` if /metrics is unreachable.
    pub(crate) fn writes(&self) -> Option<f64> {
        let calls = self.api_requests()?;
        Some(
            calls
                .iter()
                .filter(|((_, verb), _)| {
                    matches!(
                        verb.as_str(),
                        "create" | "dry-run" | "delete" | "patch" | "update"
                    )
                })
                .map(|(_, v)| v)
                .sum(),
        )
    }

    pub(crate) fn log_tail(&self) -> String {
        sidecar_testenv::process::log_tail(&self.log, 30)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// Writes a kubeconfig that authenticates as the deploy/ ServiceAccount with a
/// short-lived token from the TokenRequest API.
async fn service_account_kubeconfig(client: &Client, dir: &Path) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), SA_NS);
    wait_until(Duration::from_secs(30), "deploy/ ServiceAccount", || {
        let sas = sas.clone();
        async move { sas.get_opt(SA).await.ok().flatten().map(|_| ()) }
    })
    .await;
    let req: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}
    }))
    .expect("static JSON");
    let tr: TokenRequest = sas
        .create_subresource("token", SA, &PostParams::default(), &req)
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

pub(crate) fn policy(name: &str, app: &str) -> SidecarPolicy {
    let spec = serde_json::from_value(serde_json::json!({
        "selector": {"matchLabels": {"app": app}},
        "template": {"spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]}},
    }))
    .expect("spec");
    SidecarPolicy::new(name, spec)
}

/// A policy whose sidecar (a privileged container) Pod Security `baseline` refuses: the
/// operator keeps retrying its create with backoff, so it always has a write due.
pub(crate) fn refused_policy(name: &str, app: &str) -> SidecarPolicy {
    let spec = serde_json::from_value(serde_json::json!({
        "selector": {"matchLabels": {"app": app}},
        "template": {"spec": {"containers": [{
            "name": "agent", "image": "busybox:1.36",
            "securityContext": {"privileged": true},
        }]}},
    }))
    .expect("spec");
    SidecarPolicy::new(name, spec)
}

pub(crate) async fn wait_pod(
    pods: &Api<Pod>,
    name: &str,
    present: bool,
    what: &str,
) -> Option<Pod> {
    wait_until(Duration::from_secs(60), what, || {
        let pods = pods.clone();
        let name = name.to_string();
        async move {
            match pods.get_opt(&name).await {
                Ok(Some(p)) if present && p.metadata.deletion_timestamp.is_none() => Some(Some(p)),
                Ok(None) if !present => Some(None),
                _ => None,
            }
        }
    })
    .await
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
    let kc = service_account_kubeconfig(&client, &dir).await;

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

    // With leader election on a Lease in the operator's namespace (the shipped Role).
    let lease = format!("rbac-{}", ns.name());
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

    // Delete the policies: the sidecar goes.
    for name in ["agent", "priv"] {
        policies
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete policy");
    }
    wait_pod(&pods, &sc, false, "sidecar deleted after the policy").await;
    // Least privilege, checked against use: every (resource, verb) the shipped ClusterRole
    // and Role grant was used by the operator (its request counter saw it), and it used
    // nothing else.
    let used: BTreeSet<(String, String)> = op
        .api_requests()
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
        .collect();
    let granted = shipped_grants(&client).await;
    eprintln!("[rbac] used (resource, verb): {used:?}");
    eprintln!("[rbac] granted (group, resource, verb): {granted:?}");
    let unused: Vec<_> = granted
        .iter()
        .filter(|(group, res, verb)| {
            group_of(res) != Some(group.as_str()) || !used.contains(&(res.clone(), verb.clone()))
        })
        .collect();
    assert!(
        unused.is_empty(),
        "deploy/10-rbac.yaml grants what the operator never used: {unused:?} (used: {used:?})"
    );
    let ungranted: Vec<_> = used
        .iter()
        .filter(|(res, verb)| {
            !group_of(res).is_some_and(|g| granted.contains(&(g.into(), res.clone(), verb.clone())))
        })
        .collect();
    assert!(ungranted.is_empty(), "used but not granted: {ungranted:?}");

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
    ] {
        assert!(
            metrics.contains(family),
            "/metrics lacks {family}:\n{metrics}"
        );
    }
    assert_eq!(op.get("/healthz").map(|(c, _)| c), Some(200));
    let errors = op.metric("sidecar_operator_reconcile_errors_total{category=\"create\"}");
    assert_eq!(errors, 0.0, "operator log:\n{}", op.log_tail());

    let _ = std::fs::remove_dir_all(dir);
}

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
        "pods" | "namespaces" => Some(""),
        "sidecarpolicies" | "sidecarpolicies/status" => Some(sidecar_api::constants::GROUP),
        "events" => Some("events.k8s.io"),
        "leases" => Some("coordination.k8s.io"),
        _ => None,
    }
}

/// (group, resource, verb) granted by the ClusterRole and the leader-election Role of
/// deploy/10-rbac.yaml, as stored by the API server.
async fn shipped_grants(client: &Client) -> BTreeSet<(String, String, String)> {
    let cr = Api::<ClusterRole>::all(client.clone())
        .get(SA)
        .await
        .expect("ClusterRole");
    let role = Api::<Role>::namespaced(client.clone(), SA_NS)
        .get("sidecar-operator-leader-election")
        .await
        .expect("Role");
    let mut out = BTreeSet::new();
    for rule in cr
        .rules
        .unwrap_or_default()
        .into_iter()
        .chain(role.rules.unwrap_or_default())
    {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{rule:?}"
        );
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

pub(crate) async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Flags of an operator that elects a leader on Lease `lease` in `ns`, with a 6 s lease
/// (renew deadline and retry period at their defaults).
pub(crate) fn lease_args<'a>(lease: &'a str, ns: &'a str) -> [&'a str; 7] {
    [
        "--leader-elect",
        "--lease-name",
        lease,
        "--lease-namespace",
        ns,
        "--lease-duration",
        "6",
    ]
}

#[tokio::test]
async fn leader_election_one_leader_failover_and_clean_release() {
    let client = shared().client().await;
    install_crd(&client, &sidecar_api::crd())
        .await
        .expect("CRD");
    let ns = TestNamespace::create(&client, "ha").await;
    let lease = format!("ha-{}", ns.name());
    let kc = shared().kubeconfig().to_path_buf();
    let args = lease_args(&lease, ns.name());
    let mut a = Proc::start(&kc, ns.name(), &args, "a");
    let mut b = Proc::start(&kc, ns.name(), &args, "b");
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());
    let first = wait_until(Duration::from_secs(60), "a leader", || {
        let leases = leases.clone();
        let lease = lease.clone();
        async move { holder(&leases, &lease).await }
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let policies: Api<SidecarPolicy> = Api::namespaced(client.clone(), ns.name());
    policies
        .create(&PostParams::default(), &policy("agent", "web"))
        .await
        .expect("policy");
    for i in 0..3 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("web-{i}"), &[("app", "web")]),
        )
        .await
        .expect("main Pod");
    }
    for i in 0..3 {
        wait_pod(
            &pods,
            &sidecar_name(&format!("web-{i}"), "agent"),
            true,
            "sidecar",
        )
        .await;
    }
    // Exactly one process created them: the leader.
    let created = |p: &Proc| p.metric("sidecar_operator_sidecars_created_total");
    let (leader, standby) = if first == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    wait_until(Duration::from_secs(10), "leader metrics", || async {
        (created(leader) == 3.0).then_some(())
    })
    .await;
    assert_eq!(created(standby), 0.0, "the standby must create nothing");
    assert_eq!(
        standby.get("/readyz").map(|(c, _)| c),
        Some(200),
        "a standby is ready"
    );

    // SIGKILL the leader: the standby takes over within the lease duration and converges.
    leader.child.kill().expect("kill leader");
    let _ = leader.child.wait();
    let killed_at = Instant::now();
    pods.create(&PostParams::default(), &pod("web-3", &[("app", "web")]))
        .await
        .expect("main Pod");
    wait_pod(
        &pods,
        &sidecar_name("web-3", "agent"),
        true,
        "sidecar after failover",
    )
    .await;
    let took = killed_at.elapsed();
    eprintln!(
        "[ha] failover to {} converged {took:?} after SIGKILL",
        if first == "a" { "b" } else { "a" }
    );
    assert!(
        took < Duration::from_secs(6 + 20),
        "failover took {took:?}; standby log:\n{}",
        standby.log_tail()
    );
    let new_holder = holder(&leases, &lease).await;
    assert_ne!(new_holder.as_deref(), Some(first.as_str()));

    // SIGTERM the new leader: exit code 0, Lease released.
    let pid = standby.child.id();
    sidecar_testenv::process::signal(pid, SIGTERM);
    let status = wait_until(Duration::from_secs(30), "graceful exit", || {
        let st = standby.child.try_wait().ok().flatten();
        async move { st }
    })
    .await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        standby.log_tail()
    );
    wait_until(Duration::from_secs(10), "Lease released", || {
        let leases = leases.clone();
        let lease = lease.clone();
        async move { holder(&leases, &lease).await.is_none().then_some(()) }
    })
    .await;
}

/// SIGTERM (Linux).
const SIGTERM: i32 = 15;

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
            .create(&PostParams::default(), &policy("agent", "web"))
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
