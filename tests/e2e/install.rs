//! The shipped Deployment as a cluster admits it: its Pods pass Pod Security `restricted`,
//! spread over the nodes, and the PodDisruptionBudget covers them.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::{Value, json};
use sidecar_e2e::{Scene, TIMEOUT, repo_path, wait_until, yaml_file_documents};

/// The documents of deploy/30-deployment.yaml of `kind`, moved into namespace `ns`.
fn shipped(kind: &str, ns: &str) -> Value {
    let mut doc = yaml_file_documents(&repo_path("deploy/30-deployment.yaml"))
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("deploy/30-deployment.yaml ships a {kind}"));
    doc["metadata"]["namespace"] = json!(ns);
    doc
}

#[tokio::test]
async fn the_shipped_deployment_runs_under_the_restricted_pod_security_profile() {
    let scene = Scene::restricted("install").await;
    let ns = scene.name().to_string();
    scene
        .create(
            &serde_json::from_value::<ServiceAccount>(json!({
                "metadata": {"name": "sidecar-operator"}
            }))
            .expect("ServiceAccount"),
        )
        .await;
    let deployment: Deployment =
        serde_json::from_value(shipped("Deployment", &ns)).expect("the shipped Deployment");
    let pdb: PodDisruptionBudget =
        serde_json::from_value(shipped("PodDisruptionBudget", &ns)).expect("the shipped PDB");
    scene.create(&deployment).await;
    scene.create(&pdb).await;

    // Pod Security `restricted` would refuse the ReplicaSet's Pods (FailedCreate): both exist.
    let pods = scene
        .wait_pods(
            "both replicas admitted under restricted and Ready",
            |pods| {
                let ready = pods.iter().filter(|p| sidecar_e2e::pod_ready(p)).count();
                (pods.len() == 2 && ready == 2).then(|| pods.to_vec())
            },
        )
        .await;
    let nodes: std::collections::BTreeSet<Option<String>> = pods
        .iter()
        .map(|p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    assert_eq!(
        nodes.len(),
        2,
        "the replicas spread over the two nodes: {nodes:?}"
    );
    let pdbs = scene.api::<PodDisruptionBudget>();
    wait_until(
        TIMEOUT,
        "the PDB to count both replicas healthy",
        async || {
            let status = pdbs.get("sidecar-operator").await.ok()?.status?;
            (status.current_healthy == Some(2) && status.disruptions_allowed == Some(1))
                .then_some(())
        },
    )
    .await;
}
