//! The proxy's side of a client's authentication, sans-IO, for when it authenticates clients
//! itself (pooling): the method from the [`crate::hba`] rules, the user's [`Secret`], and the
//! messages of PostgreSQL's protocol in both directions, with PostgreSQL's error texts.
//!
//! [`ClientAuth::begin`] returns the first bytes to send; each later client message goes through
//! [`ClientAuth::on_message`] until it returns [`Progress::Done`]. On success the client has
//! been sent `AuthenticationOk` and the caller learns what it may log in to PostgreSQL with (the
//! client's SCRAM key, or the password it sent in clear text).
//!
//! Invariants, as in PostgreSQL: an unknown user, or one whose secret cannot serve the method,
//! goes through the whole exchange and fails only at its end with the same error as a wrong
//! password (FATAL 28P01), so that a client cannot tell which users exist; a secret never
//! appears in a message or an error.

use bytes::{BufMut, BytesMut};
use subtle::ConstantTimeEq;

use crate::auth_file::Secret;
use crate::backend::{AuthCode, ErrorResponse, Severity, SqlState, AUTHENTICATION};
use crate::frame::{put_frame, Frame};
use crate::hba::{Decision, Method};
use crate::scram::{self, ClientKey, ScramError, ServerExchange, Verifier};
use crate::wire;

/// The frontend's password-family message (PasswordMessage, SASLInitialResponse, SASLResponse).
pub const PASSWORD_MESSAGE: u8 = b'p';

/// `28P01` invalid_password.
const INVALID_PASSWORD: SqlState = SqlState::new("28P01");
/// `28000` invalid_authorization_specification.
const INVALID_AUTHORIZATION: SqlState = SqlState::new("28000");

/// Who is logging in, for the rules' error messages.
#[derive(Clone, Debug)]
pub struct Who {
    /// The user of the startup packet.
    pub user: String,
    /// The database of the startup packet.
    pub database: String,
    /// The client's address, as PostgreSQL prints it.
    pub host: String,
    /// The session runs over TLS.
    pub ssl: bool,
}

/// What the client proved, for logging in to PostgreSQL as it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing (trust).
    None,
    /// Its SCRAM key (see [`crate::scram::KeyClient`]).
    ScramKey(ClientKey),
    /// Its password, sent in clear text (the `password` method).
    Password(Password),
    /// Its MD5 secret was checked; logging in to an MD5 server needs that secret from the store.
    Md5,
}

/// A password a client sent, kept out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// The outcome of one step.
#[derive(Debug)]
pub enum Progress {
    /// Send these bytes and wait for the client's next message.
    Send(BytesMut),
    /// Finished: send these bytes (AuthenticationOk, or the FATAL error), then go on or close.
    Done(BytesMut, Result<Credentials, ErrorResponse>),
}

#[derive(Debug)]
enum State {
    Scram { verifier: Verifier, known: bool },
    ScramContinue { exchange: Box<ServerExchange>, known: bool },
    Md5 { salt: [u8; 4] },
    Cleartext,
    Finished,
}

/// One client's authentication in progress.
#[derive(Debug)]
pub struct ClientAuth {
    who: Who,
    secret: Option<Secret>,
    state: State,
}

impl ClientAuth {
    /// Starts authenticating `who`, whose stored secret is `secret` (`None`: unknown user), as
    /// the rules decided.
    pub fn begin(who: Who, decision: Decision, secret: Option<Secret>) -> (ClientAuth, Progress) {
        let mut auth = ClientAuth { who, secret, state: State::Finished };
        let progress = match decision.method {
            Method::Reject => {
                let e = auth.rejected(decision.line.is_some());
                Progress::Done(encode_error(&e), Err(e))
            }
            Method::Trust => Progress::Done(auth_ok(), Ok(Credentials::None)),
            // PostgreSQL runs SCRAM for an md5 rule when the stored secret is a SCRAM verifier.
            Method::Md5 if !matches!(auth.secret, Some(Secret::Scram(_))) => {
                let salt = random_salt();
                auth.state = State::Md5 { salt };
                Progress::Send(auth_request(AuthCode::MD5_PASSWORD, &salt))
            }
            Method::Md5 | Method::ScramSha256 => {
                let usable = auth.secret.as_ref().and_then(Secret::scram_verifier);
                let known = usable.is_some();
                // An unknown user gets a made-up verifier and fails at the end, as in PostgreSQL.
                let verifier = usable.unwrap_or_else(|| Verifier::for_password(&scram::nonce()));
                auth.state = State::Scram { verifier, known };
                let mut body = Vec::new();
                body.extend_from_slice(scram::MECHANISM.as_bytes());
                body.extend_from_slice(&[0, 0]);
                Progress::Send(auth_request(AuthCode::SASL, &body))
            }
            Method::Password => {
                auth.state = State::Cleartext;
                Progress::Send(auth_request(AuthCode::CLEARTEXT_PASSWORD, &[]))
            }
        };
        (auth, progress)
    }

    /// The client's next message.
    pub fn on_message(&mut self, frame: &Frame) -> Progress {
        if frame.tag() != PASSWORD_MESSAGE {
            return self.fail(ErrorResponse::new(
                Severity::Fatal,
                SqlState::PROTOCOL_VIOLATION,
                format!("expected password response, got message type {}", crate::frame::printable(frame.tag())),
            ));
        }
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Scram { verifier, known } => self.scram_first(frame.body(), verifier, known),
            State::ScramContinue { exchange, known } => match exchange.finish(frame.body()) {
                Ok((last, key)) if known => {
                    let mut out = auth_request(AuthCode::SASL_FINAL, last.as_bytes());
                    out.extend_from_slice(&auth_ok());
                    Progress::Done(out, Ok(Credentials::ScramKey(key)))
                }
                Ok(_) | Err(ScramError::WrongPassword) => self.wrong_password(),
                Err(e) => self.malformed(&e),
            },
            State::Md5 { salt } => {
                let ok = match (&self.secret, wire::split_cstr(frame.body())) {
                    (Some(s), Some((response, _))) => s.check_md5(&self.who.user, salt, response),
                    _ => false,
                };
                if ok {
                    Progress::Done(auth_ok(), Ok(Credentials::Md5))
                } else {
                    self.wrong_password()
                }
            }
            State::Cleartext => {
                let password = wire::split_cstr(frame.body()).and_then(|(p, _)| std::str::from_utf8(p).ok());
                match (password, &self.secret) {
                    (Some(p), Some(secret)) if !p.is_empty() && cleartext_matches(secret, &self.who.user, p) => {
                        Progress::Done(auth_ok(), Ok(Credentials::Password(Password(p.to_string()))))
                    }
                    _ => self.wrong_password(),
                }
            }
            State::Finished => self.fail(ErrorResponse::new(
                Severity::Fatal,
                SqlState::PROTOCOL_VIOLATION,
                "unexpected message after authentication ended",
            )),
        }
    }

    fn scram_first(&mut self, body: &[u8], verifier: Verifier, known: bool) -> Progress {
        // SASLInitialResponse: mechanism, then the length of the data (-1: none) and the data.
        let parsed = wire::split_cstr(body).and_then(|(mechanism, rest)| {
            let len = wire::u32_at(rest, 0)? as i32;
            let data = rest.get(4..)?;
            let fits = (len == -1 && data.is_empty()) || (len >= 0 && len as usize == data.len());
            fits.then_some((mechanism, data))
        });
        let Some((mechanism, data)) = parsed else {
            return self.fail(ErrorResponse::new(
                Severity::Fatal,
                SqlState::PROTOCOL_VIOLATION,
                "malformed SASLInitialResponse message",
            ));
        };
        if mechanism != scram::MECHANISM.as_bytes() {
            return self.fail(ErrorResponse::new(
                Severity::Fatal,
                SqlState::PROTOCOL_VIOLATION,
                "client selected an invalid SASL authentication mechanism",
            ));
        }
        match ServerExchange::start(&verifier, data, &scram::nonce()) {
            Ok((exchange, first)) => {
                self.state = State::ScramContinue { exchange: Box::new(exchange), known };
                Progress::Send(auth_request(AuthCode::SASL_CONTINUE, first.as_bytes()))
            }
            Err(e) => self.malformed(&e),
        }
    }

    /// PostgreSQL's texts for a connection the rules turn away (`explicit`: a `reject` line).
    fn rejected(&self, explicit: bool) -> ErrorResponse {
        let w = &self.who;
        let ssl = if w.ssl { "SSL encryption" } else { "no encryption" };
        let what = if explicit { "pg_hba.conf rejects connection" } else { "no pg_hba.conf entry" };
        ErrorResponse::new(
            Severity::Fatal,
            INVALID_AUTHORIZATION,
            format!("{what} for host \"{}\", user \"{}\", database \"{}\", {ssl}", w.host, w.user, w.database),
        )
    }

    fn wrong_password(&mut self) -> Progress {
        let user = self.who.user.clone();
        self.fail(ErrorResponse::new(
            Severity::Fatal,
            INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        ))
    }

    fn malformed(&mut self, e: &ScramError) -> Progress {
        match e {
            ScramError::WrongPassword => self.wrong_password(),
            other => self.fail(ErrorResponse::new(Severity::Fatal, SqlState::PROTOCOL_VIOLATION, other.to_string())),
        }
    }

    fn fail(&mut self, e: ErrorResponse) -> Progress {
        self.state = State::Finished;
        Progress::Done(encode_error(&e), Err(e))
    }
}

fn cleartext_matches(secret: &Secret, user: &str, password: &str) -> bool {
    match secret {
        Secret::Plain(p) => bool::from(p.as_bytes().ct_eq(password.as_bytes())),
        Secret::Md5(_) => {
            let salt = [0u8; 4];
            let response = postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt);
            secret.check_md5(user, salt, response.as_bytes())
        }
        Secret::Scram(v) => v.matches_password(password),
    }
}

fn random_salt() -> [u8; 4] {
    use rand::Rng;
    let mut salt = [0u8; 4];
    rand::rng().fill_bytes(&mut salt);
    salt
}

/// An Authentication message: the code, then `data`.
fn auth_request(code: AuthCode, data: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    put_frame(&mut out, AUTHENTICATION, |d| {
        d.put_u32(code.0);
        d.put_slice(data);
    });
    out
}

fn auth_ok() -> BytesMut {
    auth_request(AuthCode::OK, &[])
}

fn encode_error(e: &ErrorResponse) -> BytesMut {
    let mut out = BytesMut::new();
    e.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendMessage;
    use crate::frame::split_frame;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn who() -> Who {
        Who { user: "alice".into(), database: "app".into(), host: "10.1.2.3".into(), ssl: false }
    }

    fn decision(method: Method) -> Decision {
        Decision { method, line: Some(3) }
    }

    /// The frames in `bytes`, parsed as a client would.
    fn messages(bytes: &BytesMut) -> Vec<BackendMessage> {
        let mut buf = bytes.clone();
        let mut out = Vec::new();
        while let Some(f) = split_frame(&mut buf, 1 << 20).unwrap() {
            out.push(BackendMessage::parse(&f).unwrap());
        }
        out
    }

    fn auth_codes(bytes: &BytesMut) -> Vec<u32> {
        messages(bytes)
            .into_iter()
            .filter_map(|m| match m {
                BackendMessage::Authentication(c) => Some(c.0),
                _ => None,
            })
            .collect()
    }

    fn error_of(p: &Progress) -> (String, String) {
        match p {
            Progress::Done(_, Err(e)) => (e.code.as_str().to_string(), e.message.clone()),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn password_message(p: &str) -> Frame {
        let mut body = p.as_bytes().to_vec();
        body.push(0);
        Frame::new(PASSWORD_MESSAGE, &body)
    }

    /// A SCRAM login by postgres-protocol's client (what tokio-postgres uses) with `password`.
    fn scram_login(secret: Option<Secret>, password: &str) -> Progress {
        let (mut auth, first) = ClientAuth::begin(who(), decision(Method::ScramSha256), secret);
        let Progress::Send(first) = first else { panic!("{first:?}") };
        assert_eq!(auth_codes(&first), [AuthCode::SASL.0]);
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut initial = b"SCRAM-SHA-256\0".to_vec();
        initial.extend_from_slice(&(client.message().len() as u32).to_be_bytes());
        initial.extend_from_slice(client.message());
        let Progress::Send(cont) = auth.on_message(&Frame::new(PASSWORD_MESSAGE, &initial)) else { panic!() };
        let data = cont[9..].to_vec();
        client.update(&data).unwrap();
        let done = auth.on_message(&Frame::new(PASSWORD_MESSAGE, client.message()));
        if let Progress::Done(bytes, Ok(_)) = &done {
            assert_eq!(auth_codes(bytes), [AuthCode::SASL_FINAL.0, AuthCode::OK.0]);
            let last = &bytes[9..bytes.len() - 9];
            client.finish(last).expect("the client believes the proxy");
        }
        done
    }

    #[test]
    fn scram_logs_in_with_the_password_and_yields_the_key() {
        let secret = Secret::Scram(Verifier::for_password("s3cret"));
        assert!(matches!(scram_login(Some(secret.clone()), "s3cret"), Progress::Done(_, Ok(Credentials::ScramKey(_)))));
        let e = error_of(&scram_login(Some(secret), "wrong"));
        assert_eq!(e, ("28P01".into(), "password authentication failed for user \"alice\"".into()));
        // A plain password in the store serves SCRAM too.
        assert!(matches!(scram_login(Some(Secret::Plain("s3cret".into())), "s3cret"), Progress::Done(_, Ok(_))));
    }

    #[test]
    fn an_unknown_user_cannot_be_told_from_a_wrong_password() {
        // The whole exchange runs, and ends with the very same error.
        let e = error_of(&scram_login(None, "s3cret"));
        assert_eq!(e, ("28P01".into(), "password authentication failed for user \"alice\"".into()));
        let md5_only = Secret::parse(&postgres_protocol::password::md5(b"s3cret", "alice")).unwrap();
        let e = error_of(&scram_login(Some(md5_only), "s3cret"));
        assert_eq!(e.0, "28P01", "an MD5 secret cannot serve SCRAM");
    }

    #[test]
    fn md5_rules_ask_for_md5_unless_the_secret_is_scram() {
        let plain = Secret::Plain("s3cret".into());
        let (mut auth, first) = ClientAuth::begin(who(), decision(Method::Md5), Some(plain));
        let Progress::Send(first) = first else { panic!() };
        assert_eq!(auth_codes(&first), [AuthCode::MD5_PASSWORD.0]);
        let salt: [u8; 4] = first[9..13].try_into().unwrap();
        let response = postgres_protocol::authentication::md5_hash(b"alice", b"s3cret", salt);
        let Progress::Done(bytes, Ok(Credentials::Md5)) = auth.on_message(&password_message(&response)) else {
            panic!()
        };
        assert_eq!(auth_codes(&bytes), [AuthCode::OK.0]);
        // Wrong password, and an unknown user: the same error.
        for secret in [Some(Secret::Plain("other".into())), None] {
            let (mut auth, _) = ClientAuth::begin(who(), decision(Method::Md5), secret);
            assert_eq!(error_of(&auth.on_message(&password_message(&response))).0, "28P01");
        }
        // A SCRAM verifier in the store: SCRAM is asked for instead, as PostgreSQL does.
        let scram = Secret::Scram(Verifier::for_password("s3cret"));
        let (_, first) = ClientAuth::begin(who(), decision(Method::Md5), Some(scram));
        let Progress::Send(first) = first else { panic!() };
        assert_eq!(auth_codes(&first), [AuthCode::SASL.0]);
    }

    #[test]
    fn a_cleartext_password_is_checked_against_any_kind_of_secret() {
        let secrets = [
            Secret::Plain("s3cret".into()),
            Secret::parse(&postgres_protocol::password::md5(b"s3cret", "alice")).unwrap(),
            Secret::Scram(Verifier::for_password("s3cret")),
        ];
        for secret in secrets {
            let (mut auth, first) = ClientAuth::begin(who(), decision(Method::Password), Some(secret.clone()));
            let Progress::Send(first) = first else { panic!() };
            assert_eq!(auth_codes(&first), [AuthCode::CLEARTEXT_PASSWORD.0]);
            let done = auth.on_message(&password_message("s3cret"));
            assert!(
                matches!(&done, Progress::Done(_, Ok(Credentials::Password(p))) if p.0 == "s3cret"),
                "{secret:?}: {done:?}"
            );
            assert!(!format!("{done:?}").contains("s3cret"), "kept out of Debug");
            let (mut auth, _) = ClientAuth::begin(who(), decision(Method::Password), Some(secret));
            assert_eq!(error_of(&auth.on_message(&password_message("wrong"))).0, "28P01");
        }
    }

    #[test]
    fn trust_and_the_rules_refusals_answer_at_once() {
        let (_, p) = ClientAuth::begin(who(), decision(Method::Trust), None);
        assert!(matches!(&p, Progress::Done(b, Ok(Credentials::None)) if auth_codes(b) == [0]));
        let (_, p) = ClientAuth::begin(who(), decision(Method::Reject), None);
        assert_eq!(
            error_of(&p),
            (
                "28000".into(),
                "pg_hba.conf rejects connection for host \"10.1.2.3\", user \"alice\", database \"app\", no encryption"
                    .into()
            )
        );
        let (_, p) =
            ClientAuth::begin(Who { ssl: true, ..who() }, Decision { method: Method::Reject, line: None }, None);
        assert_eq!(
            error_of(&p).1,
            "no pg_hba.conf entry for host \"10.1.2.3\", user \"alice\", database \"app\", SSL encryption"
        );
    }

    #[test]
    fn protocol_violations_end_the_exchange_with_08p01() {
        let (mut auth, _) = ClientAuth::begin(who(), decision(Method::Password), Some(Secret::Plain("x".into())));
        assert_eq!(error_of(&auth.on_message(&Frame::new(b'Q', b"select 1\0"))).0, "08P01");
        let (mut auth, _) = ClientAuth::begin(who(), decision(Method::ScramSha256), Some(Secret::Plain("x".into())));
        let e = error_of(&auth.on_message(&Frame::new(PASSWORD_MESSAGE, b"PLAIN\0\xff\xff\xff\xff")));
        assert_eq!(e, ("08P01".into(), "client selected an invalid SASL authentication mechanism".into()));
        let (mut auth, _) = ClientAuth::begin(who(), decision(Method::ScramSha256), Some(Secret::Plain("x".into())));
        assert_eq!(
            error_of(&auth.on_message(&Frame::new(PASSWORD_MESSAGE, b"SCRAM-SHA-256\0\0\0\0\x09n,,"))).0,
            "08P01"
        );
        assert_eq!(error_of(&auth.on_message(&password_message("late"))).0, "08P01", "nothing after the end");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_client_message(tag: u8, body in proptest::collection::vec(proptest::num::u8::ANY, 0..64), method in 0usize..5) {
            let m = [Method::Trust, Method::Reject, Method::ScramSha256, Method::Md5, Method::Password][method];
            let secret = Secret::parse("SCRAM-SHA-256$4096:P1mF9h5YPsWF+3pBGC6Y3w==$h1zqAiIzqzJnxf1GRFiIbwgc4xX3hMn9axd7v9NuJ1c=:2spNAmq1Tw+Lzi6XU+cWK/CYhvNYiIbMRbRi5izLIuw=").unwrap();
            let (mut auth, _) = ClientAuth::begin(who(), decision(m), Some(secret));
            let f = Frame::new(tag, &body);
            let _ = auth.on_message(&f);
            let _ = auth.on_message(&f);
        }
    }
}
