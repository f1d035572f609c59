//! Small readers and writers shared by the decoders: big-endian integers and NUL-terminated
//! strings.
//!
//! Every reader returns `None` instead of indexing past the end, which is what lets the
//! decoders promise never to panic on hostile input.

use bytes::{BufMut, BytesMut};

/// Reads a big-endian `u32` at `at`, or `None` when fewer than four bytes remain.
pub(crate) fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Splits `buf` at its first NUL: the string before it and the rest after it (NUL dropped).
/// `None` when there is no NUL at all.
pub(crate) fn split_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = memchr::memchr(0, buf)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

/// Writes `s` followed by a NUL.
///
/// Callers must not pass interior NULs (they would end the string early and shift every later
/// field); the public encoders check or strip them before calling this.
pub(crate) fn put_cstr(dst: &mut BytesMut, s: &[u8]) {
    debug_assert!(!s.contains(&0), "interior NUL in a C string");
    dst.put_slice(s);
    dst.put_u8(0);
}

/// Writes a length-prefixed body: reserves the four length bytes, lets `body` write, then
/// patches in the length (which counts itself, as everywhere in the protocol).
pub(crate) fn put_with_len(dst: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let start = dst.len();
    dst.put_u32(0);
    body(dst);
    let len = u32::try_from(dst.len() - start).expect("encoded message longer than 4 GiB");
    dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_stop_at_the_end() {
        assert_eq!(u32_at(&[0, 0, 1, 2], 0), Some(258));
        assert_eq!(u32_at(&[0, 0, 1], 0), None);
        assert_eq!(u32_at(&[0, 0, 1, 2], 1), None);
        assert_eq!(u32_at(&[], usize::MAX), None);
        assert_eq!(split_cstr(b"ab\0cd"), Some((&b"ab"[..], &b"cd"[..])));
        assert_eq!(split_cstr(b"\0"), Some((&b""[..], &b""[..])));
        assert_eq!(split_cstr(b"abc"), None);
    }

    #[test]
    fn length_prefix_counts_itself() {
        let mut dst = BytesMut::from(&b"x"[..]);
        put_with_len(&mut dst, |d| put_cstr(d, b"hi"));
        assert_eq!(&dst[..], b"x\0\0\0\x07hi\0");
    }
}
