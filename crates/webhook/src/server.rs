//! The HTTP side of the webhook: `POST /mutate` answered by [`crate::review::review`], and
//! the Events that tell a policy's owner a Pod was left alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use sidecar_api::constants::{GROUP, KIND, VERSION};
use tokio::sync::{Semaphore, mpsc};

use crate::index::PolicyIndex;
use crate::limits::ServerLimits;
use crate::metrics::{AdmissionLabels, RefusedLabels, WebhookMetrics};
use crate::registration::PATH;
use crate::review::{Outcome, Refusal, review};

/// What the handler shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) index: Arc<PolicyIndex>,
    pub(crate) metrics: Arc<WebhookMetrics>,
    pub(crate) refusals: mpsc::Sender<Refusal>,
}

/// The router: `POST /mutate`, within `limits`: at most `max_requests` requests are read
/// or answered at once (one over waits `queue_timeout` for a slot, then is answered 503),
/// a body must arrive within `request_timeout` (408) and be at most `max_body_bytes`
/// (413).
pub(crate) fn router(shared: Shared, limits: &ServerLimits) -> axum::Router {
    let state = Arc::new(Served {
        slots: Arc::new(Semaphore::new(limits.max_requests)),
        limits: limits.clone(),
        shared,
    });
    axum::Router::new()
        .route(PATH, axum::routing::post(mutate))
        .with_state(state)
}

/// The handler's state: what it shares, and the server's request limits.
struct Served {
    shared: Shared,
    limits: ServerLimits,
    /// One per request being read or answered.
    slots: Arc<Semaphore>,
}

async fn mutate(State(served): State<Arc<Served>>, request: Request) -> Response {
    let limits = &served.limits;
    let refuse = |reason: &'static str, status: StatusCode| {
        served
            .shared
            .metrics
            .refused
            .get_or_create(&RefusedLabels { reason })
            .inc();
        tracing::debug!(reason, "webhook: request refused");
        status.into_response()
    };
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return refuse("too_large", StatusCode::PAYLOAD_TOO_LARGE);
    }
    let slot = served.slots.clone().acquire_owned();
    let Ok(slot) = tokio::time::timeout(limits.queue_timeout, slot).await else {
        return refuse("busy", StatusCode::SERVICE_UNAVAILABLE);
    };
    let _slot = slot.expect("the semaphore is never closed");
    let read = read_body(request.into_body(), limits.max_body_bytes, length);
    let body = match tokio::time::timeout(limits.request_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => {
            return refuse("too_large", StatusCode::PAYLOAD_TOO_LARGE);
        }
        Ok(Err(BodyError::Read(e))) => {
            tracing::debug!(error = %e, "webhook: reading a request body failed");
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
        Err(_) => return refuse("timeout", StatusCode::REQUEST_TIMEOUT),
    };
    answer(&served.shared, &body)
}

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// The whole body, if it is at most `limit` bytes; `length` (the Content-Length, already
/// checked against `limit`) sizes the buffer once, so a body is held once, never copied.
async fn read_body(body: Body, limit: usize, length: Option<u64>) -> Result<Bytes, BodyError> {
    let mut out: Vec<u8> = Vec::with_capacity(length.map_or(0, |n| n as usize));
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        let len = out.len() + chunk.len();
        if len > limit {
            return Err(BodyError::TooLarge);
        }
        if len > out.capacity() {
            // Doubling, but never past the limit.
            let capacity = (out.capacity() * 2).max(len).min(limit);
            out.reserve_exact(capacity - out.len());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// One admission review answered.
fn answer(s: &Shared, body: &[u8]) -> Response {
    let started = Instant::now();
    let answer = review(body, |ns| s.index.in_namespace(ns));
    s.metrics.duration.observe(started.elapsed().as_secs_f64());
    s.metrics
        .admissions
        .get_or_create(&AdmissionLabels {
            result: answer.outcome.result(),
            reason: answer.outcome.reason(),
        })
        .inc();
    match &answer.outcome {
        Outcome::Injected(p) => tracing::debug!(policies = ?p, "webhook: injected"),
        Outcome::Unchanged(why) => tracing::trace!(why, "webhook: unchanged"),
        Outcome::Error(e) => tracing::warn!(error = %e, "webhook: review not answered as asked"),
    }
    for r in answer.refusals {
        // Never waits: a full queue drops the Event (the policy's status says it too).
        let _ = s.refusals.try_send(r);
    }
    match answer.body {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => {
            let text = match answer.outcome {
                Outcome::Error(e) => e,
                _ => String::new(),
            };
            (StatusCode::BAD_REQUEST, text).into_response()
        }
    }
}

/// Publishes a Warning Event on each policy that was skipped for a Pod, at most one per
/// policy and Pod name (or generateName) every `every`: a Deployment of 100 replicas
/// that all collide makes one Event, not 100. Runs until its sender side is dropped.
pub(crate) async fn publish_refusals(
    client: kube::Client,
    reporter: Reporter,
    index: Arc<PolicyIndex>,
    mut rx: mpsc::Receiver<Refusal>,
    every: Duration,
) {
    let recorder = Recorder::new(client, reporter);
    // Only this task reads and writes it.
    let mut last: HashMap<(String, String, String), Instant> = HashMap::new();
    while let Some(r) = rx.recv().await {
        let key = (r.namespace.clone(), r.policy.clone(), r.pod.clone());
        let now = Instant::now();
        last.retain(|_, t| now.duration_since(*t) < every);
        if last.contains_key(&key) {
            continue;
        }
        last.insert(key, now);
        let reference = match index.get(&r.namespace, &r.policy) {
            Some(p) => p.object_ref(),
            None => ObjectReference {
                api_version: Some(format!("{GROUP}/{VERSION}")),
                kind: Some(KIND.into()),
                namespace: Some(r.namespace.clone()),
                name: Some(r.policy.clone()),
                ..ObjectReference::default()
            },
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "NotInjected".into(),
            note: Some(truncate(format!("Pod {}: {}", r.pod, r.skip.message()))),
            action: "Inject".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "webhook: publishing an Event failed");
        }
    }
}

/// Event notes are limited to 1 kB.
fn truncate(mut s: String) -> String {
    if s.len() > 1000 {
        let mut cut = 1000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
