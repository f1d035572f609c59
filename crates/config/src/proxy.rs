//! The `proxy` section: what `rampart proxy` listens on and how it routes.
//!
//! Invariant kept here: a [`Proxy`] always has a read-write listen address; every other key has
//! a default. Keys of later features (`admin`, TLS files, `ro_policy`) are accepted with a
//! warning so a file written for a newer version still loads.

use crate::addr::HostPort;
use crate::check::Checker;
use crate::error::Problem;
use crate::raw::RawProxy;

/// Default `hold_timeout`: how long a read-write client waits for a leader, in seconds.
pub const DEFAULT_HOLD_TIMEOUT: u64 = 30;
/// Default `max_lag` in bytes: the default of Patroni's `maximum_lag_on_failover` (1 MiB).
pub const DEFAULT_MAX_LAG: u64 = 1_048_576;

/// The `proxy` section, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// Where read-write clients connect (routed to the leader).
    pub listen: HostPort,
    /// Where read-only clients connect (routed to streaming replicas), if anywhere.
    pub listen_ro: Option<HostPort>,
    /// Seconds a read-write client is held while there is no leader.
    pub hold_timeout: u64,
    /// Replicas further behind the leader than this many bytes get no read-only clients.
    pub max_lag: u64,
    /// Send read-only clients to the primary when no replica qualifies.
    pub fallback_to_primary: bool,
}

impl Proxy {
    pub(crate) fn build(raw: Option<RawProxy>, c: &mut Checker<'_>) -> Result<Option<Proxy>, Problem> {
        let Some(raw) = raw else { return Ok(None) };
        let listen_text = c.require_text(raw.listen, &["proxy", "listen"])?;
        let listen = c.host_port(&listen_text, &["proxy", "listen"])?;
        let listen_ro = match raw.listen_ro {
            Some(text) => Some(c.host_port(&text, &["proxy", "listen_ro"])?),
            None => None,
        };
        if listen_ro.as_ref() == Some(&listen) {
            return Err(c.problem(&["proxy", "listen_ro"], format!("is the same address as proxy.listen ({listen})")));
        }
        let hold_timeout = raw.hold_timeout.unwrap_or(DEFAULT_HOLD_TIMEOUT);
        if hold_timeout > 3600 {
            return Err(c.problem(&["proxy", "hold_timeout"], format!("{hold_timeout} s is more than an hour")));
        }
        for (key, present) in [
            ("admin", raw.admin.is_some()),
            ("listen_admin", raw.listen_admin.is_some()),
            ("certfile", raw.certfile.is_some()),
            ("keyfile", raw.keyfile.is_some()),
            ("ro_policy", raw.ro_policy.is_some()),
        ] {
            if present {
                c.warn(&["proxy", key], "not supported yet (ignored)");
            }
        }
        Ok(Some(Proxy {
            listen,
            listen_ro,
            hold_timeout,
            max_lag: raw.max_lag.unwrap_or(DEFAULT_MAX_LAG),
            fallback_to_primary: raw.fallback_to_primary.unwrap_or(true),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse, ConfigError, HostPort, Loaded};

    const BASE: &str = "\
scope: pg
name: n1
restapi:
  listen: 127.0.0.1:8008
etcd3:
  host: 127.0.0.1:2379
postgresql:
  listen: 127.0.0.1:5432
  data_dir: /data
  authentication: {replication: {username: rep}}
";

    fn load(proxy: &str) -> Result<Loaded, ConfigError> {
        parse(&format!("{BASE}{proxy}"), "p.yml", Vec::new())
    }

    #[test]
    fn absent_section_is_none() {
        assert_eq!(load("").unwrap().config.proxy, None);
    }

    #[test]
    fn defaults() {
        let p = load("proxy:\n  listen: 127.0.0.1:6432\n").unwrap().config.proxy.unwrap();
        assert_eq!(p.listen, HostPort { host: "127.0.0.1".into(), port: 6432 });
        assert_eq!(p.listen_ro, None);
        assert_eq!((p.hold_timeout, p.max_lag, p.fallback_to_primary), (30, 1_048_576, true));
    }

    #[test]
    fn every_key() {
        let text = "proxy:\n  listen: 0.0.0.0:6432\n  listen_ro: 0.0.0.0:6433\n  hold_timeout: 5\n  max_lag: 100\n  fallback_to_primary: false\n";
        let p = load(text).unwrap().config.proxy.unwrap();
        assert_eq!(p.listen_ro.unwrap().port, 6433);
        assert_eq!((p.hold_timeout, p.max_lag, p.fallback_to_primary), (5, 100, false));
    }

    #[test]
    fn errors_name_their_line() {
        let e = load("proxy:\n  listen_ro: 127.0.0.1:6433\n").unwrap_err().to_string();
        assert_eq!(e, "p.yml:11: proxy.listen: missing required key");
        let e = load("proxy:\n  listen: 6432\n").unwrap_err().to_string();
        assert_eq!(e, "p.yml:12: proxy.listen: expected host:port, got \"6432\"");
        let e = load("proxy:\n  listen: h:1\n  hold_timeout: soon\n").unwrap_err().to_string();
        assert!(e.starts_with("p.yml:13: proxy.hold_timeout"), "{e}");
        let e = load("proxy:\n  listen: h:1\n  listen_ro: h:1\n").unwrap_err().to_string();
        assert!(e.starts_with("p.yml:13: proxy.listen_ro: is the same address"), "{e}");
    }

    #[test]
    fn later_features_warn() {
        let l = load("proxy:\n  listen: h:1\n  certfile: /x.pem\n  bogus: 1\n").unwrap();
        assert!(
            l.warnings.iter().any(|w| w == "p.yml:13: proxy.certfile: not supported yet (ignored)"),
            "{:?}",
            l.warnings
        );
        assert!(l.warnings.iter().any(|w| w.contains("unknown key proxy.bogus")), "{:?}", l.warnings);
    }
}
