//! What the benchmark creates: namespaces, bare main Pods pre-bound to the kwok Nodes,
//! one policy per namespace, and (for the floor) sidecar-shaped Pods rendered exactly as
//! the operator renders them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use sidecar_api::SidecarPolicy;
use sidecar_api::constants::{FIELD_MANAGER, LABEL_MANAGED_BY, MANAGED_BY_VALUE};
use sidecar_planner::{PodView, PolicyView};

use crate::observe::{ROLE_LABEL, ROLE_MAIN};

/// Label on every namespace the benchmark creates.
pub const RUN_LABEL: &str = "sidecar-bench/run";
/// Name of the policy in each namespace.
pub const POLICY: &str = "bench";
/// Pods per namespace.
pub const PER_NAMESPACE: usize = 1000;
/// Field manager of the benchmark's own creates (main Pods).
pub const BENCH_MANAGER: &str = "sidecar-bench";
/// The fake Nodes of the local control plane main Pods are bound to, round-robin.
pub const NODES: [&str; 2] = ["kwok-node-0", "kwok-node-1"];

/// `⌈n / 1000⌉` namespaces.
pub fn namespace_count(n: usize) -> usize {
    n.div_ceil(PER_NAMESPACE).max(1)
}

/// Creates `count` namespaces `<prefix>-<i>-<random>` and waits for each one's
/// `default` ServiceAccount (admission refuses Pods before it exists).
pub async fn create_namespaces(
    client: &Client,
    prefix: &str,
    count: usize,
    run_id: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut names = Vec::new();
    for i in 0..count {
        let suffix: u32 = rand::random();
        let name = format!("{prefix}-{i}-{:06x}", suffix & 0xff_ffff);
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {RUN_LABEL: run_id}}
        }))?;
        api.create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        names.push(name);
    }
    let deadline = Instant::now() + timeout;
    for name in &names {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        while sas.get_opt("default").await?.is_none() {
            if Instant::now() > deadline {
                bail!("timed out waiting for ServiceAccount {name}/default");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(names)
}

/// Deletes every Pod of the namespaces (grace period 0: there is no kubelet to wait
/// for), then the namespaces, and waits until they are gone, so the next round starts
/// on a quiet cluster.
///
/// The Pod deletion is a shortcut, not a requirement: a collection of thousands of
/// Pods can outlast the API server's request timeout (the server keeps deleting), and
/// the namespace controller deletes whatever is left; so its failures are only reported.
pub async fn delete_namespaces(
    client: &Client,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let dp = DeleteParams::default().grace_period(0);
    let lp = ListParams::default();
    for ns in names {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let call = pods.delete_collection(&dp, &lp);
        match tokio::time::timeout(Duration::from_secs(90), call).await {
            Ok(Ok(_)) => {}
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
            Ok(Err(e)) => crate::say(&format!(
                "  deleting the Pods of {ns} at once failed ({e}); the namespace controller will"
            )),
            Err(_) => crate::say(&format!(
                "  deleting the Pods of {ns} at once takes over 90 s; leaving it to the server"
            )),
        }
    }
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in names {
        match api.delete(ns, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting namespace {ns}")),
        }
    }
    let deadline = Instant::now() + timeout;
    for ns in names {
        while api.get_opt(ns).await?.is_some() {
            if Instant::now() > deadline {
                bail!("namespace {ns} still exists after {}s", timeout.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Deletes every sidecar (label `app.kubernetes.io/managed-by=sidecar-operator`) of the
/// namespaces, grace period 0.
pub async fn delete_sidecars(client: &Client, names: &[String]) -> anyhow::Result<()> {
    let dp = DeleteParams::default().grace_period(0);
    let lp = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"));
    for ns in names {
        Api::<Pod>::namespaced(client.clone(), ns)
            .delete_collection(&dp, &lp)
            .await
            .with_context(|| format!("deleting the sidecars of {ns}"))?;
    }
    Ok(())
}

/// The labels of every main Pod (the policies select them).
pub fn main_labels() -> serde_json::Value {
    json!({"app": "bench-main", ROLE_LABEL: ROLE_MAIN})
}

/// The `n` main Pods, spread over `namespaces` (1000 each), bare, with `spec.nodeName`
/// set round-robin to the kwok Nodes (so the scheduler is not in their path).
pub fn main_pods(n: usize, namespaces: &[String]) -> Vec<Pod> {
    (0..n)
        .map(|i| {
            let ns = &namespaces[(i / PER_NAMESPACE).min(namespaces.len() - 1)];
            serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": format!("main-{i:05}"),
                    "namespace": ns,
                    "labels": main_labels(),
                },
                "spec": {
                    "nodeName": NODES[i % NODES.len()],
                    "containers": [{"name": "main", "image": "busybox:1.36"}],
                },
            }))
            .expect("static Pod JSON")
        })
        .collect()
}

/// The policy of every namespace: selects the main Pods, one `busybox` sidecar with an
/// env var `REVISION` (changed by the rollout), `SameNode`, `RollingUpdate` with
/// `max_unavailable`.
pub fn policy(ns: &str, revision: u32, max_unavailable: &str) -> SidecarPolicy {
    let spec = serde_json::from_value(json!({
        "selector": {"matchLabels": {"app": "bench-main"}},
        "template": {
            "metadata": {"labels": {"team": "obs"}},
            "spec": {"containers": [container(revision)]},
        },
        "placement": "SameNode",
        "updateStrategy": {"type": "RollingUpdate", "maxUnavailable": max_unavailable},
    }))
    .expect("static SidecarPolicy spec JSON");
    let mut p = SidecarPolicy::new(POLICY, spec);
    p.metadata.namespace = Some(ns.to_string());
    p
}

fn container(revision: u32) -> serde_json::Value {
    json!({
        "name": "agent",
        "image": "busybox:1.36",
        "args": ["sh", "-c", "echo shipping logs of $(MAIN_POD_NAME); sleep 1d"],
        "env": [{"name": "REVISION", "value": revision.to_string()}],
    })
}

/// Creates the policy in every namespace.
pub async fn create_policies(
    client: &Client,
    namespaces: &[String],
    max_unavailable: &str,
) -> anyhow::Result<()> {
    for ns in namespaces {
        Api::<SidecarPolicy>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &policy(ns, 1, max_unavailable))
            .await
            .with_context(|| format!("creating the policy in {ns}"))?;
    }
    Ok(())
}

/// Changes the sidecar template of every policy (`REVISION` = `revision`).
pub async fn change_template(
    client: &Client,
    namespaces: &[String],
    revision: u32,
) -> anyhow::Result<()> {
    let patch = json!({"spec": {"template": {"spec": {"containers": [container(revision)]}}}});
    for ns in namespaces {
        Api::<SidecarPolicy>::namespaced(client.clone(), ns)
            .patch(POLICY, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("changing the template of {ns}/{POLICY}"))?;
    }
    Ok(())
}

/// The template hash of the policy at `revision` (what up-to-date sidecars carry).
pub fn template_hash(revision: u32, max_unavailable: &str) -> String {
    sidecar_api::template_hash(&policy("x", revision, max_unavailable).spec)
}

/// The sidecar-shaped Pods of the floor: [`sidecar_planner::render`] of each created main
/// Pod, exactly what the operator would create.
pub fn render_sidecars(mains: &[Pod], max_unavailable: &str) -> Vec<Pod> {
    mains
        .iter()
        .filter_map(|m| {
            let ns = m.namespace()?;
            let mut p = policy(&ns, 1, max_unavailable);
            p.metadata.uid = Some("floor".into());
            let view = PolicyView::new(Arc::new(p));
            Some(sidecar_planner::render(&PodView::from_pod(m)?, &view))
        })
        .collect()
}

/// Creates `pods` (each in its own namespace) with at most `concurrency` requests in
/// flight, like the operator's workers; returns the created Pods.
pub async fn create_pods(
    client: &Client,
    pods: Vec<Pod>,
    concurrency: usize,
    field_manager: &str,
) -> anyhow::Result<Vec<Pod>> {
    let pp = PostParams {
        field_manager: Some(field_manager.to_string()),
        ..PostParams::default()
    };
    futures::stream::iter(pods)
        .map(|p| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
            let pp = pp.clone();
            async move {
                api.create(&pp, &p)
                    .await
                    .with_context(|| format!("creating Pod {}", p.name_any()))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Field manager of the floor's sidecar creates: the operator's, so the requests are the same.
pub const SIDECAR_MANAGER: &str = FIELD_MANAGER;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_over_namespaces_and_nodes() {
        let nss: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        assert_eq!(namespace_count(2500), 3);
        assert_eq!(namespace_count(1000), 1);
        assert_eq!(namespace_count(100), 1);
        let pods = main_pods(2500, &nss);
        assert_eq!(pods.len(), 2500);
        let count = |ns: &str| {
            pods.iter()
                .filter(|p| p.namespace().as_deref() == Some(ns))
                .count()
        };
        assert_eq!((count("a"), count("b"), count("c")), (1000, 1000, 500));
        let node = |i: usize| pods[i].spec.as_ref().and_then(|s| s.node_name.clone());
        assert_eq!(node(0).as_deref(), Some("kwok-node-0"));
        assert_eq!(node(1).as_deref(), Some("kwok-node-1"));
    }

    #[test]
    fn rollout_changes_the_hash() {
        assert_ne!(template_hash(1, "100%"), template_hash(2, "100%"));
        assert_eq!(template_hash(1, "100%"), template_hash(1, "100%"));
    }

    #[test]
    fn floor_sidecars_are_the_operators() {
        let mut m = main_pods(1, &["ns".to_string()]).remove(0);
        m.metadata.uid = Some("u-1".into());
        let s = render_sidecars(&[m], "100%").remove(0);
        assert_eq!(s.name_any(), "main-00000-bench");
        assert_eq!(s.namespace().as_deref(), Some("ns"));
        assert_eq!(
            s.labels().get(LABEL_MANAGED_BY).map(String::as_str),
            Some(MANAGED_BY_VALUE)
        );
        assert_eq!(s.owner_references()[0].uid, "u-1");
    }
}
