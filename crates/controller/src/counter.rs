//! Counts every HTTP request the operator's client sends, by verb, so tests and
//! benchmarks can prove "one create per sidecar, no reads per reconcile, no idle writes",
//! and a test can compare what the operator uses with what its RBAC grants. The same layer
//! holds writes to the [`WriteGate`] (leader election).

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::metrics::family::Family;

use crate::gate::{Fenced, WriteGate};
use crate::metrics::VerbLabel;

use http::{Method, Request};

/// Request counts by Kubernetes verb, for every resource except Events; Event writes
/// (which the operator sends in the background, aggregated by the events API) are
/// counted apart in `events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiCalls {
    /// Event creates and patches.
    pub events: u64,
    /// GET of one object.
    pub get: u64,
    /// GET of a collection.
    pub list: u64,
    /// GET with `watch=true`.
    pub watch: u64,
    /// POST.
    pub create: u64,
    /// POST with `dryRun=All` (checks a template; persists nothing).
    pub dry_run: u64,
    /// DELETE.
    pub delete: u64,
    /// PATCH.
    pub patch: u64,
    /// PUT.
    pub update: u64,
}

impl ApiCalls {
    /// Requests that change state.
    pub fn writes(&self) -> u64 {
        self.create + self.delete + self.patch + self.update
    }

    /// The requests made since `before` (an earlier reading of the same counter), verb by
    /// verb.
    pub fn since(&self, before: &ApiCalls) -> ApiCalls {
        ApiCalls {
            events: self.events - before.events,
            get: self.get - before.get,
            list: self.list - before.list,
            watch: self.watch - before.watch,
            create: self.create - before.create,
            dry_run: self.dry_run - before.dry_run,
            delete: self.delete - before.delete,
            patch: self.patch - before.patch,
            update: self.update - before.update,
        }
    }
}

/// Request counters by verb (shared with the `api_requests` metric).
#[derive(Debug, Default, Clone)]
pub struct Counter {
    family: Family<VerbLabel, prometheus_client::metrics::counter::Counter>,
}

/// The verb of a request to the Kubernetes API.
pub fn verb<B>(req: &Request<B>) -> &'static str {
    let query = req.uri().query().unwrap_or("");
    match *req.method() {
        Method::POST if query.split('&').any(|kv| kv == "dryRun=All") => "dry-run",
        Method::POST => "create",
        Method::DELETE => "delete",
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::GET
            if query
                .split('&')
                .any(|kv| kv == "watch=true" || kv == "watch=1") =>
        {
            "watch"
        }
        Method::GET if is_collection(req.uri().path()) => "list",
        _ => "get",
    }
}

/// Every value [`resource`] returns. Each name is an RBAC resource (`/subresource`
/// included) of the one API group the operator uses it in, so a count per (resource,
/// verb) compares one to one with the rules of a ClusterRole.
pub const RESOURCES: [&str; 10] = [
    "pods",
    "pods/eviction",
    "sidecarpolicies",
    "sidecarpolicies/status",
    "events",
    "leases",
    "namespaces",
    "secrets",
    "mutatingwebhookconfigurations",
    "other",
];

/// The resource a request is about: one of [`RESOURCES`] (`other` for anything else,
/// including the same name in another API group).
pub fn resource<B>(req: &Request<B>) -> &'static str {
    let segs: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _, rest @ ..] => ("", rest),
        ["apis", group, _, rest @ ..] => (*group, rest),
        _ => return "other",
    };
    // [namespaces/{ns}/]{resource}[/{name}[/{subresource}]]
    let (res, after) = match rest {
        ["namespaces", _, res, after @ ..] => (*res, after),
        [res, after @ ..] => (*res, after),
        [] => return "other",
    };
    let sub = after.get(1).copied();
    match (group, res, sub) {
        ("", "pods", None) => "pods",
        ("", "pods", Some("eviction")) => "pods/eviction",
        (sidecar_api::constants::GROUP, "sidecarpolicies", None) => "sidecarpolicies",
        (sidecar_api::constants::GROUP, "sidecarpolicies", Some("status")) => {
            "sidecarpolicies/status"
        }
        (sidecar_api::constants::GROUP, "clustersidecarpolicies", None) => "clustersidecarpolicies",
        (sidecar_api::constants::GROUP, "clustersidecarpolicies", Some("status")) => {
            "clustersidecarpolicies/status"
        }
        ("events.k8s.io", "events", None) => "events",
        ("coordination.k8s.io", "leases", None) => "leases",
        ("", "namespaces", None) => "namespaces",
        ("", "secrets", None) => "secrets",
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", None) => {
            "mutatingwebhookconfigurations"
        }
        _ => "other",
    }
}

/// `/api/v1/[namespaces/{ns}/]{resource}` or `/apis/{g}/{v}/[namespaces/{ns}/]{resource}`.
fn is_collection(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.first() {
        Some(&"api") if segs.len() >= 2 => &segs[2..],
        Some(&"apis") if segs.len() >= 3 => &segs[3..],
        _ => return false,
    };
    matches!(rest, [_] | ["namespaces", _, _])
}

impl Counter {
    /// Counts into `family` (the `api_requests` metric).
    pub fn new(family: Family<VerbLabel, prometheus_client::metrics::counter::Counter>) -> Self {
        Counter { family }
    }

    /// Counts one request.
    pub fn record<B>(&self, req: &Request<B>) {
        self.family
            .get_or_create(&VerbLabel {
                verb: verb(req),
                resource: resource(req),
            })
            .inc();
    }

    /// A snapshot.
    pub fn snapshot(&self) -> ApiCalls {
        let l = |verb: &'static str| -> u64 {
            RESOURCES
                .iter()
                .filter(|r| **r != "events")
                .map(|resource| {
                    self.family
                        .get_or_create(&VerbLabel { verb, resource })
                        .get()
                })
                .sum()
        };
        let ev = |verb: &'static str| {
            self.family
                .get_or_create(&VerbLabel {
                    verb,
                    resource: "events",
                })
                .get()
        };
        ApiCalls {
            events: ev("create") + ev("patch"),
            get: l("get"),
            list: l("list"),
            watch: l("watch"),
            create: l("create"),
            dry_run: l("dry-run"),
            delete: l("delete"),
            patch: l("patch"),
            update: l("update"),
        }
    }
}

/// Every value [`verb`] returns.
pub const VERBS: [&str; 8] = [
    "get", "list", "watch", "create", "dry-run", "delete", "patch", "update",
];

/// A request that changes state (create, delete, patch, update).
pub fn is_write<B>(req: &Request<B>) -> bool {
    matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

impl Counter {
    /// Requests counted so far per (resource, verb), the ones never sent left out.
    pub fn by_resource(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        let mut out = BTreeMap::new();
        for resource in RESOURCES {
            for verb in VERBS {
                let n = self
                    .family
                    .get_or_create(&VerbLabel { verb, resource })
                    .get();
                if n > 0 {
                    out.insert((resource, verb), n);
                }
            }
        }
        out
    }
}

/// Builds a client from `config` whose every request is counted by `counter`.
pub fn counting_client(
    config: kube::Config,
    counter: Arc<Counter>,
) -> Result<kube::Client, kube::Error> {
    gated_client(config, counter, None)
}

/// Like [`counting_client`]; with a `gate`, a write (create, delete, patch, update) passes
/// only while the gate is open ([`WriteGate`]). A write the gate refuses is never sent:
/// it fails with [`Fenced`] and is counted by [`WriteGate::fenced`], not as a request.
/// Reads always pass.
pub fn gated_client(
    config: kube::Config,
    counter: Arc<Counter>,
    gate: Option<WriteGate>,
) -> Result<kube::Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&counting_layer(counter, gate)).build())
}

/// The client layer of [`gated_client`]: counts every request, and refuses writes once
/// `gate` is closed.
pub(crate) fn counting_layer(counter: Arc<Counter>, gate: Option<WriteGate>) -> CountingLayer {
    CountingLayer { counter, gate }
}

/// The outermost layer of the client: every request passes through it.
#[derive(Clone)]
pub(crate) struct CountingLayer {
    counter: Arc<Counter>,
    gate: Option<WriteGate>,
}

impl<S> tower::Layer<S> for CountingLayer {
    type Service = CountingService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountingService {
            inner,
            counter: self.counter.clone(),
            gate: self.gate.clone(),
        }
    }
}

pub(crate) struct CountingService<S> {
    inner: S,
    counter: Arc<Counter>,
    gate: Option<WriteGate>,
}

impl<S, B> tower::Service<Request<B>> for CountingService<S>
where
    S: tower::Service<Request<B>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<S::Response, tower::BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Checked when the request enters the client, against the clock: no timer has to
        // fire first, so a process resumed after its deadline cannot send even one write.
        if let Some(gate) = &self.gate
            && is_write(&req)
            && !gate.is_open()
        {
            gate.fenced().inc();
            tracing::debug!(method = %req.method(), path = req.uri().path(), "write fenced: leadership lapsed");
            return Box::pin(std::future::ready(Err(Box::new(Fenced) as tower::BoxError)));
        }
        self.counter.record(&req);
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
#[path = "counter_tests.rs"]
mod tests;
