//! The server cannot be exhausted: a real server on 127.0.0.1 with small limits, attacked
//! by idle TCP connections, slow request bodies (HTTP/1.1 and HTTP/2 streams), oversized
//! bodies and idle TLS connections, while a well-behaved client (the API server) is still
//! answered. Every wait polls a condition up to a deadline; no sleep asserts a speed.

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use hyper::{Request, Response, StatusCode};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::*;
use crate::certs::{self, Hosts};
use crate::index::PolicyIndex;
use crate::metrics::{AdmissionLabels, RefusedLabels};
use crate::review::Refusal;
use crate::server::{self, Shared};

/// Long enough for anything these tests wait for, on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);
const URI: &str = "https://127.0.0.1/mutate";

/// Small limits, so that the tests see them reached and expire within seconds.
fn small() -> ServerLimits {
    ServerLimits {
        handshake_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        max_connections: 8,
        max_requests: 4,
        queue_timeout: Duration::from_millis(250),
        max_body_bytes: 64 * 1024,
        ..ServerLimits::default()
    }
}

/// A webhook server on 127.0.0.1 with a fresh CA, an empty policy index and `limits`.
struct Server {
    addr: SocketAddr,
    metrics: Arc<WebhookMetrics>,
    tls: Arc<ClientConfig>,
    limits: ServerLimits,
    task: JoinHandle<()>,
    _refusals: mpsc::Receiver<Refusal>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(limits: ServerLimits) -> Server {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ca = certs::new_ca(now, Duration::from_secs(3600)).unwrap();
    let hosts = Hosts {
        dns: vec![],
        ips: vec![Ipv4Addr::LOCALHOST.into()],
    };
    let serving = certs::serving(&ca, &hosts, now, Duration::from_secs(3600)).unwrap();
    let store = Arc::new(CertStore::default());
    store.set(&serving.cert, &serving.key).unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert.as_bytes()).unwrap())
        .unwrap();
    let tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(WebhookMetrics::default());
    let (tx, rx) = mpsc::channel(16);
    let shared = Shared {
        index: Arc::new(PolicyIndex::default()),
        metrics: metrics.clone(),
        refusals: tx,
    };
    let app = server::router(shared, &limits);
    let config = server_config(store).unwrap();
    let task = tokio::spawn(serve(
        listener,
        config,
        app,
        limits.clone(),
        metrics.clone(),
    ));
    Server {
        addr,
        metrics,
        tls: Arc::new(tls),
        limits,
        task,
        _refusals: rx,
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

/// A client connection; `closed` ends when the server closes it.
struct Client {
    sender: Sender,
    closed: JoinHandle<()>,
}

impl Client {
    async fn send(&mut self, request: Request<Body>) -> hyper::Result<Response<Body>> {
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
        };
        Ok(response.map(Body::new))
    }

    /// Another handle on the same HTTP/2 connection (another stream).
    fn stream(&self) -> Client {
        match &self.sender {
            Sender::H2(s) => Client {
                sender: Sender::H2(s.clone()),
                closed: tokio::spawn(async {}),
            },
            Sender::H1(_) => unreachable!("HTTP/1.1 has one request at a time"),
        }
    }
}

impl Server {
    async fn tls(&self, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
        let mut config = (*self.tls).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// A handshaken HTTP/2 (`h2`) or HTTP/1.1 connection.
    async fn client(&self, h2: bool) -> Result<Client, String> {
        let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        let io = TokioIo::new(self.tls(alpn).await.map_err(|e| e.to_string())?);
        let e = |e: hyper::Error| e.to_string();
        Ok(if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(e)?;
            Client {
                sender: Sender::H2(sender),
                closed: tokio::spawn(async move {
                    let _ = conn.await;
                }),
            }
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(e)?;
            Client {
                sender: Sender::H1(sender),
                closed: tokio::spawn(async move {
                    let _ = conn.await;
                }),
            }
        })
    }

    fn open(&self) -> i64 {
        self.metrics.open_connections.get()
    }

    fn refused(&self, reason: &'static str) -> u64 {
        self.metrics
            .refused
            .get_or_create(&RefusedLabels { reason })
            .get()
    }

    fn answered(&self) -> u64 {
        self.metrics
            .admissions
            .get_or_create(&AdmissionLabels {
                result: "skipped",
                reason: "no_policy",
            })
            .get()
    }

    /// Samples the open-connections gauge every millisecond; the highest value seen.
    fn peak(&self) -> (Arc<AtomicI64>, JoinHandle<()>) {
        let peak = Arc::new(AtomicI64::new(0));
        let (metrics, seen) = (self.metrics.clone(), peak.clone());
        let task = tokio::spawn(async move {
            loop {
                seen.fetch_max(metrics.open_connections.get(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        (peak, task)
    }
}

/// The AdmissionReview the API server sends for a Pod CREATE.
fn review() -> Vec<u8> {
    crate::review::tests::review_json(
        "CREATE",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "web:1"}]},
        }),
    )
}

fn post(body: Body) -> Request<Body> {
    Request::post(URI)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

/// A body that never ends: a byte every 100 ms.
fn dribble() -> Body {
    Body::from_stream(futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, Infallible>(Bytes::from_static(b" ")), ()))
    }))
}

/// Sends the review; its status, and whether it was answered as the API server expects.
async fn admit(client: &mut Client, body: Vec<u8>) -> Result<StatusCode, String> {
    let response = client
        .send(post(Body::from(body)))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status == StatusCode::OK {
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        assert_eq!(answer["response"]["uid"], "1234", "{answer}");
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
    }
    Ok(status)
}

/// Polls `done` every 10 ms until it holds or `DEADLINE` passes.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < until, "not within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the server closed `tcp` (read gives end of file or an error) within `DEADLINE`.
async fn closed_by_server(tcp: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(DEADLINE, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slow_requests_do_not_starve_the_api_server() {
    let server = start(small()).await;
    let limits = &server.limits;
    let (peak, sampler) = server.peak();
    let started = Instant::now();

    // Slow requests: 4 HTTP/2 streams on one connection and 2 HTTP/1.1 connections,
    // their heads sent and their bodies dribbled, never finished. 6 > max_requests (4).
    let h2 = server.client(true).await.unwrap();
    let mut slow: Vec<Client> = (0..4).map(|_| h2.stream()).collect();
    for _ in 0..2 {
        slow.push(server.client(false).await.unwrap());
    }
    let slow: Vec<JoinHandle<_>> = slow
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let status = c.send(post(dribble())).await.map(|r| r.status());
                (status.map_err(|e| e.to_string()), started.elapsed(), c)
            })
        })
        .collect();
    // The two over the cap are refused once their wait for a slot is over.
    eventually("two slow requests refused as busy", || {
        server.refused("busy") == 2
    })
    .await;

    // Idle TCP connections that never start a TLS handshake: three times the cap.
    let idle_count = 24;
    let mut idle = Vec::new();
    for _ in 0..idle_count {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }

    // The API server: answered once the idle connections ahead of it timed out.
    let asked = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let left = DEADLINE.saturating_sub(asked.elapsed());
        let answer = tokio::time::timeout(left, async {
            admit(&mut server.client(true).await?, review()).await
        })
        .await;
        match answer {
            Ok(Ok(StatusCode::OK)) => break,
            Err(_) => panic!("the API server not answered within {DEADLINE:?}"),
            // Refused (busy) or closed: ask again, as the API server would for the next Pod.
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let waited = asked.elapsed();

    let mut statuses = Vec::new();
    for s in slow {
        let slow = tokio::time::timeout(DEADLINE, s).await;
        let (status, at, _client) = slow.expect("every slow request answered").unwrap();
        statuses.push((status, at));
    }
    let count = |code: StatusCode| {
        statuses
            .iter()
            .filter(|(s, _)| s.as_ref().ok() == Some(&code))
            .count()
    };
    assert_eq!(count(StatusCode::REQUEST_TIMEOUT), 4, "{statuses:?}");
    assert_eq!(count(StatusCode::SERVICE_UNAVAILABLE), 2, "{statuses:?}");
    for (status, at) in &statuses {
        if status.as_ref().ok() == Some(&StatusCode::REQUEST_TIMEOUT) {
            assert!(*at >= limits.request_timeout, "{status:?} after {at:?}");
        }
    }

    // Every idle connection was closed by the server (its handshake timed out).
    let mut closed = 0;
    for tcp in &mut idle {
        if closed_by_server(tcp).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed, idle_count,
        "idle TCP connections closed by the server"
    );
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    let accepted = server.metrics.connections.get();

    eprintln!(
        "exhaustion: server memory bounded by ~{} KiB with these limits",
        limits.memory_bound() / 1024
    );
    eprintln!(
        "exhaustion: {idle_count} idle TCP connections (all closed by the server), 6 slow \
         requests (4 HTTP/2 streams, 2 HTTP/1.1) -> {} answered 408, {} answered 503; \
         {accepted} connections accepted, at most {peak} open at once (cap {}); the API \
         server answered after {waited:?} ({attempts} attempt(s)); admissions answered: {}",
        count(StatusCode::REQUEST_TIMEOUT),
        count(StatusCode::SERVICE_UNAVAILABLE),
        limits.max_connections,
        server.answered(),
    );
    assert!(
        peak <= limits.max_connections as i64,
        "{peak} connections open at once, over the cap of {}",
        limits.max_connections
    );
    assert_eq!(
        peak, limits.max_connections as i64,
        "the attack filled every connection slot"
    );
    assert_eq!(server.answered(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused() {
    let server = start(small()).await;
    let limit = server.limits.max_body_bytes;

    // Told by its Content-Length (HTTP/1.1): refused before it is read (only the head is
    // sent: a client still writing the body could lose the answer to the server's close).
    let mut h1 = server.tls(b"http/1.1").await.unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        limit + 1
    );
    h1.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, h1.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");

    // Streamed with no length (HTTP/2): refused once it passes the limit.
    let mut h2 = server.client(true).await.unwrap();
    let chunks = (0..limit / 1024 + 10).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b' '; 1024])));
    let response = h2
        .send(post(Body::from_stream(futures::stream::iter(chunks))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A review of exactly the limit (JSON padded with spaces) is answered.
    let mut body = review();
    body.resize(limit, b' ');
    assert_eq!(admit(&mut h2, body).await, Ok(StatusCode::OK));

    eprintln!(
        "oversized: {} bodies over {limit} bytes refused 413; a review of {limit} bytes \
         answered ({} admission(s))",
        server.refused("too_large"),
        server.answered()
    );
    assert_eq!(server.refused("too_large"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_requests_are_closed() {
    let server = start(ServerLimits {
        idle_timeout: Duration::from_secs(2),
        ..small()
    })
    .await;
    let limits = &server.limits;
    let idle = limits.idle_timeout;
    // Timers fire on the millisecond; the server's clock for the last request ends a
    // little before the client reads the answer.
    let early = Duration::from_millis(50);

    // HTTP/2, requests 1 s apart for twice the idle timeout: never idle, kept open.
    let mut busy = server.client(true).await.unwrap();
    let began = Instant::now();
    let mut requests = 0;
    while began.elapsed() < 2 * idle {
        assert_eq!(admit(&mut busy, review()).await, Ok(StatusCode::OK));
        requests += 1;
        assert!(!busy.closed.is_finished(), "a busy connection was closed");
        tokio::time::sleep(idle / 2).await;
    }
    // Then idle: closed (GOAWAY) after the idle timeout.
    assert_eq!(admit(&mut busy, review()).await, Ok(StatusCode::OK));
    let last = Instant::now();
    tokio::time::timeout(DEADLINE, &mut busy.closed)
        .await
        .expect("the idle HTTP/2 connection closed")
        .unwrap();
    let h2_idle = last.elapsed();
    assert!(h2_idle + early >= idle, "closed after {h2_idle:?}");

    // TLS done, no HTTP byte sent: closed after the idle timeout too.
    let mut silent = server.tls(b"h2").await.unwrap();
    let handshaken = Instant::now();
    assert!(closed_by_server(&mut silent).await);
    let silent_idle = handshaken.elapsed();
    assert!(silent_idle + early >= idle, "closed after {silent_idle:?}");

    // HTTP/1.1 kept alive after an answer: hyper closes it when no next request head
    // arrives within the header timeout.
    let mut h1 = server.client(false).await.unwrap();
    assert_eq!(admit(&mut h1, review()).await, Ok(StatusCode::OK));
    let last = Instant::now();
    tokio::time::timeout(DEADLINE, &mut h1.closed)
        .await
        .expect("the idle HTTP/1.1 connection closed")
        .unwrap();
    let h1_idle = last.elapsed();
    assert!(
        h1_idle + early >= limits.header_read_timeout,
        "closed after {h1_idle:?}"
    );

    eventually("no connection open", || server.open() == 0).await;
    eprintln!(
        "idle: an HTTP/2 connection kept open through {requests} requests over {:?}, then \
         closed {h2_idle:?} after its last (idle timeout {idle:?}); a silent TLS connection \
         closed after {silent_idle:?}; an HTTP/1.1 connection closed {h1_idle:?} after its \
         answer (header timeout {:?}); {} admissions answered, 0 connections left open",
        2 * idle,
        limits.header_read_timeout,
        server.answered()
    );
}

#[test]
fn the_default_limits_bound_memory_within_the_operators_limit() {
    let bound = ServerLimits::default().memory_bound();
    eprintln!("defaults: server memory bounded by ~{} MiB", bound >> 20);
    // The operator runs with 256 Mi; the rest of it needs some too.
    assert!(bound < 192 << 20, "{} MiB", bound >> 20);
}

/// An idle timeout too long to add to an instant (`Duration::MAX`) never panics: the
/// connection is simply never idle.
#[tokio::test]
async fn an_endless_idle_timeout_never_overflows() {
    let activity = Arc::new(Activity::new());
    assert!(activity.idle_until(Duration::MAX).is_some(), "idle");
    let busy = activity.begin();
    assert!(activity.idle_until(Duration::MAX).is_some(), "busy");
    drop(busy);
}
