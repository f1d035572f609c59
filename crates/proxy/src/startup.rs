//! The first client packets: the ones without a type byte.
//!
//! A client opens with one length-prefixed packet whose first body word is a code:
//! SSLRequest or GSSENCRequest (the proxy answers `S`/`N` with a single unframed byte and the
//! client then sends another startup packet), CancelRequest (forwarded, then the connection is
//! closed) or a StartupMessage for protocol 3.0 or 3.2 with its parameters. Everything after
//! the StartupMessage uses [`crate::frame`].
//!
//! Invariants: [`decode_startup`] never panics, consumes exactly one whole packet or nothing,
//! and rejects a bad length as soon as the length (and, where it fixes the length, the code) is
//! buffered, so a client cannot make the proxy wait for or hold more than the limit.
//!
//! After answering `S` to an SSLRequest the caller must check that the read buffer is empty:
//! bytes sent before the TLS handshake were not encrypted and must not be trusted (PgBouncer's
//! CVE-2021-3935).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::cancel::{CancelKey, MAX_KEY_LEN, MIN_KEY_LEN};
use crate::wire;

/// Code of an SSLRequest.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// PostgreSQL's own limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const DEFAULT_MAX_STARTUP_LEN: usize = 10_000;

/// The length and code of an SSLRequest or GSSENCRequest: nothing else.
const BARE_REQUEST_LEN: u32 = 8;
/// Length, code and pid come before a CancelRequest's key.
const CANCEL_HEADER_LEN: u32 = 12;
/// The first byte of a TLS record carrying a handshake, sent by PostgreSQL 17's
/// `sslnegotiation=direct`. As a startup length it would mean at least 369 MB.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The StartupMessage protocol versions the proxy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// 3.0: every PostgreSQL since 7.4; four-byte cancel keys.
    V3_0,
    /// 3.2 (PostgreSQL 18): cancel keys of 4 to 256 bytes.
    V3_2,
}

impl ProtocolVersion {
    /// The version as a startup code: major in the high 16 bits, minor in the low.
    pub const fn code(self) -> u32 {
        match self {
            ProtocolVersion::V3_0 => 3 << 16,
            ProtocolVersion::V3_2 => (3 << 16) | 2,
        }
    }

    /// The version for a startup code, if it is one the proxy speaks.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            c if c == ProtocolVersion::V3_0.code() => Some(ProtocolVersion::V3_0),
            c if c == ProtocolVersion::V3_2.code() => Some(ProtocolVersion::V3_2),
            _ => None,
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code();
        write!(f, "{}.{}", code >> 16, code & 0xffff)
    }
}

/// One decoded startup packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption (the proxy answers `N`).
    GssEncRequest,
    /// The client asks to cancel a query of another connection.
    Cancel(CancelRequest),
    /// The client opens a session.
    Startup(StartupMessage),
}

/// A CancelRequest: the pid and secret from the BackendKeyData the client was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelRequest {
    /// Process id (the proxy's synthetic one, when it comes from a client).
    pub pid: u32,
    /// Secret key; four bytes under protocol 3.0, up to 256 under 3.2. The packet carries no
    /// version: its length alone tells the key's length.
    pub key: CancelKey,
}

/// A StartupMessage: protocol version and the client's parameters, kept in order, with
/// duplicates, and as raw bytes (their encoding is not known yet at startup), so the proxy can
/// relay them to the backend exactly as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupMessage {
    version: ProtocolVersion,
    params: Vec<(Bytes, Bytes)>,
}

/// Why a startup packet was rejected. Each one closes only that client's connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// The length prefix cannot even hold itself and a code.
    #[error("startup packet length {0} is below the minimum of 8")]
    TooShort(u32),
    /// The length prefix exceeds the caller's limit.
    #[error("startup packet length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// Length the client announced.
        len: u32,
        /// The limit in force.
        max: usize,
    },
    /// The client skipped the SSLRequest and started a TLS handshake at once.
    #[error("client began a TLS handshake without an SSLRequest (sslnegotiation=direct), which is not supported")]
    DirectTls,
    /// The code is no request and no protocol version the proxy speaks.
    #[error("unsupported startup code {code} (read as a protocol version: {}.{})", code >> 16, code & 0xffff)]
    UnknownCode {
        /// The code as received.
        code: u32,
    },
    /// An SSLRequest, GSSENCRequest or CancelRequest with a length its kind never has.
    #[error("{kind} of {len} bytes (expected {expected})")]
    BadLength {
        /// Which request.
        kind: &'static str,
        /// Length the client announced.
        len: u32,
        /// What the protocol allows.
        expected: &'static str,
    },
    /// The parameter list does not end with an empty name (a lone NUL).
    #[error("startup parameters are not terminated by a NUL byte")]
    MissingTerminator,
    /// A parameter name is followed by the end of the packet instead of a value.
    #[error("startup parameter {0:?} has no value")]
    MissingValue(String),
    /// Bytes follow the parameter list's terminator.
    #[error("{0} bytes after the startup parameters' terminator")]
    TrailingBytes(usize),
    /// A parameter to encode has an empty name or contains a NUL byte; either would corrupt
    /// the list on the wire.
    #[error("startup parameter {0:?} has an empty name or contains a NUL byte")]
    InvalidParam(String),
}

/// Decodes the next startup packet at the front of `buf`.
///
/// Returns `Ok(None)` and leaves `buf` untouched while the packet is incomplete; on success
/// the packet's bytes are removed from `buf` (and parameters keep pointing into them without
/// copying). `max_len` bounds the packet length; [`DEFAULT_MAX_STARTUP_LEN`] is PostgreSQL's.
pub fn decode_startup(buf: &mut BytesMut, max_len: usize) -> Result<Option<StartupPacket>, StartupError> {
    if buf.first() == Some(&TLS_HANDSHAKE_RECORD) {
        return Err(StartupError::DirectTls);
    }
    let Some(len) = wire::u32_at(buf, 0) else {
        return Ok(None);
    };
    if len < BARE_REQUEST_LEN {
        return Err(StartupError::TooShort(len));
    }
    if usize::try_from(len).map_or(true, |l| l > max_len) {
        return Err(StartupError::TooLong { len, max: max_len });
    }
    let Some(code) = wire::u32_at(buf, 4) else {
        return Ok(None);
    };
    // Requests with a fixed or bounded length are checked before waiting for their body, so a
    // wrong length fails now instead of when the client gives up.
    check_request_len(code, len)?;
    if buf.len() < len as usize {
        return Ok(None);
    }
    let packet = buf.split_to(len as usize).freeze();
    parse(code, packet).map(Some)
}

fn check_request_len(code: u32, len: u32) -> Result<(), StartupError> {
    let bad = |kind, expected| Err(StartupError::BadLength { kind, len, expected });
    match code {
        SSL_REQUEST_CODE if len != BARE_REQUEST_LEN => bad("SSLRequest", "8"),
        GSSENC_REQUEST_CODE if len != BARE_REQUEST_LEN => bad("GSSENCRequest", "8"),
        CANCEL_REQUEST_CODE
            if !(CANCEL_HEADER_LEN + MIN_KEY_LEN as u32..=CANCEL_HEADER_LEN + MAX_KEY_LEN as u32).contains(&len) =>
        {
            bad("CancelRequest", "16 to 268: a key of 4 to 256 bytes")
        }
        _ => Ok(()),
    }
}

/// Parses one whole packet whose length was already checked.
fn parse(code: u32, packet: Bytes) -> Result<StartupPacket, StartupError> {
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let pid = wire::u32_at(&packet, 8).expect("length checked");
            let key = CancelKey::new(packet.slice(CANCEL_HEADER_LEN as usize..)).expect("length checked");
            Ok(StartupPacket::Cancel(CancelRequest { pid, key }))
        }
        _ => match ProtocolVersion::from_code(code) {
            Some(version) => parse_params(version, &packet).map(StartupPacket::Startup),
            None => Err(StartupError::UnknownCode { code }),
        },
    }
}

/// Reads `name\0value\0 ... \0` after the version word, as PostgreSQL's
/// `ProcessStartupPacket` does: the list ends at an empty name, which must be the last byte.
fn parse_params(version: ProtocolVersion, packet: &Bytes) -> Result<StartupMessage, StartupError> {
    let mut params = Vec::new();
    let mut rest = &packet[8..];
    loop {
        let (name, after) = wire::split_cstr(rest).ok_or(StartupError::MissingTerminator)?;
        if name.is_empty() {
            if !after.is_empty() {
                return Err(StartupError::TrailingBytes(after.len()));
            }
            return Ok(StartupMessage { version, params });
        }
        let (value, after) = wire::split_cstr(after)
            .ok_or_else(|| StartupError::MissingValue(String::from_utf8_lossy(name).into_owned()))?;
        params.push((packet.slice_ref(name), packet.slice_ref(value)));
        rest = after;
    }
}

impl StartupMessage {
    /// A message with no parameters yet.
    pub fn new(version: ProtocolVersion) -> Self {
        StartupMessage { version, params: Vec::new() }
    }

    /// Appends a parameter. The name must be non-empty and neither may contain a NUL byte.
    pub fn push(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<(), StartupError> {
        let (name, value) = (name.into(), value.into());
        if name.is_empty() || name.contains(&0) || value.contains(&0) {
            return Err(StartupError::InvalidParam(String::from_utf8_lossy(&name).into_owned()));
        }
        self.params.push((name, value));
        Ok(())
    }

    /// [`Self::push`] for chaining, as in tests and fixed messages.
    pub fn with(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<Self, StartupError> {
        self.push(name, value)?;
        Ok(self)
    }

    /// The protocol version the client asked for.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The value of a parameter. When a name repeats, the last one wins, as in PostgreSQL.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.params.iter().rev().find(|(n, _)| n == name.as_bytes()).map(|(_, v)| &v[..])
    }

    /// The `user` parameter (PostgreSQL refuses a startup without one).
    pub fn user(&self) -> Option<&[u8]> {
        self.get("user")
    }

    /// The `database` parameter; when absent PostgreSQL uses the user name.
    pub fn database(&self) -> Option<&[u8]> {
        self.get("database")
    }

    /// Every parameter in the order sent, duplicates included.
    pub fn params(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.params.iter().map(|(n, v)| (&n[..], &v[..]))
    }

    /// The protocol extension options (`_pq_.*`), which a server that does not know them
    /// answers with NegotiateProtocolVersion.
    pub fn protocol_options(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.params().filter(|(n, _)| n.starts_with(b"_pq_."))
    }

    /// Removes every occurrence of a parameter; returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.params.len();
        self.params.retain(|(n, _)| n != name.as_bytes());
        before - self.params.len()
    }

    /// Appends the encoded message to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        wire::put_with_len(dst, |d| {
            d.put_u32(self.version.code());
            for (name, value) in &self.params {
                wire::put_cstr(d, name);
                wire::put_cstr(d, value);
            }
            d.put_u8(0);
        });
    }
}

impl CancelRequest {
    /// Appends the encoded request to `dst`; its length carries the key's length.
    pub fn encode(&self, dst: &mut BytesMut) {
        wire::put_with_len(dst, |d| {
            d.put_u32(CANCEL_REQUEST_CODE);
            d.put_u32(self.pid);
            d.put_slice(self.key.as_bytes());
        });
    }
}

impl StartupPacket {
    /// Appends the encoded packet to `dst` (the proxy re-sends startups and cancels to
    /// backends, and may ask a backend for TLS).
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            StartupPacket::SslRequest => {
                dst.put_u32(BARE_REQUEST_LEN);
                dst.put_u32(SSL_REQUEST_CODE);
            }
            StartupPacket::GssEncRequest => {
                dst.put_u32(BARE_REQUEST_LEN);
                dst.put_u32(GSSENC_REQUEST_CODE);
            }
            StartupPacket::Cancel(c) => c.encode(dst),
            StartupPacket::Startup(s) => s.encode(dst),
        }
    }
}

#[cfg(test)]
#[path = "startup_tests.rs"]
mod tests;
