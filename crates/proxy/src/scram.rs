//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, at both ends, sans-IO: for the
//! pooling proxy, which authenticates clients itself and then logs in to PostgreSQL as them.
//!
//! * [`ServerExchange`]: a client proves it knows the password behind a stored [`Verifier`]
//!   (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as `pg_authid` and PgBouncer's
//!   auth file hold it). Its proof also yields the client's [`ClientKey`].
//! * [`KeyClient`]: logging in to PostgreSQL with that `ClientKey` and the verifier's `ServerKey`,
//!   without the password: PgBouncer's "SCRAM pass-through". It works only where the server
//!   holds the very same verifier (same salt and iterations); otherwise it says so.
//!
//! No channel binding: the proxy terminates the client's TLS, so `SCRAM-SHA-256-PLUS` could not
//! pass through; it is not offered, and a client that insists (`p=`) is refused.
//!
//! Invariants: every comparison of secret material is constant-time; keys never appear in
//! `Debug` output or error messages; malformed input is an error, never a panic.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SASL mechanism the proxy offers.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The client's proof does not match the verifier: a wrong password (28P01 for the client).
    #[error("password authentication failed")]
    WrongPassword,
    /// A message does not follow the protocol; what is wrong (never a secret).
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    /// The client asked for channel binding, which the proxy does not offer.
    #[error("channel binding is not supported by rampart proxy (it terminates TLS)")]
    ChannelBinding,
    /// The server's verifier for the user is not the proxy's (salt or iteration count differ),
    /// so the proxy cannot log in with the client's key.
    #[error(
        "the server's SCRAM secret for this user differs from the proxy's (salt or iteration count): \
         logging in with the client's key needs the very same verifier"
    )]
    SecretsDiffer,
    /// The server's signature does not prove it knows the verifier (or it reported an error).
    #[error("the server failed SCRAM authentication: {0}")]
    ServerRejected(String),
}

/// A stored SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl Verifier {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (salt and keys in
    /// base64), the form `pg_authid.rolpassword` holds. `None` for anything else (an MD5 secret,
    /// a plain password, a malformed verifier): the caller decides what that means.
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|&i| i > 0)?;
        let salt = STANDARD.decode(salt).ok().filter(|s| !s.is_empty())?;
        let key = |t: &str| -> Option<[u8; 32]> { STANDARD.decode(t).ok()?.try_into().ok() };
        Some(Verifier { iterations, salt, stored_key: key(stored)?, server_key: key(server)? })
    }

    /// Whether `password` is the one behind this verifier (for a client that sent it in clear
    /// text): SaltedPassword = Hi(SASLprep(password), salt, iterations), as PostgreSQL computes it.
    pub fn matches_password(&self, password: &str) -> bool {
        // PostgreSQL skips SASLprep for a password it cannot prepare, and uses the bytes as given.
        let prepared = stringprep::saslprep(password).map(|p| p.into_owned()).unwrap_or_else(|_| password.to_string());
        let salted = hi(prepared.as_bytes(), &self.salt, self.iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        bool::from(sha256(&client_key).ct_eq(&self.stored_key))
    }

    /// A verifier for a plain password, with a fresh random salt and PostgreSQL's default
    /// iteration count (for auth-file entries that hold passwords).
    pub fn for_password(password: &str) -> Verifier {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        Verifier::parse(&text).expect("postgres-protocol writes valid verifiers")
    }
}

/// The client's key, recovered from its proof: what logs in to PostgreSQL as that user.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey([u8; 32]);

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(***)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one block: RFC 5802's `Hi`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut prev = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = prev;
    for _ in 1..iterations {
        prev = hmac(password, &[&prev]);
        out = xor(&out, &prev);
    }
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn text(bytes: &[u8]) -> Result<&str, ScramError> {
    std::str::from_utf8(bytes).map_err(|_| ScramError::Malformed("not UTF-8".into()))
}

/// The value of attribute `name` (`name=value`) at the head of `part`.
fn attribute(part: Option<&str>, name: char) -> Result<&str, ScramError> {
    part.and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='))
        .ok_or_else(|| ScramError::Malformed(format!("expected attribute {name}=")))
}

/// A nonce: printable ASCII without `,` (RFC 5802), 24 characters of base64 from 18 random bytes.
pub fn nonce() -> String {
    use rand::Rng;
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

/// The proxy's side of a client's authentication, after the client's first message.
#[derive(Debug)]
pub struct ServerExchange {
    verifier: Verifier,
    /// The GS2 header the client sent, which `c=` must repeat.
    gs2_header: String,
    /// `client-first-message-bare`, `server-first-message`: the start of the AuthMessage.
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Reads the client's first message (the data of its SASLInitialResponse) and answers with
    /// the server's first message (for AuthenticationSASLContinue). `server_nonce`: fresh, from
    /// [`nonce`]. A user without a verifier should still be run through this with a made-up one,
    /// so that an unknown user cannot be told from a wrong password.
    pub fn start(
        verifier: &Verifier,
        client_first: &[u8],
        server_nonce: &str,
    ) -> Result<(ServerExchange, String), ScramError> {
        let message = text(client_first)?;
        let mut parts = message.splitn(3, ',');
        let gs2_flag = parts.next().unwrap_or_default();
        match gs2_flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("unknown channel binding flag".into())),
        }
        let authzid = parts.next().ok_or_else(|| ScramError::Malformed("no GS2 header".into()))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed("an authorization identity is not supported".into()));
        }
        let bare = parts.next().ok_or_else(|| ScramError::Malformed("no client-first-message-bare".into()))?;
        let mut fields = bare.split(',');
        // PostgreSQL ignores the SCRAM user name: the startup packet's user is the one.
        attribute(fields.next(), 'n')?;
        let client_nonce = attribute(fields.next(), 'r')?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ScramError::Malformed("invalid client nonce".into()));
        }
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={}", STANDARD.encode(&verifier.salt), verifier.iterations);
        let exchange = ServerExchange {
            verifier: verifier.clone(),
            gs2_header: format!("{gs2_flag},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Reads the client's final message (SASLResponse): on a valid proof, the server's final
    /// message (for AuthenticationSASLFinal) and the client's key.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, ClientKey), ScramError> {
        let message = text(client_final)?;
        let (without_proof, proof) =
            message.rsplit_once(",p=").ok_or_else(|| ScramError::Malformed("no proof".into()))?;
        let mut fields = without_proof.split(',');
        let binding = attribute(fields.next(), 'c')?;
        if STANDARD.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed("channel binding data does not match the GS2 header".into()));
        }
        if attribute(fields.next(), 'r')? != self.nonce {
            return Err(ScramError::Malformed("nonce does not match".into()));
        }
        let proof: [u8; 32] = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| ScramError::Malformed("invalid proof".into()))?;
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let client_key = xor(&proof, &signature);
        if !bool::from(sha256(&client_key).ct_eq(&self.verifier.stored_key)) {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        Ok((format!("v={}", STANDARD.encode(server_signature)), ClientKey(client_key)))
    }
}

/// Logging in to PostgreSQL with a client's key (SCRAM pass-through).
#[derive(Debug)]
pub struct KeyClient {
    key: ClientKey,
    verifier: Verifier,
    client_first_bare: String,
    /// Set once the server's first message was answered.
    auth_message: Option<String>,
}

impl KeyClient {
    /// Starts with `nonce` (fresh, from [`nonce`]): the client's first message, for the
    /// SASLInitialResponse.
    pub fn start(key: ClientKey, verifier: &Verifier, nonce: &str) -> (KeyClient, String) {
        let client_first_bare = format!("n=,r={nonce}");
        let first = format!("n,,{client_first_bare}");
        (KeyClient { key, verifier: verifier.clone(), client_first_bare, auth_message: None }, first)
    }

    /// Reads the server's first message (AuthenticationSASLContinue): the client's final message.
    pub fn update(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let message = text(server_first)?;
        let mut fields = message.split(',');
        let nonce = attribute(fields.next(), 'r')?;
        let salt = attribute(fields.next(), 's')?;
        let iterations = attribute(fields.next(), 'i')?;
        let ours = self.client_first_bare.trim_start_matches("n=,r=");
        if !nonce.starts_with(ours) || nonce.len() == ours.len() {
            return Err(ScramError::Malformed("server nonce does not extend ours".into()));
        }
        let salt = STANDARD.decode(salt).map_err(|_| ScramError::Malformed("invalid salt".into()))?;
        let iterations: u32 =
            iterations.parse().map_err(|_| ScramError::Malformed("invalid iteration count".into()))?;
        if salt != self.verifier.salt || iterations != self.verifier.iterations {
            return Err(ScramError::SecretsDiffer);
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{},{}", self.client_first_bare, message, without_proof);
        let stored_key = sha256(&self.key.0);
        let proof = xor(&self.key.0, &hmac(&stored_key, &[auth_message.as_bytes()]));
        self.auth_message = Some(auth_message);
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)))
    }

    /// Reads the server's final message (AuthenticationSASLFinal): `Ok` only when the server
    /// proved it holds the verifier.
    pub fn finish(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let message = text(server_final)?;
        if let Some(e) = message.strip_prefix("e=") {
            return Err(ScramError::ServerRejected(e.to_string()));
        }
        let auth_message =
            self.auth_message.as_ref().ok_or_else(|| ScramError::Malformed("final message too early".into()))?;
        let signature = STANDARD
            .decode(attribute(Some(message), 'v')?)
            .map_err(|_| ScramError::Malformed("invalid server signature".into()))?;
        let expected = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        if bool::from(expected.as_slice().ct_eq(&signature)) {
            Ok(())
        } else {
            Err(ScramError::ServerRejected("wrong server signature".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// The verifier PostgreSQL stores for password `foobar` with salt `P1mF9h5YPsWF+3pBGC6Y3w==`.
    const FOOBAR: &str = "SCRAM-SHA-256$4096:P1mF9h5YPsWF+3pBGC6Y3w==$h1zqAiIzqzJnxf1GRFiIbwgc4xX3hMn9axd7v9NuJ1c=:2spNAmq1Tw+Lzi6XU+cWK/CYhvNYiIbMRbRi5izLIuw=";

    /// A client that is not ours (postgres-protocol's, as tokio-postgres uses it) against the
    /// proxy's server side: on the right password, both sides are satisfied.
    fn login(verifier: &Verifier, password: &str) -> Result<ClientKey, ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let (server, first) = ServerExchange::start(verifier, client.message(), &nonce())?;
        client.update(first.as_bytes()).expect("the client takes the server's first message");
        let (last, key) = server.finish(client.message())?;
        client.finish(last.as_bytes()).expect("the client verifies the server's signature");
        Ok(key)
    }

    #[test]
    fn a_client_with_the_password_logs_in_and_a_wrong_one_does_not() {
        let v = Verifier::for_password("s3cret");
        assert!(login(&v, "s3cret").is_ok());
        assert_eq!(login(&v, "S3cret").unwrap_err(), ScramError::WrongPassword);
    }

    #[test]
    fn the_client_key_logs_in_where_the_same_verifier_is_stored() {
        // The proxy learns the key from the client, then logs in to a "server" holding the
        // same verifier (the proxy's own server side stands in for PostgreSQL here; the
        // e2e tests do it against PostgreSQL).
        let v = Verifier::for_password("s3cret");
        let key = login(&v, "s3cret").unwrap();
        let (mut client, first) = KeyClient::start(key.clone(), &v, &nonce());
        let (server, server_first) = ServerExchange::start(&v, first.as_bytes(), &nonce()).unwrap();
        let last = client.update(server_first.as_bytes()).unwrap();
        let (server_final, again) = server.finish(last.as_bytes()).unwrap();
        assert_eq!(again, key);
        client.finish(server_final.as_bytes()).unwrap();
        // A server whose verifier was made with another salt cannot be logged in to this way.
        let other = Verifier::for_password("s3cret");
        let (mut client, first) = KeyClient::start(key, &v, &nonce());
        let (_, server_first) = ServerExchange::start(&other, first.as_bytes(), &nonce()).unwrap();
        assert_eq!(client.update(server_first.as_bytes()).unwrap_err(), ScramError::SecretsDiffer);
    }

    #[test]
    fn a_server_that_does_not_know_the_verifier_is_not_believed() {
        let v = Verifier::for_password("s3cret");
        let key = login(&v, "s3cret").unwrap();
        let (mut client, first) = KeyClient::start(key, &v, &nonce());
        let (_, server_first) = ServerExchange::start(&v, first.as_bytes(), &nonce()).unwrap();
        client.update(server_first.as_bytes()).unwrap();
        let forged = format!("v={}", STANDARD.encode([7u8; 32]));
        assert!(matches!(client.finish(forged.as_bytes()), Err(ScramError::ServerRejected(_))));
        assert!(
            matches!(client.finish(b"e=invalid-proof"), Err(ScramError::ServerRejected(e)) if e == "invalid-proof")
        );
    }

    #[test]
    fn verifiers_parse_as_postgresql_stores_them_and_keep_their_keys_out_of_logs() {
        // FOOBAR was computed apart, with Python's hashlib, as PostgreSQL's scram_build_secret
        // does.
        let v = Verifier::parse(FOOBAR).expect("a valid verifier");
        assert_eq!(v.iterations, 4096);
        assert!(!format!("{v:?}").contains("h1zqAi"), "{v:?}");
        assert_eq!(login(&v, "foobar").map(|_| ()), Ok(()));
        assert!(v.matches_password("foobar") && !v.matches_password("foobaR"));
        for bad in [
            "md5a3556571e93b0d20722ba62be61e8c2d",
            "plain",
            "SCRAM-SHA-256$0:P1mF9h5YPsWF+3pBGC6Y3w==$lrhaHuLLBbsMvWsntd1wdvkbLNVRkzW/pAZDoBTb1Xk=:eEqQlnLvULJgkL9DsxWBIMwWG/2X5KIJOCwrkdNNzOs=",
            "SCRAM-SHA-256$4096:P1mF9h5YPsWF+3pBGC6Y3w==$short:eEqQlnLvULJgkL9DsxWBIMwWG/2X5KIJOCwrkdNNzOs=",
            "SCRAM-SHA-256$4096:$lrhaHuLLBbsMvWsntd1wdvkbLNVRkzW/pAZDoBTb1Xk=:eEqQlnLvULJgkL9DsxWBIMwWG/2X5KIJOCwrkdNNzOs=",
        ] {
            assert_eq!(Verifier::parse(bad), None, "{bad}");
        }
        assert_eq!(format!("{:?}", login(&v, "foobar").unwrap()), "ClientKey(***)");
    }

    #[test]
    fn protocol_violations_are_refused_by_name() {
        let v = Verifier::for_password("x");
        let start = |m: &str| ServerExchange::start(&v, m.as_bytes(), "SRV").map(|_| ());
        assert_eq!(start("p=tls-server-end-point,,n=,r=abc").unwrap_err(), ScramError::ChannelBinding);
        assert!(matches!(start("n,a=admin,n=,r=abc"), Err(ScramError::Malformed(m)) if m.contains("authorization")));
        assert!(matches!(start("n,,r=abc"), Err(ScramError::Malformed(_))));
        assert!(matches!(start("n,,n=,r=a,b c"), Ok(())), "extensions after the nonce are allowed");
        assert!(matches!(start("n,,n=,r="), Err(ScramError::Malformed(m)) if m.contains("nonce")));
        let (server, _) = ServerExchange::start(&v, b"n,,n=,r=abc", "SRV").unwrap();
        let wrong_nonce = format!("c=biws,r=abcXXX,p={}", STANDARD.encode([0u8; 32]));
        assert!(matches!(server.finish(wrong_nonce.as_bytes()), Err(ScramError::Malformed(m)) if m.contains("nonce")));
        let (server, _) = ServerExchange::start(&v, b"n,,n=,r=abc", "SRV").unwrap();
        let wrong_binding = format!("c=eSws,r=abcSRV,p={}", STANDARD.encode([0u8; 32]));
        assert!(
            matches!(server.finish(wrong_binding.as_bytes()), Err(ScramError::Malformed(m)) if m.contains("binding"))
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_message(first in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
                                       last in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let v = Verifier::parse(FOOBAR).unwrap();
            if let Ok((server, _)) = ServerExchange::start(&v, &first, "SRV") {
                let _ = server.finish(&last);
            }
            let key = ClientKey([1; 32]);
            let (mut client, _) = KeyClient::start(key, &v, "abc");
            let _ = client.update(&first);
            let _ = client.finish(&last);
        }
    }
}
