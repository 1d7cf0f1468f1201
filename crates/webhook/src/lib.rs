//! Container mode's mutating admission webhook, served by every operator replica.
//!
//! - [`index`]: the Container-mode policies, kept by a watch (an admission reads memory
//!   only);
//! - [`review`]: one admission review answered (decode, [`sidecar_planner::inject`],
//!   encode the difference as a JSON patch), no I/O;
//! - [`tls`]: HTTPS whose certificate can change under a running server;
//! - [`limits`]: what one client may cost the server (timeouts, caps);
//! - [`certs`]: the operator's own CA and serving certificate, planned and issued;
//! - [`source`]: where the certificate comes from (the managed Secret, or files);
//! - [`registration`]: the MutatingWebhookConfiguration and its `caBundle`;
//! - [`metrics`]: admissions by result, latency, certificate expiry.

pub mod certs;
pub mod index;
pub mod limits;
pub mod metrics;
pub mod registration;
pub mod review;
mod server;
pub mod source;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::runtime::events::Reporter;
use sidecar_api::SidecarPolicy;
use tokio::task::JoinHandle;

pub use index::PolicyIndex;
pub use limits::ServerLimits;
pub use metrics::WebhookMetrics;
pub use source::{CertSource, Managed};
pub use tls::CertStore;

/// What can go wrong starting or running the webhook.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Certificate(String),
    #[error("binding the webhook address {0}: {1}")]
    Bind(SocketAddr, String),
    #[error("{0}: {1}")]
    Kube(&'static str, #[source] kube::Error),
    #[error("{0}")]
    NotInstalled(String),
    #[error("encoding: {0}")]
    Encode(String),
    #[error("another writer changed the Secret first")]
    Conflict,
}

/// How to run the webhook.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Watch policies of this namespace only (default: all).
    pub namespace: Option<String>,
    /// Also apply the Container-mode ClusterSidecarPolicies (watching them and every
    /// namespace's labels), skipping `left_out` unless named.
    pub cluster_policies: bool,
    /// Namespaces the cluster policies skip unless they name them.
    pub left_out: Vec<String>,
    /// Where the certificate comes from.
    pub certs: CertSource,
    /// Who publishes Events (the operator's instance).
    pub reporter: Reporter,
    /// The server's timeouts and caps.
    pub limits: ServerLimits,
}

/// The address a bound listener listens on.
pub fn bound_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr, Error> {
    listener
        .local_addr()
        .map_err(|e| Error::Certificate(format!("the webhook listener has no address: {e}")))
}

/// A running webhook; stops when dropped or [`Webhook::stop`]ped.
#[derive(Debug)]
pub struct Webhook {
    addr: SocketAddr,
    index: Arc<PolicyIndex>,
    store: Arc<CertStore>,
    tasks: Vec<JoinHandle<()>>,
}

impl Webhook {
    /// Binds `addr` (`0.0.0.0:9443` in a cluster; port 0 picks a free one): bind first,
    /// then build the configuration with [`bound_addr`]'s port, then [`Webhook::start`].
    pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
        tls::bind(addr).await
    }

    /// Starts the policy watch, the certificate loop and the server on `listener`.
    /// Returns at once; [`Webhook::is_ready`] tells when it answers from a synced index
    /// with a certificate.
    pub async fn start(
        listener: tokio::net::TcpListener,
        client: kube::Client,
        config: WebhookConfig,
        metrics: Arc<WebhookMetrics>,
    ) -> Result<Webhook, Error> {
        let addr = bound_addr(&listener)?;
        let index = Arc::new(PolicyIndex::new(
            config.cluster_policies,
            config.left_out.iter().cloned().collect(),
        ));
        let store = Arc::new(CertStore::default());
        let api: Api<sidecar_controller::Lenient<SidecarPolicy>> = match &config.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let shared = server::Shared {
            index: index.clone(),
            metrics: metrics.clone(),
            refusals: tx,
        };
        let tls = tls::server_config(store.clone())?;
        let app = server::router(shared, &config.limits);
        let mut tasks = Vec::new();
        if config.cluster_policies {
            tasks.push(tokio::spawn(index::watch_clusters(
                Api::all(client.clone()),
                Api::all(client.clone()),
                index.clone(),
            )));
        } else if let Some(ns) = &config.namespace {
            // Its labels say which Pod Security level the namespace enforces.
            tasks.push(tokio::spawn(index::watch_namespace_labels(
                Api::all(client.clone()),
                ns.clone(),
                index.clone(),
            )));
        }
        tasks.extend([
            tokio::spawn(index::watch_policies(api, index.clone())),
            tokio::spawn(source::keep_current(
                client.clone(),
                config.certs,
                store.clone(),
                metrics.clone(),
            )),
            tokio::spawn(server::publish_refusals(
                client,
                config.reporter,
                index.clone(),
                rx,
                Duration::from_secs(300),
            )),
            tokio::spawn(tls::serve(listener, tls, app, config.limits, metrics)),
        ]);
        tracing::info!(%addr, "webhook listening");
        Ok(Webhook {
            addr,
            index,
            store,
            tasks,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers from a synced policy index, with a certificate loaded.
    pub fn is_ready(&self) -> bool {
        self.index.is_synced() && self.store.is_loaded()
    }

    /// A cheap handle for readiness probes.
    pub fn readiness(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let (index, store) = (self.index.clone(), self.store.clone());
        move || index.is_synced() && store.is_loaded()
    }

    /// Stops serving.
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop();
    }
}
