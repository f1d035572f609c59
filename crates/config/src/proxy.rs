//! The `proxy` section: what `rampart proxy` listens on and how it routes. Its connection pooling
//! keys (`pool_mode`, the pool sizes and timeouts, `databases`, the `auth_*` keys, `admin_users`,
//! `stats_users`, `switchover_drain_timeout`) are checked in [`crate::proxy_pool`] and held in
//! [`Proxy::pooling`].
//!
//! Invariant kept here: a [`Proxy`] always has a read-write listen address, no two listeners
//! share an address, and a key file never comes without its certificate; every other key has a
//! default. The certificate files themselves are read when the proxy starts, before it binds.

use std::path::PathBuf;

use crate::addr::HostPort;
use crate::check::Checker;
use crate::error::Problem;
use crate::proxy_pool::Pooling;
use crate::proxy_split::LoadBalance;
use crate::raw::RawProxy;
use crate::vip::Vip;

/// Default `hold_timeout`: how long a read-write client waits for a leader, in seconds.
pub const DEFAULT_HOLD_TIMEOUT: u64 = 30;
/// Default `shutdown_timeout`, in seconds: how long a stopping proxy lets in-flight queries and
/// open transactions finish before it ends their sessions with FATAL 57P01. Long enough for the
/// queries of an OLTP application, far below systemd's 90 s stop timeout.
pub const DEFAULT_SHUTDOWN_TIMEOUT: u64 = 10;
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
    /// Where the admin HTTP server (`/metrics`, `/stats`, `/stats.json`) listens, if anywhere.
    pub listen_admin: Option<HostPort>,
    /// TLS certificate chain (PEM) for clients that send SSLRequest; without it they get `N`.
    pub certfile: Option<PathBuf>,
    /// TLS private key (PEM), when it is not in `certfile`.
    pub keyfile: Option<PathBuf>,
    /// How read-only connections are spread over the replicas.
    pub ro_policy: RoPolicy,
    /// Session worker threads (each a single-threaded event loop); default one per CPU, one per
    /// two CPUs when the proxy pools server connections ([`default_workers`]).
    pub workers: usize,
    /// What the file says of `workers` (`None`: the default): a reload that changes the pool
    /// mode changes the default, not the running loops, and needs no restart for it.
    pub workers_set: Option<usize>,
    /// Seconds a stopping proxy waits for in-flight queries and transactions (SIGTERM/SIGINT).
    pub shutdown_timeout: u64,
    /// Where one JSON line per client connection is appended when it ends, if anywhere.
    pub access_log: Option<PathBuf>,
    /// Connection pooling and the authentication the proxy does when it pools (session mode, as
    /// before pooling existed, unless `pool_mode` says otherwise).
    pub pooling: Pooling,
    /// Read/write splitting on the read-write port (`load_balance` on), if asked for.
    pub load_balance: Option<LoadBalance>,
    /// The address the proxies sharing it elect one holder of (`proxy.vip`), if any.
    pub vip: Option<Vip>,
}

/// Default `workers`: one event loop per CPU this process may run on (as HAProxy's `nbthread`),
/// or one per two CPUs (rounded up) when the proxy pools server connections (a database in
/// transaction mode, or session mode with the proxy authenticating clients).
///
/// Measured on a 2-core host shared with pgbench and PostgreSQL (bench/proxy.rs). Session mode:
/// two loops cost the same CPU per transaction as one, but one loop left the CPUs idle 6-7 % of
/// the time (every session waits whenever that one thread waits for a core), two about 3 %.
/// Transaction mode: two loops cost more than one on every workload, with the same throughput
/// (`pgbench -S` c16 30.9 against 25.3 us of the proxy's CPU per transaction, c200 36.5 against
/// 29.1, TPC-B 224 against 195), except logins (`-C`, SCRAM-bound: 11 % more with two). There
/// the pool's server connections are shared by every loop and stay registered with the one that
/// used them last: with fewer loops more of them are at home when taken, and every loop that
/// sleeps and wakes between two queries costs a context switch (preemptions per transaction
/// doubled with two). Pooled session mode shares server connections between loops the same way,
/// and one loop cost less there too (`pgbench -S` c16, the whole machine's CPU per transaction:
/// 76-82 us with one loop against 85 with two; the proxy's own 18-19 against 21).
pub fn default_workers(pooled: bool) -> usize {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let n = if pooled { cpus.div_ceil(2) } else { cpus };
    n.clamp(1, MAX_WORKERS)
}

/// The most `workers` accepted.
pub const MAX_WORKERS: usize = 256;

/// `proxy.ro_policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RoPolicy {
    /// Each new read-only connection goes to the next replica in turn.
    #[default]
    RoundRobin,
    /// Each new read-only connection goes to the replica with the fewest open connections.
    LeastConnections,
}

impl RoPolicy {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RoPolicy::RoundRobin => "round_robin",
            RoPolicy::LeastConnections => "least_connections",
        }
    }
}

impl Proxy {
    pub(crate) fn build(raw: Option<RawProxy>, c: &mut Checker<'_>) -> Result<Option<Proxy>, Problem> {
        let Some(mut raw) = raw else { return Ok(None) };
        let pooling = Pooling::build(&mut raw, c)?;
        let load_balance = LoadBalance::build(&mut raw, &pooling, c)?;
        // Taken by one proxy at a time, elected through an etcd lease (see `rampart proxy`).
        let vip = Vip::build(raw.vip.take(), &["proxy", "vip"], c)?;
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
        let listen_admin = match raw.listen_admin {
            Some(text) => Some(c.host_port(&text, &["proxy", "listen_admin"])?),
            None => None,
        };
        if let Some(admin) = &listen_admin {
            if admin == &listen || Some(admin) == listen_ro.as_ref() {
                return Err(c.problem(&["proxy", "listen_admin"], format!("{admin} is already a PostgreSQL listener")));
            }
        }
        if raw.keyfile.is_some() && raw.certfile.is_none() {
            return Err(c.problem(&["proxy", "keyfile"], "set without proxy.certfile"));
        }
        let ro_policy = match raw.ro_policy.as_deref() {
            None | Some("round_robin") => RoPolicy::RoundRobin,
            Some("least_connections") => RoPolicy::LeastConnections,
            Some(other) => {
                return Err(c.problem(
                    &["proxy", "ro_policy"],
                    format!("expected round_robin or least_connections, got {other:?}"),
                ))
            }
        };
        let workers = match raw.workers {
            None => default_workers(pooling.any_pooled()),
            Some(n) if (1..=MAX_WORKERS as u64).contains(&n) => n as usize,
            Some(n) => return Err(c.problem(&["proxy", "workers"], format!("{n} is not between 1 and {MAX_WORKERS}"))),
        };
        let shutdown_timeout = raw.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
        if shutdown_timeout > 3600 {
            return Err(c.problem(&["proxy", "shutdown_timeout"], format!("{shutdown_timeout} s is more than an hour")));
        }
        if raw.access_log.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(c.problem(&["proxy", "access_log"], "is empty (leave the key out to log no connections)"));
        }
        Ok(Some(Proxy {
            listen,
            listen_ro,
            hold_timeout,
            max_lag: raw.max_lag.unwrap_or(DEFAULT_MAX_LAG),
            fallback_to_primary: raw.fallback_to_primary.unwrap_or(true),
            listen_admin,
            certfile: raw.certfile,
            keyfile: raw.keyfile,
            ro_policy,
            workers,
            workers_set: raw.workers.map(|n| n as usize),
            shutdown_timeout,
            access_log: raw.access_log,
            pooling,
            load_balance,
            vip,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::{ConfigError, HostPort, Loaded};

    fn load(proxy: &str) -> Result<Loaded, ConfigError> {
        crate::tests::minimal_with(proxy, "p.yml")
    }

    #[test]
    fn absent_section_is_none() {
        assert_eq!(load("").unwrap().config.proxy, None);
    }

    #[test]
    fn a_proxy_vip_is_checked_as_a_members() {
        let p = load("proxy:\n  listen: 127.0.0.1:6432\n  vip: {ip: 10.0.0.100, netmask: 24, interface: eth0}\n")
            .unwrap()
            .config
            .proxy
            .unwrap();
        let vip = p.vip.expect("proxy.vip");
        assert_eq!((vip.cidr().as_str(), vip.interface.as_deref()), ("10.0.0.100/24", Some("eth0")));
        let e = load("proxy:\n  listen: 127.0.0.1:6432\n  vip: {ip: 10.0.0.100}\n").unwrap_err();
        assert!(e.to_string().contains("proxy.vip: needs an interface"), "{e}");
        let e = load("proxy:\n  listen: 127.0.0.1:6432\n  vip: {ip: 10.0.0.0/24, interface: eth0}\n").unwrap_err();
        assert!(e.to_string().contains("proxy.vip.ip: \"10.0.0.0/24\" is not an IP address"), "{e}");
    }

    #[test]
    fn defaults() {
        let p = load("proxy:\n  listen: 127.0.0.1:6432\n").unwrap().config.proxy.unwrap();
        assert_eq!(p.listen, HostPort { host: "127.0.0.1".into(), port: 6432 });
        assert_eq!(p.listen_ro, None);
        assert_eq!((p.hold_timeout, p.max_lag, p.fallback_to_primary), (30, 1_048_576, true));
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        assert_eq!(p.workers, cpus, "one event loop per CPU");
        let txn = "proxy:\n  listen: h:1\n  pool_mode: transaction\n  auth_file: /etc/rampart/userlist.txt\n";
        let p = load(txn).unwrap().config.proxy.unwrap();
        assert_eq!(p.workers, cpus.div_ceil(2), "one per two CPUs when pooling by transaction");
        assert_eq!((p.shutdown_timeout, p.access_log), (10, None));
    }

    #[test]
    fn shutdown_timeout_and_access_log() {
        let p = load("proxy:\n  listen: h:1\n  shutdown_timeout: 3\n  access_log: /var/log/rampart/access.json\n")
            .unwrap()
            .config
            .proxy
            .unwrap();
        assert_eq!(p.shutdown_timeout, 3);
        assert_eq!(p.access_log.as_deref(), Some(std::path::Path::new("/var/log/rampart/access.json")));
        let e = load("proxy:\n  listen: h:1\n  shutdown_timeout: 7200\n").unwrap_err().to_string();
        assert_eq!(e, "p.yml:13: proxy.shutdown_timeout: 7200 s is more than an hour");
        let e = load("proxy:\n  listen: h:1\n  access_log: ''\n").unwrap_err().to_string();
        assert!(e.starts_with("p.yml:13: proxy.access_log: is empty"), "{e}");
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
    fn admin_tls_and_policy() {
        let text = "proxy:\n  listen: h:1\n  listen_admin: h:2\n  certfile: /c.pem\n  keyfile: /k.pem\n  ro_policy: least_connections\n";
        let p = load(text).unwrap().config.proxy.unwrap();
        assert_eq!(p.listen_admin.unwrap().port, 2);
        assert_eq!(p.certfile.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(p.keyfile.as_deref(), Some(std::path::Path::new("/k.pem")));
        assert_eq!(p.ro_policy, super::RoPolicy::LeastConnections);
        let e = load("proxy:\n  listen: h:1\n  ro_policy: random\n").unwrap_err().to_string();
        assert_eq!(e, "p.yml:13: proxy.ro_policy: expected round_robin or least_connections, got \"random\"");
        let e = load("proxy:\n  listen: h:1\n  keyfile: /k.pem\n").unwrap_err().to_string();
        assert_eq!(e, "p.yml:13: proxy.keyfile: set without proxy.certfile");
        let e = load("proxy:\n  listen: h:1\n  workers: 0\n").unwrap_err().to_string();
        assert_eq!(e, "p.yml:13: proxy.workers: 0 is not between 1 and 256");
        assert_eq!(load("proxy:\n  listen: h:1\n  workers: 4\n").unwrap().config.proxy.unwrap().workers, 4);
        let e = load("proxy:\n  listen: h:1\n  listen_admin: h:1\n").unwrap_err().to_string();
        assert!(e.starts_with("p.yml:13: proxy.listen_admin: h:1 is already"), "{e}");
    }

    #[test]
    fn unknown_keys_warn() {
        let l = load("proxy:\n  listen: h:1\n  bogus: 1\n").unwrap();
        assert!(l.warnings.iter().any(|w| w.contains("unknown key proxy.bogus")), "{:?}", l.warnings);
    }
}
