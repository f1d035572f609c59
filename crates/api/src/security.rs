//! The REST API's security settings turned into what the server and the handlers use: the access
//! policy of the write endpoints, the server's TLS configuration and the TLS configuration of
//! requests to other members.
//!
//! Invariants kept here:
//! * everything is loaded and resolved before it is used: at start-up, so a bad certificate or
//!   allowlist stops the agent before the API listens, and on a reload, so a bad new certificate
//!   is refused while the settings in force stay as they were;
//! * the settings in force are swapped as a whole ([`SecurityHandle::replace`]): a request or a
//!   connection sees either the old settings or the new ones, never a mix (an accepted connection
//!   keeps the TLS configuration of its handshake, each write request is checked against the
//!   access policy current when it arrives).

use std::sync::{Arc, RwLock};

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

/// The security settings in force, shared by the server, the write handlers and the member probe,
/// and replaced as a whole when the agent reloads its configuration. Cheap to clone.
#[derive(Clone, Default)]
pub struct SecurityHandle(Arc<RwLock<Arc<Security>>>);

impl SecurityHandle {
    /// A handle holding `security`.
    pub fn new(security: Security) -> Self {
        SecurityHandle(Arc::new(RwLock::new(Arc::new(security))))
    }

    /// The settings in force now (held by the caller for as long as it needs one consistent set).
    pub fn current(&self) -> Arc<Security> {
        // A panic while the lock is held cannot leave a half-written `Arc`, so poisoning is ignored.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `security` in force for every later connection and request.
    pub fn replace(&self, security: Security) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(security);
    }
}

impl std::fmt::Debug for SecurityHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.current().fmt(f)
    }
}
