//! The synchronous replication settings of the dynamic configuration (`synchronous_mode`,
//! `synchronous_mode_strict`, `synchronous_node_count`, `maximum_lag_on_syncnode`), read with
//! Patroni's spellings.
//!
//! Patroni accepts booleans for `synchronous_mode` in every YAML/JSON form (`true`, `"on"`,
//! `"yes"`, `1`, ...) plus the string `"quorum"`. A value that is none of those is an error here,
//! never silently "off": an operator who mistyped `quorom` must not get asynchronous replication
//! while believing commits are replicated.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// `synchronous_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Asynchronous replication only (`false`).
    #[default]
    Off,
    /// Priority-based synchronous replication: `FIRST n (...)` (`true`, `on`).
    On,
    /// Quorum commit: `ANY k (...)` (`quorum`).
    Quorum,
}

impl SyncMode {
    /// Whether the leader manages `synchronous_standby_names` and the `sync` key.
    pub fn is_active(self) -> bool {
        self != SyncMode::Off
    }

    /// Reads one of Patroni's spellings.
    pub fn from_json(v: &Value) -> Result<SyncMode, String> {
        if let Value::String(s) = v {
            if s.trim().eq_ignore_ascii_case("quorum") {
                return Ok(SyncMode::Quorum);
            }
        }
        match lenient_bool(v) {
            Some(true) => Ok(SyncMode::On),
            Some(false) => Ok(SyncMode::Off),
            None => Err(format!("synchronous_mode must be true, false or \"quorum\", not {v}")),
        }
    }
}

/// A boolean as Patroni's `parse_bool` reads it: JSON booleans, `0`/`1`, and the strings
/// `on`/`off`, `true`/`false`, `yes`/`no`, `1`/`0` in any case.
pub fn lenient_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Some(true),
            "off" | "false" | "no" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

impl Serialize for SyncMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SyncMode::Off => s.serialize_bool(false),
            SyncMode::On => s.serialize_bool(true),
            SyncMode::Quorum => s.serialize_str("quorum"),
        }
    }
}

impl<'de> Deserialize<'de> for SyncMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        SyncMode::from_json(&v).map_err(serde::de::Error::custom)
    }
}

/// Deserializes an optional lenient boolean (`synchronous_mode_strict`).
pub(crate) fn opt_lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => lenient_bool(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("synchronous_mode_strict must be true or false, not {v}"))),
    }
}

/// An integer written as a number or as a numeric string (Patroni's `get_int` reads both).
fn lenient_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Deserializes `synchronous_node_count`, naming the key when the value is not a count.
pub(crate) fn opt_node_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => lenient_int(&v).and_then(|i| u32::try_from(i).ok()).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("synchronous_node_count must be a whole number of standbys, not {v}"))
        }),
    }
}

/// Deserializes `maximum_lag_on_syncnode`, naming the key when the value is not a byte count.
pub(crate) fn opt_lag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => lenient_int(&v).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "maximum_lag_on_syncnode must be a number of bytes (or -1 for never), not {v}"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patroni_spellings() {
        for on in [json!(true), json!("on"), json!("TRUE"), json!("yes"), json!(1), json!("1")] {
            assert_eq!(SyncMode::from_json(&on), Ok(SyncMode::On), "{on}");
        }
        for off in [json!(false), json!("off"), json!("no"), json!(0), json!("False")] {
            assert_eq!(SyncMode::from_json(&off), Ok(SyncMode::Off), "{off}");
        }
        assert_eq!(SyncMode::from_json(&json!("Quorum")), Ok(SyncMode::Quorum));
    }

    #[test]
    fn a_typo_is_an_error_not_async() {
        let e = SyncMode::from_json(&json!("quorom")).unwrap_err();
        assert!(e.contains("\"quorom\""), "{e}");
        assert!(SyncMode::from_json(&json!(2)).is_err());
        assert!(SyncMode::from_json(&json!({})).is_err());
    }

    #[test]
    fn written_back_as_patroni_writes_it() {
        assert_eq!(serde_json::to_value(SyncMode::On).unwrap(), json!(true));
        assert_eq!(serde_json::to_value(SyncMode::Off).unwrap(), json!(false));
        assert_eq!(serde_json::to_value(SyncMode::Quorum).unwrap(), json!("quorum"));
    }
}
