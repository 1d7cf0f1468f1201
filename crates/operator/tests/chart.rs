//! The Helm chart (charts/sidecar-operator) with the real `helm` (hack/helm, built from the
//! Go module proxy): it lints, deploy/ is its rendering, its webhook configuration is the
//! binary's for the same flags under every scope, and bad values are refused by name. No
//! cluster: `helm template` renders offline.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use sidecar_testenv::repo_root;

const BIN: &str = env!("CARGO_BIN_EXE_sidecar-operator");
const CHART: &str = "charts/sidecar-operator";

fn helm() -> Command {
    sidecar_testenv::helm(&scratch("helm"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sidecar-chart-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `helm template` of release `release` in `namespace` with `values`: Ok(documents) or
/// Err(stderr).
fn render(release: &str, namespace: &str, values: &Value) -> Result<Vec<Value>, String> {
    // One file per call: tests render in parallel.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = scratch("values").join(format!("{n}.json"));
    std::fs::write(&file, values.to_string()).expect("values file");
    let out = helm()
        .args(["template", release, CHART, "--namespace", namespace, "-f"])
        .arg(&file)
        .output()
        .expect("run helm template");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    Ok(sidecar_e2e::yaml_documents(&text, "helm template"))
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let mut found = docs.iter().filter(|d| d["kind"] == kind);
    let doc = found
        .next()
        .unwrap_or_else(|| panic!("the chart renders no {kind}"));
    assert!(found.next().is_none(), "the chart renders two {kind}s");
    doc
}

fn operator_args(docs: &[Value]) -> Vec<String> {
    let container = &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    serde_json::from_value(container["args"].clone()).expect("args are strings")
}

/// (apiGroup, resource) pairs the chart's ClusterRoles and Roles grant.
fn granted(docs: &[Value]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for role in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for rule in role["rules"].as_array().into_iter().flatten() {
            for group in rule["apiGroups"].as_array().into_iter().flatten() {
                for res in rule["resources"].as_array().into_iter().flatten() {
                    out.push((
                        group.as_str().unwrap_or_default().to_string(),
                        res.as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn the_chart_passes_helm_lint() {
    for values in [
        json!({}),
        json!({"webhook": {"certificate": {"source": "secret", "secretName": "tls"}}}),
        json!({"webhook": {"enabled": false}, "replicaCount": 1, "leaderElection": {"enabled": false}}),
    ] {
        let file = scratch("lint").join("values.json");
        std::fs::write(&file, values.to_string()).expect("values");
        let out = helm()
            .args(["lint", "--strict", CHART, "-f"])
            .arg(&file)
            .output()
            .expect("helm lint");
        assert!(
            out.status.success(),
            "helm lint --strict with {values}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// deploy/ is `hack/deploy.sh render` of the chart, byte for byte: one source.
#[test]
fn deploy_is_the_rendered_chart() {
    let dir = scratch("deploy");
    let out = Command::new("bash")
        .arg(repo_root().join("hack/deploy.sh"))
        .arg("render")
        .arg(&dir)
        .output()
        .expect("hack/deploy.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("rendered")
        .map(|e| e.expect("entry").file_name())
        .collect();
    files.sort();
    let mut shipped: Vec<_> = std::fs::read_dir(repo_root().join("deploy"))
        .expect("deploy/")
        .map(|e| e.expect("entry").file_name())
        .collect();
    shipped.sort();
    assert_eq!(files, shipped, "deploy/ holds exactly the rendered files");
    for f in files {
        let want = std::fs::read_to_string(dir.join(&f)).expect("rendered file");
        let have = std::fs::read_to_string(repo_root().join("deploy").join(&f)).expect("shipped");
        assert!(
            want == have,
            "deploy/{} is not the chart's rendering: edit charts/sidecar-operator and run `make deploy`",
            f.to_string_lossy()
        );
    }
}

#[test]
fn the_chart_ships_the_generated_crds() {
    for name in [
        "sidecarpolicies.sidecars.dev.yaml",
        "clustersidecarpolicies.sidecars.dev.yaml",
    ] {
        let generated =
            std::fs::read_to_string(repo_root().join("crds").join(name)).expect("crds/");
        let shipped = std::fs::read_to_string(repo_root().join(CHART).join("crds").join(name))
            .expect("chart");
        assert!(
            generated == shipped,
            "{CHART}/crds/{name} differs from crds/{name}: run `make crds`"
        );
    }
    let source = std::fs::read_to_string(repo_root().join("crds/admission-policy.yaml"))
        .expect("crds/admission-policy.yaml");
    let copy = std::fs::read_to_string(repo_root().join(CHART).join("files/admission-policy.yaml"))
        .expect("the chart's copy");
    assert!(
        source == copy,
        "{CHART}/files/admission-policy.yaml differs from crds/admission-policy.yaml: run `make crds`"
    );
}

/// The admission policy that checks a policy writer's own rights (crds/admission-policy.yaml)
/// is rendered by default, as shipped, with the chart's labels; one value turns it off (a
/// second, sharded release); on a cluster older than 1.30 (no admissionregistration/v1
/// ValidatingAdmissionPolicy) the chart refuses to install rather than silently leave it out.
#[test]
fn the_admission_policy_is_shipped_unless_turned_off() {
    let source = sidecar_e2e::yaml_file_documents(&repo_root().join("crds/admission-policy.yaml"));
    let docs = render("shard-a", "ops", &json!({})).expect("render");
    for (kind, want) in [
        ("ValidatingAdmissionPolicy", &source[0]),
        ("ValidatingAdmissionPolicyBinding", &source[1]),
    ] {
        let have = one(&docs, kind);
        assert_eq!(want["kind"], kind);
        // Cluster-wide, once per cluster like the CRDs: not named after the release.
        assert_eq!(have["metadata"]["name"], want["metadata"]["name"]);
        assert_eq!(
            have["spec"], want["spec"],
            "{kind} is crds/admission-policy.yaml's"
        );
        let labels = &have["metadata"]["labels"];
        assert_eq!(
            labels["app.kubernetes.io/instance"], "shard-a",
            "{kind}: {labels}"
        );
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "Helm",
            "{kind}: {labels}"
        );
    }

    let docs = render(
        "shard-b",
        "ops",
        &json!({"admissionPolicy": {"enabled": false}}),
    )
    .expect("render");
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(!docs.iter().any(|d| d["kind"] == kind), "no {kind}");
    }

    let out = helm()
        .args(["template", "old", CHART, "--kube-version", "1.29.5"])
        .output()
        .expect("helm template");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("admissionPolicy.enabled") && err.contains("1.30"),
        "Kubernetes 1.29 must be refused, naming the value and the version:\n{err}"
    );
    let out = helm()
        .args(["template", "old", CHART, "--kube-version", "1.29.5"])
        .args(["--set", "admissionPolicy.enabled=false"])
        .output()
        .expect("helm template");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// For every scope the chart offers, its MutatingWebhookConfiguration is what
/// `sidecar-operator webhook-config` prints for the flags the chart gives the operator, and
/// the reconciler's scope matches the webhook's.
#[test]
fn the_webhook_configuration_is_the_binarys_for_the_same_flags() {
    let cases = [
        ("sidecar-operator", "sidecar-system", json!({})),
        (
            "shard-a",
            "ops",
            json!({"namespaceSelector": {
                "matchLabels": {"sidecars": "enabled", "tier": "web"},
                "matchExpressions": [
                    {"key": "team", "operator": "In", "values": ["payments", "search"]},
                    {"key": "env", "operator": "NotIn", "values": ["dev"]},
                    {"key": "mesh", "operator": "Exists"},
                    {"key": "legacy", "operator": "DoesNotExist"},
                ],
            }}),
        ),
        ("one", "kube-system", json!({"watchNamespace": "orders"})),
        (
            "dev",
            "default",
            json!({"webhook": {"url": "https://127.0.0.1:9443/", "timeoutSeconds": 3},
                   "fullnameOverride": "so"}),
        ),
    ];
    for (release, namespace, values) in cases {
        let docs = render(release, namespace, &values).unwrap_or_else(|e| panic!("{values}: {e}"));
        let args = operator_args(&docs);
        let mut flags = vec![format!("--operator-namespace={namespace}")];
        for a in &args {
            for (from, to) in [
                ("--webhook-service=", "--webhook-service="),
                ("--webhook-configuration=", "--webhook-configuration="),
                ("--webhook-timeout=", "--webhook-timeout="),
                (
                    "--webhook-namespace-selector=",
                    "--webhook-namespace-selector=",
                ),
                ("--webhook-url=", "--url="),
            ] {
                if let Some(v) = a.strip_prefix(from) {
                    flags.push(format!("{to}{v}"));
                }
            }
        }
        let out = Command::new(BIN)
            .arg("webhook-config")
            .args(&flags)
            .env_remove("POD_NAMESPACE")
            .output()
            .expect("webhook-config");
        assert!(
            out.status.success(),
            "webhook-config {flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = sidecar_e2e::yaml_documents(
            &String::from_utf8(out.stdout).expect("UTF-8"),
            "webhook-config",
        );
        let (want, have) = (&printed[0], one(&docs, "MutatingWebhookConfiguration"));
        assert_eq!(
            have["metadata"]["name"], want["metadata"]["name"],
            "{values}"
        );
        assert_eq!(
            have["webhooks"], want["webhooks"],
            "{release}/{namespace} {values}: the chart's webhooks differ from `webhook-config {flags:?}`"
        );
        for (k, v) in want["metadata"]["labels"].as_object().expect("labels") {
            assert_eq!(&have["metadata"]["labels"][k], v, "label {k}");
        }
        // The Service the configuration names is the chart's.
        if let Some(svc) = have["webhooks"][0]["clientConfig"]["service"].as_object() {
            assert_eq!(svc["name"], one(&docs, "Service")["metadata"]["name"]);
            assert_eq!(svc["namespace"], json!(namespace));
        }
        // The reconciler is scoped like the webhook, and may list what it selects by.
        let selecting = values.get("namespaceSelector").is_some();
        assert_eq!(
            args.iter().any(|a| a.starts_with("--namespace-selector=")),
            selecting,
            "{args:?}"
        );
        // ClusterSidecarPolicies are applied unless one namespace is watched.
        let clusters = values.get("watchNamespace").is_none()
            && values.get("clusterPolicies") != Some(&json!(false));
        assert_eq!(
            granted(&docs).contains(&(String::new(), "namespaces".into())),
            selecting || clusters,
            "namespaces list/watch is granted exactly when namespaceSelector is set or cluster \
             policies are applied"
        );
        // The operator's own roles (not the users' view role, which reads them anyway).
        let own: Vec<Value> = docs
            .iter()
            .filter(|d| {
                !d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with("-view")
            })
            .cloned()
            .collect();
        assert_eq!(
            granted(&own).contains(&("sidecars.dev".into(), "clustersidecarpolicies".into())),
            clusters,
            "{values}: cluster policies are read exactly when applied"
        );
        assert_eq!(
            args.contains(&"--cluster-policies=false".to_string()),
            !clusters,
            "{args:?}"
        );
        if let Some(ns) = values.get("watchNamespace").and_then(Value::as_str) {
            assert!(args.contains(&format!("--namespace={ns}")), "{args:?}");
        }
    }
}

/// With the certificate from a Secret someone else writes (cert-manager), the operator
/// mounts it and gets no Secret or configuration rights; without the webhook, no trace of it.
#[test]
fn certificate_sources_and_the_webhook_switch_shape_rights_and_objects() {
    let docs = render(
        "sidecar-operator",
        "sidecar-system",
        &json!({"webhook": {
            "annotations": {"cert-manager.io/inject-ca-from": "sidecar-system/webhook"},
            "certificate": {"source": "secret", "secretName": "webhook-cert"},
        }}),
    )
    .expect("render");
    let args = operator_args(&docs);
    assert!(args.contains(&"--webhook-cert-dir=/etc/sidecar-operator/webhook-tls".into()));
    assert!(!args.iter().any(|a| a.starts_with("--webhook-secret")));
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "webhook-cert");
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"],
        "/etc/sidecar-operator/webhook-tls"
    );
    let grants = granted(&docs);
    for res in ["secrets", "mutatingwebhookconfigurations"] {
        assert!(
            !grants.iter().any(|(_, r)| r == res),
            "no {res} rights: {grants:?}"
        );
    }
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"));
    assert_eq!(
        one(&docs, "MutatingWebhookConfiguration")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "sidecar-system/webhook"
    );

    let docs = render(
        "sidecar-operator",
        "sidecar-system",
        &json!({"webhook": {"enabled": false}}),
    )
    .expect("render");
    for kind in ["MutatingWebhookConfiguration", "Service", "Secret"] {
        assert!(!docs.iter().any(|d| d["kind"] == kind), "no {kind}");
    }
    assert!(
        !operator_args(&docs)
            .iter()
            .any(|a| a.starts_with("--webhook"))
    );
    let grants = granted(&docs);
    assert!(!grants.iter().any(|(_, r)| r == "secrets"), "{grants:?}");

    // The managed default: the shipped Secret is the one the Role names.
    let docs = render("so", "ops", &json!({})).expect("render");
    let secret = one(&docs, "Secret")["metadata"]["name"].clone();
    assert_eq!(secret, "so-sidecar-operator-webhook-tls");
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["rules"][0]["resources"][0] == "secrets")
        .expect("the webhook's Role");
    assert_eq!(role["rules"][0]["resourceNames"][0], secret);
    assert!(
        operator_args(&docs).contains(&format!("--webhook-secret={}", secret.as_str().unwrap()))
    );
}

/// Values the chart cannot honour fail `helm template` (and so `helm install`) with a
/// message that names the value.
#[test]
fn bad_values_are_refused_by_name() {
    let cases = [
        (
            json!({"webhook": {"certificate": {"source": "vault"}}}),
            "source",
        ),
        (
            json!({"webhook": {"certificate": {"source": "secret"}}}),
            "webhook.certificate.secretName",
        ),
        (
            json!({"replicaCount": 3, "leaderElection": {"enabled": false}}),
            "leaderElection.enabled",
        ),
        (
            json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}),
            "operator",
        ),
        (json!({"replicas": 3}), "replicas"),
        (json!({"webhook": {"url": "http://127.0.0.1:9443"}}), "url"),
        (json!({"logFormat": "xml"}), "logFormat"),
        (
            json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}}),
            "values",
        ),
        (
            json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}),
            "values",
        ),
    ];
    for (values, names) in cases {
        let err = render("sidecar-operator", "sidecar-system", &values)
            .err()
            .unwrap_or_else(|| panic!("{values} must be refused"));
        assert!(
            err.contains(names),
            "{values}: the error must name {names}:\n{err}"
        );
    }
}
