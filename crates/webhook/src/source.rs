//! Where the serving certificate comes from, kept current in a loop:
//! - [`Managed`]: the operator's own CA and certificate, in one named Secret of its
//!   namespace (read and written by name only), renewed by [`crate::certs::plan`], with the
//!   `caBundle` of the webhook configuration kept equal to the CAs in use;
//! - a directory of `tls.crt` and `tls.key` written by someone else (cert-manager, a
//!   mounted Secret), reloaded when the files change; no Secret access, and the
//!   `caBundle` is that issuer's business (cert-manager's CA injector).
//!
//! Every replica runs the loop; they share the Secret and its writes are guarded by the
//! Secret's resourceVersion, so two replicas renewing at once end with one result.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;

use crate::Error;
use crate::certs::{self, Hosts, Lifetimes, Pair, Stored};
use crate::metrics::WebhookMetrics;
use crate::registration::{self, Registration};
use crate::tls::CertStore;

/// How the webhook gets its certificate.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// The operator issues and rotates its own (see [`Managed`]).
    Managed(Box<Managed>),
    /// Files `tls.crt` and `tls.key` in this directory, checked every `interval`.
    Dir { path: PathBuf, interval: Duration },
}

/// The operator's own certificates.
#[derive(Debug, Clone)]
pub struct Managed {
    /// Namespace and name of the Secret that holds them.
    pub secret_namespace: String,
    pub secret_name: String,
    /// Names the serving certificate is for (the Service's DNS names, or 127.0.0.1).
    pub hosts: Hosts,
    pub lifetimes: Lifetimes,
    /// How often the Secret and the configuration's `caBundle` are checked.
    pub interval: Duration,
    /// The name of the MutatingWebhookConfiguration whose `caBundle` is kept.
    pub configuration: String,
    /// The configuration, when the operator applies it whole (`--webhook-url`).
    pub full_registration: Option<Registration>,
}

const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const NEXT_CA_CRT: &str = "next-ca.crt";
const NEXT_CA_KEY: &str = "next-ca.key";
const PREVIOUS_CA_CRT: &str = "previous-ca.crt";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const SINCE: &str = "overlap-since";

/// Runs until aborted: keeps `store` serving a valid certificate from `source`.
pub async fn keep_current(
    client: kube::Client,
    source: CertSource,
    store: Arc<CertStore>,
    metrics: Arc<WebhookMetrics>,
) {
    match source {
        CertSource::Dir { path, interval } => loop {
            match load_dir(&path, &store) {
                Ok(true) => tracing::info!(dir = %path.display(), "webhook certificate loaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "webhook certificate not loaded")
                }
            }
            tokio::time::sleep(interval).await;
        },
        CertSource::Managed(m) => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &m.secret_namespace);
            let configs: Api<MutatingWebhookConfiguration> = Api::all(client);
            loop {
                let wait = match sync_managed(&secrets, &configs, &m, &store, &metrics).await {
                    Ok(()) => m.interval,
                    Err(e @ Error::Conflict) => {
                        tracing::debug!(error = %e, "webhook certificate: another replica wrote first; reading again");
                        Duration::from_millis(200)
                    }
                    Err(e) => {
                        metrics.certificate_errors.inc();
                        tracing::warn!(error = %e, "webhook certificate not current");
                        m.interval.min(Duration::from_secs(5))
                    }
                };
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn load_dir(dir: &std::path::Path, store: &CertStore) -> Result<bool, Error> {
    let read = |f: &str| {
        let p = dir.join(f);
        std::fs::read_to_string(&p)
            .map_err(|e| Error::Certificate(format!("reading {}: {e}", p.display())))
    };
    store.set(&read(TLS_CRT)?, &read(TLS_KEY)?)
}

/// One round: read the Secret, take the steps [`certs::plan`] asks for, serve the result
/// and make the API server trust its CAs.
async fn sync_managed(
    secrets: &Api<Secret>,
    configs: &Api<MutatingWebhookConfiguration>,
    m: &Managed,
    store: &CertStore,
    metrics: &WebhookMetrics,
) -> Result<(), Error> {
    let live = secrets
        .get_opt(&m.secret_name)
        .await
        .map_err(|e| Error::Kube("reading the webhook certificate Secret", e))?;
    let mut stored = live.as_ref().and_then(decode);
    let now = unix_now();
    let mut changed = false;
    // A few steps at most (create; or promote then renew); each is a pure decision.
    for _ in 0..4 {
        let with_facts = match &stored {
            Some(s) => certs::facts(s, &m.hosts).ok().map(|f| (s, f)),
            None => None,
        };
        let Some(step) = certs::plan(with_facts, now, m.lifetimes) else {
            break;
        };
        tracing::info!(?step, secret = %m.secret_name, "webhook certificate");
        stored = Some(certs::apply(
            step,
            stored.as_ref(),
            now,
            m.lifetimes,
            &m.hosts,
        )?);
        changed = true;
    }
    let stored = stored.ok_or_else(|| Error::Certificate("no certificate planned".into()))?;
    if changed {
        write(secrets, &m.secret_name, live, &stored).await?;
    }
    // Trust first, then serve: a replica never serves a certificate the API server does
    // not trust yet (the bundle only ever gains a CA before it signs).
    let full = m.full_registration.as_ref();
    registration::ensure_ca_bundle(configs, &m.configuration, &stored.bundle(), full).await?;
    if store.set(&stored.serving.cert, &stored.serving.key)? {
        tracing::info!(secret = %m.secret_name, "webhook serving certificate loaded");
    }
    if let Ok(f) = certs::facts(&stored, &m.hosts) {
        metrics.certificate_expiry.set(f.serving.not_after);
    }
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn decode(secret: &Secret) -> Option<Stored> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let pair = |c: &str, k: &str| {
        Some(Pair {
            cert: text(c)?,
            key: text(k)?,
        })
    };
    Some(Stored {
        ca: pair(CA_CRT, CA_KEY)?,
        next_ca: pair(NEXT_CA_CRT, NEXT_CA_KEY),
        previous_ca: text(PREVIOUS_CA_CRT),
        since: text(SINCE)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_default(),
        serving: pair(TLS_CRT, TLS_KEY)?,
    })
}

fn encode(s: &Stored) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    put(CA_CRT, &s.ca.cert);
    put(CA_KEY, &s.ca.key);
    put(TLS_CRT, &s.serving.cert);
    put(TLS_KEY, &s.serving.key);
    put(SINCE, &s.since.to_string());
    if let Some(n) = &s.next_ca {
        put(NEXT_CA_CRT, &n.cert);
        put(NEXT_CA_KEY, &n.key);
    }
    if let Some(p) = &s.previous_ca {
        put(PREVIOUS_CA_CRT, p);
    }
    data
}

/// Writes `stored` into the Secret: a replace guarded by the resourceVersion read (so a
/// replica that lost a race reads again instead of overwriting), or a create.
async fn write(
    secrets: &Api<Secret>,
    name: &str,
    live: Option<Secret>,
    stored: &Stored,
) -> Result<(), Error> {
    let creating = live.is_none();
    let conflict = |e: kube::Error, what| match &e {
        kube::Error::Api(s) if s.code == 409 => Error::Conflict,
        kube::Error::Api(s) if s.code == 403 && creating => Error::NotInstalled(format!(
            "Secret {name} does not exist and the operator may not create it ({}): install it \
             empty with deploy/40-webhook.yaml, or grant create on secrets",
            s.message
        )),
        _ => Error::Kube(what, e),
    };
    match live {
        Some(mut secret) => {
            secret.data = Some(encode(stored));
            secret.string_data = None;
            secrets
                .replace(name, &PostParams::default(), &secret)
                .await
                .map_err(|e| conflict(e, "writing the webhook certificate Secret"))?;
        }
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                data: Some(encode(stored)),
                type_: Some("Opaque".into()),
                ..Secret::default()
            };
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|e| conflict(e, "creating the webhook certificate Secret"))?;
        }
    }
    Ok(())
}
