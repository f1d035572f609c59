//! The proxy's lifecycle as every session sees it, and the count of open client connections.
//!
//! A graceful stop (SIGTERM/SIGINT) goes through two phases after [`Phase::Serving`]:
//! * [`Phase::Draining`]: the listeners are closed; a session ends with FATAL 57P01 at its next
//!   idle moment (ReadyForQuery seen, nothing in flight, no transaction open); a query or
//!   transaction in progress runs on; a client not yet connected to a backend (startup, hold) is
//!   refused with 57P03;
//! * [`Phase::Closing`]: `proxy.shutdown_timeout` has passed (or a second signal came): every
//!   remaining session ends with FATAL 57P01 at the next message boundary.
//!
//! Invariant: every accepted connection holds one [`Ticket`] from the moment it is accepted (before
//! it is handed to a worker) until its task ends, so [`Lifecycle::all_closed`] cannot complete while
//! a client is still being served or waits in a worker's queue.

use std::sync::Arc;

use tokio::sync::watch;

/// Where the proxy is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepting and serving.
    Serving,
    /// Stopping: no new connections; sessions end when idle.
    Draining,
    /// The wait is over: every session ends now.
    Closing,
}

/// The phase and the open connections, shared by the accept loops, the workers and the sessions.
#[derive(Debug)]
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
    open: watch::Sender<usize>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle { phase: watch::Sender::new(Phase::Serving), open: watch::Sender::new(0) }
    }
}

impl Lifecycle {
    /// The phase now.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// A receiver of phase changes.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Moves to `phase` unless the proxy is already there or further.
    pub fn advance(&self, phase: Phase) {
        self.phase.send_if_modified(|p| {
            let later = phase > *p;
            if later {
                *p = phase;
            }
            later
        });
    }

    /// Counts a newly accepted connection until the ticket drops.
    pub fn ticket(self: &Arc<Self>) -> Ticket {
        self.open.send_modify(|n| *n += 1);
        Ticket(self.clone())
    }

    /// Client connections open now (accepted and not yet closed).
    pub fn open_connections(&self) -> usize {
        *self.open.borrow()
    }

    /// Completes once no client connection is open.
    pub async fn all_closed(&self) {
        let mut rx = self.open.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Completes once `rx` shows `phase` or a later one; never if the proxy is gone.
pub async fn reached(rx: &mut watch::Receiver<Phase>, phase: Phase) {
    if rx.wait_for(|p| *p >= phase).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One open client connection, counted by [`Lifecycle::all_closed`] while it lives.
#[derive(Debug)]
pub struct Ticket(Arc<Lifecycle>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward_and_tickets_are_counted() {
        let l = Arc::new(Lifecycle::default());
        let mut rx = l.subscribe();
        l.advance(Phase::Closing);
        l.advance(Phase::Draining);
        assert_eq!(l.phase(), Phase::Closing, "a stop never goes back to draining");
        reached(&mut rx, Phase::Draining).await;

        let a = l.ticket();
        let b = l.ticket();
        assert_eq!(l.open_connections(), 2);
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.all_closed().await })
        };
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still open");
        drop(b);
        waiter.await.unwrap();
        assert_eq!(l.open_connections(), 0);
    }
}
