//! `PATCH /config` (a JSON merge patch, applied as Patroni does) and `PUT /config` (full replacement) of the
//! dynamic configuration in the DCS `config` key.
//!
//! Invariants kept here:
//! * a configuration is written only if it still reads as a [`DynamicConfig`] and passes
//!   [`DynamicConfig::validate`] (the lease timing rule; `loop_wait` and `retry_timeout` that do
//!   not fit `ttl` are lowered as Patroni does, with its warning, and written lowered), so no API
//!   call can store a configuration the members would reject or that lets a leader lose its
//!   lease before noticing;
//! * and only if every `postgresql.parameters` value is one the local PostgreSQL accepts
//!   ([`Backend::check_parameters`]): a bad value is answered 400 naming the parameter, and
//!   nothing is written;
//! * `PATCH` works on JSON values, so keys Rampart does not interpret survive, and is written with
//!   compare-and-swap on the revision it was computed from: a concurrent change makes it fail
//!   with 409 instead of being silently overwritten;
//! * an edit that changes nothing writes nothing.

use std::sync::Arc;

use rampart_core::dynamic::patch_config;
use rampart_core::DynamicConfig;
use serde_json::{Map, Value};

use crate::backend::Backend;
use crate::reply::Reply;

/// Checks that `doc` is a usable dynamic configuration; the error names the offending key.
/// Timeouts that break the timing rule are lowered first, as Patroni does (see
/// [`DynamicConfig::adjust_timeouts`]).
pub fn check_config(doc: &Value) -> Result<DynamicConfig, String> {
    let Some(fields) = doc.as_object() else { return Err("the configuration must be a JSON object".into()) };
    match serde_json::from_value::<DynamicConfig>(doc.clone()) {
        Ok(mut cfg) => {
            cfg.adjust_timeouts();
            cfg.validate().map(|()| cfg).map_err(|e| format!("invalid configuration: {e}"))
        }
        Err(e) => match bad_key(fields) {
            Some(key) => Err(format!("invalid configuration: {key}: {e}")),
            None => Err(format!("invalid configuration: {e}")),
        },
    }
}

/// serde's messages do not say where a value was wrong: find the first key that, put alone into
/// the default configuration, fails to read (looking one level into sections such as `postgresql`).
fn bad_key(fields: &Map<String, Value>) -> Option<String> {
    let base = serde_json::to_value(DynamicConfig::default()).ok()?;
    let fails = |doc: &Value| serde_json::from_value::<DynamicConfig>(doc.clone()).is_err();
    for (key, value) in fields {
        let mut probe = base.clone();
        probe[key.as_str()] = value.clone();
        if !fails(&probe) {
            continue;
        }
        if let (Some(section), Some(default_section)) = (value.as_object(), base.get(key).and_then(Value::as_object)) {
            for (sub, sub_value) in section {
                let mut one = default_section.clone();
                one.insert(sub.clone(), sub_value.clone());
                let mut probe = base.clone();
                probe[key.as_str()] = Value::Object(one);
                if fails(&probe) {
                    return Some(format!("{key}.{sub}"));
                }
            }
        }
        return Some(key.clone());
    }
    None
}

/// Everything a write needs checked, in order: the structure and timing rule, then the
/// PostgreSQL parameters against the local server's settings. Returns the document to write:
/// `doc` with the timeouts lowered when Patroni's rule lowered them (the warning is logged).
fn checked_for_write(backend: &Arc<dyn Backend>, doc: &Value) -> Result<Value, String> {
    let mut cfg: DynamicConfig =
        serde_json::from_value(doc.clone()).map_err(|_| check_config(doc).err().unwrap_or_default())?;
    let mut doc = doc.clone();
    if let Some(warning) = cfg.adjust_timeouts() {
        tracing::warn!("{warning}");
        doc["loop_wait"] = cfg.loop_wait.into();
        doc["retry_timeout"] = cfg.retry_timeout.into();
    }
    check_config(&doc)?;
    let notes = backend
        .check_parameters(&cfg.postgresql.parameters)
        .map_err(|e| format!("invalid configuration: postgresql.parameters.{e}"))?;
    for note in notes {
        tracing::warn!("postgresql.parameters: {note}");
    }
    Ok(doc)
}

fn compact(doc: &Value) -> String {
    // Serializing a `Value` cannot fail (its map keys are strings).
    serde_json::to_string(doc).unwrap_or_default()
}

/// Handles `PATCH /config` with a non-empty JSON object.
pub async fn patch(backend: &Arc<dyn Backend>, changes: &Map<String, Value>) -> Reply {
    let cluster = match backend.read_cluster().await {
        Ok(c) => c,
        Err(e) => return Reply::text(503, format!("cannot read the cluster from the DCS: {e}")),
    };
    let Some(config) = &cluster.config else {
        return Reply::text(503, "no configuration in the DCS");
    };
    // The snapshot keeps the parsed configuration, whose `extra` maps carry every key Rampart
    // does not interpret; its JSON form is the closest thing to the stored text.
    let current = match serde_json::to_value(config) {
        Ok(v) => v,
        Err(e) => return Reply::text(500, format!("cannot render the current configuration: {e}")),
    };
    let mut updated = current.clone();
    patch_config(&mut updated, &Value::Object(changes.clone()));
    let updated = match checked_for_write(backend, &updated) {
        Ok(doc) => doc,
        Err(why) => return Reply::text(400, why),
    };
    if updated != current {
        match backend.write_config(compact(&updated), Some(cluster.config_revision)).await {
            Ok(true) => {}
            Ok(false) => return Reply::text(409, "the configuration was changed concurrently; read it and try again"),
            Err(e) => return Reply::text(503, format!("failed to write the configuration: {e}")),
        }
    }
    Reply::json(200, updated)
}

/// Handles `PUT /config` with a non-empty JSON object.
pub async fn put(backend: &Arc<dyn Backend>, replacement: &Map<String, Value>) -> Reply {
    let doc = match checked_for_write(backend, &Value::Object(replacement.clone())) {
        Ok(doc) => doc,
        Err(why) => return Reply::text(400, why),
    };
    let unchanged = match backend.read_cluster().await {
        Ok(c) => c.config.as_ref().and_then(|cfg| serde_json::to_value(cfg).ok()).is_some_and(|cur| cur == doc),
        // Cannot compare: write anyway, the write reports whether the DCS is reachable.
        Err(_) => false,
    };
    if !unchanged {
        match backend.write_config(compact(&doc), None).await {
            Ok(true) => {}
            Ok(false) => return Reply::text(502, "failed to write the configuration"),
            Err(e) => return Reply::text(502, format!("failed to write the configuration: {e}")),
        }
    }
    Reply::json(200, doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_names_the_key() {
        assert!(check_config(&json!({"ttl": 30, "synchronous_mode": true})).is_ok());
        let e = check_config(&json!({"ttl": "soon"})).unwrap_err();
        assert!(e.starts_with("invalid configuration: ttl: invalid type"), "{e}");
        let e = check_config(&json!({"postgresql": {"use_slots": "maybe", "parameters": {}}})).unwrap_err();
        assert!(e.starts_with("invalid configuration: postgresql.use_slots:"), "{e}");
        let lowered = check_config(&json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 10})).unwrap();
        assert_eq!((lowered.loop_wait, lowered.retry_timeout), (1, 9), "lowered as Patroni does");
        let e = check_config(&json!({"ttl": 3})).unwrap_err();
        assert!(e.starts_with("invalid configuration: ttl: 3 is below the minimum"), "{e}");
        assert!(check_config(&json!([1])).is_err());
        let e = check_config(&json!({"synchronous_mode": "quorom"})).unwrap_err();
        assert!(e.starts_with("invalid configuration: synchronous_mode: synchronous_mode must be"), "{e}");
        let e = check_config(&json!({"synchronous_mode": "quorum", "synchronous_node_count": 0})).unwrap_err();
        assert!(e.contains("synchronous_node_count"), "{e}");
        assert!(check_config(&json!({"synchronous_mode": "quorum", "synchronous_node_count": 2})).is_ok());
    }
}
