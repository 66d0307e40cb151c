//! Shutdown, the same in every service: one root cancellation token cancelled by SIGTERM or
//! Ctrl-C, and [`finish_within`], which waits for the work that must finish with a deadline
//! and says what it is still waiting for.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often [`finish_within`] says what it is still waiting for.
const STILL_WAITING_EVERY: Duration = Duration::from_secs(2);

/// Returns a token cancelled on the first SIGTERM or SIGINT. A second signal is left to the
/// default handler's absence: services bound their own drain with [`finish_within`] instead.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        t.cancel();
    });
    token
}

/// Drives `work` (what must finish before the process exits: sends in flight, HTTP requests)
/// for at most `deadline`, logging every two seconds how much of `what` is left (`remaining`
/// may say `None` when it cannot count). Returns `None` when the deadline passed first; the
/// unfinished work is then dropped, which the caller's delivery guarantees must allow.
pub async fn finish_within<F: Future>(
    work: F,
    deadline: Duration,
    what: &str,
    remaining: impl Fn() -> Option<u64>,
) -> Option<F::Output> {
    let end = tokio::time::Instant::now() + deadline;
    tokio::pin!(work);
    loop {
        let step = end.min(tokio::time::Instant::now() + STILL_WAITING_EVERY);
        match tokio::time::timeout_at(step, &mut work).await {
            Ok(out) => return Some(out),
            Err(_) if tokio::time::Instant::now() >= end => {
                tracing::error!(
                    unfinished = remaining(),
                    "shutdown deadline passed; exiting with {what} unfinished"
                );
                return None;
            }
            Err(_) => tracing::info!(remaining = remaining(), "still waiting for {what}"),
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_in_time_returns_its_output() {
        let out = finish_within(
            async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                7
            },
            Duration::from_secs(10),
            "test work",
            || Some(1),
        )
        .await;
        assert_eq!(out, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_the_deadline_is_abandoned() {
        let started = tokio::time::Instant::now();
        let out = finish_within(
            std::future::pending::<()>(),
            Duration::from_secs(5),
            "test work",
            || None,
        )
        .await;
        assert_eq!(out, None);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
