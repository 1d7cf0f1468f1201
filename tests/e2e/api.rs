//! The `SidecarPolicy` API on the real API server: the generated CRD installs, every example
//! applies, every `tests/bad-policies/` entry is refused with its expected message, unknown
//! fields are refused under strict validation, specs round-trip with defaults applied, and
//! `kubectl explain` / `kubectl get` (Table) show what we declared.

use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, ResourceExt,
};
use kube::{Client, Resource};
use serde_json::{Value, json};
use sidecar_api::constants::{FIELD_MANAGER, condition, condition_status, reason};
use sidecar_api::{
    Mode, Placement, SidecarPolicy, SidecarPolicySpec, SidecarPolicyStatus, UpdateStrategy,
    template_hash,
};
use sidecar_e2e::{
    policy_table, repo_path, table_columns, wait_until, yaml_documents, yaml_file_documents,
    yaml_files,
};
use sidecar_testenv::{TestNamespace, install_crd, shared};

/// A client, the CRD installed, and a fresh namespace.
async fn setup(prefix: &str) -> (Client, TestNamespace) {
    let client = shared().client().await;
    install_crd(&client, &sidecar_api::crd())
        .await
        .expect("install the SidecarPolicy CRD");
    let ns = TestNamespace::create(&client, prefix).await;
    (client, ns)
}

fn dynamic_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<SidecarPolicy>(&());
    Api::namespaced_with(client.clone(), ns, &ar)
}

async fn kubectl(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || shared().kubectl().args(&args).output())
        .await
        .expect("kubectl task")
        .expect("run kubectl")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn policy(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("policy JSON")
}

fn minimal_spec() -> Value {
    json!({
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"spec": {"containers": [{"name": "shipper", "image": "busybox:1.36.1"}]}},
    })
}

#[tokio::test]
async fn crd_file_installs_with_client_side_apply_and_examples_apply() {
    let (client, ns) = setup("api-examples").await;
    // Client-side apply stores the whole CRD in the last-applied annotation (max 256 KiB);
    // a server-side dry run checks exactly that without touching the shared CRD (and that
    // the API server accepts the admission policy beside it, crds/admission-policy.yaml).
    let crds = repo_path("crds").display().to_string();
    let out = kubectl(vec![
        "apply".into(),
        "--dry-run=server".into(),
        "-f".into(),
        crds,
    ])
    .await;
    assert!(
        out.status.success(),
        "kubectl apply -f crds/: {}",
        describe(&out)
    );

    let mut failures = Vec::new();
    let mut expected_policies = Vec::new();
    for file in yaml_files("examples") {
        for doc in yaml_file_documents(&file) {
            if doc["kind"] == "SidecarPolicy" {
                expected_policies.push(doc["metadata"]["name"].as_str().unwrap().to_owned());
            }
        }
        let args = ["apply", "-n", ns.name(), "-f"].map(String::from).to_vec();
        let out = kubectl([args, vec![file.display().to_string()]].concat()).await;
        if !out.status.success() {
            failures.push(format!("{}: {}", file.display(), describe(&out)));
        }
    }
    assert!(
        failures.is_empty(),
        "examples refused:\n{}",
        failures.join("\n")
    );

    let api: Api<SidecarPolicy> = Api::namespaced(client, ns.name());
    let mut names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list policies")
        .iter()
        .map(|p| p.name_any())
        .collect();
    names.sort();
    expected_policies.sort();
    assert_eq!(names, expected_policies);
}

#[tokio::test]
async fn every_bad_policy_is_refused_with_its_message() {
    let (client, ns) = setup("api-bad").await;
    let api = dynamic_api(&client, ns.name());
    let files = yaml_files("tests/bad-policies");
    assert!(files.len() >= 15);
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read bad policy");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", file.display()))
            .trim()
            .to_owned();
        let docs = yaml_documents(&text, &file.display().to_string());
        let obj: DynamicObject = serde_json::from_value(docs[0].clone()).expect("DynamicObject");
        match api.create(&PostParams::default(), &obj).await {
            Err(kube::Error::Api(status)) if status.message.contains(&expect) => {}
            Err(kube::Error::Api(status)) => failures.push(format!(
                "{}\n  expected: {expect}\n  got:      {}",
                file.display(),
                status.message
            )),
            Err(err) => failures.push(format!(
                "{}\n  expected: {expect}\n  got:      {err}",
                file.display()
            )),
            Ok(created) => {
                failures.push(format!("{}: accepted, expected: {expect}", file.display()));
                let _ = api.delete(&created.name_any(), &Default::default()).await;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad policies not refused as expected:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn unknown_fields_are_refused_under_strict_validation() {
    let (client, ns) = setup("api-strict").await;
    let mut spec = minimal_spec();
    spec["placment"] = json!("Any");
    let obj = policy("typo", spec);

    let api = dynamic_api(&client, ns.name());
    let pp = PatchParams::apply(FIELD_MANAGER).validation_strict();
    let err = api
        .patch("typo", &pp, &Patch::Apply(&obj))
        .await
        .expect_err("server-side apply with an unknown field");
    assert!(
        err.to_string()
            .contains(".spec.placment: field not declared in schema"),
        "{err}"
    );

    let file = std::env::temp_dir().join(format!("{}-typo.json", ns.name()));
    std::fs::write(&file, serde_json::to_vec(&obj).expect("JSON")).expect("write policy");
    let args = ["create", "--validate=strict", "-n", ns.name(), "-f"].map(String::from);
    let out = kubectl([args.to_vec(), vec![file.display().to_string()]].concat()).await;
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr.contains(r#"strict decoding error: unknown field "spec.placment""#),
        "{}",
        describe(&out)
    );
}

#[tokio::test]
async fn policies_round_trip_with_defaults_applied() {
    let (client, ns) = setup("api-roundtrip").await;
    let dynamic = dynamic_api(&client, ns.name());
    let typed: Api<SidecarPolicy> = Api::namespaced(client.clone(), ns.name());

    // Only the required fields: the API server fills in the defaults.
    dynamic
        .create(&PostParams::default(), &policy("minimal", minimal_spec()))
        .await
        .expect("create minimal policy");
    let got = typed.get("minimal").await.expect("get minimal policy");
    let expected = SidecarPolicySpec {
        selector: serde_json::from_value::<LabelSelector>(minimal_spec()["selector"].clone())
            .expect("selector"),
        template: serde_json::from_value::<PodTemplateSpec>(minimal_spec()["template"].clone())
            .expect("template"),
        mode: Mode::Pod,
        placement: Placement::SameNode,
        update_strategy: UpdateStrategy::default(),
        paused: false,
        priority: None,
    };
    assert_eq!(got.spec, expected);
    assert_eq!(template_hash(&got.spec), template_hash(&expected));

    // Every example policy, fully specified, comes back unchanged.
    for file in yaml_files("examples") {
        for doc in yaml_file_documents(&file)
            .into_iter()
            .filter(|d| d["kind"] == "SidecarPolicy")
        {
            let sent: SidecarPolicy = serde_json::from_value(doc).expect("example policy");
            let created = typed.create(&PostParams::default(), &sent).await;
            let created = created.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(created.spec, sent.spec, "{}", file.display());
            let got = typed
                .get(&sent.name_any())
                .await
                .expect("get example policy");
            assert_eq!(got.spec, sent.spec, "{}", file.display());
        }
    }

    // Selectors that are close to, but do not match, the policy's own sidecars are accepted.
    let accepted = [
        (
            json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "app.kubernetes.io/managed-by", "operator": "NotIn", "values": ["sidecar-operator"]}]}),
            json!({"app": "web"}),
        ),
        (
            json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}, {"key": "app.kubernetes.io/managed-by", "operator": "NotIn", "values": ["sidecar-operator"]}]}),
            json!({}),
        ),
        (
            json!({"matchExpressions": [{"key": "sidecars.dev/policy", "operator": "DoesNotExist"}]}),
            json!({}),
        ),
        (
            json!({"matchLabels": {"app": "web", "tier": "frontend"}}),
            json!({"app": "web"}),
        ),
    ];
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for (i, (selector, labels)) in accepted.into_iter().enumerate() {
        let mut spec = minimal_spec();
        spec["selector"] = selector.clone();
        spec["template"]["metadata"] = json!({"labels": labels});
        let obj = policy(&format!("edge-{i}"), spec);
        if let Err(e) = dynamic.create(&dry_run, &obj).await {
            panic!("selector {selector} with template labels {labels} refused: {e}");
        }
    }

    // Container mode: native sidecars only (no containers), and template labels the selector
    // matches (they go on the selected Pods themselves; there are no sidecar Pods to select).
    let spec = json!({
        "mode": "Container",
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}, "annotations": {"note": "x"}},
            "spec": {"initContainers": [{
                "name": "proxy", "image": "busybox:1.36.1", "restartPolicy": "Always"}]},
        },
    });
    if let Err(e) = dynamic
        .create(&dry_run, &policy("container-mode", spec))
        .await
    {
        panic!("Container-mode policy refused: {e}");
    }
}

/// `kubectl explain what`, retried until it answers: the OpenAPI document is republished
/// asynchronously after a CRD is established.
async fn explain(what: &str) -> String {
    let args = ["explain".to_owned(), what.to_owned()];
    wait_until(Duration::from_secs(60), "kubectl explain", || {
        let args = args.to_vec();
        async move {
            let out = kubectl(args).await;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success().then_some(text)
        }
    })
    .await
}

#[tokio::test]
async fn kubectl_explain_shows_our_descriptions() {
    let (_client, _ns) = setup("api-explain").await;
    let crd = serde_json::to_value(sidecar_api::crd()).expect("CRD JSON");
    // spec.placement, and spec.mode, which documents both modes.
    for (field, values) in [
        ("placement", ["SameNode", "Any"]),
        ("mode", ["Pod", "Container"]),
    ] {
        let pointer = format!(
            "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/{field}/description"
        );
        let description = crd
            .pointer(&pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{field} description"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let text = explain(&format!("sidecarpolicy.spec.{field}")).await;
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(&description),
            "explain output:\n{text}\nexpected: {description}"
        );
        assert!(values.iter().all(|v| flat.contains(v)), "{text}");
    }
    // The cluster kind documents its own field, and the ones it shares.
    install_crd(&_client, &sidecar_api::cluster_crd())
        .await
        .expect("ClusterSidecarPolicy CRD");
    for (field, words) in [
        ("namespaceSelector", "kubernetes.io/metadata.name"),
        ("selector", "Label selector of the main Pods"),
    ] {
        let text = explain(&format!("clustersidecarpolicy.spec.{field}")).await;
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(words),
            "explain output:\n{text}\nexpected: {words}"
        );
    }
}

#[tokio::test]
async fn table_shows_the_printer_columns() {
    let (client, ns) = setup("api-table").await;
    let typed: Api<SidecarPolicy> = Api::namespaced(client.clone(), ns.name());
    dynamic_api(&client, ns.name())
        .create(&PostParams::default(), &policy("shipper", minimal_spec()))
        .await
        .expect("create policy");

    let status = SidecarPolicyStatus {
        observed_generation: Some(1),
        template_hash: Some("0123456789".into()),
        matched_pods: 4,
        sidecar_pods: 4,
        updated_pods: 4,
        ready_pods: 3,
        ready: Some(sidecar_api::ready_text(3, 4)),
        drift: None,
        injection_refused_in: None,
        conditions: vec![Condition {
            type_: condition::READY.into(),
            status: condition_status::FALSE.into(),
            reason: reason::SIDECARS_NOT_READY.into(),
            message: "3/4 sidecars ready".into(),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }],
    };
    let body = json!({
        "apiVersion": SidecarPolicy::api_version(&()),
        "kind": SidecarPolicy::kind(&()),
        "status": status,
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    typed
        .patch_status("shipper", &pp, &Patch::Apply(&body))
        .await
        .expect("patch status");
    let got = typed.get_status("shipper").await.expect("get status");
    assert_eq!(got.status.as_ref(), Some(&status));

    let table = policy_table(&client, ns.name()).await;
    assert_eq!(table["kind"], "Table", "{table}");
    let columns = table_columns(&table);
    assert_eq!(
        columns,
        ["NAME", "MATCHED", "READY", "UP-TO-DATE", "PAUSED", "AGE"]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "shipper");
    assert_eq!(cells[1], 4);
    assert_eq!(cells[2], "3/4");
    assert_eq!(cells[3], 4);
    assert_eq!(cells[4], false);
    assert!(cells[5].is_string(), "AGE cell: {}", cells[5]);
}

/// The template rules refuse only what Pod validation refuses: a template that uses every
/// checked field correctly, with every bounded integer at its largest value, is accepted, and
/// reads back into the Rust types (which hold those integers as `i32`).
#[tokio::test]
async fn templates_within_the_rules_are_accepted_and_read_back() {
    let (client, ns) = setup("api-template-ok").await;
    let mut spec = minimal_spec();
    spec["updateStrategy"] = json!({"type": "RollingUpdate", "maxUnavailable": i32::MAX});
    spec["template"] = json!({
        "metadata": {"labels": {"team": "obs", "tier": ""}},
        "spec": {
            "priority": i32::MAX,
            "restartPolicy": "Always",
            "initContainers": [{
                "name": "proxy",
                "image": "busybox:1.36.1",
                "restartPolicy": "Always",
                "readinessProbe": {"tcpSocket": {"port": "proxy"}, "periodSeconds": i32::MAX},
                "ports": [{"name": "proxy", "containerPort": 1, "protocol": "UDP"}],
                "volumeMounts": [{"name": "logs", "mountPath": "/logs"}],
            }, {
                "name": "setup",
                "image": "busybox:1.36.1",
                "restartPolicy": "OnFailure",
            }],
            "containers": [{
                "name": "shipper",
                "image": "busybox:1.36.1",
                "imagePullPolicy": "IfNotPresent",
                "env": [{"name": "log.level-1", "value": "debug"}, {"name": "LOG LEVEL", "value": "x"}],
                "ports": [
                    {"name": "http-metrics", "containerPort": 65535, "hostPort": 65535},
                    {"containerPort": 2020, "hostPort": 0, "protocol": "SCTP"},
                    {"containerPort": 2021},
                ],
                "livenessProbe": {"httpGet": {"path": "/", "port": 65535}},
                "startupProbe": {"grpc": {"port": 65535}},
                "lifecycle": {"preStop": {"tcpSocket": {"port": "http-metrics"}}},
                "volumeMounts": [
                    {"name": "logs", "mountPath": "/var/log/app"},
                    {"name": "config", "mountPath": "/etc/shipper"},
                ],
            }],
            "volumes": [{"name": "logs", "emptyDir": {}}, {"name": "config", "configMap": {"name": "c"}}],
        },
    });
    dynamic_api(&client, ns.name())
        .create(&PostParams::default(), &policy("edge", spec))
        .await
        .unwrap_or_else(|e| panic!("a valid template refused: {e}"));
    let typed: Api<SidecarPolicy> = Api::namespaced(client, ns.name());
    let got = typed
        .get("edge")
        .await
        .expect("the stored policy reads back");
    assert_eq!(
        got.spec.update_strategy.max_unavailable,
        IntOrString::Int(i32::MAX)
    );
    let pod = got.spec.template.spec.as_ref().expect("template spec");
    assert_eq!(pod.priority, Some(i32::MAX));
    assert_eq!(
        pod.containers[0].ports.as_ref().unwrap()[0].container_port,
        65535
    );
    assert!(
        sidecar_api::validate(&got.spec).is_empty(),
        "{:?}",
        sidecar_api::validate(&got.spec)
    );
}
