//! The configuration as a tree of YAML nodes that remember where they came from.
//!
//! The YAML reader ([`crate::yaml`]) builds this tree, environment overrides ([`crate::env`]) are
//! grafted onto it, and the typed configuration is deserialized from it ([`crate::de`]).
//!
//! Invariant kept here: every node and every mapping key carries its [`Origin`] (a line of the file
//! or an environment variable), so any problem found later can be reported at the place an
//! operator has to edit.

use std::fmt;

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A line of the configuration file (1-based).
    Line(usize),
    /// An environment variable, by name.
    Env(String),
}

/// A scalar as written: its text and whether it was plain (unquoted, so subject to type resolution).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Scalar {
    pub text: String,
    pub plain: bool,
}

impl Scalar {
    /// Whether this is YAML's null (`~`, `null`, or nothing at all).
    pub fn is_null(&self) -> bool {
        self.plain && matches!(self.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }
}

/// One key of a mapping with its value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_origin: Origin,
    pub node: Node,
}

/// What a node holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in document order; keys are unique (the reader keeps the last of duplicates).
    Map(Vec<Entry>),
}

/// A YAML node and its origin.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub origin: Origin,
    pub value: Value,
}

/// One step of a key path: a mapping key or a sequence index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Renders a key path the way errors show it: `bootstrap.initdb[1]`.
pub(crate) struct PathDisplay<'a>(pub &'a [Seg<'a>]);

impl fmt::Display for PathDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Builds a dotted key path from plain keys.
pub(crate) fn keys<'a>(path: &[&'a str]) -> Vec<Seg<'a>> {
    path.iter().map(|k| Seg::Key(k)).collect()
}

impl Node {
    /// A scalar node.
    pub fn scalar(text: impl Into<String>, plain: bool, origin: Origin) -> Node {
        Node { origin, value: Value::Scalar(Scalar { text: text.into(), plain }) }
    }

    /// An empty mapping.
    pub fn map(origin: Origin) -> Node {
        Node { origin, value: Value::Map(Vec::new()) }
    }

    /// Whether the node is YAML null.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.is_null())
    }

    /// The entry for `key`, if this is a mapping that has it.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The value at `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.node)
    }

    /// The origin that best locates `path`: the key (or item) itself if it exists, otherwise the
    /// deepest part of the path that does. `None` when not even the first step exists.
    pub fn locate(&self, path: &[Seg<'_>]) -> Option<Origin> {
        let mut node = self;
        let mut found = None;
        for seg in path {
            match (seg, &node.value) {
                (Seg::Key(k), Value::Map(_)) => match node.entry(k) {
                    Some(e) => {
                        found = Some(e.key_origin.clone());
                        node = &e.node;
                    }
                    None => break,
                },
                (Seg::Index(i), Value::Seq(items)) => match items.get(*i) {
                    Some(item) => {
                        found = Some(item.origin.clone());
                        node = item;
                    }
                    None => break,
                },
                _ => break,
            }
        }
        found
    }

    /// Sets the value at `path` (plain keys), creating mappings on the way. A null on the way is
    /// replaced by a mapping (`restapi:` with nothing under it); any other non-mapping is left
    /// alone and `false` is returned, so the original type error is the one reported.
    pub fn set(&mut self, path: &[&str], value: Node) -> bool {
        let Some((last, parents)) = path.split_last() else { return false };
        let mut node = self;
        for key in parents {
            let origin = value.origin.clone();
            let Value::Map(entries) = &mut node.value else { return false };
            let idx = match entries.iter().position(|e| e.key == *key) {
                Some(i) => i,
                None => {
                    entries.push(Entry {
                        key: (*key).to_string(),
                        key_origin: origin.clone(),
                        node: Node::map(origin),
                    });
                    entries.len() - 1
                }
            };
            let child = &mut entries[idx].node;
            if child.is_null() {
                *child = Node::map(value.origin.clone());
            }
            node = child;
        }
        let Value::Map(entries) = &mut node.value else { return false };
        let key_origin = value.origin.clone();
        match entries.iter_mut().find(|e| e.key == *last) {
            Some(e) => {
                e.key_origin = key_origin;
                e.node = value;
            }
            None => entries.push(Entry { key: (*last).to_string(), key_origin, node: value }),
        }
        true
    }

    /// Every scalar value stored under a key named `password` (or `*_password`), anywhere in the tree.
    pub fn passwords(&self, out: &mut Vec<String>) {
        match &self.value {
            Value::Scalar(_) => {}
            Value::Seq(items) => items.iter().for_each(|n| n.passwords(out)),
            Value::Map(entries) => {
                for e in entries {
                    match &e.node.value {
                        // `password`, and `keyfile_password` in `ctl`.
                        Value::Scalar(s) if e.key == "password" || e.key.ends_with("_password") => {
                            out.push(s.text.clone())
                        }
                        _ => e.node.passwords(out),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Origin {
        Origin::Line(n)
    }

    fn sample() -> Node {
        let listen = Node::scalar("127.0.0.1:8008", true, line(3));
        let restapi = Node {
            origin: line(3),
            value: Value::Map(vec![Entry { key: "listen".into(), key_origin: line(3), node: listen }]),
        };
        let items = Node { origin: line(6), value: Value::Seq(vec![Node::scalar("a", true, line(6))]) };
        Node {
            origin: line(1),
            value: Value::Map(vec![
                Entry { key: "restapi".into(), key_origin: line(2), node: restapi },
                Entry { key: "list".into(), key_origin: line(5), node: items },
                Entry { key: "empty".into(), key_origin: line(7), node: Node::scalar("", true, line(7)) },
            ]),
        }
    }

    #[test]
    fn locate_finds_the_deepest_known_key() {
        let t = sample();
        assert_eq!(t.locate(&keys(&["restapi", "listen"])), Some(line(3)));
        assert_eq!(t.locate(&keys(&["restapi", "nope"])), Some(line(2)));
        assert_eq!(t.locate(&[Seg::Key("list"), Seg::Index(0)]), Some(line(6)));
        assert_eq!(t.locate(&keys(&["nothing"])), None);
        assert_eq!(PathDisplay(&[Seg::Key("a"), Seg::Key("b"), Seg::Index(2)]).to_string(), "a.b[2]");
    }

    #[test]
    fn set_creates_sections_and_replaces_nulls() {
        let mut t = sample();
        let env = || Origin::Env("X".into());
        assert!(t.set(&["restapi", "listen"], Node::scalar("0.0.0.0:1", false, env())));
        assert_eq!(t.locate(&keys(&["restapi", "listen"])), Some(env()));
        assert!(t.set(&["postgresql", "authentication", "superuser", "password"], Node::scalar("p", false, env())));
        assert!(t.get("postgresql").unwrap().get("authentication").is_some());
        assert!(t.set(&["empty", "x"], Node::scalar("1", false, env())));
        assert!(!t.set(&["list", "x"], Node::scalar("1", false, env())));
        let mut pw = Vec::new();
        t.passwords(&mut pw);
        assert_eq!(pw, ["p"]);
    }
}
