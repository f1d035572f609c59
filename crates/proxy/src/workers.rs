//! Session worker threads: each runs its own single-threaded tokio runtime, and every session
//! lives on one of them from its first byte to its close.
//!
//! Why: a session is two tasks (one per direction) that wake each other for every query. On a
//! work-stealing runtime those wake-ups cross threads (a futex call and often a context switch
//! each), which on a small machine shared with PostgreSQL cost more CPU than the relaying
//! itself. On a single-threaded runtime they are plain queue pushes, and epoll hands over many
//! ready sockets per call. Several workers (`proxy.workers`, one per CPU by default) spread
//! sessions over the cores, as PgBouncer does with several processes, without sharing a socket
//! between threads: with a single one, every session waits whenever that thread waits for a core,
//! and on a busy host the other cores then go idle.
//!
//! Invariant: a connection handed to [`Workers::dispatch`] is served by exactly one worker; the
//! accepting runtime keeps nothing of it but the connection's [`Ticket`], taken before the
//! hand-off so that a graceful stop waits for connections still queued for a worker.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::lifecycle::{Lifecycle, Ticket};
use crate::session::{self, Port, Shared};

/// Worker numbers are unique in the process (several proxies may run in one, as in tests).
static NEXT_WORKER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The number of the worker running on this thread; none on other threads.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker whose event loop runs on the calling thread, if any: a pooled server connection
/// registered with that loop can be used here without registering it again.
pub(crate) fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// Makes the calling thread count as a worker of its own (tests of what a worker does).
#[cfg(test)]
pub(crate) fn become_worker_for_test() {
    WORKER.with(|w| w.set(Some(NEXT_WORKER.fetch_add(1, Ordering::Relaxed))));
}

/// One accepted connection on its way to a worker.
struct Handoff {
    stream: std::net::TcpStream,
    port: Port,
    peer: String,
    ticket: Ticket,
}

/// The worker threads; dropping this stops them (open sessions are closed with their runtime).
#[derive(Debug)]
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Handoff>>,
    next: AtomicUsize,
    lifecycle: Arc<Lifecycle>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff").field("port", &self.port).field("peer", &self.peer).finish()
    }
}

impl Workers {
    /// Starts `n` worker threads (at least one) serving sessions with `shared`.
    pub fn start(n: usize, shared: Arc<Shared>) -> std::io::Result<Workers> {
        let mut senders = Vec::new();
        let lifecycle = shared.lifecycle.clone();
        for i in 0..n.max(1) {
            let (tx, mut rx) = mpsc::unbounded_channel::<Handoff>();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let shared = shared.clone();
            std::thread::Builder::new().name(format!("proxy-worker-{i}")).spawn(move || {
                WORKER.with(|w| w.set(Some(NEXT_WORKER.fetch_add(1, Ordering::Relaxed))));
                rt.block_on(async move {
                    while let Some(h) = rx.recv().await {
                        match TcpStream::from_std(h.stream) {
                            Ok(s) => {
                                tokio::spawn(session::run(shared.clone(), h.port, s, h.peer, h.ticket));
                            }
                            Err(e) => tracing::warn!(peer = %h.peer, "handing a connection to a worker: {e}"),
                        }
                    }
                });
            })?;
            senders.push(tx);
        }
        Ok(Workers { senders, next: AtomicUsize::new(0), lifecycle })
    }

    /// Hands an accepted connection to the next worker in turn.
    pub fn dispatch(&self, stream: TcpStream, port: Port, peer: String) {
        let ticket = self.lifecycle.ticket();
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, "detaching an accepted connection: {e}");
                return;
            }
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        if self.senders[i].send(Handoff { stream, port, peer, ticket }).is_err() {
            tracing::warn!("proxy worker {i} has stopped; connection dropped");
        }
    }
}
