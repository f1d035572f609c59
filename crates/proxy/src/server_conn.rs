//! One pooled server connection (transaction mode): a PostgreSQL session logged in as a pool's
//! user, with what the proxy knows of it: the tracked parameters it reports, the global
//! statements prepared on it, its own cancel key and its age.
//!
//! A connection moves between clients, and clients run on different worker threads, each with
//! its own event loop. An idle connection stays registered with the loop of the worker that last
//! used it (its home, [`Parked::Homed`]), and the pools hand it preferably to a client of that
//! same worker: then taking it and giving it back cost no system call at all. A client of
//! another worker (or of no worker) moves it: it is deregistered from its home's loop and
//! registered with the client's ([`Idle::lease`]).
//!
//! Invariants: a connection is handed out only after everything its server sent while it was
//! idle has been read and judged ([`Idle::drain`]): notices and parameter reports are dropped (no
//! client is there to get them), and an error or a close means the connection is dead, so
//! nothing an idle server sent ever reaches a client. At home, what the server sent is known
//! from the event loop's readiness, without a read; elsewhere it is read. A password or key
//! never appears in an [`OpenError`].

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::backend::{BackendMessage, ErrorFields, SqlState, TransactionStatus};
use crate::cancel::{Addr, BackendTarget};
use crate::frame::{split_frame, Frame, DEFAULT_MAX_FRAME_LEN};
use crate::prepared::ServerStatements;
use crate::server_auth::{LoginError, LoginStep, ServerLogin};
use crate::session_params::Params;
use crate::startup::{ProtocolVersion, StartupMessage};

/// Why a server connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// TCP: refused, unreachable, timed out.
    #[error("could not connect to {addr}: {why}")]
    Connect {
        /// Where.
        addr: String,
        /// The system's reason.
        why: String,
    },
    /// The server cannot take sessions now (starting, shutting down: 57P03): worth retrying.
    #[error("{0}")]
    CannotConnectNow(String),
    /// The login failed (the proxy's side or the server's refusal).
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The server sent an error after the login, or something the protocol does not allow.
    #[error("{0}")]
    Server(String),
}

impl OpenError {
    /// Whether another attempt (the same server later, or another one) may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, OpenError::Connect { .. } | OpenError::CannotConnectNow(_))
    }
}

/// A server connection leased to a client, on the client's event loop.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read from the server, not yet placed.
    pub buf: BytesMut,
    /// What the proxy knows of the server's session.
    pub session: Box<ServerSession>,
    /// When it was opened (`server_lifetime`).
    pub born: Instant,
}

/// What the proxy knows of the session behind a server connection. Boxed: a connection changes
/// hands twice per transaction (pool, client, pool), and a pointer moves cheaper than these
/// fields (they were most of the ~350 bytes copied at each move).
#[derive(Debug)]
pub struct ServerSession {
    /// What the server reports of the tracked parameters.
    pub params: Params,
    /// Every parameter the server reported at login, in order (what a client is told at its own
    /// login when this connection is the pool's first).
    pub welcome: Vec<(String, String)>,
    /// Statements prepared on it.
    pub statements: ServerStatements,
    /// Where and how to cancel what it runs (shared with the cancel key of the client holding
    /// it: see [`crate::cancel::Binding`]).
    pub target: Arc<BackendTarget<Addr>>,
}

/// Where an idle connection's socket is registered.
#[derive(Debug)]
enum Parked {
    /// With the event loop of worker `home` (see [`crate::workers::current`]); `None`: of a
    /// thread that is no worker, so any client moves it.
    Homed { home: Option<usize>, stream: TcpStream },
    /// With no event loop.
    Loose(std::net::TcpStream),
    /// Deregistering it failed: it is closed.
    Gone,
}

/// A server connection idle in its pool.
#[derive(Debug)]
pub struct Idle {
    stream: Parked,
    buf: BytesMut,
    session: Box<ServerSession>,
    born: Instant,
}

impl ServerConn {
    /// Connects to `addr` and logs in to `database` as `user` (with `extra` startup parameters)
    /// using `login`, up to the server's first ReadyForQuery, within `timeout`.
    pub async fn open(
        addr: &str,
        database: &str,
        user: &str,
        extra: &[(String, String)],
        login: ServerLogin,
        timeout: Duration,
    ) -> Result<ServerConn, OpenError> {
        match tokio::time::timeout(timeout, Self::open_now(addr, database, user, extra, login)).await {
            Ok(r) => r,
            Err(_) => Err(OpenError::Connect { addr: addr.to_string(), why: format!("no login within {timeout:?}") }),
        }
    }

    async fn open_now(
        addr: &str,
        database: &str,
        user: &str,
        extra: &[(String, String)],
        mut login: ServerLogin,
    ) -> Result<ServerConn, OpenError> {
        let connect = |e: std::io::Error| OpenError::Connect { addr: addr.to_string(), why: e.to_string() };
        let mut stream = TcpStream::connect(addr).await.map_err(connect)?;
        let _ = stream.set_nodelay(true);
        let bad = |e: crate::startup::StartupError| OpenError::Server(format!("startup packet: {e}"));
        let mut startup = StartupMessage::new(ProtocolVersion::V3_0)
            .with("user", user.to_string())
            .and_then(|s| s.with("database", database.to_string()))
            .map_err(bad)?;
        for (name, value) in extra {
            startup.push(name.clone(), value.clone()).map_err(bad)?;
        }
        let mut out = BytesMut::new();
        startup.encode(&mut out);
        stream.write_all(&out).await.map_err(connect)?;
        let mut buf = BytesMut::with_capacity(4096);
        let mut params = Params::default();
        let mut welcome = Vec::new();
        let mut target = None;
        let mut logged_in = false;
        loop {
            let frame = next_frame(&mut stream, &mut buf).await.map_err(|why| match logged_in {
                false => OpenError::Connect { addr: addr.to_string(), why },
                true => OpenError::Server(why),
            })?;
            if !logged_in {
                if frame.tag() == b'E' {
                    if let Ok(BackendMessage::ErrorResponse(f)) = BackendMessage::parse(&frame) {
                        if f.code() == Some(SqlState::CANNOT_CONNECT_NOW.as_str()) {
                            return Err(OpenError::CannotConnectNow(error_text(&f)));
                        }
                    }
                }
                match login.on_message(&frame)? {
                    LoginStep::Send(bytes) => {
                        if !bytes.is_empty() {
                            stream.write_all(&bytes).await.map_err(connect)?;
                        }
                    }
                    LoginStep::LoggedIn => logged_in = true,
                }
                continue;
            }
            match BackendMessage::parse(&frame) {
                Ok(BackendMessage::ParameterStatus(p)) => {
                    params.set(&p.name, &p.value);
                    welcome.push((p.name, p.value));
                }
                Ok(BackendMessage::BackendKeyData(k)) => {
                    target = Some(BackendTarget { addr: Addr::from(addr), pid: k.pid, key: k.key });
                }
                Ok(BackendMessage::ReadyForQuery(_)) => break,
                Ok(BackendMessage::ErrorResponse(f)) => {
                    if f.code() == Some(SqlState::CANNOT_CONNECT_NOW.as_str()) {
                        return Err(OpenError::CannotConnectNow(error_text(&f)));
                    }
                    return Err(OpenError::Server(error_text(&f)));
                }
                Ok(_) => {}
                Err(e) => return Err(OpenError::Server(format!("after login: {e}"))),
            }
        }
        let target = target.ok_or_else(|| OpenError::Server("the server sent no BackendKeyData".into()))?;
        let target = Arc::new(target);
        let session = Box::new(ServerSession { params, welcome, statements: ServerStatements::default(), target });
        Ok(ServerConn { stream, buf, session, born: Instant::now() })
    }

    /// Runs `query` (the connection at rest) up to its ReadyForQuery, following the parameters
    /// the server reports: true when it succeeded and the server is idle again
    /// (`server_reset_query`).
    pub async fn reset(&mut self, query: &str) -> bool {
        self.rows(query).await.is_ok()
    }

    /// Runs `query` (a simple query, text results) and returns its rows, each column's text
    /// (`None` for NULL); `Err` names what went wrong. The connection is at rest after `Ok`.
    pub async fn rows(&mut self, query: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut out = BytesMut::new();
        crate::frame::put_frame(&mut out, b'Q', |d| crate::wire::put_cstr(d, query.as_bytes()));
        self.stream.write_all(&out).await.map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = next_frame(&mut self.stream, &mut self.buf).await?;
            if frame.tag() == b'D' {
                rows.push(columns(frame.body()).ok_or("malformed DataRow")?);
                continue;
            }
            match BackendMessage::parse(&frame) {
                Ok(BackendMessage::ParameterStatus(p)) => self.session.params.set(&p.name, &p.value),
                Ok(BackendMessage::ErrorResponse(f)) => error = Some(error_text(&f)),
                Ok(BackendMessage::ReadyForQuery(status)) => {
                    return match error {
                        Some(e) => Err(e),
                        None if status == TransactionStatus::Idle => Ok(rows),
                        None => Err("the server stayed in a transaction".into()),
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Parks it in its pool, still registered with this thread's event loop.
    pub fn idle(self) -> Idle {
        let ServerConn { stream, buf, session, born } = self;
        let stream = Parked::Homed { home: crate::workers::current(), stream };
        Idle { stream, buf, session, born }
    }
}

impl Parked {
    /// The socket, deregistered from its home's event loop first if it has one; `None` when that
    /// failed (the socket is then closed).
    fn loose(&mut self) -> Option<&mut std::net::TcpStream> {
        if matches!(self, Parked::Homed { .. }) {
            let Parked::Homed { stream, .. } = std::mem::replace(self, Parked::Gone) else {
                unreachable!("matched above")
            };
            *self = Parked::Loose(stream.into_std().ok()?);
        }
        match self {
            Parked::Loose(s) => Some(s),
            _ => None,
        }
    }
}

impl Idle {
    /// When it was opened.
    pub fn born(&self) -> Instant {
        self.born
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.session.target.pid
    }

    /// The parameters the server reported at login.
    pub fn welcome(&self) -> &[(String, String)] {
        &self.session.welcome
    }

    /// Whether it is registered with the calling thread's event loop (a worker's).
    pub fn at_home(&self) -> bool {
        matches!(&self.stream, Parked::Homed { home: Some(h), .. } if crate::workers::current() == Some(*h))
    }

    /// Reads what the server sent while idle, without waiting: false when the connection is dead
    /// (closed, an error such as an administrator's termination, or garbage). Notices, parameter
    /// reports and notifications are dropped: no client owns them.
    pub fn drain(&mut self) -> bool {
        let at_home = self.at_home();
        let alive = match &mut self.stream {
            Parked::Homed { stream, .. } if at_home => {
                // Read only when the loop has seen the socket readable (or closed) since the last
                // read came up short; else there is nothing to read. `try_io` looks at that
                // readiness without registering a waker (a lock) as a poll would.
                let buf = &mut self.buf;
                let read = stream.try_io(Interest::READABLE, || Ok(read_available(buf, |c| stream.try_read(c))));
                read.unwrap_or(true)
            }
            _ => match self.stream.loose() {
                Some(stream) => read_available(&mut self.buf, |chunk| stream.read(chunk)),
                None => false,
            },
        };
        if !alive {
            return false;
        }
        loop {
            match split_frame(&mut self.buf, DEFAULT_MAX_FRAME_LEN) {
                Ok(None) => return true,
                Ok(Some(f)) => match f.tag() {
                    b'S' => {
                        if let Ok(BackendMessage::ParameterStatus(p)) = BackendMessage::parse(&f) {
                            self.session.params.set(&p.name, &p.value);
                        }
                    }
                    b'N' | b'A' => {}
                    _ => return false,
                },
                Err(_) => return false,
            }
        }
    }

    /// An idle connection over `stream` (a test's socket pair), server pid `pid`.
    #[cfg(test)]
    pub(crate) fn for_test(stream: std::net::TcpStream, pid: u32) -> Idle {
        stream.set_nonblocking(true).expect("non-blocking");
        let key = crate::cancel::CancelKey::new(vec![0u8; 4]).expect("four bytes");
        Idle {
            stream: Parked::Loose(stream),
            buf: BytesMut::new(),
            session: Box::new(ServerSession {
                params: Params::default(),
                welcome: vec![("server_version".into(), "15.0".into())],
                statements: ServerStatements::default(),
                target: Arc::new(BackendTarget { addr: "127.0.0.1:5432".into(), pid, key }),
            }),
            born: Instant::now(),
        }
    }

    /// Hands it to a client of the calling thread: registered with its event loop (moved there
    /// when its home is another's).
    pub fn lease(self) -> std::io::Result<ServerConn> {
        let at_home = self.at_home();
        let Idle { stream, buf, session, born } = self;
        let stream = match stream {
            Parked::Homed { stream, .. } if at_home => stream,
            Parked::Homed { stream, .. } => TcpStream::from_std(stream.into_std()?)?,
            Parked::Loose(s) => TcpStream::from_std(s)?,
            Parked::Gone => return Err(std::io::Error::other("the connection is closed")),
        };
        Ok(ServerConn { stream, buf, session, born })
    }

    /// Closes it politely (Terminate, without waiting), from any thread.
    pub fn close(mut self) {
        if let Some(s) = self.stream.loose() {
            terminate(s);
        }
    }

    /// Closes it politely and waits, at most `bound`, until the server closed its end: its
    /// backend has then exited (PostgreSQL closes the socket after the backend left
    /// `pg_stat_activity` and gave back its `max_connections` slot). A connection closed to make
    /// room for another (`max_db_connections`) must be gone before that one is opened. Called on
    /// a tokio runtime.
    pub async fn close_and_wait(mut self, bound: Duration) {
        let Some(s) = self.stream.loose() else { return };
        if !terminate(s) {
            return;
        }
        let Parked::Loose(s) = std::mem::replace(&mut self.stream, Parked::Gone) else { return };
        let Ok(mut s) = s.set_nonblocking(true).and_then(|()| TcpStream::from_std(s)) else { return };
        let mut sink = [0u8; 1024];
        let gone = async {
            // Whatever it still says (nothing, normally) until the end of the stream.
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        if tokio::time::timeout(bound, gone).await.is_err() {
            tracing::debug!(
                server = self.session.target.pid,
                "a closed server connection did not end within {bound:?}"
            );
        }
    }
}

/// Says goodbye to the server (Terminate): false when the socket is already broken.
fn terminate(s: &mut std::net::TcpStream) -> bool {
    use std::io::Write;
    s.write_all(Frame::new(b'X', b"").as_bytes()).is_ok()
}

/// Reads with `read` into `buf` until it would block: false when the peer closed or the read
/// failed.
fn read_available(buf: &mut BytesMut, mut read: impl FnMut(&mut [u8]) -> std::io::Result<usize>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// The server's message of an error, with its SQLSTATE.
fn error_text(f: &ErrorFields) -> String {
    format!("{} {}", f.code().unwrap_or("?????"), f.message().unwrap_or("(no message)"))
}

/// A DataRow's columns in text format (`None` for NULL); `None` when malformed.
pub(crate) fn columns(body: &[u8]) -> Option<Vec<Option<String>>> {
    let count = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = crate::wire::u32_at(body, at)? as i32;
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let v = body.get(at..at + len as usize)?;
            at += len as usize;
            out.push(Some(String::from_utf8_lossy(v).into_owned()));
        }
    }
    (at == body.len()).then_some(out)
}

/// Reads one whole frame from the server.
async fn next_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Frame, String> {
    loop {
        match split_frame(buf, DEFAULT_MAX_FRAME_LEN) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(format!("bad message from the server: {e}")),
        }
        match stream.read_buf(buf).await {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (a, l.accept().unwrap().0)
    }

    #[tokio::test]
    async fn a_connection_closed_to_make_room_is_waited_for_until_its_server_is_gone() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        // The server reads the Terminate, takes its time to exit, then closes its end.
        let (ours, mut server) = pair();
        let exited = Arc::new(AtomicBool::new(false));
        let flag = exited.clone();
        let backend = std::thread::spawn(move || {
            let mut got = [0u8; 5];
            server.read_exact(&mut got).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            flag.store(true, Ordering::SeqCst);
            drop(server);
            got
        });
        Idle::for_test(ours, 1).close_and_wait(Duration::from_secs(30)).await;
        assert!(exited.load(Ordering::SeqCst), "returned only once the server closed its end");
        assert_eq!(&backend.join().unwrap(), b"X\0\0\0\x04", "Terminate was sent");

        // A server that never closes its end: the wait ends at its bound.
        let (ours, mut server) = pair();
        Idle::for_test(ours, 2).close_and_wait(Duration::from_millis(50)).await;
        let mut got = [0u8; 5];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"X\0\0\0\x04");
    }

    #[test]
    fn what_an_idle_server_said_is_judged_before_it_is_handed_out() {
        // Notices, parameter reports and notifications are dropped; the connection stays usable.
        let (ours, mut server) = pair();
        let mut idle = Idle::for_test(ours, 1);
        let mut chatter = BytesMut::new();
        crate::frame::put_frame(&mut chatter, b'S', |d| {
            crate::wire::put_cstr(d, b"TimeZone");
            crate::wire::put_cstr(d, b"UTC");
        });
        crate::frame::put_frame(&mut chatter, b'N', |d| d.extend_from_slice(b"SNOTICE\0\0"));
        server.write_all(&chatter).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(idle.drain(), "chatter is no reason to drop it");
        assert_eq!(idle.session.params.get("TimeZone"), Some("UTC"), "its parameters are followed");
        // An error (a termination) or a close means it is dead.
        let mut fatal = BytesMut::new();
        crate::backend::ErrorResponse::new(crate::backend::Severity::Fatal, SqlState::ADMIN_SHUTDOWN, "bye")
            .encode(&mut fatal);
        server.write_all(&fatal).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!idle.drain());
        let (ours, server) = pair();
        let mut closed = Idle::for_test(ours, 2);
        drop(server);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!closed.drain());
    }

    #[test]
    fn at_home_an_idle_connection_is_judged_from_the_event_loop_and_moves_to_another_loop() {
        crate::workers::become_worker_for_test();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (ours, mut server) = pair();
        let idle = rt.block_on(async {
            let mut idle = Idle::for_test(ours, 1).lease().unwrap().idle();
            assert!(idle.at_home(), "parked on this worker's loop");
            assert!(idle.drain(), "nothing said");
            let mut chatter = BytesMut::new();
            crate::frame::put_frame(&mut chatter, b'S', |d| {
                crate::wire::put_cstr(d, b"TimeZone");
                crate::wire::put_cstr(d, b"UTC");
            });
            server.write_all(&chatter).unwrap();
            // The loop turns and sees the socket readable.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(idle.drain());
            assert_eq!(idle.session.params.get("TimeZone"), Some("UTC"), "read although nothing was read by hand");
            let mut conn = idle.lease().unwrap();
            conn.stream.write_all(b"at home").await.unwrap();
            conn.idle()
        });
        let mut got = [0u8; 7];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"at home");
        // Another thread's loop (no worker's) takes it: it moves there and works.
        std::thread::spawn(move || {
            assert!(!idle.at_home());
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut idle = idle;
                assert!(idle.drain());
                let mut conn = idle.lease().unwrap();
                conn.stream.write_all(b"moved").await.unwrap();
            });
        })
        .join()
        .unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"moved");
        drop(rt);
    }
}
