//! Container mode's webhook in a test: served by this process on 127.0.0.1, registered
//! with the shared API server under a configuration of the test's own (sent only the
//! test namespace's Pods), with the operator's own managed certificates.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::events::Reporter;
use sidecar_webhook::certs::{Hosts, Lifetimes};
use sidecar_webhook::registration::{Endpoint, Registration, parse_namespace_selector};
use sidecar_webhook::{CertSource, Managed, Webhook, WebhookConfig, WebhookMetrics};

use crate::{Scene, TIMEOUT, wait_until};

/// Name of the test webhook's certificate Secret (in the test namespace).
pub const WEBHOOK_SECRET: &str = "webhook-tls";

/// A webhook serving one scene; stops when dropped (its configuration stays, pointing at
/// a closed port: the API server then lets Pods through, failurePolicy Ignore).
pub struct TestWebhook {
    pub webhook: Webhook,
    pub metrics: Arc<WebhookMetrics>,
    /// The MutatingWebhookConfiguration's name.
    pub configuration: String,
    pub addr: SocketAddr,
}

impl TestWebhook {
    /// Admissions answered so far (any result).
    pub fn admissions(&self) -> u64 {
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        self.metrics.register(&mut registry);
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode metrics");
        text.lines()
            .filter(|l| l.starts_with("sidecar_webhook_admissions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Scene {
    /// The registration a test webhook on `addr` uses: its own configuration, for this
    /// namespace only.
    pub fn webhook_registration(&self, addr: SocketAddr) -> Registration {
        let selector = format!("kubernetes.io/metadata.name={}", self.name());
        Registration {
            name: format!("sidecar-operator-{}", self.name()),
            endpoint: Endpoint::Url(format!("https://{addr}")),
            namespace_selector: parse_namespace_selector(&selector).expect("selector"),
            operator_namespace: "sidecar-system".into(),
            timeout_seconds: 5,
        }
    }

    /// Starts a webhook for this scene and waits until the API server calls it.
    pub async fn start_webhook(&self) -> TestWebhook {
        self.start_webhook_with(Lifetimes::default(), None).await
    }

    /// [`Scene::start_webhook`] with certificate lifetimes, on a fixed address (to restart
    /// a webhook where the configuration already points).
    pub async fn start_webhook_with(
        &self,
        lifetimes: Lifetimes,
        addr: Option<SocketAddr>,
    ) -> TestWebhook {
        self.start_webhook_from(addr, self.managed_certs(lifetimes))
            .await
    }

    /// A webhook that serves every namespace labelled `selector` (`key=value`) and applies
    /// the ClusterSidecarPolicies as well as every namespace's SidecarPolicies, as a
    /// cluster-wide operator's does. For a private control plane: another test's namespaces
    /// of the shared one could match.
    pub async fn start_cluster_webhook(&self, selector: &str) -> TestWebhook {
        let scope = WebhookScope {
            selector: selector.to_string(),
            namespace: None,
            cluster_policies: true,
        };
        self.launch_webhook(None, self.managed_certs(Lifetimes::default()), scope)
            .await
    }

    /// The operator's managed certificates, in a Secret of the scene's namespace.
    fn managed_certs(
        &self,
        lifetimes: Lifetimes,
    ) -> impl FnOnce(SocketAddr, Registration) -> CertSource {
        let secret_namespace = self.name().to_string();
        move |addr, registration| {
            CertSource::Managed(Box::new(Managed {
                secret_namespace,
                secret_name: WEBHOOK_SECRET.into(),
                hosts: Hosts {
                    dns: Vec::new(),
                    ips: vec![addr.ip()],
                },
                lifetimes,
                interval: Duration::from_millis(500),
                configuration: registration.name.clone(),
                full_registration: Some(registration),
            }))
        }
    }

    /// A webhook whose certificates come from `source` (given the bound address and the
    /// registration), on `addr` if set.
    pub async fn start_webhook_from(
        &self,
        addr: Option<SocketAddr>,
        source: impl FnOnce(SocketAddr, Registration) -> CertSource,
    ) -> TestWebhook {
        let scope = WebhookScope {
            selector: format!("kubernetes.io/metadata.name={}", self.name()),
            namespace: Some(self.name().to_string()),
            cluster_policies: false,
        };
        self.launch_webhook(addr, source, scope).await
    }

    async fn launch_webhook(
        &self,
        addr: Option<SocketAddr>,
        source: impl FnOnce(SocketAddr, Registration) -> CertSource,
        scope: WebhookScope,
    ) -> TestWebhook {
        crate::scene::operator_logs();
        let addr = addr.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = Webhook::bind(addr).await.expect("bind the webhook");
        let addr = sidecar_webhook::bound_addr(&listener).expect("webhook address");
        let mut registration = self.webhook_registration(addr);
        registration.namespace_selector =
            parse_namespace_selector(&scope.selector).expect("selector");
        let configuration = registration.name.clone();
        let certs = source(addr, registration);
        let metrics = Arc::new(WebhookMetrics::default());
        let webhook = Webhook::start(
            listener,
            self.client.clone(),
            WebhookConfig {
                namespace: scope.namespace,
                cluster_policies: scope.cluster_policies,
                left_out: sidecar_api::constants::SYSTEM_NAMESPACES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                certs,
                reporter: Reporter {
                    controller: "sidecar-operator-webhook".into(),
                    instance: Some(format!("test-{}", self.name())),
                },
                limits: Default::default(),
            },
            metrics.clone(),
        )
        .await
        .expect("webhook starts");
        let w = TestWebhook {
            webhook,
            metrics,
            configuration,
            addr,
        };
        self.wait_webhook_called(&w).await;
        w
    }

    /// Waits until the API server sends this namespace's Pod creates to `w` (its
    /// configuration applied, its CA trusted, its policy index synced): dry-run creates
    /// of a probe Pod until one reaches the webhook.
    pub async fn wait_webhook_called(&self, w: &TestWebhook) {
        // Compliant with Pod Security `restricted`, so any namespace's admission takes it.
        let probe = crate::restricted_pod("webhook-probe", &[("probe", "webhook")]);
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        wait_until(
            TIMEOUT,
            "the API server to call the test webhook",
            async || {
                if !w.webhook.is_ready() {
                    return None;
                }
                let before = w.admissions();
                let created = self.pods.create(&dry, &probe).await;
                (created.is_ok() && w.admissions() > before).then_some(())
            },
        )
        .await;
    }

    /// Deletes the scene's webhook configuration (best effort).
    pub async fn delete_webhook_configuration(&self, w: &TestWebhook) {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let _ = api.delete(&w.configuration, &DeleteParams::default()).await;
    }

    /// Creates `pod` with `dryRun=All` and returns what the API server would store.
    pub async fn dry_run(&self, pod: &Pod) -> Pod {
        try_dry_run(&self.pods, pod).await.expect("dry-run create")
    }
}

/// Which namespaces a test webhook serves and which policies it applies.
struct WebhookScope {
    /// The configuration's namespace selector.
    selector: String,
    /// Watch the policies of this namespace only.
    namespace: Option<String>,
    /// Apply ClusterSidecarPolicies.
    cluster_policies: bool,
}

impl Scene {
    /// [`wait_injecting`] in the scene's namespace.
    pub async fn wait_injecting(&self, labels: &[(&str, &str)], init: &str) {
        wait_injecting(&self.pods, labels, init).await;
    }
}

/// Waits until a Pod labelled `labels` would be admitted into `pods`' namespace with init
/// container `init` (dry runs): the webhook's policy index has caught up with the policies
/// just created, so what the test creates next is admitted under them.
pub async fn wait_injecting(pods: &Api<Pod>, labels: &[(&str, &str)], init: &str) {
    let probe = crate::restricted_pod("injection-probe", labels);
    let what = format!("the webhook to inject {init}");
    wait_until(TIMEOUT, &what, async || {
        let shown = try_dry_run(pods, &probe).await.ok()?;
        let inits = shown.spec?.init_containers?;
        inits.iter().any(|c| c.name == init).then_some(())
    })
    .await;
}

/// Creates `pod` in `pods`' namespace with `dryRun=All`: what the API server would store, or
/// why it refuses.
pub async fn try_dry_run(pods: &Api<Pod>, pod: &Pod) -> kube::Result<Pod> {
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    pods.create(&dry, pod).await
}
