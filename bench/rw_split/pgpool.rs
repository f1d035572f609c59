//! Pgpool-II, the load balancer bench/rw_split.rs sets rampart's read/write splitting against:
//! Debian's `pgpool2` package (`/usr/sbin/pgpool`, `RAMPART_PGPOOL_BIN` overrides), in the
//! foreground (`-n`) as a child of the bench, with every file it writes in `<cluster dir>/pgpool/`.
//!
//! What it keeps ([`conf`]):
//! * `backend_clustering_mode = 'streaming_replication'` over the three members, the primary as
//!   backend 0, each of weight [`WEIGHT`] (Pgpool-II's default `backend_weight`: reads spread over
//!   the primary and both replicas alike); `load_balance_mode = on` with Pgpool-II's defaults for
//!   the rest: the load-balance node is chosen per session (`statement_level_load_balance = off`;
//!   pgbench's 16 sessions live for the whole run, so reads still spread over all members), reads
//!   after a write in an explicit transaction stay on the primary until it ends
//!   (`disable_load_balance_on_write = 'transaction'`; pgbench's statements each run alone);
//! * `num_init_children = 32` (a process per client: pgbench's 16, its set-up connection and the
//!   bench's own, with headroom), `max_pool = 1` (one database and user), `child_life_time = 0` so
//!   that no child is replaced during the runs, no query cache (`memory_cache_enabled = off`);
//! * the streaming-replication check every 10 s (its default) as the superuser, no health check,
//!   `failover_on_backend_error = off` and no failover command: nothing may detach a member while
//!   the bench measures; no connection or statement logging, like rampart without `access_log`;
//! * client authentication by `pool_hba.conf` (`enable_pool_hba = on`, `host all all 127.0.0.1/32
//!   scram-sha-256`) against `pool_passwd`, which holds the harness superuser's password in plain
//!   text (`postgres:TEXT<password>`): Pgpool-II needs the password itself for SCRAM with the
//!   client and with the backends (PostgreSQL's `pg_hba` asks for SCRAM). The files belong to the
//!   PostgreSQL OS user, which Pgpool-II runs as when the bench is root.
//!
//! Stopping ([`Drop`]): SIGINT by PID (Pgpool-II's fast shutdown, which stops its children), then
//! SIGKILL if it has not exited within 10 s, and SIGKILL for any process it had forked (recorded
//! by PID and start time) that outlived it. The children's PIDs are also written as
//! `*.harness-pid` files, so that `scripts/reap-test-procs.sh` stops them after a killed run.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::runtime::Runtime;

use crate::support;
use crate::support::process::{self, run_as, LoggedChild};

/// Each member's `backend_weight`.
pub const WEIGHT: u32 = 1;
/// Pgpool-II's processes for clients (it serves one client per process).
pub const NUM_INIT_CHILDREN: usize = 32;

pub fn bin() -> PathBuf {
    crate::common::env_path("RAMPART_PGPOOL_BIN", "/usr/sbin/pgpool")
}

/// `pgpool-II version 4.3.5 (tamahomeboshi)`, the first line of `pgpool --version`.
pub fn version() -> Result<String, String> {
    let out = Command::new(bin())
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {} --version: {e} (scripts/setup.sh installs pgpool2)", bin().display()))?;
    // It prints its version on stderr.
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("{} --version printed nothing", bin().display()))
}

/// `pgpool.conf`: Pgpool-II on `127.0.0.1:port` in front of the members on `backends` (PostgreSQL
/// ports, the primary first), its sockets, PID file and status file in `dir`.
fn conf(port: u16, pcp_port: u16, dir: &Path, backends: &[u16]) -> String {
    let dir = dir.display();
    let mut text = format!(
        "# Written by bench/rw_split.rs (see bench/rw_split/pgpool.rs).\n\
         backend_clustering_mode = 'streaming_replication'\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         socket_dir = '{dir}'\n\
         pcp_listen_addresses = '127.0.0.1'\n\
         pcp_port = {pcp_port}\n\
         pcp_socket_dir = '{dir}'\n\
         wd_ipc_socket_dir = '{dir}'\n\
         pid_file_name = '{dir}/pgpool.pid'\n\
         logdir = '{dir}'\n\
         memqcache_oiddir = '{dir}/oiddir'\n\
         enable_pool_hba = on\n\
         pool_passwd = '{dir}/pool_passwd'\n\
         ssl = off\n\
         num_init_children = {NUM_INIT_CHILDREN}\n\
         max_pool = 1\n\
         child_life_time = 0\n\
         child_max_connections = 0\n\
         connection_life_time = 0\n\
         client_idle_limit = 0\n\
         connection_cache = on\n\
         load_balance_mode = on\n\
         statement_level_load_balance = off\n\
         disable_load_balance_on_write = 'transaction'\n\
         memory_cache_enabled = off\n\
         sr_check_period = 10\n\
         sr_check_user = '{user}'\n\
         sr_check_password = ''\n\
         sr_check_database = 'postgres'\n\
         delay_threshold = 0\n\
         health_check_period = 0\n\
         failover_on_backend_error = off\n\
         failover_command = ''\n\
         use_watchdog = off\n\
         log_destination = 'stderr'\n\
         log_min_messages = warning\n\
         log_connections = off\n\
         log_disconnections = off\n\
         log_statement = off\n\
         log_per_node_statement = off\n",
        user = support::SUPERUSER,
    );
    for (i, backend) in backends.iter().enumerate() {
        text.push_str(&format!(
            "backend_hostname{i} = '127.0.0.1'\nbackend_port{i} = {backend}\nbackend_weight{i} = {WEIGHT}\n\
             backend_flag{i} = 'DISALLOW_TO_FAILOVER'\n"
        ));
    }
    text
}

/// Writes `text` to `path`, mode 0600, owned by the PostgreSQL OS user.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    process::chown_to_agent_user(path).map_err(|e| format!("chown {}: {e}", path.display()))
}

/// A process and its start time, to tell it from a later one with the same PID.
type Recorded = (u32, Option<u64>);

/// One running Pgpool-II.
pub struct Pgpool {
    proc: LoggedChild,
    pub port: u16,
    dir: PathBuf,
    /// The processes it forked, as last seen.
    forked: Vec<Recorded>,
}

impl Pgpool {
    /// Writes its files into `<cluster_dir>/pgpool/` and starts Pgpool-II on a free port in front
    /// of the members on `backends` (the primary first); waits until it listens.
    pub fn start(cluster_dir: &Path, backends: &[u16]) -> Result<Pgpool, String> {
        let dir = cluster_dir.join("pgpool");
        std::fs::create_dir_all(dir.join("oiddir")).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        for d in [dir.clone(), dir.join("oiddir")] {
            process::chown_to_agent_user(&d).map_err(|e| format!("chown {}: {e}", d.display()))?;
        }
        let port = support::free_port();
        let config = dir.join("pgpool.conf");
        write_private(&config, &conf(port, support::free_port(), &dir, backends))?;
        write_private(
            &dir.join("pool_passwd"),
            &format!("{}:TEXT{}\n", support::SUPERUSER, support::SUPERUSER_PASSWORD),
        )?;
        write_private(
            &dir.join("pool_hba.conf"),
            "# Written by bench/rw_split.rs.\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        // No PCP user: the bench does not use PCP.
        write_private(&dir.join("pcp.conf"), "")?;
        let mut cmd = Command::new(bin());
        cmd.arg("-n")
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-F")
            .arg(dir.join("pcp.conf"))
            .arg("-a")
            .arg(dir.join("pool_hba.conf"))
            .env("HOME", &dir)
            .env_remove("PGPOOLKEYFILE");
        if let Some((uid, gid)) = run_as().switch_to {
            cmd.uid(uid).gid(gid);
        }
        let proc = LoggedChild::spawn("pgpool", cmd, &dir.join("pgpool.log"));
        let mut pgpool = Pgpool { proc, port, dir, forked: Vec::new() };
        let listening = pgpool.proc.wait_listening(port, Duration::from_secs(30));
        pgpool.record_forked();
        if !listening {
            let log = support::tail_file(pgpool.proc.log_path(), 30);
            return Err(format!("pgpool does not listen on {port}; its log:\n{log}"));
        }
        Ok(pgpool)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Notes the processes Pgpool-II has forked, by PID and start time, for [`Drop`] and (as
    /// `*.harness-pid` files) for `scripts/reap-test-procs.sh`.
    pub fn record_forked(&mut self) {
        let Some(pid) = self.pid() else { return };
        for child in process::descendants(pid) {
            if self.forked.iter().any(|(p, _)| *p == child) {
                continue;
            }
            self.forked.push((child, process::start_time(child)));
            process::write_pid_file(&self.dir.join(format!("pgpool-{child}.harness-pid")), child);
        }
    }
}

impl Drop for Pgpool {
    fn drop(&mut self) {
        self.record_forked();
        if let Some(pid) = self.pid() {
            process::signal(pid, Signal::SIGINT);
            if self.proc.wait_exit(Duration::from_secs(10)).is_none() {
                self.proc.stop();
            }
        }
        for &(pid, start) in &self.forked {
            if process::is_alive(pid) && process::start_time(pid) == start {
                process::signal(pid, Signal::SIGKILL);
            }
        }
    }
}

/// One line of `SHOW POOL_NODES`.
pub struct PoolNode {
    pub port: String,
    pub status: String,
    pub role: String,
    pub lb_weight: String,
    pub select_cnt: u64,
}

/// `SHOW POOL_NODES` through Pgpool-II on `port`.
pub fn pool_nodes(rt: &Runtime, port: u16) -> Result<Vec<PoolNode>, String> {
    rt.block_on(async {
        let db = support::connect_superuser(port).await.map_err(|e| format!("connect: {e}"))?;
        let rows = db.simple_query("SHOW POOL_NODES").await.map_err(|e| format!("SHOW POOL_NODES: {e}"))?;
        Ok(rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    let text = |name: &str| r.try_get(name).ok().flatten().unwrap_or_default().to_owned();
                    Some(PoolNode {
                        port: text("port"),
                        status: text("status"),
                        role: text("role"),
                        lb_weight: text("lb_weight"),
                        select_cnt: text("select_cnt").parse().unwrap_or(0),
                    })
                }
                _ => None,
            })
            .collect())
    })
}
