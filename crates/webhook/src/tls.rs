//! Serving HTTPS with a certificate that can change under a running server: every TLS
//! handshake asks [`CertStore`] for the current certificate, so a rotation takes effect on
//! the next connection, and connections already open finish on the old one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tower::ServiceExt as _;

use crate::Error;
use crate::limits::ServerLimits;
use crate::metrics::WebhookMetrics;

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
///
/// Every phase of a connection is bounded by `limits`: at most
/// [`ServerLimits::max_connections`] are open (more wait in the kernel's accept queue),
/// the TLS handshake and an HTTP/1.1 request head must arrive in time, HTTP/2 streams,
/// windows and headers are capped, and a connection without a request in flight for
/// [`ServerLimits::idle_timeout`] is closed. The requests themselves are bounded by the
/// router (request slots, body size and time).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: axum::Router,
    limits: ServerLimits,
    metrics: Arc<WebhookMetrics>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let http = Arc::new(http_builder(&limits));
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // A slot first, then the connection: over the cap, connections wait in the
        // kernel's accept queue, costing no file descriptor and no task here.
        let slot = loop {
            tokio::select! {
                s = slots.clone().acquire_owned() => break s.expect("the semaphore is never closed"),
                Some(_) = connections.join_next() => {}
            }
        };
        let next = loop {
            tokio::select! {
                a = listener.accept() => break a,
                Some(_) = connections.join_next() => {}
            }
        };
        let (tcp, peer) = match next {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the others.
                tracing::warn!(error = %e, "webhook: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let open = Open::new(slot, &metrics);
        let _ = tcp.set_nodelay(true);
        metrics.connections.inc();
        let (acceptor, app, http, limits) =
            (acceptor.clone(), app.clone(), http.clone(), limits.clone());
        connections.spawn(async move {
            let _open = open;
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "webhook: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "webhook: TLS handshake timed out");
                        return;
                    }
                };
            serve_connection(tls, peer, app, &http, &limits).await;
        });
    }
}

type Http = hyper_util::server::conn::auto::Builder<TokioExecutor>;

/// HTTP/1.1 and HTTP/2 (whichever the client speaks) with `limits`' timeouts and caps.
fn http_builder(limits: &ServerLimits) -> Http {
    let mut http = Http::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.h1_buffer());
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keep_alive_interval)
        .keep_alive_timeout(limits.keep_alive_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(limits.h2_stream_window)
        .initial_connection_window_size(limits.h2_connection_window)
        .adaptive_window(false)
        .max_header_list_size(limits.max_header_bytes);
    http
}

/// Serves HTTP on one TLS connection until the client closes it, hyper does (a timeout, a
/// protocol error) or it has had no request in flight for `limits.idle_timeout`; then it
/// is shut down gracefully (HTTP/2: GOAWAY), for at most `limits.request_timeout`.
async fn serve_connection(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: SocketAddr,
    app: axum::Router,
    http: &Http,
    limits: &ServerLimits,
) {
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let busy = tracked.begin();
        let answer = app.clone().oneshot(request);
        async move {
            let answer = answer.await;
            drop(busy);
            answer
        }
    });
    let connection = http.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "webhook: connection ended with an error");
                }
                return;
            }
            _ = idle.as_mut() => match activity.idle_until(limits.idle_timeout) {
                Some(next) => idle.as_mut().reset(next),
                None => break,
            },
        }
    }
    tracing::debug!(%peer, "webhook: closing an idle connection");
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.request_timeout, connection).await;
}

/// Requests in flight on one connection, and when the last one began or ended.
#[derive(Debug)]
struct Activity(Mutex<(usize, Instant)>);

/// A request in flight; ends on drop.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Activity(Mutex::new((0, Instant::now())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Instant)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(self: &Arc<Self>) -> Busy {
        let mut a = self.lock();
        a.0 += 1;
        a.1 = Instant::now();
        Busy(self.clone())
    }

    /// `None` if nothing happened for `idle`, else when to look again.
    fn idle_until(&self, idle: Duration) -> Option<Instant> {
        let (in_flight, last) = *self.lock();
        let now = Instant::now();
        if in_flight > 0 {
            // A request is bounded by the router's timeouts; look again once it may
            // have ended and the connection been idle since.
            Some(later(now, idle))
        } else if now >= later(last, idle) {
            None
        } else {
            Some(later(last, idle))
        }
    }
}

/// `t + d`, or 30 years after `t` when that overflows (as `tokio::time::sleep` does): an idle
/// timeout too long to represent never panics, it just never comes.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(30 * 365 * 24 * 3600))
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut a = self.0.lock();
        a.0 -= 1;
        a.1 = Instant::now();
    }
}

/// An open connection: holds one of the server's connection slots and counts itself in
/// the `open_connections` gauge.
struct Open {
    gauge: Gauge,
    _slot: OwnedSemaphorePermit,
}

impl Open {
    fn new(slot: OwnedSemaphorePermit, metrics: &WebhookMetrics) -> Self {
        metrics.open_connections.inc();
        Open {
            gauge: metrics.open_connections.clone(),
            _slot: slot,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        // Before the slot is given back (fields drop after this), so that the gauge
        // never counts more connections than there are slots.
        self.gauge.dec();
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
