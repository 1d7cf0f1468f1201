//! Unit tests of `counter.rs`.

use super::*;

#[test]
fn verbs() {
    let r = |m: Method, uri: &str| {
        Request::builder()
            .method(m)
            .uri(uri)
            .body(())
            .expect("request")
    };
    let cases = [
        (r(Method::GET, "/api/v1/namespaces/a/pods"), "list"),
        (r(Method::GET, "/api/v1/pods?limit=500"), "list"),
        (
            r(
                Method::GET,
                "/api/v1/namespaces/a/pods?watch=true&resourceVersion=1",
            ),
            "watch",
        ),
        (r(Method::GET, "/api/v1/namespaces/a/pods/p"), "get"),
        (
            r(
                Method::GET,
                "/apis/sidecars.dev/v1alpha1/namespaces/a/sidecarpolicies",
            ),
            "list",
        ),
        (
            r(Method::GET, "/apis/sidecars.dev/v1alpha1/sidecarpolicies"),
            "list",
        ),
        (
            r(
                Method::GET,
                "/apis/sidecars.dev/v1alpha1/namespaces/a/sidecarpolicies/x",
            ),
            "get",
        ),
        (r(Method::POST, "/api/v1/namespaces/a/pods"), "create"),
        (
            r(Method::POST, "/api/v1/namespaces/a/pods?&dryRun=All"),
            "dry-run",
        ),
        (r(Method::DELETE, "/api/v1/namespaces/a/pods/p"), "delete"),
        (
            r(
                Method::PATCH,
                "/apis/sidecars.dev/v1alpha1/namespaces/a/sidecarpolicies/x/status",
            ),
            "patch",
        ),
        (r(Method::PUT, "/api/v1/namespaces/a/pods/p"), "update"),
    ];
    for (req, want) in cases {
        assert_eq!(verb(&req), want, "{}", req.uri());
    }
    let res = [
        ("/api/v1/namespaces/a/pods/p", "pods"),
        ("/api/v1/pods", "pods"),
        ("/apis/events.k8s.io/v1/namespaces/a/events", "events"),
        (
            "/apis/sidecars.dev/v1alpha1/namespaces/a/sidecarpolicies/x/status",
            "sidecarpolicies/status",
        ),
        (
            "/apis/sidecars.dev/v1alpha1/namespaces/a/sidecarpolicies/x",
            "sidecarpolicies",
        ),
        (
            "/apis/sidecars.dev/v1alpha1/sidecarpolicies",
            "sidecarpolicies",
        ),
        ("/api/v1/namespaces/a/pods/p/status", "other"),
        // Core Events are not the events.k8s.io Events the operator writes.
        ("/api/v1/namespaces/a/events", "other"),
        ("/api/v1/namespaces", "namespaces"),
        ("/api/v1/namespaces/a", "namespaces"),
        ("/apis/other.dev/v1/namespaces/a/leases/l", "other"),
        (
            "/apis/coordination.k8s.io/v1/namespaces/s/leases/l",
            "leases",
        ),
        ("/version", "other"),
    ];
    for (uri, want) in res {
        assert_eq!(resource(&r(Method::GET, uri)), want, "{uri}");
        assert!(RESOURCES.contains(&want));
    }
    assert_eq!(
        <sidecar_api::SidecarPolicy as kube::Resource>::group(&()),
        sidecar_api::constants::GROUP
    );
}

/// The layer of [`gated_client`] around a fake API server that counts what reaches it.
fn gated(gate: Option<WriteGate>) -> (CountingService<FakeServer>, Arc<Counter>, FakeServer) {
    let counter = Arc::new(Counter::default());
    let server = FakeServer::default();
    let layer = CountingLayer {
        counter: counter.clone(),
        gate,
    };
    (tower::Layer::layer(&layer, server.clone()), counter, server)
}

#[derive(Clone, Default)]
struct FakeServer(Arc<std::sync::atomic::AtomicU64>);

impl tower::Service<Request<()>> for FakeServer {
    type Response = ();
    type Error = tower::BoxError;
    type Future = std::future::Ready<Result<(), tower::BoxError>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<()>) -> Self::Future {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(Ok(()))
    }
}

async fn send(svc: &mut CountingService<FakeServer>, m: Method, uri: &str) -> bool {
    use tower::{Service as _, ServiceExt as _};
    let req = Request::builder().method(m).uri(uri).body(()).expect("req");
    svc.ready().await.expect("ready").call(req).await.is_ok()
}

#[tokio::test]
async fn a_closed_gate_keeps_writes_from_being_sent_and_lets_reads_through() {
    let gate = WriteGate::new();
    let (mut svc, counter, server) = gated(Some(gate.clone()));
    let pods = "/api/v1/namespaces/a/pods";
    assert!(!send(&mut svc, Method::POST, pods).await, "fenced");
    assert!(!send(&mut svc, Method::DELETE, "/api/v1/namespaces/a/pods/p").await);
    assert!(send(&mut svc, Method::GET, pods).await, "reads pass");
    assert_eq!(server.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(gate.fenced().get(), 2);
    assert_eq!(
        counter.by_resource(),
        BTreeMap::from([(("pods", "list"), 1)]),
        "a fenced write is not a request"
    );

    gate.open_until(tokio::time::Instant::now() + std::time::Duration::from_secs(60));
    assert!(send(&mut svc, Method::POST, pods).await);
    assert_eq!(counter.snapshot().create, 1);
    // The deadline, not a timer, closes it.
    gate.open_until(tokio::time::Instant::now());
    assert!(!send(&mut svc, Method::POST, pods).await);
    assert_eq!(gate.fenced().get(), 3);
}

#[tokio::test]
async fn without_a_gate_everything_is_sent_and_counted() {
    let (mut svc, counter, server) = gated(None);
    assert!(send(&mut svc, Method::POST, "/api/v1/namespaces/a/pods").await);
    assert!(
        send(
            &mut svc,
            Method::PATCH,
            "/apis/sidecars.dev/v1alpha1/namespaces/a/sidecarpolicies/x/status"
        )
        .await
    );
    assert_eq!(server.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        counter.by_resource(),
        BTreeMap::from([
            (("pods", "create"), 1),
            (("sidecarpolicies/status", "patch"), 1)
        ])
    );
    assert_eq!(counter.snapshot().writes(), 2);
}
