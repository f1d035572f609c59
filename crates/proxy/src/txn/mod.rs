//! One pooled client: the proxy authenticates it, then lends it a server connection from the
//! pool for each transaction and takes it back at the transaction's end (transaction mode), or
//! for its whole session, the server cleaned with `server_reset_query` before the next session
//! gets it (session mode with the proxy authenticating clients, as PgBouncer's session mode).
//!
//! The client's session is the proxy's: its parameters ([`Params`], replayed with `SET` on each
//! server it gets), its named prepared statements ([`ClientStatements`], prepared lazily under
//! global names on each server), and its cancel key (synthetic, pointed at the server it holds
//! at that moment, at nothing in between). Between transactions it holds no server at all, so a
//! switchover or a crash of the primary does not touch it: its next transaction waits for the new
//! primary, as under PgBouncer's PAUSE, and starts there.
//!
//! Invariants:
//! * a server goes back to its pool only at a ReadyForQuery with status `I` that answers the
//!   last thing sent to it (nothing outstanding, nothing unsent), never in the middle of an
//!   extended-protocol batch or a transaction block;
//! * every byte the client gets answers one of its own messages in order ([`Outstanding`]), or
//!   is an asynchronous message of the server it holds;
//! * a transaction in flight when its server fails gets an error and the client is closed; it is
//!   never silently retried elsewhere;
//! * one event loop turn reads, writes or waits; writes to either side never wait for the other
//!   side to read, so neither can block the proxy into a deadlock.

use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::access_log::{AccessRecord, Outcome};
use crate::backend::{BackendKeyData, BackendMessage, ErrorResponse, SqlState, TransactionStatus};
use crate::cancel::{Addr, BackendTarget, Binding};
use crate::clients::{ClientState, DbStats, Registered, Stamp};
use crate::frame::{frame_at, put_frame, split_frame, Frame, FrameRef, DEFAULT_MAX_FRAME_LEN};
use crate::lifecycle::Phase;
use crate::pipeline::{Kind, Origin, Outstanding};
use crate::pooled_login::{authenticate, client_facing, identity, negotiate_protocol};
use crate::pooling::{PoolMode, Pooling};
use crate::pools::{lease, Leased, Login, PoolKey, PoolRef, Taken};
use crate::prepared::{ClientStatements, Route};
use crate::relay::{send_error, Ended};
use crate::server_auth::LoginError;
use crate::server_conn::{OpenError, ServerConn};
use crate::session::{fatal, Port, Refusal, SessionSettings, Shared};
use crate::session_features::{self, Feature};
use crate::session_params::Params;
use crate::split::route::Target;
use crate::startup::{ProtocolVersion, StartupMessage};
use crate::topology::Backend;
use crate::topology::Routes;
use crate::wire;
use tokio::sync::watch;
use tokio::time::Sleep;

mod changes;
mod doorbell;
mod split;

use changes::Changes;
use doorbell::Doorbell;

use split::{Flow, SplitSession};

/// How much may wait to be written to one side before the proxy stops reading the other.
const HIGH_WATER: usize = 256 * 1024;

/// `25P03` idle_in_transaction_session_timeout.
const IDLE_IN_TRANSACTION: SqlState = SqlState::new("25P03");

/// Serves a client in transaction mode until it leaves.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<R, W>(
    shared: &Shared,
    settings: &SessionSettings,
    pooling: Arc<Pooling>,
    port: Port,
    mut client_r: R,
    mut client_w: W,
    cbuf: BytesMut,
    startup: StartupMessage,
    record: &mut AccessRecord,
    (addr, tls): (Option<IpAddr>, bool),
) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _client = shared.pool_clients.enter();
    if shared.pool_clients.count() > pooling.max_client_conn {
        let r =
            fatal(Outcome::Refused, SqlState::TOO_MANY_CONNECTIONS, "no more connections allowed (max_client_conn)");
        let _ = send_error(&mut client_w, &r.error).await;
        return Ended::from(r);
    }
    let id = match identity(&startup) {
        Ok(id) => id,
        Err(r) => {
            let _ = send_error(&mut client_w, &r.error).await;
            return Ended::from(r);
        }
    };
    let mut cbuf = cbuf;
    let mut out = BytesMut::new();
    if startup.version() != ProtocolVersion::V3_0 || startup.protocol_options().next().is_some() {
        negotiate_protocol(&startup, &mut out);
    }
    let login =
        match authenticate(shared, settings, &pooling, &id, &mut client_r, &mut client_w, &mut cbuf, out, (addr, tls))
            .await
        {
            Ok(login) => login,
            Err(r) => {
                let _ = send_error(&mut client_w, &r.error).await;
                return Ended::from(r);
            }
        };
    let peer = record.client.clone();
    let registered = shared.clients.register(&id.user, &id.database, &peer, tls);
    let mut session = pooling.mode_for(&id.database) == PoolMode::Session;
    // Read/write splitting on the read-write port. A session-mode client's statements then run on
    // several servers, so it is served as in transaction mode (its prepared statements renamed,
    // its reported parameters replayed, session-level features pinning it to the primary), except
    // that it keeps the primary server it takes until its session ends, as session mode promises:
    // what it sets there outside the proxy's sight stays set.
    let split = match (shared.split(), port) {
        (Some(s), Port::ReadWrite) => Some(SplitSession::new(s.clone())),
        _ => None,
    };
    let keep_primary = session && split.is_some();
    session &= !keep_primary;
    // PAUSE as of this receiver's version: read again whenever that moves (see `Txn::paused`).
    let mut paused_seen = shared.paused.subscribe();
    let paused_holds = paused_seen.borrow_and_update().holds(&id.database);
    let mut t = Txn {
        split,
        keep_primary,
        next: None,
        shared,
        me: &registered,
        leased_at: None,
        last_key: None,
        primary_pick: false,
        routes_seen: shared.routes.clone(),
        paused_holds,
        paused_seen,
        pinned: None,
        session,
        settings,
        pooling,
        port,
        base: PoolKey { database: id.database, user: id.user, addr: String::new(), extra: id.extra },
        login,
        statements: ClientStatements::default(),
        params: Params::from_startup(&startup),
        pid: 0,
        cancel: None,
        held: None,
        spare: Outstanding::default(),
        to_server: BytesMut::new(),
        to_client: BytesMut::new(),
        cbuf,
        bytes_from_client: 0,
        bytes_to_client: 0,
        tls,
        server_bell: Doorbell::new(),
        client_bell: Doorbell::new(),
        servers_taken: 0,
    };
    let ended = t.run(&mut client_r, &mut client_w).await;
    record.bytes_from_client = t.bytes_from_client;
    record.bytes_to_client = t.bytes_to_client;
    if t.keep_primary {
        t.home_primary();
    }
    if (t.session || t.keep_primary) && matches!(ended.outcome, Outcome::ClientClosed) {
        t.reset_for_next().await;
    }
    t.release(false);
    t.close_parked();
    if t.pid != 0 {
        shared.cancels.lock().unwrap_or_else(|e| e.into_inner()).remove(t.pid);
    }
    ended
}

/// The server a client holds, with what it still owes.
struct Held {
    conn: ServerConn,
    key: PoolRef,
    pending: Outstanding,
    /// The last message was a ReadyForQuery `I` answering everything sent.
    at_rest: bool,
    status: TransactionStatus,
    /// Whether it is the primary or a replica (read/write splitting on the read-write port).
    on: Target,
    /// A transaction block is open on it (or its BEGIN is on the way).
    block_open: bool,
    /// Its number among the servers this client took, never reused (see [`doorbell`]).
    number: u64,
}

impl Held {
    /// Records a client message passed on as it is (session mode, or a transaction-mode simple
    /// query that needs no statement bookkeeping): the request it makes, if any, is owed an
    /// answer.
    fn sent_as_is<'f>(&mut self, frame: impl Into<FrameRef<'f>>) {
        if let Some(kind) = Kind::of_client_message(frame) {
            self.pending.sent(kind, Origin::Client);
            self.at_rest = false;
        }
    }
}

/// One transaction-mode client.
struct Txn<'a> {
    /// Read/write splitting of this client's statements, when its port balances reads.
    split: Option<SplitSession>,
    /// A client message taken from the buffer but not placed yet (it waits for the server it
    /// needs to answer everything before).
    next: Option<Frame>,
    shared: &'a Shared,
    /// This client in the console's list, and its database's counters.
    me: &'a Registered<'a>,
    /// When it took the server it holds.
    leased_at: Option<Stamp>,
    /// The backend of its last transaction and that pool's key.
    last_key: Option<(Backend, PoolRef)>,
    /// `last_key` is the read-write port's primary pick, valid while the routes are as
    /// `routes_seen` last saw them.
    primary_pick: bool,
    /// This client's view of the routes' version: an unchanged primary is picked again with one
    /// atomic load, without the read lock of the channel that every client shares.
    routes_seen: watch::Receiver<Routes>,
    /// Whether PAUSE holds this client's database, as of `paused_seen`'s version.
    paused_holds: bool,
    paused_seen: watch::Receiver<crate::pooling::Paused>,
    /// A session-level feature it used: it keeps its server to the end.
    pinned: Option<Feature>,
    /// Session mode: it keeps the server it first takes to the end of its session, and at a
    /// clean end the server goes back to the pool after `server_reset_query`.
    session: bool,
    /// Session mode with splitting: served as in transaction mode, but it keeps the primary
    /// server it takes (parked while it reads on a replica) until its session ends or the primary
    /// changes; at a clean end that server goes back after `server_reset_query`.
    keep_primary: bool,
    settings: &'a SessionSettings,
    pooling: Arc<Pooling>,
    port: Port,
    /// The pool key without the backend's address.
    base: PoolKey,
    login: Login,
    statements: ClientStatements,
    /// The client's session parameters.
    params: Params,
    /// The synthetic cancel key's pid.
    pid: u32,
    /// Where that key points: the server held, or nothing between transactions.
    cancel: Option<Binding<Addr>>,
    held: Option<Held>,
    /// The last server's bookkeeping, cleared, kept for the next (its buffers stay allocated).
    spare: Outstanding,
    to_server: BytesMut,
    to_client: BytesMut,
    cbuf: BytesMut,
    bytes_from_client: u64,
    bytes_to_client: u64,
    /// The client speaks TLS: its writer keeps bytes until flushed.
    tls: bool,
    /// The held server's and the client's read registrations (see [`doorbell`]).
    server_bell: Doorbell,
    client_bell: Doorbell,
    /// How many servers this client took: the next one's [`Held::number`].
    servers_taken: u64,
}

/// What [`Txn::take_idle_now`] did.
enum Now {
    /// The client holds an idle server of the pool.
    Taken,
    /// It must wait, for a server of the backend picked if one was.
    Wait(Option<(PoolRef, Target)>),
}

/// Counts and logs a client now pinned to its server by `feature`.
fn pinned_now(shared: &Shared, base: &PoolKey, feature: Feature) {
    shared.clients.pinned(feature);
    tracing::debug!(user = %base.user, database = %base.database, feature = feature.as_str(), "client pinned to its server for the rest of its session");
}

/// The client sent bytes that are not a message.
fn invalid_message(e: impl std::fmt::Display) -> (Ended, Option<ErrorResponse>) {
    ended(Outcome::ProtocolError, SqlState::PROTOCOL_VIOLATION, format!("invalid message: {e}"))
}

/// What ended the loop early.
fn ended(outcome: Outcome, code: SqlState, message: impl Into<String>) -> (Ended, Option<ErrorResponse>) {
    let r = fatal(outcome, code, message);
    let error = r.error.clone();
    (Ended::from(r), Some(error))
}

impl Txn<'_> {
    /// Greets the client, then serves its messages until it leaves.
    async fn run<R, W>(&mut self, client_r: &mut R, client_w: &mut W) -> Ended
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if let Err(r) = self.greet().await {
            let _ = send_error(client_w, &r.error).await;
            return Ended::from(r);
        }
        let (ended, error) = self.serve(client_r, client_w).await;
        if let Some(e) = error {
            // At a message boundary: the proxy writes whole messages only.
            let _ = client_w.write_all(&self.to_client).await;
            let _ = send_error(client_w, &e).await;
        }
        ended
    }

    /// Parameters (the pool's first server's, with the client's own values), the synthetic
    /// cancel key and ReadyForQuery.
    async fn greet(&mut self) -> Result<(), Refusal> {
        let welcome = match self.pool_welcome() {
            Some(w) => w,
            None => {
                // The pool's first client: a server tells what to say (and proves the login).
                self.acquire(Target::Primary).await?;
                let w = self.held.as_ref().map(|h| h.conn.session.welcome.clone()).unwrap_or_default();
                w
            }
        };
        for (name, value) in &welcome {
            let value = self.params.get(name).unwrap_or(value).to_string();
            put_frame(&mut self.to_client, b'S', |d| {
                wire::put_cstr(d, name.as_bytes());
                wire::put_cstr(d, value.as_bytes());
            });
            self.params.set(name, &value);
        }
        let issued = self.shared.cancels.lock().unwrap_or_else(|e| e.into_inner()).issue_unbound(4, |b| rand::fill(b));
        let (pid, key, binding) =
            issued.map_err(|e| fatal(Outcome::Refused, SqlState::CONNECTION_FAILURE, e.to_string()))?;
        self.pid = pid;
        if let Some(h) = &self.held {
            binding.set(Some(h.conn.session.target.clone()));
        }
        self.cancel = Some(binding);
        BackendKeyData { pid, key }.encode(&mut self.to_client);
        TransactionStatus::Idle.encode_ready_for_query(&mut self.to_client);
        Ok(())
    }

    /// What the pool's servers said at login, if one has logged in.
    fn pool_welcome(&self) -> Option<Vec<(String, String)>> {
        let primary = self.shared.routes.borrow().primary.clone()?;
        let key = PoolKey { addr: primary.addr(), ..self.base.clone() };
        self.shared.pools.welcome(&key)
    }

    /// The pool for the next transaction, if a backend can be had now: a replica on the
    /// read-only port, else the primary; `None` while there is no primary. Reads the routes
    /// without copying them, and keeps the key of the last backend (most transactions go where
    /// the last one went; a key is four allocations).
    /// `want` is where a balanced read-write port sends the statement; a read that finds no
    /// replica runs on the primary. Also returns which of the two the backend is.
    fn pick_now(&mut self, want: Target) -> Result<Option<(PoolRef, Target)>, Refusal> {
        let shared = self.shared;
        let primary_only = want == Target::Primary && self.port == Port::ReadWrite;
        // The same primary as last time while the routes did not change (a version's load).
        let changed = self.routes_seen.has_changed().unwrap_or(true);
        if !changed && primary_only && self.primary_pick {
            if let Some((_, key)) = &self.last_key {
                return Ok(Some((key.clone(), Target::Primary)));
            }
        }
        // Seen before it is read: a change in between is read now and found again next time.
        if changed {
            self.routes_seen.mark_unchanged();
        }
        self.primary_pick = false;
        let routes = shared.routes.borrow();
        let replica = self.port == Port::ReadOnly || want == Target::Replica;
        // Read-your-writes: only replicas that have replayed the session's write (the router
        // asked for a replica only if one has).
        let eligible: Vec<Backend>;
        let replicas = if self.split.as_ref().is_some_and(|sp| sp.needs_filter()) {
            eligible = routes.replicas.iter().filter(|b| self.replica_qualifies(&b.addr())).cloned().collect();
            &eligible[..]
        } else {
            &routes.replicas[..]
        };
        let (backend, on) = if replica && !replicas.is_empty() {
            (&replicas[shared.pick_replica_index(replicas, self.settings.balance)], Target::Replica)
        } else if self.port == Port::ReadOnly && !self.settings.fallback_to_primary {
            return Err(fatal(Outcome::Refused, SqlState::CANNOT_CONNECT_NOW, "no replica available"));
        } else {
            match &routes.primary {
                Some(p) => (p, Target::Primary),
                None => return Ok(None),
            }
        };
        match &mut self.last_key {
            Some((b, key)) if b == backend => {
                // The pool is made by the first transaction that asks for it: its number then.
                if key.id() == 0 {
                    *key = shared.pools.canonical(key.clone());
                }
                self.primary_pick = primary_only && key.id() != 0;
                Ok(Some((key.clone(), on)))
            }
            _ => {
                let key = shared.pools.canonical(PoolRef::new(PoolKey { addr: backend.addr(), ..self.base.clone() }));
                self.primary_pick = primary_only && key.id() != 0;
                self.last_key = Some((backend.clone(), key.clone()));
                Ok(Some((key, on)))
            }
        }
    }

    /// Whether PAUSE (the admin console) holds this client's database: read again only when the
    /// channel's version moved (one atomic load per transaction otherwise).
    fn paused(&mut self) -> bool {
        if self.paused_seen.has_changed().unwrap_or(true) {
            self.paused_holds = self.paused_seen.borrow_and_update().holds(&self.base.database);
        }
        self.paused_holds
    }

    /// Waits for a primary until `deadline`.
    async fn wait_for_primary(&self, deadline: Instant) -> Result<(), Refusal> {
        let mut rx = self.shared.routes.clone();
        let found = tokio::time::timeout_at(deadline.into(), rx.wait_for(|r| r.primary.is_some())).await;
        match found {
            Ok(Ok(_)) => Ok(()),
            _ => Err(fatal(Outcome::Refused, SqlState::CANNOT_CONNECT_NOW, "no primary available")),
        }
    }

    /// Gets a server for the next transaction: waits for a primary and for a free connection,
    /// and retries a server that cannot take sessions yet, within the hold.
    async fn acquire(&mut self, want: Target) -> Result<(), Refusal> {
        // The clock is read once here and once when the server goes back, unless the client
        // has to wait.
        let began = Instant::now();
        let began_at = Stamp::of(began);
        // The pick goes on to the waiting path (picking again would move the replicas' round
        // robin twice).
        let picked = match self.take_idle_now(want, began_at)? {
            Now::Taken => return Ok(()),
            Now::Wait(picked) => picked,
        };
        self.me.info.set(ClientState::Waiting, 0, began_at);
        let (taken, key, on) = self.acquire_now(began, want, picked).await?;
        let at = match taken.at_once {
            true => began_at,
            false => {
                let at = Stamp::of(Instant::now());
                DbStats::add(&self.me.info.stats.wait_us, at.micros_since(began_at));
                at
            }
        };
        self.take(taken.conn, key, on, at);
        Ok(())
    }

    /// [`Txn::acquire`]'s common case, without a future: not paused, and a server idle in the
    /// pool of the backend picked, taken since `began`. Otherwise the backend picked, if any, for
    /// the waiting path.
    fn take_idle_now(&mut self, want: Target, began: Stamp) -> Result<Now, Refusal> {
        if self.paused() {
            return Ok(Now::Wait(None));
        }
        let Some((key, on)) = self.pick_now(want)? else { return Ok(Now::Wait(None)) };
        match self.shared.pools.take_idle(&key) {
            Some(conn) => {
                self.take(conn, key, on, began);
                Ok(Now::Taken)
            }
            None => Ok(Now::Wait(Some((key, on)))),
        }
    }

    /// [`Txn::acquire`]'s waiting path, starting from the backend `picked` already, if any.
    async fn acquire_now(
        &mut self,
        began: Instant,
        mut want: Target,
        mut picked: Option<(PoolRef, Target)>,
    ) -> Result<(Taken, PoolRef, Target), Refusal> {
        let mut asked = began;
        // PAUSE (admin console): held until RESUME.
        if self.paused() {
            let db = self.base.database.clone();
            let _ = self.shared.paused.subscribe().wait_for(|p| !p.holds(&db)).await;
            asked = Instant::now();
            // The routes may have moved meanwhile: picked again below.
            picked = None;
        }
        let deadline = asked + self.settings.hold_timeout;
        // Made at the first retry: the routes' changes wake a held client early.
        let mut changes: Option<watch::Receiver<Routes>> = None;
        loop {
            let (key, on) = match picked.take().map_or_else(|| self.pick_now(want), |p| Ok(Some(p)))? {
                Some(picked) => picked,
                None => {
                    self.wait_for_primary(deadline).await?;
                    continue;
                }
            };
            let name = self.last_key.as_ref().map_or("", |(b, _)| b.name.as_str());
            let limits = self.pooling.limits_for(&key.database);
            let got = lease(&self.shared.pools, &key, name, limits, &self.login, self.settings.connect_timeout, asked);
            let error = match got.await {
                Ok(taken) => return Ok((taken, key, on)),
                Err(Leased::TimedOut) => {
                    return Err(fatal(
                        Outcome::Refused,
                        SqlState::CONNECTION_FAILURE,
                        "no server connection became free within query_wait_timeout",
                    ))
                }
                Err(Leased::Open(e)) => e,
            };
            if on == Target::Replica && self.port == Port::ReadWrite {
                // A balanced read whose replica cannot be reached: the primary serves it.
                tracing::debug!(backend = %name, "{error}; the read runs on the primary");
                want = Target::Primary;
                continue;
            }
            if !error.retryable() || Instant::now() >= deadline {
                tracing::warn!(user = %self.base.user, database = %self.base.database, backend = %name, "{error}");
                // What the server says about the client's own request (no such database, no
                // permission to connect) reaches it as the server said it.
                if let OpenError::Login(LoginError::Refused { code, message, .. }) = &error {
                    if let Some(code) = client_facing(code) {
                        return Err(fatal(Outcome::ServerError, code, message.clone()));
                    }
                }
                let message = match &error {
                    OpenError::Login(_) => format!("the proxy could not log in to {name}: {error}"),
                    _ => format!("{name} ({}): {error}", key.addr),
                };
                return Err(fatal(Outcome::ConnectFailed, SqlState::CONNECTION_FAILURE, message));
            }
            tracing::debug!(backend = %name, "{error}; holding the client");
            let rx = changes.get_or_insert_with(|| {
                let mut rx = self.shared.routes.clone();
                rx.borrow_and_update();
                rx
            });
            let pause = tokio::time::sleep(Duration::from_millis(100));
            tokio::select! {
                _ = rx.changed() => {}
                _ = pause => {}
            }
            asked = Instant::now();
        }
    }

    /// Makes the leased connection the client's server since `at`: its parameters brought in
    /// line, its cancel key bound.
    fn take(&mut self, mut conn: ServerConn, key: PoolRef, on: Target, at: Stamp) {
        let mut pending = std::mem::take(&mut self.spare);
        if let Some(sql) = self.params.replay_on(&mut conn.session.params) {
            put_frame(&mut self.to_server, b'Q', |d| wire::put_cstr(d, sql.as_bytes()));
            pending.sent(Kind::Query, Origin::Injected);
        }
        self.point_cancel(Some(&conn.session.target));
        tracing::trace!(
            client = self.pid,
            server = conn.session.target.pid,
            replay = !pending.is_empty(),
            "server leased"
        );
        self.me.info.set(ClientState::Active, conn.session.target.pid, at);
        self.leased_at = Some(at);
        self.servers_taken += 1;
        let at_rest = pending.is_empty();
        let number = self.servers_taken;
        self.held =
            Some(Held { conn, key, pending, at_rest, status: TransactionStatus::Idle, on, block_open: false, number });
    }

    /// Session mode, the client gone: a server at rest runs `server_reset_query` and goes back to
    /// the pool; else it stays held (and is closed).
    async fn reset_for_next(&mut self) {
        if !self.held_at_rest() {
            return;
        }
        let Some(h) = self.held.as_mut() else { return };
        if let Some(query) = &self.pooling.reset_query {
            let reset = tokio::time::timeout(self.settings.connect_timeout, h.conn.reset(query)).await;
            if reset != Ok(true) {
                tracing::debug!(
                    server = h.conn.session.target.pid,
                    "server_reset_query failed: the server connection is closed"
                );
                return;
            }
            h.conn.session.statements.clear();
        }
        self.release(true);
    }

    /// Whether the held server answered everything sent to it and nothing waits to be sent:
    /// between transactions, it may be let go.
    fn held_at_rest(&self) -> bool {
        self.to_server.is_empty() && self.held.as_ref().is_some_and(|h| h.at_rest && h.pending.is_empty())
    }

    /// Gives the server back: to be reused when it is at rest and `clean`, else closed.
    fn release(&mut self, clean: bool) {
        let Some(h) = self.held.take() else { return };
        self.give_back(h, clean);
    }

    /// Points the client's cancel key at the server it holds now (that server's own cancel
    /// target, shared, not copied), or at nothing between its transactions.
    fn point_cancel(&self, target: Option<&Arc<BackendTarget<Addr>>>) {
        if let Some(binding) = &self.cancel {
            binding.set(target.cloned());
        }
    }

    /// Gives server `h` back (the one the client held): reused when at rest and `clean`.
    fn give_back(&mut self, h: Held, clean: bool) {
        let now = Instant::now();
        let now_at = Stamp::of(now);
        self.me.info.set(ClientState::Idle, 0, now_at);
        if let Some(at) = self.leased_at.take() {
            DbStats::add(&self.me.info.stats.xacts, 1);
            DbStats::add(&self.me.info.stats.xact_us, now_at.micros_since(at));
        }
        self.point_cancel(None);
        let reusable = clean && h.at_rest && h.pending.is_empty() && self.to_server.is_empty();
        tracing::trace!(client = self.pid, server = h.conn.session.target.pid, reusable, status = ?h.status, "server released");
        self.to_server.clear();
        if h.pending.is_clear() {
            self.spare = h.pending;
        }
        self.shared.pools.checkin_at(&h.key, h.conn.idle(), reusable, now);
    }

    /// The client's complete messages, each routed to the server it holds (taking one first).
    async fn place_client_messages(&mut self) -> Result<bool, (Ended, Option<ErrorResponse>)> {
        loop {
            let taken = self.next.take().map(|f| Ok(Some(f)));
            let frame = match taken.unwrap_or_else(|| split_frame(&mut self.cbuf, DEFAULT_MAX_FRAME_LEN)) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(true),
                Err(e) => return Err(invalid_message(e)),
            };
            tracing::trace!(client = self.pid, tag = %crate::frame::printable(frame.tag()), "from client");
            if frame.tag() == b'X' {
                return Ok(false);
            }
            if self.split.is_some() {
                match self.split_route(&frame).await {
                    Ok(Flow::Forward) => {}
                    Ok(Flow::Consumed) => {
                        DbStats::add(&self.me.info.stats.queries, 1);
                        continue;
                    }
                    Ok(Flow::Wait) => {
                        self.next = Some(frame);
                        return Ok(true);
                    }
                    Err(r) => {
                        let error = r.error.clone();
                        return Err((Ended::from(r), Some(error)));
                    }
                }
            }
            if matches!(frame.tag(), b'Q' | b'S') {
                DbStats::add(&self.me.info.stats.queries, 1);
            }
            if self.pinned.is_none() && !self.session {
                self.pinned = session_features::scan_message(frame.tag(), frame.body());
                if let Some(f) = self.pinned {
                    if let Some(sp) = self.split.as_mut() {
                        sp.router.pin();
                    }
                    pinned_now(self.shared, &self.base, f);
                }
            }
            if self.held.is_none() && !self.session {
                match self.statements.answer_locally(self.shared.pools.registry(), &frame, &mut self.to_client) {
                    Some(Ok(())) => continue,
                    Some(Err(e)) => {
                        return Err(ended(Outcome::ProtocolError, SqlState::PROTOCOL_VIOLATION, e.to_string()))
                    }
                    None => {}
                }
            }
            if self.held.is_none() && !self.unpark_primary() {
                if let Err(r) = self.acquire(Target::Primary).await {
                    let error = r.error.clone();
                    return Err((Ended::from(r), Some(error)));
                }
            }
            let Some(h) = self.held.as_mut() else { unreachable!("a server was just taken") };
            if self.session {
                // The session's own server: its statements keep the client's names.
                self.to_server.extend_from_slice(frame.as_bytes());
                h.sent_as_is(&frame);
                h.pending.move_to_client(&mut self.to_client);
                continue;
            }
            let mut route = Route {
                client: &mut self.statements,
                server: &mut h.conn.session.statements,
                registry: self.shared.pools.registry(),
                pending: &mut h.pending,
                to_server: &mut self.to_server,
            };
            if let Err(e) = route.client_message(&frame) {
                return Err(ended(Outcome::ProtocolError, SqlState::PROTOCOL_VIOLATION, e.to_string()));
            }
            if !self.to_server.is_empty() {
                h.at_rest = false;
            }
            h.pending.move_to_client(&mut self.to_client);
        }
    }

    /// [`Txn::place_client_messages`] without a future, for a client holding its server (no
    /// splitting): its whole messages go to the server as they are, in one copy, each counted as
    /// the request it makes; `Ok(false)` at Terminate (what came before it is placed). A
    /// session-mode client's messages all go so; a transaction-mode client's only while they are
    /// simple queries that the statement bookkeeping passes on as they are
    /// ([`ClientStatements::passes_as_is`]), each scanned for session-level features as the
    /// general path does. `None` when the rest (all or part) takes the general path.
    fn place_held_messages(&mut self) -> Option<Result<bool, (Ended, Option<ErrorResponse>)>> {
        if self.split.is_some() || self.next.is_some() {
            return None;
        }
        if self.held.is_none() && !self.take_idle_for_query() {
            return None;
        }
        let h = self.held.as_mut()?;
        let (cbuf, to_server, to_client) = (&mut self.cbuf, &mut self.to_server, &mut self.to_client);
        let mut placed = 0;
        let mut queries = 0;
        let outcome = loop {
            let frame = match frame_at(&cbuf[placed..], DEFAULT_MAX_FRAME_LEN) {
                Ok(Some(f)) => f,
                Ok(None) => break Some(Ok(true)),
                Err(e) => break Some(Err(invalid_message(e))),
            };
            let tag = frame.tag();
            if tag == b'X' {
                tracing::trace!(client = self.pid, tag = "X", "from client");
                to_server.extend_from_slice(&cbuf[..placed]);
                cbuf.advance(placed + frame.as_bytes().len());
                placed = 0;
                break Some(Ok(false));
            }
            if !self.session {
                if !self.statements.passes_as_is(tag, frame.body()) {
                    break None;
                }
                if self.pinned.is_none() {
                    self.pinned = session_features::scan_message(tag, frame.body());
                    if let Some(f) = self.pinned {
                        pinned_now(self.shared, &self.base, f);
                    }
                }
            }
            tracing::trace!(client = self.pid, tag = %crate::frame::printable(tag), "from client");
            queries += u64::from(matches!(tag, b'Q' | b'S'));
            h.sent_as_is(frame);
            placed += frame.as_bytes().len();
        };
        if placed > 0 {
            to_server.extend_from_slice(&cbuf[..placed]);
            cbuf.advance(placed);
        }
        if queries > 0 {
            DbStats::add(&self.me.info.stats.queries, queries);
        }
        h.pending.move_to_client(to_client);
        outcome
    }

    /// For a transaction-mode client between transactions on the read-write port whose next
    /// message is a simple query that passes as it is: takes an idle server of the primary's pool
    /// as [`Txn::acquire`] would, without a future. `false` when the general path must place the
    /// message (it may wait, be refused, be answered without a server, or pick a replica).
    fn take_idle_for_query(&mut self) -> bool {
        if self.session || self.port != Port::ReadWrite {
            return false;
        }
        let passes = match frame_at(&self.cbuf, DEFAULT_MAX_FRAME_LEN) {
            Ok(Some(f)) => self.statements.passes_as_is(f.tag(), f.body()),
            _ => false,
        };
        passes && matches!(self.take_idle_now(Target::Primary, Stamp::of(Instant::now())), Ok(Now::Taken))
    }

    /// Places what the server sent; `Err` when the server broke the protocol.
    fn place_server_messages(&mut self) -> Result<(), String> {
        let mut acknowledged = false;
        let placed = self.place_server_frames(&mut acknowledged);
        if acknowledged {
            self.write_acknowledged();
        }
        placed
    }

    /// [`Txn::place_server_messages`]'s loop; `acknowledged` is set when a block ended on the
    /// primary (read-your-writes).
    fn place_server_frames(&mut self, acknowledged: &mut bool) -> Result<(), String> {
        let Some(h) = self.held.as_mut() else { return Ok(()) };
        // Each message is read where it lies in the read buffer; the buffer gives up what was
        // placed at the end, at once.
        let mut placed = 0;
        let result = loop {
            let frame = match frame_at(&h.conn.buf[placed..], DEFAULT_MAX_FRAME_LEN) {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(e) => break Err(format!("bad message from the server: {e}")),
            };
            let at = placed;
            placed += frame.as_bytes().len();
            tracing::trace!(client = self.pid, tag = %crate::frame::printable(frame.tag()), "from server");
            match frame.tag() {
                b'S' => {
                    if let Ok(BackendMessage::ParameterStatus(p)) = BackendMessage::parse(frame) {
                        h.conn.session.params.set(&p.name, &p.value);
                        self.params.set(&p.name, &p.value);
                    }
                }
                b'Z' => {
                    // Read in place: one per transaction, and a parse would build a message.
                    if let Some(s) = TransactionStatus::of_ready_body(frame.body()) {
                        h.status = s;
                        h.block_open = s != TransactionStatus::Idle;
                        if let Some(sp) = self.split.as_mut().filter(|_| h.pending.answers_client()) {
                            sp.router.ready(s, h.on);
                            if h.on == Target::Primary && s == TransactionStatus::Idle {
                                *acknowledged = true;
                            }
                        }
                    }
                }
                _ => {}
            }
            match h.pending.received_in(&h.conn.buf, at, frame) {
                Ok(unprepared) => h.conn.session.statements.forget(&unprepared),
                Err(e) => break Err(e.to_string()),
            }
            if frame.tag() == b'Z' {
                h.at_rest = h.pending.is_empty() && self.to_server.is_empty() && h.status == TransactionStatus::Idle;
            }
        };
        // What was forwarded is copied out before the buffer gives it up (an error's too).
        h.pending.end_run(&h.conn.buf);
        h.conn.buf.advance(placed);
        result?;
        h.pending.move_to_client(&mut self.to_client);
        Ok(())
    }

    /// The writes that complete without waiting (see [`Txn::poll_writes`]), each followed at once
    /// by the next: a turn neither ends nor waits for a write that can go now. Returns a failed
    /// write's event, if one failed, and whether anything went; the writes that would wait are
    /// waited for by the turn's wait, with the task's own waker.
    fn write_now<W: AsyncWrite + Unpin>(&mut self, client_w: &mut W, unflushed: &mut bool) -> (Option<Event>, bool) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut wrote = false;
        while let Poll::Ready(event) = self.poll_writes(&mut cx, client_w, *unflushed) {
            if let Some(failed) = self.wrote(event, unflushed) {
                return (Some(failed), wrote);
            }
            wrote = true;
        }
        (None, wrote)
    }

    /// Counts a write that went (`None`); any other event is handed back. Inlined: every event
    /// of a turn passes through it, and most are handed back as they are.
    #[inline(always)]
    fn wrote(&mut self, event: Event, unflushed: &mut bool) -> Option<Event> {
        match event {
            // Zero bytes taken of a non-empty buffer: the socket takes no more (never on TCP).
            Event::WroteServer(Ok(0)) => return Some(Event::WroteServer(Err(IoFailed))),
            Event::WroteClient(Ok(0)) => return Some(Event::WroteClient(Err(IoFailed))),
            Event::WroteServer(Ok(n)) => self.to_server.advance(n),
            Event::WroteClient(Ok(n)) => {
                *unflushed = self.tls;
                self.to_client.advance(n);
                self.bytes_to_client += n as u64;
                DbStats::add(&self.me.info.stats.sent, n as u64);
            }
            Event::Flushed(Ok(())) => *unflushed = false,
            other => return Some(other),
        }
        None
    }

    /// The writes of a turn, in order: to the server, then to the client, then the client's
    /// flush (`flush`: its writer holds bytes back).
    fn poll_writes<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        client_w: &mut W,
        flush: bool,
    ) -> Poll<Event> {
        if let Some(h) = self.held.as_mut().filter(|_| !self.to_server.is_empty()) {
            // `write` of the bytes (send(2)) rather than `write_buf` (writev(2) of one piece).
            if let Poll::Ready(r) = Pin::new(&mut h.conn.stream).poll_write(cx, &self.to_server) {
                return Poll::Ready(Event::WroteServer(r.map_err(|_| IoFailed)));
            }
        }
        if !self.to_client.is_empty() {
            if let Poll::Ready(r) = Pin::new(&mut *client_w).poll_write(cx, &self.to_client) {
                return Poll::Ready(Event::WroteClient(r.map_err(|_| IoFailed)));
            }
        } else if flush {
            if let Poll::Ready(r) = Pin::new(&mut *client_w).poll_flush(cx) {
                return Poll::Ready(Event::Flushed(r.map_err(|_| IoFailed)));
            }
        }
        Poll::Pending
    }

    /// What one turn waits for, polled in a fixed order (no random number per turn): the proxy's
    /// stop and the routes' changes first, so that no flow of messages can starve them; the
    /// server's replies before the client's next messages; then writes and timers. A plain
    /// function rather than a `select!`, which would build and drop a future per source on every
    /// turn.
    fn poll_event<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        wants: Wants,
        sources: &mut Sources<'_, R, W>,
        timers: &mut [Option<Pin<&mut Sleep>>; 2],
    ) -> Poll<Event>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if let Poll::Ready(phase) = sources.stopping.poll_change(cx, |p| *p) {
            return Poll::Ready(Event::Stop(phase));
        }
        if wants.routes {
            let primary = sources.rerouted.poll_change(cx, |r| r.primary.as_ref().map(Backend::addr));
            if let Poll::Ready(primary) = primary {
                return Poll::Ready(Event::Routes(primary));
            }
        }
        // Each socket is polled through its doorbell, and not at all while the registration of
        // its last poll stands (most turns wait on one side only).
        if let Some(h) = self.held.as_mut().filter(|_| wants.server) {
            let (stream, buf) = (&mut h.conn.stream, &mut h.conn.buf);
            if let Poll::Ready(r) = self.server_bell.poll(h.number, cx, |bcx| pin!(stream.read_buf(buf)).poll(bcx)) {
                return Poll::Ready(Event::Server(r.map_err(|_| IoFailed)));
            }
        }
        if wants.client {
            let (client_r, cbuf) = (&mut *sources.client_r, &mut self.cbuf);
            let read = match self.tls {
                // A TLS client's reader is polled every turn: its registration is the TLS stream's.
                true => pin!(client_r.read_buf(cbuf)).poll(cx),
                false => self.client_bell.poll(0, cx, |bcx| pin!(client_r.read_buf(cbuf)).poll(bcx)),
            };
            if let Poll::Ready(r) = read {
                return Poll::Ready(Event::Client(r.map_err(|_| IoFailed)));
            }
        }
        if let Poll::Ready(event) = self.poll_writes(cx, sources.client_w, wants.flush) {
            return Poll::Ready(event);
        }
        let [idle, drain] = timers;
        if idle.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready()) {
            return Poll::Ready(Event::IdleInTransaction);
        }
        if drain.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready()) {
            return Poll::Ready(Event::RouteLostTooLong);
        }
        Poll::Pending
    }

    /// The event loop.
    async fn serve<R, W>(&mut self, client_r: &mut R, client_w: &mut W) -> (Ended, Option<ErrorResponse>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // One long-lived wait each for the proxy's stop and for a change of the routes, polled by
        // every turn: a new `changed()` per turn would register and unregister a waiter on
        // channels that every client shares, for every message.
        let mut stopping = Changes::new(self.shared.lifecycle.subscribe());
        let mut rerouted = Changes::new(self.shared.routes.clone());
        let mut draining = false;
        // When the held server's primary left the routes (a switchover under way).
        let mut route_lost: Option<Instant> = None;
        // The client's writer may hold bytes back until flushed (TLS); a plain socket's flush
        // does nothing, so it costs no turn of the loop.
        let mut unflushed = false;
        // The two timers, kept from turn to turn while armed (see `arm`).
        let (mut idle_timer, mut drain_timer) = (None, None);
        loop {
            // Most turns bring nothing from the client (a server's reply, a write done).
            let placed = match self.next.is_some() || !self.cbuf.is_empty() {
                true => match self.place_held_messages() {
                    Some(placed) => placed,
                    None => self.place_client_messages().await,
                },
                false => Ok(true),
            };
            match placed {
                Ok(true) => {}
                Ok(false) => return (Ended { outcome: Outcome::ClientClosed, sqlstate: None, error: None }, None),
                Err(e) => return e,
            }
            // Give the server back at rest; a stopping proxy then says goodbye.
            let at_rest = self.held_at_rest();
            if at_rest && self.pinned.is_none() && !self.session && !self.keeps_held() {
                self.release(true);
                route_lost = None;
            }
            // A session-mode client keeps its server: at rest, it goes with its primary (a
            // switchover: its session state cannot follow it) or with a stopping proxy.
            if self.session && at_rest && self.to_client.is_empty() {
                if route_lost.is_some() {
                    self.release(false);
                    return ended(
                        Outcome::Fenced,
                        SqlState::ADMIN_SHUTDOWN,
                        "terminating connection: the leader changed",
                    );
                }
                if draining {
                    self.release(false);
                }
            }
            // So does a kept primary (session mode with splitting) with a stopping proxy.
            if self.keep_primary && draining && at_rest && self.to_client.is_empty() {
                self.release(false);
            }
            if draining && self.held.is_none() && self.to_client.is_empty() {
                return ended(
                    Outcome::ShutDown,
                    SqlState::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command",
                );
            }
            // Writes that can go at once go now, in this turn (most of a transaction's writes).
            let event = match self.write_now(client_w, &mut unflushed) {
                (Some(failed), _) => failed,
                // What was written may be what a stopping proxy or a lost route waits for (the
                // client's last answer): those checks come first.
                (None, true) if draining || route_lost.is_some() => continue,
                (None, _) => {
                    let idle_in_transaction = self.held.as_ref().is_some_and(|h| {
                        h.pending.is_empty() && self.to_server.is_empty() && h.status != TransactionStatus::Idle
                    });
                    // Timers only when armed (the clock is not read otherwise).
                    let idle_deadline = match (idle_in_transaction, self.pooling.idle_transaction_timeout) {
                        (true, Some(t)) => Some(Instant::now() + t),
                        _ => None,
                    };
                    let drain_deadline = route_lost.map(|at| at + self.pooling.drain_timeout);
                    let wants = Wants {
                        client: self.to_server.len() < HIGH_WATER,
                        server: self.held.is_some() && self.to_client.len() < HIGH_WATER,
                        routes: self.held.is_some() || self.has_parked(),
                        flush: unflushed,
                    };
                    let mut timers = [arm(&mut idle_timer, idle_deadline), arm(&mut drain_timer, drain_deadline)];
                    let mut sources = Sources { stopping: &mut stopping, rerouted: &mut rerouted, client_r, client_w };
                    poll_fn(|cx| self.poll_event(cx, wants, &mut sources, &mut timers)).await
                }
            };
            // A write that went after the wait is counted; the next turn goes on from there.
            let Some(event) = self.wrote(event, &mut unflushed) else { continue };
            match event {
                Event::Client(Ok(0)) | Event::Client(Err(_)) => {
                    return (Ended { outcome: Outcome::ClientClosed, sqlstate: None, error: None }, None)
                }
                Event::Client(Ok(n)) => {
                    self.bytes_from_client += n as u64;
                    DbStats::add(&self.me.info.stats.received, n as u64);
                }
                Event::Server(Ok(0)) | Event::Server(Err(_)) => {
                    // Before the release, which drops what was not sent yet.
                    let at_rest = self.held_at_rest();
                    // Whatever it said last (a FATAL error) goes first.
                    let _ = self.place_server_messages();
                    self.release(false);
                    if at_rest && self.pinned.is_none() && !self.session {
                        // It died between transactions: the next one gets another server.
                        continue;
                    }
                    return ended(
                        Outcome::ServerClosed,
                        SqlState::CONNECTION_FAILURE,
                        "server connection lost during a transaction",
                    );
                }
                Event::Server(Ok(_)) => {
                    if let Err(why) = self.place_server_messages() {
                        self.release(false);
                        return ended(Outcome::ProtocolError, SqlState::PROTOCOL_VIOLATION, why);
                    }
                }
                Event::WroteServer(_) => {
                    self.release(false);
                    return ended(
                        Outcome::ServerClosed,
                        SqlState::CONNECTION_FAILURE,
                        "server connection lost during a transaction",
                    );
                }
                Event::WroteClient(_) | Event::Flushed(_) => {
                    return (Ended { outcome: Outcome::ClientClosed, sqlstate: None, error: None }, None)
                }
                Event::IdleInTransaction => {
                    self.release(false);
                    return ended(
                        Outcome::Timeout,
                        IDLE_IN_TRANSACTION,
                        "terminating connection due to idle-in-transaction timeout",
                    );
                }
                Event::RouteLostTooLong => {
                    self.release(false);
                    return ended(
                        Outcome::Fenced,
                        SqlState::ADMIN_SHUTDOWN,
                        "terminating connection: its transaction did not end within switchover_drain_timeout after its primary stopped being routed",
                    );
                }
                // The proxy's lifecycle is gone: it is closing.
                Event::Stop(phase) => match phase.unwrap_or(Phase::Closing) {
                    Phase::Serving => {}
                    Phase::Draining => draining = true,
                    Phase::Closing => {
                        self.release(false);
                        return ended(
                            Outcome::ShutDown,
                            SqlState::ADMIN_SHUTDOWN,
                            "terminating connection due to administrator command",
                        );
                    }
                },
                // The routes are gone with the proxy: as for a stop.
                Event::Routes(None) => {
                    self.release(false);
                    return ended(
                        Outcome::ShutDown,
                        SqlState::ADMIN_SHUTDOWN,
                        "terminating connection due to administrator command",
                    );
                }
                Event::Routes(Some(primary)) => {
                    if !self.on_unrouted_primary(primary.as_deref()) {
                        route_lost = None;
                    } else if primary.is_some() {
                        // Another primary: this server must take no more writes.
                        self.shared.stats.fenced();
                        self.release(false);
                        return ended(
                            Outcome::Fenced,
                            SqlState::ADMIN_SHUTDOWN,
                            "terminating connection because the server is no longer the primary",
                        );
                    } else {
                        // A switchover (or a failover) is under way: the transaction may finish.
                        route_lost.get_or_insert_with(Instant::now);
                    }
                }
            }
        }
    }
}

/// A timer of the event loop set to `deadline`, or none when it is not armed (the timer is then
/// dropped). An armed timer is kept from turn to turn and only moved when its deadline moves, so
/// the turns of a transaction neither make nor drop one: most turns arm none.
#[inline]
fn arm(slot: &mut Option<Pin<Box<Sleep>>>, deadline: Option<Instant>) -> Option<Pin<&mut Sleep>> {
    let Some(deadline) = deadline else {
        // Most turns: nothing armed, nothing to drop.
        if slot.is_some() {
            *slot = None;
        }
        return None;
    };
    let deadline = tokio::time::Instant::from(deadline);
    match slot {
        Some(timer) if timer.deadline() != deadline => timer.as_mut().reset(deadline),
        Some(_) => {}
        None => *slot = Some(Box::pin(tokio::time::sleep_until(deadline))),
    }
    slot.as_mut().map(|t| t.as_mut())
}

/// What a turn of a client's event loop waits for, besides the proxy's stop and its writes.
#[derive(Clone, Copy)]
struct Wants {
    /// The client's next messages (not while too much waits for the server).
    client: bool,
    /// The held server's replies (not while too much waits for the client).
    server: bool,
    /// The routes' changes (while the client holds or parks a server).
    routes: bool,
    /// The client's writer holds bytes back until flushed (TLS).
    flush: bool,
}

/// The sources a client's event loop waits on besides its own buffers and server.
struct Sources<'s, R, W> {
    /// The proxy's lifecycle (draining, closing).
    stopping: &'s mut Changes<Phase>,
    /// The routes (a new or no primary).
    rerouted: &'s mut Changes<Routes>,
    /// The client's two halves.
    client_r: &'s mut R,
    client_w: &'s mut W,
}

/// A read or write failed: the loop ends the session (or drops the server) whatever the error
/// was, so the error itself is dropped where it arises and an event costs nothing to drop.
#[derive(Debug)]
struct IoFailed;

/// What one turn of a client's event loop saw.
enum Event {
    Client(Result<usize, IoFailed>),
    Server(Result<usize, IoFailed>),
    WroteServer(Result<usize, IoFailed>),
    WroteClient(Result<usize, IoFailed>),
    Flushed(Result<(), IoFailed>),
    IdleInTransaction,
    RouteLostTooLong,
    Stop(Option<Phase>),
    Routes(Option<Option<String>>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    fn fired(timer: Option<Pin<&mut Sleep>>) -> bool {
        let timer = timer.expect("armed");
        matches!(timer.poll(&mut Context::from_waker(Waker::noop())), Poll::Ready(()))
    }

    #[tokio::test(start_paused = true)]
    async fn an_armed_timer_is_kept_moved_with_its_deadline_and_dropped_when_disarmed() {
        let mut slot = None;
        assert!(arm(&mut slot, None).is_none());
        assert!(slot.is_none(), "an unarmed turn makes no timer");

        // The paused clock's now (std's own does not move with it).
        let start = tokio::time::Instant::now().into_std();
        assert!(!fired(arm(&mut slot, Some(start + Duration::from_secs(2)))));
        let first: *const Sleep = &**slot.as_ref().unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        // The same deadline again: the same timer, not yet due.
        assert!(!fired(arm(&mut slot, Some(start + Duration::from_secs(2)))));
        assert_eq!(first, &**slot.as_ref().unwrap() as *const Sleep, "kept, not remade");
        // A later deadline moves it: not due at the first one.
        assert!(!fired(arm(&mut slot, Some(start + Duration::from_secs(3)))));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!fired(arm(&mut slot, Some(start + Duration::from_secs(3)))));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(fired(arm(&mut slot, Some(start + Duration::from_secs(3)))));

        // Disarmed, then armed again: a new timer from the new deadline.
        assert!(arm(&mut slot, None).is_none());
        assert!(slot.is_none());
        let now = tokio::time::Instant::now().into_std();
        assert!(!fired(arm(&mut slot, Some(now + Duration::from_secs(1)))));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(fired(arm(&mut slot, Some(now + Duration::from_secs(1)))));
    }
}
