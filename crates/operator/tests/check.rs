//! `sidecar-operator check` as users run it: the built binary, on the repository's examples and
//! bad policies and on files written here. No cluster is involved.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use sidecar_e2e::{repo_path, yaml_documents, yaml_files};

const BIN: &str = env!("CARGO_BIN_EXE_sidecar-operator");

fn check(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("check")
        .args(args)
        .output()
        .expect("run sidecar-operator check")
}

fn check_files(files: &[PathBuf], extra: &[&str]) -> Output {
    let mut args: Vec<String> = Vec::new();
    for f in files {
        args.push("-f".into());
        args.push(f.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check(&args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

/// The YAML documents of the report (comments are YAML comments, so it parses as a stream).
fn documents(text: &str) -> Vec<Value> {
    yaml_documents(text, "the report is valid YAML")
}

/// A file under the system temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("sidecar-check-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

#[test]
fn examples_pass_and_print_one_sidecar_per_workload() {
    let out = check_files(&yaml_files("examples"), &["--namespace", "shop"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    // Sidecar Pods (owned by their main Pod), then the Pods Container mode admits.
    let (admitted, sidecars): (Vec<Value>, Vec<Value>) = documents(&text)
        .into_iter()
        .partition(|d| d["metadata"]["ownerReferences"].is_null());
    let names: Vec<&str> = sidecars
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "nightly-report-example-report-log-archiver",
            "web-example-log-shipper",
            "checkout-example-checkout-metrics"
        ],
        "{}",
        describe(&out)
    );
    for sidecar in &sidecars {
        assert_eq!(sidecar["apiVersion"], "v1");
        assert_eq!(sidecar["kind"], "Pod");
        assert_eq!(sidecar["metadata"]["namespace"], "shop");
        let owner = &sidecar["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Pod");
        assert_eq!(owner["controller"], true);
        assert_eq!(
            sidecar["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "sidecar-operator"
        );
        for container in sidecar["spec"]["containers"].as_array().unwrap() {
            assert_eq!(
                env_value(container, "MAIN_POD_NAME").as_deref(),
                owner["name"].as_str(),
                "{sidecar}"
            );
            assert_eq!(
                env_value(container, "MAIN_POD_UID").as_deref(),
                owner["uid"].as_str()
            );
        }
    }
    // SameNode sidecars of unscheduled Pods are shown with the placeholder node, and say so.
    let shipper = &sidecars[1];
    let term = &shipper["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0];
    assert_eq!(term["matchFields"][0]["values"][0], "<unscheduled>");
    assert!(text.contains("# Placeholder: node <unscheduled>"), "{text}");
    assert!(
        text.contains("# Placeholder: main Pod uid 00000000-"),
        "{text}"
    );
    // Placement Any: no node affinity.
    assert!(sidecars[0]["spec"]["affinity"].is_null());
    // The report names what each policy selects.
    assert!(
        text.contains(
            "Pod shop/web-example (Deployment web, {}:7): sidecar Pod shop/web-example-log-shipper"
                .replace(
                    "{}",
                    &repo_path("examples/log-shipper.yaml").display().to_string()
                )
                .as_str()
        ),
        "{text}"
    );
    // Kinds that are neither policies nor workloads are skipped with a note.
    assert!(
        stderr(&out).contains("ignoring ConfigMap shop/log-shipper-config"),
        "{}",
        describe(&out)
    );
    // A Container-mode policy makes no sidecar Pod: it shows the Pod as admitted, with its
    // native sidecar first and the injection recorded.
    assert_eq!(admitted.len(), 1, "{}", describe(&out));
    let orders = &admitted[0];
    assert_eq!(orders["metadata"]["name"], "orders-example");
    let first = &orders["spec"]["initContainers"][0];
    assert_eq!(
        (&first["name"], &first["restartPolicy"]),
        (&"otel-agent".into(), &"Always".into())
    );
    let record = orders["metadata"]["annotations"]["sidecars.dev/injected"].as_str();
    assert!(
        record.is_some_and(|r| r.starts_with("otel-agent=")),
        "{record:?}"
    );
    assert!(
        text.contains("#   injected by SidecarPolicy otel-agent (template hash "),
        "{text}"
    );
    assert!(
        text.contains(
            "Pod shop/orders-example (Deployment orders, {}:79): sidecars injected into the Pod \
             at its creation"
                .replace(
                    "{}",
                    &repo_path("examples/otel-agent.yaml").display().to_string()
                )
                .as_str()
        ),
        "{text}"
    );
    assert!(
        text.contains("#   mode Container (sidecars injected"),
        "{text}"
    );
    assert!(stderr(&out).contains("check: OK: 4 SidecarPolicies valid"));
    assert!(
        stderr(&out).contains("3 sidecar Pods would be created, 1 Pod injected"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_bad_policy_fails_naming_file_object_and_field() {
    let file = repo_path("tests/bad-policies/unknown-placement.yaml");
    let out = check_files(std::slice::from_ref(&file), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "error: {}:2: SidecarPolicy default/unknown-placement: spec.placement: Unsupported \
             value: \"Anywhere\": supported values: \"SameNode\", \"Any\"",
            file.display()
        )),
        "{}",
        describe(&out)
    );
    assert!(documents(&stdout(&out)).is_empty());
}

#[test]
fn every_bad_policy_fails_with_its_expected_message() {
    let files = yaml_files("tests/bad-policies");
    let out = check_files(&files, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# expect: ");
        let name = file.file_stem().unwrap().to_str().unwrap();
        let line = err.lines().find(|l| {
            l.starts_with(&format!("error: {}:", file.display()))
                && l.contains(&format!("SidecarPolicy default/{name}: "))
                && l.contains(expect)
        });
        assert!(
            line.is_some(),
            "{}: no error with {expect:?}\n{err}",
            file.display()
        );
    }
}

#[test]
fn unknown_fields_are_errors() {
    let file = TempFile::new(
        "typo.yaml",
        "apiVersion: sidecars.dev/v1alpha1\n\
         kind: SidecarPolicy\n\
         metadata: {name: typo, namespace: team}\n\
         spec:\n  \
           selector: {matchLabels: {app: web}}\n  \
           placment: Any\n  \
           template:\n    \
             spec:\n      \
               containers: [{name: c, image: busybox, imagePullPolicyy: Always}]\n",
    );
    let out = check(&["-f", file.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    for field in [
        "spec.placment",
        "spec.template.spec.containers[0].imagePullPolicyy",
    ] {
        assert!(
            err.contains(&format!(
                "{}:1: SidecarPolicy team/typo: unknown field \"{field}\"",
                file.path()
            )),
            "{}",
            describe(&out)
        );
    }
}

#[test]
fn bad_yaml_fails_with_file_and_line() {
    let file = TempFile::new(
        "broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Pod\n\
         metadata:\n  name: p\n  labels: {app: web\nspec: {}\n",
    );
    let out = check(&["-f", file.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with(&format!("error: {}:10:", file.path()))
                && l.contains("invalid YAML")),
        "{}",
        describe(&out)
    );
}

#[test]
fn missing_files_fail() {
    let out = check(&["-f", "/nonexistent/policies.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("/nonexistent/policies.yaml: cannot read"));
    // -f is required.
    assert_eq!(check(&[]).status.code(), Some(2));
}

#[test]
fn pods_are_taken_as_they_are() {
    let file = TempFile::new(
        "pods.yaml",
        r#"
apiVersion: sidecars.dev/v1alpha1
kind: SidecarPolicy
metadata: {name: shipper}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {role: shipper}}
    spec:
      containers: [{name: c, image: busybox, env: [{name: MAIN_POD_NAME, value: overridden}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: scheduled, uid: 1f6bb0a4-2d43-4f4b-b3a5-bb3cf5a0e7c1, labels: {app: web}}
spec: {nodeName: node-7, containers: [{name: app, image: nginx}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: opted-out
  labels: {app: web}
  annotations: {sidecars.dev/inject: "false"}
spec: {nodeName: node-7, containers: [{name: app, image: nginx}]}
---
apiVersion: v1
kind: Pod
metadata: {name: done, labels: {app: web}}
spec: {nodeName: node-7, containers: [{name: app, image: nginx}]}
status: {phase: Succeeded}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: other, labels: {app: web}}
spec: {nodeName: node-7, containers: [{name: app, image: nginx}]}
---
apiVersion: v1
kind: Pod
metadata: {name: unrelated, labels: {app: db}}
spec: {containers: [{name: app, image: postgres}]}
"#,
    );
    let out = check(&["-f", file.path()]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let sidecars = documents(&text);
    assert_eq!(sidecars.len(), 1, "{}", describe(&out));
    let sidecar = &sidecars[0];
    assert_eq!(sidecar["metadata"]["name"], "scheduled-shipper");
    assert_eq!(sidecar["metadata"]["namespace"], "default");
    assert_eq!(
        sidecar["metadata"]["ownerReferences"][0]["uid"],
        "1f6bb0a4-2d43-4f4b-b3a5-bb3cf5a0e7c1"
    );
    let container = &sidecar["spec"]["containers"][0];
    assert_eq!(
        env_value(container, "MAIN_POD_NAME").as_deref(),
        Some("scheduled")
    );
    assert_eq!(
        env_value(container, "MAIN_POD_NODE").as_deref(),
        Some("node-7")
    );
    let term = &sidecar["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0];
    assert_eq!(term["matchFields"][0]["values"][0], "node-7");
    assert!(!text.contains("Placeholder"), "{text}");
    assert!(
        text.contains("selects 3 of 4 Pods in namespace default"),
        "{text}"
    );
    assert!(
        text.contains("Pod default/opted-out") && text.contains("no sidecar: opted out"),
        "{text}"
    );
    assert!(text.contains("no sidecar: the Pod has finished"), "{text}");
    assert!(!text.contains("elsewhere"), "{text}");
}

#[test]
fn workloads_of_every_kind_become_would_be_pods() {
    let template = "template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: a, image: nginx}]}";
    let file = TempFile::new(
        "workloads.yaml",
        &format!(
            "apiVersion: sidecars.dev/v1alpha1\nkind: SidecarPolicy\nmetadata: {{name: p, namespace: prod}}\n\
             spec:\n  placement: Any\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    \
             spec: {{containers: [{{name: s, image: busybox}}]}}\n\
             ---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  {template}\n\
             ---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n  {template}\n\
             ---\napiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: rs}}\nspec:\n  {template}\n\
             ---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: job}}\nspec:\n  {template}\n\
             ---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: cron}}\nspec:\n  jobTemplate:\n    spec:\n      \
             template:\n        metadata: {{labels: {{app: web}}}}\n        spec: {{containers: [{{name: a, image: nginx}}]}}\n\
             ---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {{name: listed}}\n  \
             spec:\n    template:\n      metadata: {{labels: {{app: web}}}}\n      spec: {{containers: [{{name: a, image: nginx}}]}}\n"
        ),
    );
    let out = check(&["-f", file.path(), "-n", "prod"]);
    assert!(out.status.success(), "{}", describe(&out));
    let names: Vec<String> = documents(&stdout(&out))
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "db-0-p",
            "agent-example-p",
            "rs-example-p",
            "job-example-p",
            "cron-example-p",
            "listed-example-p"
        ],
        "{}",
        describe(&out)
    );
}

#[test]
fn policies_only_reach_pods_of_their_namespace() {
    let out = check_files(&yaml_files("examples"), &[]);
    assert!(out.status.success(), "{}", describe(&out));
    // Three sidecar Pods and one Pod admitted with Container mode's sidecars.
    assert_eq!(documents(&stdout(&out)).len(), 4);
    let policy = TempFile::new(
        "ns-policy.yaml",
        "apiVersion: sidecars.dev/v1alpha1\nkind: SidecarPolicy\nmetadata: {name: p, namespace: a}\n\
         spec:\n  selector: {matchLabels: {app: web}}\n  template:\n    spec: {containers: [{name: s, image: x}]}\n",
    );
    let mut files = vec![PathBuf::from(policy.path())];
    files.push(repo_path("examples/log-shipper.yaml"));
    let out = check_files(&files, &["-n", "b"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("selects 0 of 0 Pods in namespace a"),
        "{text}"
    );
}

/// Container mode: Pods that exist already (a `kubectl get -o yaml`) are told apart by their
/// injection record, and the update strategy says what happens to the drifted ones.
#[test]
fn existing_pods_of_a_container_mode_policy_show_their_drift() {
    let policy = |strategy: &str| {
        format!(
            r#"
apiVersion: sidecars.dev/v1alpha1
kind: SidecarPolicy
metadata: {{name: mesh}}
spec:
  mode: Container
  selector: {{matchLabels: {{app: web}}}}
  template:
    spec:
      initContainers: [{{name: proxy, image: envoy, restartPolicy: Always}}]
{strategy}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-abc
  labels: {{app: web}}
  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8, uid: u1, controller: true}}]
spec: {{containers: [{{name: app, image: nginx}}]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: old
  labels: {{app: web}}
  annotations: {{sidecars.dev/injected: mesh=0000000000}}
spec: {{containers: [{{name: app, image: nginx}}]}}
"#
        )
    };
    let report = |strategy: &str| {
        let file = TempFile::new("drift.yaml", &policy(strategy));
        let out = check_files(std::slice::from_ref(&file.0), &[]);
        assert!(out.status.success(), "{}", describe(&out));
        stdout(&out)
    };
    let text = report("");
    assert!(
        text.contains("updateStrategy OnDelete (Pods running without them or with an older template's are reported in status, never evicted)"),
        "{text}"
    );
    assert!(
        text.contains("runs without the sidecars (missing): reported in status (updateStrategy OnDelete); RollingUpdate with allowEviction: true would evict it"),
        "{text}"
    );
    let text =
        report("  updateStrategy: {type: RollingUpdate, maxUnavailable: 1, allowEviction: true}");
    assert!(
        text.contains("runs without the sidecars (missing): evicted for its ReplicaSet web-5d8 to recreate with them"),
        "{text}"
    );
    assert!(
        text.contains("runs an older template's sidecars (outdated): reported, never evicted: no controller would recreate it"),
        "{text}"
    );
}
