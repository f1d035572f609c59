//! The ways bench/proxy.rs reaches the primary: directly; through `rampart proxy` in session
//! mode and in transaction mode (two processes, two configuration files); through PgBouncer in
//! session mode and in transaction mode (two processes, [`crate::pgbouncer`]); and through HAProxy
//! forwarding plain TCP to the primary's PostgreSQL port.
//!
//! What it keeps: the two poolers in one pool mode are set up alike, so that a difference between
//! them is the pooler's: transaction-mode pools of [`TXN_POOL_SIZE`] server connections,
//! session-mode pools of `SESSION_POOL_SIZE` (rampart in session mode pools, as PgBouncer does,
//! because it authenticates clients itself with the same `auth_file`), the same userlist (`auth_file` holding the harness superuser's password, which pgbench logs in with),
//! SCRAM between client and pooler, no per-connection log line, and room for the idle-client
//! measurement ([`MAX_CLIENT_CONN`]). HAProxy gets no health check and exactly one server: the
//! bench measures what relaying costs, and a check could only add noise. The primary cannot move
//! under them, since nothing disturbs the cluster during the bench (which checks the DCS leader at
//! the end).

use std::time::Duration;

use tokio::runtime::Runtime;

use crate::pgbouncer::{self, PgBouncer};
use crate::support;
use crate::support::cluster::Cluster;
use crate::support::haproxy::Haproxy;
use crate::support::proxy::Proxy;

/// Far above the bench's at most 200 clients plus pgbench's own setup connection: HAProxy must
/// never queue a connection.
const HAPROXY_MAXCONN: u32 = 1000;
/// Server connections of a transaction-mode pool: the 20, for 16 clients or 200.
pub const TXN_POOL_SIZE: usize = 20;
/// Server connections of the session-mode pools (rampart's and PgBouncer's): one per client,
/// for up to 200 clients and pgbench's setup connection.
const SESSION_POOL_SIZE: usize = 210;
/// Client connections each pooler accepts: the idle-client measurement's 10,000, pgbench's and
/// some to spare.
pub const MAX_CLIENT_CONN: usize = 12_000;

/// Which way to the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Rampart,
    PgBouncer,
    Haproxy,
    RampartTxn,
    PgBouncerTxn,
}

/// One way to the primary.
#[derive(Clone, Copy)]
pub struct Target {
    pub kind: Kind,
    pub name: &'static str,
    pub port: u16,
    /// The relaying process, whose CPU time the bench reads; `None` for the direct path.
    pub pid: Option<u32>,
}

/// The running proxies; dropping them stops each (by PID).
pub struct Proxies {
    pub rampart: Proxy,
    pub rampart_txn: Proxy,
    pub pgbouncer: PgBouncer,
    pub pgbouncer_txn: PgBouncer,
    pub haproxy: Haproxy,
    pub haproxy_port: u16,
    /// `pgbouncer --version`'s first line.
    pub pgbouncer_version: String,
}

/// HAProxy's configuration: TCP mode, one frontend on `bind_port`, one backend whose only server
/// is the primary on `primary_port`. Timeouts are long so that no pgbench connection is ever cut.
fn haproxy_tcp_cfg(bind_port: u16, primary_port: u16) -> String {
    format!(
        "# Written by bench/proxy.rs: plain TCP relay to the primary, no health checks.\n\
         global\n    maxconn {HAPROXY_MAXCONN}\n\n\
         defaults\n    mode tcp\n    timeout connect 4s\n    timeout client 30m\n    timeout server 30m\n\n\
         frontend postgres\n    bind 127.0.0.1:{bind_port}\n    maxconn {HAPROXY_MAXCONN}\n    \
         default_backend primary\n\n\
         backend primary\n    server primary 127.0.0.1:{primary_port}\n"
    )
}

impl Proxies {
    /// Starts both `rampart proxy` processes (node 0's configuration plus a `proxy` section), both
    /// PgBouncers and HAProxy for the cluster `c` whose leader is `leader`, each started with the
    /// open-files limit `nofile`; an error names what did not start. rampart raises its own limit.
    pub fn start(c: &Cluster, leader: usize, nofile: u64) -> Result<Proxies, String> {
        let primary_port = c.pg_port(leader);
        let auth_file = c.dir().join("userlist.txt");
        crate::common::write_auth_file(&auth_file)?;
        let rampart = Proxy::start(
            c,
            &format!(
                "  default_pool_size: {SESSION_POOL_SIZE}\n  max_client_conn: {MAX_CLIENT_CONN}\n  \
                 auth_type: scram-sha-256\n  auth_file: {}\n",
                auth_file.display()
            ),
        );
        let rampart_txn = Proxy::start_named(
            c,
            "proxy-txn",
            &format!(
                "  pool_mode: transaction\n  default_pool_size: {TXN_POOL_SIZE}\n  max_client_conn: {MAX_CLIENT_CONN}\n  \
                 auth_type: scram-sha-256\n  auth_file: {}\n",
                auth_file.display()
            ),
        );
        let pgbouncer_version = pgbouncer::version()?;
        let bouncer = |name, pool_mode, pool_size| pgbouncer::Settings {
            name,
            pool_mode,
            pool_size,
            max_client_conn: MAX_CLIENT_CONN,
            auth_file: &auth_file,
            prepared: pgbouncer::supports_prepared(&pgbouncer_version),
            nofile,
        };
        let pgbouncer = PgBouncer::start(c.dir(), &bouncer("pgbouncer", "session", SESSION_POOL_SIZE), primary_port)?;
        let pgbouncer_txn =
            PgBouncer::start(c.dir(), &bouncer("pgbouncer-txn", "transaction", TXN_POOL_SIZE), primary_port)?;
        let haproxy_port = support::free_port();
        let cfg = c.dir().join("haproxy-tcp.cfg");
        std::fs::write(&cfg, haproxy_tcp_cfg(haproxy_port, primary_port))
            .map_err(|e| format!("writing {}: {e}", cfg.display()))?;
        let mut haproxy = Haproxy::start(&cfg, &c.dir().join("haproxy.log"));
        if !haproxy.wait_listening(haproxy_port, Duration::from_secs(10)) {
            return Err(format!("haproxy does not listen on {haproxy_port}"));
        }
        Ok(Proxies { rampart, rampart_txn, pgbouncer, pgbouncer_txn, haproxy, haproxy_port, pgbouncer_version })
    }

    /// The order of the runs within a round: the direct path first, so that every ratio is taken
    /// against a figure measured moments earlier, then each session-mode proxy, then each
    /// transaction-mode pooler.
    pub fn targets(&self, primary_port: u16) -> [Target; 6] {
        let t = |kind, name, port, pid| Target { kind, name, port, pid };
        [
            t(Kind::Direct, "direct", primary_port, None),
            t(Kind::Rampart, "rampart", self.rampart.rw_port, self.rampart.pid()),
            t(Kind::PgBouncer, "pgbouncer", self.pgbouncer.port, self.pgbouncer.pid()),
            t(Kind::Haproxy, "haproxy", self.haproxy_port, self.haproxy.pid()),
            t(Kind::RampartTxn, "rampart-txn", self.rampart_txn.rw_port, self.rampart_txn.pid()),
            t(Kind::PgBouncerTxn, "pgbouncer-txn", self.pgbouncer_txn.port, self.pgbouncer_txn.pid()),
        ]
    }
}

/// Checks that a new session through `port` lands on the primary on `primary_port`. The query
/// goes by the simple protocol: the extended one would prepare a named statement, which a
/// transaction-mode pool without prepared-statement support may not keep.
pub fn check_route(rt: &Runtime, port: u16, primary_port: u16) -> Result<(), String> {
    rt.block_on(async {
        let db = support::connect_superuser(port).await.map_err(|e| format!("connect: {e}"))?;
        let rows = db
            .simple_query("SELECT inet_server_port(), pg_is_in_recovery()")
            .await
            .map_err(|e| format!("query: {e}"))?;
        let row = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap_or("").to_owned(), r.get(1) == Some("t")))
            }
            _ => None,
        });
        let Some((server, in_recovery)) = row else { return Err("no row".into()) };
        if server == primary_port.to_string() && !in_recovery {
            Ok(())
        } else {
            Err(format!("landed on port {server} (in recovery: {in_recovery}), not the primary on {primary_port}"))
        }
    })
}
