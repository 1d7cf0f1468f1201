//! Fixtures shared by the behaviour tests in `tests/e2e` (which run against the real
//! control plane started by `sidecar-testenv`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, ResourceExt as _, WatchEvent,
    WatchParams,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sidecar_api::SidecarPolicy;
use sidecar_api::constants::{LABEL_MANAGED_BY, MANAGED_BY_VALUE};
use sidecar_testenv::{TestNamespace, install_crd, shared};

/// How long a test waits for the cluster to reach an expected state. Generous: tests
/// normally get there in seconds, but they share two cores with the control plane.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A JSON object of string `labels` (also used for annotations).
pub fn string_map(entries: &[(&str, &str)]) -> Value {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::from(*v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A minimal bare Pod (one `busybox` container) with `labels`.
pub fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": string_map(labels)},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }))
    .expect("static Pod JSON")
}

/// [`pod`] held back from scheduling by the scheduling gate `example.com/wait`, so it stays
/// Pending and unbound until the gate is removed (see [`Scene::ungate_pod`]).
pub fn gated_pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    let mut p = pod(name, labels);
    if let Some(spec) = p.spec.as_mut() {
        spec.scheduling_gates = Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
            name: "example.com/wait".into(),
        }]);
    }
    p
}

/// The Pod template shared by [`deployment`] and [`job`].
fn pod_template(labels: &[(&str, &str)], annotations: &[(&str, &str)], restart: &str) -> Value {
    json!({
        "metadata": {"labels": string_map(labels), "annotations": string_map(annotations)},
        "spec": {
            "restartPolicy": restart,
            "containers": [{"name": "main", "image": "busybox:1.36"}],
        },
    })
}

/// A Deployment of `replicas` minimal Pods labelled `labels` (which are also its selector).
pub fn deployment(name: &str, replicas: i32, labels: &[(&str, &str)]) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": string_map(labels)},
            "template": pod_template(labels, &[], "Always"),
        },
    }))
    .expect("static Deployment JSON")
}

/// A one-Pod Job (no retries) whose Pod is labelled `labels` and annotated `annotations`
/// (e.g. kwok's `pod-complete.stage.kwok.x-k8s.io/delay`).
pub fn job(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": pod_template(labels, annotations, "Never"),
        },
    }))
    .expect("static Job JSON")
}

/// A `SidecarPolicy` selecting `matchLabels: selector`, whose sidecars are labelled
/// `template_labels` and run one `busybox` container `agent` (with one env var of its own,
/// `LEVEL=info`, which must come after the injected `MAIN_POD_*`), placed `placement`
/// (`SameNode` or `Any`).
pub fn policy(
    name: &str,
    selector: &[(&str, &str)],
    template_labels: &[(&str, &str)],
    placement: &str,
) -> SidecarPolicy {
    let spec = serde_json::from_value(json!({
        "selector": {"matchLabels": string_map(selector)},
        "template": {
            "metadata": {"labels": string_map(template_labels)},
            "spec": {"containers": [{
                "name": "agent",
                "image": "busybox:1.36",
                "env": [{"name": "LEVEL", "value": "info"}],
            }]},
        },
        "placement": placement,
    }))
    .expect("static SidecarPolicy spec JSON");
    SidecarPolicy::new(name, spec)
}

/// True when the Pod's `Ready` condition is `True`.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node a Pod is bound to, if any.
pub fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// The Pod's phase (`Pending`, `Running`, `Succeeded`, ...), if reported.
pub fn phase_of(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// The Pod's uid (every Pod read from the server has one).
pub fn uid_of(p: &Pod) -> String {
    p.uid().unwrap_or_default()
}

/// True for a Pod the operator made (label `app.kubernetes.io/managed-by=sidecar-operator`).
pub fn is_sidecar(p: &Pod) -> bool {
    p.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

/// The sidecars among `pods`, by name.
pub fn sidecars(pods: &[Pod]) -> BTreeMap<String, &Pod> {
    pods.iter()
        .filter(|p| is_sidecar(p))
        .map(|p| (p.name_any(), p))
        .collect()
}

/// The names of the sidecars among `pods`.
pub fn sidecar_names(pods: &[Pod]) -> BTreeSet<String> {
    sidecars(pods).into_keys().collect()
}

/// The Pod named `name` among `pods`.
pub fn find<'a>(pods: &'a [Pod], name: &str) -> Option<&'a Pod> {
    pods.iter().find(|p| p.name_any() == name)
}

/// One line per Pod: name, phase, readiness, node, controlling owner, uid, deletion, labels
/// and annotations. Printed when a test fails.
pub fn describe_pods(pods: &[Pod]) -> String {
    let mut out = format!("{} Pods:\n", pods.len());
    for p in pods {
        let owner = p
            .owner_references()
            .iter()
            .map(|o| format!("{}/{}({})", o.kind, o.name, o.uid))
            .collect::<Vec<_>>()
            .join(",");
        let deleting = if p.metadata.deletion_timestamp.is_some() {
            " DELETING"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} phase={} ready={} node={} owner=[{owner}] uid={}{deleting} labels={:?} annotations={:?}",
            p.name_any(),
            phase_of(p).unwrap_or("-"),
            pod_ready(p),
            node_of(p).unwrap_or("-"),
            uid_of(p),
            p.labels(),
            p.annotations(),
        );
    }
    out
}

/// Polls `probe` every 200 ms until it yields `Some`; `None` after `timeout`.
pub async fn poll<T>(timeout: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `probe` every 200 ms until it yields `Some`, or panics after `timeout` naming `what`.
pub async fn wait_until<T>(
    timeout: Duration,
    what: &str,
    probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    match poll(timeout, probe).await {
        Some(v) => v,
        None => panic!("timed out after {}s waiting for {what}", timeout.as_secs()),
    }
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
        let client = shared().client().await;
        install_crd(&client, &sidecar_api::crd())
            .await
            .expect("install the SidecarPolicy CRD");
        let ns = TestNamespace::create(&client, prefix).await;
        Scene {
            pods: Api::namespaced(client.clone(), ns.name()),
            policies: Api::namespaced(client.clone(), ns.name()),
            client,
            ns,
        }
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

    /// JSON-merge-patches the object `name`.
    pub async fn merge<K>(&self, name: &str, patch: Value) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + DeserializeOwned,
        <K as kube::Resource>::DynamicType: Default,
    {
        self.api::<K>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patching {name} with {patch}: {e}"))
    }

    /// Deletes the object `name` (background propagation, default grace period).
    pub async fn delete<K>(&self, name: &str)
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + DeserializeOwned,
        <K as kube::Resource>::DynamicType: Default,
    {
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

/// What a [`PodRecorder`] saw happen to a Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The Pod was created.
    Added,
    /// The Pod was removed from the API.
    Deleted,
}

#[derive(Debug, Default)]
struct Journal {
    events: Vec<(Seen, Pod)>,
    error: Option<String>,
}

/// Records, from a watch that starts at the resourceVersion of a list taken when it is
/// created, every Pod added to or deleted from a namespace. Unlike polling, it cannot miss
/// a Pod that exists only briefly (e.g. a sidecar created and deleted again).
pub struct PodRecorder {
    journal: Arc<Mutex<Journal>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodRecorder {
    async fn start(pods: Api<Pod>) -> PodRecorder {
        let mut rv = pods
            .list_metadata(&ListParams::default().limit(1))
            .await
            .expect("list Pods for a resourceVersion")
            .metadata
            .resource_version
            .expect("list resourceVersion");
        let journal = Arc::new(Mutex::new(Journal::default()));
        let sink = journal.clone();
        let task = tokio::spawn(async move {
            let fail = |e: String| sink.lock().expect("journal").error = Some(e);
            loop {
                let wp = WatchParams::default().timeout(120);
                let stream = match pods.watch(&wp, &rv).await {
                    Ok(s) => s,
                    Err(e) => return fail(format!("watch from {rv}: {e}")),
                };
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let (seen, pod) = match event {
                        Ok(WatchEvent::Added(p)) => (Some(Seen::Added), p),
                        Ok(WatchEvent::Deleted(p)) => (Some(Seen::Deleted), p),
                        Ok(WatchEvent::Modified(p)) => (None, p),
                        Ok(WatchEvent::Bookmark(b)) => {
                            rv = b.metadata.resource_version;
                            continue;
                        }
                        Ok(WatchEvent::Error(status)) => return fail(format!("watch: {status:?}")),
                        Err(e) => return fail(format!("watch: {e}")),
                    };
                    rv = pod.resource_version().unwrap_or_else(|| rv.clone());
                    if let Some(seen) = seen {
                        sink.lock().expect("journal").events.push((seen, pod));
                    }
                }
            }
        });
        PodRecorder { journal, task }
    }

    /// The Pods seen `seen` so far, in order; panics if the watch failed (the record would
    /// be incomplete).
    pub fn seen(&self, seen: Seen) -> Vec<Pod> {
        let journal = self.journal.lock().expect("journal");
        if let Some(e) = &journal.error {
            panic!("the Pod recorder's watch failed, its record is incomplete: {e}");
        }
        journal
            .events
            .iter()
            .filter(|(s, _)| *s == seen)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Every add and delete seen so far, in order; panics if the watch failed.
    pub fn journal(&self) -> Vec<(Seen, Pod)> {
        let journal = self.journal.lock().expect("journal");
        if let Some(e) = &journal.error {
            panic!("the Pod recorder's watch failed, its record is incomplete: {e}");
        }
        journal.events.clone()
    }

    /// The uids of the Pods named `name` created so far, in order.
    pub fn added_uids(&self, name: &str) -> Vec<String> {
        self.seen(Seen::Added)
            .iter()
            .filter(|p| p.name_any() == name)
            .map(uid_of)
            .collect()
    }
}
