//! Talking to the processes under test: a tiny blocking HTTP/1.0 client (std only, usable from
//! sync and async tests, from `Drop` and from `wait_until` closures) and async SQL helpers built on
//! tokio-postgres.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// Timeout for connecting to, writing to and reading from a server.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A complete HTTP response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names are lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// Sends one HTTP/1.0 request to `127.0.0.1:port` and reads the whole response.
/// `body`, if any, is sent as `application/json`.
pub fn http_request(port: u16, method: &str, path: &str, body: Option<&str>) -> std::io::Result<HttpResponse> {
    http_request_with_timeout(port, method, path, body, HTTP_TIMEOUT)
}

/// [`http_request`] with its own connect/read/write timeout.
pub fn http_request_with_timeout(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    http_request_at(std::net::Ipv4Addr::LOCALHOST, port, method, path, body, timeout)
}

/// [`http_request_with_timeout`] to `host:port` (a server in a network namespace of the chaos
/// suite has its own address).
pub fn http_request_at(
    host: std::net::Ipv4Addr,
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    http_exchange(host, port, method, path, body, &[], timeout)
}

/// [`http_request`] with an `Authorization` header (e.g. [`rampart_api::BasicAuth::header_value`]).
pub fn http_request_authorized(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    authorization: &str,
) -> std::io::Result<HttpResponse> {
    let headers = [("Authorization", authorization)];
    http_exchange(std::net::Ipv4Addr::LOCALHOST, port, method, path, body, &headers, HTTP_TIMEOUT)
}

fn http_exchange(
    host: std::net::Ipv4Addr,
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let addr = SocketAddr::from((host, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status =
        status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(HttpResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Status code of `method path` on `127.0.0.1:port`; 0 when there was no HTTP response at all
/// (connection refused, timeout, garbage).
pub fn http_status(port: u16, method: &str, path: &str) -> u16 {
    http_request(port, method, path, None).map(|r| r.status).unwrap_or(0)
}

/// `GET path` parsed as JSON, whatever the status code; `None` without a JSON response.
pub fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    http_request(port, "GET", path, None).ok()?.json()
}

/// Connects to the `postgres` database on `127.0.0.1:port` over TCP (so pg_hba's scram-sha-256
/// rule applies) and drives the connection on a spawned tokio task. Needs a tokio runtime.
pub async fn connect(port: u16, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
    connect_at("127.0.0.1", port, user, password).await
}

/// [`connect`] to `host:port`.
pub async fn connect_at(host: &str, port: u16, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .application_name("rampart-tests")
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = cfg.connect(NoTls).await?;
    tokio::spawn(async move {
        // Errors here mean the server went away, which scenario tests do on purpose.
        let _ = connection.await;
    });
    Ok(client)
}

/// [`connect`] over a TCP connection already made (e.g. from another host's network namespace,
/// see [`super::netns::Host::tcp_connect`]).
pub async fn connect_over(
    stream: std::net::TcpStream,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    stream.set_nonblocking(true).expect("a non-blocking socket");
    let stream = tokio::net::TcpStream::from_std(stream).expect("a socket tokio takes");
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(user).password(password).dbname("postgres").application_name("rampart-tests");
    let (client, connection) = cfg.connect_raw(stream, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// [`connect`] as the superuser every [`super::NodeConfig`] declares.
pub async fn connect_superuser(port: u16) -> Result<Client, tokio_postgres::Error> {
    connect(port, super::SUPERUSER, super::SUPERUSER_PASSWORD).await
}

/// Runs a query returning one row with one boolean column.
pub async fn query_one_bool(client: &Client, sql: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(client.query_one(sql, &[]).await?.get(0))
}

/// `pg_is_in_recovery()` of the server on `port` (as superuser); `None` when it cannot be asked.
pub async fn is_in_recovery(port: u16) -> Option<bool> {
    let client = connect_superuser(port).await.ok()?;
    query_one_bool(&client, "SELECT pg_is_in_recovery()").await.ok()
}

/// The first column of the first row of `sql` on the server at `port` (as superuser), as text;
/// `None` when the server cannot be asked, the query fails or returns no row.
pub async fn query_text(port: u16, sql: &str) -> Option<String> {
    let client = connect_superuser(port).await.ok()?;
    client.query_opt(&format!("SELECT ({sql})::text"), &[]).await.ok()??.get(0)
}

/// Runs `sql` on the server at `port` as the superuser, panicking with the statement and the
/// error if it fails (a scenario step that must work).
pub async fn sql(port: u16, sql: &str) {
    let db = connect_superuser(port).await.unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    db.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql} on {port}: {e}"));
}

/// The `id` column of the scenario table `story`, sorted: what a story wrote and kept.
pub async fn story_ids(port: u16) -> Vec<i32> {
    let db = connect_superuser(port).await.unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    db.query("SELECT id FROM story ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}
