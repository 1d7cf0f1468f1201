//! Per-test namespaces and CRD installation.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};

use crate::Error;

/// Label put on every test namespace, with the test process id as value.
pub const RUN_LABEL: &str = "sidecar-testenv/run";

/// A namespace with a random suffix, ready for Pods (its `default` ServiceAccount
/// exists). Deleted (without waiting) when dropped, unless `SIDECAR_KEEP_NAMESPACES` is set.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>`, labelled with [`RUN_LABEL`], and waits for its
    /// `default` ServiceAccount (admission refuses Pods until it exists). Panics on failure.
    pub async fn create(client: &Client, prefix: &str) -> TestNamespace {
        Self::create_labeled(client, prefix, &[]).await
    }

    /// Like [`TestNamespace::create`], with extra labels (e.g. Pod Security enforcement).
    pub async fn create_labeled(
        client: &Client,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> TestNamespace {
        match Self::try_create(client, prefix, labels).await {
            Ok(ns) => ns,
            Err(e) => panic!("sidecar-testenv: creating a test namespace: {e}"),
        }
    }

    /// Fallible form of [`TestNamespace::create_labeled`].
    pub async fn try_create(
        client: &Client,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> Result<TestNamespace, Error> {
        let suffix: u32 = rand::random();
        let prefix: String = prefix
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(50)
            .collect();
        let name = format!("{prefix}-{:06x}", suffix & 0xff_ffff);
        let mut ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {RUN_LABEL: std::process::id().to_string()}}
        }))
        .expect("static JSON");
        for (k, v) in labels {
            ns.labels_mut().insert((*k).into(), (*v).into());
        }
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(Error::kube(format!("creating namespace {name}")))?;
        let ns = TestNamespace { name };
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match sas.get_opt("default").await {
                Ok(Some(_)) => return Ok(ns),
                Ok(None) => {}
                Err(e) => return Err(Error::kube("waiting for the default ServiceAccount")(e)),
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("ServiceAccount {}/default", ns.name),
                    secs: 60,
                    detail: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("SIDECAR_KEEP_NAMESPACES").is_some() {
            eprintln!("[testenv] keeping namespace {}", self.name);
            return;
        }
        // Drop cannot await, and the test's runtime may be shutting down: use kubectl.
        if let Some(cp) = crate::shared::kubectl_for_cleanup() {
            let _ = cp
                .kubectl()
                .args(["delete", "namespace", &self.name, "--wait=false"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Installs (server-side apply, forced, field manager `sidecar-testenv`) a CRD and waits
/// until it is `Established`. Idempotent.
pub async fn install_crd(client: &Client, crd: &CustomResourceDefinition) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    let mut body = crd.clone();
    body.metadata.managed_fields = None;
    body.metadata.resource_version = None;
    api.patch(
        &name,
        &PatchParams::apply("sidecar-testenv").force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(format!("applying CRD {name}")))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = api
            .get(&name)
            .await
            .map_err(Error::kube(format!("reading CRD {name}")))?;
        let established = got
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("CRD {name} Established"),
                secs: 30,
                detail: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
