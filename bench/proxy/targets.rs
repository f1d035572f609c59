//! The three ways bench/proxy.rs reaches the primary: directly, through `rampart proxy`'s
//! read-write port, and through HAProxy forwarding plain TCP to the primary's PostgreSQL port.
//!
//! HAProxy gets no health check and exactly one server: the bench measures what relaying costs,
//! and a check could only add noise. The primary cannot move under it, since nothing disturbs the
//! cluster during the bench (which checks the DCS leader at the end).

use std::time::Duration;

use tokio::runtime::Runtime;

use crate::support;
use crate::support::cluster::Cluster;
use crate::support::haproxy::Haproxy;
use crate::support::proxy::Proxy;

/// Far above the bench's at most 16 clients plus pgbench's own setup connection: HAProxy must
/// never queue a connection.
const HAPROXY_MAXCONN: u32 = 1000;

/// One way to the primary.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub port: u16,
    /// The relaying process, whose CPU time the bench reads; `None` for the direct path.
    pub pid: Option<u32>,
}

/// The running proxies; dropping them stops both (by PID).
pub struct Proxies {
    pub rampart: Proxy,
    pub haproxy: Haproxy,
    pub haproxy_port: u16,
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
    /// Starts `rampart proxy` (node 0's configuration plus a `proxy` section) and HAProxy for the
    /// cluster `c` whose leader is `leader`; panics, like the harness, if either does not listen.
    pub fn start(c: &Cluster, leader: usize) -> Proxies {
        let rampart = Proxy::start(c, "");
        let haproxy_port = support::free_port();
        let cfg = c.dir().join("haproxy-tcp.cfg");
        std::fs::write(&cfg, haproxy_tcp_cfg(haproxy_port, c.pg_port(leader)))
            .unwrap_or_else(|e| panic!("writing {}: {e}", cfg.display()));
        let mut haproxy = Haproxy::start(&cfg, &c.dir().join("haproxy.log"));
        assert!(
            haproxy.wait_listening(haproxy_port, Duration::from_secs(10)),
            "haproxy does not listen on {haproxy_port}"
        );
        Proxies { rampart, haproxy, haproxy_port }
    }

    /// direct, rampart, haproxy: the order of the runs within a round, the direct path first so
    /// that every ratio is taken against a figure measured moments earlier.
    pub fn targets(&self, primary_port: u16) -> [Target; 3] {
        [
            Target { name: "direct", port: primary_port, pid: None },
            Target { name: "rampart", port: self.rampart.rw_port, pid: self.rampart.pid() },
            Target { name: "haproxy", port: self.haproxy_port, pid: self.haproxy.pid() },
        ]
    }
}

/// Checks that a new session through `port` lands on the primary on `primary_port`.
pub fn check_route(rt: &Runtime, port: u16, primary_port: u16) -> Result<(), String> {
    rt.block_on(async {
        let db = support::connect_superuser(port).await.map_err(|e| format!("connect: {e}"))?;
        let row = db
            .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
            .await
            .map_err(|e| format!("query: {e}"))?;
        let (server, in_recovery): (i32, bool) = (row.get(0), row.get(1));
        if i32::from(primary_port) == server && !in_recovery {
            Ok(())
        } else {
            Err(format!("landed on port {server} (in recovery: {in_recovery}), not the primary on {primary_port}"))
        }
    })
}

/// `SHOW <name>` on the server on `port`.
pub fn show(rt: &Runtime, port: u16, name: &str) -> Result<String, String> {
    rt.block_on(async {
        let db = support::connect_superuser(port).await.map_err(|e| format!("connect: {e}"))?;
        let row = db.query_one(&format!("SHOW {name}"), &[]).await.map_err(|e| format!("SHOW {name}: {e}"))?;
        Ok(row.get(0))
    })
}

/// After the tables are loaded: a CHECKPOINT on the primary, then waits (at most `limit`) until
/// every replica has replayed up to the primary's WAL position, so that replaying the load and
/// writing it out do not compete with the first measured runs. Returns how long it took.
pub fn settle(rt: &Runtime, primary_port: u16, limit: Duration) -> Result<Duration, String> {
    rt.block_on(async {
        let t0 = std::time::Instant::now();
        let db = support::connect_superuser(primary_port).await.map_err(|e| format!("connect: {e}"))?;
        db.batch_execute("CHECKPOINT").await.map_err(|e| format!("CHECKPOINT: {e}"))?;
        let lsn: String = db
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| format!("pg_current_wal_lsn: {e}"))?
            .get(0);
        let behind = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE replay_lsn IS NULL OR replay_lsn < '{lsn}'::pg_lsn"
        );
        loop {
            let n: i64 = db.query_one(&behind, &[]).await.map_err(|e| format!("pg_stat_replication: {e}"))?.get(0);
            if n == 0 {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > limit {
                return Err(format!("{n} replica(s) still behind {lsn} after {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
