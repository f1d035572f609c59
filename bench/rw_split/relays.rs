//! The ways bench/rw_split.rs reaches the cluster: directly to the primary; through each
//! splitting `rampart proxy` of [`RAMPARTS`] (node 0's configuration plus a `proxy` section with
//! `load_balance: on`, on its read-write port); and through Pgpool-II with `load_balance_mode`
//! ([`crate::pgpool`]).
//!
//! Each rampart pools [`POOL_SIZE`] server connections per member and logs clients in itself,
//! with SCRAM against an `auth_file` holding the harness superuser's password (PgBouncer's
//! userlist format), as bench/proxy.rs's rampart-txn does; its balancing is the default
//! `ro_policy` (round robin), its pool mode and read-your-writes as [`RAMPARTS`] says. Its admin
//! port serves the splitter's `/metrics` ([`crate::split_metrics`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::pgpool::Pgpool;
use crate::support;
use crate::support::cluster::Cluster;
use crate::support::proxy::Proxy;

/// Server connections per member in a rampart pool (bench/proxy.rs's transaction-mode pools'
/// size): pgbench's 16 clients, each holding its primary connection for the session in session
/// mode, and headroom for the bench's own.
pub const POOL_SIZE: usize = 20;

/// One splitting rampart the bench runs.
pub struct RampartSetup {
    /// The target's name in the tables; also names its files, `<name>.yml` and `<name>.log`.
    pub name: &'static str,
    /// `proxy.pool_mode`.
    pub pool_mode: &'static str,
    /// More lines for its `proxy` section, e.g. `"  read_your_writes: none\n"`.
    pub extra: &'static str,
}

/// The splitting ramparts, in the order they run within a round (after direct, before
/// Pgpool-II):
/// * `rampart-txn`: transaction pooling with the default `read_your_writes: session`: a session's
///   reads go to a replica only once one has replayed its last write;
/// * `rampart-txn-ryw-none`: the same with `read_your_writes: none`, the guarantee Pgpool-II gives
///   (none across transactions), so that the mixed workload compares like with like;
/// * `rampart-session`: session pooling (`pool_mode: session` with the `auth_file`): each client
///   keeps a primary server connection for its session, its reads are split as in transaction
///   mode.
pub const RAMPARTS: &[RampartSetup] = &[
    RampartSetup { name: "rampart-txn", pool_mode: "transaction", extra: "" },
    RampartSetup { name: "rampart-txn-ryw-none", pool_mode: "transaction", extra: "  read_your_writes: none\n" },
    RampartSetup { name: "rampart-session", pool_mode: "session", extra: "" },
];

/// Which way to the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Rampart,
    Pgpool,
}

/// One way to the cluster.
#[derive(Clone)]
pub struct Target {
    pub kind: Kind,
    pub name: &'static str,
    pub port: u16,
    /// The relaying process, whose CPU time the bench reads; `None` for the direct path.
    pub pid: Option<u32>,
    /// A rampart's admin port (its `/metrics`).
    pub admin_port: Option<u16>,
    /// A rampart's log, where it notes each change of its read-only routes.
    pub log: Option<PathBuf>,
}

/// The running relays; dropping them stops each (by PID).
pub struct Relays {
    ramparts: Vec<(Target, Proxy)>,
    pub pgpool: Pgpool,
}

impl Relays {
    /// Starts the ramparts of [`RAMPARTS`] for the cluster `c` and Pgpool-II in front of the
    /// members on `members` (PostgreSQL ports, the primary first), with the userlist
    /// `<cluster dir>/userlist.txt`; an error names what did not start.
    pub fn start(c: &Cluster, members: &[u16]) -> Result<Relays, String> {
        let auth_file = c.dir().join("userlist.txt");
        crate::common::write_auth_file(&auth_file)?;
        let mut ramparts = Vec::new();
        for setup in RAMPARTS {
            let admin_port = support::free_port();
            let proxy = Proxy::start_named(
                c,
                setup.name,
                &format!(
                    "  listen_admin: 127.0.0.1:{admin_port}\n  pool_mode: {}\n  default_pool_size: {POOL_SIZE}\n  \
                     auth_type: scram-sha-256\n  auth_file: {}\n  load_balance: on\n{}",
                    setup.pool_mode,
                    auth_file.display(),
                    setup.extra
                ),
            );
            let answers = support::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
                crate::split_metrics::scrape(admin_port).is_ok()
            });
            if !answers {
                let log = support::tail_file(proxy.log_path(), 20);
                return Err(format!(
                    "{}: no splitter figures on /metrics at {admin_port}; its log:\n{log}",
                    setup.name
                ));
            }
            let target = Target {
                kind: Kind::Rampart,
                name: setup.name,
                port: proxy.rw_port,
                pid: proxy.pid(),
                admin_port: Some(admin_port),
                log: Some(proxy.log_path().to_path_buf()),
            };
            ramparts.push((target, proxy));
        }
        let pgpool = Pgpool::start(c.dir(), members)?;
        Ok(Relays { ramparts, pgpool })
    }

    /// The order of the runs within a round: the direct path first, so that every ratio is taken
    /// against a figure measured moments earlier, then each rampart, then Pgpool-II.
    pub fn targets(&self, primary_port: u16) -> Vec<Target> {
        let mut out = vec![Target {
            kind: Kind::Direct,
            name: "direct",
            port: primary_port,
            pid: None,
            admin_port: None,
            log: None,
        }];
        out.extend(self.ramparts.iter().map(|(t, _)| t.clone()));
        out.push(Target {
            kind: Kind::Pgpool,
            name: "pgpool",
            port: self.pgpool.port,
            pid: self.pgpool.pid(),
            admin_port: None,
            log: None,
        });
        out
    }
}

/// Sessions and reads per session of [`where_reads_land`].
pub const PROBE_SESSIONS: usize = 6;
pub const PROBE_READS: usize = 5;

/// Which servers answer reads through `port`: [`PROBE_SESSIONS`] sessions each run
/// `SELECT inet_server_port()` (a STABLE function: a read to both splitters) [`PROBE_READS`]
/// times by the simple protocol. Returns (server port, reads) pairs, most first.
pub fn where_reads_land(rt: &Runtime, port: u16) -> Result<Vec<(u16, usize)>, String> {
    rt.block_on(async {
        let mut seen: Vec<(u16, usize)> = Vec::new();
        for _ in 0..PROBE_SESSIONS {
            let db = support::connect_superuser(port).await.map_err(|e| format!("connect: {e}"))?;
            for _ in 0..PROBE_READS {
                let rows = db.simple_query("SELECT inet_server_port()").await.map_err(|e| format!("query: {e}"))?;
                let server = rows
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse::<u16>().ok()),
                        _ => None,
                    })
                    .ok_or("no row")?;
                match seen.iter_mut().find(|(p, _)| *p == server) {
                    Some((_, n)) => *n += 1,
                    None => seen.push((server, 1)),
                }
            }
        }
        seen.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        Ok(seen)
    })
}

/// Waits (at most `limit`) until a read through `port` lands on a member other than the primary
/// on `primary_port` ([`where_reads_land`]): a splitting proxy routes reads to the replicas once
/// they stream and it has read the function catalog. Returns how long it took; an error when the
/// reads cannot be run or never reach a replica.
pub fn wait_reads_on_replicas(rt: &Runtime, port: u16, primary_port: u16, limit: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    loop {
        let seen = where_reads_land(rt, port)?;
        if seen.iter().any(|(p, _)| *p != primary_port) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return Err(format!("no read reached a replica within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The length of the file at `path` (0 when it cannot be read), to count what is logged after.
pub fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// How many times the rampart logging to `path` changed its read-only routes since byte `from`
/// (its `read-only routes replicas=[...]` lines: a replica dropped or taken back).
pub fn route_changes_since(path: &Path, from: u64) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).lines().filter(|l| l.contains("read-only routes")).count() as u64
}
