//! The few backend messages the proxy reads, and the few it writes itself.
//!
//! Everything a backend sends is relayed as received ([`crate::frame`]); the proxy only peeks
//! at:
//! * `K` BackendKeyData: the backend's cancel key, which it records and replaces with its own;
//! * `Z` ReadyForQuery: the transaction status, so it knows whether a session is idle;
//! * `E` ErrorResponse: the first answer to a startup packet, to tell "cannot connect now"
//!   (retry elsewhere while holding the client) from everything else (relayed).
//!
//! `R` Authentication, `S` ParameterStatus and `N` NoticeResponse are parsed too (tests and
//! logging) but relayed untouched.
//!
//! It writes an ErrorResponse of its own when it must end a session (for example
//! `FATAL 57P01 terminating connection: the leader changed`), and a synthetic BackendKeyData.
//!
//! Invariant: [`BackendMessage::parse`] never panics; a malformed body of one of these types is
//! an error (the backend is broken or not PostgreSQL), any other type is [`BackendMessage::Other`].

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::cancel::{CancelKey, MAX_KEY_LEN, MIN_KEY_LEN};
use crate::frame::{self, FrameRef, HEADER_LEN};
use crate::wire;

/// Type byte of Authentication requests.
pub const AUTHENTICATION: u8 = b'R';
/// Type byte of BackendKeyData.
pub const BACKEND_KEY_DATA: u8 = b'K';
/// Type byte of ErrorResponse.
pub const ERROR_RESPONSE: u8 = b'E';
/// Type byte of NoticeResponse.
pub const NOTICE_RESPONSE: u8 = b'N';
/// Type byte of ParameterStatus.
pub const PARAMETER_STATUS: u8 = b'S';
/// Type byte of ReadyForQuery.
pub const READY_FOR_QUERY: u8 = b'Z';

/// A backend message the proxy understands, or the type byte of one it only relays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendMessage {
    /// `R`: an authentication request or AuthenticationOk.
    Authentication(AuthCode),
    /// `K`: the backend's cancel key.
    BackendKeyData(BackendKeyData),
    /// `Z`: the backend is ready for a new query.
    ReadyForQuery(TransactionStatus),
    /// `S`: a reported run-time parameter.
    ParameterStatus(ParameterStatus),
    /// `E`: an error.
    ErrorResponse(ErrorFields),
    /// `N`: a notice.
    NoticeResponse(ErrorFields),
    /// Any other message, relayed without interpretation.
    Other(u8),
}

/// An understood message type with a body PostgreSQL never sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The body ends before a required field.
    #[error("{0} message is truncated")]
    Truncated(&'static str),
    /// Bytes follow the message's last field.
    #[error("{0} message has {1} unexpected trailing bytes")]
    Trailing(&'static str, usize),
    /// ReadyForQuery with a status other than `I`, `T` or `E`.
    #[error("ReadyForQuery has unknown transaction status {}", frame::printable(*.0))]
    UnknownStatus(u8),
    /// BackendKeyData with a key outside 4..=256 bytes.
    #[error("BackendKeyData carries a key of {0} bytes (must be {MIN_KEY_LEN} to {MAX_KEY_LEN})")]
    KeyLength(usize),
}

impl BackendMessage {
    /// Interprets a frame received from a backend.
    pub fn parse<'f>(frame: impl Into<FrameRef<'f>>) -> Result<Self, BackendError> {
        let frame = frame.into();
        let body = frame.body();
        Ok(match frame.tag() {
            AUTHENTICATION => {
                // Some requests carry data after the code (md5 salt, SASL mechanisms); the
                // proxy relays it untouched and needs only the code.
                let code = wire::u32_at(body, 0).ok_or(BackendError::Truncated("Authentication"))?;
                BackendMessage::Authentication(AuthCode(code))
            }
            BACKEND_KEY_DATA => {
                let pid = wire::u32_at(body, 0).ok_or(BackendError::Truncated("BackendKeyData"))?;
                // The key is the rest of the message: four bytes under 3.0, up to 256 under 3.2.
                let key = Bytes::copy_from_slice(&frame.as_bytes()[HEADER_LEN + 4..]);
                let len = key.len();
                let key = CancelKey::new(key).map_err(|_| BackendError::KeyLength(len))?;
                BackendMessage::BackendKeyData(BackendKeyData { pid, key })
            }
            READY_FOR_QUERY => match body {
                [status] => BackendMessage::ReadyForQuery(TransactionStatus::from_byte(*status)?),
                [] => return Err(BackendError::Truncated("ReadyForQuery")),
                [_, rest @ ..] => return Err(BackendError::Trailing("ReadyForQuery", rest.len())),
            },
            PARAMETER_STATUS => BackendMessage::ParameterStatus(ParameterStatus::parse(body)?),
            ERROR_RESPONSE => BackendMessage::ErrorResponse(ErrorFields::parse(body, "ErrorResponse")?),
            NOTICE_RESPONSE => BackendMessage::NoticeResponse(ErrorFields::parse(body, "NoticeResponse")?),
            other => BackendMessage::Other(other),
        })
    }
}

/// The code of an Authentication message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AuthCode(pub u32);

impl AuthCode {
    /// AuthenticationOk: login succeeded; ParameterStatus, BackendKeyData and the first
    /// ReadyForQuery follow.
    pub const OK: AuthCode = AuthCode(0);
    /// AuthenticationCleartextPassword.
    pub const CLEARTEXT_PASSWORD: AuthCode = AuthCode(3);
    /// AuthenticationMD5Password.
    pub const MD5_PASSWORD: AuthCode = AuthCode(5);
    /// AuthenticationSASL (the list of mechanisms, e.g. SCRAM-SHA-256).
    pub const SASL: AuthCode = AuthCode(10);
    /// AuthenticationSASLContinue.
    pub const SASL_CONTINUE: AuthCode = AuthCode(11);
    /// AuthenticationSASLFinal (the server's proof; AuthenticationOk still follows).
    pub const SASL_FINAL: AuthCode = AuthCode(12);

    /// Whether this is AuthenticationOk.
    pub fn is_ok(self) -> bool {
        self == AuthCode::OK
    }
}

/// A backend's (or the proxy's synthetic) cancel key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendKeyData {
    /// Process id.
    pub pid: u32,
    /// Secret key.
    pub key: CancelKey,
}

impl BackendKeyData {
    /// Appends the encoded message to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        frame::put_frame(dst, BACKEND_KEY_DATA, |d| {
            d.put_u32(self.pid);
            d.put_slice(self.key.as_bytes());
        });
    }
}

/// The transaction status in ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block; the session may move to another backend.
    Idle,
    /// `T`: inside a transaction block.
    InTransaction,
    /// `E`: inside a failed transaction block; queries are refused until it ends.
    Failed,
}

impl TransactionStatus {
    /// The status for its wire byte.
    pub fn from_byte(b: u8) -> Result<Self, BackendError> {
        match b {
            b'I' => Ok(TransactionStatus::Idle),
            b'T' => Ok(TransactionStatus::InTransaction),
            b'E' => Ok(TransactionStatus::Failed),
            other => Err(BackendError::UnknownStatus(other)),
        }
    }

    /// The status a ReadyForQuery body carries, read in place (no message built); `None` when
    /// the body is not one known status byte.
    pub fn of_ready_body(body: &[u8]) -> Option<Self> {
        match body {
            [b] => Self::from_byte(*b).ok(),
            _ => None,
        }
    }

    /// The wire byte.
    pub fn as_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }

    /// Appends a ReadyForQuery with this status to `dst` (after a synthetic error the proxy
    /// may keep the client and report `E`, forcing it to roll back).
    pub fn encode_ready_for_query(self, dst: &mut BytesMut) {
        frame::put_frame(dst, READY_FOR_QUERY, |d| d.put_u8(self.as_byte()));
    }
}

/// A ParameterStatus. Text is decoded lossily: these values serve tracking and logging, and
/// the proxy relays the original frame, never a re-encoding of this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterStatus {
    /// Parameter name, e.g. `server_version`.
    pub name: String,
    /// Its current value.
    pub value: String,
}

impl ParameterStatus {
    fn parse(body: &[u8]) -> Result<Self, BackendError> {
        const WHAT: &str = "ParameterStatus";
        let (name, rest) = wire::split_cstr(body).ok_or(BackendError::Truncated(WHAT))?;
        let (value, rest) = wire::split_cstr(rest).ok_or(BackendError::Truncated(WHAT))?;
        if !rest.is_empty() {
            return Err(BackendError::Trailing(WHAT, rest.len()));
        }
        Ok(ParameterStatus { name: lossy(name), value: lossy(value) })
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The fields of an ErrorResponse or NoticeResponse, in order: each a one-byte code (`S`
/// severity, `V` non-localised severity, `C` SQLSTATE, `M` message, `D` detail, ...) and its
/// text, decoded lossily because it is only logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorFields(Vec<(u8, String)>);

impl ErrorFields {
    pub(crate) fn parse(body: &[u8], what: &'static str) -> Result<Self, BackendError> {
        let mut fields = Vec::new();
        let mut rest = body;
        loop {
            match rest {
                [] => return Err(BackendError::Truncated(what)),
                [0] => return Ok(ErrorFields(fields)),
                [0, tail @ ..] => return Err(BackendError::Trailing(what, tail.len())),
                [code, tail @ ..] => {
                    let (text, after) = wire::split_cstr(tail).ok_or(BackendError::Truncated(what))?;
                    fields.push((*code, lossy(text)));
                    rest = after;
                }
            }
        }
    }

    /// A field's text by its code; the first occurrence when the backend repeated it.
    pub fn get(&self, code: u8) -> Option<&str> {
        self.0.iter().find(|(c, _)| *c == code).map(|(_, t)| t.as_str())
    }

    /// The severity, preferring the non-localised `V` (PostgreSQL 9.6+) over `S`, which is
    /// translated into the server's language.
    pub fn severity(&self) -> Option<&str> {
        self.get(b'V').or_else(|| self.get(b'S'))
    }

    /// The SQLSTATE code.
    pub fn code(&self) -> Option<&str> {
        self.get(b'C')
    }

    /// The primary message.
    pub fn message(&self) -> Option<&str> {
        self.get(b'M')
    }

    /// Every field in the order sent.
    pub fn fields(&self) -> impl Iterator<Item = (u8, &str)> {
        self.0.iter().map(|(c, t)| (*c, t.as_str()))
    }
}

impl fmt::Display for ErrorFields {
    /// `FATAL 57P01: terminating connection due to administrator command`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity().unwrap_or("?"),
            self.code().unwrap_or("?????"),
            self.message().unwrap_or("")
        )
    }
}

/// Severity of an ErrorResponse the proxy writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session continues.
    Error,
    /// The session ends.
    Fatal,
    /// Not an error: the same fields go out as a NoticeResponse (`N`), for example the admin
    /// console's usage text.
    Notice,
}

impl Severity {
    /// The wire text (the proxy does not translate it, so `S` and `V` are equal).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
        }
    }
}

/// A five-character SQLSTATE. Constants are checked at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SqlState(&'static str);

impl SqlState {
    /// `57P01` admin_shutdown: what PostgreSQL sends on a fast shutdown, and what the proxy
    /// sends when it closes a session because the leader changed.
    pub const ADMIN_SHUTDOWN: SqlState = SqlState::new("57P01");
    /// `57P03` cannot_connect_now: no leader appeared within the hold timeout.
    pub const CANNOT_CONNECT_NOW: SqlState = SqlState::new("57P03");
    /// `08006` connection_failure: the backend connection broke.
    pub const CONNECTION_FAILURE: SqlState = SqlState::new("08006");
    /// `08001` sqlclient_unable_to_establish_sqlconnection: the backend could not be reached.
    pub const UNABLE_TO_CONNECT: SqlState = SqlState::new("08001");
    /// `08P01` protocol_violation: the client sent garbage.
    pub const PROTOCOL_VIOLATION: SqlState = SqlState::new("08P01");
    /// `53300` too_many_connections.
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState::new("53300");
    /// `25006` read_only_sql_transaction: a write reached a server that is not (or no longer)
    /// the primary, a routing-fence signal.
    pub const READ_ONLY_SQL_TRANSACTION: SqlState = SqlState::new("25006");

    /// A SQLSTATE from its text; panics (at compile time, in a constant) unless it is five
    /// characters from `0-9A-Z`.
    pub const fn new(code: &'static str) -> SqlState {
        let b = code.as_bytes();
        assert!(b.len() == 5, "a SQLSTATE has five characters");
        let mut i = 0;
        while i < 5 {
            assert!(b[i].is_ascii_digit() || b[i].is_ascii_uppercase(), "a SQLSTATE is 0-9A-Z");
            i += 1;
        }
        SqlState(code)
    }

    /// The five characters.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An ErrorResponse the proxy writes itself (a NoticeResponse when the severity is
/// [`Severity::Notice`]: PostgreSQL gives both messages the same fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    /// ERROR, FATAL or NOTICE.
    pub severity: Severity,
    /// The SQLSTATE clients and drivers branch on.
    pub code: SqlState,
    /// The primary message, shown by psql as `FATAL:  <message>`.
    pub message: String,
    /// Optional detail line.
    pub detail: Option<String>,
}

impl ErrorResponse {
    /// An error without detail.
    pub fn new(severity: Severity, code: SqlState, message: impl Into<String>) -> Self {
        ErrorResponse { severity, code, message: message.into(), detail: None }
    }

    /// `FATAL 57P01 terminating connection due to administrator command`: word for word what
    /// PostgreSQL sends on a fast shutdown, so that drivers treat a stopping proxy like a stopping
    /// server.
    pub fn admin_shutdown() -> Self {
        ErrorResponse::new(
            Severity::Fatal,
            SqlState::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command",
        )
    }

    /// Appends the encoded message to `dst`. NUL bytes in the text are dropped: each would end
    /// its field early and turn the rest into bogus fields.
    pub fn encode(&self, dst: &mut BytesMut) {
        let tag = match self.severity {
            Severity::Notice => NOTICE_RESPONSE,
            Severity::Error | Severity::Fatal => ERROR_RESPONSE,
        };
        frame::put_frame(dst, tag, |d| {
            let sev = self.severity.as_str().as_bytes();
            put_field(d, b'S', sev);
            put_field(d, b'V', sev);
            put_field(d, b'C', self.code.as_str().as_bytes());
            put_field(d, b'M', self.message.as_bytes());
            if let Some(detail) = &self.detail {
                put_field(d, b'D', detail.as_bytes());
            }
            d.put_u8(0);
        });
    }
}

fn put_field(dst: &mut BytesMut, code: u8, text: &[u8]) {
    dst.put_u8(code);
    if text.contains(&0) {
        let clean: Vec<u8> = text.iter().copied().filter(|&b| b != 0).collect();
        wire::put_cstr(dst, &clean);
    } else {
        wire::put_cstr(dst, text);
    }
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;
