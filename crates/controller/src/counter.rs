//! Counts every HTTP request the operator's client sends, by verb, so tests and
//! benchmarks can prove "one create per sidecar, no reads per reconcile, no idle writes".

use std::sync::Arc;

use prometheus_client::metrics::family::Family;

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

/// The resource a request is about (bounded set).
pub fn resource<B>(req: &Request<B>) -> &'static str {
    let segs: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let rest = match segs.first() {
        Some(&"api") if segs.len() >= 2 => &segs[2..],
        Some(&"apis") if segs.len() >= 3 => &segs[3..],
        _ => return "other",
    };
    let res = match rest {
        ["namespaces", _, r, ..] => *r,
        [r, ..] => *r,
        [] => "",
    };
    match res {
        "pods" => "pods",
        "sidecarpolicies" => "sidecarpolicies",
        "events" => "events",
        "leases" => "leases",
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
        const RESOURCES: [&str; 4] = ["pods", "sidecarpolicies", "leases", "other"];
        let l = |verb: &'static str| -> u64 {
            RESOURCES
                .iter()
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

/// Builds a client from `config` whose every request is counted by `counter`.
pub fn counting_client(
    config: kube::Config,
    counter: Arc<Counter>,
) -> Result<kube::Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&counting_layer(counter)).build())
}

/// The client layer of [`counting_client`].
pub(crate) fn counting_layer(
    counter: Arc<Counter>,
) -> tower::util::MapRequestLayer<
    impl Fn(Request<kube::client::Body>) -> Request<kube::client::Body> + Clone,
> {
    tower::util::MapRequestLayer::new(move |req: Request<kube::client::Body>| {
        counter.record(&req);
        req
    })
}

#[cfg(test)]
mod tests {
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
                "sidecarpolicies",
            ),
            (
                "/apis/coordination.k8s.io/v1/namespaces/s/leases/l",
                "leases",
            ),
            ("/version", "other"),
        ];
        for (uri, want) in res {
            assert_eq!(resource(&r(Method::GET, uri)), want, "{uri}");
        }
    }
}
