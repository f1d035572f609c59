//! One client connection, from its first byte to its close.
//!
//! Session-level proxying: the client's startup packet chooses a backend, the proxy opens one
//! connection to it, forwards the startup packet unchanged and then relays both directions, so
//! authentication (SCRAM, md5, trust) happens between client and server as if directly.
//!
//! A client that sends SSLRequest gets `S` and a TLS handshake when the proxy has a certificate
//! (`N` otherwise); the backend connection stays plain. Bytes the client sent after SSLRequest
//! but before the handshake are refused (they would bypass TLS, CVE-2021-23214).
//!
//! Once the backend answers, the private `relay` module carries both directions. Invariants kept
//! here: a session is counted active on exactly one backend from connect to close (the guard from
//! [`Stats::connected`] lives as long as the relay); every connection gets exactly one access-log
//! record when it ends (port probes excepted, see [`crate::access_log`]); once the proxy is
//! stopping ([`Phase::Draining`]) a client that has no backend yet is refused with 57P03 instead
//! of starting a session.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::access_log::{AccessLog, AccessRecord, Outcome};
use crate::backend::{BackendMessage, ErrorResponse, Severity, SqlState};
use crate::cancel::{Addr, BackendTarget, CancelMap};
use crate::clients::Clients;
use crate::console_session::Control;
use crate::flow::Flow;
use crate::frame::{frame_len, split_frame, DEFAULT_MAX_FRAME_LEN};
use crate::lifecycle::{reached, Lifecycle, Phase, Ticket};
use crate::pooling::{ClientCount, Paused, Pooling};
use crate::pools::Pools;
use crate::relay::{client_to_server, send_error, server_to_client, CancelGuard, Downstream, Ended};
use crate::startup::{decode_startup, CancelRequest, StartupMessage, StartupPacket, DEFAULT_MAX_STARTUP_LEN};
use crate::stats::{Decision, Stats};
use crate::topology::{Backend, Routes};

/// Which listener a client came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// Read-write: the primary.
    ReadWrite,
    /// Read-only: a streaming replica.
    ReadOnly,
}

impl Port {
    /// `rw` or `ro`, as in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Port::ReadWrite => "rw",
            Port::ReadOnly => "ro",
        }
    }
}

/// Session behaviour fixed by the configuration.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// How long a client waits for a primary.
    pub hold_timeout: Duration,
    /// Read-only clients go to the primary when no replica qualifies.
    pub fallback_to_primary: bool,
    /// How long the client may take to send its startup packet.
    pub startup_timeout: Duration,
    /// How long connecting to a backend may take.
    pub connect_timeout: Duration,
    /// How read-only sessions are spread over the replicas.
    pub balance: Balance,
}

/// Read-only balancing policy (`proxy.ro_policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// The next replica in turn.
    #[default]
    RoundRobin,
    /// The replica with the fewest open sessions (ties: the next in turn).
    LeastConnections,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            hold_timeout: Duration::from_secs(30),
            fallback_to_primary: true,
            startup_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            balance: Balance::RoundRobin,
        }
    }
}

/// What every session shares: the routes, the cancel keys, the round-robin position, the TLS
/// configuration, the statistics, the lifecycle and the access log. Settings and TLS can be
/// replaced while sessions run (a reload); each connection reads them once, when it starts.
pub struct Shared {
    /// Current routes, kept up to date by the follower.
    pub routes: watch::Receiver<Routes>,
    /// Synthetic cancel keys handed to clients, and the backends they stand for.
    pub cancels: Mutex<CancelMap<Addr>>,
    settings: RwLock<SessionSettings>,
    /// TLS for clients that ask for it; `None` answers SSLRequest with `N`.
    tls: RwLock<Option<TlsAcceptor>>,
    /// Counters for the admin port and the least-connections policy.
    pub stats: Arc<Stats>,
    /// Serving, draining or closing, and the open connections.
    pub lifecycle: Arc<Lifecycle>,
    /// One line per connection, when configured.
    pub access_log: AccessLog,
    next_replica: AtomicUsize,
    /// The server connection pools (transaction mode).
    pub pools: Arc<Pools>,
    /// Pooled clients connected now.
    pub pool_clients: ClientCount,
    /// Pooled clients, for the admin console and the admin port, and each database's counters.
    pub clients: Arc<Clients>,
    /// Databases paused by the admin console (PAUSE): their clients wait for a server.
    pub paused: watch::Sender<Paused>,
    /// Where the admin console's RELOAD and SHUTDOWN go (the proxy's main loop).
    control: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Control>>>,
    pooling: RwLock<Arc<Pooling>>,
    /// Read/write splitting on the read-write port (`proxy.load_balance`), set before serving.
    split: std::sync::OnceLock<Arc<crate::split::state::Splitting>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("settings", &self.settings()).field("tls", &self.tls().is_some()).finish()
    }
}

impl Shared {
    /// Shared state over a routes receiver, without TLS and with fresh statistics.
    pub fn new(routes: watch::Receiver<Routes>, settings: SessionSettings) -> Shared {
        Shared {
            routes,
            cancels: Mutex::new(CancelMap::new()),
            settings: RwLock::new(settings),
            tls: RwLock::new(None),
            stats: Arc::new(Stats::default()),
            lifecycle: Arc::new(Lifecycle::default()),
            access_log: AccessLog::default(),
            next_replica: AtomicUsize::new(0),
            pools: Arc::new(Pools::default()),
            pool_clients: ClientCount::default(),
            clients: Arc::new(Clients::default()),
            paused: watch::Sender::new(Paused::default()),
            control: Mutex::new(None),
            pooling: RwLock::new(Arc::new(Pooling::default())),
            split: std::sync::OnceLock::new(),
        }
    }

    /// Balances the read-write port's reads over the replicas with `split` (once, at start).
    pub fn set_split(&self, split: Arc<crate::split::state::Splitting>) {
        let _ = self.split.set(split);
    }

    /// The read/write splitting in force, if any.
    pub fn split(&self) -> Option<&Arc<crate::split::state::Splitting>> {
        self.split.get()
    }

    /// Sends the admin console's RELOAD and SHUTDOWN to `tx`.
    pub fn set_control(&self, tx: tokio::sync::mpsc::UnboundedSender<Control>) {
        *self.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    /// Hands `c` to the proxy's main loop.
    pub(crate) fn control(&self, c: Control) -> Result<(), String> {
        match &*self.control.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) if tx.send(c).is_ok() => Ok(()),
            _ => Err("the proxy's main loop does not take commands".into()),
        }
    }

    /// The pooling settings new connections start with.
    pub fn pooling(&self) -> Arc<Pooling> {
        self.pooling.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the pooling settings (a reload): new clients use them at once, and the pools
    /// take the new limits.
    pub fn set_pooling(&self, pooling: Pooling) {
        self.pools.set_limits(|db| pooling.limits_for(db));
        *self.pooling.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pooling);
    }

    /// Terminates TLS with `config` for clients that send SSLRequest.
    pub fn with_tls(self, config: Arc<rustls::ServerConfig>) -> Shared {
        self.set_tls(Some(config));
        self
    }

    /// The settings new connections start with.
    pub fn settings(&self) -> SessionSettings {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the settings for connections accepted from now on (a reload).
    pub fn set_settings(&self, settings: SessionSettings) {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
    }

    /// Replaces the TLS configuration for connections accepted from now on; `None` turns TLS off.
    pub fn set_tls(&self, config: Option<Arc<rustls::ServerConfig>>) {
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = config.map(TlsAcceptor::from);
    }

    fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Counts into `stats` (shared with the follower and the admin port).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Shared {
        self.stats = stats;
        self
    }

    /// The replica for a new read-only session, by the configured policy.
    pub(crate) fn pick_replica(&self, replicas: &[Backend], balance: Balance) -> Backend {
        replicas[self.pick_replica_index(replicas, balance)].clone()
    }

    /// Which of `replicas` (not empty) [`Shared::pick_replica`] picks, without copying it.
    pub(crate) fn pick_replica_index(&self, replicas: &[Backend], balance: Balance) -> usize {
        let turn = self.next_replica.fetch_add(1, Ordering::Relaxed);
        match balance {
            Balance::RoundRobin => weighted_turn(replicas, turn),
            Balance::LeastConnections => {
                // Start the scan at the turn so equal counts still rotate; a heavier replica
                // counts its connections for less.
                (0..replicas.len())
                    .map(|k| (turn + k) % replicas.len())
                    .min_by_key(|&j| {
                        self.stats.active_on(&replicas[j].name) * 1_000_000 / u64::from(replicas[j].weight.max(1))
                    })
                    .unwrap_or(0)
            }
        }
    }
}

/// Round robin by weight: turn `turn` lands on the replica whose slice of the weights' sum holds
/// `turn` steps of one default weight, so replicas of weights 2 and 1 get two turns in three.
fn weighted_turn(replicas: &[Backend], turn: usize) -> usize {
    let total: u64 = replicas.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 || replicas.iter().all(|b| b.weight == replicas[0].weight) {
        return turn % replicas.len();
    }
    let mut point = (turn as u64).wrapping_mul(u64::from(crate::topology::DEFAULT_WEIGHT)) % total;
    for (i, b) in replicas.iter().enumerate() {
        if point < u64::from(b.weight) {
            return i;
        }
        point -= u64::from(b.weight);
    }
    replicas.len() - 1
}

/// Why a session ended early; the message goes to the client when it can still be sent.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) error: ErrorResponse,
    pub(crate) outcome: Outcome,
}

pub(crate) fn fatal(outcome: Outcome, code: SqlState, message: impl Into<String>) -> Refusal {
    Refusal { error: ErrorResponse::new(Severity::Fatal, code, message), outcome }
}

/// What a client that has no session yet gets once the proxy is stopping: it may try another
/// proxy (libpq does with several hosts), as PostgreSQL tells a client during its shutdown.
fn shutting_down() -> Refusal {
    fatal(Outcome::ShutDown, SqlState::CANNOT_CONNECT_NOW, "the proxy is shutting down")
}

/// The client connection after the startup phase: TLS or not.
enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ClientStream {
    async fn read_startup(&mut self, buf: &mut BytesMut, offer_tls: bool) -> Result<Option<Step>, Refusal> {
        match self {
            ClientStream::Plain(s) => read_startup(s, buf, offer_tls).await,
            ClientStream::Tls(s) => read_startup(s.as_mut(), buf, false).await,
        }
    }

    async fn send_error(&mut self, e: &ErrorResponse) {
        let _ = match self {
            ClientStream::Plain(s) => send_error(s, e).await,
            ClientStream::Tls(s) => send_error(s.as_mut(), e).await,
        };
    }
}

/// Why the startup phase stopped waiting for the client.
enum GiveUp {
    Timeout,
    ShutDown,
}

/// Serves one client connection until it closes, then writes its access-log record. `ticket`
/// counts the connection open for a graceful stop until this returns.
pub async fn run(shared: Arc<Shared>, port: Port, client: TcpStream, peer: String, ticket: Ticket) {
    let _open = ticket;
    let began = Instant::now();
    let mut record = AccessRecord::new(&peer, port);
    if serve(&shared, port, client, &peer, &mut record).await && shared.access_log.enabled() {
        record.duration = began.elapsed();
        shared.access_log.write(&record);
    }
}

/// Serves the connection, filling in `record`; false for a connection not worth a record (it
/// closed before sending a whole startup packet, without error).
async fn serve(shared: &Shared, port: Port, client: TcpStream, peer: &str, record: &mut AccessRecord) -> bool {
    let _ = client.set_nodelay(true);
    shared.stats.accepted(port);
    let settings = shared.settings();
    let mut buf = BytesMut::with_capacity(8192);
    // The startup phase's deadline goes with it: a timer left registered would stay in the
    // worker's timer wheel (walked at every wait of its event loop) for the whole startup timeout
    // of every session, and wake the session for nothing when it fired.
    let (stream, startup) = match open(shared, &settings, client, &mut buf, peer, record).await {
        Opened::Ready(stream, startup) => (stream, startup),
        Opened::Done(worth_a_record) => return worth_a_record,
    };
    let msg = match startup {
        Startup::Cancel(req) => {
            record.outcome = Outcome::Cancel;
            forward_cancel(shared, &settings, req).await;
            return true;
        }
        Startup::Session(msg) => msg,
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    record.user = msg.user().map(text);
    record.database = msg.database().or(msg.user()).map(text);
    let pooling = shared.pooling();
    let addr = peer.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
    if crate::console::is_console_database(record.database.as_deref().unwrap_or_default()) {
        let ended = match stream {
            ClientStream::Plain(s) => {
                let (r, w) = s.into_split();
                crate::console_session::serve(shared, &settings, pooling, r, w, buf, msg, record, (addr, false)).await
            }
            ClientStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                crate::console_session::serve(shared, &settings, pooling, r, w, buf, msg, record, (addr, true)).await
            }
        };
        ended.record(record);
        return true;
    }
    if pooling.pooled(record.database.as_deref().unwrap_or_default()) {
        let ended = match stream {
            ClientStream::Plain(s) => {
                let (r, w) = s.into_split();
                crate::txn::serve(shared, &settings, pooling, port, r, w, buf, msg, record, (addr, false)).await
            }
            ClientStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                crate::txn::serve(shared, &settings, pooling, port, r, w, buf, msg, record, (addr, true)).await
            }
        };
        if let Some(e) = &ended.error {
            tracing::debug!(%peer, "pooled client ended: {e}");
        }
        ended.record(record);
        return true;
    }
    let ended = match stream {
        ClientStream::Plain(s) => {
            let (r, w) = s.into_split();
            session(shared, &settings, port, r, w, buf, msg, record).await
        }
        ClientStream::Tls(s) => {
            let (r, w) = tokio::io::split(*s);
            session(shared, &settings, port, r, w, buf, msg, record).await
        }
    };
    if let Some(e) = &ended.error {
        tracing::debug!(%peer, "session ended: {e}");
    }
    ended.record(record);
    true
}

/// How the startup phase ended.
enum Opened {
    /// A startup packet came (through TLS, if the client asked for it).
    Ready(ClientStream, Startup),
    /// The connection is done with; whether it is worth an access-log record (false: it closed
    /// before sending a whole startup packet, without error).
    Done(bool),
}

/// The startup phase: reads the client's startup packets (and makes the TLS handshake it asks
/// for) within the startup timeout, which a stop of the proxy cuts short.
async fn open(
    shared: &Shared,
    settings: &SessionSettings,
    client: TcpStream,
    buf: &mut BytesMut,
    peer: &str,
    record: &mut AccessRecord,
) -> Opened {
    // One deadline for the whole startup phase, TLS handshake included; a stop ends it too.
    let deadline = tokio::time::Instant::now() + settings.startup_timeout;
    let mut stop = shared.lifecycle.subscribe();
    let give_up = async {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => GiveUp::Timeout,
            () = reached(&mut stop, Phase::Draining) => GiveUp::ShutDown,
        }
    };
    tokio::pin!(give_up);
    let mut stream = ClientStream::Plain(client);
    let tls = shared.tls();
    let mut offer_tls = tls.is_some();
    let startup = loop {
        let read = tokio::select! {
            r = stream.read_startup(buf, offer_tls) => Ok(r),
            why = &mut give_up => Err(why),
        };
        let refusal = match read {
            Ok(Ok(Some(Step::Done(s)))) => break s,
            Ok(Ok(None)) => return Opened::Done(false),
            Ok(Ok(Some(Step::Tls))) => {
                offer_tls = false;
                let (ClientStream::Plain(tcp), Some(acceptor)) = (stream, tls.clone()) else {
                    unreachable!("TLS is offered only on a plain stream with a certificate")
                };
                record.outcome = Outcome::TlsFailed;
                tokio::select! {
                    r = acceptor.accept(tcp) => match r {
                        Ok(tls) => {
                            shared.stats.tls_handshake(true);
                            record.tls = true;
                            stream = ClientStream::Tls(Box::new(tls));
                            continue;
                        }
                        Err(e) => {
                            shared.stats.tls_handshake(false);
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            record.error = Some(format!("TLS handshake failed: {e}"));
                        }
                    },
                    _ = &mut give_up => {
                        shared.stats.tls_handshake(false);
                        tracing::debug!(%peer, "TLS handshake timed out");
                        record.error = Some("TLS handshake not finished".into());
                    }
                }
                return Opened::Done(true);
            }
            Ok(Err(refusal)) => {
                tracing::debug!(%peer, "startup refused: {}", refusal.error.message);
                shared.stats.protocol_error();
                refusal
            }
            Err(GiveUp::Timeout) => {
                fatal(Outcome::Timeout, SqlState::PROTOCOL_VIOLATION, "timeout waiting for the startup packet")
            }
            Err(GiveUp::ShutDown) => shutting_down(),
        };
        stream.send_error(&refusal.error).await;
        Ended::from(refusal).record(record);
        return Opened::Done(true);
    };
    Opened::Ready(stream, startup)
}

enum Startup {
    Cancel(CancelRequest),
    Session(StartupMessage),
}

enum Step {
    Done(Startup),
    /// The client sent SSLRequest and got `S`: the TLS handshake comes next.
    Tls,
}

/// Reads startup packets, answering GSSENCRequest with `N` and SSLRequest with `S` when
/// `offer_tls` (else `N`), until a CancelRequest, a StartupMessage or an accepted SSLRequest.
async fn read_startup<S>(client: &mut S, buf: &mut BytesMut, offer_tls: bool) -> Result<Option<Step>, Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match decode_startup(buf, DEFAULT_MAX_STARTUP_LEN) {
            Ok(Some(StartupPacket::SslRequest)) if offer_tls => {
                if !buf.is_empty() {
                    // Anything already sent would be read as if it had come through TLS.
                    return Err(fatal(
                        Outcome::ProtocolError,
                        SqlState::PROTOCOL_VIOLATION,
                        "received unencrypted data after SSL request",
                    ));
                }
                if client.write_all(b"S").await.is_err() {
                    return Ok(None);
                }
                return Ok(Some(Step::Tls));
            }
            Ok(Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest)) => {
                if client.write_all(b"N").await.is_err() {
                    return Ok(None);
                }
            }
            Ok(Some(StartupPacket::Cancel(c))) => return Ok(Some(Step::Done(Startup::Cancel(c)))),
            Ok(Some(StartupPacket::Startup(s))) => return Ok(Some(Step::Done(Startup::Session(s)))),
            Ok(None) => match client.read_buf(buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            },
            Err(e) => {
                return Err(fatal(
                    Outcome::ProtocolError,
                    SqlState::PROTOCOL_VIOLATION,
                    format!("invalid startup packet: {e}"),
                ))
            }
        }
    }
}

/// Sends the backend's real cancel key to the backend that owns the synthetic one. An unknown
/// key is ignored silently, as PostgreSQL does.
async fn forward_cancel(shared: &Shared, settings: &SessionSettings, req: CancelRequest) {
    let target = shared.cancels.lock().unwrap_or_else(|e| e.into_inner()).lookup(&req);
    let Some(target) = target else {
        tracing::debug!(pid = req.pid, "cancel request with an unknown key ignored");
        return;
    };
    if cancel_backend(&target, settings.connect_timeout).await {
        shared.stats.cancel_forwarded();
        tracing::info!(backend = %target.addr, "cancel request forwarded");
    }
}

/// Sends `target` its CancelRequest on a fresh connection, within `timeout`; false (and a
/// warning) when that failed.
pub(crate) async fn cancel_backend(target: &BackendTarget<Addr>, timeout: Duration) -> bool {
    let mut out = BytesMut::new();
    target.cancel_request().encode(&mut out);
    let sent = async {
        let mut s = TcpStream::connect(&*target.addr).await?;
        s.write_all(&out).await?;
        // PostgreSQL closes the connection once it has read the request.
        let mut sink = [0u8; 16];
        let _ = s.read(&mut sink).await;
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(backend = %target.addr, "sending a cancel request: {e}");
            false
        }
        Err(_) => {
            tracing::warn!(backend = %target.addr, "sending a cancel request timed out");
            false
        }
    }
}

/// Picks the backend for a new session, holding the client while there is no primary (for
/// the read-only port too when it falls back to the primary) until `deadline`.
async fn choose_backend(
    shared: &Shared,
    settings: &SessionSettings,
    port: Port,
    started: Instant,
    deadline: Instant,
) -> Result<(Backend, Decision), Refusal> {
    let to_primary = if port == Port::ReadOnly {
        let replicas = shared.routes.borrow().replicas.clone();
        if !replicas.is_empty() {
            shared.stats.decided(port, Decision::Replica);
            return Ok((shared.pick_replica(&replicas, settings.balance), Decision::Replica));
        }
        if !settings.fallback_to_primary {
            shared.stats.decided(port, Decision::Refused);
            return Err(fatal(Outcome::Refused, SqlState::CANNOT_CONNECT_NOW, "no replica available"));
        }
        Decision::FallbackPrimary
    } else {
        Decision::Primary
    };
    if let Some(p) = shared.routes.borrow().primary.clone() {
        shared.stats.decided(port, to_primary);
        return Ok((p, to_primary));
    }
    tracing::info!(port = port.as_str(), "no primary: holding the client");
    let hold_began = Instant::now();
    shared.stats.hold_started();
    let mut rx = shared.routes.clone();
    let found = tokio::time::timeout_at(deadline.into(), async {
        rx.wait_for(|r| r.primary.is_some()).await.ok().and_then(|r| r.primary.clone())
    })
    .await;
    match found {
        Ok(Some(p)) => {
            shared.stats.hold_ended(hold_began.elapsed(), true);
            shared.stats.decided(port, to_primary);
            tracing::info!(port = port.as_str(), backend = %p.name, "held client released after {:?}", started.elapsed());
            Ok((p, to_primary))
        }
        _ => {
            shared.stats.hold_ended(hold_began.elapsed(), false);
            shared.stats.decided(port, Decision::Refused);
            Err(no_primary(port, started))
        }
    }
}

fn no_primary(port: Port, started: Instant) -> Refusal {
    let held = started.elapsed().as_secs();
    tracing::warn!(port = port.as_str(), "held client refused: no primary after {held} s");
    fatal(Outcome::Refused, SqlState::CANNOT_CONNECT_NOW, format!("no primary available (held {held} s)"))
}

/// Chooses a backend and connects to it. A backend that cannot be reached (a crashed primary
/// whose leader key has not expired yet) does not fail the client while the hold lasts: the
/// proxy retries, on every route change and twice a second, until the hold timeout.
async fn connect_backend(
    shared: &Shared,
    settings: &SessionSettings,
    port: Port,
    started: Instant,
) -> Result<(Backend, Decision, TcpStream), Refusal> {
    let deadline = started + settings.hold_timeout;
    let mut rx = shared.routes.clone();
    let mut attempts = 0u32;
    loop {
        rx.borrow_and_update();
        let (backend, decision) = choose_backend(shared, settings, port, started, deadline).await?;
        let addr = backend.addr();
        let error = match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => return Ok((backend, decision, s)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timeout".to_string(),
        };
        if Instant::now() >= deadline {
            shared.stats.decided(port, Decision::ConnectFailed);
            return Err(fatal(
                Outcome::ConnectFailed,
                SqlState::CONNECTION_FAILURE,
                format!("could not connect to {} ({addr}): {error}", backend.name),
            ));
        }
        if attempts == 0 {
            tracing::info!(port = port.as_str(), backend = %backend.name, "connecting to {addr}: {error}; holding the client");
        } else {
            tracing::debug!(port = port.as_str(), backend = %backend.name, "connecting to {addr}: {error}; still holding");
        }
        attempts += 1;
        let pause = tokio::time::sleep(Duration::from_millis(500));
        let _ = tokio::time::timeout_at(deadline.into(), async {
            tokio::select! {
                _ = rx.changed() => {}
                _ = pause => {}
            }
        })
        .await;
        if Instant::now() >= deadline {
            shared.stats.decided(port, Decision::ConnectFailed);
            return Err(no_primary(port, started));
        }
    }
}

/// How a backend answered a startup packet.
enum FirstAnswer {
    /// At least one whole message, none of them a refusal to retry elsewhere: relay it.
    Relay(BytesMut),
    /// The server cannot take the session now (shutting down, starting up: 57P03) or closed or
    /// stayed silent before saying anything. Nothing reached the client, so another backend,
    /// or the same one later, can still serve it. Carries the server's own error, if any.
    Retry(String, Option<ErrorResponse>),
}

/// Reads the backend's first message after the startup packet.
async fn first_answer<S: AsyncRead + Unpin>(server: &mut S, timeout: Duration) -> FirstAnswer {
    let mut buf = BytesMut::with_capacity(1024);
    let read = tokio::time::timeout(timeout, async {
        loop {
            match frame_len(&buf, DEFAULT_MAX_FRAME_LEN) {
                Ok(Some(len)) if buf.len() >= len => return Ok(()),
                // A bad frame is relayed: the client's side of the relay reports it.
                Err(_) => return Ok(()),
                _ => {}
            }
            match server.read_buf(&mut buf).await {
                Ok(0) => return Err("the server closed the connection before answering".to_string()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading the server's answer: {e}")),
            }
        }
    })
    .await;
    match read {
        Err(_) => FirstAnswer::Retry(format!("no answer from the server within {timeout:?}"), None),
        Ok(Err(why)) => FirstAnswer::Retry(why, None),
        Ok(Ok(())) => {
            let mut probe = buf.clone();
            if let Ok(Some(frame)) = split_frame(&mut probe, DEFAULT_MAX_FRAME_LEN) {
                if let Ok(BackendMessage::ErrorResponse(fields)) = BackendMessage::parse(&frame) {
                    if fields.code() == Some(SqlState::CANNOT_CONNECT_NOW.as_str()) {
                        let why = fields.message().unwrap_or("cannot connect now").to_string();
                        let error = ErrorResponse::new(Severity::Fatal, SqlState::CANNOT_CONNECT_NOW, why.clone());
                        return FirstAnswer::Retry(why, Some(error));
                    }
                }
            }
            FirstAnswer::Relay(buf)
        }
    }
}

/// Connects to a backend, sends it the client's startup packet and waits for its first answer.
/// A backend that refuses with 57P03 (a primary shutting down for a switchover, a server still
/// starting) or dies before answering does not fail the client while the hold lasts: nothing
/// has reached the client yet, so the proxy tries again when the routes change or a moment
/// later, as it does for a backend it cannot reach.
async fn open_backend(
    shared: &Shared,
    settings: &SessionSettings,
    port: Port,
    startup: &StartupMessage,
) -> Result<(Backend, Decision, TcpStream, BytesMut), Refusal> {
    let started = Instant::now();
    let deadline = started + settings.hold_timeout;
    let mut packet = BytesMut::new();
    startup.encode(&mut packet);
    let mut rx = shared.routes.clone();
    let mut attempts = 0u32;
    loop {
        rx.borrow_and_update();
        let (backend, decision, mut server) = connect_backend(shared, settings, port, started).await?;
        let _ = server.set_nodelay(true);
        let answer = match server.write_all(&packet).await {
            Ok(()) => first_answer(&mut server, settings.connect_timeout).await,
            Err(e) => FirstAnswer::Retry(format!("sending the startup packet: {e}"), None),
        };
        let (why, error) = match answer {
            FirstAnswer::Relay(first) => return Ok((backend, decision, server, first)),
            FirstAnswer::Retry(why, error) => (why, error),
        };
        if Instant::now() >= deadline {
            shared.stats.decided(port, Decision::ConnectFailed);
            let error = error.unwrap_or_else(|| {
                let message = format!("{} ({}): {why}", backend.name, backend.addr());
                ErrorResponse::new(Severity::Fatal, SqlState::CONNECTION_FAILURE, message)
            });
            return Err(Refusal { error, outcome: Outcome::ConnectFailed });
        }
        if attempts == 0 {
            tracing::info!(port = port.as_str(), backend = %backend.name, "{why}; holding the client");
        } else {
            tracing::debug!(port = port.as_str(), backend = %backend.name, "{why}; still holding");
        }
        attempts += 1;
        let pause = tokio::time::sleep(Duration::from_millis(100));
        let _ = tokio::time::timeout_at(deadline.into(), async {
            tokio::select! {
                _ = rx.changed() => {}
                _ = pause => {}
            }
        })
        .await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn session<R, W>(
    shared: &Shared,
    settings: &SessionSettings,
    port: Port,
    client_r: R,
    mut client_w: W,
    pending: BytesMut,
    startup: StartupMessage,
    record: &mut AccessRecord,
) -> Ended
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let mut stop = shared.lifecycle.subscribe();
    let opened = tokio::select! {
        r = open_backend(shared, settings, port, &startup) => r,
        () = reached(&mut stop, Phase::Draining) => Err(shutting_down()),
    };
    let (backend, decision, server, first) = match opened {
        Ok(x) => x,
        Err(r) => {
            let _ = send_error(&mut client_w, &r.error).await;
            return Ended::from(r);
        }
    };
    let active = Arc::new(shared.stats.connected(&backend, port));
    let addr = backend.addr();
    record.route = Some(decision);
    record.backend = Some((backend.name.clone(), addr.clone()));
    let peer = &record.client;
    tracing::debug!(%peer, port = port.as_str(), backend = %backend.name, "session started");

    let (server_r, server_w) = server.into_split();
    let (err_tx, err_rx) = oneshot::channel();
    let terminated = Arc::new(AtomicBool::new(false));
    let flow = Arc::new(Flow::default());
    let upstream = tokio::spawn(client_to_server(
        client_r,
        server_w,
        pending,
        err_tx,
        terminated.clone(),
        active.clone(),
        flow.clone(),
    ));
    let fence = (port == Port::ReadWrite).then(|| (shared.routes.clone(), backend.clone()));
    let mut guard = CancelGuard { shared, pid: None, target: None };
    let ctx = Downstream { shared, addr: &addr, terminated: &terminated, active: &active, flow: &flow };
    let ended = server_to_client(server_r, client_w, first, err_rx, fence, stop, ctx, &mut guard).await;
    upstream.abort();
    record.bytes_from_client = flow.bytes_from_client.load(Ordering::Relaxed);
    record.bytes_to_client = flow.bytes_to_client.load(Ordering::Relaxed);
    tracing::debug!(%peer, backend = %backend.name, "session closed");
    ended
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_robin_follows_the_weights() {
        let b = |name: &str, weight| Backend { name: name.into(), host: "h".into(), port: 1, weight };
        let count = |replicas: &[Backend]| {
            let mut n = vec![0; replicas.len()];
            for turn in 0..600 {
                n[weighted_turn(replicas, turn)] += 1;
            }
            n
        };
        assert_eq!(count(&[b("a", 1000), b("b", 1000)]), vec![300, 300]);
        assert_eq!(count(&[b("a", 2000), b("b", 1000)]), vec![400, 200]);
        assert_eq!(count(&[b("a", 1500), b("b", 1000)]), vec![360, 240]);
        assert_eq!(count(&[b("a", 1), b("b", 1)]), vec![300, 300], "equal weights: plain turns");
    }

    use super::*;
    use crate::frame::Frame;

    async fn answer(server_sends: &[u8], close: bool) -> FirstAnswer {
        let (mut proxy_end, mut server_end) = tokio::io::duplex(4096);
        server_end.write_all(server_sends).await.unwrap();
        if close {
            drop(server_end);
            first_answer(&mut proxy_end, Duration::from_secs(1)).await
        } else {
            // Keep the server end open: a partial message must wait, then time out.
            let a = first_answer(&mut proxy_end, Duration::from_millis(200)).await;
            drop(server_end);
            a
        }
    }

    fn error_frame(code: &'static str, message: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        ErrorResponse::new(Severity::Fatal, SqlState::new(code), message).encode(&mut out);
        out.to_vec()
    }

    #[tokio::test]
    async fn a_held_client_is_refused_with_57p03_when_the_proxy_stops_and_logged() {
        use crate::startup::ProtocolVersion;
        let dir = tempfile::tempdir().unwrap();
        let (_routes_tx, routes_rx) = watch::channel(Routes::default());
        let shared = Arc::new(Shared::new(routes_rx, SessionSettings::default()));
        shared.access_log.reopen(Some(&dir.path().join("access.json"))).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server_end, peer) = listener.accept().await.unwrap();
        let ticket = shared.lifecycle.ticket();
        let served = tokio::spawn(run(shared.clone(), Port::ReadWrite, server_end, peer.to_string(), ticket));
        let mut startup = BytesMut::new();
        StartupMessage::new(ProtocolVersion::V3_0).with("user", "app").unwrap().encode(&mut startup);
        client.write_all(&startup).await.unwrap();
        // No primary: the client is held.
        while shared.stats.snapshot().holds.waiting == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shared.lifecycle.advance(Phase::Draining);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let frame = split_frame(&mut BytesMut::from(&answer[..]), DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
        let BackendMessage::ErrorResponse(e) = BackendMessage::parse(&frame).unwrap() else { panic!("{answer:?}") };
        assert_eq!(e.to_string(), "FATAL 57P03: the proxy is shutting down");
        served.await.unwrap();
        assert_eq!(shared.lifecycle.open_connections(), 0, "the ticket went with the connection");
        let text = std::fs::read_to_string(dir.path().join("access.json")).unwrap();
        let r: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!((r["outcome"].as_str(), r["sqlstate"].as_str()), (Some("shut_down"), Some("57P03")));
        assert_eq!((r["user"].as_str(), r["database"].as_str(), r["route"].as_str()), (Some("app"), Some("app"), None));
    }

    #[tokio::test]
    async fn a_server_that_cannot_take_the_session_now_is_retried() {
        let FirstAnswer::Retry(why, Some(e)) =
            answer(&error_frame("57P03", "the database system is shutting down"), true).await
        else {
            panic!("57P03 must be retried")
        };
        assert_eq!(why, "the database system is shutting down");
        assert_eq!(e.message, "the database system is shutting down");
        assert!(matches!(answer(b"", true).await, FirstAnswer::Retry(_, None)), "closed before answering");
        assert!(matches!(answer(b"R\0\0", false).await, FirstAnswer::Retry(_, None)), "silent");
    }

    #[tokio::test]
    async fn any_other_first_answer_is_relayed_as_it_came() {
        let sasl = Frame::new(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0").into_bytes().to_vec();
        let FirstAnswer::Relay(buf) = answer(&sasl, false).await else { panic!("an auth request is relayed") };
        assert_eq!(&buf[..], &sasl[..]);
        let denied = error_frame("28P01", "password authentication failed");
        let FirstAnswer::Relay(buf) = answer(&denied, true).await else { panic!("other errors are the client's") };
        assert_eq!(&buf[..], &denied[..]);
    }
}
