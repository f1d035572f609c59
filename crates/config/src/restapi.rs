//! The `restapi` section: where the agent's HTTP API listens and how others reach it.
//!
//! Invariant kept here: `connect_address` (published to the DCS as `api_url`) is always a concrete
//! address, never a wildcard; when it is not configured it is derived from `listen`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::addr::{is_wildcard, HostPort};
use crate::check::Checker;
use crate::error::Problem;
use crate::raw::RawRestApi;
use crate::secret::Credentials;

/// Whether the API asks clients for a TLS certificate (`verify_client`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// No client certificate is requested.
    #[default]
    None,
    /// A certificate is checked when the client sends one.
    Optional,
    /// Every client must present a valid certificate.
    Required,
}

/// The `restapi` section, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct RestApi {
    /// Address the API binds to.
    pub listen: HostPort,
    /// Address other members and tools use to reach the API.
    pub connect_address: HostPort,
    /// Basic-auth credentials required for the mutating endpoints.
    pub authentication: Option<Credentials>,
    /// Server certificate (PEM); setting it turns on HTTPS.
    pub certfile: Option<PathBuf>,
    /// Server private key (PEM), when not in `certfile`.
    pub keyfile: Option<PathBuf>,
    /// CA bundle used to check client certificates.
    pub cafile: Option<PathBuf>,
    /// Client certificate policy.
    pub verify_client: ClientCertMode,
    /// Hosts or networks allowed to call the mutating endpoints (empty: everyone).
    pub allowlist: Vec<String>,
}

impl RestApi {
    /// Whether the API serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.certfile.is_some()
    }

    /// The URL published in the member key: `http(s)://<connect_address>/patroni`.
    pub fn api_url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}/patroni", self.connect_address)
    }

    pub(crate) fn build(raw: Option<RawRestApi>, c: &mut Checker<'_>) -> Result<RestApi, Problem> {
        let raw = raw.unwrap_or_default();
        let listen_text = c.require(raw.listen, &["restapi", "listen"])?;
        let listen = c.host_port(&listen_text, &["restapi", "listen"])?;
        let connect_address = connect_address(raw.connect_address, &listen, "restapi", c)?;
        let authentication = crate::ctl::credentials(raw.authentication, "restapi", c)?;
        let verify_client = raw.verify_client.unwrap_or_default();
        if verify_client != ClientCertMode::None {
            if raw.certfile.is_none() {
                return Err(
                    c.problem(&["restapi", "verify_client"], "needs restapi.certfile (client certificates need TLS)")
                );
            }
            if raw.cafile.is_none() {
                return Err(
                    c.problem(&["restapi", "verify_client"], "needs restapi.cafile to check client certificates")
                );
            }
        }
        if raw.keyfile.is_some() && raw.certfile.is_none() {
            return Err(c.problem(&["restapi", "keyfile"], "set without restapi.certfile"));
        }
        Ok(RestApi {
            listen,
            connect_address,
            authentication,
            certfile: raw.certfile,
            keyfile: raw.keyfile,
            cafile: raw.cafile,
            verify_client,
            allowlist: raw.allowlist.map(|l| l.0).unwrap_or_default(),
        })
    }
}

/// The configured `connect_address` of `section`, or one derived from its first listen host:
/// a wildcard becomes `127.0.0.1`, with a warning since other hosts cannot use that.
pub(crate) fn connect_address(
    configured: Option<String>,
    listen: &HostPort,
    section: &str,
    c: &mut Checker<'_>,
) -> Result<HostPort, Problem> {
    let path = [section, "connect_address"];
    match configured {
        Some(text) => {
            let hp = c.host_port(&text, &path)?;
            if hp.is_wildcard() {
                return Err(c.problem(
                    &path,
                    format!("{} means every interface; give an address other members can connect to", hp.host),
                ));
            }
            Ok(hp)
        }
        None if is_wildcard(&listen.host) => {
            let hp = HostPort { host: "127.0.0.1".into(), port: listen.port };
            // Located at `listen`, the value that led here.
            c.note(
                &[section, "listen"],
                format!(
                    "{section}.connect_address: not set and {section}.listen is a wildcard; \
                     publishing {hp}, which other hosts cannot reach"
                ),
            );
            Ok(hp)
        }
        None => Ok(listen.clone()),
    }
}
