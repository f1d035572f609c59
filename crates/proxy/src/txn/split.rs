//! Read/write splitting of one transaction-mode client on the read-write port: each statement
//! (a simple query, or an extended-protocol segment up to its Sync) is classified, the session's
//! [`Router`] says where it runs, and this module gets the client onto that server: a replica
//! leased from the replica's pool, the primary's, or the other part of a transaction open on both
//! (kept "parked" meanwhile).
//!
//! Invariants:
//! * the client's messages go to one server at a time, and a switch to another waits until the
//!   one it leaves owes nothing, so answers reach the client in the order it asked;
//! * a transaction block opened by a deferred `BEGIN` is opened on a server (with the client's
//!   `BEGIN`, its answer swallowed) before any of its statements runs there, and ended on every
//!   server it was opened on;
//! * what is not a read never goes to a replica, except inside a read-only block there;
//! * with `read_your_writes: session`, a session's read goes to a replica only if that replica
//!   has replayed up to a primary position read after the session's last write was acknowledged
//!   ([`crate::split::positions`]); otherwise to the primary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Held, Txn};
use crate::backend::TransactionStatus;
use crate::frame::{put_frame, Frame};
use crate::pipeline::{Kind, Origin};
use crate::pools::lease;
use crate::session::Refusal;
use crate::split::classify::{combine, Class, TxnMode};
use crate::split::functions::{Catalog, CATALOG_QUERY};
use crate::split::positions::Lsn;
use crate::split::route::{Context, Decision, Router, Target};
use crate::split::state::Splitting;
use crate::wire;
use rampart_config::proxy_split::ReadYourWrites;

/// What became of a client message.
pub(super) enum Flow {
    /// Place it as usual, on the server now held.
    Forward,
    /// Answered by the proxy.
    Consumed,
    /// Not placed yet: the server the client leaves still owes answers, or the rest of an
    /// extended-protocol segment has not arrived.
    Wait,
}

/// Whether a replica may serve the session's reads now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replicas {
    /// One is routed, within `max_lag_time`, and has what the session wrote.
    Usable,
    /// None is routed (or within `max_lag_time`).
    NoneRouted,
    /// Read-your-writes: none has replayed the session's last write yet (as far as known).
    NotCaughtUp,
}

/// One client's splitting.
pub(super) struct SplitSession {
    shared: Arc<Splitting>,
    /// Where its statements go.
    pub router: Router,
    /// The client's `BEGIN` (a simple query's text), answered by the proxy and not run yet.
    begin: Option<(Bytes, TxnMode)>,
    /// The other server of a transaction open on two.
    parked: Option<Held>,
    /// Inside an extended-protocol segment already routed: its messages follow, up to its Sync.
    segment_open: bool,
    /// A write was sent whose block has not ended on the primary yet.
    unacked: bool,
    /// When the session's last write was acknowledged, while some replica may not have it.
    acked_at: Option<Instant>,
    /// The position a replica must have replayed to serve the session's reads.
    need: Option<Lsn>,
    /// The text of the client's unnamed statement (its last unnamed Parse).
    unnamed: Option<Bytes>,
    /// The statement counter of the backend it last sent to, with that backend's address.
    counter: Option<(String, Arc<std::sync::atomic::AtomicU64>)>,
}

impl SplitSession {
    /// Whether replicas must be filtered by what they replayed (read-your-writes) or by their
    /// replay lag (`max_lag_time`).
    pub(super) fn needs_filter(&self) -> bool {
        self.need.is_some() || self.shared.settings.max_lag_time.is_some()
    }

    pub(super) fn new(shared: Arc<Splitting>) -> SplitSession {
        let router = Router::new(shared.settings.on_write);
        SplitSession {
            shared,
            router,
            begin: None,
            parked: None,
            segment_open: false,
            unnamed: None,
            unacked: false,
            acked_at: None,
            need: None,
            counter: None,
        }
    }
}

/// The query text of a simple query or Parse body part (up to its NUL), as UTF-8.
fn text_of(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).unwrap_or("\u{fffd}")
}

/// The query text of a Parse of the unnamed statement.
fn unnamed_parse(frame: &Frame) -> Option<Bytes> {
    if frame.tag() != b'P' {
        return None;
    }
    let (name, text) = wire::split_cstr(frame.body())?;
    name.is_empty().then(|| Bytes::copy_from_slice(text_of(text).as_bytes()))
}

/// The texts of the statements an extended-protocol segment runs: `first`, then the complete
/// messages in `rest` up to its Sync or Flush. `None` when that end has not arrived yet; an
/// empty list when the segment executes nothing.
fn segment_texts(
    first: &Frame,
    rest: &[u8],
    statements: &crate::prepared::ClientStatements,
    unnamed: &Option<Bytes>,
) -> Option<Vec<Bytes>> {
    let mut texts = Vec::new();
    let mut unnamed = unnamed.clone();
    let mut executes = false;
    let mut visit = |tag: u8, body: &[u8]| -> bool {
        match tag {
            b'P' => {
                if let Some((name, text)) = wire::split_cstr(body) {
                    let text = Bytes::copy_from_slice(text_of(text).as_bytes());
                    if name.is_empty() {
                        unnamed = Some(text.clone());
                    }
                    texts.push(text);
                }
            }
            b'B' => {
                if let Some((_, rest)) = wire::split_cstr(body) {
                    if let Some((name, _)) = wire::split_cstr(rest) {
                        let text = if name.is_empty() {
                            unnamed.clone()
                        } else {
                            statements.query_of(name).map(|q| Bytes::copy_from_slice(text_of(q).as_bytes()))
                        };
                        texts.extend(text);
                    }
                }
            }
            b'E' => executes = true,
            _ => {}
        }
        matches!(tag, b'S' | b'H')
    };
    if visit(first.tag(), first.body()) {
        return Some(if executes { texts } else { Vec::new() });
    }
    let mut at = 0;
    loop {
        let header = rest.get(at..at + 5)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let body = rest.get(at + 5..at + 1 + len)?;
        if visit(header[0], body) {
            return Some(if executes { texts } else { Vec::new() });
        }
        at += 1 + len;
    }
}

impl Txn<'_> {
    /// Routes the client message `frame`: answers it, or puts the client on the server it runs
    /// on (the caller then places it as usual).
    pub(super) async fn split_route(&mut self, frame: &Frame) -> Result<Flow, Refusal> {
        let Some(sp) = self.split.as_mut() else { return Ok(Flow::Forward) };
        let tag = frame.tag();
        if sp.segment_open {
            if let Some(text) = unnamed_parse(frame) {
                sp.unnamed = Some(text);
            }
            if tag == b'S' {
                sp.segment_open = false;
            }
            return Ok(Flow::Forward);
        }
        let now = Instant::now();
        let database = self.base.database.clone();
        let (class, deferrable, text, load) = match tag {
            b'Q' => {
                let text = text_of(frame.body());
                let (facts, class, load) = sp.shared.class_of(&database, text, now);
                if facts.temp {
                    sp.router.pin();
                }
                if facts.ddl {
                    sp.shared.catalog_changed(&database);
                }
                (class, true, Some(Bytes::copy_from_slice(frame.body())), load)
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S' => {
                let Some(texts) = segment_texts(frame, &self.cbuf, &self.statements, &sp.unnamed) else {
                    return Ok(Flow::Wait);
                };
                if let Some(text) = unnamed_parse(frame) {
                    sp.unnamed = Some(text);
                }
                sp.segment_open = tag != b'S' && tag != b'H';
                let mut classes = Vec::with_capacity(texts.len());
                let mut load = false;
                for t in &texts {
                    let (facts, class, l) = sp.shared.class_of(&database, text_of(t), now);
                    if facts.temp {
                        sp.router.pin();
                    }
                    if facts.ddl {
                        sp.shared.catalog_changed(&database);
                    }
                    load |= l;
                    classes.push(class);
                }
                match combine(&classes) {
                    Some(class) => (class, false, None, load),
                    // Executes nothing (a Parse, a Describe): wherever the client is.
                    None => return Ok(Flow::Forward),
                }
            }
            // COPY data, a function call: wherever the client is.
            _ => return Ok(Flow::Forward),
        };
        if load {
            self.load_catalog();
        }
        let read_only_default = self.params.get("default_transaction_read_only") == Some("on");
        let mut replicas = self.replicas_now();
        let wait = self.split.as_ref().map_or(Duration::ZERO, |sp| sp.shared.settings.read_your_writes_timeout);
        if replicas == Replicas::NotCaughtUp && class == Class::Read && !wait.is_zero() && self.needs_position() {
            // Wait (up to read_your_writes_timeout) for a replica to replay the session's write.
            let deadline = now + wait;
            let step = self.split.as_ref().map_or(wait, |sp| sp.shared.settings.position_interval);
            while replicas == Replicas::NotCaughtUp && Instant::now() < deadline {
                tokio::time::sleep(step.min(deadline.saturating_duration_since(Instant::now()))).await;
                replicas = self.replicas_now();
            }
        }
        let replica_ok = replicas == Replicas::Usable;
        let sp = self.split.as_mut().expect("checked above");
        if matches!(class, Class::Write(_)) {
            // Acknowledged when its block ends on the primary (ReadyForQuery I).
            sp.unacked = true;
        }
        let cx = Context { read_only_default, deferrable, replica_ok };
        // Taken back if the statement must wait (it is routed again then).
        let before = sp.router.clone();
        let decision = sp.router.statement(class, cx);
        if class == Class::Read
            && replicas == Replicas::NotCaughtUp
            && matches!(decision, Decision::Run { target: Target::Primary, .. })
        {
            sp.shared.counts.reads_kept_on_primary.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::trace!(client = self.pid, ?class, ?decision, "routed");
        match decision {
            Decision::AnswerBegin | Decision::AnswerEnd => {
                if !self.owes_nothing() {
                    // Answered in order: after what the server still owes.
                    self.split.as_mut().expect("checked above").router = before;
                    return Ok(Flow::Wait);
                }
                let sp = self.split.as_mut().expect("checked above");
                let text = text.unwrap_or_default();
                let words = text_of(&text).trim_start().to_ascii_lowercase();
                let (tag, status) = match decision {
                    Decision::AnswerBegin => {
                        let mode = match class {
                            Class::Begin(m) => m,
                            _ => TxnMode::default(),
                        };
                        sp.begin = Some((text.clone(), mode));
                        let tag = if words.starts_with("start") { "START TRANSACTION" } else { "BEGIN" };
                        (tag, TransactionStatus::InTransaction)
                    }
                    _ => {
                        sp.begin = None;
                        let tag = if words.starts_with("rollback") || words.starts_with("abort") {
                            "ROLLBACK"
                        } else {
                            "COMMIT"
                        };
                        (tag, TransactionStatus::Idle)
                    }
                };
                put_frame(&mut self.to_client, b'C', |d| wire::put_cstr(d, tag.as_bytes()));
                status.encode_ready_for_query(&mut self.to_client);
                Ok(Flow::Consumed)
            }
            Decision::Run { target, begin_first } => {
                if !self.switch_to(target).await? {
                    self.split.as_mut().expect("checked above").router = before;
                    return Ok(Flow::Wait);
                }
                if begin_first {
                    self.open_block();
                }
                self.count_sent();
                Ok(Flow::Forward)
            }
            Decision::End { main, also } => {
                if !self.switch_to(main).await? {
                    self.split.as_mut().expect("checked above").router = before;
                    return Ok(Flow::Wait);
                }
                let sp = self.split.as_mut().expect("checked above");
                sp.begin = None;
                if also.is_some() {
                    if let Some(other) = sp.parked.take() {
                        self.finish(other);
                    }
                }
                self.count_sent();
                Ok(Flow::Forward)
            }
        }
    }

    /// Whether a replica may serve this session's reads now: one is routed (and within
    /// `max_lag_time`) and, with `read_your_writes: session` after a write, has replayed it (as
    /// far as the positions read tell). Remembers the position needed, for the choice of the
    /// replica.
    fn replicas_now(&mut self) -> Replicas {
        let Some(sp) = self.split.as_mut() else { return Replicas::NoneRouted };
        let routes = self.shared.routes.borrow();
        sp.need = None;
        let max_lag_time = sp.shared.settings.max_lag_time;
        let ryw = sp.shared.settings.read_your_writes != ReadYourWrites::None;
        // The positions are locked once for the whole answer, and only when it needs them.
        let positions =
            (max_lag_time.is_some() || (ryw && !sp.unacked && sp.acked_at.is_some())).then(|| sp.shared.positions());
        let lagging = |b: &crate::topology::Backend| match (max_lag_time, &positions) {
            (Some(max), Some(p)) => p.lags_behind(&b.addr(), max),
            _ => false,
        };
        if routes.replicas.iter().all(lagging) {
            return Replicas::NoneRouted;
        }
        if !ryw {
            return Replicas::Usable;
        }
        if sp.unacked {
            return Replicas::NotCaughtUp;
        }
        let (Some(acked), Some(p)) = (sp.acked_at, &positions) else { return Replicas::Usable };
        let Some(need) = p.needed_after(acked) else { return Replicas::NotCaughtUp };
        if routes.replicas.iter().all(|b| p.has_replayed(&b.addr(), need)) {
            // Every replica has it: nothing to wait for any more.
            sp.acked_at = None;
            return Replicas::Usable;
        }
        let any = routes.replicas.iter().any(|b| p.has_replayed(&b.addr(), need) && !lagging(b));
        sp.need = Some(need);
        if any {
            Replicas::Usable
        } else {
            Replicas::NotCaughtUp
        }
    }

    /// Whether the session has written and waits for a replica to replay it.
    fn needs_position(&self) -> bool {
        self.split
            .as_ref()
            .is_some_and(|sp| sp.shared.settings.read_your_writes == ReadYourWrites::Session && sp.acked_at.is_some())
    }

    /// The session's write was acknowledged on the primary (its block ended there): from now on
    /// a replica serves its reads only once it has replayed up to a position read after this.
    pub(super) fn write_acknowledged(&mut self) {
        if let Some(sp) = self.split.as_mut().filter(|sp| sp.unacked) {
            sp.unacked = false;
            sp.acked_at = Some(Instant::now());
        }
    }

    /// Whether the replica at `addr` may serve the session's reads (it has replayed what the
    /// session needs).
    pub(super) fn replica_qualifies(&self, addr: &str) -> bool {
        let Some(sp) = self.split.as_ref() else { return true };
        let positions = sp.shared.positions();
        if sp.shared.settings.max_lag_time.is_some_and(|max| positions.lags_behind(addr, max)) {
            return false;
        }
        sp.need.is_none_or(|need| positions.has_replayed(addr, need))
    }

    /// Whether every server the client holds has answered everything sent to it.
    fn owes_nothing(&self) -> bool {
        self.to_server.is_empty() && self.held.as_ref().is_none_or(|h| h.pending.is_empty())
    }

    /// Puts the client on `target`'s server: the one it holds, its parked one, or a new lease;
    /// the one it leaves goes back to its pool (between transactions) or is parked (inside one).
    /// `false` when the one it leaves still owes answers (the caller waits).
    async fn switch_to(&mut self, target: Target) -> Result<bool, Refusal> {
        // The router sends a statement to a replica it does not hold yet only when one qualified
        // a moment ago (`replicas_now`); should none qualify when the lease is made, the primary
        // serves it (`pick_now`).
        if self.held.as_ref().is_some_and(|h| h.on == target) {
            return Ok(true);
        }
        if self.held.is_some() && !self.owes_nothing() {
            return Ok(false);
        }
        let sp = self.split.as_mut().expect("splitting");
        let mut next = None;
        let mut leave = Vec::new();
        for h in [self.held.take(), sp.parked.take()].into_iter().flatten() {
            if h.on == target && next.is_none() {
                next = Some(h);
            } else {
                leave.push(h);
            }
        }
        for h in leave {
            if h.block_open || (self.keep_primary && h.on == Target::Primary) {
                let sp = self.split.as_mut().expect("splitting");
                if let Some(old) = sp.parked.replace(h) {
                    // Two open blocks and a third server: cannot happen with two targets.
                    self.give_back(old, false);
                }
            } else {
                self.give_back(h, true);
            }
        }
        match next {
            Some(h) => {
                self.point_cancel(Some(&h.conn.session.target));
                self.held = Some(h);
            }
            None => self.acquire(target).await?,
        }
        Ok(true)
    }

    /// Opens the client's deferred transaction block on the server it now holds (unless one is
    /// open there already): its own `BEGIN` on the primary, a read-only one on a replica.
    fn open_block(&mut self) {
        let Some(sp) = self.split.as_mut() else { return };
        let Some(h) = self.held.as_mut() else { return };
        if h.block_open {
            return;
        }
        let (text, mode) = sp.begin.clone().unwrap_or_else(|| (Bytes::from_static(b"BEGIN\0"), TxnMode::default()));
        let sql: &[u8] = match h.on {
            Target::Primary => text_of(&text).as_bytes(),
            Target::Replica => mode.replica_begin().as_bytes(),
        };
        put_frame(&mut self.to_server, b'Q', |d| wire::put_cstr(d, sql));
        h.pending.sent(Kind::Query, Origin::Injected);
        h.at_rest = false;
        h.block_open = true;
    }

    /// Ends the block on a parked server the client leaves (rolled back: its part read only, or
    /// the block failed), then gives it back to its pool; done beside the session.
    fn finish(&mut self, mut h: Held) {
        let pools = self.shared.pools.clone();
        let key = h.key.clone();
        tokio::spawn(async move {
            let ok = h.pending.is_empty() && h.conn.reset("ROLLBACK").await;
            pools.checkin(&key, h.conn.idle(), ok);
        });
    }

    /// Whether the client has a server parked.
    pub(super) fn has_parked(&self) -> bool {
        self.split.as_ref().is_some_and(|sp| sp.parked.is_some())
    }

    /// Whether the server held now stays with the client between transactions: the kept primary
    /// of a session-mode client.
    pub(super) fn keeps_held(&self) -> bool {
        self.keep_primary && self.held.as_ref().is_some_and(|h| h.on == Target::Primary)
    }

    /// Takes the parked primary back as the held server when the client holds none (a kept
    /// primary, between transactions). Whether it did.
    pub(super) fn unpark_primary(&mut self) -> bool {
        if self.held.is_some() {
            return false;
        }
        let Some(sp) = self.split.as_mut() else { return false };
        let Some(h) = sp.parked.take_if(|h| h.on == Target::Primary) else { return false };
        self.point_cancel(Some(&h.conn.session.target));
        self.held = Some(h);
        true
    }

    /// At the session's end: the kept primary becomes the held server again (a replica held goes
    /// back to its pool), to be reset and returned.
    pub(super) fn home_primary(&mut self) {
        if self.held.as_ref().is_some_and(|h| h.on == Target::Replica) {
            self.release(true);
        }
        self.unpark_primary();
    }

    /// The routes now name `primary`: a kept primary server at rest that is not it any more is
    /// dropped (the session's next write leases from the new one, nothing is lost between
    /// transactions). Then tells whether a server the client holds or has parked is a primary
    /// that is no longer routed: its transaction is under way there.
    pub(super) fn on_unrouted_primary(&mut self, primary: Option<&str>) -> bool {
        let unrouted = |h: &Held| h.on == Target::Primary && primary != Some(h.key.addr.as_str());
        if self.keep_primary && self.pinned.is_none() {
            let held_at_rest = self.held_at_rest() && self.held.as_ref().is_some_and(|h| !h.block_open);
            if held_at_rest && self.held.as_ref().is_some_and(unrouted) {
                self.release(false);
            }
            let sp = self.split.as_mut().expect("kept primaries come with splitting");
            if let Some(h) = sp.parked.take_if(|h| !h.block_open && unrouted(h)) {
                // Not `give_back`: the client's state and cancel key belong to the server it holds.
                self.shared.pools.checkin(&h.key, h.conn.idle(), false);
            }
        }
        let parked = self.split.as_ref().and_then(|sp| sp.parked.as_ref());
        self.held.as_ref().is_some_and(unrouted) || parked.is_some_and(unrouted)
    }

    /// Closes a parked server (the client is leaving).
    pub(super) fn close_parked(&mut self) {
        if let Some(h) = self.split.as_mut().and_then(|sp| sp.parked.take()) {
            self.give_back(h, false);
        }
    }

    /// Counts a statement by where it went.
    fn count_sent(&mut self) {
        if let (Some(sp), Some(h)) = (&mut self.split, &self.held) {
            let counter = match &sp.counter {
                Some((addr, c)) if *addr == h.key.addr => c,
                _ => &sp.counter.insert((h.key.addr.clone(), sp.shared.backend_counter(&h.key.addr))).1,
            };
            sp.shared.sent(counter, h.on == Target::Replica);
        }
    }

    /// Reads this database's function catalog on the primary, beside the session.
    fn load_catalog(&mut self) {
        let Some(sp) = &self.split else { return };
        let split = sp.shared.clone();
        let database = self.base.database.clone();
        let picked = match self.pick_now(Target::Primary) {
            Ok(Some((key, Target::Primary))) => key,
            _ => {
                split.catalog_failed(&database, Instant::now());
                return;
            }
        };
        let pools = self.shared.pools.clone();
        let login = self.login.clone();
        let limits = self.pooling.limits_for(&database);
        let timeout = self.settings.connect_timeout;
        tokio::spawn(async move {
            let leased = lease(&pools, &picked, "catalog", limits, &login, timeout, Instant::now()).await;
            let Ok(taken) = leased else {
                split.catalog_failed(&database, Instant::now());
                return;
            };
            let mut conn = taken.conn;
            match conn.rows(CATALOG_QUERY).await {
                Ok(rows) => {
                    let rows = rows.into_iter().filter_map(|r| match r.as_slice() {
                        [Some(s), Some(n), Some(v)] => Some((s.clone(), n.clone(), v.clone())),
                        _ => None,
                    });
                    let catalog = Catalog::from_rows(rows);
                    tracing::debug!(database = %database, functions = catalog.len(), "function catalog read");
                    split.catalog_loaded(&database, catalog, Instant::now());
                    pools.checkin(&picked, conn.idle(), true);
                }
                Err(e) => {
                    tracing::warn!(database = %database, "reading the function catalog failed: {e}");
                    split.catalog_failed(&database, Instant::now());
                    pools.checkin(&picked, conn.idle(), false);
                }
            }
        });
    }
}
