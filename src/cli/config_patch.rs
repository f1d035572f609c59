//! Changing the dynamic configuration as `edit-config` does: `-s key.path=value`,
//! `-p pg_param=value`, `--apply` (merged in) and `--replace`; plus the check that the result is
//! a configuration the agents will accept.
//!
//! Semantics are patronictl's: dotted keys create the mappings on their way, except below
//! `postgresql.parameters` where the rest of the key is one parameter name (GUCs may contain
//! dots); values are YAML scalars typed as Patroni types them; a null value deletes the key, and
//! a mapping left empty by a deletion is removed too.

use anyhow::{bail, Context, Result};
use rampart_core::DynamicConfig;
use serde_json::{Map, Value};

/// One `-s`/`-p` assignment, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// Key path.
    pub path: Vec<String>,
    /// New value; null deletes.
    pub value: Value,
}

/// Parses `key.path=value` (`-s`), or `name=value` under `postgresql.parameters` when
/// `pg_param` (`-p`).
pub fn parse_assignment(text: &str, pg_param: bool) -> Result<Assignment> {
    let flag = if pg_param { "-p" } else { "-s" };
    let example = if pg_param { "-p max_connections=200" } else { "-s ttl=20" };
    let Some((key, value)) = text.split_once('=') else {
        bail!("edit-config: invalid setting {flag} {text:?}: expected KEY=VALUE (e.g. {example})");
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("edit-config: invalid setting {flag} {text:?}: the key is empty or has an empty part (e.g. {example})");
    }
    let full = if pg_param { format!("postgresql.parameters.{key}") } else { key.to_string() };
    let mut path: Vec<String> = Vec::new();
    for part in full.split('.') {
        if path.len() == 2 && path[0] == "postgresql" && path[1] == "parameters" {
            // A parameter name may itself contain dots (`pg_stat_statements.max`).
            path.push(full.splitn(3, '.').nth(2).unwrap_or_default().to_string());
            break;
        }
        path.push(part.to_string());
    }
    let value = rampart_config::yaml_to_json(value, &format!("{flag} {key}"))?;
    Ok(Assignment { path, value })
}

/// Applies `a` to `config` (an object).
pub fn assign(config: &mut Value, a: &Assignment) {
    fn walk(node: &mut Map<String, Value>, path: &[String], value: &Value) {
        let (key, rest) = path.split_first().expect("non-empty path");
        if rest.is_empty() {
            if value.is_null() {
                node.remove(key);
            } else {
                node.insert(key.clone(), value.clone());
            }
            return;
        }
        if !node.get(key).is_some_and(Value::is_object) {
            if value.is_null() {
                return; // Deleting below something that is not there: nothing to do.
            }
            node.insert(key.clone(), Value::Object(Map::new()));
        }
        let child = node.get_mut(key).and_then(Value::as_object_mut).expect("made an object above");
        walk(child, rest, value);
        if child.is_empty() {
            node.remove(key);
        }
    }
    if !config.is_object() {
        *config = Value::Object(Map::new());
    }
    walk(config.as_object_mut().expect("object"), &a.path, &a.value);
}

/// Merges `patch` into `config` (Patroni's `patch_config`, what `PATCH /config` and `--apply`
/// do): mappings merge key by key, null deletes, anything else replaces.
pub use rampart_core::dynamic::patch_config as merge;

/// Checks that `config` is a configuration the agents will accept: a mapping whose known keys
/// have the right types, whose timing keeps `loop_wait + 2 * retry_timeout <= ttl` (lowering
/// `loop_wait` and `retry_timeout` as Patroni does, with its warning) and whose PostgreSQL
/// parameter values this host's PostgreSQL accepts. Returns the configuration to write.
pub fn validate(config: &Value) -> Result<Value> {
    if !config.is_object() {
        bail!("edit-config: the configuration must be a mapping of keys (ttl, loop_wait, postgresql, ...)");
    }
    let mut parsed: DynamicConfig = serde_json::from_value(config.clone())
        .context("edit-config: the new configuration has a value of the wrong type")?;
    let mut config = config.clone();
    if let Some(warning) = parsed.adjust_timeouts() {
        eprintln!("warning: {warning}");
        config["loop_wait"] = parsed.loop_wait.into();
        config["retry_timeout"] = parsed.retry_timeout.into();
    }
    parsed.validate().map_err(|e| anyhow::anyhow!("edit-config: the new configuration cannot work: {e}"))?;
    // The values as this host's PostgreSQL (the agent's default bin_dir) would read them.
    let notes = rampart_pg::guc::check_with(&rampart_pg::settings::default_bin_dir(), &parsed.postgresql.parameters)
        .map_err(|e| anyhow::anyhow!("edit-config: postgresql.parameters.{e}; configuration not changed"))?;
    for n in notes {
        eprintln!("warning: postgresql.parameters: {n}");
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(config: &mut Value, text: &str, pg: bool) {
        assign(config, &parse_assignment(text, pg).unwrap());
    }

    #[test]
    fn dotted_keys_and_yaml_values() {
        let mut c = json!({"ttl": 30, "postgresql": {"use_pg_rewind": false, "parameters": {"max_connections": 100}}});
        set(&mut c, "ttl=20", false);
        set(&mut c, "postgresql.use_pg_rewind=true", false);
        set(&mut c, "max_connections=200", true);
        set(&mut c, " pg_stat_statements.max = 5000", true);
        set(&mut c, "synchronous_commit=on", true);
        set(&mut c, "wal_keep_size='1GB'", true);
        set(&mut c, "tags.x.y=[a, b]", false);
        assert_eq!(
            c,
            json!({
                "ttl": 20,
                "tags": {"x": {"y": ["a", "b"]}},
                "postgresql": {"use_pg_rewind": true, "parameters": {
                    "max_connections": 200, "pg_stat_statements.max": 5000, "synchronous_commit": true, "wal_keep_size": "1GB"
                }}
            })
        );
    }

    #[test]
    fn null_deletes_and_prunes_empty_mappings() {
        let mut c = json!({"ttl": 30, "postgresql": {"parameters": {"max_connections": 100}}, "pause": true});
        set(&mut c, "max_connections=null", true);
        set(&mut c, "pause=", false);
        set(&mut c, "nothing.here=~", false);
        assert_eq!(c, json!({"ttl": 30}));
    }

    #[test]
    fn bad_assignments_say_what_is_expected() {
        let e = parse_assignment("ttl", false).unwrap_err().to_string();
        assert_eq!(e, "edit-config: invalid setting -s \"ttl\": expected KEY=VALUE (e.g. -s ttl=20)");
        let e = parse_assignment("=5", true).unwrap_err().to_string();
        assert!(e.contains("-p \"=5\"") && e.contains("-p max_connections=200"), "{e}");
        assert!(parse_assignment("a..b=1", false).is_err());
        let e = parse_assignment("x=[1", false).unwrap_err().to_string();
        assert!(e.contains("invalid YAML"), "{e}");
    }

    #[test]
    fn merge_is_patronis_patch() {
        let mut c = json!({"ttl": 30, "postgresql": {"parameters": {"a": 1, "b": 2}, "use_slots": true}});
        merge(&mut c, &json!({"postgresql": {"parameters": {"a": null, "c": 3}}, "pause": true, "ttl": null}));
        assert_eq!(c, json!({"postgresql": {"parameters": {"b": 2, "c": 3}, "use_slots": true}, "pause": true}));
    }

    #[test]
    fn validation_refuses_what_agents_would_not_run() {
        validate(&json!({"ttl": 30, "loop_wait": 10, "retry_timeout": 10})).unwrap();
        let lowered = validate(&json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 10})).unwrap();
        assert_eq!(lowered, json!({"ttl": 20, "loop_wait": 1, "retry_timeout": 9}), "lowered as Patroni does");
        let e = format!("{:#}", validate(&json!({"ttl": 3})).unwrap_err());
        assert!(e.starts_with("edit-config: the new configuration cannot work: ttl: 3 is below"), "{e}");
        let bad = json!({"postgresql": {"parameters": {"shared_buffers": "999TB", "max_connections": 100}}});
        let e = format!("{:#}", validate(&bad).unwrap_err());
        assert!(
            e.starts_with("edit-config: postgresql.parameters.shared_buffers: invalid value \"999TB\": value exceeds"),
            "{e}"
        );
        let e = format!("{:#}", validate(&json!({"ttl": "soon"})).unwrap_err());
        assert!(e.starts_with("edit-config: the new configuration has a value of the wrong type: "), "{e}");
        assert!(validate(&json!(["ttl"])).is_err());
    }
}
