//! The two directions of an established session: client to server and server to client.
//!
//! Both directions relay runs of whole frames exactly as they arrived, straight out of the read
//! buffer (one write per read in the common case, no copy and no allocation); the proxy only
//! scans the frame headers:
//! * client to server: framing (garbage or an oversized length ends the session with 08P01
//!   instead of being passed on) and Terminate (after which a server close is expected);
//! * server to client: framing, BackendKeyData (replaced by a synthetic key; the real one goes
//!   into the [`crate::cancel::CancelMap`] for the session's lifetime) and ReadyForQuery (the
//!   transaction status).
//!
//! Invariants:
//! * the proxy writes its own messages to the client only at a frame boundary, so the client
//!   never sees a relayed message cut by an error;
//! * the two directions run in separate tasks, so a backend that blocks writing to the client
//!   never stops the client's bytes from reaching it (and the reverse), as with a direct
//!   connection;
//! * a read-write session on a backend that stops being the primary is closed at once with
//!   FATAL 57P01;
//! * once the proxy is stopping, a session is closed with FATAL 57P01 (PostgreSQL's own
//!   "terminating connection due to administrator command") as soon as it is idle (every request
//!   answered, outside a transaction block; see [`crate::flow`]) or when the stop's bound has
//!   passed, whichever comes first; a query in flight gets its result first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

use crate::access_log::{AccessRecord, Outcome};
use crate::backend::{
    BackendKeyData, ErrorFields, ErrorResponse, Severity, SqlState, TransactionStatus, BACKEND_KEY_DATA,
    ERROR_RESPONSE, READY_FOR_QUERY,
};
use crate::cancel::{Addr, BackendTarget, CancelKey};
use crate::flow::{ChunkCount, Flow};
use crate::frame::{frame_len, DEFAULT_MAX_FRAME_LEN, HEADER_LEN};
use crate::lifecycle::Phase;
use crate::session::{cancel_backend, fatal, Refusal, Shared};
use crate::stats::ActiveGuard;
use crate::topology::{Backend, Routes};

/// Terminate, the client's goodbye.
const TERMINATE: u8 = b'X';

/// How much a read may add to a relay buffer: big enough for pgbench-sized result sets in one
/// read, small enough that thousands of sessions stay cheap.
const READ_CHUNK: usize = 16 * 1024;

/// How a connection ended, for its access-log record.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) outcome: Outcome,
    /// The SQLSTATE of the error that ended it (the proxy's or the server's).
    pub(crate) sqlstate: Option<String>,
    /// The proxy's own message, when the proxy ended it.
    pub(crate) error: Option<String>,
}

impl From<Refusal> for Ended {
    fn from(r: Refusal) -> Ended {
        Ended { outcome: r.outcome, sqlstate: Some(r.error.code.as_str().to_string()), error: Some(r.error.message) }
    }
}

impl Ended {
    fn quietly(outcome: Outcome) -> Ended {
        Ended { outcome, sqlstate: None, error: None }
    }

    /// Copies the ending into the connection's record.
    pub(crate) fn record(self, r: &mut AccessRecord) {
        r.outcome = self.outcome;
        r.sqlstate = self.sqlstate;
        r.error = self.error;
    }
}

/// Keeps the session's cancel key in the map exactly as long as the session lives.
pub(crate) struct CancelGuard<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) pid: Option<u32>,
    /// The backend's own key, to cancel a query the proxy cuts short.
    pub(crate) target: Option<BackendTarget<Addr>>,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            self.shared.cancels.lock().unwrap_or_else(|e| e.into_inner()).remove(pid);
        }
    }
}

/// Relays client messages to the server whole; a framing error is reported through `err_tx`
/// (the other direction owns the client's write half) and ends the relay.
pub(crate) async fn client_to_server<R, W>(
    mut r: R,
    mut w: W,
    mut buf: BytesMut,
    err_tx: oneshot::Sender<ErrorResponse>,
    terminated: Arc<AtomicBool>,
    active: Arc<ActiveGuard>,
    flow: Arc<Flow>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        match scan_client(&buf) {
            Ok((0, _, _)) => {}
            Ok((n, terminate, count)) => {
                if terminate {
                    terminated.store(true, Ordering::Relaxed);
                }
                // Counted before the server can see it, so its answer never arrives first.
                if !flow.client_sends(count.requests, count.trailing) {
                    // The session was closed as idle (the proxy is stopping): nothing more goes
                    // to the server; the other direction tells the client.
                    return;
                }
                active.counters().bytes_to_server.fetch_add(n as u64, Ordering::Relaxed);
                flow.bytes_from_client.fetch_add(n as u64, Ordering::Relaxed);
                if w.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                buf.advance(n);
            }
            Err(e) => {
                let _ = err_tx.send(ErrorResponse::new(Severity::Fatal, SqlState::PROTOCOL_VIOLATION, e));
                return;
            }
        }
        buf.reserve(READ_CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return;
            }
            Ok(_) => {}
        }
    }
}

/// The length of the whole frames at the front of a client's buffer, whether one of them is
/// Terminate, and how they count towards what is in flight.
fn scan_client(buf: &[u8]) -> Result<(usize, bool, ChunkCount), String> {
    let mut at = 0;
    let mut terminate = false;
    let mut count = ChunkCount::default();
    while let Some(len) = frame_len(&buf[at..], DEFAULT_MAX_FRAME_LEN).map_err(|e| format!("invalid message: {e}"))? {
        if buf.len() - at < len {
            break;
        }
        terminate |= buf[at] == TERMINATE;
        count.add(buf[at]);
        at += len;
    }
    Ok((at, terminate, count))
}

/// What the server-to-client relay reads besides its sockets.
pub(crate) struct Downstream<'a> {
    pub(crate) shared: &'a Shared,
    /// The backend's address, recorded with its cancel key.
    pub(crate) addr: &'a str,
    /// Set once the client sent Terminate: a server close is then expected.
    pub(crate) terminated: &'a AtomicBool,
    /// This session's backend counters.
    pub(crate) active: &'a ActiveGuard,
    /// What is in flight, shared with the client direction.
    pub(crate) flow: &'a Flow,
}

/// Relays server messages to the client (starting with what `first` already holds), replacing
/// BackendKeyData and noting ReadyForQuery; writes the proxy's own FATAL errors (protocol
/// violation upstream, leader change, shutdown) between frames.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn server_to_client<R, W>(
    mut r: R,
    mut w: W,
    first: BytesMut,
    mut err_rx: oneshot::Receiver<ErrorResponse>,
    fence: Option<(watch::Receiver<Routes>, Backend)>,
    stop: watch::Receiver<Phase>,
    ctx: Downstream<'_>,
    guard: &mut CancelGuard<'_>,
) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Downstream { shared, addr, terminated, active, flow } = ctx;
    let mut buf = first;
    let mut upstream_open = true;
    let mut seen = Seen::default();
    let mut buffered = !buf.is_empty();
    let mut draining = false;
    buf.reserve(READ_CHUNK);
    // One long-lived wait for a leader change, polled by every turn of the loop below (a new
    // `changed()` per message would register and unregister a waiter on the routes channel,
    // shared by all sessions, for every query). The same for the proxy's stop.
    let fenced = leader_changed(fence);
    tokio::pin!(fenced);
    let stopping = next_phase(stop, Phase::Serving);
    tokio::pin!(stopping);
    // Ends the session with the proxy's own error: the client direction forwards nothing more.
    macro_rules! end_with {
        ($refusal:expr) => {{
            let r: Refusal = $refusal;
            flow.close();
            let _ = send_error(&mut w, &r.error).await;
            return Ended::from(r);
        }};
    }
    loop {
        if buffered {
            match relay_buffered(&mut buf, &mut w, &mut seen, shared, addr, guard, active, flow).await {
                Ok(true) => {}
                Ok(false) => return Ended::quietly(Outcome::ClientClosed),
                Err(r) => return Ended::from(r),
            }
            buffered = false;
            buf.reserve(READ_CHUNK);
            if draining && seen.idle() && flow.close_if_idle() {
                end_with!(shut_down());
            }
        }
        tokio::select! {
            read = r.read_buf(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => {
                        if let Some(code) = seen.fatal.take() {
                            // The server ended the session with its own FATAL error, which the
                            // client has already been given.
                            return Ended { outcome: Outcome::ServerError, sqlstate: Some(code), error: None };
                        }
                        if upstream_open && !terminated.load(Ordering::Relaxed) {
                            // The server went away under a client that still talks: say so
                            // (only whole frames were relayed, so this lands between messages).
                            end_with!(fatal(
                                Outcome::ServerClosed,
                                SqlState::CONNECTION_FAILURE,
                                "server closed the connection unexpectedly",
                            ));
                        }
                        return Ended::quietly(Outcome::ClientClosed);
                    }
                    Ok(_) => buffered = true,
                }
            }
            err = &mut err_rx, if upstream_open => {
                match err {
                    Ok(e) => {
                        shared.stats.protocol_error();
                        end_with!(Refusal { error: e, outcome: Outcome::ProtocolError });
                    }
                    // The client closed its side: keep relaying until the server closes too.
                    Err(_) => upstream_open = false,
                }
            }
            () = &mut fenced => {
                // Idle or not, the session goes: its transaction could only fail on a primary
                // that has lost its lease (the status is logged for the operator).
                tracing::debug!(status = ?seen.status, "fenced session's transaction status");
                shared.stats.fenced();
                end_with!(fatal(Outcome::Fenced, SqlState::ADMIN_SHUTDOWN, "terminating connection: the leader changed"));
            }
            (phase, rx) = &mut stopping => {
                if phase == Phase::Closing {
                    // As PostgreSQL's fast shutdown would, the query is stopped too: the client
                    // is told its session is gone, so its statement must not commit later.
                    tracing::debug!(status = ?seen.status, "session still busy at the end of the shutdown wait");
                    if let Some(target) = &guard.target {
                        cancel_backend(target, CLOSE_CANCEL_TIMEOUT).await;
                    }
                    end_with!(shut_down());
                }
                draining = true;
                stopping.set(next_phase(rx, phase));
                if seen.idle() && flow.close_if_idle() {
                    end_with!(shut_down());
                }
            }
        }
    }
}

/// How long cancelling a query cut short by the end of a shutdown wait may take.
const CLOSE_CANCEL_TIMEOUT: Duration = Duration::from_secs(1);

/// The proxy is stopping: PostgreSQL's own words for a fast shutdown.
fn shut_down() -> Refusal {
    Refusal { error: ErrorResponse::admin_shutdown(), outcome: Outcome::ShutDown }
}

/// Completes with the first phase after `after`, and the receiver to wait for the next one;
/// never once the proxy's lifecycle is gone.
async fn next_phase(mut rx: watch::Receiver<Phase>, after: Phase) -> (Phase, watch::Receiver<Phase>) {
    let phase = rx.wait_for(|p| *p > after).await.map(|p| *p);
    let Ok(phase) = phase else { return std::future::pending().await };
    (phase, rx)
}

/// Completes when the read-write session's backend stops being the primary; never without a
/// fence (read-only sessions) or once the routes channel is gone.
async fn leader_changed(fence: Option<(watch::Receiver<Routes>, Backend)>) {
    let Some((mut rx, mine)) = fence else { return std::future::pending().await };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if rx.borrow_and_update().primary.as_ref() != Some(&mine) {
            tracing::info!(backend = %mine.name, "leader changed: closing a read-write session on the old primary");
            return;
        }
    }
}

/// Writes the whole frames in `buf` to the client. `Ok(false)`: the client is gone.
#[allow(clippy::too_many_arguments)]
async fn relay_buffered<W: AsyncWrite + Unpin>(
    buf: &mut BytesMut,
    w: &mut W,
    seen: &mut Seen,
    shared: &Shared,
    addr: &str,
    guard: &mut CancelGuard<'_>,
    active: &ActiveGuard,
    flow: &Flow,
) -> Result<bool, Refusal> {
    let invalid = |e: String| {
        fatal(Outcome::ProtocolError, SqlState::PROTOCOL_VIOLATION, format!("invalid message from the server: {e}"))
    };
    loop {
        let chunk = match next_chunk(buf, seen) {
            Ok(Some(c)) => c,
            // Flush before waiting on the server again: a TLS writer may keep encrypted bytes
            // it could not send yet (socket full) until the next write or flush, and the client
            // may be waiting for exactly those (a no-op on plain TCP).
            Ok(None) => return Ok(w.flush().await.is_ok()),
            Err(e) => {
                shared.stats.protocol_error();
                let r = invalid(e);
                flow.close();
                let _ = send_error(w, &r.error).await;
                return Err(r);
            }
        };
        let written = match chunk {
            Chunk::Run(n) => {
                let ok = w.write_all(&buf[..n]).await.is_ok();
                buf.advance(n);
                ok.then_some(n)
            }
            Chunk::KeyData(n) => {
                let synthetic = match synthetic_key(&buf[..n], shared, addr, guard) {
                    Ok(k) => k,
                    Err(e) => {
                        let r = invalid(e);
                        flow.close();
                        let _ = send_error(w, &r.error).await;
                        return Err(r);
                    }
                };
                buf.advance(n);
                let mut enc = BytesMut::new();
                synthetic.encode(&mut enc);
                w.write_all(&enc).await.is_ok().then_some(enc.len())
            }
        };
        let Some(n) = written else { return Ok(false) };
        active.counters().bytes_to_client.fetch_add(n as u64, Ordering::Relaxed);
        flow.bytes_to_client.fetch_add(n as u64, Ordering::Relaxed);
        flow.server_ready(std::mem::take(&mut seen.ready));
    }
}

/// The next piece of a server's buffer to pass on.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// This many bytes of whole frames, to relay as they are.
    Run(usize),
    /// A BackendKeyData frame of this length, to replace.
    KeyData(usize),
}

/// What the server direction has seen of the messages it relayed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    /// The transaction status of the last ReadyForQuery.
    status: Option<TransactionStatus>,
    /// ReadyForQuery messages scanned and not yet counted in the session's [`Flow`].
    ready: u64,
    /// SQLSTATE of a FATAL (or PANIC) error the server sent: it is ending the session.
    fatal: Option<String>,
}

impl Seen {
    /// Outside a transaction block (the caller checks that nothing is in flight).
    fn idle(&self) -> bool {
        self.status == Some(TransactionStatus::Idle)
    }
}

/// Scans the whole frames at the front of `buf` up to the first BackendKeyData, noting the
/// transaction status of every ReadyForQuery and the code of a FATAL error on the way. `None`: no
/// whole frame yet.
fn next_chunk(buf: &[u8], seen: &mut Seen) -> Result<Option<Chunk>, String> {
    let mut at = 0;
    while let Some(len) = frame_len(&buf[at..], DEFAULT_MAX_FRAME_LEN).map_err(|e| e.to_string())? {
        if buf.len() - at < len {
            break;
        }
        match buf[at] {
            READY_FOR_QUERY => {
                let byte = buf.get(at + HEADER_LEN).copied().unwrap_or(0);
                seen.status = Some(TransactionStatus::from_byte(byte).map_err(|e| e.to_string())?);
                seen.ready += 1;
            }
            ERROR_RESPONSE => {
                // Rare, so parsed: only the code is kept (a message may quote the client's data).
                if let Ok(f) = ErrorFields::parse(&buf[at + HEADER_LEN..at + len], "ErrorResponse") {
                    if matches!(f.severity(), Some("FATAL" | "PANIC")) {
                        seen.fatal = f.code().map(str::to_string);
                    }
                }
            }
            BACKEND_KEY_DATA if at == 0 => return Ok(Some(Chunk::KeyData(len))),
            BACKEND_KEY_DATA => break,
            _ => {}
        }
        at += len;
    }
    Ok((at > 0).then_some(Chunk::Run(at)))
}

/// Records the server's key from a whole BackendKeyData `frame` and returns the synthetic one to
/// give the client.
fn synthetic_key(
    frame: &[u8],
    shared: &Shared,
    addr: &str,
    guard: &mut CancelGuard<'_>,
) -> Result<BackendKeyData, String> {
    let body = &frame[HEADER_LEN..];
    if body.len() < 4 {
        return Err("BackendKeyData is truncated".into());
    }
    let pid = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let key = CancelKey::new(bytes::Bytes::copy_from_slice(&body[4..])).map_err(|e| e.to_string())?;
    let target = BackendTarget { addr: Addr::from(addr), pid, key };
    guard.target = Some(target.clone());
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

/// Writes the proxy's own ErrorResponse and flushes it.
pub(crate) async fn send_error<W: AsyncWrite + Unpin>(w: &mut W, e: &ErrorResponse) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    e.encode(&mut out);
    w.write_all(&out).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::CancelKey;
    use crate::frame::Frame;
    use crate::session::SessionSettings;
    use crate::startup::CancelRequest;

    fn shared() -> Shared {
        let (_tx, rx) = watch::channel(Routes::default());
        Shared::new(rx, SessionSettings::default())
    }

    #[test]
    fn client_scan_counts_whole_frames_notes_terminate_and_rejects_garbage() {
        let mut bytes = Frame::new(b'Q', b"select 1\0").into_bytes().to_vec();
        let one = bytes.len();
        bytes.extend_from_slice(b"X\0\0");
        let query = ChunkCount { requests: 1, trailing: false };
        assert_eq!(scan_client(&bytes), Ok((one, false, query)));
        bytes.truncate(one);
        bytes.extend_from_slice(Frame::new(b'X', b"").as_bytes());
        assert_eq!(scan_client(&bytes), Ok((one + 5, true, query)));
        let parse = Frame::new(b'P', b"\0select 1\0\0\0");
        assert_eq!(scan_client(parse.as_bytes()), Ok((parse.len(), false, ChunkCount { requests: 0, trailing: true })));
        assert!(scan_client(b"Q\0\0\0\x01").is_err());
        assert!(scan_client(b"Q\x7f\xff\xff\xff").is_err());
    }

    #[test]
    fn server_scan_stops_at_key_data_and_tracks_status() {
        let auth = Frame::new(b'R', &[0, 0, 0, 0]);
        let key = Frame::new(b'K', b"\0\0\0\x07abcd");
        let ready = Frame::new(b'Z', b"T");
        let mut buf = BytesMut::new();
        for f in [&auth, &key, &ready] {
            buf.extend_from_slice(f.as_bytes());
        }
        buf.extend_from_slice(b"D\0\0");
        let mut seen = Seen::default();
        assert_eq!(next_chunk(&buf, &mut seen), Ok(Some(Chunk::Run(auth.as_bytes().len()))));
        buf.advance(auth.as_bytes().len());
        assert_eq!(next_chunk(&buf, &mut seen), Ok(Some(Chunk::KeyData(key.as_bytes().len()))));
        buf.advance(key.as_bytes().len());
        assert_eq!(seen, Seen::default());
        assert_eq!(next_chunk(&buf, &mut seen), Ok(Some(Chunk::Run(ready.as_bytes().len()))));
        assert_eq!((seen.status, seen.ready), (Some(TransactionStatus::InTransaction), 1));
        assert!(!seen.idle(), "inside a transaction block");
        buf.advance(ready.as_bytes().len());
        assert_eq!(next_chunk(&buf, &mut seen), Ok(None), "a partial frame waits");
        assert!(next_chunk(b"Z\0\0\0\x05?", &mut seen).is_err(), "an unknown transaction status");
    }

    #[test]
    fn a_servers_fatal_error_is_noted_by_its_code_only() {
        let mut buf = BytesMut::new();
        ErrorResponse::new(Severity::Error, SqlState::new("42P01"), "relation \"secret\" does not exist")
            .encode(&mut buf);
        let mut seen = Seen::default();
        let _ = next_chunk(&buf, &mut seen);
        assert_eq!(seen.fatal, None, "an ERROR does not end the session");
        ErrorResponse::new(Severity::Fatal, SqlState::new("3D000"), "database \"nope\" does not exist")
            .encode(&mut buf);
        assert_eq!(next_chunk(&buf, &mut seen), Ok(Some(Chunk::Run(buf.len()))));
        assert_eq!(seen.fatal.as_deref(), Some("3D000"));
    }

    #[test]
    fn key_data_is_replaced_and_leaves_with_the_session() {
        let sh = shared();
        let mut guard = CancelGuard { shared: &sh, pid: None, target: None };
        let frame = Frame::new(b'K', b"\0\0\0\x07abcd");
        let synthetic = synthetic_key(frame.as_bytes(), &sh, "h:1", &mut guard).unwrap();
        assert_eq!(guard.pid, Some(synthetic.pid));
        assert_ne!(synthetic.key.as_bytes(), b"abcd");
        let req = CancelRequest { pid: synthetic.pid, key: CancelKey::new(synthetic.key.as_bytes().to_vec()).unwrap() };
        let target = sh.cancels.lock().unwrap().lookup(&req).unwrap();
        assert_eq!((&*target.addr, target.pid, target.key.as_bytes()), ("h:1", 7, &b"abcd"[..]));
        drop(guard);
        assert!(sh.cancels.lock().unwrap().is_empty(), "the key leaves with the session");
        let mut guard = CancelGuard { shared: &sh, pid: None, target: None };
        assert!(synthetic_key(b"K\0\0\0\x06\0\0", &sh, "h:1", &mut guard).is_err(), "truncated");
    }
}
