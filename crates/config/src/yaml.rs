//! Reading YAML text into a [`Node`] tree, and how plain scalars are typed.
//!
//! Parsing uses serde-saphyr's event parser (granit-parser), so every node keeps the line it was
//! written on. Anchors, aliases and `<<` merge keys are resolved here; duplicate keys keep the last
//! value, as PyYAML (and so Patroni) does, with a note.
//!
//! Leniency for hand-edited files: tabs are not valid YAML indentation, but copy-pasted Patroni
//! configs often contain them. When a document fails to parse and has tab-indented lines, it is
//! parsed a second time with those lines re-indented from their context (tab-indented comments
//! simply lose their indentation). Each re-indented line yields a note; if the second attempt also
//! fails the original error is reported.
//!
//! Invariant kept here: line numbers in the tree are those of the text the operator wrote (the
//! re-indentation never adds or removes lines).

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};

use crate::tree::{Entry, Node, Origin, Value};

/// Deepest nesting accepted; real configurations use fewer than ten levels.
const MAX_DEPTH: usize = 64;

/// A document that could not be read as YAML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

/// A parsed document with the notes (warnings) produced while reading it.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub root: Node,
    pub notes: Vec<(Origin, String)>,
}

/// Parses one YAML document whose top level must be a mapping. An empty document is an empty
/// mapping.
pub(crate) fn parse(text: &str) -> Result<Parsed, SyntaxError> {
    let first = match parse_exact(text) {
        Ok(parsed) => return Ok(parsed),
        Err(e) => e,
    };
    let Some((fixed, fixes)) = untab(text) else { return Err(first) };
    let Ok(mut parsed) = parse_exact(&fixed) else { return Err(first) };
    for (line, indent) in fixes {
        parsed.notes.push((
            Origin::Line(line),
            format!("tab characters used for indentation (not valid YAML); read as {indent} spaces"),
        ));
    }
    parsed.notes.sort_by_key(|(o, _)| match o {
        Origin::Line(l) => *l,
        Origin::Env(_) => 0,
    });
    Ok(parsed)
}

/// Parses one YAML document of any shape (a mapping, a list or a single scalar), as strictly as
/// YAML demands: used for values an operator types or edits, not for configuration files.
/// `None` for a document without content (YAML's null), which [`Builder::document`] would read
/// as an empty mapping.
pub(crate) fn parse_value(text: &str) -> Result<Option<Node>, SyntaxError> {
    if !text.lines().any(is_content) {
        return Ok(None);
    }
    let mut b = Builder { parser: Parser::new_from_str(text), anchors: HashMap::new(), notes: Vec::new() };
    b.document().map(Some)
}

fn parse_exact(text: &str) -> Result<Parsed, SyntaxError> {
    let mut b = Builder { parser: Parser::new_from_str(text), anchors: HashMap::new(), notes: Vec::new() };
    let root = b.document()?;
    if !matches!(root.value, Value::Map(_)) {
        return Err(SyntaxError {
            line: line_of(&root.origin),
            message: "expected a mapping of sections (scope, name, restapi, ...) at the top level".into(),
        });
    }
    Ok(Parsed { root, notes: b.notes })
}

fn line_of(origin: &Origin) -> Option<usize> {
    match origin {
        Origin::Line(l) => Some(*l),
        Origin::Env(_) => None,
    }
}

struct Builder<'a> {
    parser: Parser<'a, serde_saphyr::granit_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    notes: Vec<(Origin, String)>,
}

impl<'a> Builder<'a> {
    /// The next event that is not a comment.
    fn next(&mut self) -> Result<(Event<'a>, Span), SyntaxError> {
        loop {
            match self.parser.next_event() {
                None => return Err(SyntaxError { line: None, message: "unexpected end of the document".into() }),
                Some(Err(e)) => {
                    return Err(SyntaxError { line: Some(e.marker().line()), message: e.info() });
                }
                Some(Ok((event, span))) => {
                    if is_comment(&event) {
                        continue;
                    }
                    return Ok((event, span));
                }
            }
        }
    }

    fn document(&mut self) -> Result<Node, SyntaxError> {
        let (ev, _) = self.next()?;
        if !matches!(ev, Event::StreamStart) {
            return Err(SyntaxError { line: None, message: "malformed YAML stream".into() });
        }
        let (ev, span) = self.next()?;
        let root = match ev {
            Event::StreamEnd => return Ok(Node::map(Origin::Line(1))),
            Event::DocumentStart(..) => {
                let (ev, span) = self.next()?;
                self.node(ev, span, 0)?
            }
            _ => return Err(unexpected(&span, "the start of a document")),
        };
        let (ev, span) = self.next()?;
        if !matches!(ev, Event::DocumentEnd) {
            return Err(unexpected(&span, "the end of the document"));
        }
        let (ev, span) = self.next()?;
        match ev {
            Event::StreamEnd => Ok(root),
            _ => Err(SyntaxError {
                line: Some(span.start.line()),
                message: "more than one YAML document; a configuration file holds exactly one".into(),
            }),
        }
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, SyntaxError> {
        let origin = Origin::Line(span.start.line());
        if depth > MAX_DEPTH {
            return Err(SyntaxError { line: Some(span.start.line()), message: "nesting is too deep".into() });
        }
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let explicit_str = tag.as_ref().is_some_and(|t| t.is_yaml_core_schema_tag("str"));
                let plain = style == ScalarStyle::Plain && !explicit_str;
                (Node::scalar(text.into_owned(), plain, origin), anchor)
            }
            Event::SequenceStart(_, anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                (Node { origin, value: Value::Seq(items) }, anchor)
            }
            Event::MappingStart(_, anchor, _) => (self.mapping(origin, depth)?, anchor),
            Event::Alias(id) => {
                let mut node = self.anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                    line: Some(span.start.line()),
                    message: "alias to an unknown anchor".into(),
                })?;
                node.origin = origin;
                return Ok(node);
            }
            _ => return Err(unexpected(&span, "a value")),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn mapping(&mut self, origin: Origin, depth: usize) -> Result<Node, SyntaxError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut merges: Vec<Node> = Vec::new();
        loop {
            let (ev, span) = self.next()?;
            let key_origin = Origin::Line(span.start.line());
            let key = match ev {
                Event::MappingEnd => break,
                Event::Scalar(text, ..) => text.into_owned(),
                Event::Alias(id) => match self.anchors.get(&id).map(|n| &n.value) {
                    Some(Value::Scalar(s)) => s.text.clone(),
                    _ => return Err(not_scalar_key(&span)),
                },
                _ => return Err(not_scalar_key(&span)),
            };
            let (ev, span) = self.next()?;
            let value = self.node(ev, span, depth + 1)?;
            if key == "<<" {
                merges.push(value);
                continue;
            }
            if let Some(old) = entries.iter_mut().find(|e| e.key == key) {
                self.notes.push((key_origin.clone(), format!("duplicate key {key}; the last one is used")));
                old.key_origin = key_origin;
                old.node = value;
            } else {
                entries.push(Entry { key, key_origin, node: value });
            }
        }
        // `<<: *base` (or a list of them): keys written in this mapping win over merged ones.
        for merged in merges {
            let sources = match merged.value {
                Value::Seq(items) => items,
                other => vec![Node { origin: merged.origin, value: other }],
            };
            for source in sources {
                let Value::Map(extra) = source.value else {
                    return Err(SyntaxError {
                        line: line_of(&source.origin),
                        message: "a `<<` merge key needs a mapping or a list of mappings".into(),
                    });
                };
                for e in extra {
                    if !entries.iter().any(|x| x.key == e.key) {
                        entries.push(e);
                    }
                }
            }
        }
        Ok(Node { origin, value: Value::Map(entries) })
    }
}

/// Comments are presentation only (serde-saphyr enables comment events by default).
fn is_comment(event: &Event<'_>) -> bool {
    matches!(event, Event::Comment(..))
}

fn unexpected(span: &Span, wanted: &str) -> SyntaxError {
    SyntaxError { line: Some(span.start.line()), message: format!("malformed YAML: expected {wanted}") }
}

fn not_scalar_key(span: &Span) -> SyntaxError {
    SyntaxError { line: Some(span.start.line()), message: "mapping keys must be plain strings".into() }
}

/// Length of the run of spaces and tabs that starts `line`.
fn lead_len(line: &str) -> usize {
    line.len() - line.trim_start_matches([' ', '\t']).len()
}

/// Whether a line holds YAML content (not blank, not only a comment).
fn is_content(line: &str) -> bool {
    let rest = line.trim_start_matches([' ', '\t']).trim_end_matches('\r');
    !rest.is_empty() && !rest.starts_with('#')
}

fn tab_indented(line: &str) -> bool {
    line[..lead_len(line)].contains('\t')
}

/// Whether a line (without its indentation) introduces a nested block: `key:`, `- key:`, `key: |`.
fn opens_block(rest: &str) -> bool {
    let body = match rest.find(" #") {
        Some(i) => &rest[..i],
        None => rest,
    };
    let body = body.trim_end();
    body.ends_with(':') || ["|", "|-", "|+", ">", ">-", ">+"].iter().any(|b| body.ends_with(&format!(": {b}")))
}

/// Re-indents tab-indented lines from their context. Returns the new text and, for each fixed
/// content line, its line number and the indentation it was given; `None` if no line starts
/// with a tab.
///
/// A tab-indented line is placed on one of the indentation levels open at that point: a line that
/// opens a block goes to the deepest open level shallower than the next (space-indented) content
/// line, any other line to the deepest open level not deeper than it.
fn untab(text: &str) -> Option<(String, Vec<(usize, usize)>)> {
    let lines: Vec<&str> = text.split('\n').collect();
    if !lines.iter().any(|l| tab_indented(l)) {
        return None;
    }
    let mut out = Vec::with_capacity(lines.len());
    let mut fixes = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut prev_opener: Option<usize> = None;
    // The last tab-indented line's raw indentation and where it was placed: lines indented the
    // same way are siblings.
    let mut last_tabbed: Option<(&str, usize)> = None;
    for (i, line) in lines.iter().enumerate() {
        let (lead, rest) = line.split_at(lead_len(line));
        if !is_content(line) {
            out.push(if lead.contains('\t') { rest.to_string() } else { (*line).to_string() });
            continue;
        }
        let indent = if let Some((_, same)) = last_tabbed.filter(|(raw, _)| *raw == lead) {
            fixes.push((i + 1, same));
            same
        } else if lead.contains('\t') {
            let next =
                lines[i + 1..].iter().find(|l| is_content(l) && !tab_indented(l)).map(|l| lead_len(l)).unwrap_or(0);
            let opener = opens_block(rest);
            let pick = if opener {
                open.iter().rev().find(|&&lvl| lvl < next)
            } else {
                open.iter().rev().find(|&&lvl| lvl <= next)
            };
            let mut indent = pick.copied().unwrap_or(0);
            // Right after `key:` the line must be deeper than that key.
            if let Some(p) = prev_opener.filter(|&p| indent <= p) {
                indent = match (opener, next > p + 1) {
                    (true, true) => p + (next - p) / 2,
                    (false, true) => next,
                    _ => p + 2,
                };
            }
            fixes.push((i + 1, indent));
            last_tabbed = Some((lead, indent));
            indent
        } else {
            last_tabbed = None;
            lead.len()
        };
        while open.last().is_some_and(|&top| top > indent) {
            open.pop();
        }
        if open.last() != Some(&indent) {
            open.push(indent);
        }
        prev_opener = opens_block(rest).then_some(indent);
        out.push(format!("{}{}", " ".repeat(indent), rest));
    }
    Some((out.join("\n"), fixes))
}

/// A plain scalar after type resolution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Resolved<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
}

/// Types a plain scalar the way PyYAML (and so Patroni) does for the forms that matter in a
/// configuration: null, YAML 1.1 booleans (`true`, `yes`, `on`, ...), decimal, `0x` and `0o`
/// integers, and decimal floats with a dot. Numbers with a leading zero (`0755`) stay strings, so
/// they reach PostgreSQL exactly as written.
pub(crate) fn resolve(text: &str) -> Resolved<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Resolved::Bool(false),
        _ => {}
    }
    if let Some(r) = resolve_int(text) {
        return r;
    }
    if looks_float(text) {
        if let Ok(f) = text.parse::<f64>() {
            return Resolved::Float(f);
        }
    }
    Resolved::Str(text)
}

/// Parses a YAML boolean (YAML 1.1 spellings included).
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match resolve(text) {
        Resolved::Bool(b) => Some(b),
        _ => None,
    }
}

fn resolve_int(text: &str) -> Option<Resolved<'static>> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (digits, radix) = if let Some(h) = body.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = body.strip_prefix("0o") {
        (o, 8)
    } else if body.len() > 1 && body.starts_with('0') {
        return None;
    } else {
        (body, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        0i64.checked_sub_unsigned(magnitude).map(Resolved::Int)
    } else {
        Some(i64::try_from(magnitude).map(Resolved::Int).unwrap_or(Resolved::UInt(magnitude)))
    }
}

fn looks_float(text: &str) -> bool {
    let t = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    let Some((whole, frac)) = mantissa.split_once('.') else { return false };
    if !digits(whole) || !digits(frac) || (whole.is_empty() && frac.is_empty()) {
        return false;
    }
    match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{keys, Seg};

    fn scalar<'a>(n: &'a Node, path: &[&str]) -> &'a str {
        let mut node = n;
        for k in path {
            node = node.get(k).unwrap_or_else(|| panic!("no {k}"));
        }
        match &node.value {
            Value::Scalar(s) => &s.text,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn lines_are_recorded() {
        let p = parse("# c\nscope: pg\nrestapi:\n  listen: 1:2\nlist:\n  - a\n  - b\n").unwrap();
        assert_eq!(p.root.locate(&keys(&["scope"])), Some(Origin::Line(2)));
        assert_eq!(p.root.locate(&keys(&["restapi", "listen"])), Some(Origin::Line(4)));
        assert_eq!(p.root.locate(&[Seg::Key("list"), Seg::Index(1)]), Some(Origin::Line(7)));
        assert_eq!(scalar(&p.root, &["restapi", "listen"]), "1:2");
        assert!(p.notes.is_empty());
    }

    #[test]
    fn empty_document_is_an_empty_mapping() {
        assert_eq!(parse("").unwrap().root.value, Value::Map(vec![]));
        assert_eq!(parse("# nothing\n").unwrap().root.value, Value::Map(vec![]));
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let e = parse("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(e.line.is_some(), "{e:?}");
        let e = parse("- a\n- b\n").unwrap_err();
        assert!(e.message.contains("top level"), "{e:?}");
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("more than one"), "{e:?}");
        let e = parse("a: 1\n  b: 2\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e:?}");
    }

    #[test]
    fn anchors_merges_and_duplicates() {
        let p = parse("base: &b\n  x: 1\n  y: 2\nother:\n  <<: *b\n  y: 3\nref: *b\ndup: 1\ndup: 2\n").unwrap();
        assert_eq!(scalar(&p.root, &["other", "x"]), "1");
        assert_eq!(scalar(&p.root, &["other", "y"]), "3");
        assert_eq!(scalar(&p.root, &["ref", "y"]), "2");
        assert_eq!(scalar(&p.root, &["dup"]), "2");
        assert_eq!(p.notes, vec![(Origin::Line(9), "duplicate key dup; the last one is used".to_string())]);
    }

    #[test]
    fn quoting_is_remembered() {
        let p = parse("a: '1'\nb: 1\nc: !!str 2\n").unwrap();
        let plain = |k: &str| match &p.root.get(k).unwrap().value {
            Value::Scalar(s) => s.plain,
            _ => unreachable!(),
        };
        assert!(!plain("a"));
        assert!(plain("b"));
        assert!(!plain("c"));
    }

    #[test]
    fn tab_indentation_is_recovered_from_context() {
        let text = "bootstrap:\n    initdb:\n        - data-checksums\n\n\t\t# a comment\n\t\tusers:\n        admin:\n            password: x\nname: n\n";
        let p = parse(text).unwrap();
        assert_eq!(scalar(&p.root, &["bootstrap", "users", "admin", "password"]), "x");
        assert_eq!(scalar(&p.root, &["name"]), "n");
        assert_eq!(p.root.locate(&keys(&["bootstrap", "users"])), Some(Origin::Line(6)));
        assert_eq!(p.notes.len(), 1);
        assert_eq!(p.notes[0].0, Origin::Line(6));
        assert!(p.notes[0].1.contains("read as 4 spaces"), "{:?}", p.notes);
        // Right after an opener the line goes deeper.
        let p = parse("a:\n\tb: 1\n\tc: 2\nd: 3\n").unwrap();
        assert_eq!(scalar(&p.root, &["a", "b"]), "1");
        assert_eq!(scalar(&p.root, &["a", "c"]), "2");
        assert_eq!(scalar(&p.root, &["d"]), "3");
    }

    #[test]
    fn valid_tabs_are_left_alone() {
        let p = parse("a: |\n    x\n    \ty\nb:\t1\n").unwrap();
        assert_eq!(scalar(&p.root, &["a"]), "x\n\ty\n");
        assert_eq!(scalar(&p.root, &["b"]), "1");
        assert!(p.notes.is_empty());
    }

    #[test]
    fn scalar_resolution() {
        assert_eq!(resolve("~"), Resolved::Null);
        assert_eq!(resolve("on"), Resolved::Bool(true));
        assert_eq!(resolve("No"), Resolved::Bool(false));
        assert_eq!(resolve("30"), Resolved::Int(30));
        assert_eq!(resolve("-5"), Resolved::Int(-5));
        assert_eq!(resolve("0x10"), Resolved::Int(16));
        assert_eq!(resolve("18446744073709551615"), Resolved::UInt(u64::MAX));
        assert_eq!(resolve("0755"), Resolved::Str("0755"));
        assert_eq!(resolve("1.5"), Resolved::Float(1.5));
        assert_eq!(resolve("192.168.5.20"), Resolved::Str("192.168.5.20"));
        assert_eq!(resolve("1e3"), Resolved::Str("1e3"));
        assert_eq!(resolve("8MB"), Resolved::Str("8MB"));
        assert_eq!(resolve("-"), Resolved::Str("-"));
    }
}
