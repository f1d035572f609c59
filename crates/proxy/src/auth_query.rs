//! Users' secrets from the server itself: PgBouncer's `auth_query`, run by the proxy over a
//! connection logged in as `auth_user`, sans-IO (the messages to send, and the secret read from
//! the answer).
//!
//! The user name is always a bound parameter (`$1`) of an extended-protocol query, never text
//! spliced into SQL (PgBouncer CVE-2025-12819 came from a `search_path` slipping into
//! `auth_query`); the default query names its schema (`pg_catalog.pg_authid`) for the same reason,
//! and refuses an expired password (PgBouncer CVE-2025-2291: `VALID UNTIL`).
//!
//! Invariant: a secret read never appears in an error or in `Debug` output.

use bytes::{BufMut, BytesMut};

use crate::auth_file::Secret;
use crate::backend::BackendMessage;
use crate::frame::{put_frame, Frame};
use crate::wire;

/// PgBouncer 1.24's default `auth_query`, schema-qualified.
pub const DEFAULT: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END \
     FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin";

/// Checks an `auth_query` from the configuration: it must take the user name as `$1` (and no
/// other parameter), and return the name and the secret.
pub fn check(query: &str) -> Result<(), String> {
    if !query.contains("$1") {
        return Err("auth_query must take the user name as the parameter $1".into());
    }
    if (2..10).any(|n| query.contains(&format!("${n}"))) {
        return Err("auth_query takes one parameter, $1 (the user name)".into());
    }
    Ok(())
}

/// The messages that run `query` for `user`: Parse, Bind (the name as the text parameter `$1`),
/// Execute and Sync, unnamed statement and portal.
pub fn request(query: &str, user: &str) -> BytesMut {
    let mut out = BytesMut::new();
    put_frame(&mut out, b'P', |d| {
        wire::put_cstr(d, b"");
        wire::put_cstr(d, query.replace('\0', "").as_bytes());
        d.put_u16(0);
    });
    put_frame(&mut out, b'B', |d| {
        wire::put_cstr(d, b"");
        wire::put_cstr(d, b"");
        d.put_u16(0); // all parameters in text format
        d.put_u16(1);
        d.put_u32(user.len() as u32);
        d.put_slice(user.as_bytes());
        d.put_u16(0); // all results in text format
    });
    put_frame(&mut out, b'E', |d| {
        wire::put_cstr(d, b"");
        d.put_u32(0);
    });
    put_frame(&mut out, b'S', |_| {});
    out
}

/// Reads the answer to [`request`], one backend message at a time.
#[derive(Debug, Default)]
pub struct Answer {
    secret: Option<Option<String>>,
    error: Option<String>,
}

/// What the answer said, once complete.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not complete yet: feed the next message.
    Pending,
    /// The user's secret.
    Found(Secret),
    /// No such user (no row), or no usable secret (NULL: no password, or it expired).
    NotFound,
}

impl Answer {
    /// The next backend message; an error names what went wrong (never a secret).
    pub fn on_message(&mut self, frame: &Frame) -> Result<Lookup, String> {
        match frame.tag() {
            b'D' => {
                if self.secret.is_some() {
                    return Err("auth_query returned more than one row".into());
                }
                self.secret = Some(
                    second_column(frame.body()).ok_or("auth_query must return two columns: the name and the secret")?,
                );
            }
            b'E' => {
                let message = match BackendMessage::parse(frame) {
                    Ok(BackendMessage::ErrorResponse(fields)) => fields.message().unwrap_or("(no message)").to_string(),
                    _ => "(malformed error)".to_string(),
                };
                self.error = Some(message);
            }
            b'Z' => {
                if let Some(e) = self.error.take() {
                    return Err(format!("auth_query failed: {e}"));
                }
                return Ok(match self.secret.take().flatten() {
                    Some(text) => Secret::parse(&text).map(Lookup::Found).map_err(|e| format!("auth_query: {e}"))?,
                    None => Lookup::NotFound,
                });
            }
            // ParseComplete, BindComplete, CommandComplete, notices, RowDescription...
            _ => {}
        }
        Ok(Lookup::Pending)
    }
}

/// The second column of a DataRow in text format (`None` inside: SQL NULL); `None` when the row
/// has fewer than two columns or is malformed.
fn second_column(body: &[u8]) -> Option<Option<String>> {
    crate::server_conn::columns(body).filter(|c| c.len() >= 2).map(|mut c| c.swap_remove(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::split_frame;

    fn data_row(cols: &[Option<&str>]) -> Frame {
        let mut body = BytesMut::new();
        body.put_u16(cols.len() as u16);
        for c in cols {
            match c {
                Some(v) => {
                    body.put_u32(v.len() as u32);
                    body.put_slice(v.as_bytes());
                }
                None => body.put_i32(-1),
            }
        }
        Frame::new(b'D', &body)
    }

    fn answer(frames: &[Frame]) -> Result<Lookup, String> {
        let mut a = Answer::default();
        let mut last = Ok(Lookup::Pending);
        for f in frames {
            last = a.on_message(f);
            if last.is_err() {
                break;
            }
        }
        last
    }

    #[test]
    fn the_user_name_is_a_bound_parameter_never_sql() {
        let evil = "x' OR '1'='1";
        let mut bytes = request(DEFAULT, evil);
        let tags: Vec<u8> = std::iter::from_fn(|| split_frame(&mut bytes, 1 << 20).unwrap()).map(|f| f.tag()).collect();
        assert_eq!(tags, b"PBES");
        let bytes = request(DEFAULT, evil);
        let parse_len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        let parse = &bytes[..1 + parse_len];
        assert!(!parse.windows(evil.len()).any(|w| w == evil.as_bytes()), "not in the query text");
        assert!(bytes.windows(evil.len()).any(|w| w == evil.as_bytes()), "in the Bind");
        assert!(DEFAULT.contains("pg_catalog.pg_authid") && DEFAULT.contains("rolvaliduntil"));
    }

    #[test]
    fn a_row_a_null_or_nothing() {
        let z = Frame::new(b'Z', b"I");
        let found = answer(&[
            Frame::new(b'1', b""),
            data_row(&[Some("alice"), Some("s3cret")]),
            Frame::new(b'C', b"SELECT 1\0"),
            z.clone(),
        ]);
        assert_eq!(found, Ok(Lookup::Found(Secret::Plain("s3cret".into()))));
        assert_eq!(
            answer(&[data_row(&[Some("alice"), None]), z.clone()]),
            Ok(Lookup::NotFound),
            "expired or no password"
        );
        assert_eq!(answer(&[Frame::new(b'C', b"SELECT 0\0"), z.clone()]), Ok(Lookup::NotFound));
        let two = answer(&[data_row(&[Some("a"), Some("x")]), data_row(&[Some("a"), Some("y")]), z.clone()]);
        assert_eq!(two, Err("auth_query returned more than one row".into()));
        assert!(answer(&[data_row(&[Some("alice")]), z.clone()]).unwrap_err().contains("two columns"));
        let mut e = BytesMut::new();
        crate::backend::ErrorResponse::new(
            crate::backend::Severity::Error,
            crate::backend::SqlState::new("42501"),
            "permission denied for table pg_authid",
        )
        .encode(&mut e);
        let e = split_frame(&mut e, 1 << 20).unwrap().unwrap();
        assert_eq!(answer(&[e, z]), Err("auth_query failed: permission denied for table pg_authid".into()));
    }

    #[test]
    fn a_query_without_its_parameter_is_refused() {
        assert!(check(DEFAULT).is_ok());
        assert!(check("SELECT usename, passwd FROM pg_shadow WHERE usename = 'x'").is_err());
        assert!(check("SELECT $1, $2").is_err());
    }
}
