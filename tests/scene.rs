//! One test's world: an admin client, a fresh namespace with the CRD installed, an operator
//! instance watching only that namespace, and waits that dump the namespace on failure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sidecar_api::SidecarPolicy;
use sidecar_controller::{Operator, OperatorConfig};
use sidecar_testenv::{TestNamespace, install_crd, shared};

use crate::{PodRecorder, TIMEOUT, describe_pods, pod, poll};

/// A namespaced kind the scene can read and write.
pub trait Namespaced:
    kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + DeserializeOwned
{
}

impl<K> Namespaced for K where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
{
}

/// One test's world: an admin client, a fresh namespace (with the `SidecarPolicy` CRD
/// installed), and typed APIs for its Pods and policies.
pub struct Scene {
    /// Admin client.
    pub client: Client,
    /// The test's namespace (deleted when the scene is dropped).
    pub ns: TestNamespace,
    /// Pods of the namespace.
    pub pods: Api<Pod>,
    /// SidecarPolicies of the namespace.
    pub policies: Api<SidecarPolicy>,
}

impl Scene {
    /// Installs the CRD (idempotent) and creates a namespace `<prefix>-<random>`.
    pub async fn new(prefix: &str) -> Scene {
        Scene::labeled(prefix, &[]).await
    }

    /// [`Scene::new`] whose namespace enforces Pod Security `restricted`.
    pub async fn restricted(prefix: &str) -> Scene {
        Scene::labeled(
            prefix,
            &[("pod-security.kubernetes.io/enforce", "restricted")],
        )
        .await
    }

    /// [`Scene::new`] with a namespace labelled `labels`.
    pub async fn labeled(prefix: &str, labels: &[(&str, &str)]) -> Scene {
        let client = shared().client().await;
        install_crd(&client, &sidecar_api::crd())
            .await
            .expect("install the SidecarPolicy CRD");
        let ns = TestNamespace::create_labeled(&client, prefix, labels).await;
        Scene {
            pods: Api::namespaced(client.clone(), ns.name()),
            policies: Api::namespaced(client.clone(), ns.name()),
            client,
            ns,
        }
    }

    /// A scene of namespace `ns` of another control plane than the shared one (`client`'s).
    pub fn in_namespace(client: &Client, ns: TestNamespace) -> Scene {
        Scene {
            pods: Api::namespaced(client.clone(), ns.name()),
            policies: Api::namespaced(client.clone(), ns.name()),
            client: client.clone(),
            ns,
        }
    }

    /// Starts an operator instance (in this process) that watches only the scene's
    /// namespace.
    pub async fn start_operator(&self) -> Operator {
        self.start_operator_with(|_| {}).await
    }

    /// [`Scene::start_operator`] with its configuration changed by `tweak` first.
    pub async fn start_operator_with(&self, tweak: impl FnOnce(&mut OperatorConfig)) -> Operator {
        operator_logs();
        let config = shared().kube_config().await;
        let mut opts = OperatorConfig::namespace(self.name());
        tweak(&mut opts);
        Operator::start(config, opts)
            .await
            .expect("operator starts")
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// An API for another namespaced kind in the scene's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), self.ns.name())
    }

    /// Creates `obj` in the scene's namespace and returns it as the server stored it.
    pub async fn create<K>(&self, obj: &K) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + Serialize
            + DeserializeOwned,
        <K as kube::Resource>::DynamicType: Default,
    {
        self.api::<K>()
            .create(&PostParams::default(), obj)
            .await
            .unwrap_or_else(|e| panic!("creating {}: {e}", obj.name_any()))
    }

    /// Creates the fixture [`policy`](crate::policy) `name` (see there for the arguments).
    pub async fn create_policy(
        &self,
        name: &str,
        selector: &[(&str, &str)],
        template_labels: &[(&str, &str)],
        placement: &str,
    ) -> SidecarPolicy {
        self.create(&crate::policy(name, selector, template_labels, placement))
            .await
    }

    /// JSON-merge-patches the object `name`.
    pub async fn merge<K: Namespaced>(&self, name: &str, patch: Value) -> K {
        self.api::<K>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patching {name} with {patch}: {e}"))
    }

    /// Deletes the object `name` (background propagation, default grace period).
    pub async fn delete<K: Namespaced>(&self, name: &str) {
        self.api::<K>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {name}: {e}"));
    }

    /// Removes the scheduling gates of Pod `name`, so the scheduler binds it.
    pub async fn ungate_pod(&self, name: &str) {
        self.merge::<Pod>(name, json!({"spec": {"schedulingGates": null}}))
            .await;
    }

    /// Every Pod of the namespace, sorted by name.
    pub async fn list_pods(&self) -> Vec<Pod> {
        let mut pods = self
            .pods
            .list(&ListParams::default())
            .await
            .expect("list Pods")
            .items;
        pods.sort_by_key(|p| p.name_any());
        pods
    }

    /// [`describe_pods`] of the namespace now.
    pub async fn dump(&self) -> String {
        format!(
            "namespace {}: {}",
            self.name(),
            describe_pods(&self.list_pods().await)
        )
    }

    /// Lists the namespace's Pods every 200 ms until `probe` yields `Some`; after `timeout`
    /// panics naming `what`, with a dump of the Pods.
    pub async fn wait_pods_within<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut(&[Pod]) -> Option<T>,
    ) -> T {
        let found = poll(timeout, async || probe(&self.list_pods().await)).await;
        match found {
            Some(v) => v,
            None => panic!(
                "timed out after {}s waiting for {what}\n{}",
                timeout.as_secs(),
                self.dump().await
            ),
        }
    }

    /// [`Scene::wait_pods_within`] with the default [`TIMEOUT`].
    pub async fn wait_pods<T>(&self, what: &str, probe: impl FnMut(&[Pod]) -> Option<T>) -> T {
        self.wait_pods_within(TIMEOUT, what, probe).await
    }

    /// Checks `holds` on the namespace's Pods every 200 ms for `period`; panics naming
    /// `what`, with a dump of the Pods, the first time it does not hold. A "nothing happens"
    /// check: keep `period` short (≤ 5 s).
    pub async fn hold_pods(
        &self,
        period: Duration,
        what: &str,
        mut holds: impl FnMut(&[Pod]) -> bool,
    ) {
        let deadline = Instant::now() + period;
        loop {
            let pods = self.list_pods().await;
            assert!(
                holds(&pods),
                "expected for {}s: {what}; it stopped holding\n{}",
                period.as_secs(),
                describe_pods(&pods)
            );
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The resourceVersion of every Pod and policy of the namespace (`pod/<name>`,
    /// `policy/<name>`): equal fingerprints mean nobody wrote anything in between.
    pub async fn fingerprint(&self) -> BTreeMap<String, String> {
        let pods = self.list_pods().await;
        let policies = self
            .policies
            .list(&ListParams::default())
            .await
            .expect("list policies")
            .items;
        let pods = pods
            .iter()
            .map(|p| (format!("pod/{}", p.name_any()), p.resource_version()));
        let policies = policies
            .iter()
            .map(|p| (format!("policy/{}", p.name_any()), p.resource_version()));
        pods.chain(policies)
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect()
    }

    /// Waits until nothing in the namespace (Pods, policies) changes for 2 s in a row,
    /// e.g. for kwok's status updates and the operator's status writes to die down.
    pub async fn wait_settled(&self) {
        let mut last = (self.fingerprint().await, Instant::now());
        let settled = poll(TIMEOUT, async || {
            let now = self.fingerprint().await;
            if now != last.0 {
                last = (now, Instant::now());
            }
            (last.1.elapsed() >= Duration::from_secs(2)).then_some(())
        })
        .await;
        if settled.is_none() {
            panic!(
                "namespace {} kept changing for {}s\n{}",
                self.name(),
                TIMEOUT.as_secs(),
                self.dump().await
            );
        }
    }

    /// Starts recording the Pods added and deleted in the namespace from now on.
    pub async fn record(&self) -> PodRecorder {
        PodRecorder::start(self.pods.clone()).await
    }
}

/// Creates `pods`, 8 at a time.
pub async fn create_all(scene: &Scene, pods: Vec<Pod>) {
    futures::stream::iter(pods)
        .map(|p| {
            let api = scene.pods.clone();
            async move { api.create(&PostParams::default(), &p).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await
        .expect("create main Pods");
}

/// Creates bare main Pods `names` labelled `labels`, 8 at a time.
pub async fn create_pods(scene: &Scene, names: &[impl AsRef<str>], labels: &[(&str, &str)]) {
    create_all(
        scene,
        names.iter().map(|n| pod(n.as_ref(), labels)).collect(),
    )
    .await;
}

/// With `SIDECAR_TEST_LOG` set (an env-filter, e.g. `sidecar_controller=info`), the
/// in-process operators log to stderr (shown for failed tests, or with `--nocapture`).
pub fn operator_logs() {
    if let Ok(filter) = std::env::var("SIDECAR_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}
