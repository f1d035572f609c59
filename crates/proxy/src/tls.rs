//! TLS termination for clients that send SSLRequest (`proxy.certfile`, `proxy.keyfile`).
//!
//! The proxy terminates TLS with its own certificate and speaks plain TCP to the backends on the
//! same network as the cluster, as PgBouncer does with `client_tls_*` and no `server_tls_*`.
//!
//! Invariants kept here:
//! * the configuration is built with the ring provider passed explicitly, never the
//!   process-wide default, so it cannot panic or pick another provider;
//! * a missing or unreadable file is an error at start-up, naming the setting and the file and
//!   never its content;
//! * ALPN offers only `postgresql` (what libpq 17 sends); a client that offers other protocols
//!   and not this one fails the handshake instead of being mistaken for PostgreSQL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol name PostgreSQL registered.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why the proxy's TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("proxy.{setting} {path}: {source}")]
    Pem {
        /// `certfile` or `keyfile`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong (never the file's content).
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the certificate or key (e.g. the key does not match the certificate).
    #[error("proxy TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server configuration for `certfile` and `keyfile` (`None`: the key is in `certfile`).
pub fn server_config(certfile: &Path, keyfile: Option<&Path>) -> Result<Arc<ServerConfig>, TlsError> {
    fn pem<'a>(setting: &'static str, path: &'a Path) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError + 'a {
        move |source| TlsError::Pem { setting, path: path.to_path_buf(), source }
    }
    let certs = CertificateDer::pem_file_iter(certfile)
        .map_err(pem("certfile", certfile))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem("certfile", certfile))?;
    if certs.is_empty() {
        return Err(pem("certfile", certfile)(rustls_pki_types::pem::Error::NoItemsFound));
    }
    let (setting, key_path) = match keyfile {
        Some(k) => ("keyfile", k),
        None => ("certfile", certfile),
    };
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(pem(setting, key_path))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn errors_name_setting_and_file_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let e = server_config(&dir.path().join("none.pem"), None).unwrap_err().to_string();
        assert!(e.starts_with("proxy.certfile ") && e.contains("none.pem"), "{e}");
        let empty = write(dir.path(), "empty.pem", "no pem here\n");
        let e = server_config(&empty, None).unwrap_err().to_string();
        assert!(e.starts_with("proxy.certfile ") && e.contains("empty.pem"), "{e}");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let c = write(dir.path(), "c.pem", &cert.cert.pem());
        let e = server_config(&c, Some(&dir.path().join("k.pem"))).unwrap_err().to_string();
        assert!(e.starts_with("proxy.keyfile ") && e.contains("k.pem"), "{e}");
        let k = write(dir.path(), "k.pem", &cert.signing_key.serialize_pem());
        let cfg = server_config(&c, Some(&k)).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"postgresql".to_vec()]);
        let both = write(dir.path(), "both.pem", &format!("{}{}", cert.cert.pem(), cert.signing_key.serialize_pem()));
        server_config(&both, None).unwrap();
    }
}
