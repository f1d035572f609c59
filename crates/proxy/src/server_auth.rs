//! The proxy logging in to PostgreSQL as a client it authenticated itself, sans-IO: whatever
//! the server asks for (nothing, a cleartext password, MD5, SCRAM-SHA-256), answered from what
//! the client proved ([`Credentials`]) and the user's stored [`Secret`], without knowing the
//! password where the secret suffices (MD5 secret; SCRAM pass-through with the client's key).
//!
//! [`ServerLogin::on_message`] takes each backend message up to `AuthenticationOk` and returns
//! the bytes to send. When the server asks for something the proxy cannot answer, the error says
//! what and why (it is logged and the client gets a FATAL error; nothing is guessed).
//!
//! Invariant: a secret or password never appears in an error or in `Debug` output.

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use crate::auth_file::Secret;
use crate::backend::{AuthCode, BackendMessage};
use crate::client_auth::{Credentials, PASSWORD_MESSAGE};
use crate::frame::{put_frame, Frame};
use crate::scram::{self, KeyClient, ScramError};
use crate::wire;

/// Why the proxy could not log in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The server asks for something the proxy cannot answer with what it has.
    #[error("cannot log in to PostgreSQL as \"{user}\": the server asks for {asked}, and {why}")]
    Cannot {
        /// The user.
        user: String,
        /// What the server asked for.
        asked: &'static str,
        /// Why the proxy cannot answer.
        why: &'static str,
    },
    /// The SCRAM exchange failed on the proxy's side (the server's verifier differs, or it did
    /// not prove it knows it).
    #[error("cannot log in to PostgreSQL as \"{user}\": {source}")]
    Scram {
        /// The user.
        user: String,
        /// What went wrong.
        source: ScramError,
    },
    /// The server refused (its ErrorResponse text).
    #[error("PostgreSQL refused the login of \"{user}\": {message}")]
    Refused {
        /// The user.
        user: String,
        /// The server's SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server sent something out of place.
    #[error("unexpected message from PostgreSQL while logging in as \"{user}\": {what}")]
    Unexpected {
        /// The user.
        user: String,
        /// What arrived.
        what: String,
    },
}

/// What to do after a backend message.
#[derive(Debug)]
pub enum LoginStep {
    /// Send these bytes and wait for the next message.
    Send(BytesMut),
    /// `AuthenticationOk` arrived: the session is the user's (ParameterStatus, BackendKeyData and
    /// ReadyForQuery follow).
    LoggedIn,
}

enum Scram {
    Password(ScramSha256),
    Key(KeyClient),
}

impl std::fmt::Debug for Scram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scram::Password(_) => "Scram::Password",
            Scram::Key(_) => "Scram::Key",
        })
    }
}

/// One login in progress.
#[derive(Debug)]
pub struct ServerLogin {
    user: String,
    credentials: Credentials,
    secret: Option<Secret>,
    scram: Option<Scram>,
}

impl ServerLogin {
    /// Logs in as `user` with what the client proved and the user's stored secret.
    pub fn new(user: &str, credentials: Credentials, secret: Option<Secret>) -> ServerLogin {
        ServerLogin { user: user.to_string(), credentials, secret, scram: None }
    }

    /// The password, if the proxy knows it (sent by the client, or stored in clear).
    fn password(&self) -> Option<&str> {
        match (&self.credentials, &self.secret) {
            (Credentials::Password(p), _) => Some(&p.0),
            (_, Some(Secret::Plain(p))) => Some(p),
            _ => None,
        }
    }

    fn cannot(&self, asked: &'static str, why: &'static str) -> LoginError {
        LoginError::Cannot { user: self.user.clone(), asked, why }
    }

    fn scram_error(&self, source: ScramError) -> LoginError {
        LoginError::Scram { user: self.user.clone(), source }
    }

    /// The next backend message.
    pub fn on_message(&mut self, frame: &Frame) -> Result<LoginStep, LoginError> {
        let unexpected = |what: String| LoginError::Unexpected { user: self.user.clone(), what };
        let message = BackendMessage::parse(frame).map_err(|e| unexpected(e.to_string()))?;
        let code = match message {
            BackendMessage::Authentication(code) => code,
            BackendMessage::ErrorResponse(fields) => {
                let message = fields.message().unwrap_or("(no message)").to_string();
                let code = fields.code().unwrap_or_default().to_string();
                return Err(LoginError::Refused { user: self.user.clone(), code, message });
            }
            other => return Err(unexpected(format!("{other:?}"))),
        };
        let data = frame.body().get(4..).unwrap_or_default();
        match code {
            AuthCode::OK => Ok(LoginStep::LoggedIn),
            AuthCode::CLEARTEXT_PASSWORD => {
                let p = self.password().ok_or_else(|| {
                    self.cannot("a cleartext password", "the proxy does not know it (the client did not send it)")
                })?;
                Ok(LoginStep::Send(password_message(p.as_bytes())))
            }
            AuthCode::MD5_PASSWORD => {
                let salt: [u8; 4] = data.try_into().map_err(|_| unexpected("a malformed MD5 request".into()))?;
                let response = match (self.password(), &self.secret) {
                    (Some(p), _) => {
                        postgres_protocol::authentication::md5_hash(self.user.as_bytes(), p.as_bytes(), salt)
                    }
                    (None, Some(Secret::Md5(hex))) => md5_from_secret(hex, salt),
                    _ => return Err(self.cannot("MD5", "the proxy holds neither the password nor its MD5 secret")),
                };
                Ok(LoginStep::Send(password_message(response.as_bytes())))
            }
            AuthCode::SASL => {
                let offered = data.split(|&b| b == 0).any(|m| m == scram::MECHANISM.as_bytes());
                if !offered {
                    return Err(
                        self.cannot("a SASL mechanism other than SCRAM-SHA-256", "that is the only one it speaks")
                    );
                }
                let (scram, first) = match (self.password(), &self.credentials, &self.secret) {
                    (Some(p), _, _) => {
                        let client = ScramSha256::new(p.as_bytes(), ChannelBinding::unsupported());
                        let first = client.message().to_vec();
                        (Scram::Password(client), first)
                    }
                    (None, Credentials::ScramKey(key), Some(Secret::Scram(verifier))) => {
                        let (client, first) = KeyClient::start(key.clone(), verifier, &scram::nonce());
                        (Scram::Key(client), first.into_bytes())
                    }
                    _ => {
                        return Err(self.cannot(
                            "SCRAM-SHA-256",
                            "the proxy holds neither the password nor the client's SCRAM key with its verifier",
                        ))
                    }
                };
                self.scram = Some(scram);
                let mut out = BytesMut::new();
                put_frame(&mut out, PASSWORD_MESSAGE, |d| {
                    wire::put_cstr(d, scram::MECHANISM.as_bytes());
                    d.put_u32(first.len() as u32);
                    d.put_slice(&first);
                });
                Ok(LoginStep::Send(out))
            }
            AuthCode::SASL_CONTINUE => {
                let response = match self.scram.as_mut() {
                    Some(Scram::Password(c)) => {
                        c.update(data).map_err(|e| unexpected(format!("SCRAM: {e}")))?;
                        c.message().to_vec()
                    }
                    Some(Scram::Key(c)) => c.update(data).map_err(|e| self.scram_error(e))?.into_bytes(),
                    None => return Err(unexpected("SASLContinue before SASL".into())),
                };
                let mut out = BytesMut::new();
                put_frame(&mut out, PASSWORD_MESSAGE, |d| d.put_slice(&response));
                Ok(LoginStep::Send(out))
            }
            AuthCode::SASL_FINAL => {
                match self.scram.take() {
                    Some(Scram::Password(mut c)) => {
                        c.finish(data).map_err(|e| self.scram_error(ScramError::ServerRejected(e.to_string())))?
                    }
                    Some(Scram::Key(c)) => c.finish(data).map_err(|e| self.scram_error(e))?,
                    None => return Err(unexpected("SASLFinal before SASL".into())),
                }
                // AuthenticationOk follows.
                Ok(LoginStep::Send(BytesMut::new()))
            }
            AuthCode(other) => Err(self.cannot(
                match other {
                    2 => "Kerberos",
                    6 => "SCM credentials",
                    7 | 8 => "GSSAPI",
                    9 => "SSPI",
                    _ => "an unknown authentication method",
                },
                "the proxy does not speak it",
            )),
        }
    }
}

/// `md5` and the hex MD5 of the stored secret's hex digits and the salt.
fn md5_from_secret(hex: &str, salt: [u8; 4]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(hex.as_bytes());
    h.update(salt);
    let digest = h.finalize();
    format!("md5{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn password_message(text: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    put_frame(&mut out, PASSWORD_MESSAGE, |d| wire::put_cstr(d, text));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AUTHENTICATION;
    use crate::client_auth::{ClientAuth, Password, Progress, Who};
    use crate::frame::split_frame;
    use crate::hba::{Decision, Method};
    use crate::scram::Verifier;

    /// An Authentication message, as a server sends it.
    fn auth_frame(code: AuthCode, data: &[u8]) -> Frame {
        let mut body = code.0.to_be_bytes().to_vec();
        body.extend_from_slice(data);
        Frame::new(AUTHENTICATION, &body)
    }

    /// Plays PostgreSQL with the proxy's own client-side state machine (itself tested against
    /// postgres-protocol's client; the e2e tests use a real server): runs `login` against a
    /// server that authenticates with `method` and holds `stored`.
    fn against(method: Method, stored: Secret, mut login: ServerLogin) -> Result<(), String> {
        let who = Who { user: "alice".into(), database: "app".into(), host: "127.0.0.1".into(), ssl: false };
        let (mut server, mut progress) = ClientAuth::begin(who, Decision { method, line: Some(1) }, Some(stored));
        for _ in 0..8 {
            let mut to_client = match progress {
                Progress::Send(b) => b,
                Progress::Done(b, Ok(_)) => {
                    let mut b = b;
                    while let Some(f) = split_frame(&mut b, 1 << 20).unwrap() {
                        if let LoginStep::LoggedIn = login.on_message(&f).map_err(|e| e.to_string())? {
                            return Ok(());
                        }
                    }
                    return Err("no AuthenticationOk".into());
                }
                Progress::Done(_, Err(e)) => return Err(e.message),
            };
            let f = split_frame(&mut to_client, 1 << 20).unwrap().unwrap();
            let LoginStep::Send(mut reply) = login.on_message(&f).map_err(|e| e.to_string())? else {
                return Err("logged in too early".into());
            };
            let reply = split_frame(&mut reply, 1 << 20).unwrap().unwrap();
            progress = server.on_message(&reply);
        }
        Err("too many steps".into())
    }

    #[test]
    fn the_password_answers_every_method() {
        let creds = || Credentials::Password(Password("s3cret".into()));
        let stored = Secret::Plain("s3cret".into());
        for method in [Method::Trust, Method::Password, Method::Md5, Method::ScramSha256] {
            assert_eq!(against(method, stored.clone(), ServerLogin::new("alice", creds(), None)), Ok(()), "{method:?}");
        }
        // A password in the proxy's own store serves too.
        let login = ServerLogin::new("alice", Credentials::None, Some(stored.clone()));
        assert_eq!(against(Method::ScramSha256, stored, login), Ok(()));
    }

    #[test]
    fn without_the_password_the_md5_secret_or_the_scram_key_log_in() {
        let md5 = Secret::parse(&postgres_protocol::password::md5(b"s3cret", "alice")).unwrap();
        let login = ServerLogin::new("alice", Credentials::Md5, Some(md5.clone()));
        assert_eq!(against(Method::Md5, md5.clone(), login), Ok(()));
        // SCRAM pass-through: the key the client proved, and the very verifier the server holds.
        let verifier = Verifier::for_password("s3cret");
        let mut client =
            postgres_protocol::authentication::sasl::ScramSha256::new(b"s3cret", ChannelBinding::unsupported());
        let (exchange, first) = scram::ServerExchange::start(&verifier, client.message(), &scram::nonce()).unwrap();
        client.update(first.as_bytes()).unwrap();
        let (_, key) = exchange.finish(client.message()).unwrap();
        let stored = Secret::Scram(verifier);
        let login = ServerLogin::new("alice", Credentials::ScramKey(key.clone()), Some(stored.clone()));
        assert_eq!(against(Method::ScramSha256, stored.clone(), login), Ok(()));
        // What cannot work says why, before anything is sent.
        let login = ServerLogin::new("alice", Credentials::ScramKey(key), Some(stored.clone()));
        let e = against(Method::Password, stored, login).unwrap_err();
        assert!(e.contains("a cleartext password") && e.contains("does not know it"), "{e}");
        let login = ServerLogin::new("alice", Credentials::Md5, Some(md5.clone()));
        let e = against(Method::ScramSha256, Secret::Plain("s3cret".into()), login).unwrap_err();
        assert!(e.contains("SCRAM-SHA-256"), "{e}");
        assert!(!e.contains("s3cret"));
    }

    #[test]
    fn refusals_and_surprises_from_the_server_are_reported() {
        let mut login = ServerLogin::new("alice", Credentials::None, None);
        let mut body = Vec::new();
        for (code, text) in
            [(b'S', "FATAL"), (b'C', "28P01"), (b'M', "password authentication failed for user \"alice\"")]
        {
            body.push(code);
            body.extend_from_slice(text.as_bytes());
            body.push(0);
        }
        body.push(0);
        let e = login.on_message(&Frame::new(b'E', &body)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PostgreSQL refused the login of \"alice\": password authentication failed for user \"alice\""
        );
        let e = login.on_message(&auth_frame(AuthCode(7), &[])).unwrap_err();
        assert!(e.to_string().contains("GSSAPI"), "{e}");
        let e = login.on_message(&auth_frame(AuthCode::SASL, b"SCRAM-SHA-256-PLUS\0\0")).unwrap_err();
        assert!(e.to_string().contains("other than SCRAM-SHA-256"), "{e}");
        let e = login.on_message(&auth_frame(AuthCode::SASL_CONTINUE, b"r=x")).unwrap_err();
        assert!(e.to_string().contains("before SASL"), "{e}");
        assert!(login.on_message(&Frame::new(b'Z', b"I")).is_err());
    }
}
