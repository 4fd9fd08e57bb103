//! Polling with timeouts. A test waits for a condition the system under
//! test reaches in its own time; these helpers bound the wait and, when it
//! runs out, fail naming what was awaited and for how long.

use std::time::{Duration, Instant};

/// Polls `ready` every `every` until it holds; panics naming `what` once
/// `within` has passed.
pub fn until(what: &str, within: Duration, every: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

/// Polls `f` every `every` until it gives a value, or `None` once
/// `deadline` has passed (it is asked at least once). For waits whose
/// caller names the failure with more than a label (logs, the last state).
pub fn poll<T>(deadline: Instant, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// [`until`] for an asynchronous condition; sleeps on the runtime's timer.
pub async fn until_async(
    what: &str,
    within: Duration,
    every: Duration,
    mut ready: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !ready().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}
