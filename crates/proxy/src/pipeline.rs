//! What a pooled server still owes: the requests sent to it, in order, each with what to do with
//! its answer. With it the proxy can send messages the client did not (a `Parse` of a statement
//! prepared lazily on this server), answer messages itself that the server never sees (a `Close`
//! of a statement the proxy keeps, a `Parse` already prepared here), and the client still gets
//! exactly the answers to its own messages, in order (PgBouncer 1.21's outstanding requests).
//!
//! The rules of PostgreSQL's protocol it relies on:
//! * Parse, Bind and Close are answered by one message (ParseComplete, BindComplete,
//!   CloseComplete); Describe of a statement by ParameterDescription and then RowDescription or
//!   NoData, of a portal by RowDescription or NoData; Execute by its rows (or a COPY) and then
//!   CommandComplete, EmptyQueryResponse or PortalSuspended; Sync by ReadyForQuery; a simple
//!   Query or a FunctionCall by everything up to its ReadyForQuery; Flush by nothing.
//! * After an ErrorResponse to an extended-protocol message the server skips everything up to
//!   the next Sync, which still gets its ReadyForQuery: the requests in between get no answer,
//!   and neither do the proxy's synthetic answers among them. The error goes to the client even
//!   when it answers an injected message: it explains why its own messages went unanswered.
//! * NoticeResponse, ParameterStatus and NotificationResponse may come at any time; they go to
//!   the client (whose session the server serves), never count as an answer.
//!
//! Invariant: every byte a client receives is the answer to one of its own messages (or an
//! asynchronous message of its session), in the order it sent them; a server message nothing
//! explains is an error, and the caller drops that server (except an ErrorResponse when nothing is
//! asked: the server ending the session on its own, which the client reads as it would directly).

use std::collections::VecDeque;
use std::ops::Range;

use bytes::BytesMut;

use crate::frame::FrameRef;

/// A request sent to the server (or answered by the proxy), by what answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `P`: ParseComplete.
    Parse,
    /// `B`: BindComplete.
    Bind,
    /// `C`: CloseComplete.
    Close,
    /// `D` of a statement: ParameterDescription, then RowDescription or NoData.
    DescribeStatement,
    /// `D` of a portal: RowDescription or NoData.
    DescribePortal,
    /// `E`: rows or a COPY, then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// `S`: ReadyForQuery.
    Sync,
    /// `Q` or `F`: everything up to ReadyForQuery.
    Query,
}

impl Kind {
    /// The request a client's message makes, passed on as it is; `None` for messages the server
    /// does not answer (Flush, COPY data).
    pub fn of_client_message<'f>(frame: impl Into<FrameRef<'f>>) -> Option<Kind> {
        let frame = frame.into();
        match frame.tag() {
            b'P' => Some(Kind::Parse),
            b'B' => Some(Kind::Bind),
            b'C' => Some(Kind::Close),
            b'D' if frame.body().first() == Some(&b'S') => Some(Kind::DescribeStatement),
            b'D' => Some(Kind::DescribePortal),
            b'E' => Some(Kind::Execute),
            b'S' => Some(Kind::Sync),
            b'Q' | b'F' => Some(Kind::Query),
            _ => None,
        }
    }

    /// Whether `tag` is the last message of this request's answer.
    fn ends_with(self, tag: u8) -> bool {
        match self {
            Kind::Parse => tag == b'1',
            Kind::Bind => tag == b'2',
            Kind::Close => tag == b'3',
            Kind::DescribeStatement | Kind::DescribePortal => matches!(tag, b'T' | b'n'),
            Kind::Execute => matches!(tag, b'C' | b'I' | b's'),
            Kind::Sync | Kind::Query => tag == b'Z',
        }
    }

    /// Whether an error ends it and makes the server skip to the next Sync.
    fn extended(self) -> bool {
        !matches!(self, Kind::Sync | Kind::Query)
    }
}

/// Who a request came from, which decides what becomes of its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The client's own message: its answer goes to the client.
    Client,
    /// Sent by the proxy on its own (a lazy Parse): its answer is swallowed.
    Injected,
    /// Never sent to the server: the proxy answers with these bytes when its turn comes.
    Synthetic(BytesMut),
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    origin: Origin,
    /// A Parse that prepares this statement (see [`Outstanding::sent_parse`]).
    prepares: Option<u64>,
}

/// Why a server message cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// A message that answers nothing outstanding.
    #[error("the server sent message {} that answers no request", crate::frame::printable(*tag))]
    Unexpected {
        /// Its type byte.
        tag: u8,
    },
}

/// The requests a server still owes answers to.
#[derive(Debug, Default)]
pub struct Outstanding {
    queue: VecDeque<Pending>,
    /// Bytes for the client, in order, not yet taken.
    to_client: BytesMut,
    /// Forwarded messages not yet copied to `to_client`: this range of the server's buffer being
    /// placed ([`Outstanding::received_in`]), copied in one piece when something else must
    /// follow them or at [`Outstanding::end_run`]. Empty between placings.
    run: Range<usize>,
}

/// Messages that may come at any time and are not answers.
fn asynchronous(tag: u8) -> bool {
    matches!(tag, b'N' | b'S' | b'A')
}

impl Outstanding {
    /// Records a request, in the order sent (or, for a synthetic one, in the order the client
    /// sent the message it answers).
    pub fn sent(&mut self, kind: Kind, origin: Origin) {
        self.queue.push_back(Pending { kind, origin, prepares: None });
        self.answer_synthetic();
    }

    /// Records a Parse sent to the server that prepares statement `id` there: if it fails, or
    /// is skipped after an earlier error, [`Outstanding::received`] names `id` as not prepared.
    pub fn sent_parse(&mut self, origin: Origin, id: u64) {
        self.queue.push_back(Pending { kind: Kind::Parse, origin, prepares: Some(id) });
    }

    /// Places one server message: forwarded to the client, swallowed, or an error. Returns the
    /// statements whose Parse failed or was skipped (they are not prepared on this server).
    /// (Tests; the proxy places a whole buffer with [`Outstanding::received_in`].)
    #[cfg(test)]
    pub fn received<'f>(&mut self, frame: impl Into<FrameRef<'f>>) -> Result<Vec<u64>, PipelineError> {
        let frame = frame.into();
        let placed = self.received_in(frame.as_bytes(), 0, frame);
        self.end_run(frame.as_bytes());
        placed
    }

    /// [`Outstanding::received`] of `frame`, which lies at `at` in `buf`, the server's buffer
    /// being placed front to back: forwarded messages that follow one another there are copied
    /// to the client's bytes together (one copy per answer rather than one per message). End
    /// the placing with [`Outstanding::end_run`] on the same buffer.
    pub fn received_in(&mut self, buf: &[u8], at: usize, frame: FrameRef<'_>) -> Result<Vec<u64>, PipelineError> {
        let tag = frame.tag();
        let len = frame.as_bytes().len();
        debug_assert_eq!(buf.get(at..at + len), Some(frame.as_bytes()), "the frame lies at `at` in `buf`");
        if asynchronous(tag) {
            self.forward(buf, at, len);
            return Ok(Vec::new());
        }
        let mut unprepared = Vec::new();
        let Some(head) = self.queue.front() else {
            // With nothing asked, an error is the server ending the session on its own (an
            // administrator's termination, the postmaster's death): the client's to read, as on
            // a direct connection, before the close that follows.
            if tag == b'E' {
                self.forward(buf, at, len);
                return Ok(unprepared);
            }
            return Err(PipelineError::Unexpected { tag });
        };
        if matches!(head.origin, Origin::Synthetic(_)) {
            // Synthetic answers are given as soon as they come first; one cannot be ahead here.
            return Err(PipelineError::Unexpected { tag });
        }
        let (kind, from_client) = (head.kind, head.origin == Origin::Client);
        // An error of an injected message is the client's too: the server now skips the
        // client's own messages up to the Sync, and the client must learn why.
        if from_client || tag == b'E' {
            self.forward(buf, at, len);
        }
        if tag == b'E' && kind.extended() {
            // The server skips up to the next Sync: nothing before it will be answered.
            unprepared.extend(self.queue.pop_front().and_then(|p| p.prepares));
            while self.queue.front().is_some_and(|p| p.kind != Kind::Sync) {
                unprepared.extend(self.queue.pop_front().and_then(|p| p.prepares));
            }
        } else if kind.ends_with(tag) {
            self.queue.pop_front();
        } else {
            // The head still waits for more (rows, its ReadyForQuery): nothing synthetic comes
            // first yet.
            return Ok(unprepared);
        }
        if self.synthetic_first() {
            // After what was forwarded before it.
            self.end_run(buf);
            self.answer_synthetic();
        }
        Ok(unprepared)
    }

    /// Copies the forwarded messages of the run to the client's bytes: the end of a placing of
    /// `buf` (the buffer [`Outstanding::received_in`] was given).
    pub fn end_run(&mut self, buf: &[u8]) {
        if !self.run.is_empty() {
            self.to_client.extend_from_slice(&buf[self.run.clone()]);
        }
        self.run = 0..0;
    }

    /// Forwards the message at `at..at + len` of `buf`: it joins the run when it follows it.
    fn forward(&mut self, buf: &[u8], at: usize, len: usize) {
        if self.run.is_empty() || self.run.end != at {
            self.end_run(buf);
            self.run.start = at;
            self.run.end = at;
        }
        self.run.end += len;
    }

    /// Whether a synthetic answer is next.
    fn synthetic_first(&self) -> bool {
        matches!(self.queue.front(), Some(Pending { origin: Origin::Synthetic(_), .. }))
    }

    /// Gives the synthetic answers that have come first (after everything forwarded before:
    /// no run is open).
    fn answer_synthetic(&mut self) {
        debug_assert!(self.run.is_empty(), "a run of forwarded messages goes first");
        while let Some(Pending { origin: Origin::Synthetic(_), .. }) = self.queue.front() {
            if let Some(Pending { origin: Origin::Synthetic(bytes), .. }) = self.queue.pop_front() {
                self.to_client.extend_from_slice(&bytes);
            }
        }
    }

    /// What the client is to receive now (tests; the proxy uses [`Outstanding::move_to_client`]).
    #[cfg(test)]
    pub fn take_to_client(&mut self) -> BytesMut {
        self.to_client.split()
    }

    /// Whether the next answer the server owes goes to the client (its own message's), rather
    /// than being swallowed (an injected one's).
    pub fn answers_client(&self) -> bool {
        self.queue.front().is_some_and(|p| p.origin == Origin::Client)
    }

    /// Moves what the client is to receive now to the end of `dst`: the buffers trade places
    /// when `dst` is empty (the common case: no copy, no allocation).
    pub fn move_to_client(&mut self, dst: &mut BytesMut) {
        if self.to_client.is_empty() {
            return;
        }
        if dst.is_empty() {
            std::mem::swap(dst, &mut self.to_client);
        } else {
            dst.extend_from_slice(&self.to_client);
            self.to_client.clear();
        }
    }

    /// Owes nothing and holds nothing for the client: fit for the client's next server.
    pub fn is_clear(&self) -> bool {
        self.queue.is_empty() && self.to_client.is_empty()
    }

    /// Whether the server owes nothing (it may be given to another client once the session is
    /// also idle, ReadyForQuery `I`).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{frame_at, split_frame, Frame};

    fn msg(tag: u8) -> Frame {
        Frame::new(tag, b"")
    }

    fn synthetic(tag: u8) -> Origin {
        Origin::Synthetic(BytesMut::from(msg(tag).as_bytes().as_ref()))
    }

    /// The type bytes of what the client received.
    fn tags(o: &mut Outstanding) -> String {
        let mut b = o.take_to_client();
        let mut out = String::new();
        while let Some(f) = split_frame(&mut b, 1 << 20).unwrap() {
            out.push(f.tag() as char);
        }
        out
    }

    fn receive(o: &mut Outstanding, tags: &str) {
        for t in tags.bytes() {
            o.received(&msg(t)).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// The client sent Bind s1, Execute, Close s1, Sync; the proxy prepared s1 first (an injected
    /// Parse) and answers the Close itself.
    fn lazy_parse_then_bind_execute_close_sync() -> Outstanding {
        let mut o = Outstanding::default();
        o.sent(Kind::Parse, Origin::Injected);
        o.sent(Kind::Bind, Origin::Client);
        o.sent(Kind::Execute, Origin::Client);
        o.sent(Kind::Close, synthetic(b'3'));
        o.sent(Kind::Sync, Origin::Client);
        o
    }

    #[test]
    fn what_the_client_is_owed_moves_to_its_buffer_in_order() {
        let mut o = Outstanding::default();
        o.sent(Kind::Query, Origin::Client);
        o.sent(Kind::Query, Origin::Client);
        receive(&mut o, "TDCZ");
        let mut out = BytesMut::new();
        o.move_to_client(&mut out);
        receive(&mut o, "CZ");
        o.move_to_client(&mut out);
        o.move_to_client(&mut out);
        let mut seen = String::new();
        while let Some(f) = split_frame(&mut out, 1 << 20).unwrap() {
            seen.push(f.tag() as char);
        }
        assert_eq!(seen, "TDCZCZ", "appended after what was there, once");
        assert_eq!(tags(&mut o), "");
    }

    #[test]
    fn an_answer_placed_from_one_buffer_reaches_the_client_as_if_placed_message_by_message() {
        let frames: Vec<Frame> = [
            (b'1', &b""[..]),
            (b'2', b""),
            (b'D', b"row one"),
            (b'N', b"a notice among the rows"),
            (b'D', b"row two"),
            (b'C', b"SELECT 2\0"),
            (b'Z', b"I"),
        ]
        .iter()
        .map(|(tag, body)| Frame::new(*tag, body))
        .collect();
        let mut one_by_one = lazy_parse_then_bind_execute_close_sync();
        for f in &frames {
            one_by_one.received(f).unwrap();
        }
        let mut buf = BytesMut::new();
        for f in &frames {
            buf.extend_from_slice(f.as_bytes());
        }
        let mut batched = lazy_parse_then_bind_execute_close_sync();
        let mut at = 0;
        while let Some(f) = frame_at(&buf[at..], 1 << 20).unwrap() {
            let len = f.as_bytes().len();
            batched.received_in(&buf, at, f).unwrap();
            at += len;
        }
        batched.end_run(&buf);
        let expected = one_by_one.take_to_client();
        assert_eq!(batched.take_to_client(), expected, "the same bytes in the same order");
        let mut out = expected;
        let mut seen = String::new();
        while let Some(f) = split_frame(&mut out, 1 << 20).unwrap() {
            seen.push(f.tag() as char);
        }
        assert_eq!(seen, "2DNDC3Z", "ParseComplete swallowed, the synthetic CloseComplete after the rows");
        assert!(batched.is_clear());
    }

    #[test]
    fn an_error_with_nothing_asked_is_the_server_s_farewell_and_reaches_the_client() {
        let mut o = Outstanding::default();
        receive(&mut o, "E");
        assert_eq!(tags(&mut o), "E");
        assert_eq!(
            o.received(&msg(b'C')),
            Err(PipelineError::Unexpected { tag: b'C' }),
            "anything else is out of place"
        );
    }

    #[test]
    fn an_injected_parse_is_swallowed_and_a_synthetic_close_answered_in_order() {
        let mut o = lazy_parse_then_bind_execute_close_sync();
        assert_eq!(tags(&mut o), "", "nothing before the server answers");
        receive(&mut o, "12DDC");
        assert_eq!(tags(&mut o), "2DDC3", "ParseComplete swallowed, CloseComplete in place");
        receive(&mut o, "Z");
        assert_eq!(tags(&mut o), "Z");
        assert!(o.is_empty());
    }

    #[test]
    fn a_synthetic_answer_first_in_line_is_given_at_once() {
        // Parse of a statement already prepared on this server: answered without the server.
        let mut o = Outstanding::default();
        o.sent(Kind::Parse, synthetic(b'1'));
        assert_eq!(tags(&mut o), "1");
        o.sent(Kind::DescribeStatement, Origin::Client);
        o.sent(Kind::Sync, Origin::Client);
        receive(&mut o, "tT");
        assert_eq!(tags(&mut o), "tT");
        receive(&mut o, "Z");
        assert_eq!(tags(&mut o), "Z");
        assert!(o.is_empty());
    }

    #[test]
    fn after_an_error_nothing_up_to_sync_is_answered_not_even_by_the_proxy() {
        let mut o = lazy_parse_then_bind_execute_close_sync();
        // The lazy Parse failed (the statement no longer compiles): the client gets the error,
        // as the answer to its Bind, no CloseComplete, and the ReadyForQuery.
        receive(&mut o, "E");
        assert_eq!(tags(&mut o), "E");
        receive(&mut o, "Z");
        assert_eq!(tags(&mut o), "Z");
        assert!(o.is_empty());
        // An error of the client's own Execute reaches it.
        o.sent(Kind::Bind, Origin::Client);
        o.sent(Kind::Execute, Origin::Client);
        o.sent(Kind::Close, synthetic(b'3'));
        o.sent(Kind::Sync, Origin::Client);
        receive(&mut o, "2EZ");
        assert_eq!(tags(&mut o), "2EZ");
    }

    #[test]
    fn simple_queries_copies_and_asynchronous_messages() {
        let mut o = Outstanding::default();
        o.sent(Kind::Query, Origin::Client);
        // Two statements, the second failing, then ReadyForQuery; a notice in between.
        receive(&mut o, "TDCNEZ");
        assert_eq!(tags(&mut o), "TDCNEZ");
        // COPY FROM STDIN through Execute: CopyInResponse, then CommandComplete.
        o.sent(Kind::Execute, Origin::Client);
        o.sent(Kind::Sync, Origin::Client);
        receive(&mut o, "GCZ");
        assert_eq!(tags(&mut o), "GCZ");
        // A NOTIFY for this session while idle: the client's.
        receive(&mut o, "A");
        assert_eq!(tags(&mut o), "A");
        // Anything else while idle cannot be placed.
        assert_eq!(o.received(&msg(b'C')), Err(PipelineError::Unexpected { tag: b'C' }));
    }

    #[test]
    fn a_parse_that_failed_or_was_skipped_names_its_statement() {
        let mut o = Outstanding::default();
        o.sent_parse(Origin::Client, 7);
        o.sent(Kind::Sync, Origin::Client);
        assert_eq!(o.received(&msg(b'E')), Ok(vec![7]));
        receive(&mut o, "Z");
        o.sent(Kind::Bind, Origin::Client);
        o.sent_parse(Origin::Injected, 8);
        o.sent(Kind::Bind, Origin::Client);
        o.sent(Kind::Sync, Origin::Client);
        assert_eq!(o.received(&msg(b'E')), Ok(vec![8]), "skipped after the Bind's error");
        o.sent_parse(Origin::Client, 9);
        assert_eq!(o.received(&msg(b'Z')), Ok(vec![]));
        assert_eq!(o.received(&msg(b'1')), Ok(vec![]), "prepared");
    }

    #[test]
    fn describe_of_a_portal_and_suspended_executes() {
        let mut o = Outstanding::default();
        o.sent(Kind::DescribePortal, Origin::Client);
        o.sent(Kind::Execute, Origin::Client);
        o.sent(Kind::Execute, Origin::Client);
        o.sent(Kind::Sync, Origin::Client);
        receive(&mut o, "nDsDCZ");
        assert_eq!(tags(&mut o), "nDsDCZ");
        assert!(o.is_empty());
    }

    proptest::proptest! {
        /// Whatever the server sends, placing it never panics, and the client never gets more
        /// messages than the server sent plus the synthetic answers.
        #[test]
        fn never_panics(plan in proptest::collection::vec(0u8..10, 0..12), answers in "[123tTnCIsZEDNSAG]{0,30}") {
            let mut o = Outstanding::default();
            let kinds = [Kind::Parse, Kind::Bind, Kind::Close, Kind::DescribeStatement, Kind::DescribePortal, Kind::Execute, Kind::Sync, Kind::Query];
            let mut synthetic_count = 0;
            for (i, p) in plan.iter().enumerate() {
                let kind = kinds[*p as usize % kinds.len()];
                let origin = match i % 3 { 0 => Origin::Client, 1 => Origin::Injected, _ => { synthetic_count += 1; synthetic(b'3') } };
                o.sent(kind, origin);
            }
            let mut placed = 0;
            for t in answers.bytes() {
                if o.received(&msg(t)).is_ok() { placed += 1; }
            }
            proptest::prop_assert!(tags(&mut o).len() <= placed + synthetic_count);
        }
    }
}
