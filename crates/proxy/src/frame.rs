//! Framing of every message after startup, in both directions: one type byte, then a
//! big-endian length that counts itself and the body but not the type byte.
//!
//! The proxy relays almost every message without looking inside, so a [`Frame`] is the whole
//! message, header included, as one `Bytes` cut from the read buffer: forwarding it writes the
//! exact bytes received, with no copy and no re-encoding. A reader that places each message at
//! once (a pooled client's server replies) reads them in place instead, as [`FrameRef`]s
//! ([`frame_at`]), and takes the placed bytes from its buffer at the end.
//!
//! Invariants: [`split_frame`] and [`frame_at`] never panic, take or show exactly one whole frame
//! or nothing, and reject a length below 4 or above the caller's maximum as soon as the five
//! header bytes are buffered, before waiting for (or reserving room for) the body.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire;

/// Type byte plus length word.
pub const HEADER_LEN: usize = 5;
/// A maximum for data-carrying messages: PostgreSQL's own limit for a large message
/// (`PQ_LARGE_MESSAGE_LIMIT`, 1 GiB less one byte) rounded up. Callers may choose less, for
/// example a small limit for the authentication exchange.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 30;

/// One whole message: type byte, length and body, exactly as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame(Bytes);

/// Why a frame header was rejected. Each one closes only that connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length cannot even hold itself.
    #[error("message {} has length {len}, below the minimum of 4", printable(*tag))]
    TooShort {
        /// The message's type byte.
        tag: u8,
        /// Length announced.
        len: u32,
    },
    /// The length exceeds the caller's maximum.
    #[error("message {} has length {len}, above the limit of {max} bytes", printable(*tag))]
    TooLong {
        /// The message's type byte.
        tag: u8,
        /// Length announced.
        len: u32,
        /// The limit in force.
        max: usize,
    },
}

/// A type byte for error messages: `'Q'` when printable, `0x00` otherwise (garbage on the
/// wire should not put control characters into logs).
pub(crate) fn printable(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}

/// One whole message still in the buffer it was read into: what a [`Frame`] is, borrowed, for a
/// reader that places messages where they came from and takes the buffer's bytes at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef<'a>(&'a [u8]);

impl<'a> FrameRef<'a> {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.0[0]
    }

    /// What follows the length word.
    pub fn body(&self) -> &'a [u8] {
        &self.0[HEADER_LEN..]
    }

    /// The whole message, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

impl<'a> From<&'a Frame> for FrameRef<'a> {
    fn from(frame: &'a Frame) -> FrameRef<'a> {
        FrameRef(&frame.0)
    }
}

/// The whole frame at the front of `buf`, in place (nothing is taken or copied): `Ok(None)`
/// while it is incomplete. The caller steps over [`FrameRef::as_bytes`]'s length to the next.
pub fn frame_at(buf: &[u8], max_len: usize) -> Result<Option<FrameRef<'_>>, FrameError> {
    let Some(len) = frame_len(buf, max_len)? else {
        return Ok(None);
    };
    Ok(buf.get(..len).map(FrameRef))
}

/// Cuts the next whole frame from the front of `buf`.
///
/// Returns `Ok(None)` and leaves `buf` untouched while the frame is incomplete. On success the
/// frame's bytes leave `buf` without being copied (`BytesMut::split_to`). `max_len` bounds the
/// length word (body plus its own four bytes), as PostgreSQL's limits do.
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, FrameError> {
    let Some(len) = frame_len(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Frame(buf.split_to(len).freeze())))
}

/// The total size (header included) of the frame at the front of `buf`, once its header is
/// buffered and valid. Lets a caller reserve buffer room or count bytes before the frame is
/// whole.
pub fn frame_len(buf: &[u8], max_len: usize) -> Result<Option<usize>, FrameError> {
    let (Some(&tag), Some(len)) = (buf.first(), wire::u32_at(buf, 1)) else {
        return Ok(None);
    };
    if len < 4 {
        return Err(FrameError::TooShort { tag, len });
    }
    match usize::try_from(len) {
        Ok(l) if l <= max_len => Ok(Some(l + 1)),
        _ => Err(FrameError::TooLong { tag, len, max: max_len }),
    }
}

impl Frame {
    /// Builds a frame from a type byte and a body (for messages the proxy writes itself).
    pub fn new(tag: u8, body: &[u8]) -> Frame {
        let mut dst = BytesMut::with_capacity(HEADER_LEN + body.len());
        put_frame(&mut dst, tag, |d| d.put_slice(body));
        Frame(dst.freeze())
    }

    /// The type byte.
    pub fn tag(&self) -> u8 {
        self.0[0]
    }

    /// The body, after the length word.
    pub fn body(&self) -> &[u8] {
        &self.0[HEADER_LEN..]
    }

    /// The whole frame as received, to forward unchanged.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The whole frame, to hand to a writer without copying.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Total size in bytes, header included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a frame has at least its header. Present because clippy expects it beside
    /// `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Appends one frame to `dst`: the type byte, then whatever `body` writes, with the length
/// patched in afterwards.
pub fn put_frame(dst: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    dst.put_u8(tag);
    wire::put_with_len(dst, body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(bytes: &[u8], max: usize) -> (Result<Option<Frame>, FrameError>, usize) {
        let mut buf = BytesMut::from(bytes);
        let r = split_frame(&mut buf, max);
        (r, buf.len())
    }

    #[test]
    fn splits_whole_frames_and_leaves_the_rest() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IQ\0\0\0\x0dselect 1\0C\0\0"[..]);
        let z = split_frame(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!((z.tag(), z.body(), z.len()), (b'Z', &b"I"[..], 6));
        let q = split_frame(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!((q.tag(), q.body()), (b'Q', &b"select 1\0"[..]));
        assert_eq!(q.as_bytes(), &b"Q\0\0\0\x0dselect 1\0"[..]);
        assert_eq!(split_frame(&mut buf, DEFAULT_MAX_FRAME_LEN), Ok(None));
        assert_eq!(&buf[..], b"C\0\0", "a partial header stays buffered");
    }

    #[test]
    fn frames_are_read_in_place_one_after_the_other() {
        let buf = &b"Z\0\0\0\x05IQ\0\0\0\x0dselect 1\0C\0\0"[..];
        let z = frame_at(buf, DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!((z.tag(), z.body(), z.as_bytes().len()), (b'Z', &b"I"[..], 6));
        let rest = &buf[z.as_bytes().len()..];
        let q = frame_at(rest, DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!((q.tag(), q.body()), (b'Q', &b"select 1\0"[..]));
        let rest = &rest[q.as_bytes().len()..];
        assert_eq!(frame_at(rest, DEFAULT_MAX_FRAME_LEN), Ok(None), "a partial header is no frame");
        assert_eq!(frame_at(b"Q\0\0\0\x0dsel", DEFAULT_MAX_FRAME_LEN), Ok(None), "nor a partial body");
        assert!(frame_at(b"Q\0\0\0\x03", DEFAULT_MAX_FRAME_LEN).is_err(), "a bad length is refused");
    }

    #[test]
    fn header_only_frames_are_whole() {
        // Sync, Terminate, CopyDone and friends have an empty body.
        let (r, left) = split(b"S\0\0\0\x04", 16);
        assert_eq!(r.unwrap().unwrap().body(), b"");
        assert_eq!(left, 0);
    }

    #[test]
    fn table_of_headers() {
        let max = 100;
        type Want = Result<Option<usize>, FrameError>;
        let cases: Vec<(&str, &[u8], Want)> = vec![
            ("empty", b"", Ok(None)),
            ("type byte only", b"Q", Ok(None)),
            ("four header bytes", b"Q\0\0\0", Ok(None)),
            ("length 0", b"Q\0\0\0\0", Err(FrameError::TooShort { tag: b'Q', len: 0 })),
            ("length 3", b"X\0\0\0\x03", Err(FrameError::TooShort { tag: b'X', len: 3 })),
            ("length 4", b"S\0\0\0\x04", Ok(Some(5))),
            ("at the limit", b"d\0\0\0\x64", Ok(Some(101))),
            ("over the limit", b"d\0\0\0\x65", Err(FrameError::TooLong { tag: b'd', len: 101, max })),
            ("negative Int32", b"d\xff\xff\xff\xff", Err(FrameError::TooLong { tag: b'd', len: u32::MAX, max })),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(frame_len(bytes, max), want, "{name}");
            // split_frame agrees, except that it also waits for the body.
            let whole = matches!(want, Ok(Some(n)) if n <= bytes.len());
            let (r, left) = split(bytes, max);
            let split_want = want.map(|n| n.filter(|_| whole));
            assert_eq!(r.map(|f| f.map(|f| f.len())), split_want, "{name}");
            assert_eq!(left, if whole { 0 } else { bytes.len() }, "{name}: consumed only when whole");
        }
    }

    #[test]
    fn truncated_bodies_wait() {
        let whole = b"Q\0\0\0\x0dselect 1\0";
        for cut in 0..whole.len() {
            assert_eq!(split(&whole[..cut], DEFAULT_MAX_FRAME_LEN), (Ok(None), cut), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_frames_fail_before_the_body_arrives() {
        // 512 MiB announced, only the header buffered, limit 1 MiB: rejected now.
        let (r, _) = split(b"D\x20\0\0\0", 1 << 20);
        assert!(matches!(r, Err(FrameError::TooLong { .. })));
    }

    #[test]
    fn errors_name_the_message_readably() {
        assert_eq!(
            FrameError::TooShort { tag: b'Q', len: 2 }.to_string(),
            "message 'Q' has length 2, below the minimum of 4"
        );
        assert_eq!(
            FrameError::TooLong { tag: 0, len: 9, max: 8 }.to_string(),
            "message 0x00 has length 9, above the limit of 8 bytes"
        );
    }

    #[test]
    fn built_frames_round_trip() {
        let f = Frame::new(b'p', b"secret\0");
        assert_eq!(f.as_bytes(), &b"p\0\0\0\x0bsecret\0"[..]);
        let mut buf = BytesMut::from(&f.clone().into_bytes()[..]);
        assert_eq!(split_frame(&mut buf, DEFAULT_MAX_FRAME_LEN), Ok(Some(f)));
        assert!(!Frame::new(b'S', b"").is_empty());
    }
}
