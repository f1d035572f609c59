//! Read/write splitting on the read-write port: `proxy.load_balance` and the keys that shape it
//! (Pgpool-II's names where they mean the same).
//!
//! Invariant kept here: a [`LoadBalance`] exists only when `load_balance` is on, and only for a
//! proxy that pools (the proxy must hold its own server connections to send a statement to a
//! replica and the next to the primary); every pattern of `write_functions` and
//! `read_only_functions` is a valid regular expression.

use std::time::Duration;

use crate::check::Checker;
use crate::error::Problem;
use crate::proxy_pool::Pooling;
use crate::raw::RawProxy;

/// Default `replica_position_interval`: how often the proxy reads each member's WAL position.
pub const DEFAULT_POSITION_INTERVAL: Duration = Duration::from_millis(20);

/// `disable_load_balance_on_write`, as Pgpool-II names its modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnWrite {
    /// After a write in a transaction block, its later reads run on the primary (the default).
    #[default]
    Transaction,
    /// As `transaction`, and the session's later transaction blocks run on the primary.
    TransTransaction,
    /// After a write, every later read of the session runs on the primary.
    Always,
    /// Reads may run on a replica even after a write in the same transaction.
    Off,
}

impl OnWrite {
    /// Every mode, in the order the documentation lists them.
    pub const ALL: [OnWrite; 4] = [OnWrite::Transaction, OnWrite::TransTransaction, OnWrite::Always, OnWrite::Off];

    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            OnWrite::Transaction => "transaction",
            OnWrite::TransTransaction => "trans_transaction",
            OnWrite::Always => "always",
            OnWrite::Off => "off",
        }
    }
}

/// `read_your_writes`: what a session's reads may see after its own writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadYourWrites {
    /// After a session's write is acknowledged, its reads go to a replica only once that replica
    /// has replayed the write (the default).
    #[default]
    Session,
    /// Reads go to any replica within `max_lag`, however far behind the session's writes.
    None,
}

/// The read/write splitting settings, present when `proxy.load_balance` is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalance {
    /// `disable_load_balance_on_write`.
    pub on_write: OnWrite,
    /// `read_your_writes`.
    pub read_your_writes: ReadYourWrites,
    /// `read_your_writes_timeout` (milliseconds in the file): how long a read after a write may
    /// wait for a replica to replay it before it runs on the primary; zero: it does not wait.
    pub read_your_writes_timeout: Duration,
    /// `replica_position_interval` (milliseconds): how often each member's WAL position is read.
    pub position_interval: Duration,
    /// `max_lag_time` (milliseconds): replicas whose last replayed transaction is older than
    /// this, while the primary writes, get no reads; `None`: no limit by time.
    pub max_lag_time: Option<Duration>,
    /// `write_functions`: regular expressions (each matching a whole name, as written in the
    /// statement) of functions that write whatever the catalog says.
    pub write_functions: Vec<String>,
    /// `read_only_functions`: regular expressions of functions that only read whatever the
    /// catalog says.
    pub read_only_functions: Vec<String>,
}

impl LoadBalance {
    /// The settings from the `proxy` section, `None` when `load_balance` is off.
    pub(crate) fn build(raw: &mut RawProxy, pooling: &Pooling, c: &Checker<'_>) -> Result<Option<Self>, Problem> {
        let on = raw.load_balance.take().unwrap_or(false);
        let on_write = raw.disable_load_balance_on_write.take();
        let ryw = raw.read_your_writes.take();
        let ryw_timeout = raw.read_your_writes_timeout.take();
        let interval = raw.replica_position_interval.take();
        let max_lag_time = raw.max_lag_time.take();
        let write_functions = raw.write_functions.take().map(|l| l.0).unwrap_or_default();
        let read_only_functions = raw.read_only_functions.take().map(|l| l.0).unwrap_or_default();
        if !on {
            return Ok(None);
        }
        if !pooling.any_pooled() {
            return Err(c.problem(
                &["proxy", "load_balance"],
                "needs the proxy to pool server connections: set proxy.pool_mode: transaction, or an \
                 auth_file or auth_user for session mode",
            ));
        }
        let on_write = match on_write.as_deref() {
            None => OnWrite::default(),
            Some(text) => OnWrite::ALL.into_iter().find(|m| m.as_str() == text).ok_or_else(|| {
                c.problem(
                    &["proxy", "disable_load_balance_on_write"],
                    format!("expected transaction, trans_transaction, always or off, got {text:?}"),
                )
            })?,
        };
        let read_your_writes = match ryw.as_deref() {
            None | Some("session") => ReadYourWrites::Session,
            Some("none") => ReadYourWrites::None,
            Some(other) => {
                return Err(
                    c.problem(&["proxy", "read_your_writes"], format!("expected session or none, got {other:?}"))
                )
            }
        };
        let millis = |value: Option<u64>, key: &str, max: u64| -> Result<Option<Duration>, Problem> {
            match value {
                Some(ms) if ms > max => Err(c.problem(&["proxy", key], format!("{ms} ms is more than {max} ms"))),
                other => Ok(other.map(Duration::from_millis)),
            }
        };
        let read_your_writes_timeout = millis(ryw_timeout, "read_your_writes_timeout", 60_000)?.unwrap_or_default();
        let position_interval = match millis(interval, "replica_position_interval", 10_000)? {
            Some(d) if d.is_zero() => {
                return Err(c.problem(&["proxy", "replica_position_interval"], "must be at least 1 ms"))
            }
            Some(d) => d,
            None => DEFAULT_POSITION_INTERVAL,
        };
        let max_lag_time = millis(max_lag_time, "max_lag_time", 86_400_000)?.filter(|d| !d.is_zero());
        for (key, list) in [("write_functions", &write_functions), ("read_only_functions", &read_only_functions)] {
            for pattern in list {
                if let Err(e) = regex::Regex::new(pattern) {
                    let first = e.to_string().lines().last().unwrap_or_default().trim().to_string();
                    return Err(c.problem(&["proxy", key], format!("{pattern:?} is not a regular expression: {first}")));
                }
            }
        }
        Ok(Some(LoadBalance {
            on_write,
            read_your_writes,
            read_your_writes_timeout,
            position_interval,
            max_lag_time,
            write_functions,
            read_only_functions,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigError, Loaded};

    fn load(keys: &str) -> Result<Loaded, ConfigError> {
        crate::tests::minimal_with(&format!("proxy:\n  listen: 127.0.0.1:6432\n{keys}"), "p.yml")
    }

    fn lb(keys: &str) -> Option<LoadBalance> {
        load(keys).unwrap().config.proxy.unwrap().load_balance
    }

    fn refused(keys: &str) -> String {
        load(keys).unwrap_err().to_string()
    }

    const POOLED: &str = "  pool_mode: transaction\n  auth_file: /etc/rampart/userlist.txt\n";

    #[test]
    fn off_unless_asked_for() {
        assert_eq!(lb(POOLED), None);
        assert_eq!(lb(&format!("{POOLED}  load_balance: off\n")), None);
        assert_eq!(lb(&format!("{POOLED}  load_balance: off\n  disable_load_balance_on_write: always\n")), None);
    }

    #[test]
    fn defaults_when_on() {
        let l = lb(&format!("{POOLED}  load_balance: on\n")).unwrap();
        assert_eq!((l.on_write, l.read_your_writes), (OnWrite::Transaction, ReadYourWrites::Session));
        assert_eq!((l.read_your_writes_timeout, l.position_interval), (Duration::ZERO, DEFAULT_POSITION_INTERVAL));
        assert_eq!(l.max_lag_time, None);
        assert!(l.write_functions.is_empty() && l.read_only_functions.is_empty());
        let session = lb("  auth_file: /etc/rampart/userlist.txt\n  load_balance: true\n");
        assert!(session.is_some(), "pooled session mode balances too");
    }

    #[test]
    fn every_key_is_read() {
        let l = lb(&format!(
            "{POOLED}  load_balance: on\n  disable_load_balance_on_write: trans_transaction\n  read_your_writes: none\n  \
             read_your_writes_timeout: 250\n  replica_position_interval: 5\n  max_lag_time: 3000\n  \
             write_functions: [audit_.*, 'app\\.touch']\n  read_only_functions: report_.*, stats_.*\n"
        ))
        .unwrap();
        assert_eq!((l.on_write, l.read_your_writes), (OnWrite::TransTransaction, ReadYourWrites::None));
        assert_eq!(
            (l.read_your_writes_timeout, l.position_interval),
            (Duration::from_millis(250), Duration::from_millis(5))
        );
        assert_eq!(l.max_lag_time, Some(Duration::from_secs(3)));
        assert_eq!(l.write_functions, vec!["audit_.*", "app\\.touch"]);
        assert_eq!(l.read_only_functions, vec!["report_.*", "stats_.*"]);
        for mode in OnWrite::ALL {
            let keys = format!("{POOLED}  load_balance: on\n  disable_load_balance_on_write: {}\n", mode.as_str());
            assert_eq!(lb(&keys).unwrap().on_write, mode);
        }
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let e = refused("  load_balance: on\n");
        assert!(e.contains("proxy.load_balance: needs the proxy to pool server connections"), "{e}");
        let e = refused(&format!("{POOLED}  load_balance: on\n  disable_load_balance_on_write: dml_adaptive\n"));
        assert!(e.contains("proxy.disable_load_balance_on_write: expected transaction, trans_transaction, always or off, got \"dml_adaptive\""), "{e}");
        let e = refused(&format!("{POOLED}  load_balance: on\n  read_your_writes: strict\n"));
        assert!(e.contains("proxy.read_your_writes: expected session or none"), "{e}");
        let e = refused(&format!("{POOLED}  load_balance: on\n  write_functions: ['nextval(']\n"));
        assert!(e.contains("proxy.write_functions: \"nextval(\" is not a regular expression"), "{e}");
        let e = refused(&format!("{POOLED}  load_balance: on\n  replica_position_interval: 0\n"));
        assert!(e.contains("proxy.replica_position_interval: must be at least 1 ms"), "{e}");
    }
}
