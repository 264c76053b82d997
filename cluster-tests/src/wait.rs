//! Polling with deadlines.
//!
//! Cluster tests never sleep for a fixed time to "let things settle": they poll an observable
//! condition every [`POLL_INTERVAL`] until it holds or a deadline passes, and a timeout names
//! what was awaited and the last reason it did not hold.

use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::ApiError;

/// Pause between two probes of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `probe` until it yields `Some(value)`, returning the value. A probe error means "not
/// yet" (the last one is quoted if the deadline passes); use it to say why a state is not
/// reached.
pub async fn wait_for<T, F>(desc: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: AsyncFnMut() -> anyhow::Result<Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(format!("{error:#}")),
        }
        if Instant::now() >= deadline {
            let reason = last_error
                .map(|e| format!("; last: {e}"))
                .unwrap_or_default();
            anyhow::bail!("timed out after {timeout:?} waiting for {desc}{reason}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `check` until it returns `Ok(true)`; see [`wait_for`].
pub async fn wait_until<F>(desc: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: AsyncFnMut() -> anyhow::Result<bool>,
{
    wait_for(desc, timeout, async || Ok(check().await?.then_some(()))).await
}

/// Calls `attempt` until it succeeds, whatever the error, returning the last error once the
/// deadline passes.
pub async fn retry_until_ok<T, E, F>(timeout: Duration, mut attempt: F) -> anyhow::Result<T>
where
    E: Display,
    F: AsyncFnMut() -> Result<T, E>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() >= deadline => {
                anyhow::bail!("still failing after {timeout:?}: {error}")
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// Calls `attempt` while it fails with a transient error (no answer, 502/503/504) and the
/// deadline has not passed; any other outcome is returned as is.
pub async fn retry_transient<T, F>(timeout: Duration, mut attempt: F) -> Result<T, ApiError>
where
    F: AsyncFnMut() -> Result<T, ApiError>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(POLL_INTERVAL).await
            }
            outcome => return outcome,
        }
    }
}
