//! Which SQL keeps state in the server session beyond its transaction, so that a pooled client
//! using it must keep its server connection for the rest of its session ("pinned"), sans-IO:
//! a scan of the text the client sends (a simple query, or a Parse).
//!
//! What pins, and why each pins rather than fails: every one of these works exactly as on a
//! direct connection once the client keeps its server; the cost is one server connection per
//! such client, counted in `SHOW STATS`/`/metrics`.
//! * `LISTEN`: notifications arrive between transactions, on that server only;
//! * `SET` (or `SET SESSION`) of a parameter the server does not report, `SET ROLE`, `SET SESSION
//!   AUTHORIZATION`: the value lives in the session (reported parameters such as `TimeZone` or
//!   `application_name` are replayed instead, and `SET LOCAL`, `SET TRANSACTION` and
//!   `SET CONSTRAINTS` end with the transaction);
//! * `PREPARE` (SQL-level prepared statements; the protocol's are handled without pinning);
//! * `DECLARE ... WITH HOLD`: the cursor outlives its transaction;
//! * `CREATE TEMP`/`TEMPORARY` objects: they live until the session ends;
//! * session-level advisory locks (`pg_advisory_lock*`, `pg_try_advisory_lock*`; the `_xact_`
//!   ones end with the transaction).
//!
//! The scan is conservative by construction: it splits the text at every `;` (inside string
//! literals too, which can only add candidate statements, never hide one) and looks at each
//! candidate's first words after comments, so a session-level statement is never missed; what it
//! may do is pin a client that did not need it (say, a string literal containing `; LISTEN x`),
//! which costs a connection, not correctness. `SELECT ... INTO TEMP` is not recognised.
//!
//! Invariant: the scan never allocates for a text that pins nothing and never panics.

use crate::session_params::TRACKED;
use crate::wire;

/// A session-level feature that pins the client to its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// `LISTEN`.
    Listen,
    /// A session `SET` of an unreported parameter, a role or the session authorization.
    Set,
    /// SQL-level `PREPARE`.
    Prepare,
    /// `DECLARE ... WITH HOLD`.
    HoldCursor,
    /// `CREATE TEMP ...`.
    TempObject,
    /// A session-level advisory lock.
    AdvisoryLock,
}

impl Feature {
    /// Every feature, for counters.
    pub const ALL: [Feature; 6] = [
        Feature::Listen,
        Feature::Set,
        Feature::Prepare,
        Feature::HoldCursor,
        Feature::TempObject,
        Feature::AdvisoryLock,
    ];

    /// The name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Listen => "listen",
            Feature::Set => "set",
            Feature::Prepare => "prepare",
            Feature::HoldCursor => "hold_cursor",
            Feature::TempObject => "temp_object",
            Feature::AdvisoryLock => "advisory_lock",
        }
    }
}

/// Whether `a` contains `needle` (ASCII lower case, not empty), ignoring ASCII case. Looks only
/// where the needle's first letter is, found with memchr's vectorised search.
fn contains_ci(a: &[u8], needle: &[u8]) -> bool {
    let (lower, upper) = (needle[0], needle[0].to_ascii_uppercase());
    memchr::memchr2_iter(lower, upper, a)
        .any(|at| a.get(at..at + needle.len()).is_some_and(|w| w.eq_ignore_ascii_case(needle)))
}

/// Whether the `v` at `at` in `sql` is that of a session-level advisory lock function's name
/// (`pg_advisory_lock*` or `pg_try_advisory_lock*`, in any case). The scan looks only where a
/// `v` is (rare in SQL, unlike the `p` of `pg_`), and compares the name around it.
fn advisory_lock_at(sql: &[u8], at: usize) -> bool {
    const NAMES: [(&[u8], usize); 2] = [(b"pg_advisory_lock", 5), (b"pg_try_advisory_lock", 9)];
    NAMES.iter().any(|(name, v_at)| {
        at.checked_sub(*v_at)
            .and_then(|from| sql.get(from..from + name.len()))
            .is_some_and(|w| w.eq_ignore_ascii_case(name))
    })
}

/// Skips whitespace and comments (`--` to the end of the line, `/* */`, nested).
fn skip_noise(mut s: &[u8]) -> &[u8] {
    loop {
        let trimmed = s.trim_ascii_start();
        if let Some(rest) = trimmed.strip_prefix(b"--") {
            s = rest.iter().position(|&b| b == b'\n').map_or(&[][..], |i| &rest[i + 1..]);
        } else if let Some(mut rest) = trimmed.strip_prefix(b"/*") {
            let mut depth = 1;
            while depth > 0 && !rest.is_empty() {
                if rest.starts_with(b"/*") {
                    depth += 1;
                    rest = &rest[2..];
                } else if rest.starts_with(b"*/") {
                    depth -= 1;
                    rest = &rest[2..];
                } else {
                    rest = &rest[1..];
                }
            }
            s = rest;
        } else {
            return trimmed;
        }
    }
}

/// The next word (letters, digits, `_`, `.`, or a double-quoted identifier) and the rest.
fn word(s: &[u8]) -> (&[u8], &[u8]) {
    let s = skip_noise(s);
    if let Some(rest) = s.strip_prefix(b"\"") {
        let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
        return (&rest[..end], rest.get(end + 1..).unwrap_or_default());
    }
    let end = s.iter().position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.')).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn is(w: &[u8], k: &str) -> bool {
    w.eq_ignore_ascii_case(k.as_bytes())
}

/// The feature one statement (from its first word) uses, if any.
fn statement(s: &[u8]) -> Option<Feature> {
    let (first, rest) = word(s);
    if is(first, "listen") {
        return Some(Feature::Listen);
    }
    if is(first, "prepare") {
        // `PREPARE TRANSACTION` is two-phase commit, not a statement.
        let (next, _) = word(rest);
        return (!is(next, "transaction")).then_some(Feature::Prepare);
    }
    if is(first, "declare") {
        return contains_ci(rest, b"with hold").then_some(Feature::HoldCursor);
    }
    if is(first, "create") {
        let (mut next, mut after) = word(rest);
        if is(next, "or") {
            // CREATE OR REPLACE TEMP VIEW
            let (_, a) = word(after);
            (next, after) = word(a);
        }
        if is(next, "global") || is(next, "local") {
            (next, _) = word(after);
        }
        return (is(next, "temp") || is(next, "temporary")).then_some(Feature::TempObject);
    }
    if is(first, "set") {
        let (mut next, mut after) = word(rest);
        if is(next, "local") || is(next, "transaction") || is(next, "constraints") {
            return None;
        }
        if is(next, "session") {
            (next, after) = word(after);
            if is(next, "characteristics") {
                return Some(Feature::Set);
            }
        }
        let _ = after;
        if TRACKED.iter().any(|t| is(next, t)) || is(next, "names") {
            // Reported by the server (`SET NAMES` is client_encoding): replayed, not pinned.
            return None;
        }
        return Some(Feature::Set);
    }
    None
}

/// Whether a statement beginning `s` (spaces skipped) may use a session-level feature: its first
/// word is one that [`statement`] looks further at, or it begins with a comment or a quoted
/// identifier (which only [`statement`] reads). Most statements are ruled out here by their first
/// word alone (`SELECT`, `INSERT`, `BEGIN`, ...), without the word-by-word reading.
fn may_pin(s: &[u8]) -> bool {
    let starts_word = |w: &[u8]| {
        s.get(..w.len()).is_some_and(|p| p.eq_ignore_ascii_case(w))
            && s.get(w.len()).is_none_or(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.'))
    };
    match s.first().map(u8::to_ascii_lowercase) {
        Some(b'l') => starts_word(b"listen"),
        Some(b'p') => starts_word(b"prepare"),
        Some(b'd') => starts_word(b"declare"),
        Some(b'c') => starts_word(b"create"),
        Some(b's') => starts_word(b"set"),
        Some(b'-' | b'/' | b'"') => true,
        _ => false,
    }
}

/// The feature the candidate statement `stmt` uses, if any.
fn candidate(stmt: &[u8]) -> Option<Feature> {
    if may_pin(stmt.trim_ascii_start()) {
        statement(stmt)
    } else {
        None
    }
}

/// The session-level feature `sql` uses, if any: a session-level advisory lock anywhere in the
/// text takes precedence, else the feature of the first statement that uses one.
///
/// This runs on every query of a transaction-mode client, so it reads the text once: one
/// vectorised search for the `;` that end candidate statements and the `v` of the advisory-lock
/// names together, rather than a search per kind (each search has a fixed cost that dominates on
/// a short statement).
pub fn scan(sql: &[u8]) -> Option<Feature> {
    let mut first = None;
    // The current candidate statement begins at `start`; the search goes on from `from`.
    let (mut start, mut from) = (0, 0);
    // A text ending in `;` (as most do) ends the search there: no search of nothing after it.
    while let Some(found) =
        sql.get(from..).filter(|rest| !rest.is_empty()).and_then(|rest| memchr::memchr3(b';', b'v', b'V', rest))
    {
        let at = from + found;
        if sql[at] == b';' {
            if first.is_none() {
                first = candidate(&sql[start..at]);
            }
            start = at + 1;
        } else if advisory_lock_at(sql, at) {
            return Some(Feature::AdvisoryLock);
        }
        from = at + 1;
    }
    first.or_else(|| candidate(&sql[start..]))
}

/// The session-level feature a client message's SQL uses, if any: a simple query's text, or a
/// Parse's query text. Only the text is read (not the terminating NUL, nor a Parse's parameter
/// types), so that a text ending in `;` ends the scan there.
pub fn scan_message(tag: u8, body: &[u8]) -> Option<Feature> {
    let text = match tag {
        b'Q' => body.strip_suffix(b"\0").unwrap_or(body),
        b'P' => {
            let (_name, rest) = wire::split_cstr(body)?;
            wire::split_cstr(rest).map_or(rest, |(query, _)| query)
        }
        _ => return None,
    };
    scan(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_session_level_statement_pins_with_its_feature() {
        let table: &[(&str, Option<Feature>)] = &[
            ("LISTEN jobs", Some(Feature::Listen)),
            ("  /* why */ -- note\n listen \"Jobs\"", Some(Feature::Listen)),
            ("SET search_path = app, public", Some(Feature::Set)),
            ("set session work_mem = '64MB'", Some(Feature::Set)),
            ("SET ROLE reporting", Some(Feature::Set)),
            ("SET SESSION AUTHORIZATION bob", Some(Feature::Set)),
            ("PREPARE q(int) AS SELECT $1", Some(Feature::Prepare)),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", Some(Feature::HoldCursor)),
            ("CREATE TEMP TABLE t (a int)", Some(Feature::TempObject)),
            ("create global temporary table t (a int)", Some(Feature::TempObject)),
            ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", Some(Feature::TempObject)),
            ("SELECT pg_advisory_lock(42)", Some(Feature::AdvisoryLock)),
            ("select PG_TRY_ADVISORY_LOCK_SHARED(1)", Some(Feature::AdvisoryLock)),
            ("BEGIN; SET search_path = app; COMMIT", Some(Feature::Set)),
            ("SELECT 1;LISTEN jobs", Some(Feature::Listen)),
            ("SELECT 1; select 2; Pg_Advisory_Lock_Shared(7)", Some(Feature::AdvisoryLock)),
            ("SELECT pg_try_advisory_lock(1)", Some(Feature::AdvisoryLock)),
            ("vacuum; SELECT pg_advisory_lock_shared(1)", Some(Feature::AdvisoryLock)),
            ("\"set\" search_path = app", Some(Feature::Set)),
            ("SET\tsearch_path = app", Some(Feature::Set)),
            ("Set search_path = app;", Some(Feature::Set)),
            ("SELECT 1; /* c */ PREPARE q AS SELECT 1", Some(Feature::Prepare)),
            ("SELECT 1;\nlisten jobs;", Some(Feature::Listen)),
        ];
        for (sql, want) in table {
            assert_eq!(scan(sql.as_bytes()), *want, "{sql}");
        }
    }

    #[test]
    fn transaction_scoped_and_reported_settings_do_not_pin() {
        for sql in [
            "SELECT 1",
            "UPDATE t SET a = 1 WHERE b = 2",
            "SET LOCAL search_path = app",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET CONSTRAINTS ALL DEFERRED",
            "SET TimeZone = 'UTC'",
            "SET application_name = 'x'",
            "set names 'UTF8'",
            "SELECT pg_advisory_xact_lock(1)",
            "DECLARE c CURSOR FOR SELECT 1",
            "CREATE TABLE t (a int)",
            "PREPARE TRANSACTION 'gid'",
            "INSERT INTO t VALUES ('listen')",
            "SELECT 'pg_advisory_loc'",
            "SELECT 'v', 'pg_advisory'",
            "SETTINGS",
            "SELECT * FROM settings; CREATED",
            "LISTENER",
            "preparedness",
            "vpg_advisory_loc",
            "SELECT 1;",
            ";;",
            "",
        ] {
            assert_eq!(scan(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn a_message_is_scanned_for_its_query_text_only() {
        let mut parse = b"stmt\0LISTEN jobs\0".to_vec();
        parse.extend_from_slice(&1i16.to_be_bytes());
        parse.extend_from_slice(&23i32.to_be_bytes());
        assert_eq!(scan_message(b'P', &parse), Some(Feature::Listen));
        assert_eq!(scan_message(b'P', b"\0SELECT 1;\0\0\0"), None);
        assert_eq!(scan_message(b'Q', b"SELECT 1; LISTEN jobs;\0"), Some(Feature::Listen));
        assert_eq!(scan_message(b'Q', b"SELECT pg_advisory_lock(1);\0"), Some(Feature::AdvisoryLock));
        assert_eq!(scan_message(b'Q', b"SELECT abalance FROM pgbench_accounts WHERE aid = 7;\0"), None);
        // Not SQL: a Bind's bytes are never read as a statement.
        assert_eq!(scan_message(b'B', b"\0LISTEN jobs\0"), None);
    }

    /// The scan before its shortcuts (the first-letter check and the look at each `v`): every
    /// statement read word by word, the advisory-lock names looked for at every `p`.
    fn scan_word_by_word(sql: &[u8]) -> Option<Feature> {
        let advisory = (0..sql.len()).any(|at| {
            let rest = &sql[at..];
            [&b"pg_advisory_lock"[..], b"pg_try_advisory_lock"]
                .iter()
                .any(|n| rest.get(..n.len()).is_some_and(|w| w.eq_ignore_ascii_case(n)))
        });
        if advisory {
            return Some(Feature::AdvisoryLock);
        }
        sql.split(|&b| b == b';').find_map(statement)
    }

    proptest::proptest! {
        #[test]
        fn the_shortcuts_change_no_answer(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "SET", "set", "Settings", "LISTEN", "listener", "PREPARE", "prepare_x", "TRANSACTION",
                "DECLARE", "declared", "CURSOR", "WITH HOLD", "CREATE", "created", "TEMP", "OR",
                "REPLACE", "GLOBAL", "local", "session", "ROLE", "TimeZone", "SELECT", "pg_advisory_lock",
                "PG_TRY_ADVISORY_LOCK", "pg_advisory_loc", "v", ";", " ", "\t", "\n", "--", "/*", "*/",
                "\"", "'", "(", ")", "=", "1", ".", "_",
            ]), 0..12)
        ) {
            let sql = parts.concat();
            proptest::prop_assert_eq!(scan(sql.as_bytes()), scan_word_by_word(sql.as_bytes()), "{}", sql);
        }

        #[test]
        fn the_scan_never_panics(text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = scan(&text);
        }
    }
}
