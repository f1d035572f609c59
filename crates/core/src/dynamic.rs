//! The cluster-wide ("dynamic") configuration kept in the DCS `config` key.
//!
//! It is seeded once from `bootstrap.dcs` by the node that initializes the cluster and is then
//! changed only through the DCS, exactly as in Patroni. Keys Rampart does not interpret are kept in
//! `extra` so that a round trip through Rampart never drops what another tool wrote.
//!
//! Invariants kept here:
//! * a configuration that breaks `loop_wait + 2 * retry_timeout <= ttl` is never accepted, because
//!   then a leader could lose its lease before it has had the chance to notice and stop taking
//!   writes;
//! * the synchronous replication keys are typed and checked (see [`crate::sync_mode`]): a value
//!   Rampart cannot read is refused rather than read as "asynchronous";
//! * `slots` and `ignore_slots` are kept verbatim (round trips are exact) and checked by
//!   [`DynamicConfig::validate`]; a slot the HA loop cannot read is skipped, never guessed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::slots::{is_valid_slot_name, IgnoreSlot, SlotKind};
use crate::sync_mode::SyncMode;

/// Smallest accepted `ttl`, in seconds. Lower than Patroni's 20 so that fast-failover profiles
/// (10/1/3) can be used; the timing rule below still guarantees room for fencing.
pub const MIN_TTL: u64 = 5;
/// Smallest accepted `loop_wait`, in seconds.
pub const MIN_LOOP_WAIT: u64 = 1;
/// Smallest accepted `retry_timeout`, in seconds.
pub const MIN_RETRY_TIMEOUT: u64 = 1;

/// PostgreSQL part of the dynamic configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicPostgresql {
    /// Rejoin a diverged former primary with pg_rewind instead of failing.
    #[serde(default)]
    pub use_pg_rewind: bool,
    /// One physical replication slot per member on the leader.
    #[serde(default = "yes")]
    pub use_slots: bool,
    /// `postgresql.conf` parameters applied on every member.
    #[serde(default)]
    pub parameters: BTreeMap<String, Value>,
    /// Keys we do not interpret, kept for round trips.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Default for DynamicPostgresql {
    fn default() -> Self {
        DynamicPostgresql { use_pg_rewind: false, use_slots: true, parameters: BTreeMap::new(), extra: BTreeMap::new() }
    }
}

fn yes() -> bool {
    true
}

/// The dynamic configuration, with Patroni's key names and defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicConfig {
    /// Leader lease length in seconds.
    #[serde(default = "d_ttl")]
    pub ttl: u64,
    /// Seconds between two HA cycles.
    #[serde(default = "d_loop_wait")]
    pub loop_wait: u64,
    /// Seconds a DCS or PostgreSQL operation may be retried before it counts as failed.
    #[serde(default = "d_retry_timeout")]
    pub retry_timeout: u64,
    /// A replica further behind the leader than this many bytes may not take over automatically.
    #[serde(default = "d_max_lag")]
    pub maximum_lag_on_failover: u64,
    /// Seconds a crashed primary may spend restarting in place before it gives up its lock;
    /// read with [`DynamicConfig::primary_start_timeout`] (which falls back to the old name,
    /// `master_start_timeout`, kept in `extra`, as Patroni does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_start_timeout: Option<u64>,
    /// Refuse to take over from a timeline lower than the cluster's.
    #[serde(default)]
    pub check_timeline: bool,
    /// Maintenance mode: no automatic action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<bool>,
    /// `synchronous_mode`: absent means off. Kept absent on a round trip when it was absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_mode: Option<SyncMode>,
    /// `synchronous_mode_strict`: never fall back to asynchronous replication (default false).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::sync_mode::opt_lenient_bool")]
    pub synchronous_mode_strict: Option<bool>,
    /// `synchronous_node_count`: how many synchronous standbys (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::sync_mode::opt_node_count")]
    pub synchronous_node_count: Option<u32>,
    /// `maximum_lag_on_syncnode`: bytes a synchronous standby may lag behind before it is
    /// replaced; `<= 0` (default -1) never replaces one for lag.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::sync_mode::opt_lag")]
    pub maximum_lag_on_syncnode: Option<i64>,
    /// `failsafe_mode`: a primary cut off from the DCS keeps running while every member of the
    /// `failsafe` topology accepts its `POST /failsafe` (default off; see [`crate::failsafe`]).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::failsafe::opt_mode")]
    pub failsafe_mode: Option<bool>,
    /// Permanent replication slots: `{name: {type: physical}}` or
    /// `{name: {type: logical, database: db, plugin: p}}`; read with [`DynamicConfig::permanent_slots`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<Value>,
    /// Slots Rampart never touches: a list of `{name, type, database, plugin}` (each optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_slots: Option<Value>,
    /// PostgreSQL settings shared by all members.
    #[serde(default)]
    pub postgresql: DynamicPostgresql,
    /// Keys we do not interpret, kept for round trips.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn d_ttl() -> u64 {
    30
}
fn d_loop_wait() -> u64 {
    10
}
fn d_retry_timeout() -> u64 {
    10
}
fn d_max_lag() -> u64 {
    1_048_576
}
/// Patroni's default `primary_start_timeout`, in seconds.
pub const DEFAULT_PRIMARY_START_TIMEOUT: u64 = 300;

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl: d_ttl(),
            loop_wait: d_loop_wait(),
            retry_timeout: d_retry_timeout(),
            maximum_lag_on_failover: d_max_lag(),
            primary_start_timeout: None,
            check_timeline: false,
            pause: None,
            synchronous_mode: None,
            synchronous_mode_strict: None,
            synchronous_node_count: None,
            maximum_lag_on_syncnode: None,
            failsafe_mode: None,
            slots: None,
            ignore_slots: None,
            postgresql: DynamicPostgresql::default(),
            extra: BTreeMap::new(),
        }
    }
}

/// Why a dynamic configuration cannot work. The `key` names the offending setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct DynamicConfigError {
    /// Dotted key path, e.g. `ttl`.
    pub key: &'static str,
    /// What is wrong, in words an operator can act on.
    pub reason: String,
}

impl DynamicConfig {
    /// `primary_start_timeout` in force: the key, else its old name `master_start_timeout` (as
    /// Patroni 4 still reads it), else 300 seconds. A value that is not a whole number of seconds
    /// counts as absent.
    pub fn primary_start_timeout(&self) -> u64 {
        self.primary_start_timeout
            .or_else(|| self.extra.get("master_start_timeout").and_then(lenient_u64))
            .unwrap_or(DEFAULT_PRIMARY_START_TIMEOUT)
    }

    /// Brings `loop_wait` and `retry_timeout` within `loop_wait + 2*retry_timeout <= ttl` as
    /// Patroni does (`patroni/config.py`, `_validate_and_adjust_timeouts`): lower `loop_wait`
    /// first; only when even a `loop_wait` of 1 s is too long, set it to 1 s and `retry_timeout` to
    /// `(ttl - 1) / 2`. Returns the warning to log when something was lowered. Values below the
    /// minimums are left for [`DynamicConfig::validate`] to refuse.
    pub fn adjust_timeouts(&mut self) -> Option<String> {
        let (ttl, loop_wait, retry) = (self.ttl, self.loop_wait, self.retry_timeout);
        if ttl < MIN_TTL || loop_wait < MIN_LOOP_WAIT || retry < MIN_RETRY_TIMEOUT {
            return None;
        }
        if MIN_LOOP_WAIT + 2 * retry > ttl {
            self.loop_wait = MIN_LOOP_WAIT;
            self.retry_timeout = ((ttl - MIN_LOOP_WAIT) / 2).max(MIN_RETRY_TIMEOUT);
            Some(format!(
                "Violated the rule \"loop_wait + 2*retry_timeout <= ttl\", where ttl={ttl}. Adjusting loop_wait \
                 from {loop_wait} to {} and retry_timeout from {retry} to {}",
                self.loop_wait, self.retry_timeout
            ))
        } else if loop_wait + 2 * retry > ttl {
            self.loop_wait = ttl - 2 * retry;
            Some(format!(
                "Violated the rule \"loop_wait + 2*retry_timeout <= ttl\", where ttl={ttl} and retry_timeout={retry}. \
                 Adjusting loop_wait from {loop_wait} to {}",
                self.loop_wait
            ))
        } else {
            None
        }
    }

    /// Whether maintenance mode is on.
    pub fn paused(&self) -> bool {
        self.pause.unwrap_or(false)
    }

    /// `synchronous_mode` in force: off in a standby cluster, as in Patroni (its standby leader
    /// acknowledges nothing; the other cluster's primary does).
    pub fn sync_mode(&self) -> SyncMode {
        if self.standby_cluster().is_some() {
            return SyncMode::Off;
        }
        self.synchronous_mode.unwrap_or_default()
    }

    /// `standby_cluster` when it is set (anything but absent, null or an empty mapping), as
    /// written. See [`DynamicConfig::standby`] for the section read.
    pub fn standby_cluster(&self) -> Option<&Value> {
        self.extra.get("standby_cluster").filter(|v| !v.is_null() && v.as_object().is_none_or(|m| !m.is_empty()))
    }

    /// The standby cluster this cluster is (`Ok(None)`: a normal cluster), or what is wrong with
    /// the section (key, reason).
    pub fn standby(&self) -> Result<Option<crate::standby_cluster::StandbyCluster>, (String, String)> {
        self.standby_cluster().map(crate::standby_cluster::StandbyCluster::parse).transpose()
    }

    /// Whether `failsafe_mode` is on.
    pub fn failsafe_mode(&self) -> bool {
        self.failsafe_mode.unwrap_or(false)
    }

    /// `synchronous_mode_strict` in force.
    pub fn sync_strict(&self) -> bool {
        self.synchronous_mode_strict.unwrap_or(false)
    }

    /// `synchronous_node_count` in force (at least 1).
    pub fn synchronous_node_count(&self) -> usize {
        self.synchronous_node_count.unwrap_or(1).max(1) as usize
    }

    /// `maximum_lag_on_syncnode` in bytes, or `None` when standbys are never replaced for lag.
    pub fn sync_max_lag(&self) -> Option<u64> {
        self.maximum_lag_on_syncnode.filter(|l| *l > 0).map(|l| l as u64)
    }

    /// The permanent slots of `slots`, by name. A missing `type` means physical unless a
    /// `database` or `plugin` is given (then it is logical, and needs both).
    pub fn permanent_slots(&self) -> Result<BTreeMap<String, SlotKind>, DynamicConfigError> {
        let bad = |reason: String| DynamicConfigError { key: "slots", reason };
        let map = match &self.slots {
            None | Some(Value::Null) => return Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m,
            Some(other) => return Err(bad(format!("must be a mapping of slot names, not {other}"))),
        };
        let mut out = BTreeMap::new();
        for (name, spec) in map {
            if !is_valid_slot_name(name) {
                return Err(bad(format!(
                    "{name:?} is not a valid slot name (1 to 63 characters among a-z, 0-9 and _)"
                )));
            }
            let field = |k: &str| -> Result<Option<String>, DynamicConfigError> {
                match spec.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                    Some(v) => Err(bad(format!("{name}.{k} must be a non-empty string, not {v}"))),
                }
            };
            // Patroni's shorthand: an empty value (`name: 0`, `null`, `""`, `false`, `{}`) is a
            // physical slot (`Cluster.is_physical_slot`: `not value`).
            let empty = match spec {
                Value::Null => true,
                Value::Bool(b) => !b,
                Value::Number(n) => n.as_f64() == Some(0.0),
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
            };
            if empty {
                out.insert(name.clone(), SlotKind::Physical);
                continue;
            }
            if !spec.is_object() {
                return Err(bad(format!(
                    "{name} must be a mapping like {{type: physical}} (or 0 for a physical slot), not {spec}"
                )));
            }
            let (database, plugin) = (field("database")?, field("plugin")?);
            let kind = match field("type")?.as_deref() {
                Some("physical") => SlotKind::Physical,
                None if database.is_none() && plugin.is_none() => SlotKind::Physical,
                Some("logical") | None => match (database, plugin) {
                    (Some(database), Some(plugin)) => SlotKind::Logical { database, plugin },
                    _ => return Err(bad(format!("{name}: a logical slot needs both database and plugin"))),
                },
                Some(t) => return Err(bad(format!("{name}.type must be physical or logical, not {t:?}"))),
            };
            out.insert(name.clone(), kind);
        }
        Ok(out)
    }

    /// The rules of `ignore_slots`.
    pub fn ignore_slots(&self) -> Result<Vec<IgnoreSlot>, DynamicConfigError> {
        match &self.ignore_slots {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| DynamicConfigError {
                key: "ignore_slots",
                reason: format!("must be a list of {{name, type, database, plugin}} mappings: {e}"),
            }),
        }
    }

    /// `member_slots_ttl` in seconds: how long the slot of a member that left is kept (default
    /// 30 minutes; 0 drops it as soon as the member key expires). Patroni's forms are accepted:
    /// a number of seconds, or a string with a unit among `ms`, `s`, `min`, `h`, `d`.
    pub fn member_slots_ttl(&self) -> Result<u64, DynamicConfigError> {
        let bad = |v: &Value| DynamicConfigError {
            key: "member_slots_ttl",
            reason: format!("must be a duration such as 1800, \"30min\" or \"2h\" (0 or more), not {v}"),
        };
        match self.extra.get("member_slots_ttl") {
            None | Some(Value::Null) => Ok(crate::node::DEFAULT_MEMBER_SLOTS_TTL),
            Some(v @ Value::Number(n)) => n.as_u64().ok_or_else(|| bad(v)),
            Some(v @ Value::String(s)) => parse_duration_secs(s).ok_or_else(|| bad(v)),
            Some(v) => Err(bad(v)),
        }
    }

    /// Whether a permanent logical slot is configured (replicas then need `hot_standby_feedback`).
    pub fn has_logical_slots(&self) -> bool {
        self.permanent_slots().is_ok_and(|m| m.values().any(|k| matches!(k, SlotKind::Logical { .. })))
    }

    /// Checks the timing rules, the synchronous replication settings and the slots. Returns the
    /// first problem found.
    pub fn validate(&self) -> Result<(), DynamicConfigError> {
        let min = |key: &'static str, v: u64, m: u64| {
            if v < m {
                Err(DynamicConfigError { key, reason: format!("{v} is below the minimum of {m} seconds") })
            } else {
                Ok(())
            }
        };
        min("ttl", self.ttl, MIN_TTL)?;
        min("loop_wait", self.loop_wait, MIN_LOOP_WAIT)?;
        min("retry_timeout", self.retry_timeout, MIN_RETRY_TIMEOUT)?;
        if self.loop_wait + 2 * self.retry_timeout > self.ttl {
            return Err(DynamicConfigError {
                key: "ttl",
                reason: format!(
                    "loop_wait + 2*retry_timeout must not exceed ttl, but {} + 2*{} = {} > {}; \
                     the leader could lose its lease before noticing",
                    self.loop_wait,
                    self.retry_timeout,
                    self.loop_wait + 2 * self.retry_timeout,
                    self.ttl
                ),
            });
        }
        if self.synchronous_node_count == Some(0) {
            return Err(DynamicConfigError {
                key: "synchronous_node_count",
                reason: "must be at least 1 (turn synchronous_mode off for asynchronous replication)".into(),
            });
        }
        self.permanent_slots()?;
        self.ignore_slots()?;
        self.member_slots_ttl()?;
        if let Err((key, why)) = self.standby() {
            return Err(DynamicConfigError { key: "standby_cluster", reason: format!("{why} ({key})") });
        }
        Ok(())
    }
}

/// A non-negative whole number from JSON: a number or a numeric string (Patroni's `int()`).
fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A non-negative duration in seconds from Patroni's notation: digits, optionally followed by
/// `ms`, `s`, `min`, `h` or `d` (seconds when there is no unit); milliseconds round up.
fn parse_duration_secs(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit.trim() {
        "ms" => Some(n.div_ceil(1000)),
        "" | "s" => Some(n),
        "min" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
}

/// Applies `patch` to `target` as Patroni's `patch_config` does (`PATCH /config`, `edit-config`) (JSON merge patch, RFC 7396,
/// but for one point): an object patch merges key by key into an object, `null` removes a key,
/// and any other value is stored as given, nulls inside included. So `{"slots": {"s1": null}}`
/// on a configuration without `slots` stores `s1: null`, a permanent physical slot, as Patroni
/// stores it, where RFC 7396 would store an empty `slots`.
pub fn patch_config(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(fields), Value::Object(changes)) => {
            for (key, change) in changes {
                match fields.get_mut(key) {
                    _ if change.is_null() => {
                        fields.remove(key);
                    }
                    Some(field) => patch_config(field, change),
                    None => {
                        fields.insert(key.clone(), change.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_config_follows_patronis() {
        // The examples of RFC 7396, appendix A, with Patroni's answer where it differs: a value
        // that replaces (or adds) a key is stored as given, nulls inside included.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b","c":null})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{"ccc":null}}})),
            // The acceptance suite's permanent physical slots given as nulls.
            (json!({"ttl":30}), json!({"slots":{"s1":null}}), json!({"ttl":30,"slots":{"s1":null}})),
            (
                json!({"slots":{"s1":null}}),
                json!({"slots":{"s2":{"type":"logical"}}}),
                json!({"slots":{"s1":null,"s2":{"type":"logical"}}}),
            ),
            (json!({"slots":{"s1":null,"s2":0}}), json!({"slots":{"s1":null}}), json!({"slots":{"s2":0}})),
        ];
        for (target, patch, want) in cases {
            let mut t = target.clone();
            patch_config(&mut t, &patch);
            assert_eq!(t, want, "{target} + {patch}");
        }
    }

    #[test]
    fn member_slots_ttl_reads_patronis_forms_and_names_a_bad_one() {
        let ttl = |v: &str| {
            serde_json::from_str::<DynamicConfig>(&format!("{{\"member_slots_ttl\": {v}}}")).unwrap().member_slots_ttl()
        };
        assert_eq!(DynamicConfig::default().member_slots_ttl(), Ok(1800));
        assert_eq!(ttl("0"), Ok(0));
        assert_eq!(ttl("600"), Ok(600));
        assert_eq!(ttl("\"30min\""), Ok(1800));
        assert_eq!(ttl("\"2h\""), Ok(7200));
        assert_eq!(ttl("\"1500ms\""), Ok(2));
        assert_eq!(ttl("\"45\""), Ok(45));
        for bad in ["-1", "\"ten minutes\"", "\"5 fortnights\"", "true", "1.5"] {
            let e = ttl(bad).unwrap_err();
            assert_eq!(e.key, "member_slots_ttl", "{bad}");
        }
        let c: DynamicConfig = serde_json::from_str("{\"member_slots_ttl\": \"soon\"}").unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("member_slots_ttl: must be a duration"));
    }

    #[test]
    fn defaults_match_patroni() {
        let c: DynamicConfig = serde_json::from_str("{}").unwrap();
        assert_eq!((c.ttl, c.loop_wait, c.retry_timeout), (30, 10, 10));
        assert_eq!(c.maximum_lag_on_failover, 1_048_576);
        assert!(c.postgresql.use_slots);
        assert!(!c.postgresql.use_pg_rewind);
        c.validate().unwrap();
    }

    #[test]
    fn timing_rule_is_enforced() {
        let c = DynamicConfig { ttl: 20, loop_wait: 10, retry_timeout: 10, ..Default::default() };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "ttl");
        assert!(e.reason.contains("10 + 2*10 = 30 > 20"), "{e}");
        let fast = DynamicConfig { ttl: 10, loop_wait: 1, retry_timeout: 3, ..Default::default() };
        fast.validate().unwrap();
    }

    #[test]
    fn timeouts_are_lowered_as_patroni_does() {
        let adjusted = |ttl, loop_wait, retry_timeout| {
            let mut c = DynamicConfig { ttl, loop_wait, retry_timeout, ..Default::default() };
            let warning = c.adjust_timeouts();
            c.validate().unwrap();
            (c.loop_wait, c.retry_timeout, warning.is_some())
        };
        // PATCH {"ttl": 20} on loop_wait 2, retry_timeout 10: even loop_wait 1 is too long.
        assert_eq!(adjusted(20, 2, 10), (1, 9, true));
        assert_eq!(adjusted(20, 10, 5), (10, 5, false));
        assert_eq!(adjusted(20, 12, 5), (10, 5, true), "loop_wait lowered first");
        assert_eq!(adjusted(30, 10, 10), (10, 10, false));
        let mut c = DynamicConfig { ttl: 20, loop_wait: 2, retry_timeout: 10, ..Default::default() };
        let w = c.adjust_timeouts().unwrap();
        assert_eq!(
            w,
            "Violated the rule \"loop_wait + 2*retry_timeout <= ttl\", where ttl=20. Adjusting loop_wait from 2 to 1 \
             and retry_timeout from 10 to 9"
        );
        let mut low = DynamicConfig { ttl: 2, ..Default::default() };
        assert_eq!(low.adjust_timeouts(), None, "below the minimum: refused by validate, not adjusted");
        assert_eq!(low.validate().unwrap_err().key, "ttl");
    }

    #[test]
    fn master_start_timeout_is_the_old_name_of_primary_start_timeout() {
        let read = |src: &str| serde_json::from_str::<DynamicConfig>(src).unwrap().primary_start_timeout();
        assert_eq!(read("{}"), 300);
        assert_eq!(read(r#"{"master_start_timeout": 60}"#), 60);
        assert_eq!(read(r#"{"master_start_timeout": "45"}"#), 45);
        assert_eq!(read(r#"{"primary_start_timeout": 10, "master_start_timeout": 60}"#), 10, "the new name wins");
        assert_eq!(read(r#"{"primary_start_timeout": 0}"#), 0);
        let back =
            serde_json::to_value(serde_json::from_str::<DynamicConfig>(r#"{"master_start_timeout": 60}"#).unwrap());
        assert_eq!(back.unwrap()["master_start_timeout"], 60, "kept under the name it was written with");
    }

    #[test]
    fn standby_cluster_is_read_and_a_bad_section_is_refused_naming_the_key() {
        let with = |v: Value| DynamicConfig {
            extra: [("standby_cluster".to_string(), v)].into(),
            synchronous_mode: Some(SyncMode::On),
            ..Default::default()
        };
        let standby = with(serde_json::json!({"host": "10.0.0.1", "port": 5433}));
        assert!(standby.validate().is_ok());
        assert_eq!(standby.standby().unwrap().unwrap().port, 5433);
        assert_eq!(standby.sync_mode(), SyncMode::Off, "a standby leader acknowledges nothing");
        let e = with(serde_json::json!({"port": 5432})).validate().unwrap_err();
        assert_eq!(e.key, "standby_cluster");
        assert!(e.to_string().contains("(standby_cluster.host)"), "{e}");
        let e = with(serde_json::json!({"host": "10.0.0.1", "port": "x"})).validate().unwrap_err();
        assert_eq!(e.to_string(), "standby_cluster: expected a port number (1-65535) (standby_cluster.port)");
        // Absent, null (how a PATCH removes it) or empty: nothing is configured.
        for v in [Value::Null, serde_json::json!({})] {
            let normal = with(v);
            assert!(normal.validate().is_ok());
            assert_eq!((normal.standby(), normal.sync_mode()), (Ok(None), SyncMode::On));
        }
    }

    #[test]
    fn unknown_keys_survive_a_round_trip() {
        let src = r#"{"ttl":30,"synchronous_mode":true,"postgresql":{"use_pg_rewind":true,"recovery_conf":{"a":1}}}"#;
        let c: DynamicConfig = serde_json::from_str(src).unwrap();
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["synchronous_mode"], Value::Bool(true));
        assert_eq!(back["postgresql"]["recovery_conf"]["a"], 1);
        assert!(back.get("synchronous_node_count").is_none(), "absent keys stay absent");
    }

    #[test]
    fn synchronous_settings_and_their_defaults() {
        let c: DynamicConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.sync_mode(), SyncMode::Off);
        assert!(!c.sync_strict());
        assert_eq!(c.synchronous_node_count(), 1);
        assert_eq!(c.sync_max_lag(), None);
        let src = r#"{"synchronous_mode":"quorum","synchronous_mode_strict":"on","synchronous_node_count":2,
                      "maximum_lag_on_syncnode":1048576}"#;
        let c: DynamicConfig = serde_json::from_str(src).unwrap();
        assert_eq!(c.sync_mode(), SyncMode::Quorum);
        assert!(c.sync_strict());
        assert_eq!(c.synchronous_node_count(), 2);
        assert_eq!(c.sync_max_lag(), Some(1_048_576));
        c.validate().unwrap();
    }

    #[test]
    fn failsafe_mode_is_typed_and_off_by_default() {
        assert!(!serde_json::from_str::<DynamicConfig>("{}").unwrap().failsafe_mode());
        for (text, on) in [("true", true), ("false", false), ("\"on\"", true), ("null", false)] {
            let c: DynamicConfig = serde_json::from_str(&format!(r#"{{"failsafe_mode":{text}}}"#)).unwrap();
            assert_eq!(c.failsafe_mode(), on, "{text}");
        }
        let e = serde_json::from_str::<DynamicConfig>(r#"{"failsafe_mode":"sometimes"}"#).unwrap_err();
        assert!(e.to_string().contains("failsafe_mode must be true or false"), "{e}");
        let back = serde_json::to_value(serde_json::from_str::<DynamicConfig>(r#"{"failsafe_mode":true}"#).unwrap());
        assert_eq!(back.unwrap()["failsafe_mode"], Value::Bool(true));
        assert!(serde_json::to_value(DynamicConfig::default()).unwrap().get("failsafe_mode").is_none());
    }

    #[test]
    fn bad_synchronous_settings_are_refused_with_the_key_named() {
        let e = serde_json::from_str::<DynamicConfig>(r#"{"synchronous_mode":"sometimes"}"#).unwrap_err();
        assert!(e.to_string().contains("synchronous_mode must be"), "{e}");
        let e = serde_json::from_str::<DynamicConfig>(r#"{"synchronous_mode_strict":"maybe"}"#).unwrap_err();
        assert!(e.to_string().contains("synchronous_mode_strict"), "{e}");
        let zero = DynamicConfig { synchronous_node_count: Some(0), ..Default::default() };
        assert_eq!(zero.validate().unwrap_err().key, "synchronous_node_count");
        let e = serde_json::from_str::<DynamicConfig>(r#"{"synchronous_node_count":"two"}"#).unwrap_err();
        assert!(e.to_string().contains("synchronous_node_count must be"), "{e}");
        let c: DynamicConfig = serde_json::from_str(r#"{"synchronous_node_count":"3"}"#).unwrap();
        assert_eq!(c.synchronous_node_count(), 3, "numeric strings are read, as Patroni does");
        let off = DynamicConfig { maximum_lag_on_syncnode: Some(0), ..Default::default() };
        assert_eq!(off.sync_max_lag(), None, "0 means never replace, as in Patroni");
    }

    #[test]
    fn permanent_slots_are_read_and_bad_ones_refused_with_the_slot_named() {
        let src = r#"{"slots":{"cdc":{"type":"logical","database":"app","plugin":"pgoutput"},
                               "standby_dc2":{"type":"physical"},"plain":null},
                      "ignore_slots":[{"name":"backup","type":"physical"}]}"#;
        let c: DynamicConfig = serde_json::from_str(src).unwrap();
        c.validate().unwrap();
        let slots = c.permanent_slots().unwrap();
        assert_eq!(slots["cdc"], SlotKind::Logical { database: "app".into(), plugin: "pgoutput".into() });
        assert_eq!((&slots["standby_dc2"], &slots["plain"]), (&SlotKind::Physical, &SlotKind::Physical));
        assert!(c.has_logical_slots());
        assert_eq!(c.ignore_slots().unwrap()[0].name.as_deref(), Some("backup"));
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["slots"]["cdc"]["plugin"], "pgoutput", "kept verbatim");

        let refused = |slots: &str| {
            let c: DynamicConfig = serde_json::from_str(&format!(r#"{{"slots":{slots}}}"#)).unwrap();
            c.validate().unwrap_err().to_string()
        };
        assert!(refused(r#"{"cdc":{"type":"logical","database":"app"}}"#).contains("cdc: a logical slot needs both"));
        assert!(refused(r#"{"cdc":{"type":"virtual"}}"#).contains("cdc.type must be physical or logical"));
        assert!(refused(r#"{"Bad-Name":{"type":"physical"}}"#).contains("not a valid slot name"));
        assert!(refused(r#"["cdc"]"#).starts_with("slots: must be a mapping"));
        assert!(refused(r#"{"cdc": 1}"#).contains("cdc must be a mapping like {type: physical} (or 0"));
        // Patroni's shorthand: an empty value is a physical slot.
        let c: DynamicConfig = serde_json::from_str(r#"{"slots":{"a":0,"b":null,"c":"","d":{}}}"#).unwrap();
        c.validate().unwrap();
        assert!(c.permanent_slots().unwrap().values().all(|k| *k == SlotKind::Physical));
        assert_eq!(c.permanent_slots().unwrap().len(), 4);
        let c: DynamicConfig = serde_json::from_str(r#"{"ignore_slots":{"name":"x"}}"#).unwrap();
        assert_eq!(c.validate().unwrap_err().key, "ignore_slots");
    }
}
