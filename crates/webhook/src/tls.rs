//! Serving HTTPS with a certificate that can change under a running server: every TLS
//! handshake asks [`CertStore`] for the current certificate, so a rotation takes effect on
//! the next connection, and connections already open finish on the old one.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::Error;

/// The serving certificate in use; swapped by [`CertStore::set`].
#[derive(Debug, Default)]
pub struct CertStore {
    current: RwLock<Option<Loaded>>,
}

#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The PEM it was loaded from, to tell a change from a reload of the same files.
    pem: Arc<str>,
}

impl CertStore {
    /// Serves `cert_pem` (the chain, leaf first) with `key_pem` from the next handshake on.
    /// Returns whether it changed anything.
    pub fn set(&self, cert_pem: &str, key_pem: &str) -> Result<bool, Error> {
        let both = format!("{cert_pem}\n{key_pem}");
        if self.pem().as_deref() == Some(both.as_str()) {
            return Ok(false);
        }
        let key = certified_key(cert_pem, key_pem)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Loaded {
            key: Arc::new(key),
            pem: both.into(),
        });
        Ok(true)
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.pem().is_some()
    }

    fn pem(&self) -> Option<Arc<str>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().map(|l| l.pem.clone())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().map(|l| l.key.clone())
    }
}

/// A rustls certified key from PEM text.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Certificate(format!("reading the certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Certificate(
            "the certificate PEM holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::Certificate(format!("reading the private key PEM: {e}")))?;
    let signing = ring::sign::any_supported_type(&key)
        .map_err(|e| Error::Certificate(format!("unusable private key: {e}")))?;
    Ok(CertifiedKey::new(certs, signing))
}

/// The TLS settings: HTTP/2 or HTTP/1.1 (ALPN; the API server speaks HTTP/2 when offered,
/// so its concurrent admissions share one connection instead of a TLS handshake each), no
/// client certificates (the API server authenticates the
/// webhook, not the other way round), the certificate from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e: rustls::Error| Error::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Bind(addr, e.to_string()))
}

/// Serves `app` over TLS on `listener` until aborted. Connections are tasks of a set the
/// server owns, so aborting the server closes the connections too (the API server keeps
/// its connections to a webhook alive; a stopped webhook must not go on answering).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: axum::Router,
    accepted: prometheus_client::metrics::counter::Counter,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let next = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next() => continue,
        };
        let (tcp, peer) = match next {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the others.
                tracing::warn!(error = %e, "webhook: accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        accepted.inc();
        let (acceptor, app) = (acceptor.clone(), app.clone());
        connections.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "webhook: TLS handshake failed");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "webhook: connection ended with an error");
            }
        });
    }
}
