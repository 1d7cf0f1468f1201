//! The Helm chart installed with the real `helm` into the local control plane: the operator
//! runs under the chart's ServiceAccount and RBAC, with the chart's flags, and gives Pods
//! their sidecars in both modes; the API server accepts its admission policy, and
//! `helm uninstall` removes what it installed.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use sidecar_api::SidecarPolicy;
use sidecar_e2e::webhook::wait_injecting;
use sidecar_e2e::{TIMEOUT, minimal_policy, native_sidecar_policy, pod, wait_pod, wait_until};
use sidecar_planner::sidecar_name;
use sidecar_testenv::{TestNamespace, shared};

use crate::process::{Proc, free_port};
use crate::rbac::service_account_kubeconfig;

/// The shipped admission policy's name (crds/admission-policy.yaml), and its binding's.
const VAP: &str = "sidecarpolicy-writers.sidecars.dev";

fn helm(dir: &Path, args: &[&str]) -> std::process::Output {
    sidecar_testenv::helm(dir)
        .args(args)
        .arg("--kubeconfig")
        .arg(shared().kubeconfig())
        .output()
        .expect("run helm")
}

/// An installed release, uninstalled on drop when the test failed before it did.
struct Release<'a> {
    name: String,
    namespace: &'a str,
    dir: &'a Path,
}

impl Release<'_> {
    fn uninstall(&self) -> std::process::Output {
        helm(
            self.dir,
            &["uninstall", &self.name, "--namespace", self.namespace],
        )
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.uninstall();
        }
    }
}

#[tokio::test]
async fn the_helm_chart_installs_an_operator_that_gives_pods_their_sidecars() {
    let client = shared().client().await;
    // The release's namespace, and the one namespace its namespaceSelector picks.
    let home = TestNamespace::create(&client, "helm").await;
    let apps = TestNamespace::create(&client, "helm-apps").await;
    let dir = std::env::temp_dir().join(format!("sidecar-helm-{}", home.name()));
    std::fs::create_dir_all(&dir).expect("dir");
    // Cluster-scoped names come from the release name: unique per run, beside deploy/'s.
    let release = format!("so-{}", &home.name()[home.name().len() - 6..]);
    let fullname = format!("{release}-sidecar-operator");
    let webhook_port = free_port();
    let webhook_url = format!("https://127.0.0.1:{webhook_port}");
    let values = json!({
        "replicaCount": 1,
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": apps.name()}},
        "leaderElection": {"leaseDuration": 4},
        // The operator runs beside the cluster here: the API server calls it on loopback.
        "webhook": {"url": webhook_url, "certificate": {"checkInterval": 1}},
        // The aggregated user roles are cluster-wide and installed once (deploy/ has them).
        "rbac": {"userRoles": false},
    });
    let values_file = dir.join("values.json");
    std::fs::write(&values_file, values.to_string()).expect("values");
    let out = helm(
        &dir,
        &[
            "install",
            &release,
            "charts/sidecar-operator",
            "--namespace",
            home.name(),
            "-f",
            values_file.to_str().expect("path"),
        ],
    );
    assert!(
        out.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = Release {
        name: release.clone(),
        namespace: home.name(),
        dir: &dir,
    };

    // The admission policy that checks policy writers' rights (cluster-wide, fixed names:
    // no other test of this process installs it) is accepted by the API server.
    let vaps = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    let vap = vaps
        .get(VAP)
        .await
        .expect("the chart's ValidatingAdmissionPolicy");
    assert_eq!(
        vap.metadata
            .labels
            .unwrap_or_default()
            .get("app.kubernetes.io/instance"),
        Some(&release)
    );
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .get(VAP)
        .await
        .expect("its binding");

    // The operator as the chart runs it: its ServiceAccount, its flags and environment.
    let deployment = Api::<Deployment>::namespaced(client.clone(), home.name())
        .get(&fullname)
        .await
        .expect("the chart's Deployment");
    let container = deployment
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].clone())
        .expect("a container");
    let args: Vec<String> = container
        .args
        .unwrap_or_default()
        .into_iter()
        .skip_while(|a| a == "run")
        .filter(|a| !a.starts_with("--metrics-addr="))
        .map(|a| match a.strip_prefix("--webhook-addr=") {
            Some(_) => format!("--webhook-addr=127.0.0.1:{webhook_port}"),
            None => a,
        })
        .collect();
    assert!(
        args.iter().any(|a| a.starts_with("--webhook-addr=")),
        "{args:?}"
    );
    let kc = service_account_kubeconfig(&client, home.name(), &fullname, &dir).await;
    let op = Proc::run(
        &kc,
        &args,
        &[
            ("POD_NAMESPACE", home.name()),
            ("SIDECAR_LEASE_NAMESPACE", home.name()),
        ],
        home.name(),
        "helm",
    );
    wait_until(Duration::from_secs(60), "operator /readyz", || async {
        (op.get("/readyz").map(|(c, _)| c) == Some(200)).then_some(())
    })
    .await;

    // Companion mode: a sidecar Pod appears beside the main Pod.
    let pods: Api<Pod> = Api::namespaced(client.clone(), apps.name());
    let policies: Api<SidecarPolicy> = Api::namespaced(client.clone(), apps.name());
    policies
        .create(&PostParams::default(), &minimal_policy("agent", "web"))
        .await
        .expect("policy");
    pods.create(&PostParams::default(), &pod("web-0", &[("app", "web")]))
        .await
        .expect("main Pod");
    wait_pod(
        &pods,
        &sidecar_name("web-0", "agent"),
        true,
        "the companion sidecar from the Helm-installed operator",
    )
    .await;

    // Container mode: the chart's webhook configuration, its caBundle set by the operator
    // (Secret update and configuration patch under the chart's Roles), injects.
    policies
        .create(
            &PostParams::default(),
            &native_sidecar_policy("shipper", "api", "log-shipper", "busybox:1.36"),
        )
        .await
        .expect("Container-mode policy");
    wait_injecting(&pods, &[("app", "api")], "log-shipper").await;
    let created = pods
        .create(&PostParams::default(), &pod("api-0", &[("app", "api")]))
        .await
        .expect("Pod");
    let inits = created
        .spec
        .and_then(|s| s.init_containers)
        .unwrap_or_default();
    assert_eq!(inits.len(), 1, "one native sidecar: {inits:?}");
    let secret = Api::<Secret>::namespaced(client.clone(), home.name())
        .get(&format!("{fullname}-webhook-tls"))
        .await
        .expect("the chart's Secret");
    assert!(
        secret.data.is_some_and(|d| d.contains_key("tls.crt")),
        "the operator filled the chart's empty Secret"
    );
    assert_eq!(
        op.metric("sidecar_operator_reconcile_errors_total{category=\"create\"}"),
        0.0,
        "operator log:\n{}",
        op.log_tail()
    );

    // Uninstalled, its cluster-scoped objects are gone (the CRD stays, as Helm keeps crds/).
    drop(op);
    let out = installed.uninstall();
    assert!(
        out.status.success(),
        "helm uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    wait_until(TIMEOUT, "the configuration to be deleted", || async {
        configs
            .get_opt(&fullname)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    wait_until(TIMEOUT, "the admission policy to be deleted", || async {
        vaps.get_opt(VAP).await.ok()?.is_none().then_some(())
    })
    .await;
    drop(installed);
    let _ = std::fs::remove_dir_all(&dir);
}
