//! Polling the cluster with a timeout.

use std::time::{Duration, Instant};

/// Polls `probe` every 200 ms until it yields `Some`; `None` after `timeout`.
pub async fn poll<T>(timeout: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `probe` every 200 ms until it yields `Some`, or panics after `timeout` naming `what`.
pub async fn wait_until<T>(
    timeout: Duration,
    what: &str,
    probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    match poll(timeout, probe).await {
        Some(v) => v,
        None => panic!("timed out after {}s waiting for {what}", timeout.as_secs()),
    }
}
