//! A serde `Deserializer` over the [`Node`] tree.
//!
//! The target type drives how a scalar is read: a `String` field takes the text as written
//! (`password: 1234` stays `"1234"`), a number or boolean field parses it, and free-form values
//! (`serde_json::Value`, `parameters`, tags, `bootstrap.dcs`) get PyYAML-style typing through
//! [`crate::yaml::resolve`].
//!
//! Invariants kept here:
//! * every error carries the dotted key path and the origin (line or environment variable) of the
//!   value that failed;
//! * every mapping key that a typed struct does not declare is reported as unknown, with its
//!   line; maps read as maps (free-form sections) report nothing;
//! * type errors about mappings and lists never echo the offending scalar, so a password written
//!   in the wrong place is not printed back.

use std::cell::RefCell;
use std::fmt;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Expected, Unexpected, Visitor};

use crate::tree::{Entry, Node, Origin, Scalar, Value};
use crate::yaml::{parse_bool, resolve, Resolved};

/// A deserialization failure, located.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeError {
    pub message: String,
    /// Dotted key path of the failing value; `None` for the top level.
    pub path: Option<String>,
    /// Where the failing value was written.
    pub origin: Option<Origin>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { message: plain_type_names(&msg.to_string()), path: None, origin: None }
    }
}

/// serde names Rust types in its messages ("expected u64"); an operator reads YAML, not Rust.
fn plain_type_names(msg: &str) -> String {
    let mut out = msg.to_string();
    for (rust, plain) in [
        ("expected u64", "expected a whole number of at least 0"),
        ("expected u32", "expected a whole number of at least 0"),
        ("expected u16", "expected a port number (0-65535)"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        if let Some(rest) = out.strip_suffix(rust) {
            out = format!("{rest}{plain}");
        }
    }
    out
}

/// A mapping key that the schema does not know.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UnknownKey {
    pub path: String,
    pub origin: Origin,
}

/// Deserializes `T` from `node`, returning it with the unknown keys met on the way.
pub(crate) fn from_node<T: DeserializeOwned>(node: &Node) -> Result<(T, Vec<UnknownKey>), DeError> {
    let unknown = RefCell::new(Vec::new());
    let value = T::deserialize(NodeDe { node, path: String::new(), unknown: &unknown })?;
    Ok((value, unknown.into_inner()))
}

struct NodeDe<'a> {
    node: &'a Node,
    path: String,
    unknown: &'a RefCell<Vec<UnknownKey>>,
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn mismatch(got: &str, expected: &dyn Expected) -> DeError {
    de::Error::custom(format_args!("expected {expected}, got {got}"))
}

impl<'a> NodeDe<'a> {
    fn scalar(&self) -> Option<&'a Scalar> {
        match &self.node.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Describes the node for an error without showing its content.
    fn kind(&self) -> &'static str {
        match &self.node.value {
            Value::Scalar(s) if s.is_null() => "nothing (null)",
            Value::Scalar(_) => "a single value",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    fn map_access(&self, known: Option<&'static [&'static str]>) -> MapDe<'a> {
        let entries: &'a [Entry] = match &self.node.value {
            Value::Map(e) => e,
            _ => &[],
        };
        MapDe { entries: entries.iter(), current: None, path: self.path.clone(), known, unknown: self.unknown }
    }

    /// The scalar's text for a typed (number, boolean) read, or a type error.
    fn text_for(&self, expected: &dyn Expected) -> Result<&'a str, DeError> {
        match self.scalar() {
            Some(s) if !s.is_null() => Ok(&s.text),
            _ => Err(mismatch(self.kind(), expected)),
        }
    }

    fn signed<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.text_for(&visitor)?;
        match resolve(text) {
            Resolved::Int(n) => visitor.visit_i64(n),
            Resolved::UInt(n) => visitor.visit_u64(n),
            _ => Err(de::Error::invalid_type(Unexpected::Str(text), &visitor)),
        }
    }

    fn float<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.text_for(&visitor)?;
        match resolve(text) {
            Resolved::Int(n) => visitor.visit_i64(n),
            Resolved::UInt(n) => visitor.visit_u64(n),
            Resolved::Float(f) => visitor.visit_f64(f),
            _ => Err(de::Error::invalid_type(Unexpected::Str(text), &visitor)),
        }
    }
}

macro_rules! forward_signed {
    ($($m:ident)*) => {$(
        fn $m<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.signed(visitor)
        }
    )*};
}

impl<'a> de::Deserializer<'a> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar(s) if !s.plain => visitor.visit_borrowed_str(&s.text),
            Value::Scalar(s) => match resolve(&s.text) {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(n) => visitor.visit_i64(n),
                Resolved::UInt(n) => visitor.visit_u64(n),
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::Str(t) => visitor.visit_borrowed_str(t),
            },
            Value::Seq(_) => self.deserialize_seq(visitor),
            Value::Map(_) => visitor.visit_map(self.map_access(None)),
        }
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.text_for(&visitor)?;
        match parse_bool(text) {
            Some(b) => visitor.visit_bool(b),
            None => Err(de::Error::invalid_type(Unexpected::Str(text), &visitor)),
        }
    }

    forward_signed! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    fn deserialize_f32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.float(visitor)
    }

    fn deserialize_f64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.float(visitor)
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some(s) if !s.is_null() => visitor.visit_borrowed_str(&s.text),
            _ => Err(mismatch(self.kind(), &visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_unit()
        } else {
            Err(mismatch(self.kind(), &visitor))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(self, _: &'static str, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(self, _: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => {
                visitor.visit_seq(SeqDe { items: items.iter().enumerate(), path: self.path, unknown: self.unknown })
            }
            _ => Err(mismatch(self.kind(), &"a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'a>>(self, _: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(_) => visitor.visit_map(self.map_access(None)),
            _ if self.node.is_null() => visitor.visit_map(self.map_access(None)),
            _ => Err(mismatch(self.kind(), &"a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(_) => visitor.visit_map(self.map_access(Some(fields))),
            _ if self.node.is_null() => visitor.visit_map(self.map_access(Some(fields))),
            _ => Err(mismatch(self.kind(), &"a mapping")),
        }
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some(s) if !s.is_null() => visitor.visit_enum(BorrowedStrDeserializer::new(&s.text)),
            _ => Err(mismatch(self.kind(), &OneOf(variants))),
        }
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

/// "one of `http`, `https`" for enum errors.
struct OneOf(&'static [&'static str]);

impl Expected for OneOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one of ")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{v}`")?;
        }
        Ok(())
    }
}

struct MapDe<'a> {
    entries: std::slice::Iter<'a, Entry>,
    current: Option<&'a Entry>,
    path: String,
    known: Option<&'static [&'static str]>,
    unknown: &'a RefCell<Vec<UnknownKey>>,
}

impl<'a> de::MapAccess<'a> for MapDe<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else { return Ok(None) };
        self.current = Some(entry);
        if let Some(known) = self.known {
            if !known.contains(&entry.key.as_str()) {
                self.unknown
                    .borrow_mut()
                    .push(UnknownKey { path: join_key(&self.path, &entry.key), origin: entry.key_origin.clone() });
            }
        }
        let key = BorrowedStrDeserializer::<DeError>::new(&entry.key);
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let entry = self.current.take().ok_or_else(|| <DeError as de::Error>::custom("value without a key"))?;
        let path = join_key(&self.path, &entry.key);
        seed.deserialize(NodeDe { node: &entry.node, path: path.clone(), unknown: self.unknown }).map_err(|mut e| {
            if e.path.is_none() {
                e.path = Some(path);
                e.origin = Some(entry.key_origin.clone());
            }
            e
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct SeqDe<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: String,
    unknown: &'a RefCell<Vec<UnknownKey>>,
}

impl<'a> de::SeqAccess<'a> for SeqDe<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        let Some((i, node)) = self.items.next() else { return Ok(None) };
        let path = format!("{}[{i}]", self.path);
        seed.deserialize(NodeDe { node, path: path.clone(), unknown: self.unknown }).map(Some).map_err(|mut e| {
            if e.path.is_none() {
                e.path = Some(path);
                e.origin = Some(node.origin.clone());
            }
            e
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::yaml::parse;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        n: u64,
        #[serde(default)]
        flag: bool,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<String>,
        #[serde(default)]
        free: BTreeMap<String, serde_json::Value>,
    }

    fn read<T: DeserializeOwned>(text: &str) -> Result<(T, Vec<UnknownKey>), DeError> {
        from_node(&parse(text).unwrap().root)
    }

    #[test]
    fn typed_values_and_unknown_keys() {
        let text = "name: 007\ninner:\n  n: 5\n  flag: yes\n  extra: 1\nlist: [a, 2]\nfree:\n  x: on\n  y: '3'\n  z: 4\nzz: 1\n";
        let (o, unknown) = read::<Outer>(text).unwrap();
        assert_eq!(o.name, "007");
        assert_eq!(o.inner, Some(Inner { n: 5, flag: true }));
        assert_eq!(o.list, ["a", "2"]);
        assert_eq!(o.free["x"], serde_json::json!(true));
        assert_eq!(o.free["y"], serde_json::json!("3"));
        assert_eq!(o.free["z"], serde_json::json!(4));
        let paths: Vec<_> = unknown.iter().map(|u| (u.path.as_str(), u.origin.clone())).collect();
        assert_eq!(paths, [("inner.extra", Origin::Line(5)), ("zz", Origin::Line(11))]);
    }

    #[test]
    fn errors_are_located() {
        let e = read::<Outer>("name: a\ninner:\n  n: lots\n").unwrap_err();
        assert_eq!(e.path.as_deref(), Some("inner.n"));
        assert_eq!(e.origin, Some(Origin::Line(3)));
        assert!(e.message.contains("\"lots\""), "{e}");

        let e = read::<Outer>("name: a\ninner:\n  flag: true\n").unwrap_err();
        assert_eq!(e.path.as_deref(), Some("inner"));
        assert_eq!(e.origin, Some(Origin::Line(2)));
        assert!(e.message.contains("missing field `n`"), "{e}");

        let e = read::<Outer>("name: a\nlist:\n  - x\n  - [y]\n").unwrap_err();
        assert_eq!(e.path.as_deref(), Some("list[1]"));
        assert_eq!(e.origin, Some(Origin::Line(4)));

        let e = read::<Outer>("name: a\ninner: secret-ish\n").unwrap_err();
        assert_eq!(e.to_string(), "inner: expected a mapping, got a single value");

        let e = read::<Outer>("inner: ~\n").unwrap_err();
        assert_eq!((e.path.as_ref(), e.to_string().as_str()), (None, "missing field `name`"));
    }

    #[test]
    fn null_sections_are_empty() {
        let (o, _) = read::<Outer>("name: a\ninner:\nfree:\n").unwrap();
        assert_eq!(o.inner, None);
        assert!(o.free.is_empty());
    }
}
