//! Asking another member for its status (`GET <api_url>`, its `/patroni` endpoint), as Patroni does
//! before it accepts a switchover: a candidate that does not answer within the timeout is not a
//! candidate.
//!
//! Invariants kept here:
//! * one attempt, bounded as a whole (connect, TLS, request, body) by the caller's timeout, and a
//!   body of at most [`MAX_STATUS_BYTES`], so a stuck or hostile member cannot hold a request;
//! * `https://` URLs are checked with the peer TLS configuration (see [`crate::tls`]); without
//!   one they fail rather than being fetched unverified.
//! * The same client carries the leader's `POST /failsafe` in failsafe mode, with the REST
//!   credentials when the members require them; the credentials are never part of an error.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::backend::BoxFuture;
use crate::security::SecurityHandle;

/// Largest status body read from a member.
pub const MAX_STATUS_BYTES: usize = 256 * 1024;

/// Fetches a member's status JSON.
pub trait MemberProbe: Send + Sync + 'static {
    /// `GET api_url`, parsed as JSON; `Err` with a reason when there is no usable answer within
    /// `timeout`.
    fn fetch(&self, api_url: &str, timeout: Duration) -> BoxFuture<'_, Result<Value, String>>;

    /// `POST url` with a JSON body (and an `Authorization` header when given), bounded by
    /// `timeout`; the status, the body text and the `lsn` header of the answer.
    fn post(
        &self,
        url: &str,
        body: &Value,
        authorization: Option<&str>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<PostAnswer, String>> {
        let _ = (url, body, authorization, timeout);
        Box::pin(async { Err("this probe does not send POST requests".to_string()) })
    }
}

/// A member's answer to a POST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostAnswer {
    /// HTTP status.
    pub status: u16,
    /// Body text (Patroni answers `Accepted` to `POST /failsafe`).
    pub body: String,
    /// The `lsn` header, if any.
    pub lsn: Option<String>,
}

/// One HTTP exchange as [`HttpProbe`] sends it.
struct Exchange<'a> {
    method: &'static str,
    body: Vec<u8>,
    authorization: Option<&'a str>,
}

/// Where the probe's TLS client configuration comes from.
#[derive(Clone, Debug)]
enum PeerTls {
    /// Set once (operator commands).
    Fixed(Option<Arc<ClientConfig>>),
    /// The agent's REST API settings in force, so a reloaded certificate is used at once.
    Following(SecurityHandle),
}

/// The real probe: HTTP/1.1 over TCP, or over TLS for `https://` URLs.
#[derive(Clone, Debug)]
pub struct HttpProbe {
    tls: PeerTls,
}

impl HttpProbe {
    /// A probe that can reach `https://` members when `tls` is given.
    pub fn new(tls: Option<Arc<ClientConfig>>) -> Self {
        HttpProbe { tls: PeerTls::Fixed(tls) }
    }

    /// A probe using the peer TLS configuration in force in `security` at each request.
    pub fn following(security: SecurityHandle) -> Self {
        HttpProbe { tls: PeerTls::Following(security) }
    }

    /// `GET url` bounded by `timeout`, for "does anything answer there?": the body as JSON
    /// (`Value::Null` when it is not JSON) whatever the status; `Err` only when nothing answered.
    pub async fn get_any(&self, url: &str, timeout: Duration) -> Result<Value, String> {
        let ex = Exchange { method: "GET", body: Vec::new(), authorization: None };
        match tokio::time::timeout(timeout, self.call(url, ex)).await {
            Ok(Ok((_, _, body))) => Ok(serde_json::from_slice(&body).unwrap_or(Value::Null)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }

    fn client_tls(&self) -> Option<Arc<ClientConfig>> {
        match &self.tls {
            PeerTls::Fixed(t) => t.clone(),
            PeerTls::Following(s) => s.current().peer_tls.clone(),
        }
    }

    async fn get(&self, api_url: &str) -> Result<Value, String> {
        let ex = Exchange { method: "GET", body: Vec::new(), authorization: None };
        let (_, _, body) = self.call(api_url, ex).await?;
        // Patroni reads the body whatever the status: health paths answer 503 with a full status.
        serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
    }

    async fn call(&self, api_url: &str, ex: Exchange<'_>) -> Result<(u16, Option<String>, Bytes), String> {
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
            return request(tcp, &authority, &path, ex).await;
        }
        let config = self.client_tls().ok_or("https member but no TLS settings to verify it with")?;
        let name = ServerName::try_from(bare).map_err(|e| format!("server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        request(tls, &authority, &path, ex).await
    }
}

async fn request<IO>(
    io: IO,
    authority: &str,
    path: &str,
    ex: Exchange<'_>,
) -> Result<(u16, Option<String>, Bytes), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| format!("HTTP: {e}"))?;
    // The connection task ends when the response has been read and `sender` is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(ex.method)
        .uri(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(header::CONNECTION, "close");
    if !ex.body.is_empty() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(auth) = ex.authorization {
        req = req.header(header::AUTHORIZATION, auth);
    }
    // Never `{e}` of a failed build here: it could quote the Authorization value.
    let req = req.body(Full::new(Bytes::from(ex.body))).map_err(|_| "request: invalid header or path".to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status().as_u16();
    let lsn = resp.headers().get("lsn").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = Limited::new(resp.into_body(), MAX_STATUS_BYTES).collect().await.map_err(|e| format!("body: {e}"))?;
    Ok((status, lsn, body.to_bytes()))
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

    fn post(
        &self,
        url: &str,
        body: &Value,
        authorization: Option<&str>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<PostAnswer, String>> {
        let url = url.to_string();
        let body = serde_json::to_vec(body).unwrap_or_default();
        let authorization = authorization.map(str::to_string);
        Box::pin(async move {
            let ex = Exchange { method: "POST", body, authorization: authorization.as_deref() };
            match tokio::time::timeout(timeout, self.call(&url, ex)).await {
                Ok(Ok((status, lsn, body))) => {
                    Ok(PostAnswer { status, body: String::from_utf8_lossy(&body).into_owned(), lsn })
                }
                Ok(Err(e)) => Err(e),
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
        assert_eq!(probe.get_any(&url, Duration::from_secs(2)).await, Ok(Value::Null), "an answer all the same");
        assert!(probe.get_any("http://127.0.0.1:1/patroni", Duration::from_secs(1)).await.is_err());
        assert!(probe.fetch("https://127.0.0.1:1/patroni", Duration::from_secs(1)).await.is_err());
        assert!(probe.fetch("ftp://x/", Duration::from_secs(1)).await.is_err());
    }

    #[tokio::test]
    async fn posts_and_reads_status_body_and_lsn() {
        let ok = "HTTP/1.1 200 OK\r\nlsn: 1234\r\nContent-Length: 8\r\n\r\nAccepted";
        let url = serve_once(ok, Duration::ZERO).await.replace("/patroni", "/failsafe");
        let probe = HttpProbe::new(None);
        let a = probe.post(&url, &serde_json::json!({"name": "n1"}), Some("Basic x"), Duration::from_secs(2)).await;
        assert_eq!(a.unwrap(), PostAnswer { status: 200, body: "Accepted".into(), lsn: Some("1234".into()) });
        let slow = serve_once(ok, Duration::from_secs(5)).await;
        let e = probe.post(&slow, &serde_json::json!({}), None, Duration::from_millis(100)).await.unwrap_err();
        assert!(e.contains("no answer"), "{e}");
    }
}
