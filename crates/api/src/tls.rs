//! TLS for the REST API (`restapi.certfile`, `keyfile`, `cafile`, `verify_client`) and for the
//! requests this API makes to other members' APIs.
//!
//! Invariants kept here:
//! * every rustls configuration is built with the ring provider passed explicitly
//!   ([`ring_provider`]), never through the process-wide default, so it cannot panic with "no
//!   process-level CryptoProvider" or pick aws-lc-rs, whatever else the binary links;
//! * `verify_client: required` makes the handshake itself fail for a client without a certificate
//!   signed by `cafile`, so no request of such a client ever reaches a handler; `optional` checks
//!   a certificate when one is sent and lets the access policy refuse writes without one;
//! * a missing or unreadable file is an error at start-up, naming the file and never its content.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Whether the API asks clients for a certificate (`restapi.verify_client`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientCertMode {
    /// No client certificate is requested.
    #[default]
    None,
    /// A certificate is verified when sent; write requests without one are refused (403).
    Optional,
    /// Every connection must present a certificate signed by `cafile`.
    Required,
}

/// The TLS part of the `restapi` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// Server certificate chain (PEM); may also hold the key.
    pub certfile: PathBuf,
    /// Server private key (PEM); `None` means it is in `certfile`.
    pub keyfile: Option<PathBuf>,
    /// CA bundle (PEM) that client certificates, and peers' server certificates, must chain to.
    pub cafile: Option<PathBuf>,
    /// Client certificate policy.
    pub verify_client: ClientCertMode,
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("restapi.{setting} {path}: {source}")]
    Pem {
        /// The setting naming the file (`certfile`, `keyfile`, `cafile`).
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong (never the file's content).
        source: rustls_pki_types::pem::Error,
    },
    /// `verify_client` is set but there is no `cafile` to check certificates with.
    #[error("restapi.verify_client needs restapi.cafile to check client certificates")]
    NoCa,
    /// rustls refused the certificates or key (e.g. the key does not match the certificate).
    #[error("restapi TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built (e.g. an empty `cafile`).
    #[error("restapi.cafile: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The one crypto provider used by every TLS configuration of this crate.
pub fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(setting: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem { setting, path: path.to_path_buf(), source };
    let certs = CertificateDer::pem_file_iter(path).map_err(pem)?.collect::<Result<Vec<_>, _>>().map_err(pem)?;
    if certs.is_empty() {
        return Err(pem(rustls_pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

fn read_key(settings: &TlsSettings) -> Result<PrivateKeyDer<'static>, TlsError> {
    let (setting, path) = match &settings.keyfile {
        Some(k) => ("keyfile", k.as_path()),
        None => ("certfile", settings.certfile.as_path()),
    };
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem { setting, path: path.to_path_buf(), source })
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("cafile", path)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The server configuration for `settings` (HTTP/1.1 only, as the server speaks nothing else).
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = ring_provider();
    let certs = read_certs("certfile", &settings.certfile)?;
    let key = read_key(settings)?;
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match settings.verify_client {
        ClientCertMode::None => builder.with_no_client_auth(),
        mode => {
            let ca = settings.cafile.as_deref().ok_or(TlsError::NoCa)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider);
            let verifier = if mode == ClientCertMode::Optional { verifier.allow_unauthenticated() } else { verifier };
            let pinned = read_certs("cafile", ca)?;
            builder.with_client_cert_verifier(Arc::new(PinnedOrChainedClient { webpki: verifier.build()?, pinned }))
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration for requests to other members' `https://` APIs: their certificates
/// must chain to `cafile` (or, without one, to a certificate in our own `certfile`, which covers
/// clusters sharing one self-signed certificate or CA chain), and our certificate is offered as
/// the client certificate, since their `verify_client` may require one.
pub fn peer_client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let trusted = match &settings.cafile {
        Some(ca) => read_certs("cafile", ca)?,
        None => read_certs("certfile", &settings.certfile)?,
    };
    let mut roots = RootCertStore::empty();
    for cert in &trusted {
        roots.add(cert.clone())?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), ring_provider())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrChained { webpki, pinned: trusted }));
    let certs = read_certs("certfile", &settings.certfile)?;
    let mut config = builder.with_client_auth_cert(certs, read_key(settings)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Server certificates of other members: chained to a trusted certificate as usual, or exactly
/// one of the trusted certificates itself. The second case is the self-signed certificate that
/// `openssl req -x509` makes (and Patroni's guides and acceptance suite use for every member):
/// it carries `CA:TRUE`, which webpki refuses for an end-entity certificate, while Python's ssl,
/// which Patroni uses, accepts it when it is its own trust anchor. Byte-for-byte equality with a
/// certificate the operator listed in `cafile` (or `certfile`) is pinning, no weaker than a chain.
#[derive(Debug)]
struct PinnedOrChained {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrChained {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
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

/// Client certificates under `verify_client`: chained to `cafile` as usual, or exactly one of
/// its certificates, for the same reason as [`PinnedOrChained`]: members of a cluster set up
/// with one `openssl req -x509` certificate present it as their client certificate too.
#[derive(Debug)]
struct PinnedOrChainedClient {
    webpki: Arc<dyn ClientCertVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ClientCertVerifier for PinnedOrChainedClient {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.webpki.verify_client_cert(end_entity, intermediates, now) {
            Err(_) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                Ok(ClientCertVerified::assertion())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_showing_the_very_self_signed_certificate_in_cafile_is_accepted() {
        let mine = pem(include_str!("../testdata/self_signed.crt"));
        let other = pem(include_str!("../testdata/other_self_signed.crt"));
        let mut roots = RootCertStore::empty();
        roots.add(mine.clone()).unwrap();
        let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ring_provider()).build().unwrap();
        let now = UnixTime::now();
        assert!(webpki.verify_client_cert(&mine, &[], now).is_err(), "webpki alone refuses a CA as end entity");
        let v = PinnedOrChainedClient { webpki, pinned: vec![mine.clone()] };
        assert!(v.verify_client_cert(&mine, &[], now).is_ok());
        assert!(v.verify_client_cert(&other, &[], now).is_err(), "anything else must still chain");
        assert!(v.client_auth_mandatory(), "required stays required");
    }

    /// `openssl req -x509` certificates (CA:TRUE, SAN 127.0.0.1), as Patroni's suite makes them.
    fn pem(text: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_peer_showing_the_very_self_signed_certificate_we_trust_is_accepted() {
        let mine = pem(include_str!("../testdata/self_signed.crt"));
        let other = pem(include_str!("../testdata/other_self_signed.crt"));
        let mut roots = RootCertStore::empty();
        roots.add(mine.clone()).unwrap();
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), ring_provider()).build().unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let now = UnixTime::now();
        // webpki alone refuses it: a CA certificate used as an end-entity certificate.
        assert!(webpki.verify_server_cert(&mine, &[], &name, &[], now).is_err());
        let v = PinnedOrChained { webpki, pinned: vec![mine.clone()] };
        assert!(v.verify_server_cert(&mine, &[], &name, &[], now).is_ok());
        // Anything else must still chain to a trusted certificate.
        assert!(v.verify_server_cert(&other, &[], &name, &[], now).is_err());
    }

    #[test]
    fn missing_files_are_named_and_keys_never_printed() {
        let dir = std::env::temp_dir().join(format!("rampart-api-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = TlsSettings {
            certfile: dir.join("nope.pem"),
            keyfile: None,
            cafile: None,
            verify_client: ClientCertMode::None,
        };
        let e = server_config(&s).unwrap_err().to_string();
        assert!(e.contains("restapi.certfile") && e.contains("nope.pem"), "{e}");

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        let certfile = dir.join("cert.pem");
        let keyfile = dir.join("key.pem");
        std::fs::write(&certfile, cert.pem()).unwrap();
        // A key file that is not PEM at all.
        std::fs::write(&keyfile, "secret-bytes-that-must-not-leak").unwrap();
        let s = TlsSettings { certfile: certfile.clone(), keyfile: Some(keyfile.clone()), ..s };
        let e = server_config(&s).unwrap_err().to_string();
        assert!(e.contains("restapi.keyfile") && !e.contains("secret-bytes"), "{e}");

        // Required client certificates without a CA.
        std::fs::write(&keyfile, key.serialize_pem()).unwrap();
        let s = TlsSettings { verify_client: ClientCertMode::Required, ..s };
        assert!(matches!(server_config(&s), Err(TlsError::NoCa)));
        let s = TlsSettings { verify_client: ClientCertMode::None, ..s };
        server_config(&s).unwrap();
        peer_client_config(&s).unwrap();
        // Key and certificate together in certfile.
        std::fs::write(&certfile, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        server_config(&TlsSettings { keyfile: None, ..s }).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
