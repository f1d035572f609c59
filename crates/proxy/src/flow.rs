//! Whether an established session has something in flight, as both relay directions see it, and
//! the bytes it relayed (for the access log).
//!
//! A graceful stop may end a session only between requests: when every message the client sent
//! has been answered up to its ReadyForQuery. The client direction counts the messages that each
//! end in exactly one ReadyForQuery (Query, Sync, FunctionCall; the startup packet counts as the
//! first), the server direction counts the ReadyForQuery messages it relays, and extended-protocol
//! messages sent without their Sync yet (Parse, Bind, Execute, ...) mark the session busy until a
//! request follows. Authentication and COPY data belong to a request already counted.
//!
//! Invariant: the count, the "partial" mark and the "closed" mark live in one atomic word, so the
//! decision to close an idle session ([`Flow::close_if_idle`]) and a client's next request
//! ([`Flow::client_sends`]) are ordered: either the request is forwarded and the session is not
//! idle, or the session is closed and the request is never forwarded (the client gets 57P01
//! without its query having reached the server).

use std::sync::atomic::{AtomicU64, Ordering};

const CLOSED: u64 = 1 << 63;
const PARTIAL: u64 = 1 << 62;
const COUNT: u64 = PARTIAL - 1;

/// How a client message counts towards what is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientMessage {
    /// Answered by exactly one ReadyForQuery: Query, Sync, FunctionCall.
    Request,
    /// Part of an exchange already counted: authentication, COPY data, Terminate.
    Within,
    /// Waits for a later Sync: Parse, Bind, Describe, Execute, Close, Flush, anything else.
    Partial,
}

impl ClientMessage {
    /// Classifies a client message by its type byte.
    pub(crate) fn of(tag: u8) -> ClientMessage {
        match tag {
            b'Q' | b'S' | b'F' => ClientMessage::Request,
            b'p' | b'd' | b'c' | b'f' | b'X' => ClientMessage::Within,
            _ => ClientMessage::Partial,
        }
    }
}

/// One session's in-flight state and relayed bytes.
#[derive(Debug)]
pub(crate) struct Flow {
    state: AtomicU64,
    /// Bytes relayed from the client to the server.
    pub(crate) bytes_from_client: AtomicU64,
    /// Bytes sent to the client (relayed, or the proxy's own replacement messages).
    pub(crate) bytes_to_client: AtomicU64,
}

impl Default for Flow {
    fn default() -> Self {
        // The startup packet is answered by the first ReadyForQuery.
        Flow { state: AtomicU64::new(1), bytes_from_client: AtomicU64::new(0), bytes_to_client: AtomicU64::new(0) }
    }
}

impl Flow {
    /// The client direction is about to forward `requests` requests; `trailing`: messages that
    /// wait for a later Sync follow the last of them. `false`: the session was closed as idle,
    /// so nothing may be forwarded any more.
    pub(crate) fn client_sends(&self, requests: u64, trailing: bool) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                if s & CLOSED != 0 {
                    return None;
                }
                let partial = if requests > 0 { trailing } else { trailing || s & PARTIAL != 0 };
                Some(((s & COUNT) + requests).min(COUNT) | if partial { PARTIAL } else { 0 })
            })
            .is_ok()
    }

    /// The server direction relayed `n` ReadyForQuery messages.
    pub(crate) fn server_ready(&self, n: u64) {
        if n == 0 {
            return;
        }
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| Some((s & !COUNT) | (s & COUNT).saturating_sub(n)));
    }

    /// Closes the session if nothing is in flight; true when it did (the caller then ends it).
    /// The caller checks the transaction status itself: idle means outside a transaction block.
    pub(crate) fn close_if_idle(&self) -> bool {
        self.state.compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Closes the session whatever is in flight (the shutdown bound, a fence, an error).
    pub(crate) fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
    }
}

/// How the whole frames in a client's chunk count: the requests among them, and whether messages
/// that wait for a later Sync follow the last request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChunkCount {
    pub(crate) requests: u64,
    pub(crate) trailing: bool,
}

impl ChunkCount {
    /// Adds one message.
    pub(crate) fn add(&mut self, tag: u8) {
        match ClientMessage::of(tag) {
            ClientMessage::Request => {
                self.requests += 1;
                self.trailing = false;
            }
            ClientMessage::Within => {}
            ClientMessage::Partial => self.trailing = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(tags: &[u8]) -> ChunkCount {
        let mut c = ChunkCount::default();
        tags.iter().for_each(|&t| c.add(t));
        c
    }

    fn send(f: &Flow, tags: &[u8]) -> bool {
        let c = chunk(tags);
        f.client_sends(c.requests, c.trailing)
    }

    #[test]
    fn a_session_is_idle_only_once_every_request_is_answered() {
        let f = Flow::default();
        assert!(!f.close_if_idle(), "the startup waits for its ReadyForQuery");
        assert!(send(&f, b"p"), "authentication belongs to the startup");
        f.server_ready(1);
        assert!(send(&f, b"Q"));
        assert!(!f.close_if_idle(), "a query in flight");
        f.server_ready(1);
        assert!(f.close_if_idle(), "answered: idle");
        assert!(!send(&f, b"Q"), "a closed session forwards nothing");
    }

    #[test]
    fn pipelines_and_unsynced_messages_keep_a_session_busy() {
        let f = Flow::default();
        f.server_ready(1);
        assert!(send(&f, b"PBDES"));
        assert!(send(&f, b"Q"));
        f.server_ready(1);
        assert!(!f.close_if_idle(), "the second request is still in flight");
        f.server_ready(1);
        assert!(f.close_if_idle());

        let f = Flow::default();
        f.server_ready(1);
        assert!(send(&f, b"PBEH"), "extended protocol, flushed, not synced");
        assert!(!f.close_if_idle(), "its Sync is still to come");
        assert!(send(&f, b"S"));
        f.server_ready(1);
        assert!(f.close_if_idle());
    }

    #[test]
    fn copy_data_belongs_to_its_query() {
        let f = Flow::default();
        f.server_ready(1);
        assert!(send(&f, b"Q"));
        assert!(send(&f, b"ddc"));
        assert!(!f.close_if_idle());
        f.server_ready(1);
        assert!(f.close_if_idle());
    }

    #[test]
    fn close_wins_over_everything_and_counts_never_underflow() {
        let f = Flow::default();
        f.server_ready(5);
        assert!(send(&f, b"Q"));
        f.close();
        assert!(!send(&f, b"S"));
        assert!(!f.close_if_idle(), "already closed");
    }
}
