//! Readiness follows the state of the Pod and policy watches themselves.
//!
//! A watch error clears the watch's flag. It is set again by any event of that watch,
//! and — since a watch that resumes after an error (from its last resourceVersion, no
//! relist) delivers nothing until something changes, which on a quiet cluster can take
//! hours — by the API server's successful (2xx) answer to the watch request itself,
//! seen by a layer of the operator's HTTP client.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response};
use std::sync::Arc;

use crate::counter::{resource, verb};

/// Whether the Pod and policy watches are currently established.
#[derive(Debug)]
pub(crate) struct WatchHealth {
    pods: AtomicBool,
    policies: AtomicBool,
}

impl Default for WatchHealth {
    fn default() -> Self {
        WatchHealth {
            pods: AtomicBool::new(true),
            policies: AtomicBool::new(true),
        }
    }
}

impl WatchHealth {
    /// Records the outcome of the latest watch event (`pods`: the Pod watch, else the
    /// policy watch).
    pub(crate) fn set(&self, pods: bool, ok: bool) {
        let flag = if pods { &self.pods } else { &self.policies };
        flag.store(ok, Ordering::SeqCst);
    }

    /// Both watches established.
    pub(crate) fn ok(&self) -> bool {
        self.pods.load(Ordering::SeqCst) && self.policies.load(Ordering::SeqCst)
    }

    /// The API server accepted a watch request for `resource`.
    fn established(&self, resource: &str) {
        match resource {
            "pods" => self.set(true, true),
            "sidecarpolicies" => self.set(false, true),
            _ => {}
        }
    }
}

/// Readiness of one operator instance: both caches completed their first list, and both
/// watches are established now.
#[derive(Debug)]
pub(crate) struct Readiness {
    pods_synced: AtomicBool,
    policies_synced: AtomicBool,
    /// The ClusterSidecarPolicies and the namespaces listed (true from the start when the
    /// instance does not watch cluster policies).
    clusters_synced: AtomicBool,
    pub(crate) watches: Arc<WatchHealth>,
    synced: tokio::sync::Notify,
}

impl Readiness {
    pub(crate) fn new(watches: Arc<WatchHealth>, clusters: bool) -> Self {
        Readiness {
            pods_synced: AtomicBool::new(false),
            policies_synced: AtomicBool::new(false),
            clusters_synced: AtomicBool::new(!clusters),
            watches,
            synced: tokio::sync::Notify::new(),
        }
    }

    /// The Pod (`pods`) and/or policy cache completed a full list.
    pub(crate) fn mark_synced(&self, pods: bool, policies: bool) {
        if pods {
            self.pods_synced.store(true, Ordering::SeqCst);
        }
        if policies {
            self.policies_synced.store(true, Ordering::SeqCst);
        }
        if self.is_synced() {
            self.synced.notify_waiters();
        }
    }

    /// The cluster policies and namespaces completed their first list.
    pub(crate) fn mark_clusters_synced(&self) {
        self.clusters_synced.store(true, Ordering::SeqCst);
        if self.is_synced() {
            self.synced.notify_waiters();
        }
    }

    /// Both caches (and the cluster policies, if watched) completed their first list.
    pub(crate) fn is_synced(&self) -> bool {
        self.pods_synced.load(Ordering::SeqCst)
            && self.policies_synced.load(Ordering::SeqCst)
            && self.clusters_synced.load(Ordering::SeqCst)
    }

    /// Synced, and both watches currently connected (false during an API outage).
    pub(crate) fn is_ready(&self) -> bool {
        self.is_synced() && self.watches.ok()
    }

    /// Returns once both caches are synced.
    pub(crate) async fn wait_synced(&self) {
        loop {
            let notified = self.synced.notified();
            if self.is_synced() {
                return;
            }
            notified.await;
        }
    }
}

/// Client layer: a 2xx answer to a `watch=true` request for Pods or policies marks
/// that watch established.
#[derive(Debug, Clone)]
pub(crate) struct WatchHealthLayer(pub(crate) Arc<WatchHealth>);

impl<S> tower::Layer<S> for WatchHealthLayer {
    type Service = WatchHealthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WatchHealthService {
            inner,
            health: self.0.clone(),
        }
    }
}

/// See [`WatchHealthLayer`].
#[derive(Debug, Clone)]
pub(crate) struct WatchHealthService<S> {
    inner: S,
    health: Arc<WatchHealth>,
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for WatchHealthService<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let watched = (verb(&req) == "watch").then(|| resource(&req));
        let fut = self.inner.call(req);
        let health = self.health.clone();
        Box::pin(async move {
            let res = fut.await;
            if let (Some(resource), Ok(resp)) = (watched, &res)
                && resp.status().is_success()
            {
                health.established(resource);
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer as _, ServiceExt as _};

    async fn answer(health: &Arc<WatchHealth>, uri: &str, status: u16) {
        let svc = tower::service_fn(move |_req: Request<()>| async move {
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(status)
                    .body(())
                    .expect("response"),
            )
        });
        let req = Request::builder().uri(uri).body(()).expect("request");
        WatchHealthLayer(health.clone())
            .layer(svc)
            .oneshot(req)
            .await
            .expect("infallible");
    }

    #[tokio::test]
    async fn an_accepted_watch_request_marks_its_watch_established() {
        let h = Arc::new(WatchHealth::default());
        h.set(true, false);
        h.set(false, false);
        // Lists, refused watches and watches of other resources change nothing.
        answer(&h, "/api/v1/namespaces/a/pods?limit=100", 200).await;
        answer(
            &h,
            "/api/v1/namespaces/a/pods?watch=true&resourceVersion=5",
            503,
        )
        .await;
        answer(&h, "/api/v1/namespaces?watch=true", 200).await;
        assert!(!h.pods.load(Ordering::SeqCst) && !h.ok());
        answer(
            &h,
            "/api/v1/namespaces/a/pods?watch=true&resourceVersion=5",
            200,
        )
        .await;
        assert!(
            h.pods.load(Ordering::SeqCst) && !h.ok(),
            "the Pod watch only"
        );
        answer(
            &h,
            "/apis/sidecars.dev/v1alpha1/sidecarpolicies?watch=true&resourceVersion=7",
            200,
        )
        .await;
        assert!(h.ok());
    }
}
