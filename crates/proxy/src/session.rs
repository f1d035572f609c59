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
//! The proxy looks at very little:
//! * client to backend: only the framing, so a garbage or oversized message closes this one
//!   connection with a protocol-violation error instead of being passed on;
//! * backend to client: the framing, BackendKeyData (replaced by a synthetic key, the real one is
//!   kept in the [`CancelMap`] so a CancelRequest reaches the right server) and ReadyForQuery
//!   (to know whether the session is idle or in a transaction).
//!
//! Invariants:
//! * the proxy writes its own messages to the client only at a frame boundary, so the client
//!   never sees a relayed message cut by an error;
//! * the two directions run in separate tasks, so a backend that blocks writing to the client
//!   never stops the client's bytes from reaching it (and the reverse), as with a direct
//!   connection;
//! * a read-write session on a backend that stops being the primary is closed at once with
//!   FATAL 57P01.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::backend::{
    BackendKeyData, ErrorResponse, Severity, SqlState, TransactionStatus, BACKEND_KEY_DATA, READY_FOR_QUERY,
};
use crate::cancel::{BackendTarget, CancelKey, CancelMap};
use crate::frame::{frame_len, DEFAULT_MAX_FRAME_LEN, HEADER_LEN};
use crate::startup::{decode_startup, CancelRequest, StartupMessage, StartupPacket, DEFAULT_MAX_STARTUP_LEN};
use crate::stats::{ActiveGuard, Decision, Stats};
use crate::topology::{Backend, Routes};

/// Terminate, the client's goodbye.
const TERMINATE: u8 = b'X';

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
/// configuration and the statistics.
pub struct Shared {
    /// Current routes, kept up to date by the follower.
    pub routes: watch::Receiver<Routes>,
    /// Synthetic cancel keys handed to clients, and the backends they stand for.
    pub cancels: Mutex<CancelMap<String>>,
    /// Session settings.
    pub settings: SessionSettings,
    /// TLS for clients that ask for it; `None` answers SSLRequest with `N`.
    pub tls: Option<TlsAcceptor>,
    /// Counters for the admin port and the least-connections policy.
    pub stats: Arc<Stats>,
    next_replica: AtomicUsize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("settings", &self.settings).field("tls", &self.tls.is_some()).finish()
    }
}

impl Shared {
    /// Shared state over a routes receiver, without TLS and with fresh statistics.
    pub fn new(routes: watch::Receiver<Routes>, settings: SessionSettings) -> Shared {
        Shared {
            routes,
            cancels: Mutex::new(CancelMap::new()),
            settings,
            tls: None,
            stats: Arc::new(Stats::default()),
            next_replica: AtomicUsize::new(0),
        }
    }

    /// Terminates TLS with `config` for clients that send SSLRequest.
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Shared {
        self.tls = Some(TlsAcceptor::from(config));
        self
    }

    /// Counts into `stats` (shared with the follower and the admin port).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Shared {
        self.stats = stats;
        self
    }

    /// The replica for a new read-only session, by the configured policy.
    fn pick_replica(&self, replicas: &[Backend]) -> Backend {
        let turn = self.next_replica.fetch_add(1, Ordering::Relaxed);
        let i = match self.settings.balance {
            Balance::RoundRobin => turn % replicas.len(),
            Balance::LeastConnections => {
                // Start the scan at the turn so equal counts still rotate.
                (0..replicas.len())
                    .map(|k| (turn + k) % replicas.len())
                    .min_by_key(|&j| self.stats.active_on(&replicas[j].name))
                    .unwrap_or(0)
            }
        };
        replicas[i].clone()
    }
}

/// Why a session ended early; the message goes to the client when it can still be sent.
#[derive(Debug)]
struct Refusal(ErrorResponse);

fn fatal(code: SqlState, message: impl Into<String>) -> Refusal {
    Refusal(ErrorResponse::new(Severity::Fatal, code, message))
}

/// The client connection after the startup phase: TLS or not.
enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Serves one client connection until it closes.
pub async fn run(shared: Arc<Shared>, port: Port, client: TcpStream, peer: String) {
    let _ = client.set_nodelay(true);
    shared.stats.accepted(port);
    let mut buf = BytesMut::with_capacity(8192);
    // One deadline for the whole startup phase, TLS handshake included.
    let deadline = tokio::time::Instant::now() + shared.settings.startup_timeout;
    let mut stream = ClientStream::Plain(client);
    let mut offer_tls = shared.tls.is_some();
    let startup = loop {
        let read = match &mut stream {
            ClientStream::Plain(s) => tokio::time::timeout_at(deadline, read_startup(s, &mut buf, offer_tls)).await,
            ClientStream::Tls(s) => tokio::time::timeout_at(deadline, read_startup(s.as_mut(), &mut buf, false)).await,
        };
        let refusal = match read {
            Ok(Ok(Some(Step::Done(s)))) => break s,
            Ok(Ok(None)) => return,
            Ok(Ok(Some(Step::Tls))) => {
                offer_tls = false;
                let (ClientStream::Plain(tcp), Some(acceptor)) = (stream, shared.tls.clone()) else {
                    unreachable!("TLS is offered only on a plain stream with a certificate")
                };
                match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        shared.stats.tls_handshake(true);
                        stream = ClientStream::Tls(Box::new(tls));
                        continue;
                    }
                    Ok(Err(e)) => {
                        shared.stats.tls_handshake(false);
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        shared.stats.tls_handshake(false);
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                }
            }
            Ok(Err(refusal)) => {
                tracing::debug!(%peer, "startup refused: {}", refusal.0.message);
                shared.stats.protocol_error();
                refusal
            }
            Err(_) => fatal(SqlState::PROTOCOL_VIOLATION, "timeout waiting for the startup packet"),
        };
        let _ = match &mut stream {
            ClientStream::Plain(s) => send_error(s, &refusal.0).await,
            ClientStream::Tls(s) => send_error(s.as_mut(), &refusal.0).await,
        };
        return;
    };
    let msg = match startup {
        Startup::Cancel(req) => return forward_cancel(&shared, req).await,
        Startup::Session(msg) => msg,
    };
    let result = match stream {
        ClientStream::Plain(s) => {
            let (r, w) = s.into_split();
            session(&shared, port, r, w, buf, msg, &peer).await
        }
        ClientStream::Tls(s) => {
            let (r, w) = tokio::io::split(*s);
            session(&shared, port, r, w, buf, msg, &peer).await
        }
    };
    if let Err(refusal) = result {
        tracing::debug!(%peer, "session ended: {}", refusal.0.message);
    }
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
                    return Err(fatal(SqlState::PROTOCOL_VIOLATION, "received unencrypted data after SSL request"));
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
            Err(e) => return Err(fatal(SqlState::PROTOCOL_VIOLATION, format!("invalid startup packet: {e}"))),
        }
    }
}

/// Sends the backend's real cancel key to the backend that owns the synthetic one. An unknown
/// key is ignored silently, as PostgreSQL does.
async fn forward_cancel(shared: &Shared, req: CancelRequest) {
    let target = shared.cancels.lock().unwrap_or_else(|e| e.into_inner()).lookup(&req).cloned();
    let Some(target) = target else {
        tracing::debug!(pid = req.pid, "cancel request with an unknown key ignored");
        return;
    };
    let mut out = BytesMut::new();
    target.cancel_request().encode(&mut out);
    let sent = async {
        let mut s = TcpStream::connect(&target.addr).await?;
        s.write_all(&out).await?;
        // PostgreSQL closes the connection once it has read the request.
        let mut sink = [0u8; 16];
        let _ = s.read(&mut sink).await;
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(shared.settings.connect_timeout, sent).await {
        Ok(Ok(())) => {
            shared.stats.cancel_forwarded();
            tracing::info!(backend = %target.addr, "cancel request forwarded")
        }
        Ok(Err(e)) => tracing::warn!(backend = %target.addr, "forwarding a cancel request: {e}"),
        Err(_) => tracing::warn!(backend = %target.addr, "forwarding a cancel request timed out"),
    }
}

/// Picks the backend for a new session, holding the client while there is no primary (for
/// the read-only port too when it falls back to the primary) until `deadline`.
async fn choose_backend(shared: &Shared, port: Port, started: Instant, deadline: Instant) -> Result<Backend, Refusal> {
    let to_primary = if port == Port::ReadOnly {
        let replicas = shared.routes.borrow().replicas.clone();
        if !replicas.is_empty() {
            shared.stats.decided(port, Decision::Replica);
            return Ok(shared.pick_replica(&replicas));
        }
        if !shared.settings.fallback_to_primary {
            shared.stats.decided(port, Decision::Refused);
            return Err(fatal(SqlState::CANNOT_CONNECT_NOW, "no replica available"));
        }
        Decision::FallbackPrimary
    } else {
        Decision::Primary
    };
    if let Some(p) = shared.routes.borrow().primary.clone() {
        shared.stats.decided(port, to_primary);
        return Ok(p);
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
            Ok(p)
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
    fatal(SqlState::CANNOT_CONNECT_NOW, format!("no primary available (held {held} s)"))
}

/// Chooses a backend and connects to it. A backend that cannot be reached (a crashed primary
/// whose leader key has not expired yet) does not fail the client while the hold lasts: the
/// proxy retries, on every route change and twice a second, until the hold timeout.
async fn connect_backend(shared: &Shared, port: Port) -> Result<(Backend, TcpStream), Refusal> {
    let started = Instant::now();
    let deadline = started + shared.settings.hold_timeout;
    let mut rx = shared.routes.clone();
    let mut attempts = 0u32;
    loop {
        rx.borrow_and_update();
        let backend = choose_backend(shared, port, started, deadline).await?;
        let addr = backend.addr();
        let error = match tokio::time::timeout(shared.settings.connect_timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => return Ok((backend, s)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timeout".to_string(),
        };
        if Instant::now() >= deadline {
            shared.stats.decided(port, Decision::ConnectFailed);
            return Err(fatal(
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

/// Keeps the session's cancel key in the map exactly as long as the session lives.
struct CancelGuard<'a> {
    shared: &'a Shared,
    pid: Option<u32>,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            self.shared.cancels.lock().unwrap_or_else(|e| e.into_inner()).remove(pid);
        }
    }
}

async fn session<R, W>(
    shared: &Shared,
    port: Port,
    client_r: R,
    mut client_w: W,
    pending: BytesMut,
    startup: StartupMessage,
    peer: &str,
) -> Result<(), Refusal>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (backend, mut server) = match connect_backend(shared, port).await {
        Ok(x) => x,
        Err(r) => {
            let _ = send_error(&mut client_w, &r.0).await;
            return Err(r);
        }
    };
    let active = Arc::new(shared.stats.connected(&backend, port));
    let addr = backend.addr();
    let _ = server.set_nodelay(true);
    tracing::debug!(%peer, port = port.as_str(), backend = %backend.name, "session started");
    let mut out = BytesMut::new();
    startup.encode(&mut out);
    if server.write_all(&out).await.is_err() {
        return Ok(());
    }

    let (server_r, server_w) = server.into_split();
    let (err_tx, err_rx) = oneshot::channel();
    let terminated = Arc::new(AtomicBool::new(false));
    let upstream =
        tokio::spawn(client_to_server(client_r, server_w, pending, err_tx, terminated.clone(), active.clone()));
    let fence = (port == Port::ReadWrite).then(|| (shared.routes.clone(), backend.clone()));
    let mut guard = CancelGuard { shared, pid: None };
    let ctx = Downstream { shared, addr: &addr, terminated: &terminated, active: &active };
    let result = server_to_client(server_r, client_w, err_rx, fence, ctx, &mut guard).await;
    upstream.abort();
    tracing::debug!(%peer, backend = %backend.name, "session closed");
    result
}

/// Relays client messages to the server whole; a framing error is reported through `err_tx`
/// (the other direction owns the client's write half) and ends the relay.
async fn client_to_server<R, W>(
    mut r: R,
    mut w: W,
    mut buf: BytesMut,
    err_tx: oneshot::Sender<ErrorResponse>,
    terminated: Arc<AtomicBool>,
    active: Arc<ActiveGuard>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        match whole_frames(&buf) {
            Ok(n) if n > 0 => {
                let chunk = buf.split_to(n);
                if contains_terminate(&chunk) {
                    terminated.store(true, Ordering::Relaxed);
                }
                active.counters().bytes_to_server.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if w.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let _ = err_tx.send(ErrorResponse::new(Severity::Fatal, SqlState::PROTOCOL_VIOLATION, e));
                return;
            }
        }
        buf.reserve(8192);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return;
            }
            Ok(_) => {}
        }
    }
}

/// Whether a run of whole frames holds a Terminate message.
fn contains_terminate(frames: &[u8]) -> bool {
    let mut at = 0;
    while let Ok(Some(len)) = frame_len(&frames[at..], DEFAULT_MAX_FRAME_LEN) {
        if frames[at] == TERMINATE {
            return true;
        }
        at += len;
        if at >= frames.len() {
            break;
        }
    }
    false
}

/// Length of the whole frames at the front of `buf`.
fn whole_frames(buf: &[u8]) -> Result<usize, String> {
    let mut at = 0;
    while let Some(len) = frame_len(&buf[at..], DEFAULT_MAX_FRAME_LEN).map_err(|e| format!("invalid message: {e}"))? {
        if buf.len() - at < len {
            break;
        }
        at += len;
    }
    Ok(at)
}

/// What the server-to-client relay reads besides its sockets.
struct Downstream<'a> {
    shared: &'a Shared,
    /// The backend's address, recorded with its cancel key.
    addr: &'a str,
    /// Set once the client sent Terminate: a server close is then expected.
    terminated: &'a AtomicBool,
    /// This session's backend counters.
    active: &'a ActiveGuard,
}

/// Relays server messages to the client, replacing BackendKeyData and noting ReadyForQuery;
/// writes the proxy's own FATAL errors (protocol violation upstream, leader change) between
/// frames.
async fn server_to_client<R, W>(
    mut r: R,
    mut w: W,
    mut err_rx: oneshot::Receiver<ErrorResponse>,
    mut fence: Option<(watch::Receiver<Routes>, Backend)>,
    ctx: Downstream<'_>,
    guard: &mut CancelGuard<'_>,
) -> Result<(), Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Downstream { shared, addr, terminated, active } = ctx;
    let mut buf = BytesMut::with_capacity(16384);
    let mut upstream_open = true;
    let mut status = None::<TransactionStatus>;
    loop {
        tokio::select! {
            read = r.read_buf(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => {
                        if upstream_open && !terminated.load(Ordering::Relaxed) {
                            // The server went away under a client that still talks: say so
                            // (only whole frames were relayed, so this lands between messages).
                            let r = fatal(SqlState::CONNECTION_FAILURE, "server closed the connection unexpectedly");
                            let _ = send_error(&mut w, &r.0).await;
                            return Err(r);
                        }
                        return Ok(());
                    }
                    Ok(_) => {}
                }
                let out = match relay_frames(&mut buf, shared, addr, guard, &mut status) {
                    Ok(out) => out,
                    Err(e) => {
                        shared.stats.protocol_error();
                        let r = fatal(SqlState::PROTOCOL_VIOLATION, format!("invalid message from the server: {e}"));
                        let _ = send_error(&mut w, &r.0).await;
                        return Err(r);
                    }
                };
                for chunk in out {
                    active.counters().bytes_to_client.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if w.write_all(&chunk).await.is_err() {
                        return Ok(());
                    }
                }
                buf.reserve(8192);
            }
            err = &mut err_rx, if upstream_open => {
                match err {
                    Ok(e) => {
                        shared.stats.protocol_error();
                        let _ = send_error(&mut w, &e).await;
                        return Err(Refusal(e));
                    }
                    // The client closed its side: keep relaying until the server closes too.
                    Err(_) => upstream_open = false,
                }
            }
            changed = async { fence.as_mut().expect("guarded").0.changed().await }, if fence.is_some() => {
                if changed.is_err() {
                    fence = None;
                    continue;
                }
                let (rx, mine) = fence.as_mut().expect("guarded");
                let still_primary = rx.borrow_and_update().primary.as_ref() == Some(mine);
                if !still_primary {
                    tracing::info!(backend = %mine.name, ?status, "leader changed: closing a read-write session on the old primary");
                    shared.stats.fenced();
                    let r = fatal(SqlState::ADMIN_SHUTDOWN, "terminating connection: the leader changed");
                    let _ = send_error(&mut w, &r.0).await;
                    return Err(r);
                }
            }
        }
    }
}

/// Cuts the whole frames out of `buf` as chunks to write: runs of frames as they arrived, and
/// a re-encoded BackendKeyData in place of the server's.
fn relay_frames(
    buf: &mut BytesMut,
    shared: &Shared,
    addr: &str,
    guard: &mut CancelGuard<'_>,
    status: &mut Option<TransactionStatus>,
) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(len) = frame_len(&buf[at..], DEFAULT_MAX_FRAME_LEN).map_err(|e| e.to_string())? {
        if buf.len() - at < len {
            break;
        }
        match buf[at] {
            READY_FOR_QUERY => {
                let byte = buf.get(at + HEADER_LEN).copied().unwrap_or(0);
                *status = Some(TransactionStatus::from_byte(byte).map_err(|e| e.to_string())?);
                at += len;
            }
            BACKEND_KEY_DATA => {
                let before = buf.split_to(at).freeze();
                if !before.is_empty() {
                    out.push(before);
                }
                let frame = buf.split_to(len).freeze();
                let synthetic = synthetic_key(&frame, shared, addr, guard)?;
                let mut enc = BytesMut::new();
                synthetic.encode(&mut enc);
                out.push(enc.freeze());
                at = 0;
            }
            _ => at += len,
        }
    }
    if at > 0 {
        out.push(buf.split_to(at).freeze());
    }
    Ok(out)
}

/// Records the server's key and returns the synthetic one to give the client.
fn synthetic_key(
    frame: &Bytes,
    shared: &Shared,
    addr: &str,
    guard: &mut CancelGuard<'_>,
) -> Result<BackendKeyData, String> {
    let body = &frame[HEADER_LEN..];
    if body.len() < 4 {
        return Err("BackendKeyData is truncated".into());
    }
    let pid = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let key = CancelKey::new(frame.slice(HEADER_LEN + 4..)).map_err(|e| e.to_string())?;
    let target = BackendTarget { addr: addr.to_string(), pid, key };
    let mut map = shared.cancels.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(old) = guard.pid.take() {
        map.remove(old);
    }
    let (spid, skey) = map.issue(target, fill_random).map_err(|e| e.to_string())?;
    guard.pid = Some(spid);
    Ok(BackendKeyData { pid: spid, key: skey })
}

/// Fills `buf` from the kernel's random source (cancel keys must not be guessable).
fn fill_random(buf: &mut [u8]) {
    use std::io::Read;
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf)).is_ok();
    if !ok {
        // Never reached on Linux; still, do not hand out an all-zero key.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
}

async fn send_error<W: AsyncWrite + Unpin>(w: &mut W, e: &ErrorResponse) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    e.encode(&mut out);
    w.write_all(&out).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    fn shared() -> Shared {
        let (_tx, rx) = watch::channel(Routes::default());
        Shared::new(rx, SessionSettings::default())
    }

    #[test]
    fn whole_frames_counts_complete_ones_and_rejects_garbage() {
        let mut bytes = Frame::new(b'Q', b"select 1\0").into_bytes().to_vec();
        let one = bytes.len();
        bytes.extend_from_slice(b"X\0\0");
        assert_eq!(whole_frames(&bytes), Ok(one));
        assert!(whole_frames(b"Q\0\0\0\x01").is_err());
        assert!(whole_frames(b"Q\x7f\xff\xff\xff").is_err());
    }

    #[test]
    fn terminate_is_noticed_anywhere_in_a_run() {
        let mut run = Frame::new(b'Q', b"select 1\0").into_bytes().to_vec();
        assert!(!contains_terminate(&run));
        run.extend_from_slice(Frame::new(b'X', b"").as_bytes());
        assert!(contains_terminate(&run));
    }

    #[test]
    fn key_data_is_replaced_and_status_tracked() {
        let sh = shared();
        let mut guard = CancelGuard { shared: &sh, pid: None };
        let mut buf = BytesMut::new();
        buf.extend_from_slice(Frame::new(b'R', &[0, 0, 0, 0]).as_bytes());
        buf.extend_from_slice(Frame::new(b'K', b"\0\0\0\x07abcd").as_bytes());
        buf.extend_from_slice(Frame::new(b'Z', b"T").as_bytes());
        buf.extend_from_slice(b"D\0\0");
        let mut status = None;
        let out = relay_frames(&mut buf, &sh, "h:1", &mut guard, &mut status).unwrap();
        assert_eq!(&buf[..], b"D\0\0", "a partial frame stays");
        assert_eq!(status, Some(TransactionStatus::InTransaction));
        assert_eq!(out.len(), 3);
        assert_eq!(&out[0][..], Frame::new(b'R', &[0, 0, 0, 0]).as_bytes());
        let k = &out[1];
        assert_eq!((k[0], k.len()), (b'K', 13));
        assert_ne!(&k[5..], b"\0\0\0\x07abcd");
        let spid = u32::from_be_bytes([k[5], k[6], k[7], k[8]]);
        assert_eq!(guard.pid, Some(spid));
        let req = CancelRequest { pid: spid, key: CancelKey::new(k.slice(9..)).unwrap() };
        let target = sh.cancels.lock().unwrap().lookup(&req).cloned().unwrap();
        assert_eq!((target.addr.as_str(), target.pid, target.key.as_bytes()), ("h:1", 7, &b"abcd"[..]));
        drop(guard);
        assert!(sh.cancels.lock().unwrap().is_empty(), "the key leaves with the session");
    }
}
