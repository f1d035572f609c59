//! Serving the router on a TCP listener with hyper (HTTP/1.1 and 1.0), over plain TCP or, when the
//! context's [`crate::Security`] carries a server TLS configuration, over TLS only, with limits
//! that keep slow or hostile clients from pinning resources.
//!
//! Invariants kept here:
//! * every request carries a [`PeerInfo`] extension (client address, verified client certificate)
//!   for the access checks of the write endpoints;
//! * the TLS handshake runs in the connection's own task under `header_read_timeout`, so a client
//!   that never finishes it holds one connection slot for that long and never stalls accepting;
//! * a client gets at most `header_read_timeout` to send each request head (this also bounds an
//!   idle keep-alive connection), and a connection lives at most `connection_lifetime` before it
//!   is closed after its current request, so a slow reader or writer cannot hold a slot for long;
//! * at most `max_connections` connections are served at once; further clients wait in the
//!   listen backlog rather than costing memory;
//! * request bodies are capped at [`MAX_BODY_BYTES`] for any handler that reads them;
//! * garbage that is not HTTP only ever affects its own connection (hyper answers 400 and closes);
//! * accept errors (e.g. out of file descriptors) are logged and retried, never fatal;
//! * the TLS configuration is taken from the security settings in force when a connection is
//!   accepted, so reloaded certificates (or HTTPS turned on or off) apply from the next one;
//! * on shutdown the listener is dropped at once and open connections get `shutdown_grace` to
//!   finish their current request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::access::PeerInfo;
use crate::context::ApiContext;
use crate::router::{router, MAX_BODY_BYTES};

/// Resource limits of the HTTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Time allowed to receive a request head, and to wait idle for the next one on a
    /// keep-alive connection.
    pub header_read_timeout: Duration,
    /// Longest life of one connection; after it the connection is closed once its current
    /// request is answered (or dropped if that takes longer than `shutdown_grace`).
    pub connection_lifetime: Duration,
    /// Connections served at the same time.
    pub max_connections: usize,
    /// Time open connections get to finish when the server stops.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(120),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Serves the REST API on `listener` until `shutdown` completes, with [`ServeLimits::default`].
pub async fn serve(
    listener: TcpListener,
    ctx: ApiContext,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, ctx, shutdown, ServeLimits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with_limits(
    listener: TcpListener,
    ctx: ApiContext,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
) -> std::io::Result<()> {
    // Read per connection, so a reload of the certificates applies to the next handshake.
    let security = ctx.security.clone();
    let app = router(ctx);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let tls = security.current().server_tls.clone().map(TlsAcceptor::from);
                let conn = Connection { stream, peer, tls };
                connections.spawn(serve_connection(conn, app.clone(), limits, stop_rx.clone(), slot));
            }
            Err(e) if is_per_connection(&e) => tracing::debug!("REST API: accept: {e}"),
            Err(e) => {
                // Typically EMFILE/ENFILE: back off instead of spinning, then try again.
                tracing::warn!("REST API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(limits.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::debug!("REST API: dropping {} connection(s) still open after the grace period", connections.len());
        connections.shutdown().await;
    }
    Ok(())
}

fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock)
}

/// An accepted connection, before any TLS handshake.
struct Connection {
    stream: TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<TlsAcceptor>,
}

async fn serve_connection(
    conn: Connection,
    app: axum::Router,
    limits: ServeLimits,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let Connection { stream, peer, tls } = conn;
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        let info = PeerInfo { addr: peer, client_cert: false };
        return serve_http(stream, info, app, limits, stop).await;
    };
    let tls_stream = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // Includes clients without a required certificate: rustls refused the handshake.
            tracing::debug!("REST API: TLS handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("REST API: TLS handshake with {peer} timed out");
            return;
        }
    };
    // rustls only keeps a client certificate it verified against `cafile`.
    let client_cert = tls_stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
    serve_http(tls_stream, PeerInfo { addr: peer, client_cert }, app, limits, stop).await;
}

async fn serve_http<IO>(io: IO, peer: PeerInfo, app: axum::Router, limits: ServeLimits, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(|b| Body::new(http_body_util::Limited::new(b, MAX_BODY_BYTES)));
        req.extensions_mut().insert(peer);
        app.clone().oneshot(req)
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(16 * 1024);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("REST API connection: {e}");
            }
            return;
        }
        _ = stop.wait_for(|stopping| *stopping) => {}
        _ = tokio::time::sleep(limits.connection_lifetime) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.shutdown_grace, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::tests::primary;
    use std::net::SocketAddr;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    type Running = (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>);

    fn context() -> ApiContext {
        let (_tx, rx) = watch::channel(primary(Instant::now() + Duration::from_secs(600)));
        // Keep the sender alive for the server's whole life by moving it into the probe.
        ApiContext::new(rx, move || {
            let _keep = &_tx;
            true
        })
    }

    async fn start(limits: ServeLimits) -> Running {
        start_with(context(), limits).await
    }

    async fn start_with(ctx: ApiContext, limits: ServeLimits) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_with_limits(
            listener,
            ctx,
            async move {
                let _ = stop_rx.await;
            },
            limits,
        ));
        (addr, stop_tx, server)
    }

    /// Sends `request` and reads until the server closes the connection.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("server closed in time")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn garbage_does_not_disturb_later_requests() {
        let (addr, stop, server) = start(ServeLimits::default()).await;
        let reply = exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n").await;
        assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 400"), "{reply:?}");
        let reply = exchange(addr, b"NOT HTTP AT ALL\r\n\r\n").await;
        assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 400"), "{reply:?}");

        let reply = exchange(addr, b"GET /primary HTTP/1.0\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply:?}");
        assert!(reply.contains("\"role\":\"primary\""), "{reply:?}");
        // HAProxy's default check: OPTIONS / over HTTP/1.0, status line and no body.
        let reply = exchange(addr, b"OPTIONS / HTTP/1.0\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply:?}");
        assert!(reply.ends_with("\r\n\r\n"), "{reply:?}");
        let reply = exchange(addr, b"HEAD /replica HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply:?}");
        assert!(reply.ends_with("\r\n\r\n"), "{reply:?}");

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn slow_clients_are_cut_off() {
        let limits = ServeLimits { header_read_timeout: Duration::from_millis(200), ..ServeLimits::default() };
        let (addr, stop, server) = start(limits).await;
        let started = Instant::now();
        // Half a request head, then silence.
        let reply = exchange(addr, b"GET /primary HTTP/1.1\r\nHost: x\r\n").await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!reply.contains("200 OK"), "{reply:?}");
        // Healthy clients are still served.
        let reply = exchange(addr, b"GET /health HTTP/1.0\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply:?}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn connection_cap_queues_instead_of_failing() {
        let limits = ServeLimits {
            max_connections: 1,
            header_read_timeout: Duration::from_millis(300),
            ..ServeLimits::default()
        };
        let (addr, stop, server) = start(limits).await;
        // An idle connection holds the only slot until its header timeout ends it...
        let _idle = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...after which the waiting client is served.
        let reply = exchange(addr, b"GET /leader HTTP/1.0\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply:?}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_stops_listening_and_closes_idle_connections() {
        let (addr, stop, server) = start(ServeLimits::default()).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        // Make sure the server has accepted it.
        idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        idle.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve returned").unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }

    mod tls {
        use super::*;
        use crate::security::{Security, SecuritySettings};
        use crate::tls::{ring_provider, ClientCertMode, TlsSettings};
        use crate::{HttpProbe, MemberProbe};
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use rustls::{ClientConfig, RootCertStore};
        use rustls_pki_types::{PrivateKeyDer, ServerName};
        use std::path::PathBuf;

        struct Pki {
            _dir: tempfile::TempDir,
            ca: PathBuf,
            server_cert: PathBuf,
            server_key: PathBuf,
            ca_der: rustls_pki_types::CertificateDer<'static>,
            client_cert: rustls_pki_types::CertificateDer<'static>,
            client_key: Vec<u8>,
        }

        /// A CA made for the test, a server certificate for localhost/127.0.0.1 and a client
        /// certificate, both signed by it.
        fn pki() -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
            let issue = |names: &[&str]| {
                let key = KeyPair::generate().unwrap();
                let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
                (cert, key)
            };
            let (server, server_key) = issue(&["localhost", "127.0.0.1"]);
            let (client, client_key) = issue(&["rampart-client"]);
            let write = |name: &str, text: String| {
                let p = dir.path().join(name);
                std::fs::write(&p, text).unwrap();
                p
            };
            Pki {
                ca: write("ca.pem", ca.pem()),
                server_cert: write("server.pem", server.pem()),
                server_key: write("server.key", server_key.serialize_pem()),
                ca_der: ca.der().clone(),
                client_cert: client.der().clone(),
                client_key: client_key.serialize_der(),
                _dir: dir,
            }
        }

        fn client(pki: &Pki, with_cert: bool) -> Arc<ClientConfig> {
            let mut roots = RootCertStore::empty();
            roots.add(pki.ca_der.clone()).unwrap();
            let b = ClientConfig::builder_with_provider(ring_provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
            let cfg = if with_cert {
                let key = PrivateKeyDer::try_from(pki.client_key.clone()).unwrap();
                b.with_client_auth_cert(vec![pki.client_cert.clone()], key).unwrap()
            } else {
                b.with_no_client_auth()
            };
            Arc::new(cfg)
        }

        /// One request over TLS; whatever was received before the connection ended (a refused
        /// handshake shows up as an error or as nothing received).
        async fn tls_exchange(addr: SocketAddr, cfg: Arc<ClientConfig>, request: &str) -> std::io::Result<String> {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let mut s = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await?;
            s.write_all(request.as_bytes()).await?;
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("in time") {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if out.is_empty() => return Err(e),
                    Err(_) => break,
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }

        async fn secured(pki: &Pki, mode: ClientCertMode) -> (Running, Security) {
            let settings = SecuritySettings {
                tls: Some(TlsSettings {
                    certfile: pki.server_cert.clone(),
                    keyfile: Some(pki.server_key.clone()),
                    cafile: Some(pki.ca.clone()),
                    verify_client: mode,
                }),
                ..Default::default()
            };
            let security = Security::prepare(&settings).await.unwrap();
            let running = start_with(context().with_security(security.clone()), ServeLimits::default()).await;
            (running, security)
        }

        const GET: &str = "GET /patroni HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        const RELOAD: &str =
            "POST /reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

        #[tokio::test]
        async fn required_client_certificates() {
            let pki = pki();
            let ((addr, stop, server), security) = secured(&pki, ClientCertMode::Required).await;
            let reply = tls_exchange(addr, client(&pki, true), GET).await.unwrap();
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
            assert!(reply.contains("\"role\":\"primary\""), "{reply:?}");

            // Without a certificate the handshake is refused: no HTTP answer at all.
            let refused = tls_exchange(addr, client(&pki, false), GET).await;
            assert!(refused.as_deref().map_or(true, |r| !r.contains("HTTP/1.1")), "{refused:?}");
            // Plain HTTP on the TLS port gets nothing either.
            let plain = exchange(addr, b"GET /patroni HTTP/1.0\r\n\r\n").await;
            assert!(!plain.contains("200"), "{plain:?}");

            // Peer requests (switchover candidate checks) present our certificate and verify
            // theirs against the CA.
            let probe = HttpProbe::new(security.peer_tls.clone());
            let status =
                probe.fetch(&format!("https://127.0.0.1:{}/patroni", addr.port()), Duration::from_secs(5)).await;
            assert_eq!(status.unwrap()["role"], "primary");
            let status = HttpProbe::new(None)
                .fetch(&format!("https://127.0.0.1:{}/patroni", addr.port()), Duration::from_secs(5))
                .await;
            assert!(status.is_err());

            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        }

        #[tokio::test]
        async fn replaced_settings_apply_from_the_next_connection() {
            let pki = pki();
            let ctx = context();
            let handle = ctx.security.clone();
            let (addr, stop, server) = start_with(ctx, ServeLimits::default()).await;
            let reload = b"POST /reload HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
            // Open access: the write gets past access control (503: no backend attached).
            assert!(exchange(addr, reload).await.starts_with("HTTP/1.0 503"));

            let auth = crate::BasicAuth::new("admin", "new-secret");
            let with_auth = SecuritySettings { authentication: Some(auth.clone()), ..Default::default() };
            handle.replace(Security::prepare(&with_auth).await.unwrap());
            let reply = exchange(addr, reload).await;
            assert!(reply.starts_with("HTTP/1.0 401"), "{reply:?}");
            let authorized =
                format!("POST /reload HTTP/1.0\r\nAuthorization: {}\r\nContent-Length: 0\r\n\r\n", auth.header_value());
            assert!(exchange(addr, authorized.as_bytes()).await.starts_with("HTTP/1.0 503"));

            // HTTPS from now on: plain HTTP gets no answer, a TLS client does.
            let tls = TlsSettings {
                certfile: pki.server_cert.clone(),
                keyfile: Some(pki.server_key.clone()),
                cafile: Some(pki.ca.clone()),
                verify_client: ClientCertMode::None,
            };
            handle.replace(Security::prepare(&SecuritySettings { tls: Some(tls), ..with_auth }).await.unwrap());
            let plain = exchange(addr, b"GET /patroni HTTP/1.0\r\n\r\n").await;
            assert!(!plain.contains("200"), "{plain:?}");
            let reply = tls_exchange(addr, client(&pki, false), GET).await.unwrap();
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
            let reply = tls_exchange(addr, client(&pki, false), RELOAD).await.unwrap();
            assert!(reply.starts_with("HTTP/1.1 401"), "{reply:?}");
            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        }

        #[tokio::test]
        async fn optional_client_certificates_guard_writes() {
            let pki = pki();
            let ((addr, stop, server), _) = secured(&pki, ClientCertMode::Optional).await;
            let reply = tls_exchange(addr, client(&pki, false), GET).await.unwrap();
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
            let reply = tls_exchange(addr, client(&pki, false), RELOAD).await.unwrap();
            assert!(reply.starts_with("HTTP/1.1 403"), "{reply:?}");
            assert!(reply.ends_with("client certificate required"), "{reply:?}");
            // With a certificate the request gets past access control (503: no backend attached).
            let reply = tls_exchange(addr, client(&pki, true), RELOAD).await.unwrap();
            assert!(reply.starts_with("HTTP/1.1 503"), "{reply:?}");
            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        }
    }
}
