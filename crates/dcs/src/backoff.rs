//! Exponential backoff with jitter for retries and watch re-creation.
//!
//! Invariant: delays grow from `min` to at most `max` and never drop below half their nominal
//! value, so many agents that lost etcd at the same moment do not come back in lockstep, yet a
//! retry always happens within `max`.

use std::time::Duration;

/// Doubling delays between `min` and `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min), next: min }
    }

    /// The delay to wait now; the following one is twice as long (up to `max`).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (nominal * 2).min(self.max);
        nominal / 2 + jitter(nominal / 2)
    }

    /// Back to the shortest delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A pseudo-random duration in `[0, span]`. The clock's nanoseconds are random enough to spread
/// agents apart, and avoid a dependency on a random number generator.
fn jitter(span: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    span.mul_f64(f64::from(nanos % 1_000) / 1_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        for (d, nominal) in delays.iter().zip([100, 200, 400, 400, 400]) {
            assert!(*d >= Duration::from_millis(nominal / 2) && *d <= Duration::from_millis(nominal), "{d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
