//! The cache key of a statement text: the text with its numeric and string constants masked, so
//! that `... WHERE aid = 17` and `... WHERE aid = 4711` are classified once (an application's
//! statements differ in their constants far more often than in anything else).
//!
//! This is a lexer of constants, not a parser: it only decides where a constant starts and ends,
//! and gives up (the text itself is the key) wherever that could be in doubt.
//!
//! Invariant: two texts with the same key differ only in the values of constants, and a
//! constant's value never changes a route: so they have the same [`super::classify::Facts`].
//! To keep that true the key is made only for a single statement that starts with a keyword
//! of a query or DML (never `SET`, `BEGIN` and the like, where a constant is a setting); the
//! mask is a NUL byte, which no statement text can contain; and a text with a backslash, a
//! dollar sign (dollar quoting), an `E'`/`U&'`/`B'`/`X'` prefix or an unterminated quote or
//! comment is its own key.

use std::borrow::Cow;

/// What replaces a constant in a key (no statement text contains a NUL).
const MASK: char = '\0';

/// Statement keywords whose constants never change the route.
const MASKABLE: [&str; 8] = ["select", "with", "values", "table", "insert", "update", "delete", "merge"];

/// The key `text` is cached under: masked when that is safe, else the text itself.
pub fn key(text: &str) -> Cow<'_, str> {
    match masked(text) {
        Some(k) => Cow::Owned(k),
        None => Cow::Borrowed(text),
    }
}

/// The text with its constants masked, or `None` when the text must be its own key.
fn masked(text: &str) -> Option<String> {
    let b = text.as_bytes();
    if b.iter().any(|&c| c == b'\\' || c == b'$' || c == 0) {
        return None;
    }
    let first = first_word(text)?;
    if !MASKABLE.iter().any(|k| first.eq_ignore_ascii_case(k)) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut changed = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                // A string constant; `''` inside is a quote. A letter right before it (E'',
                // U&'', B'', X'', N'') changes how it is read: no key then.
                if i > 0 && is_ident(b[i - 1]) {
                    return None;
                }
                let end = quoted_end(b, i, b'\'')?;
                out.push(MASK);
                changed = true;
                i = end;
            }
            b'"' => {
                // A quoted identifier: kept (a function's name can be one).
                let end = quoted_end(b, i, b'"')?;
                out.push_str(&text[i..end]);
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n);
                out.push_str(&text[i..end]);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = block_comment_end(b, i)?;
                out.push_str(&text[i..end]);
                i = end;
            }
            b';' => {
                // Only a trailing `;` (and blanks): several statements are their own key.
                if !text[i + 1..].trim().is_empty() {
                    return None;
                }
                out.push_str(&text[i..]);
                i = b.len();
            }
            b'0'..=b'9' if i == 0 || !is_ident(b[i - 1]) => {
                let mut end = i + 1;
                while end < b.len() && (is_ident(b[end]) || b[end] == b'.') {
                    end += 1;
                }
                out.push(MASK);
                changed = true;
                i = end;
            }
            _ => {
                // Whole UTF-8 sequences: copy up to the next byte of interest.
                let end = b[i + 1..]
                    .iter()
                    .position(|&c| matches!(c, b'\'' | b'"' | b'-' | b'/' | b';' | b'0'..=b'9'))
                    .map_or(b.len(), |n| i + 1 + n);
                out.push_str(&text[i..end]);
                i = end;
            }
        }
    }
    changed.then_some(out)
}

/// A byte that continues an identifier (or a number's letters: `1e5`, `0x1F`, `1_000`).
fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// The first word after blanks, comments and opening parentheses.
fn first_word(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'(') {
            i += 1;
        }
        if b[i..].starts_with(b"--") {
            i += b[i..].iter().position(|&c| c == b'\n')? + 1;
        } else if b[i..].starts_with(b"/*") {
            i = block_comment_end(b, i)?;
        } else {
            break;
        }
    }
    let len = b[i..].iter().position(|&c| !c.is_ascii_alphabetic()).unwrap_or(b.len() - i);
    (len > 0).then(|| &text[i..i + len])
}

/// Where the quoted token starting at `start` ends (after its closing quote; a doubled quote is
/// part of it); `None` when it does not end.
fn quoted_end(b: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut i = start + 1;
    loop {
        i += b[i..].iter().position(|&c| c == quote)? + 1;
        if b.get(i) != Some(&quote) {
            return Some(i);
        }
        i += 1;
    }
}

/// Where the block comment starting at `start` ends; they nest in PostgreSQL.
fn block_comment_end(b: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(text: &str) -> String {
        key(text).replace(MASK, "?")
    }

    #[test]
    fn constants_of_queries_and_dml_are_masked() {
        assert_eq!(
            k("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;"),
            "SELECT abalance FROM pgbench_accounts WHERE aid = ?;"
        );
        assert_eq!(
            k("UPDATE t SET v = v + -5 WHERE id = 3 AND name = 'O''Brien'"),
            "UPDATE t SET v = v + -? WHERE id = ? AND name = ?"
        );
        assert_eq!(k("select 1.5e-3, .5, 0x1F, 1_000"), "select ?-?, .?, ?, ?");
        assert_eq!(key("SELECT 1"), key("SELECT 2"));
        assert_eq!(key("SELECT 'a'"), key("SELECT 'bcd'"));
    }

    #[test]
    fn identifiers_comments_and_quoted_names_are_kept() {
        assert_eq!(k("SELECT f1(c2) FROM t3"), "SELECT f1(c2) FROM t3");
        assert_eq!(k("SELECT \"f 1\"(2) -- it's 3\n"), "SELECT \"f 1\"(?) -- it's 3\n");
        assert_eq!(k("/* a 'b' /* 1 */ */ SELECT 2"), "/* a 'b' /* 1 */ */ SELECT ?");
        assert_ne!(key("SELECT \"f1\"()"), key("SELECT \"f2\"()"));
    }

    #[test]
    fn settings_and_doubtful_texts_are_their_own_key() {
        for text in [
            "SET default_transaction_read_only = 1",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "SELECT 1; SELECT 2",
            "SELECT $1 + 1",
            "SELECT $$it's$$, nextval('s')",
            "SELECT E'\\'', 1",
            "SELECT X'1F', 2",
            "SELECT 'unterminated",
            "SELECT /* unterminated",
            "SELECT now()",
        ] {
            assert_eq!(key(text), Cow::Borrowed(text), "{text}");
        }
    }

    #[test]
    fn multibyte_text_is_copied_whole() {
        assert_eq!(k("SELECT 'é', ü FROM 表 WHERE x = 1"), "SELECT ?, ü FROM 表 WHERE x = ?");
    }
}
