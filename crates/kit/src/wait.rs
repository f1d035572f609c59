//! Polling until a condition holds or a timeout passes: how every launcher here waits for a
//! server to be ready or a process to be gone. The condition is always checked once more at the
//! deadline, so a slow machine does not turn a success into a timeout.

use std::future::Future;
use std::time::{Duration, Instant};

/// Calls `f` every `poll` until it returns true (→ `true`) or `timeout` has passed (→ `false`).
/// `f` is always called at least once, and once more at the deadline.
pub fn wait_until(timeout: Duration, poll: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(poll.min(deadline - now));
    }
}

/// Async twin of [`wait_until`]: awaits `f()` every `poll` until it yields true or `timeout` passed.
pub async fn wait_until_async<F, Fut>(timeout: Duration, poll: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}
