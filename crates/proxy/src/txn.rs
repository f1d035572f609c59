//! One client in transaction mode: the proxy authenticates it, then lends it a server
//! connection from the pool for each transaction and takes it back at the transaction's end.
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

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::access_log::{AccessRecord, Outcome};
use crate::backend::{BackendKeyData, BackendMessage, ErrorResponse, SqlState, TransactionStatus};
use crate::clients::{ClientState, DbStats, Registered};
use crate::frame::{put_frame, split_frame, DEFAULT_MAX_FRAME_LEN};
use crate::lifecycle::Phase;
use crate::pipeline::{Kind, Origin, Outstanding};
use crate::pooled_login::{authenticate, client_facing, identity, negotiate_protocol};
use crate::pooling::Pooling;
use crate::pools::{lease, Leased, Login, PoolKey};
use crate::prepared::{ClientStatements, Registry, Route};
use crate::relay::{send_error, Ended};
use crate::server_auth::LoginError;
use crate::server_conn::{OpenError, ServerConn};
use crate::session::{fatal, Port, Refusal, SessionSettings, Shared};
use crate::session_features::{self, Feature};
use crate::session_params::Params;
use crate::startup::{ProtocolVersion, StartupMessage};
use crate::topology::Backend;
use crate::wire;

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
    let mut t = Txn {
        shared,
        me: &registered,
        leased_at: None,
        last_key: None,
        pinned: None,
        settings,
        pooling,
        port,
        base: PoolKey { database: id.database, user: id.user, addr: String::new(), extra: id.extra },
        login,
        statements: ClientStatements::default(),
        params: Params::from_startup(&startup),
        pid: 0,
        held: None,
        to_server: BytesMut::new(),
        to_client: BytesMut::new(),
        cbuf,
        bytes_from_client: 0,
        bytes_to_client: 0,
    };
    let ended = t.run(&mut client_r, &mut client_w).await;
    record.bytes_from_client = t.bytes_from_client;
    record.bytes_to_client = t.bytes_to_client;
    t.release(false);
    if t.pid != 0 {
        shared.cancels.lock().unwrap_or_else(|e| e.into_inner()).remove(t.pid);
    }
    ended
}

/// The server a client holds, with what it still owes.
struct Held {
    conn: ServerConn,
    key: Arc<PoolKey>,
    registry: Arc<Registry>,
    pending: Outstanding,
    /// The last message was a ReadyForQuery `I` answering everything sent.
    at_rest: bool,
    status: TransactionStatus,
}

/// One transaction-mode client.
struct Txn<'a> {
    shared: &'a Shared,
    /// This client in the console's list, and its database's counters.
    me: &'a Registered<'a>,
    /// When it took the server it holds.
    leased_at: Option<Instant>,
    /// The backend of its last transaction and that pool's key.
    last_key: Option<(Backend, Arc<PoolKey>)>,
    /// A session-level feature it used: it keeps its server to the end.
    pinned: Option<Feature>,
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
    held: Option<Held>,
    to_server: BytesMut,
    to_client: BytesMut,
    cbuf: BytesMut,
    bytes_from_client: u64,
    bytes_to_client: u64,
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
                self.acquire().await?;
                let w = self.held.as_ref().map(|h| h.conn.welcome.clone()).unwrap_or_default();
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
        let (pid, key) = issued.map_err(|e| fatal(Outcome::Refused, SqlState::CONNECTION_FAILURE, e.to_string()))?;
        self.pid = pid;
        if let Some(h) = &self.held {
            self.shared.cancels.lock().unwrap_or_else(|e| e.into_inner()).bind(pid, Some(h.conn.target.clone()));
        }
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

    /// The backend for the next transaction: the primary (waiting for one while there is none,
    /// until `deadline`), or a replica on the read-only port.
    async fn backend(&self, deadline: Instant) -> Result<Backend, Refusal> {
        if self.port == Port::ReadOnly {
            let replicas = self.shared.routes.borrow().replicas.clone();
            if !replicas.is_empty() {
                return Ok(self.shared.pick_replica(&replicas, self.settings.balance));
            }
            if !self.settings.fallback_to_primary {
                return Err(fatal(Outcome::Refused, SqlState::CANNOT_CONNECT_NOW, "no replica available"));
            }
        }
        let mut rx = self.shared.routes.clone();
        let found = tokio::time::timeout_at(deadline.into(), async {
            rx.wait_for(|r| r.primary.is_some()).await.ok().and_then(|r| r.primary.clone())
        })
        .await;
        match found {
            Ok(Some(p)) => Ok(p),
            _ => Err(fatal(Outcome::Refused, SqlState::CANNOT_CONNECT_NOW, "no primary available")),
        }
    }

    /// Gets a server for the next transaction: waits for a primary and for a free connection,
    /// and retries a server that cannot take sessions yet, within the hold.
    async fn acquire(&mut self) -> Result<(), Refusal> {
        let began = Instant::now();
        self.me.info.set(ClientState::Waiting, 0);
        let got = self.acquire_now().await;
        DbStats::add(&self.me.stats.wait_us, began.elapsed().as_micros() as u64);
        got
    }

    async fn acquire_now(&mut self) -> Result<(), Refusal> {
        // PAUSE (admin console): held until RESUME.
        let mut paused = self.shared.paused.subscribe();
        if paused.borrow().holds(&self.base.database) {
            let db = self.base.database.clone();
            let _ = paused.wait_for(|p| !p.holds(&db)).await;
        }
        let deadline = Instant::now() + self.settings.hold_timeout;
        let mut rx = self.shared.routes.clone();
        loop {
            rx.borrow_and_update();
            let backend = self.backend(deadline).await?;
            let key = self.key_for(&backend);
            let error = match self.lease(&key, &backend).await {
                Ok((conn, registry)) => {
                    self.take(conn, key, registry);
                    return Ok(());
                }
                Err(Leased::TimedOut) => {
                    return Err(fatal(
                        Outcome::Refused,
                        SqlState::CONNECTION_FAILURE,
                        "no server connection became free within query_wait_timeout",
                    ))
                }
                Err(Leased::Open(e)) => e,
            };
            if !error.retryable() || Instant::now() >= deadline {
                tracing::warn!(user = %self.base.user, database = %self.base.database, backend = %backend.name, "{error}");
                // What the server says about the client's own request (no such database, no
                // permission to connect) reaches it as the server said it.
                if let OpenError::Login(LoginError::Refused { code, message, .. }) = &error {
                    if let Some(code) = client_facing(code) {
                        return Err(fatal(Outcome::ServerError, code, message.clone()));
                    }
                }
                let message = match &error {
                    OpenError::Login(_) => format!("the proxy could not log in to {}: {error}", backend.name),
                    _ => format!("{} ({}): {error}", backend.name, key.addr),
                };
                return Err(fatal(Outcome::ConnectFailed, SqlState::CONNECTION_FAILURE, message));
            }
            tracing::debug!(backend = %backend.name, "{error}; holding the client");
            let pause = tokio::time::sleep(Duration::from_millis(100));
            tokio::select! {
                _ = rx.changed() => {}
                _ = pause => {}
            }
        }
    }

    /// A connection from `key`'s pool: idle, newly opened, or the next one given back.
    async fn lease(&self, key: &PoolKey, backend: &Backend) -> Result<(ServerConn, Arc<Registry>), Leased> {
        let limits = self.pooling.limits_for(&key.database);
        let timeout = self.settings.connect_timeout;
        lease(&self.shared.pools, key, &backend.name, limits, &self.login, timeout).await
    }

    /// The pool key for `backend`, kept from the last transaction when it is the same backend
    /// (most are: a key is four allocations).
    fn key_for(&mut self, backend: &Backend) -> Arc<PoolKey> {
        match &self.last_key {
            Some((b, key)) if b == backend => key.clone(),
            _ => {
                let key = Arc::new(PoolKey { addr: backend.addr(), ..self.base.clone() });
                self.last_key = Some((backend.clone(), key.clone()));
                key
            }
        }
    }

    /// Makes `conn` the client's server: its parameters brought in line, its cancel key bound.
    fn take(&mut self, conn: ServerConn, key: Arc<PoolKey>, registry: Arc<Registry>) {
        let mut pending = Outstanding::default();
        if let Some(sql) = self.params.replay_on(&conn.params) {
            put_frame(&mut self.to_server, b'Q', |d| wire::put_cstr(d, sql.as_bytes()));
            pending.sent(Kind::Query, Origin::Injected);
        }
        if self.pid != 0 {
            self.shared.cancels.lock().unwrap_or_else(|e| e.into_inner()).bind(self.pid, Some(conn.target.clone()));
        }
        tracing::trace!(client = self.pid, server = conn.target.pid, replay = !pending.is_empty(), "server leased");
        self.me.info.set(ClientState::Active, conn.target.pid);
        self.leased_at = Some(Instant::now());
        let at_rest = pending.is_empty();
        self.held = Some(Held { conn, key, registry, pending, at_rest, status: TransactionStatus::Idle });
    }

    /// Gives the server back: to be reused when it is at rest and `clean`, else closed.
    fn release(&mut self, clean: bool) {
        let Some(h) = self.held.take() else { return };
        self.me.info.set(ClientState::Idle, 0);
        if let Some(at) = self.leased_at.take() {
            DbStats::add(&self.me.stats.xacts, 1);
            DbStats::add(&self.me.stats.xact_us, at.elapsed().as_micros() as u64);
        }
        if self.pid != 0 {
            self.shared.cancels.lock().unwrap_or_else(|e| e.into_inner()).bind(self.pid, None);
        }
        let reusable = clean && h.at_rest && h.pending.is_empty() && self.to_server.is_empty();
        tracing::trace!(client = self.pid, server = h.conn.target.pid, reusable, status = ?h.status, "server released");
        self.to_server.clear();
        let pools = &self.shared.pools;
        match h.conn.idle() {
            Ok(idle) => pools.checkin(&h.key, idle, reusable),
            Err(_) => pools.lost(&h.key),
        }
    }

    /// The client's complete messages, each routed to the server it holds (taking one first).
    async fn place_client_messages(&mut self) -> Result<bool, (Ended, Option<ErrorResponse>)> {
        loop {
            let frame = match split_frame(&mut self.cbuf, DEFAULT_MAX_FRAME_LEN) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(true),
                Err(e) => {
                    return Err(ended(
                        Outcome::ProtocolError,
                        SqlState::PROTOCOL_VIOLATION,
                        format!("invalid message: {e}"),
                    ))
                }
            };
            tracing::trace!(client = self.pid, tag = %crate::frame::printable(frame.tag()), "from client");
            match frame.tag() {
                b'X' => return Ok(false),
                b'Q' | b'S' => DbStats::add(&self.me.stats.queries, 1),
                _ => {}
            }
            if self.pinned.is_none() {
                self.pinned = match frame.tag() {
                    b'Q' => session_features::scan(frame.body()),
                    b'P' => wire::split_cstr(frame.body()).and_then(|(_, text)| session_features::scan(text)),
                    _ => None,
                };
                if let Some(f) = self.pinned {
                    self.shared.clients.pinned(f);
                    tracing::debug!(user = %self.base.user, database = %self.base.database, feature = f.as_str(), "client pinned to its server for the rest of its session");
                }
            }
            if self.held.is_none() {
                let registry = self.shared.pools.registry().clone();
                match self.statements.answer_locally(&registry, &frame, &mut self.to_client) {
                    Some(Ok(())) => continue,
                    Some(Err(e)) => {
                        return Err(ended(Outcome::ProtocolError, SqlState::PROTOCOL_VIOLATION, e.to_string()))
                    }
                    None => {}
                }
                if let Err(r) = self.acquire().await {
                    let error = r.error.clone();
                    return Err((Ended::from(r), Some(error)));
                }
            }
            let Some(h) = self.held.as_mut() else { unreachable!("a server was just taken") };
            let mut route = Route {
                client: &mut self.statements,
                server: &mut h.conn.statements,
                registry: &h.registry,
                pending: &mut h.pending,
                to_server: &mut self.to_server,
            };
            if let Err(e) = route.client_message(&frame) {
                return Err(ended(Outcome::ProtocolError, SqlState::PROTOCOL_VIOLATION, e.to_string()));
            }
            if !self.to_server.is_empty() {
                h.at_rest = false;
            }
            self.to_client.extend_from_slice(&h.pending.take_to_client());
        }
    }

    /// Places what the server sent; `Err` when the server broke the protocol.
    fn place_server_messages(&mut self) -> Result<(), String> {
        let Some(h) = self.held.as_mut() else { return Ok(()) };
        loop {
            let frame = match split_frame(&mut h.conn.buf, DEFAULT_MAX_FRAME_LEN) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(format!("bad message from the server: {e}")),
            };
            tracing::trace!(client = self.pid, tag = %crate::frame::printable(frame.tag()), "from server");
            match frame.tag() {
                b'S' => {
                    if let Ok(BackendMessage::ParameterStatus(p)) = BackendMessage::parse(&frame) {
                        h.conn.params.set(&p.name, &p.value);
                        self.params.set(&p.name, &p.value);
                    }
                }
                b'Z' => {
                    if let Ok(BackendMessage::ReadyForQuery(s)) = BackendMessage::parse(&frame) {
                        h.status = s;
                    }
                }
                _ => {}
            }
            let unprepared = h.pending.received(&frame).map_err(|e| e.to_string())?;
            h.conn.statements.forget(&unprepared);
            if frame.tag() == b'Z' {
                h.at_rest = h.pending.is_empty() && self.to_server.is_empty() && h.status == TransactionStatus::Idle;
            }
        }
        self.to_client.extend_from_slice(&h.pending.take_to_client());
        Ok(())
    }

    /// The event loop.
    async fn serve<R, W>(&mut self, client_r: &mut R, client_w: &mut W) -> (Ended, Option<ErrorResponse>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut stop = self.shared.lifecycle.subscribe();
        let mut routes = self.shared.routes.clone();
        let mut draining = false;
        // When the held server's primary left the routes (a switchover under way).
        let mut route_lost: Option<Instant> = None;
        let far = Duration::from_secs(86_400 * 365);
        loop {
            match self.place_client_messages().await {
                Ok(true) => {}
                Ok(false) => return (Ended { outcome: Outcome::ClientClosed, sqlstate: None, error: None }, None),
                Err(e) => return e,
            }
            // Give the server back at rest; a stopping proxy then says goodbye.
            let free = self.pinned.is_none() && self.to_server.is_empty();
            if free && self.held.as_ref().is_some_and(|h| h.at_rest && h.pending.is_empty()) {
                self.release(true);
                route_lost = None;
            }
            if draining && self.held.is_none() && self.to_client.is_empty() {
                return ended(
                    Outcome::ShutDown,
                    SqlState::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command",
                );
            }
            let idle_in_transaction = self.held.as_ref().is_some_and(|h| {
                h.pending.is_empty() && self.to_server.is_empty() && h.status != TransactionStatus::Idle
            });
            let idle_deadline = match (idle_in_transaction, self.pooling.idle_transaction_timeout) {
                (true, Some(t)) => Instant::now() + t,
                _ => Instant::now() + far,
            };
            let drain_deadline = route_lost.map_or(Instant::now() + far, |at| at + self.pooling.drain_timeout);
            let idle_timer = idle_in_transaction && self.pooling.idle_transaction_timeout.is_some();
            let read_client = self.to_server.len() < HIGH_WATER;
            let read_server = self.held.is_some() && self.to_client.len() < HIGH_WATER;
            let Txn { held, to_server, to_client, cbuf, .. } = self;
            let holding = held.is_some();
            let (server_r, server_w) = match held.as_mut() {
                Some(h) => {
                    let (r, w) = h.conn.stream.split();
                    (Some((r, &mut h.conn.buf)), Some(w))
                }
                None => (None, None),
            };
            let (mut server_r, mut server_w) = (server_r, server_w);
            enum Event {
                Client(std::io::Result<usize>),
                Server(std::io::Result<usize>),
                WroteServer(std::io::Result<usize>),
                WroteClient(std::io::Result<usize>),
                IdleInTransaction,
                RouteLostTooLong,
                Stop,
                Routes,
            }
            let event = tokio::select! {
                r = client_r.read_buf(cbuf), if read_client => Event::Client(r),
                r = async { let (r, b) = server_r.as_mut().expect("guarded"); r.read_buf(&mut **b).await }, if read_server => Event::Server(r),
                r = async { server_w.as_mut().expect("guarded").write_buf(to_server).await }, if holding && !to_server.is_empty() => Event::WroteServer(r),
                r = client_w.write_buf(to_client), if !to_client.is_empty() => Event::WroteClient(r),
                // Timers made only when armed (the async blocks are not polled otherwise).
                _ = async { tokio::time::sleep_until(idle_deadline.into()).await }, if idle_timer => Event::IdleInTransaction,
                _ = async { tokio::time::sleep_until(drain_deadline.into()).await }, if route_lost.is_some() => Event::RouteLostTooLong,
                r = stop.changed() => match r { Ok(()) => Event::Stop, Err(_) => Event::Stop },
                r = routes.changed(), if holding => match r { Ok(()) => Event::Routes, Err(_) => Event::Stop },
            };
            match event {
                Event::Client(Ok(0)) | Event::Client(Err(_)) => {
                    return (Ended { outcome: Outcome::ClientClosed, sqlstate: None, error: None }, None)
                }
                Event::Client(Ok(n)) => {
                    self.bytes_from_client += n as u64;
                    DbStats::add(&self.me.stats.received, n as u64);
                }
                Event::Server(Ok(0)) | Event::Server(Err(_)) => {
                    let at_rest = self.held.as_ref().is_some_and(|h| h.at_rest && h.pending.is_empty());
                    // Whatever it said last (a FATAL error) goes first.
                    let _ = self.place_server_messages();
                    self.release(false);
                    if at_rest && self.to_server.is_empty() && self.pinned.is_none() {
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
                Event::WroteServer(Ok(_)) => {}
                Event::WroteServer(Err(_)) => {
                    self.release(false);
                    return ended(
                        Outcome::ServerClosed,
                        SqlState::CONNECTION_FAILURE,
                        "server connection lost during a transaction",
                    );
                }
                Event::WroteClient(Ok(n)) => {
                    self.bytes_to_client += n as u64;
                    DbStats::add(&self.me.stats.sent, n as u64);
                }
                Event::WroteClient(Err(_)) => {
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
                Event::Stop => match *stop.borrow() {
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
                Event::Routes => {
                    let primary = routes.borrow_and_update().primary.as_ref().map(Backend::addr);
                    let Some(h) = &self.held else { continue };
                    if self.port == Port::ReadOnly || primary.as_deref() == Some(h.key.addr.as_str()) {
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
