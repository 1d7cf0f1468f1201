//! The HTTP side of the webhook: `POST /mutate` answered by [`crate::review::review`], and
//! the Events that tell a policy's owner a Pod was left alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use sidecar_api::constants::{GROUP, KIND, VERSION};
use tokio::sync::mpsc;

use crate::index::PolicyIndex;
use crate::metrics::{AdmissionLabels, WebhookMetrics};
use crate::registration::PATH;
use crate::review::{Outcome, Refusal, review};

/// What the handler shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) index: Arc<PolicyIndex>,
    pub(crate) metrics: Arc<WebhookMetrics>,
    pub(crate) refusals: mpsc::Sender<Refusal>,
}

/// The router: `POST /mutate`.
pub(crate) fn router(shared: Shared) -> axum::Router {
    axum::Router::new()
        .route(PATH, axum::routing::post(mutate))
        .with_state(shared)
}

async fn mutate(State(s): State<Shared>, body: Bytes) -> Response {
    let started = Instant::now();
    let answer = review(&body, |ns| s.index.in_namespace(ns));
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
