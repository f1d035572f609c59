//! How to reach etcd: endpoints, credentials, TLS files and the per-request timeout, and their
//! translation into etcd-client's `ConnectOptions`.
//!
//! Invariant: building the client from these options never touches the network, so the agent can
//! start (and report a clear error each cycle) while etcd is down; only bad settings fail here.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::error::{display_endpoint, display_endpoints, DcsError};

/// Connection settings for an etcd v3 cluster.
#[derive(Clone, Default)]
pub struct EtcdOptions {
    /// `host:port` or `http(s)://host:port`; requests stick to one while it answers and move to
    /// the next one when it fails.
    pub endpoints: Vec<String>,
    /// User for etcd authentication (the token is refreshed automatically when it expires).
    pub username: Option<String>,
    /// Password of `username`.
    pub password: Option<String>,
    /// CA bundle that signed the etcd server certificates; enables TLS.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (needs `key_file`).
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Upper bound for one request to one endpoint; an operation retries on another endpoint
    /// within its deadline when an attempt fails or exceeds this.
    pub op_timeout: Duration,
}

// Hand-written so that a password can never end up in a log line through `{:?}`.
impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &display_endpoints(&self.endpoints))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

/// etcd's gRPC server treats pings more frequent than every 5 s as abuse and closes the
/// connection (`--grpc-keepalive-min-time`), so the HTTP/2 keep-alive interval stays above that.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(10);

impl EtcdOptions {
    /// Whether any TLS file is configured (then endpoints without a scheme use `https://`).
    pub fn uses_tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Endpoints as shown in messages.
    pub(crate) fn endpoints_for_display(&self) -> String {
        display_endpoints(&self.endpoints)
    }

    /// Each endpoint as shown in messages, in configuration order.
    pub(crate) fn endpoints_shown(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| display_endpoint(e.trim())).collect()
    }

    /// Credentials, if both parts are set.
    pub(crate) fn credentials(&self) -> Result<Option<(String, String)>, DcsError> {
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => Ok(Some((u.clone(), p.clone()))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.config_error("username is set without a password".into())),
            (None, Some(_)) => Err(self.config_error("password is set without a username".into())),
        }
    }

    /// Endpoints with an explicit scheme, so the client never guesses.
    pub(crate) fn endpoint_urls(&self) -> Result<Vec<String>, DcsError> {
        if self.endpoints.is_empty() {
            return Err(self.config_error("no endpoints configured".into()));
        }
        let scheme = if self.uses_tls() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| {
                let e = e.trim();
                if e.is_empty() {
                    return Err(self.config_error("empty endpoint".into()));
                }
                if e.starts_with("http://") && self.uses_tls() {
                    return Err(self.config_error(format!("endpoint {e} is plain http but TLS files are configured")));
                }
                Ok(if e.contains("://") { e.to_string() } else { format!("{scheme}://{e}") })
            })
            .collect()
    }

    /// Client options: timeouts, HTTP/2 keep-alive, leader requirement, token refresh, TLS.
    /// Credentials are not set here: authenticating is a network call, done lazily.
    pub(crate) fn connect_options(&self) -> Result<ConnectOptions, DcsError> {
        let op = self.op_timeout.max(Duration::from_millis(100));
        // A ping unanswered for this long closes the connection, which fails a silently dead
        // watch or keep-alive stream instead of leaving it hanging.
        let ping_timeout = op.max(Duration::from_secs(1));
        let mut options = ConnectOptions::new()
            .with_connect_timeout(op)
            .with_keep_alive(HTTP2_PING_INTERVAL, ping_timeout)
            // Pinging idle connections (no open stream) is also counted as abuse by etcd.
            .with_keep_alive_while_idle(false)
            // A member cut off from its quorum must not serve our reads or keep our watch.
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        if let Some(tls) = self.tls_options()? {
            options = options.with_tls(tls);
        }
        Ok(options)
    }

    fn tls_options(&self) -> Result<Option<TlsOptions>, DcsError> {
        if !self.uses_tls() {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(self.read_file(ca, "CA file")?));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let cert = self.read_file(cert, "certificate file")?;
                let key = self.read_file(key, "key file")?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => return Err(self.config_error("cert_file and key_file must be given together".into())),
        }
        Ok(Some(tls))
    }

    fn read_file(&self, path: &std::path::Path, what: &str) -> Result<Vec<u8>, DcsError> {
        std::fs::read(path).map_err(|e| self.config_error(format!("cannot read {what} {}: {e}", path.display())))
    }

    pub(crate) fn config_error(&self, detail: String) -> DcsError {
        DcsError::Config { endpoints: self.endpoints_for_display(), detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(endpoints: &[&str]) -> EtcdOptions {
        EtcdOptions { endpoints: endpoints.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn schemes_are_made_explicit() {
        assert_eq!(
            opts(&["127.0.0.1:2379", "https://h:1"]).endpoint_urls().unwrap(),
            ["http://127.0.0.1:2379", "https://h:1"]
        );
        let mut tls = opts(&["h:2379"]);
        tls.ca_file = Some("/nonexistent".into());
        assert_eq!(tls.endpoint_urls().unwrap(), ["https://h:2379"]);
        assert!(opts(&[]).endpoint_urls().is_err());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut o = opts(&["http://u:secret@h:1"]);
        o.password = Some("hunter2".into());
        let shown = format!("{o:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("secret"), "{shown}");
    }

    #[test]
    fn half_configured_settings_are_rejected() {
        let mut o = opts(&["h:1"]);
        o.username = Some("root".into());
        assert!(matches!(o.credentials(), Err(DcsError::Config { .. })));
        let mut o = opts(&["h:1"]);
        o.cert_file = Some("/c".into());
        assert!(o.connect_options().is_err());
    }
}
