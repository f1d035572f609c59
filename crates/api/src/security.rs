//! The REST API's security settings turned into what the server and the handlers use: the access
//! policy of the write endpoints, the server's TLS configuration and the TLS configuration of
//! requests to other members.
//!
//! Invariant kept here: everything is loaded and resolved once, before the API starts listening,
//! so a bad certificate or allowlist stops the agent at start-up instead of failing requests later.

use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};

use crate::access::{AccessError, AccessPolicy, BasicAuth};
use crate::tls::{self, ClientCertMode, TlsError, TlsSettings};

/// The security part of the `restapi` section, as the agent passes it.
#[derive(Clone, Debug, Default)]
pub struct SecuritySettings {
    /// `restapi.authentication`: credentials required for every write request.
    pub authentication: Option<BasicAuth>,
    /// `restapi.allowlist`: addresses, networks or host names allowed to write (empty: anyone).
    pub allowlist: Vec<String>,
    /// HTTPS, when `restapi.certfile` is set.
    pub tls: Option<TlsSettings>,
}

/// Why the security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The allowlist is malformed.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// Certificates or keys cannot be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Prepared security settings.
#[derive(Clone, Default)]
pub struct Security {
    /// Rules for write requests.
    pub access: AccessPolicy,
    /// `Some`: the server speaks HTTPS only.
    pub server_tls: Option<Arc<ServerConfig>>,
    /// Used for `https://` member URLs (switchover candidate checks).
    pub peer_tls: Option<Arc<ClientConfig>>,
}

// By hand: rustls configurations hold key material, which has no business in a log line.
impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("access", &self.access)
            .field("https", &self.server_tls.is_some())
            .field("peer_tls", &self.peer_tls.is_some())
            .finish()
    }
}

impl Security {
    /// Plain HTTP, anyone may write: Patroni's behaviour without any of these settings.
    pub fn open() -> Self {
        Security::default()
    }

    /// Loads certificates and resolves the allowlist's host names.
    pub async fn prepare(settings: &SecuritySettings) -> Result<Security, SecurityError> {
        let client_cert_for_writes = settings.tls.as_ref().is_some_and(|t| t.verify_client != ClientCertMode::None);
        let access =
            AccessPolicy::resolve(settings.authentication.as_ref(), &settings.allowlist, client_cert_for_writes)
                .await?;
        let (server_tls, peer_tls) = match &settings.tls {
            None => (None, None),
            Some(t) => (Some(tls::server_config(t)?), Some(tls::peer_client_config(t)?)),
        };
        Ok(Security { access, server_tls, peer_tls })
    }
}
