//! TLS for the agent's own connections to PostgreSQL (to the leader as the rewind role, to its
//! own server over TCP as the superuser), following the role's libpq parameters the way libpq
//! does, so that one `postgresql.authentication` section serves libpq's programs (replication,
//! pg_basebackup, pg_rewind) and the agent alike.
//!
//! Invariant: a connection is never less protected than libpq would make it with the same
//! parameters. `sslmode` as libpq reads it:
//! * absent or `prefer` (and `allow`, which libpq tries the other way round): TLS when the server
//!   offers it, the certificate not checked;
//! * `require`: TLS or no connection; the certificate is checked against `sslrootcert` when one is
//!   given (libpq does the same when its root file exists);
//! * `verify-ca`: the chain must lead to `sslrootcert`; `verify-full`: and name the host;
//! * `disable`: no TLS.
//!
//! `sslcert`/`sslkey` present a client certificate. Unix-socket connections never use TLS
//! (PostgreSQL does not offer it there).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::settings::Credentials;

/// How far the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Not at all (libpq's `prefer`, `allow`, `require` without a root certificate).
    Nothing,
    /// The chain must lead to the root certificate (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// What libpq's `sslmode` (and `sslrootcert`) ask for: the mode for tokio-postgres and the check.
fn mode_of(creds: &Credentials) -> Result<(SslMode, Check), String> {
    let has_root = creds.option("sslrootcert").is_some();
    Ok(match creds.option("sslmode").unwrap_or("prefer") {
        "disable" => (SslMode::Disable, Check::Nothing),
        "allow" | "prefer" => (SslMode::Prefer, Check::Nothing),
        "require" if has_root => (SslMode::Require, Check::Chain),
        "require" => (SslMode::Require, Check::Nothing),
        "verify-ca" => (SslMode::Require, Check::Chain),
        "verify-full" => (SslMode::Require, Check::Full),
        other => return Err(format!("sslmode {other:?} is not one libpq knows")),
    })
}

/// Sets `config`'s TLS mode for a TCP connection as `creds` and returns the connector to use.
/// An error names the file or setting that is wrong.
pub(crate) fn connector(config: &mut tokio_postgres::Config, creds: &Credentials) -> Result<MakeRustlsConnect, String> {
    let (mode, check) = mode_of(creds)?;
    config.ssl_mode(mode);
    let provider = Arc::new(ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(AnyCertificate { algorithms: provider.signature_verification_algorithms }),
        Check::Chain | Check::Full => {
            let Some(root) = creds.option("sslrootcert") else {
                return Err("sslmode verify-ca/verify-full needs sslrootcert (the agent reads no default file)".into());
            };
            let trusted = read_certs(Path::new(root))?;
            let mut roots = RootCertStore::empty();
            for cert in &trusted {
                roots.add(cert.clone()).map_err(|e| format!("sslrootcert {root}: {e}"))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("sslrootcert {root}: {e}"))?;
            if check == Check::Full {
                webpki
            } else {
                Arc::new(ChainOnly { webpki, pinned: trusted })
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let tls = match (creds.option("sslcert"), creds.option("sslkey")) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(Path::new(cert))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!("sslkey {key}: {e} (encrypted keys are not supported for the agent's own connections)")
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("sslcert/sslkey: {e}"))?
        }
        (Some(_), None) => return Err("sslcert is set but sslkey is not".into()),
        (None, Some(_)) => return Err("sslkey is set but sslcert is not".into()),
        (None, None) => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(tls))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// libpq's `verify-ca`: the chain is checked, the name is not. A server showing exactly a
/// certificate of `sslrootcert` passes too, as with libpq (OpenSSL): `openssl req -x509` makes
/// self-signed certificates with `CA:TRUE`, which webpki refuses as an end-entity certificate.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            Err(_) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// libpq's `prefer`/`require` without a root certificate: any certificate, but the handshake's
/// signatures are still checked (the session is encrypted to whoever holds the key it shows).
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(pairs: &[(&str, &str)]) -> Credentials {
        let mut c = Credentials::new("u", "p");
        for (k, v) in pairs {
            c.options.insert(k.to_string(), v.to_string());
        }
        c
    }

    #[test]
    fn sslmode_reads_as_libpq_reads_it() {
        assert_eq!(mode_of(&creds(&[])).unwrap(), (SslMode::Prefer, Check::Nothing));
        assert_eq!(mode_of(&creds(&[("sslmode", "disable")])).unwrap(), (SslMode::Disable, Check::Nothing));
        assert_eq!(mode_of(&creds(&[("sslmode", "require")])).unwrap(), (SslMode::Require, Check::Nothing));
        assert_eq!(
            mode_of(&creds(&[("sslmode", "require"), ("sslrootcert", "/r.crt")])).unwrap(),
            (SslMode::Require, Check::Chain)
        );
        assert_eq!(mode_of(&creds(&[("sslmode", "verify-ca")])).unwrap(), (SslMode::Require, Check::Chain));
        assert_eq!(mode_of(&creds(&[("sslmode", "verify-full")])).unwrap(), (SslMode::Require, Check::Full));
        assert!(mode_of(&creds(&[("sslmode", "sometimes")])).is_err());
    }

    #[test]
    fn verify_ca_accepts_the_very_self_signed_certificate_of_sslrootcert() {
        let pem = |t: &str| CertificateDer::from_pem_slice(t.as_bytes()).unwrap();
        let mine = pem(include_str!("../../api/testdata/self_signed.crt"));
        let other = pem(include_str!("../../api/testdata/other_self_signed.crt"));
        let mut roots = RootCertStore::empty();
        roots.add(mine.clone()).unwrap();
        let provider = Arc::new(ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let v = ChainOnly { webpki, pinned: vec![mine.clone()] };
        let name = ServerName::try_from("10.9.9.9").unwrap();
        assert!(v.verify_server_cert(&mine, &[], &name, &[], UnixTime::now()).is_ok());
        assert!(v.verify_server_cert(&other, &[], &name, &[], UnixTime::now()).is_err());
    }

    #[test]
    fn verifying_needs_a_root_and_files_that_exist() {
        let mut config = tokio_postgres::Config::new();
        let e = connector(&mut config, &creds(&[("sslmode", "verify-ca")])).err().unwrap();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = connector(&mut config, &creds(&[("sslmode", "verify-ca"), ("sslrootcert", "/nonexistent/root.crt")]))
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/root.crt"), "{e}");
        let e = connector(&mut config, &creds(&[("sslcert", "/c.crt")])).err().unwrap();
        assert!(e.contains("sslkey"), "{e}");
        assert!(connector(&mut config, &creds(&[])).is_ok());
        assert_eq!(config.get_ssl_mode(), SslMode::Prefer);
    }
}
