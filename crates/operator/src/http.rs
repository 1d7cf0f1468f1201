//! The HTTP endpoints: `/healthz`, `/readyz` (readiness of a standby or of the running
//! controllers) and `/metrics` (OpenMetrics text).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;

/// Readiness shared with the HTTP server: a standby (leader election) is ready; a running
/// operator is ready while its caches are synced and its watches connected.
#[derive(Default, Clone)]
pub(crate) struct Readiness {
    pub(crate) standby: Arc<AtomicBool>,
    pub(crate) running: Arc<std::sync::Mutex<Option<sidecar_controller::Health>>>,
    /// With the webhook on: whether it answers (synced policies, a certificate). A replica
    /// is ready only when its webhook is, since the Service sends it admissions.
    pub(crate) webhook: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl Readiness {
    pub(crate) fn standing_by(&self, yes: bool) {
        self.standby.store(yes, Ordering::SeqCst);
    }
    pub(crate) fn running(&self, health: Option<sidecar_controller::Health>) {
        *lock(&self.running) = health;
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn prometheus_registry() -> prometheus_client::registry::Registry {
    prometheus_client::registry::Registry::default()
}

pub(crate) async fn serve(
    addr: SocketAddr,
    readiness: &Readiness,
    registry: Arc<std::sync::Mutex<prometheus_client::registry::Registry>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let (ready, health, webhook) = (
        readiness.standby.clone(),
        readiness.running.clone(),
        readiness.webhook.clone(),
    );
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = match health.lock().ok().and_then(|h| h.clone()) {
                    Some(h) => h.is_ready(),
                    None => ready.load(Ordering::SeqCst),
                };
                let webhook_ready = webhook.as_ref().is_none_or(|w| w());
                async move {
                    if !webhook_ready {
                        (StatusCode::SERVICE_UNAVAILABLE, "webhook not ready")
                    } else if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let mut body = String::new();
                let ok = registry
                    .lock()
                    .ok()
                    .map(|r| prometheus_client::encoding::text::encode(&mut body, &r).is_ok())
                    .unwrap_or(false);
                async move {
                    if ok {
                        (
                            StatusCode::OK,
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                    } else {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(header::CONTENT_TYPE, "text/plain")],
                            String::new(),
                        )
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-addr {addr}"))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    }))
}
