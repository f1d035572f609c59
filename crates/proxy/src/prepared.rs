//! Named prepared statements across pooled servers (transaction mode), as PgBouncer 1.21+ does
//! it: the server never sees a client's statement names.
//!
//! A client's `Parse` of statement `s1` is registered by its text (query and parameter types)
//! under a global name, `rampart_<n>`, one per distinct text in the pool ([`Registry`]). On
//! whichever server the client holds, a statement is prepared when first needed, under the
//! global name, and the client's `Bind`, `Describe` and `Close` of `s1` are rewritten to it or
//! answered by the proxy ([`crate::pipeline`] keeps the answers in order):
//! * `Parse s1` of a text this server has prepared already: answered ParseComplete at once;
//! * `Bind`/`Describe` of `s1` where this server lacks it: a `Parse` is injected first;
//! * `Close s1`: forgotten for the client, answered CloseComplete (the server keeps it for others);
//! * `Parse s1` while `s1` exists, `Bind` of an unknown `s1`: PostgreSQL's errors (42P05,
//!   26000), after which the client's messages up to `Sync` are skipped, as a server would.
//!
//! Unnamed statements and portals pass through untouched: they live within one transaction.
//!
//! Invariant: what reaches the server names only global statements it has prepared (or is being
//! sent the Parse of), and every client message gets the answer PostgreSQL would give, in order.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::{BufMut, Bytes, BytesMut};

use crate::backend::{ErrorResponse, Severity, SqlState};
use crate::frame::{put_frame, Frame};
use crate::pipeline::{Kind, Origin, Outstanding};
use crate::wire;

/// `42P05` duplicate_prepared_statement.
const DUPLICATE_PREPARED_STATEMENT: SqlState = SqlState::new("42P05");
/// `26000` invalid_sql_statement_name.
const INVALID_STATEMENT_NAME: SqlState = SqlState::new("26000");

/// The global statements of a pool: one id per distinct statement text.
///
/// Shared by the clients of a pool on every worker thread, so it locks itself; only a client's
/// `Parse` of a named statement looks into it.
#[derive(Debug, Default)]
pub struct Registry {
    ids: Mutex<HashMap<Bytes, u64>>,
}

impl Registry {
    /// The id of a statement text (the Parse body after its name), registering it if new.
    fn id(&self, text: &Bytes) -> u64 {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let next = ids.len() as u64 + 1;
        *ids.entry(text.clone()).or_insert(next)
    }

    /// How many distinct statements the pool has seen.
    pub fn len(&self) -> usize {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The global name of statement `id` on the servers.
pub fn global_name(id: u64) -> String {
    format!("rampart_{id}")
}

#[derive(Clone, Debug)]
struct Statement {
    id: u64,
    /// The Parse body after the name: query, parameter count and types.
    text: Bytes,
}

/// One client's named statements.
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: HashMap<Bytes, Statement>,
    /// An error the proxy answered: skip the client's messages up to its Sync.
    skipping: bool,
}

impl ClientStatements {
    /// The query text of the client's statement `name`, if it has one by that name.
    pub fn query_of(&self, name: &[u8]) -> Option<&[u8]> {
        let s = self.by_name.get(name)?;
        Some(wire::split_cstr(&s.text).map_or(&s.text[..], |(q, _)| q))
    }

    /// Whether [`Route::client_message`] passes this client message on exactly as it came, with
    /// nothing else to do: a simple query that discards no statement, while no earlier error
    /// skips the client's messages. Such messages may be placed without a `Route`.
    pub fn passes_as_is(&self, tag: u8, body: &[u8]) -> bool {
        tag == b'Q' && !self.skipping && !discards_all(body)
    }

    /// Answers a message that needs no server, for a client that holds none (between its
    /// transactions): a `Parse` of a named statement is registered and answered ParseComplete
    /// (it is prepared on a server when first used, and an error in it is reported then), a
    /// `Close` of one is answered CloseComplete, `Sync` ReadyForQuery idle, `Flush` nothing, and
    /// a simple query `DEALLOCATE ALL` forgets the client's statements.
    /// Answers go to `out`; `None` when the message needs a server.
    ///
    /// Why: a client blocked on a statement's preparation while the pool is busy can hold up
    /// the very transactions that would free a server (pgbench prepares synchronously, one
    /// thread for several clients); with this it never waits for a server to prepare.
    pub fn answer_locally(
        &mut self,
        registry: &Registry,
        frame: &Frame,
        out: &mut BytesMut,
    ) -> Option<Result<(), Malformed>> {
        let tag = frame.tag();
        if self.skipping && tag != b'S' {
            return Some(Ok(()));
        }
        match tag {
            b'P' => {
                let Some((name, text)) = wire::split_cstr(frame.body()) else {
                    return Some(Err(Malformed { what: "Parse" }));
                };
                if name.is_empty() {
                    return None;
                }
                if self.by_name.contains_key(name) {
                    let message = format!("prepared statement \"{}\" already exists", String::from_utf8_lossy(name));
                    ErrorResponse::new(Severity::Error, DUPLICATE_PREPARED_STATEMENT, message).encode(out);
                    self.skipping = true;
                    return Some(Ok(()));
                }
                let text = Bytes::copy_from_slice(text);
                let id = registry.id(&text);
                self.by_name.insert(Bytes::copy_from_slice(name), Statement { id, text });
                out.extend_from_slice(&complete(b'1'));
                Some(Ok(()))
            }
            b'C' => {
                let body = frame.body();
                let Some((&what, rest)) = body.split_first() else { return Some(Err(Malformed { what: "Close" })) };
                let Some((name, _)) = wire::split_cstr(rest) else { return Some(Err(Malformed { what: "Close" })) };
                if what != b'S' || name.is_empty() {
                    return None;
                }
                self.by_name.remove(name);
                out.extend_from_slice(&complete(b'3'));
                Some(Ok(()))
            }
            b'S' => {
                self.skipping = false;
                crate::backend::TransactionStatus::Idle.encode_ready_for_query(out);
                Some(Ok(()))
            }
            // A client between transactions has nothing on any server to deallocate (SQL-level
            // PREPARE pins it to its server): only its own statements go.
            b'Q' if deallocates_all(frame.body()) => {
                self.by_name.clear();
                put_frame(out, b'C', |d| wire::put_cstr(d, b"DEALLOCATE ALL"));
                crate::backend::TransactionStatus::Idle.encode_ready_for_query(out);
                Some(Ok(()))
            }
            b'H' => Some(Ok(())),
            _ => None,
        }
    }
}

/// The global statements prepared on one server.
#[derive(Debug, Default)]
pub struct ServerStatements {
    prepared: HashSet<u64>,
}

impl ServerStatements {
    /// The server deallocated every statement (a `DISCARD ALL` the proxy ran).
    pub fn clear(&mut self) {
        self.prepared.clear();
    }

    /// Statements whose Parse failed or was skipped (from [`Outstanding::received`]).
    pub fn forget(&mut self, ids: &[u64]) {
        for id in ids {
            self.prepared.remove(id);
        }
    }
}

/// Why a client message could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} message")]
pub struct Malformed {
    /// Which message.
    pub what: &'static str,
}

/// A client message on its way to the server that `server` and `pending` describe: what to send
/// goes to `to_server`; answers the proxy gives are queued in `pending`.
pub struct Route<'a> {
    /// The client's statements.
    pub client: &'a mut ClientStatements,
    /// The server's statements.
    pub server: &'a mut ServerStatements,
    /// The pool's registry.
    pub registry: &'a Registry,
    /// What the server owes.
    pub pending: &'a mut Outstanding,
    /// Bytes for the server.
    pub to_server: &'a mut BytesMut,
}

impl Route<'_> {
    /// Handles one client message (any message of the extended or simple query protocol).
    pub fn client_message(&mut self, frame: &Frame) -> Result<(), Malformed> {
        let tag = frame.tag();
        if self.client.skipping && tag != b'S' {
            return Ok(());
        }
        match tag {
            b'P' => self.parse(frame),
            b'B' => self.bind(frame),
            b'D' => self.describe(frame),
            b'C' => self.close(frame),
            b'S' => {
                self.client.skipping = false;
                self.forward(frame, Some(Kind::Sync));
                Ok(())
            }
            b'E' => {
                self.forward(frame, Some(Kind::Execute));
                Ok(())
            }
            b'Q' => {
                if discards_all(frame.body()) {
                    // Every statement on this server goes, other clients' included: they are
                    // prepared again when next used.
                    self.client.by_name.clear();
                    self.server.prepared.clear();
                }
                self.forward(frame, Some(Kind::Query));
                Ok(())
            }
            b'F' => {
                self.forward(frame, Some(Kind::Query));
                Ok(())
            }
            // Flush and COPY data get no answer of their own.
            _ => {
                self.forward(frame, None);
                Ok(())
            }
        }
    }

    fn forward(&mut self, frame: &Frame, kind: Option<Kind>) {
        self.to_server.extend_from_slice(frame.as_bytes());
        if let Some(kind) = kind {
            self.pending.sent(kind, Origin::Client);
        }
    }

    /// Answers with a PostgreSQL error and skips to the client's Sync.
    fn refuse(&mut self, kind: Kind, code: SqlState, message: String) {
        let mut bytes = BytesMut::new();
        ErrorResponse::new(Severity::Error, code, message).encode(&mut bytes);
        self.pending.sent(kind, Origin::Synthetic(bytes));
        self.client.skipping = true;
    }

    /// Makes sure statement `s` is prepared on the server (injecting its Parse).
    fn ensure_prepared(&mut self, s: &Statement) {
        if self.server.prepared.insert(s.id) {
            put_parse(self.to_server, &global_name(s.id), &s.text);
            self.pending.sent_parse(Origin::Injected, s.id);
        }
    }

    fn parse(&mut self, frame: &Frame) -> Result<(), Malformed> {
        let (name, text) = wire::split_cstr(frame.body()).ok_or(Malformed { what: "Parse" })?;
        if name.is_empty() {
            self.forward(frame, Some(Kind::Parse));
            return Ok(());
        }
        if self.client.by_name.contains_key(name) {
            let message = format!("prepared statement \"{}\" already exists", String::from_utf8_lossy(name));
            self.refuse(Kind::Parse, DUPLICATE_PREPARED_STATEMENT, message);
            return Ok(());
        }
        let text = Bytes::copy_from_slice(text);
        let id = self.registry.id(&text);
        let s = Statement { id, text };
        self.client.by_name.insert(Bytes::copy_from_slice(name), s.clone());
        if self.server.prepared.insert(id) {
            put_parse(self.to_server, &global_name(id), &s.text);
            self.pending.sent_parse(Origin::Client, id);
        } else {
            self.pending.sent(Kind::Parse, Origin::Synthetic(complete(b'1')));
        }
        Ok(())
    }

    /// The client's statement named `name`, or its error.
    fn statement(&mut self, kind: Kind, name: &[u8]) -> Option<Statement> {
        match self.client.by_name.get(name) {
            Some(s) => Some(s.clone()),
            None => {
                let message = format!("prepared statement \"{}\" does not exist", String::from_utf8_lossy(name));
                self.refuse(kind, INVALID_STATEMENT_NAME, message);
                None
            }
        }
    }

    fn bind(&mut self, frame: &Frame) -> Result<(), Malformed> {
        let malformed = Malformed { what: "Bind" };
        let (portal, rest) = wire::split_cstr(frame.body()).ok_or(malformed.clone())?;
        let (name, rest) = wire::split_cstr(rest).ok_or(malformed)?;
        if name.is_empty() {
            self.forward(frame, Some(Kind::Bind));
            return Ok(());
        }
        let Some(s) = self.statement(Kind::Bind, name) else { return Ok(()) };
        self.ensure_prepared(&s);
        put_frame(self.to_server, b'B', |d| {
            wire::put_cstr(d, portal);
            wire::put_cstr(d, global_name(s.id).as_bytes());
            d.put_slice(rest);
        });
        self.pending.sent(Kind::Bind, Origin::Client);
        Ok(())
    }

    fn describe(&mut self, frame: &Frame) -> Result<(), Malformed> {
        let body = frame.body();
        let (what, name) = match body.split_first() {
            Some((&w, rest)) => (w, wire::split_cstr(rest).map(|(n, _)| n).ok_or(Malformed { what: "Describe" })?),
            None => return Err(Malformed { what: "Describe" }),
        };
        if what != b'S' || name.is_empty() {
            let kind = if what == b'S' { Kind::DescribeStatement } else { Kind::DescribePortal };
            self.forward(frame, Some(kind));
            return Ok(());
        }
        let Some(s) = self.statement(Kind::DescribeStatement, name) else { return Ok(()) };
        self.ensure_prepared(&s);
        put_frame(self.to_server, b'D', |d| {
            d.put_u8(b'S');
            wire::put_cstr(d, global_name(s.id).as_bytes());
        });
        self.pending.sent(Kind::DescribeStatement, Origin::Client);
        Ok(())
    }

    fn close(&mut self, frame: &Frame) -> Result<(), Malformed> {
        let body = frame.body();
        let Some((&what, rest)) = body.split_first() else { return Err(Malformed { what: "Close" }) };
        let name = wire::split_cstr(rest).map(|(n, _)| n).ok_or(Malformed { what: "Close" })?;
        if what != b'S' || name.is_empty() {
            self.forward(frame, Some(Kind::Close));
            return Ok(());
        }
        // Closing a statement that does not exist is no error in PostgreSQL either.
        self.client.by_name.remove(name);
        self.pending.sent(Kind::Close, Origin::Synthetic(complete(b'3')));
        Ok(())
    }
}

/// Whether a simple query's text is exactly `words` (ASCII case ignored; whitespace between
/// them, around them and trailing `;`s aside). Runs on every simple query: it allocates nothing
/// and stops at the first word that differs.
fn query_is(body: &[u8], words: &[&str]) -> bool {
    // Most queries differ at their first letter: looked at before the text's end is searched.
    let first = words.first().and_then(|w| w.as_bytes().first()).copied().unwrap_or(0);
    if !body.trim_ascii_start().first().is_some_and(|b| b.eq_ignore_ascii_case(&first)) {
        return false;
    }
    let Some((sql, _)) = wire::split_cstr(body) else { return false };
    let sql = sql.trim_ascii();
    let end = sql.iter().rposition(|&b| b != b';').map_or(0, |i| i + 1);
    let mut seen = sql[..end].split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    words.iter().all(|w| seen.next().is_some_and(|s| s.eq_ignore_ascii_case(w.as_bytes()))) && seen.next().is_none()
}

/// `DEALLOCATE ALL` as the whole simple query (psycopg 3 sends it after every rollback).
fn deallocates_all(body: &[u8]) -> bool {
    starts_with_d(body) && (query_is(body, &["DEALLOCATE", "ALL"]) || query_is(body, &["DEALLOCATE", "PREPARE", "ALL"]))
}

/// `DEALLOCATE ALL` or `DISCARD ALL` as the whole simple query: the client's statements go.
fn discards_all(body: &[u8]) -> bool {
    starts_with_d(body) && (deallocates_all(body) || query_is(body, &["DISCARD", "ALL"]))
}

/// Whether the text's first word starts with a `D`: every other query (nearly all of them) is
/// told apart from the ones above with one look.
fn starts_with_d(body: &[u8]) -> bool {
    body.trim_ascii_start().first().is_some_and(|b| b.eq_ignore_ascii_case(&b'D'))
}

fn put_parse(dst: &mut BytesMut, name: &str, text: &[u8]) {
    put_frame(dst, b'P', |d| {
        wire::put_cstr(d, name.as_bytes());
        d.put_slice(text);
    });
}

/// An empty completion message (ParseComplete `1`, CloseComplete `3`).
fn complete(tag: u8) -> BytesMut {
    let mut b = BytesMut::new();
    put_frame(&mut b, tag, |_| {});
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::split_frame;

    fn parse(name: &str, sql: &str) -> Frame {
        let mut body = BytesMut::new();
        wire::put_cstr(&mut body, name.as_bytes());
        wire::put_cstr(&mut body, sql.as_bytes());
        body.put_u16(0);
        Frame::new(b'P', &body)
    }
    fn bind(statement: &str) -> Frame {
        let mut body = BytesMut::new();
        wire::put_cstr(&mut body, b"");
        wire::put_cstr(&mut body, statement.as_bytes());
        body.put_slice(&[0, 0, 0, 0, 0, 0]);
        Frame::new(b'B', &body)
    }
    fn describe(statement: &str) -> Frame {
        let mut body = vec![b'S'];
        body.extend_from_slice(statement.as_bytes());
        body.push(0);
        Frame::new(b'D', &body)
    }
    fn close(statement: &str) -> Frame {
        let mut body = vec![b'S'];
        body.extend_from_slice(statement.as_bytes());
        body.push(0);
        Frame::new(b'C', &body)
    }
    fn execute() -> Frame {
        Frame::new(b'E', b"\0\0\0\0\0")
    }
    fn sync() -> Frame {
        Frame::new(b'S', b"")
    }

    /// A server with its statements and what it owes; `send` runs client messages through the
    /// proxy and returns what reached the server, as `tag:name` words.
    #[derive(Default)]
    struct Server {
        statements: ServerStatements,
        pending: Outstanding,
    }

    fn send(client: &mut ClientStatements, server: &mut Server, registry: &mut Registry, frames: &[Frame]) -> String {
        let mut to_server = BytesMut::new();
        let mut route = Route {
            client,
            server: &mut server.statements,
            registry,
            pending: &mut server.pending,
            to_server: &mut to_server,
        };
        for f in frames {
            route.client_message(f).unwrap();
        }
        let mut words = Vec::new();
        while let Some(f) = split_frame(&mut to_server, 1 << 20).unwrap() {
            let name = match f.tag() {
                b'P' => wire::split_cstr(f.body()).unwrap().0.to_vec(),
                b'B' => wire::split_cstr(wire::split_cstr(f.body()).unwrap().1).unwrap().0.to_vec(),
                b'D' | b'C' => wire::split_cstr(&f.body()[1..]).unwrap().0.to_vec(),
                _ => Vec::new(),
            };
            words.push(format!("{}:{}", f.tag() as char, String::from_utf8_lossy(&name)));
        }
        words.join(" ")
    }

    /// The server answers with `tags`; the client receives (type bytes).
    fn answer(server: &mut Server, tags: &str) -> String {
        for t in tags.bytes() {
            let unprepared = server.pending.received(&Frame::new(t, b"")).unwrap();
            server.statements.forget(&unprepared);
        }
        let mut b = server.pending.take_to_client();
        let mut out = String::new();
        while let Some(f) = split_frame(&mut b, 1 << 20).unwrap() {
            out.push(f.tag() as char);
        }
        out
    }

    #[test]
    fn a_statement_is_prepared_once_per_server_under_its_global_name() {
        let mut registry = Registry::default();
        let (mut alice, mut bob) = (ClientStatements::default(), ClientStatements::default());
        let mut s1 = Server::default();
        let sent = send(&mut alice, &mut s1, &mut registry, &[parse("q", "SELECT 1"), bind("q"), execute(), sync()]);
        assert_eq!(sent, "P:rampart_1 B:rampart_1 E: S:");
        assert_eq!(answer(&mut s1, "12DCZ"), "12DCZ");
        // Bob prepares the same text under another name on the same server: not sent again.
        let sent =
            send(&mut bob, &mut s1, &mut registry, &[parse("other", "SELECT 1"), bind("other"), execute(), sync()]);
        assert_eq!(sent, "B:rampart_1 E: S:");
        assert_eq!(answer(&mut s1, "2DCZ"), "12DCZ", "ParseComplete answered by the proxy, in place");
        // Alice, moved to another server, binds her statement: prepared there first, unseen.
        let mut s2 = Server::default();
        let sent = send(&mut alice, &mut s2, &mut registry, &[describe("q"), bind("q"), execute(), sync()]);
        assert_eq!(sent, "P:rampart_1 D:rampart_1 B:rampart_1 E: S:");
        assert_eq!(answer(&mut s2, "1tT2DCZ"), "tT2DCZ");
        assert_eq!(registry.len(), 1);
    }

    /// A client that prepared `q` (`SELECT 1`) on a server.
    fn with_q_prepared() -> (Registry, ClientStatements, Server) {
        let (mut registry, mut alice, mut s) = (Registry::default(), ClientStatements::default(), Server::default());
        send(&mut alice, &mut s, &mut registry, &[parse("q", "SELECT 1"), sync()]);
        assert_eq!(answer(&mut s, "1Z"), "1Z");
        (registry, alice, s)
    }

    fn query(sql: &str) -> Frame {
        let mut body = BytesMut::new();
        wire::put_cstr(&mut body, sql.as_bytes());
        Frame::new(b'Q', &body)
    }

    #[test]
    fn discard_all_on_a_server_drops_every_client_s_statements_there() {
        // Alice prepared q on s; Bob, who holds s now, runs DISCARD ALL (or DEALLOCATE ALL).
        let (mut registry, mut alice, mut s) = with_q_prepared();
        let mut bob = ClientStatements::default();
        assert_eq!(send(&mut bob, &mut s, &mut registry, &[query("discard all;")]), "Q:");
        assert_eq!(answer(&mut s, "CZ"), "CZ");
        // Alice gets s back: her statement is prepared there again before her Bind.
        let sent = send(&mut alice, &mut s, &mut registry, &[bind("q"), execute(), sync()]);
        assert_eq!(sent, "P:rampart_1 B:rampart_1 E: S:");
    }

    #[test]
    fn deallocate_all_between_transactions_needs_no_server() {
        let (registry, mut alice, _s) = with_q_prepared();
        let mut out = BytesMut::new();
        assert_eq!(alice.answer_locally(&registry, &query("DEALLOCATE ALL"), &mut out), Some(Ok(())));
        let tags: Vec<u8> = std::iter::from_fn(|| split_frame(&mut out, 1 << 20).unwrap()).map(|f| f.tag()).collect();
        assert_eq!(tags, b"CZ");
        assert!(alice.by_name.is_empty(), "her statements are gone");
        // Anything else in a simple query needs a server.
        assert_eq!(alice.answer_locally(&registry, &query("SELECT 1"), &mut out), None);
    }

    #[test]
    fn close_is_answered_by_the_proxy_and_the_name_can_be_reused() {
        let (mut registry, mut alice, mut s) = with_q_prepared();
        let sent = send(&mut alice, &mut s, &mut registry, &[close("q"), parse("q", "SELECT 2"), sync()]);
        assert_eq!(sent, "P:rampart_2 S:", "the server keeps rampart_1; no Close reaches it");
        assert_eq!(answer(&mut s, "1Z"), "31Z");
    }

    #[test]
    fn postgresqls_errors_for_a_name_twice_or_unknown_and_the_skip_to_sync() {
        let (mut registry, mut alice, mut s) = with_q_prepared();
        let sent = send(&mut alice, &mut s, &mut registry, &[parse("q", "SELECT 2"), bind("q"), execute(), sync()]);
        assert_eq!(sent, "S:", "the rest up to Sync is skipped, as the server would");
        assert_eq!(answer(&mut s, "Z"), "EZ");
        let sent = send(&mut alice, &mut s, &mut registry, &[bind("nope"), execute(), sync()]);
        assert_eq!(sent, "S:");
        assert_eq!(answer(&mut s, "Z"), "EZ");
        // And the session goes on.
        let sent = send(&mut alice, &mut s, &mut registry, &[bind("q"), execute(), sync()]);
        assert_eq!(sent, "B:rampart_1 E: S:");
    }

    #[test]
    fn a_parse_that_failed_is_sent_again_next_time() {
        let mut registry = Registry::default();
        let mut alice = ClientStatements::default();
        let mut s = Server::default();
        send(&mut alice, &mut s, &mut registry, &[parse("q", "SELECT nope"), sync()]);
        assert_eq!(answer(&mut s, "EZ"), "EZ");
        let sent = send(&mut alice, &mut s, &mut registry, &[bind("q"), sync()]);
        assert_eq!(sent, "P:rampart_1 B:rampart_1 S:", "not taken for prepared");
    }

    #[test]
    fn unnamed_statements_portals_and_simple_queries_pass_through() {
        let mut registry = Registry::default();
        let mut alice = ClientStatements::default();
        let mut s = Server::default();
        let sent = send(&mut alice, &mut s, &mut registry, &[parse("", "SELECT 1"), bind(""), execute(), sync()]);
        assert_eq!(sent, "P: B: E: S:");
        assert_eq!(answer(&mut s, "12DCZ"), "12DCZ");
        send(&mut alice, &mut s, &mut registry, &[parse("q", "SELECT 1"), sync()]);
        answer(&mut s, "1Z");
        let q = Frame::new(b'Q', b"discard all;\0");
        assert_eq!(send(&mut alice, &mut s, &mut registry, &[q]), "Q:");
        assert_eq!(answer(&mut s, "CZ"), "CZ");
        assert_eq!(send(&mut alice, &mut s, &mut registry, &[bind("q"), sync()]), "S:", "gone after DISCARD ALL");
        assert!(discards_all(b"DEALLOCATE ALL\0") && discards_all(b"deallocate prepare all\0"));
        assert!(!discards_all(b"DEALLOCATE q\0") && !discards_all(b"SELECT 'DISCARD ALL'\0"));
        assert!(discards_all(b" discard\n all ;;\0") && discards_all(b"DISCARD ALL;\0"));
        assert!(!discards_all(b"DISCARD ALL x\0") && !discards_all(b"DISCARD\0") && !discards_all(b"\0"));
    }

    #[test]
    fn malformed_messages_are_named() {
        let mut registry = Registry::default();
        let mut alice = ClientStatements::default();
        let mut s = Server::default();
        let mut to_server = BytesMut::new();
        let mut route = Route {
            client: &mut alice,
            server: &mut s.statements,
            registry: &mut registry,
            pending: &mut s.pending,
            to_server: &mut to_server,
        };
        assert_eq!(route.client_message(&Frame::new(b'P', b"no-nul")), Err(Malformed { what: "Parse" }));
        assert_eq!(route.client_message(&Frame::new(b'B', b"\0no-nul")), Err(Malformed { what: "Bind" }));
        assert_eq!(route.client_message(&Frame::new(b'D', b"")), Err(Malformed { what: "Describe" }));
        assert_eq!(route.client_message(&Frame::new(b'C', b"S")), Err(Malformed { what: "Close" }));
    }
}
