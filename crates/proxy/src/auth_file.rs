//! Users' secrets for proxy-side authentication: PgBouncer's `auth_file` format, the three kinds
//! of secret it (and `pg_authid`, through `auth_query`) can hold, and MD5 authentication.
//!
//! The file has one user per line: `"name" "secret"`, each field in double quotes (a quote inside
//! is written twice); the rest of a line is ignored, as are lines that do not start with a quote
//! (comments). The secret is a plain password, an MD5 secret (`md5` and 32 hex digits, PostgreSQL's
//! `md5(password || user)`) or a SCRAM-SHA-256 verifier.
//!
//! Invariants: a secret never appears in `Debug` output or in an error (errors name the line);
//! the MD5 response is compared in constant time.

use std::collections::HashMap;

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use crate::scram::Verifier;

/// A user's stored secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The password itself.
    Plain(String),
    /// PostgreSQL's MD5 secret: the 32 hex digits of `md5(password || user)`.
    Md5(String),
    /// A SCRAM-SHA-256 verifier.
    Scram(Verifier),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Plain(_) => "Secret::Plain(***)",
            Secret::Md5(_) => "Secret::Md5(***)",
            Secret::Scram(_) => "Secret::Scram(***)",
        })
    }
}

impl Secret {
    /// Reads a stored secret as PostgreSQL does: `SCRAM-SHA-256$...` is a verifier (or, if it does
    /// not parse as one, refused), `md5` and 32 hex digits an MD5 secret, anything else a password.
    pub fn parse(text: &str) -> Result<Secret, String> {
        if text.starts_with("SCRAM-SHA-256$") {
            return Verifier::parse(text).map(Secret::Scram).ok_or_else(|| "malformed SCRAM-SHA-256 verifier".into());
        }
        match text.strip_prefix("md5") {
            Some(hex) if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Secret::Md5(hex.to_ascii_lowercase()))
            }
            _ => Ok(Secret::Plain(text.to_string())),
        }
    }

    /// The verifier a SCRAM exchange checks the client against: the stored one, or one made
    /// from the plain password; `None` for an MD5 secret (SCRAM cannot use it).
    pub fn scram_verifier(&self) -> Option<Verifier> {
        match self {
            Secret::Scram(v) => Some(v.clone()),
            Secret::Plain(p) => Some(Verifier::for_password(p)),
            Secret::Md5(_) => None,
        }
    }

    /// Whether `response` (the client's PasswordMessage to an AuthenticationMD5Password with
    /// `salt`) proves the password of `user`. A SCRAM verifier cannot check an MD5 response
    /// (PostgreSQL then runs SCRAM even where the rules say md5; so must the caller).
    pub fn check_md5(&self, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
        let inner = match self {
            Secret::Plain(p) => md5_hex(&[p.as_bytes(), user.as_bytes()]),
            Secret::Md5(hex) => hex.clone(),
            Secret::Scram(_) => return false,
        };
        let expected = format!("md5{}", md5_hex(&[inner.as_bytes(), &salt]));
        // The client's message ends with a NUL in some callers' framing; compare the text only.
        let response = response.strip_suffix(&[0]).unwrap_or(response);
        bool::from(expected.as_bytes().ct_eq(response))
    }
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The users of an auth file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthFile {
    users: HashMap<String, Secret>,
}

impl AuthFile {
    /// Parses the text of an auth file; an error names the line and what is wrong with it.
    pub fn parse(text: &str) -> Result<AuthFile, String> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let at = |why: &str| format!("line {}: {why}", i + 1);
            let line = line.trim_start();
            if !line.starts_with('"') {
                continue;
            }
            let (name, rest) = quoted(line).ok_or_else(|| at("the user name's quote is not closed"))?;
            let rest = rest.trim_start();
            if !rest.starts_with('"') {
                return Err(at("expected the secret in double quotes after the user name"));
            }
            let (secret, _) = quoted(rest).ok_or_else(|| at("the secret's quote is not closed"))?;
            if name.is_empty() {
                return Err(at("empty user name"));
            }
            let secret = Secret::parse(&secret).map_err(|why| at(&why))?;
            if users.insert(name.clone(), secret).is_some() {
                return Err(at(&format!("user \"{name}\" is listed twice")));
            }
        }
        Ok(AuthFile { users })
    }

    /// The secret of `user`, if listed.
    pub fn secret(&self, user: &str) -> Option<&Secret> {
        self.users.get(user)
    }

    /// How many users are listed.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user is listed.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The field in quotes at the start of `s` (a doubled quote is one quote), and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            out.push(c);
        } else if chars.peek().is_some_and(|&(_, n)| n == '"') {
            chars.next();
            out.push('"');
        } else {
            return Some((out, &body[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What libpq sends for `password` as `user` with `salt` (postgres-protocol's client code).
    fn md5_response(user: &str, password: &str, salt: [u8; 4]) -> String {
        postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt)
    }

    #[test]
    fn the_three_kinds_of_secret_are_read_as_postgresql_reads_them() {
        let file = r#"
; a comment, and a line without quotes
"alice" "s3cret"
"bob"   "md5a3556571e93b0d20722ba62be61e8c2d" extra fields are ignored
"car""ol" "SCRAM-SHA-256$4096:P1mF9h5YPsWF+3pBGC6Y3w==$h1zqAiIzqzJnxf1GRFiIbwgc4xX3hMn9axd7v9NuJ1c=:2spNAmq1Tw+Lzi6XU+cWK/CYhvNYiIbMRbRi5izLIuw="
"dave" "md5-not-hex"
"#;
        let f = AuthFile::parse(file).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f.secret("alice"), Some(&Secret::Plain("s3cret".into())));
        assert!(matches!(f.secret("bob"), Some(Secret::Md5(_))));
        assert!(matches!(f.secret("car\"ol"), Some(Secret::Scram(_))));
        assert_eq!(f.secret("dave"), Some(&Secret::Plain("md5-not-hex".into())), "not an MD5 secret: a password");
        assert_eq!(f.secret("eve"), None);
        assert!(!format!("{f:?}").contains("s3cret"), "{f:?}");
    }

    #[test]
    fn md5_responses_are_checked_against_a_password_or_an_md5_secret() {
        let salt = [1, 2, 3, 4];
        let plain = Secret::Plain("s3cret".into());
        let stored = Secret::parse(&postgres_protocol::password::md5(b"s3cret", "alice")).unwrap();
        assert!(matches!(stored, Secret::Md5(_)));
        for secret in [&plain, &stored] {
            assert!(secret.check_md5("alice", salt, md5_response("alice", "s3cret", salt).as_bytes()));
            assert!(!secret.check_md5("alice", salt, md5_response("alice", "wrong", salt).as_bytes()));
            assert!(!secret.check_md5("alice", [9, 9, 9, 9], md5_response("alice", "s3cret", salt).as_bytes()));
        }
        // The MD5 secret is bound to its user name, as in PostgreSQL.
        assert!(!stored.check_md5("bob", salt, md5_response("bob", "s3cret", salt).as_bytes()));
        let scram = Secret::Scram(Verifier::for_password("s3cret"));
        assert!(!scram.check_md5("alice", salt, md5_response("alice", "s3cret", salt).as_bytes()));
        assert!(scram.scram_verifier().is_some() && plain.scram_verifier().is_some());
        assert!(stored.scram_verifier().is_none(), "SCRAM cannot use an MD5 secret");
    }

    #[test]
    fn a_bad_line_is_refused_by_number_without_its_secret() {
        for (text, want) in [
            ("\"alice\" \"s3cret\n", "line 1: the secret's quote is not closed"),
            ("\n\"alice s3cret\n", "line 2: the user name's quote is not closed"),
            ("\"alice\" s3cret\n", "line 1: expected the secret in double quotes"),
            ("\"\" \"x\"\n", "line 1: empty user name"),
            ("\"a\" \"x\"\n\"a\" \"y\"\n", "line 2: user \"a\" is listed twice"),
            ("\"a\" \"SCRAM-SHA-256$4096:zz$yy:xx\"\n", "line 1: malformed SCRAM-SHA-256 verifier"),
        ] {
            let e = AuthFile::parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
