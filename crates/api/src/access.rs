//! Who may call the write endpoints (Patroni's `check_access`): the `restapi.allowlist`, the client
//! certificate under `verify_client`, and HTTP Basic authentication.
//!
//! Invariants kept here:
//! * checks run in Patroni's order and give its answers: address not allowed → 403 `Access is
//!   denied`; TLS client certificate expected but absent → 403 `client certificate required`; no
//!   or wrong credentials → 401 with `WWW-Authenticate: Basic realm="Patroni"`;
//! * a configured allowlist that ends up empty (e.g. no host name resolved) denies everyone, it
//!   never silently turns into "allow all"; so does a request whose peer address is unknown;
//! * credentials are compared in constant time, and the password is never printed: [`BasicAuth`]
//!   and [`AccessPolicy`] redact it in `Debug`, and no error message carries it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderValue;
use base64::Engine;
use subtle::ConstantTimeEq;

/// What the server knows about the other end of a connection; attached to every request as an
/// extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's address.
    pub addr: SocketAddr,
    /// The client presented a certificate that the server verified against `cafile`.
    pub client_cert: bool,
}

/// The `restapi.authentication` credentials. The password never leaves this type in clear
/// except to be compared.
#[derive(Clone)]
pub struct BasicAuth {
    username: String,
    password: String,
}

impl BasicAuth {
    /// Credentials a client must send.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        BasicAuth { username: username.into(), password: password.into() }
    }

    /// The value of an `Authorization` header that carries these credentials (for clients and tests).
    pub fn header_value(&self) -> String {
        let plain = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(plain))
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth").field("username", &self.username).field("password", &"***").finish()
    }
}

/// An IP network of the allowlist: an address and the number of leading bits that must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `10.1.2.3`, `fd00::/8` or `::1`; `None` when the text is not an
    /// address (it may be a host name) and an error when it is an address with a bad prefix.
    pub fn parse(text: &str) -> Option<Result<IpNet, AccessError>> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Some(Err(AccessError::BadNetwork(text.to_string()))),
            },
        };
        Some(Ok(IpNet { addr: canonical(addr), prefix }))
    }

    /// A single address.
    pub fn host(addr: IpAddr) -> IpNet {
        let addr = canonical(addr);
        IpNet { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } }
    }

    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
                IpAddr::V6(v6) => u128::from(v6),
            }
        };
        let ip = canonical(ip);
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        if self.prefix == 0 {
            return true;
        }
        // IPv4 addresses sit in the top 32 bits, so one mask of the top `prefix` bits serves both.
        let mask = u128::MAX << (128 - u32::from(self.prefix));
        bits(ip) & mask == bits(self.addr) & mask
    }
}

/// A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`; compare them as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Why the access settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// An allowlist entry looks like a network but its prefix length is out of range.
    #[error("restapi.allowlist: {0:?} is not a valid network")]
    BadNetwork(String),
}

/// Why a write request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The client's address is not in the allowlist (403).
    NotAllowed,
    /// TLS client certificates are configured and this client sent none (403).
    NoClientCert,
    /// Credentials are required and the request has no `Authorization` header (401).
    NoCredentials,
    /// The credentials are wrong or not Basic (401).
    BadCredentials,
}

impl Denied {
    /// HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Denied::NotAllowed | Denied::NoClientCert => 403,
            Denied::NoCredentials | Denied::BadCredentials => 401,
        }
    }

    /// Patroni's body text.
    pub fn message(self) -> &'static str {
        match self {
            Denied::NotAllowed => "Access is denied",
            Denied::NoClientCert => "client certificate required",
            Denied::NoCredentials => "no auth header received",
            Denied::BadCredentials => "not authenticated",
        }
    }
}

/// The resolved access rules for write requests.
#[derive(Clone, Default)]
pub struct AccessPolicy {
    /// `username:password` as a client sends it (before base64).
    credentials: Option<Vec<u8>>,
    /// `None`: no allowlist; `Some(empty)`: nobody is allowed.
    allowlist: Option<Vec<IpNet>>,
    /// `verify_client` is `optional` or `required`: writes need a verified client certificate.
    client_cert_for_writes: bool,
}

impl fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessPolicy")
            .field("authentication", &self.credentials.is_some())
            .field("allowlist", &self.allowlist)
            .field("client_cert_for_writes", &self.client_cert_for_writes)
            .finish()
    }
}

impl AccessPolicy {
    /// No restriction at all (Patroni without `authentication`, `allowlist` or client certificates).
    pub fn open() -> Self {
        AccessPolicy::default()
    }

    /// Builds the policy. Allowlist entries are addresses, networks (CIDR) or host names; names
    /// are resolved once, now. A name that does not resolve is logged and left out, which can
    /// only make the list stricter.
    pub async fn resolve(
        auth: Option<&BasicAuth>,
        allowlist: &[String],
        client_cert_for_writes: bool,
    ) -> Result<AccessPolicy, AccessError> {
        let credentials = auth.map(|a| format!("{}:{}", a.username, a.password).into_bytes());
        let allowlist = if allowlist.is_empty() {
            None
        } else {
            let mut nets = Vec::new();
            for entry in allowlist.iter().map(|e| e.trim()) {
                match IpNet::parse(entry) {
                    Some(net) => nets.push(net?),
                    None => match tokio::net::lookup_host((entry, 0)).await {
                        Ok(addrs) => nets.extend(addrs.map(|a| IpNet::host(a.ip()))),
                        Err(e) => tracing::warn!("restapi.allowlist: cannot resolve {entry:?}, leaving it out: {e}"),
                    },
                }
            }
            Some(nets)
        };
        Ok(AccessPolicy { credentials, allowlist, client_cert_for_writes })
    }

    /// Whether any rule is configured.
    pub fn is_open(&self) -> bool {
        self.credentials.is_none() && self.allowlist.is_none() && !self.client_cert_for_writes
    }

    /// Decides on one write request from `peer` (attached by the server; `None` when unknown)
    /// carrying `authorization`.
    pub fn check(&self, peer: Option<&PeerInfo>, authorization: Option<&HeaderValue>) -> Result<(), Denied> {
        if let Some(nets) = &self.allowlist {
            let allowed = peer.is_some_and(|p| nets.iter().any(|n| n.contains(p.addr.ip())));
            if !allowed {
                return Err(Denied::NotAllowed);
            }
        }
        if self.client_cert_for_writes && !peer.is_some_and(|p| p.client_cert) {
            return Err(Denied::NoClientCert);
        }
        let Some(expected) = &self.credentials else { return Ok(()) };
        let Some(header) = authorization else { return Err(Denied::NoCredentials) };
        let sent = header
            .to_str()
            .ok()
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("basic").then_some(token.trim())
            })
            .and_then(|token| base64::engine::general_purpose::STANDARD.decode(token).ok());
        match sent {
            // `ct_eq` on slices of different lengths is false at once: that only reveals the
            // length, as Python's `hmac.compare_digest` (Patroni) does.
            Some(sent) if bool::from(sent.as_slice().ct_eq(expected.as_slice())) => Ok(()),
            _ => Err(Denied::BadCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> PeerInfo {
        PeerInfo { addr: SocketAddr::new(ip.parse().unwrap(), 40000), client_cert: false }
    }

    fn net(s: &str) -> IpNet {
        IpNet::parse(s).unwrap().unwrap()
    }

    #[test]
    fn networks() {
        assert!(net("10.0.0.0/8").contains("10.200.1.1".parse().unwrap()));
        assert!(!net("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(net("10.1.2.3").contains("10.1.2.3".parse().unwrap()));
        assert!(!net("10.1.2.3").contains("10.1.2.4".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(!net("0.0.0.0/0").contains("::2".parse().unwrap()));
        assert!(net("fd00::/8").contains("fd12::1".parse().unwrap()));
        assert!(!net("fd00::/8").contains("fe80::1".parse().unwrap()));
        assert!(net("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap()), "IPv4-mapped");
        assert!(net("::ffff:10.0.0.1").contains("10.0.0.1".parse().unwrap()));
        assert!(matches!(IpNet::parse("10.0.0.0/33"), Some(Err(AccessError::BadNetwork(_)))));
        assert!(IpNet::parse("db.example").is_none());
    }

    #[tokio::test]
    async fn allowlist_with_names_and_networks() {
        let list = vec!["10.0.0.0/24".to_string(), "localhost".to_string()];
        let p = AccessPolicy::resolve(None, &list, false).await.unwrap();
        assert_eq!(p.check(Some(&peer("10.0.0.9")), None), Ok(()));
        assert_eq!(p.check(Some(&peer("127.0.0.1")), None), Ok(()), "localhost resolved at start");
        assert_eq!(p.check(Some(&peer("10.0.1.9")), None), Err(Denied::NotAllowed));
        assert_eq!(p.check(None, None), Err(Denied::NotAllowed), "unknown peer");

        let p = AccessPolicy::resolve(None, &["no-such-host.invalid".to_string()], false).await.unwrap();
        assert_eq!(p.check(Some(&peer("127.0.0.1")), None), Err(Denied::NotAllowed), "empty list denies all");
        assert!(AccessPolicy::resolve(None, &["1.2.3.4/40".to_string()], false).await.is_err());
    }

    #[tokio::test]
    async fn basic_auth() {
        let auth = BasicAuth::new("admin", "s3cr:et");
        let p = AccessPolicy::resolve(Some(&auth), &[], false).await.unwrap();
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(p.check(None, None), Err(Denied::NoCredentials));
        assert_eq!(p.check(None, Some(&hv(&auth.header_value()))), Ok(()));
        // Scheme is case-insensitive (RFC 7617); the password may contain a colon.
        let lower = auth.header_value().replacen("Basic", "basic", 1);
        assert_eq!(p.check(None, Some(&hv(&lower))), Ok(()));
        let wrong = BasicAuth::new("admin", "s3cr:eT").header_value();
        assert_eq!(p.check(None, Some(&hv(&wrong))), Err(Denied::BadCredentials));
        assert_eq!(p.check(None, Some(&hv("Bearer abc"))), Err(Denied::BadCredentials));
        assert_eq!(p.check(None, Some(&hv("Basic !!!"))), Err(Denied::BadCredentials));
        assert_eq!(Denied::NoCredentials.status(), 401);
        // Never printed.
        assert!(!format!("{auth:?} {p:?}").contains("s3cr"));
    }

    #[tokio::test]
    async fn order_and_client_certs() {
        let auth = BasicAuth::new("u", "p");
        let p = AccessPolicy::resolve(Some(&auth), &["10.0.0.1".into()], true).await.unwrap();
        let hv = HeaderValue::from_str(&auth.header_value()).unwrap();
        // The address is checked before anything else, then the certificate, then credentials.
        assert_eq!(p.check(Some(&peer("10.0.0.2")), Some(&hv)), Err(Denied::NotAllowed));
        assert_eq!(p.check(Some(&peer("10.0.0.1")), Some(&hv)), Err(Denied::NoClientCert));
        let with_cert = PeerInfo { client_cert: true, ..peer("10.0.0.1") };
        assert_eq!(p.check(Some(&with_cert), None), Err(Denied::NoCredentials));
        assert_eq!(p.check(Some(&with_cert), Some(&hv)), Ok(()));
        assert!(AccessPolicy::open().is_open() && !p.is_open());
    }
}
