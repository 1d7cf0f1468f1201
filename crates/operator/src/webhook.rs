//! The operator's side of Container mode: the webhook's flags, starting it, and the
//! `webhook-config` subcommand.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kube::runtime::events::Reporter;
use sidecar_webhook::certs::{Hosts, Lifetimes};
use sidecar_webhook::registration::{self, Endpoint, Registration};
use sidecar_webhook::{CertSource, Managed, Webhook, WebhookConfig, WebhookMetrics};

/// Flags of `run` for the admission webhook (Container mode).
#[derive(clap::Args, Debug)]
pub(crate) struct WebhookArgs {
    /// Serve the Container-mode admission webhook (HTTPS) on this address, e.g.
    /// `0.0.0.0:9443`. Off when unset: Container-mode policies then inject nothing.
    #[arg(long, env = "SIDECAR_WEBHOOK_ADDR")]
    webhook_addr: Option<SocketAddr>,
    /// Beside a cluster: the URL at which the API server reaches this process's webhook
    /// (e.g. `https://127.0.0.1:9443`). With its own certificates the operator then applies
    /// the whole MutatingWebhookConfiguration itself; with --webhook-cert-dir the
    /// configuration is the issuer's (install it with `webhook-config --url`). Unset (in a
    /// cluster), the installed configuration points at the Service and the operator only
    /// sets its caBundle.
    #[arg(long, env = "SIDECAR_WEBHOOK_URL")]
    webhook_url: Option<String>,
    #[command(flatten)]
    service: ServiceArgs,
    /// Read the serving certificate from `tls.crt` and `tls.key` in this directory
    /// (cert-manager or any issuer; reloaded when they change) instead of issuing one. The
    /// issuer then keeps the configuration's caBundle (cert-manager's CA injector), and the
    /// operator needs no Secret access.
    #[arg(long, env = "SIDECAR_WEBHOOK_CERT_DIR")]
    webhook_cert_dir: Option<PathBuf>,
    /// The Secret (in the operator's namespace) holding the operator's own CA and serving
    /// certificate. It must exist (deploy/ ships it empty) unless the operator may create it.
    #[arg(
        long,
        env = "SIDECAR_WEBHOOK_SECRET",
        default_value = "sidecar-operator-webhook-tls"
    )]
    webhook_secret: String,
    /// Lifetime of the serving certificate, in seconds; renewed after two thirds of it.
    #[arg(long, env = "SIDECAR_WEBHOOK_CERT_VALIDITY", default_value_t = 90 * 24 * 3600)]
    webhook_cert_validity: u64,
    /// Lifetime of the operator's CA, in seconds; renewed after two thirds of it, with an
    /// overlap in which both CAs are trusted.
    #[arg(long, env = "SIDECAR_WEBHOOK_CA_VALIDITY", default_value_t = 5 * 365 * 24 * 3600)]
    webhook_ca_validity: u64,
    /// Seconds a new CA is trusted before it signs, and an old one after it stopped.
    #[arg(long, env = "SIDECAR_WEBHOOK_CA_OVERLAP", default_value_t = 300)]
    webhook_ca_overlap: u64,
    /// Seconds between two checks of the certificate (Secret, files) and the caBundle.
    #[arg(long, env = "SIDECAR_WEBHOOK_CERT_CHECK", default_value_t = 60.0)]
    webhook_cert_check: f64,
}

/// Where the webhook is reachable in a cluster; shared by `run` and `webhook-config`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ServiceArgs {
    /// The operator's namespace: the certificate Secret's, the Service's, and never injected.
    #[arg(long, env = "POD_NAMESPACE", default_value = "sidecar-system")]
    operator_namespace: String,
    /// The Service in front of the replicas' webhook port.
    #[arg(
        long,
        env = "SIDECAR_WEBHOOK_SERVICE",
        default_value = "sidecar-operator-webhook"
    )]
    webhook_service: String,
    /// The API server's wait for an answer, in seconds; past it the Pod is created without
    /// sidecars (failurePolicy Ignore).
    #[arg(long, env = "SIDECAR_WEBHOOK_TIMEOUT", default_value_t = 5)]
    webhook_timeout: i32,
    /// Send only Pods of namespaces with these labels to the webhook (comma-separated
    /// `key=value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`, `!key`), beside
    /// the namespaces always left alone (kube-system, kube-public, kube-node-lease and the
    /// operator's own). Set it like --namespace-selector when that is used.
    #[arg(long, env = "SIDECAR_WEBHOOK_NAMESPACE_SELECTOR")]
    webhook_namespace_selector: Option<String>,
    /// Name of the MutatingWebhookConfiguration.
    #[arg(
        long,
        env = "SIDECAR_WEBHOOK_CONFIGURATION",
        default_value = registration::CONFIGURATION_NAME
    )]
    webhook_configuration: String,
}

/// Flags of `webhook-config`.
#[derive(clap::Args, Debug)]
pub(crate) struct ConfigArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// Point the configuration at this URL instead of the Service.
    #[arg(long)]
    url: Option<String>,
}

impl WebhookArgs {
    /// The operator's namespace (`--operator-namespace`, `POD_NAMESPACE`): never injected.
    pub(crate) fn operator_namespace(&self) -> &str {
        &self.service.operator_namespace
    }

    /// Where the webhook injects, for Container mode's repair: every namespace its
    /// `--webhook-namespace-selector` selects.
    pub(crate) fn reach(&self) -> anyhow::Result<sidecar_controller::WebhookReach> {
        let selector = self
            .service
            .webhook_namespace_selector
            .as_deref()
            .unwrap_or_default();
        let reqs = registration::parse_namespace_selector(selector)
            .map_err(|e| anyhow::anyhow!("--webhook-namespace-selector: {e}"))?;
        Ok(sidecar_controller::WebhookReach::Namespaces(reqs))
    }
}

fn registration(service: &ServiceArgs, url: Option<&str>) -> anyhow::Result<Registration> {
    let endpoint = match url {
        Some(u) => Endpoint::Url(u.to_string()),
        None => Endpoint::Service(
            service.operator_namespace.clone(),
            service.webhook_service.clone(),
            443,
        ),
    };
    let selector = service
        .webhook_namespace_selector
        .as_deref()
        .unwrap_or_default();
    let namespace_selector = registration::parse_namespace_selector(selector)
        .map_err(|e| anyhow::anyhow!("--webhook-namespace-selector: {e}"))?;
    Ok(Registration {
        name: service.webhook_configuration.clone(),
        endpoint,
        namespace_selector,
        operator_namespace: service.operator_namespace.clone(),
        timeout_seconds: service.webhook_timeout,
    })
}

/// The configuration as YAML.
pub(crate) fn config_yaml(args: &ConfigArgs) -> anyhow::Result<String> {
    let r = registration(&args.service, args.url.as_deref())?;
    Ok(registration::configuration_yaml(&r)?)
}

/// The names a serving certificate must carry: the URL's host, or the Service's DNS names.
fn hosts(args: &WebhookArgs) -> anyhow::Result<Hosts> {
    let mut hosts = Hosts::default();
    match &args.webhook_url {
        Some(url) => {
            let uri: http::Uri = url
                .parse()
                .with_context(|| format!("--webhook-url {url:?} is not a URL"))?;
            if uri.scheme_str() != Some("https") {
                anyhow::bail!(
                    "--webhook-url {url:?} must start with https:// (the API server calls webhooks over TLS only)"
                );
            }
            let host = uri
                .host()
                .with_context(|| format!("--webhook-url {url:?} has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']');
            match host.parse::<IpAddr>() {
                Ok(ip) => hosts.ips.push(ip),
                Err(_) => hosts.dns.push(host.to_string()),
            }
        }
        None => {
            let (svc, ns) = (
                &args.service.webhook_service,
                &args.service.operator_namespace,
            );
            hosts.dns = vec![
                format!("{svc}.{ns}.svc"),
                format!("{svc}.{ns}.svc.cluster.local"),
                format!("{svc}.{ns}"),
            ];
        }
    }
    Ok(hosts)
}

fn cert_source(args: &WebhookArgs) -> anyhow::Result<CertSource> {
    let interval = Duration::try_from_secs_f64(args.webhook_cert_check)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--webhook-cert-check must be a positive number of seconds")?;
    if let Some(path) = &args.webhook_cert_dir {
        return Ok(CertSource::Dir {
            path: path.clone(),
            interval,
        });
    }
    let lifetimes = Lifetimes {
        ca: Duration::from_secs(args.webhook_ca_validity),
        serving: Duration::from_secs(args.webhook_cert_validity),
        overlap: Duration::from_secs(args.webhook_ca_overlap),
    };
    // Checked: `overlap * 3` of a huge flag would overflow (a panic at startup).
    let three_overlaps = lifetimes.overlap.checked_mul(3);
    if lifetimes.serving > lifetimes.ca || three_overlaps.is_none_or(|o| o > lifetimes.ca) {
        anyhow::bail!(
            "--webhook-cert-validity must not exceed --webhook-ca-validity, and --webhook-ca-overlap must be under a third of it"
        );
    }
    Ok(CertSource::Managed(Box::new(Managed {
        secret_namespace: args.service.operator_namespace.clone(),
        secret_name: args.webhook_secret.clone(),
        hosts: hosts(args)?,
        lifetimes,
        interval,
        configuration: args.service.webhook_configuration.clone(),
        full_registration: match args.webhook_url.as_deref() {
            Some(u) => Some(registration(&args.service, Some(u))?),
            None => None,
        },
    })))
}

/// Starts the webhook when `--webhook-addr` is set, with its metrics in `registry`.
pub(crate) async fn start(
    args: &crate::RunArgs,
    config: &kube::Config,
    counted: &sidecar_controller::Metrics,
    registry: &mut prometheus_client::registry::Registry,
) -> anyhow::Result<Option<Webhook>> {
    let w = &args.webhook;
    let Some(addr) = w.webhook_addr else {
        return Ok(None);
    };
    let certs = cert_source(w)?;
    // Its own client: the leader's write gate must not fence a standby's certificate and
    // Event writes. Its requests count with the controllers' (api_requests).
    let counter = Arc::new(sidecar_controller::Counter::new(
        counted.api_requests.clone(),
    ));
    let client = sidecar_controller::counting_client(config.clone(), counter)
        .context("building the webhook's client")?;
    let metrics = Arc::new(WebhookMetrics::default());
    metrics.register(registry);
    let instance = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("sidecar-operator-{}", std::process::id()));
    let listener = Webhook::bind(addr).await?;
    let webhook = Webhook::start(
        listener,
        client,
        WebhookConfig {
            namespace: args.namespace.clone(),
            cluster_policies: args.cluster_policies && args.namespace.is_none(),
            left_out: sidecar_api::constants::SYSTEM_NAMESPACES
                .iter()
                .map(|s| s.to_string())
                .chain([args.webhook.operator_namespace().to_string()])
                .collect(),
            certs,
            reporter: Reporter {
                controller: "sidecar-operator-webhook".into(),
                instance: Some(instance),
            },
            limits: Default::default(),
        },
        metrics,
    )
    .await?;
    tracing::info!(addr = %webhook.addr(), "admission webhook started");
    Ok(Some(webhook))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Config {
        #[command(flatten)]
        args: ConfigArgs,
    }

    /// Flags at their largest are refused or taken, never a panic (`overlap * 3` overflowed).
    #[test]
    fn certificate_lifetimes_at_their_extremes_never_panic() {
        #[derive(Parser)]
        struct Run {
            #[command(flatten)]
            args: WebhookArgs,
        }
        let max = u64::MAX.to_string();
        let third = (u64::MAX / 3).to_string();
        let over_a_third = (u64::MAX / 3 + 1).to_string();
        let all = |overlap| {
            [
                "--webhook-ca-validity",
                max.as_str(),
                "--webhook-cert-validity",
                max.as_str(),
                "--webhook-ca-overlap",
                overlap,
            ]
        };
        let (longest, too_long) = (all(third.as_str()), all(over_a_third.as_str()));
        // (flags, accepted)
        let cases: [(&[&str], bool); 5] = [
            (&["--webhook-ca-overlap", &max], false),
            (&["--webhook-ca-overlap", &over_a_third], false),
            (&["--webhook-ca-validity", &max], true),
            (&longest, true),
            (&too_long, false),
        ];
        for (flags, accepted) in cases {
            let run = Run::parse_from(["run"].iter().chain(flags));
            let got = cert_source(&run.args);
            assert_eq!(got.is_ok(), accepted, "{flags:?}: {:?}", got.err());
        }
    }

    #[test]
    fn a_webhook_url_must_be_https_with_a_host() {
        #[derive(Parser)]
        struct Run {
            #[command(flatten)]
            args: WebhookArgs,
        }
        for (url, needle) in [
            ("http://127.0.0.1:9443", "must start with https://"),
            ("not a url", "is not a URL"),
        ] {
            let run = Run::parse_from(["run", "--webhook-url", url]);
            let err = hosts(&run.args).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
        let run = Run::parse_from(["run", "--webhook-url", "https://127.0.0.1:9443"]);
        assert_eq!(
            hosts(&run.args).unwrap().ips,
            vec![IpAddr::from([127, 0, 0, 1])]
        );
        let run = Run::parse_from(["run"]);
        let dns = hosts(&run.args).unwrap().dns;
        assert!(
            dns.contains(&"sidecar-operator-webhook.sidecar-system.svc".to_string()),
            "{dns:?}"
        );
    }
}
