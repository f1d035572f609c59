//! Calls to the members' REST APIs (`POST /switchover`, `/restart`, `PATCH /config`, ...), with
//! Basic auth and TLS settings from the `ctl` section.
//!
//! A call either gets an answer ([`Reply`], whatever its status) or could not be made at all
//! ([`Unreachable`]: refused, timed out, TLS failure). Commands with a DCS fallback (switchover,
//! pause, flush) take it only in the second case, or when the member's API answers that it does
//! not have the endpoint ([`Reply::unsupported`]); an answer such as 412 or 503 is the member's
//! verdict and is reported, never overridden by writing the DCS behind its back.

use std::sync::Once;
use std::time::Duration;

use anyhow::{Context, Result};
use rampart_core::Member;
use serde_json::Value;

use super::target::RestSettings;

/// Timeout of quick calls (`/reload`, `/patroni`, `PATCH /config`, `DELETE ...`).
pub const QUICK: Duration = Duration::from_secs(5);
/// Timeout of `/switchover` and `/failover`: the API answers once the new leader is in place,
/// which Patroni waits up to 2·max(10, loop_wait) seconds for.
pub const HANDOVER: Duration = Duration::from_secs(60);
/// Timeout of `/restart`: answered once PostgreSQL is back, bounded by its start timeout.
pub const RESTART: Duration = Duration::from_secs(90);
/// Timeout of `/reinitialize`, which answers once the job has started.
pub const REINIT: Duration = Duration::from_secs(30);

/// Installs rustls' ring crypto provider for the whole process (once). reqwest is built without
/// a default provider, so every client needs this first; ring is also what etcd-client uses.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error only means a provider is already installed, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body as text, trailing newline removed.
    pub text: String,
}

impl Reply {
    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The API does not have this endpoint or method (an older agent, or one whose write side
    /// is not there): 404/405 without Patroni's own 404 texts, or 501.
    pub fn unsupported(&self) -> bool {
        match self.status {
            501 | 405 => true,
            // Patroni answers 404 with a message for "nothing scheduled"; a bare 404 is a
            // missing route.
            404 => self.text.trim().is_empty() || self.text.contains("Not Found") || self.text.contains("not found"),
            _ => false,
        }
    }
}

/// The call could not be made (connection refused, timeout, TLS or protocol failure).
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the REST API of {member} at {url}: {reason}")]
pub struct Unreachable {
    /// Member name.
    pub member: String,
    /// URL called.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// HTTP methods the commands use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    fn as_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

/// The URL of `endpoint` on the API whose `/patroni` URL a member published:
/// `http://h:8008/patroni` + `switchover` = `http://h:8008/switchover`.
pub fn endpoint_url(api_url: &str, endpoint: &str) -> Option<String> {
    let (scheme, rest) = api_url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().filter(|a| !a.is_empty())?;
    Some(format!("{scheme}://{authority}/{}", endpoint.trim_start_matches('/')))
}

/// A REST client for one command run.
pub struct Rest {
    client: reqwest::Client,
    auth: Option<(String, rampart_config::Secret)>,
}

impl Rest {
    /// Builds the client: CA bundle, client certificate, `insecure`.
    pub fn new(settings: &RestSettings) -> Result<Rest> {
        install_crypto_provider();
        let mut b = reqwest::Client::builder()
            .connect_timeout(QUICK)
            .user_agent(concat!("rampart/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &settings.cacert {
            let pem = std::fs::read(ca).with_context(|| format!("reading ctl.cacert {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("ctl.cacert {}: not a PEM certificate bundle", ca.display()))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if let Some(cert) = &settings.certfile {
            let mut pem = std::fs::read(cert).with_context(|| format!("reading ctl.certfile {}", cert.display()))?;
            if let Some(key) = &settings.keyfile {
                pem.push(b'\n');
                pem.extend(std::fs::read(key).with_context(|| format!("reading ctl.keyfile {}", key.display()))?);
            }
            let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
                format!("ctl.certfile {}: expected a PEM certificate and an unencrypted PEM key", cert.display())
            })?;
            b = b.identity(identity);
        }
        if settings.insecure {
            b = b.tls_danger_accept_invalid_certs(true).tls_danger_accept_invalid_hostnames(true);
        }
        let client = b.build().context("setting up the REST client")?;
        Ok(Rest { client, auth: settings.auth.clone() })
    }

    /// Calls `endpoint` of `member`'s API with an optional JSON body.
    pub async fn call(
        &self,
        member: &Member,
        method: Method,
        endpoint: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Reply, Unreachable> {
        let unreachable =
            |url: &str, reason: String| Unreachable { member: member.name.clone(), url: url.into(), reason };
        let Some(url) = endpoint_url(&member.data.api_url, endpoint) else {
            return Err(unreachable(&member.data.api_url, "the member published no usable api_url".into()));
        };
        let mut req = self.client.request(method.as_reqwest(), &url).timeout(timeout);
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password.expose()));
        }
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| unreachable(&url, describe(&e, timeout)))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| unreachable(&url, describe(&e, timeout)))?;
        Ok(Reply { status, text: text.trim_end().to_string() })
    }
}

/// reqwest's error with its causes, which is where "connection refused" is.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// One request as a fake API saw it.
    #[derive(Clone, Debug, Default)]
    pub(crate) struct Seen {
        pub method: String,
        pub path: String,
        pub authorization: Option<String>,
        pub body: String,
    }

    /// A fake REST API on 127.0.0.1: answers each request with the next canned (status, body)
    /// and records what it was asked. Returns its `/patroni` URL.
    pub(crate) fn fake_api(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/patroni", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for (status, body) in answers {
                let Ok((stream, _)) = listener.accept() else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut parts = line.split_whitespace();
                let mut s = Seen {
                    method: parts.next().unwrap_or("").into(),
                    path: parts.next().unwrap_or("").into(),
                    ..Default::default()
                };
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (name, value) = h.split_once(':').unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap(),
                        "authorization" => s.authorization = Some(value.trim().into()),
                        _ => {}
                    }
                }
                let mut body_bytes = vec![0; length];
                reader.read_exact(&mut body_bytes).unwrap();
                s.body = String::from_utf8(body_bytes).unwrap();
                log.lock().unwrap().push(s);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, seen)
    }

    pub(crate) fn member(name: &str, api_url: &str) -> Member {
        Member {
            name: name.into(),
            data: rampart_core::MemberData { api_url: api_url.into(), ..Default::default() },
            lease: 0,
        }
    }

    #[test]
    fn endpoint_urls_replace_the_path() {
        assert_eq!(
            endpoint_url("http://10.0.0.1:8008/patroni", "switchover").as_deref(),
            Some("http://10.0.0.1:8008/switchover")
        );
        assert_eq!(endpoint_url("https://[::1]:8008/patroni", "/config").as_deref(), Some("https://[::1]:8008/config"));
        assert_eq!(endpoint_url("", "x"), None);
        assert_eq!(endpoint_url("http:///patroni", "x"), None);
    }

    #[test]
    fn unsupported_means_no_such_endpoint() {
        let r = |status, text: &str| Reply { status, text: text.into() };
        assert!(r(501, "Unsupported method (\"POST\")").unsupported());
        assert!(r(405, "").unsupported());
        assert!(r(404, "").unsupported());
        assert!(!r(404, "no scheduled restart").unsupported(), "Patroni's own 404 answer");
        assert!(!r(412, "candidate lagging").unsupported());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn calls_carry_method_path_auth_and_json_body() {
        let (url, seen) = fake_api(vec![(202, "scheduled\n")]);
        let settings =
            RestSettings { auth: Some(("admin".into(), rampart_config::Secret::new("pw"))), ..Default::default() };
        let rest = Rest::new(&settings).unwrap();
        let body = serde_json::json!({"leader": "a", "candidate": "b"});
        let reply = rest.call(&member("a", &url), Method::Post, "switchover", Some(&body), QUICK).await.unwrap();
        assert_eq!(reply, Reply { status: 202, text: "scheduled".into() });
        let s = seen.lock().unwrap()[0].clone();
        assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/switchover"));
        // base64("admin:pw")
        assert_eq!(s.authorization.as_deref(), Some("Basic YWRtaW46cHc="));
        assert_eq!(serde_json::from_str::<Value>(&s.body).unwrap(), body);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_port_is_unreachable_with_its_url() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let rest = Rest::new(&RestSettings::default()).unwrap();
        let url = format!("http://127.0.0.1:{port}/patroni");
        let e = rest.call(&member("n1", &url), Method::Get, "patroni", None, QUICK).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cannot reach the REST API of n1 at http://127.0.0.1:{port}/patroni: ")),
            "{text}"
        );
        let e = rest.call(&member("n2", ""), Method::Get, "patroni", None, QUICK).await.unwrap_err();
        assert!(e.to_string().contains("no usable api_url"), "{e}");
    }

    #[test]
    fn unreadable_tls_files_are_named() {
        let settings = RestSettings { cacert: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        let e = Rest::new(&settings).err().unwrap();
        assert!(format!("{e:#}").starts_with("reading ctl.cacert /nonexistent/ca.pem: "), "{e:#}");
    }
}
