//! Asking another member for its status (`GET <api_url>`, its `/patroni` endpoint), as Patroni does
//! before it accepts a switchover: a candidate that does not answer within the timeout is not a
//! candidate.
//!
//! Invariants kept here:
//! * one attempt, bounded as a whole (connect, TLS, request, body) by the caller's timeout, and a
//!   body of at most [`MAX_STATUS_BYTES`], so a stuck or hostile member cannot hold a request;
//! * `https://` URLs are checked with the peer TLS configuration (see [`crate::tls`]); without
//!   one they fail rather than being fetched unverified.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::backend::BoxFuture;

/// Largest status body read from a member.
pub const MAX_STATUS_BYTES: usize = 256 * 1024;

/// Fetches a member's status JSON.
pub trait MemberProbe: Send + Sync + 'static {
    /// `GET api_url`, parsed as JSON; `Err` with a reason when there is no usable answer within
    /// `timeout`.
    fn fetch(&self, api_url: &str, timeout: Duration) -> BoxFuture<'_, Result<Value, String>>;
}

/// The real probe: HTTP/1.1 over TCP, or over TLS for `https://` URLs.
#[derive(Clone, Debug)]
pub struct HttpProbe {
    tls: Option<Arc<ClientConfig>>,
}

impl HttpProbe {
    /// A probe that can reach `https://` members when `tls` is given.
    pub fn new(tls: Option<Arc<ClientConfig>>) -> Self {
        HttpProbe { tls }
    }

    async fn get(&self, api_url: &str) -> Result<Value, String> {
        let uri: Uri = api_url.parse().map_err(|e| format!("bad api_url {api_url:?}: {e}"))?;
        let host = uri.host().ok_or_else(|| format!("no host in api_url {api_url:?}"))?;
        // `Uri::host` keeps IPv6 brackets; connecting and certificate names need the bare address.
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") | None => false,
            Some(other) => return Err(format!("unsupported scheme {other:?}")),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| host.to_string());
        let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let tcp = TcpStream::connect((bare.as_str(), port)).await.map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        if !https {
            return request(tcp, &authority, &path).await;
        }
        let config = self.tls.clone().ok_or("https member but no TLS settings to verify it with")?;
        let name = ServerName::try_from(bare).map_err(|e| format!("server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        request(tls, &authority, &path).await
    }
}

async fn request<IO>(io: IO, authority: &str, path: &str) -> Result<Value, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| format!("HTTP: {e}"))?;
    // The connection task ends when the response has been read and `sender` is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
    // Patroni reads the body whatever the status: health paths answer 503 with a full status.
    let body = Limited::new(resp.into_body(), MAX_STATUS_BYTES).collect().await.map_err(|e| format!("body: {e}"))?;
    serde_json::from_slice(&body.to_bytes()).map_err(|e| format!("not JSON: {e}"))
}

impl MemberProbe for HttpProbe {
    fn fetch(&self, api_url: &str, timeout: Duration) -> BoxFuture<'_, Result<Value, String>> {
        let api_url = api_url.to_string();
        Box::pin(async move {
            match tokio::time::timeout(timeout, self.get(&api_url)).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-shot server answering every connection with `reply` (after `delay`).
    async fn serve_once(reply: &'static str, delay: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}/patroni")
    }

    #[tokio::test]
    async fn fetches_json_and_bounds_time() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"state\":\"ok\"}";
        let url = serve_once(ok, Duration::ZERO).await;
        let probe = HttpProbe::new(None);
        let v = probe.fetch(&url, Duration::from_secs(2)).await.unwrap();
        assert_eq!(v["state"], "ok");

        let url = serve_once(ok, Duration::from_secs(5)).await;
        let started = std::time::Instant::now();
        let e = probe.fetch(&url, Duration::from_millis(100)).await.unwrap_err();
        assert!(e.contains("no answer"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));

        let url = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", Duration::ZERO).await;
        assert!(probe.fetch(&url, Duration::from_secs(2)).await.unwrap_err().contains("not JSON"));
        assert!(probe.fetch("https://127.0.0.1:1/patroni", Duration::from_secs(1)).await.is_err());
        assert!(probe.fetch("ftp://x/", Duration::from_secs(1)).await.is_err());
    }
}
