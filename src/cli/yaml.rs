//! A small YAML writer for JSON values, shaped like PyYAML's `safe_dump` (what patronictl prints):
//! keys sorted, block style with sequences inside mappings not indented, or one-line flow style.
//!
//! Only what `show-config`, `edit-config` and `-f yaml` need: mappings, sequences and scalars.
//! Strings that would read back as something else (`on`, `10`, `null`, `'`-leading text, ...) are
//! quoted, so that what we print parses back through [`rampart_config::yaml_to_json`] to the same
//! value; `edit-config` relies on that round trip.

use serde_json::Value;

/// Block style, ending with a newline: what `show-config` prints and `edit-config` edits.
pub fn to_block(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => block_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => block_seq(&mut out, a, 0),
        other => {
            out.push_str(&block_scalar(other));
            out.push('\n');
        }
    }
    out
}

/// One-line flow style, e.g. `{clonefrom: true, zone: a}` (tags in `tsv` and topology tables).
pub fn to_flow(value: &Value) -> String {
    flow(value)
}

fn sorted(m: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn is_nested(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn block_map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (k, v) in sorted(m) {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar_text(k, false));
        out.push(':');
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                block_map(out, inner, indent + 2);
            }
            // PyYAML does not indent a sequence under its key.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                block_seq(out, items, indent);
            }
            other => {
                out.push(' ');
                out.push_str(&block_scalar(other));
                out.push('\n');
            }
        }
    }
}

/// A scalar or empty container in block context, where `,[]{}` need no quoting.
fn block_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => scalar_text(s, false),
        other => flow(other),
    }
}

fn block_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        if is_nested(item) {
            // The item's first line goes right after the dash: render it at the dash's content
            // column and drop that first line's indentation.
            let mut inner = String::new();
            match item {
                Value::Object(m) => block_map(&mut inner, m, indent + 2),
                Value::Array(a) => block_seq(&mut inner, a, indent + 2),
                _ => unreachable!("is_nested"),
            }
            out.push_str(&inner[indent + 2..]);
        } else {
            out.push_str(&block_scalar(item));
            out.push('\n');
        }
    }
}

fn flow(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_text(s, true),
        Value::Array(a) => format!("[{}]", a.iter().map(flow).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            sorted(m)
                .into_iter()
                .map(|(k, v)| format!("{}: {}", scalar_text(k, true), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A string as a YAML scalar: plain when it reads back as the same string, else quoted.
/// `in_flow`: inside `[...]`/`{...}`, where `,[]{}` also end a plain scalar.
fn scalar_text(s: &str, in_flow: bool) -> String {
    if s.chars().any(|c| c.is_control() || c == '\u{feff}') {
        return double_quoted(s);
    }
    if plain_ok(s, in_flow) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

fn plain_ok(s: &str, in_flow: bool) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if first.is_whitespace() || s.ends_with(char::is_whitespace) {
        return false;
    }
    // Indicators that mean something at the start of a scalar.
    if "-?:,[]{}#&*!|>'\"%@`.=<~".contains(first) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    if in_flow && s.contains([',', '[', ']', '{', '}']) {
        return false;
    }
    // What YAML would type as null, a boolean or a number. PyYAML also reads dates and
    // colon-separated numbers (`1:30`, base 60) specially: quote anything like them.
    if !rampart_config::yaml_scalar(s).is_string() {
        return false;
    }
    let digits_start = s.chars().take_while(|c| c.is_ascii_digit()).count();
    if (digits_start == 4 && s[4..].starts_with('-')) || (digits_start > 0 && s[digits_start..].starts_with(':')) {
        return false;
    }
    true
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || c == '\u{feff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: &Value) {
        let text = to_block(v);
        let back = rampart_config::yaml_to_json(&text, "test").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(&back, v, "\n{text}");
    }

    #[test]
    fn block_style_like_pyyaml() {
        let v = json!({
            "ttl": 30,
            "postgresql": {"use_pg_rewind": true, "parameters": {"max_connections": 100, "wal_level": "replica"}},
            "pg_hba": ["host all all 0.0.0.0/0 md5", "local all all trust"],
            "pause": null,
            "slots": {},
        });
        assert_eq!(
            to_block(&v),
            "pause: null\npg_hba:\n- host all all 0.0.0.0/0 md5\n- local all all trust\npostgresql:\n  parameters:\n    \
             max_connections: 100\n    wal_level: replica\n  use_pg_rewind: true\nslots: {}\nttl: 30\n"
        );
        round_trip(&v);
    }

    #[test]
    fn lists_of_mappings_start_on_the_dash() {
        let v = json!([{"Member": "n1", "TL": 1, "Tags": {"nofailover": true}}, {"Member": "n2"}]);
        assert_eq!(to_block(&v), "- Member: n1\n  TL: 1\n  Tags:\n    nofailover: true\n- Member: n2\n");
        round_trip(&v);
        let nested = json!({"a": [[1, 2], {"b": [3]}]});
        round_trip(&nested);
    }

    #[test]
    fn ambiguous_strings_are_quoted() {
        for s in [
            "on",
            "yes",
            "10",
            "1.5",
            "null",
            "",
            " x",
            "x ",
            "a: b",
            "#x",
            "-x",
            "'q'",
            "2024-01-01T00:00:00+00:00",
            "1:30",
            "~",
            "x:",
        ] {
            let text = to_block(&json!({ "k": s }));
            assert!(text.starts_with("k: '") || text.starts_with("k: \""), "{s:?} printed as {text:?}");
            round_trip(&json!({ "k": s }));
        }
        for s in
            ["replica", "pg_stat_statements,auto_explain", "/var/run/postgresql", "1GB", "host all all 10.0.0.0/8 md5"]
        {
            assert_eq!(to_block(&json!({ "k": s })), format!("k: {s}\n"));
        }
        let odd = json!({"multi": "line one\nline \"two\"\t", "on": "key needs quotes", "it's": "it's"});
        assert!(to_block(&odd).contains("multi: \"line one\\nline \\\"two\\\"\\t\""));
        assert!(to_block(&odd).contains("'on': key needs quotes"));
        round_trip(&odd);
    }

    #[test]
    fn flow_style_for_table_cells() {
        assert_eq!(
            to_flow(&json!({"zone": "a,b", "nofailover": true, "x": [1, "on"]})),
            "{nofailover: true, x: [1, 'on'], zone: 'a,b'}"
        );
        assert_eq!(to_flow(&json!({})), "{}");
        assert_eq!(to_block(&json!("just text")), "just text\n");
    }
}
