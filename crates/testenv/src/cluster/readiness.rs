//! Readiness of a starting control plane, checked component by component through their
//! work: etcd's health, the API server's `/readyz`, kwok Nodes Ready, the controller-manager
//! creating the default ServiceAccount and its garbage collector deleting a dependent.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, ServiceAccount};
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::{Api, Client};

use crate::{Error, kwok};

use super::starter::{Starter, http_get_plain};

/// Waits until etcd on `port` reports itself healthy.
pub(super) async fn etcd(st: &mut Starter, port: u16) -> Result<(), Error> {
    st.wait("etcd /health", Duration::from_secs(30), || async move {
        Ok(http_get_plain(port, "/health")
            .await?
            .contains("\"health\":\"true\""))
    })
    .await
}

/// Waits until the API server answers `/readyz` with `ok`.
pub(super) async fn apiserver(st: &mut Starter, client: &Client) -> Result<(), Error> {
    st.wait(
        "kube-apiserver /readyz",
        Duration::from_secs(120),
        move || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                match client.request_text(req).await {
                    Ok(body) => Ok(body.trim() == "ok"),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await
}

/// Creates the fake Nodes `kwok-node-0…` (`count`, at least 1) and waits until kwok has
/// made them Ready.
pub(super) async fn nodes(st: &mut Starter, client: &Client, count: usize) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = (0..count.max(1))
        .map(|i| format!("kwok-node-{i}"))
        .collect();
    for name in &names {
        match nodes
            .create(&PostParams::default(), &kwok::fake_node(name))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("creating Node {name}"))(e)),
        }
    }
    let n = names.len();
    st.wait(
        &format!("{n} kwok Node(s) Ready"),
        Duration::from_secs(60),
        move || {
            let nodes = nodes.clone();
            async move {
                let list = nodes
                    .list(&Default::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let ready = list.items.iter().filter(|n| node_ready(n)).count();
                Ok(ready >= n)
            }
        },
    )
    .await
}

/// Waits for the ServiceAccount `default/default`: proves the controller-manager works.
pub(super) async fn default_service_account(
    st: &mut Starter,
    client: &Client,
) -> Result<(), Error> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    st.wait(
        "ServiceAccount default/default",
        Duration::from_secs(90),
        || {
            let sas = sas.clone();
            async move {
                sas.get_opt("default")
                    .await
                    .map(|o| o.is_some())
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates an owner ConfigMap and a dependent that names it in `ownerReferences`,
/// deletes the owner, and waits for the garbage collector to delete the dependent.
pub(super) async fn gc_canary(st: &mut Starter, client: &Client) -> Result<(), Error> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "testenv-gc-canary-owner"}
    }))
    .expect("static JSON");
    let owner = cms
        .create(&PostParams::default(), &owner)
        .await
        .map_err(Error::kube("creating GC canary owner"))?;
    let dependent: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "testenv-gc-canary-dependent",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap",
                "name": owner.metadata.name, "uid": owner.metadata.uid,
            }],
        }
    }))
    .expect("static JSON");
    cms.create(&PostParams::default(), &dependent)
        .await
        .map_err(Error::kube("creating GC canary dependent"))?;
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    cms.delete("testenv-gc-canary-owner", &dp)
        .await
        .map_err(Error::kube("deleting GC canary owner"))?;
    st.wait(
        "garbage collector (canary dependent deleted)",
        Duration::from_secs(120),
        || {
            let cms = cms.clone();
            async move {
                cms.get_opt("testenv-gc-canary-dependent")
                    .await
                    .map(|o| o.is_none())
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await
}
