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
//!   Rampart cannot read is refused rather than read as "asynchronous".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Seconds a crashed primary may spend restarting in place before it gives up its lock.
    #[serde(default = "d_primary_start_timeout")]
    pub primary_start_timeout: u64,
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
    /// PostgreSQL settings shared by all members.
    #[serde(default)]
    pub postgresql: DynamicPostgresql,
    /// Keys we do not interpret (slots, failsafe_mode, ...), kept for round trips.
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
fn d_primary_start_timeout() -> u64 {
    300
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            ttl: d_ttl(),
            loop_wait: d_loop_wait(),
            retry_timeout: d_retry_timeout(),
            maximum_lag_on_failover: d_max_lag(),
            primary_start_timeout: d_primary_start_timeout(),
            check_timeline: false,
            pause: None,
            synchronous_mode: None,
            synchronous_mode_strict: None,
            synchronous_node_count: None,
            maximum_lag_on_syncnode: None,
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
    /// Whether maintenance mode is on.
    pub fn paused(&self) -> bool {
        self.pause.unwrap_or(false)
    }

    /// `synchronous_mode` in force.
    pub fn sync_mode(&self) -> SyncMode {
        self.synchronous_mode.unwrap_or_default()
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

    /// Checks the timing rules and the synchronous replication settings. Returns the first
    /// problem found.
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
