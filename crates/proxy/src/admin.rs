//! The admin HTTP port (`proxy.listen_admin`): `/metrics` (Prometheus), `/stats.json` and
//! `/stats` (an HTML page for people), served with hyper over HTTP/1.1 and 1.0.
//!
//! Rendering lives in the private modules `admin_view` (the member table), `admin_metrics`,
//! `admin_json` and `admin_html`, all pure; this module only binds, serves and
//! routes requests to them.
//!
//! Invariants:
//! * read-only: only GET is answered (405 for any other method on a known path, 404 for an
//!   unknown path), request bodies are never read, and nothing here can change the proxy;
//! * one request renders from one [`Stats`] snapshot, one [`PoolsView`] and one copy of the
//!   routes, so the numbers on a page belong together;
//! * a slow or hostile client is bounded as on the REST API: a request head must arrive within
//!   `header_read_timeout` (which also bounds an idle keep-alive connection), a connection lives
//!   at most `connection_lifetime`, and at most `max_connections` are served at once;
//! * accept errors are logged and retried, never fatal; on shutdown the listener closes at once
//!   and open connections get `shutdown_grace` to finish;
//! * every answer forbids caching and the page may load nothing and run nothing
//!   (`Content-Security-Policy: default-src 'none'`), a second line of defence behind escaping.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::admin_view::overview;
use crate::clients::Clients;
use crate::pools::Pools;
use crate::pools_view::PoolsView;
use crate::stats::Stats;
use crate::topology::{Policy, Routes};
use crate::{admin_html, admin_json, admin_metrics};

/// What the admin port reads: the statistics, the routes in force, the pools and the facts to
/// show with them.
#[derive(Debug)]
pub struct Admin {
    /// The cluster's scope, shown on the page.
    pub scope: String,
    /// The proxy's counters and last DCS view.
    pub stats: Arc<Stats>,
    /// The routes sessions are using now.
    pub routes: watch::Receiver<Routes>,
    /// The routing policy (its default ttl judges a view without dynamic configuration).
    pub policy: Policy,
    /// The server connection pools (transaction mode), as the sessions use them.
    pub pools: Arc<Pools>,
    /// The pooled clients and each database's counters, as the sessions update them.
    pub clients: Arc<Clients>,
    /// Read/write splitting on the read-write port, when on.
    pub split: Option<Arc<crate::split::state::Splitting>>,
    /// The proxies' virtual address as this proxy keeps it (`proxy.vip`), when configured.
    pub vip: Option<watch::Receiver<VipFigures>>,
}

/// The proxies' virtual address (`proxy.vip`) as this proxy keeps it: what `/metrics` and
/// `/stats.json` show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VipFigures {
    /// The address.
    pub address: String,
    /// Whether this proxy's host has it now.
    pub held: bool,
    /// Times this proxy took it or gave it up since it started.
    pub changes: u64,
    /// The proxy id the cluster's claim names (this proxy's own, another's, or none), as last
    /// read.
    pub holder: Option<String>,
    /// This proxy's id.
    pub me: String,
}

/// The admin address could not be bound. The cause is the error's source, so error chains
/// print it once: `admin port: listening on 127.0.0.1:8080: Address already in use`.
#[derive(Debug, thiserror::Error)]
#[error("admin port: listening on {addr}")]
pub struct BindError {
    /// The address from `proxy.listen_admin`.
    pub addr: String,
    /// Why (typically: address in use).
    #[source]
    pub source: std::io::Error,
}

/// Binds the admin listener, so that a port in use is an error at start naming the address.
pub async fn bind(addr: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError { addr: addr.to_string(), source })
}

/// Resource limits of the admin server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time allowed to receive a request head, and to wait idle for the next one.
    pub header_read_timeout: Duration,
    /// Longest life of one connection; then it is closed after its current request.
    pub connection_lifetime: Duration,
    /// Connections served at the same time; more wait in the listen backlog.
    pub max_connections: usize,
    /// Time open connections get to finish when the server stops.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // A scraper and a few people with the page open: far fewer slots than the REST API.
        Limits {
            header_read_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(120),
            max_connections: 32,
            shutdown_grace: Duration::from_secs(1),
        }
    }
}

/// Serves `admin` on `listener` until `shutdown` completes, with [`Limits::default`].
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    serve_with_limits(listener, admin, shutdown, Limits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with_limits(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
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
            Ok((stream, _)) => {
                connections.spawn(serve_connection(stream, admin.clone(), limits, stop_rx.clone(), slot));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("admin port: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(limits.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        connections.shutdown().await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    admin: Arc<Admin>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let reply = admin.answer(req.method(), req.uri().path());
        async move { Ok::<_, Infallible>(reply) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(16 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("admin port connection: {e}");
            }
            return;
        }
        _ = stop.wait_for(|stopping| *stopping) => {}
        _ = tokio::time::sleep(limits.connection_lifetime) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.shutdown_grace, conn).await;
}

/// The known paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    Metrics,
    Json,
    Html,
}

impl Admin {
    /// The answer to `method path` (the query string, if any, is ignored).
    pub fn answer(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let page = match path {
            "/metrics" => Page::Metrics,
            "/stats.json" => Page::Json,
            "/stats" => Page::Html,
            _ => {
                return reply(
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "not found; this port serves /stats, /stats.json and /metrics\n".into(),
                )
            }
        };
        if method != Method::GET {
            let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "only GET\n".into());
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
            return r;
        }
        let snapshot = self.stats.snapshot();
        let routes = self.routes.borrow().clone();
        let pools = PoolsView::take(&self.pools, &self.clients);
        let o = overview(&self.scope, &snapshot, &routes, self.policy);
        let split = self.split.as_ref().map(|s| s.figures());
        let vip = self.vip.as_ref().map(|v| v.borrow().clone());
        let (content_type, body) = match page {
            Page::Metrics => {
                let mut text = admin_metrics::metrics_text(&snapshot, &o, &pools);
                if let Some(f) = &split {
                    text.push_str(&admin_metrics::split_metrics_text(f));
                }
                if let Some(v) = &vip {
                    text.push_str(&admin_metrics::vip_metrics_text(v));
                }
                (admin_metrics::CONTENT_TYPE, text)
            }
            Page::Json => {
                let mut json = admin_json::stats_json(&snapshot, &o, &pools, split.as_ref());
                if let Some(v) = &vip {
                    json["vip"] = admin_json::vip_json(v);
                }
                (admin_json::CONTENT_TYPE, json.to_string())
            }
            Page::Html => (admin_html::CONTENT_TYPE, admin_html::stats_html(&snapshot, &o, &pools, split.as_ref())),
        };
        reply(StatusCode::OK, content_type, body)
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Counters change every second: a cached copy is a wrong copy.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_view::tests::{cluster, POLICY};
    use crate::session::Port;
    use crate::topology;
    use http_body_util::BodyExt;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn admin() -> (Arc<Admin>, watch::Sender<Routes>) {
        let stats = Arc::new(Stats::default());
        let c = cluster();
        stats.set_view(&c, tokio::time::Instant::now());
        let (tx, routes) = watch::channel(topology::routes(&c, Duration::ZERO, POLICY, 0, None));
        let admin = Admin {
            scope: "pg".into(),
            stats,
            routes,
            policy: POLICY,
            pools: Arc::default(),
            clients: Arc::default(),
            split: None,
            vip: None,
        };
        (Arc::new(admin), tx)
    }

    async fn body(r: Response<Full<Bytes>>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn routing_of_requests() {
        let (admin, routes) = admin();
        let r = admin.answer(&Method::GET, "/metrics");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; version=0.0.4; charset=utf-8");
        assert!(body(r).await.contains("rampart_proxy_primary_route 1\n"));
        let r = admin.answer(&Method::GET, "/stats.json");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_str(&body(r).await).unwrap();
        assert_eq!(v["leader"], "a");
        let r = admin.answer(&Method::GET, "/stats");
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(r.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().starts_with("default-src 'none'"));
        assert!(body(r).await.contains("<dd id=\"leader\">a</dd>"));

        let r = admin.answer(&Method::POST, "/metrics");
        assert_eq!(
            (r.status(), &r.headers()[ALLOW]),
            (StatusCode::METHOD_NOT_ALLOWED, &HeaderValue::from_static("GET"))
        );
        assert_eq!(admin.answer(&Method::HEAD, "/stats").status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(admin.answer(&Method::GET, "/").status(), StatusCode::NOT_FOUND);
        assert_eq!(admin.answer(&Method::DELETE, "/nope").status(), StatusCode::NOT_FOUND);

        // The routes in force are read per request.
        routes.send_replace(Routes::default());
        assert!(body(admin.answer(&Method::GET, "/metrics")).await.contains("rampart_proxy_primary_route 0\n"));
        let _guard = admin.stats.connected(
            &topology::Backend { name: "b".into(), host: "h".into(), port: 1, weight: 1000 },
            Port::ReadOnly,
        );
        assert!(body(admin.answer(&Method::GET, "/metrics"))
            .await
            .contains("rampart_proxy_connections_active{backend=\"b\",port=\"ro\"} 1\n"));
        // So are the pooled clients and their databases' counters.
        let client = admin.clients.register("app", "db", "127.0.0.1:1", false);
        crate::clients::DbStats::add(&client.info.stats.queries, 3);
        assert!(body(admin.answer(&Method::GET, "/metrics"))
            .await
            .contains("rampart_proxy_stats_queries_pooled_total{database=\"db\"} 3\n"));
        let v: serde_json::Value =
            serde_json::from_str(&body(admin.answer(&Method::GET, "/stats.json")).await).unwrap();
        assert_eq!(v["pool_stats"][0]["queries"], 3);
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.expect("closed in time").ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn serves_over_tcp_and_stops() {
        let (admin, _routes) = admin();
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let err = bind(&addr.to_string()).await.unwrap_err();
        assert_eq!(err.to_string(), format!("admin port: listening on {addr}"));
        assert_eq!(err.source.kind(), std::io::ErrorKind::AddrInUse);

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, admin, async move {
            let _ = stop_rx.await;
        }));
        let reply = exchange(addr, b"GET /stats.json?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
        assert!(reply.contains("\"leader\":\"a\""), "{reply}");
        let reply = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 200") && reply.contains("cache-control: no-store"), "{reply}");
        let reply = exchange(addr, b"NOT HTTP\r\n\r\n").await;
        assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 400"), "{reply:?}");

        // A client that never sends its request head does not keep the server from stopping.
        let _idle = TcpStream::connect(addr).await.unwrap();
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("stopped in time").unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }
}
