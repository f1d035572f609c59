//! Quoting of SQL text, for the few places that write SQL rather than bind parameters (role
//! names in DDL, `SET` statements replayed by the proxy). Shared by the PostgreSQL adapter and
//! the proxy so that there is one rule.
//!
//! Invariant: whatever the input, the output is one identifier or one string literal, and it
//! reads the same whatever `standard_conforming_strings` the server has.

/// An SQL identifier, always double-quoted (`"` doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal, as PostgreSQL's `quote_literal` writes it: `'` doubled, and with a
/// backslash present, the `E''` form with backslashes doubled.
pub fn quote_literal(value: &str) -> String {
    let doubled = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", doubled.replace('\\', "\\\\"))
    } else {
        format!("'{doubled}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("repl"), "\"repl\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("plain"), "'plain'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\'b"), r"E'a\\''b'");
    }
}
