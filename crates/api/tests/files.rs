//! `examples/` and `tests/bad-policies/` are well-formed. (That the API server accepts every
//! example and refuses every bad policy with its expected message is the e2e test's job.)

use sidecar_api::{SidecarPolicy, template_hash};

mod support;
use support::{documents, repo_dir, yaml_files};

#[test]
fn examples_parse_and_each_pairs_a_policy_with_its_workload() {
    let files = yaml_files(&repo_dir("examples"));
    assert!(files.len() >= 3, "expected at least three examples");
    let mut placements = Vec::new();
    for file in &files {
        let docs = documents(file);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert!(
            kinds.contains(&"SidecarPolicy"),
            "{}: no SidecarPolicy",
            file.display()
        );
        assert!(
            kinds
                .iter()
                .any(|k| ["Deployment", "Job", "StatefulSet", "DaemonSet"].contains(k)),
            "{}: no workload for the policy",
            file.display()
        );
        for doc in docs {
            assert!(
                doc["metadata"]["namespace"].is_null(),
                "{}: examples are namespace-free",
                file.display()
            );
            if doc["kind"] != "SidecarPolicy" {
                continue;
            }
            let policy: SidecarPolicy = serde_json::from_value(doc)
                .unwrap_or_else(|e| panic!("{}: not a SidecarPolicy: {e}", file.display()));
            assert_eq!(template_hash(&policy.spec).len(), 10);
            placements.push(policy.spec.placement);
        }
    }
    assert!(placements.contains(&sidecar_api::Placement::SameNode));
    assert!(placements.contains(&sidecar_api::Placement::Any));
}

#[test]
fn bad_policies_declare_their_expected_error() {
    let files = yaml_files(&repo_dir("tests/bad-policies"));
    assert!(
        files.len() >= 15,
        "expected at least 15 bad policies, found {}",
        files.len()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let expect = first.strip_prefix("# expect: ").unwrap_or_default();
        assert!(
            !expect.trim().is_empty(),
            "{}: first line must be `# expect: <fragment>`",
            file.display()
        );
        let docs = documents(&file);
        assert_eq!(docs.len(), 1, "{}: one policy per file", file.display());
        assert_eq!(docs[0]["kind"], "SidecarPolicy", "{}", file.display());
        assert_eq!(
            docs[0]["apiVersion"],
            "sidecars.dev/v1alpha1",
            "{}",
            file.display()
        );
        assert!(
            docs[0]["metadata"]["name"].is_string(),
            "{}: needs a name",
            file.display()
        );
    }
}
