//! The cluster under fault: three hosts (see [`crate::support::netns`]), each with an agent, its
//! PostgreSQL on a tmpfs disk of its own and a member of a three-member etcd beside them, as in
//! seed 003, and `rampart proxy` on a host of its own; and the operations the faults are made of:
//! killing, freezing and restarting processes by PID, cutting links (whole or one service's
//! ports), filling a disk. Each agent lists the etcd member on its own host first.
//!
//! Dropping it stops everything it started, by PID, frozen processes included, unmounts the
//! disks and removes the namespaces; when the test is failing the logs are printed first.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio_postgres::Client;

use crate::support::agent::Agent;
use crate::support::config::NodeConfig;
use crate::support::dir::TestDir;
use crate::support::etcd::Etcd;
use crate::support::netns::{Direction, Host, Net};
use crate::support::process::{signal, AmbientCaps, LoggedChild};
use crate::support::{self, free_port};

/// Timing of a chaos cluster: failover in about ttl, and `loop_wait + 2 * retry_timeout` within
/// ttl as Patroni requires.
pub use super::support::timing::Timing;

impl Timing {
    /// The default profile.
    pub const TTL_10: Timing = Timing { ttl: 10, loop_wait: 1, retry_timeout: 3 };
    /// The fastest profile: Patroni refuses a ttl below 20; Rampart's suite runs this one too.
    pub const TTL_5: Timing = Timing { ttl: 5, loop_wait: 1, retry_timeout: 2 };

    /// `RAMPART_CHAOS_TTL`: 10 (the default) or 5.
    pub fn from_env() -> Timing {
        match std::env::var("RAMPART_CHAOS_TTL").ok().as_deref().map(str::trim) {
            None | Some("") | Some("10") => Timing::TTL_10,
            Some("5") => Timing::TTL_5,
            Some(other) => panic!("RAMPART_CHAOS_TTL={other}: the suite has profiles for ttl 10 and 5"),
        }
    }
}

pub const MAXIMUM_LAG_ON_FAILOVER: u64 = 1_048_576;
/// Size of each node's tmpfs disk. A run makes a new timeline every few faults while writing
/// little WAL, and each timeline leaves its own file for the current WAL segment until the
/// segment number falls behind a checkpoint: with 16 MB segments a hundred failovers filled a
/// 768 MB disk (and then every promotion failed). The clusters are made with 1 MB segments
/// (`initdb --wal-segsize=1`) and `max_wal_size` 256 MB.
const DISK_SIZE: &str = "1g";

/// `synchronous_mode` of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Async,
    On,
    Quorum,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "off" | "async" => Some(Mode::Async),
            "on" | "sync" => Some(Mode::On),
            "quorum" => Some(Mode::Quorum),
            _ => None,
        }
    }

    pub fn is_sync(self) -> bool {
        self != Mode::Async
    }

    fn dcs_yaml(self) -> &'static str {
        match self {
            Mode::Async => "",
            Mode::On => "    synchronous_mode: on\n",
            Mode::Quorum => "    synchronous_mode: quorum\n",
        }
    }
}

/// One member.
pub struct ChaosNode {
    pub config: NodeConfig,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub host: Host,
    pub agent: Option<Agent>,
    /// The tmpfs mount holding the data directory, when one could be made.
    pub disk: Option<PathBuf>,
}

impl ChaosNode {
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

pub struct ChaosCluster {
    pub nodes: Vec<ChaosNode>,
    /// The etcd members, member `i` on node `i`'s host.
    pub etcd: Vec<Etcd>,
    proxy: Option<LoggedChild>,
    pub proxy_port: u16,
    pub proxy_host: Host,
    /// Processes a fault froze (SIGSTOP), thawed before anything is stopped.
    frozen: Vec<u32>,
    /// The directory is kept: leave the disks mounted.
    kept: bool,
    pub net: Net,
    bin: PathBuf,
    dir: TestDir,
}

impl ChaosCluster {
    /// Hosts, etcd, three agents and the proxy; does not wait for the cluster to form.
    pub fn start(mode: Mode, timing: Timing) -> ChaosCluster {
        let dir = TestDir::new("chaos");
        let net = Net::create(dir.path(), &["node0", "node1", "node2", "proxy"]);
        if let Some(why) = &net.fallback_reason {
            println!("[chaos] network namespaces unavailable ({why}): every host is 127.0.0.1, partition faults are left out");
        } else {
            println!("[chaos] hosts in network namespaces on {}", net.cidr);
        }
        let hosts: Vec<Host> = (0..3).map(|i| net.host(&format!("node{i}")).clone()).collect();
        let etcd = Etcd::start_members(
            &dir.join("etcd"),
            &hosts.iter().map(|h| (h.addr, h.netns.clone())).collect::<Vec<_>>(),
        );
        let mut nodes = Vec::new();
        for i in 0..3 {
            let host = hosts[i].clone();
            let node_dir = dir.subdir(format!("node{i}"));
            let disk_dir = node_dir.join("disk");
            // The member on the node's own host first, then the others.
            let endpoints: Vec<String> = (0..3).map(|k| etcd[(i + k) % 3].host()).collect();
            let mut config = NodeConfig::new(i, &node_dir, &endpoints.join(","))
                .host(&host.addr.to_string(), &net.cidr)
                .timing(timing.ttl, timing.loop_wait, timing.retry_timeout)
                .maximum_lag_on_failover(MAXIMUM_LAG_ON_FAILOVER)
                // The workload's blocked commits and the probes' reconnects need room.
                .parameter("max_connections", "200")
                // A client that gave up on a commit does not keep its backend forever.
                .parameter("client_connection_check_interval", "'1s'")
                .parameter("max_wal_size", "'256MB'");
            config.data_dir = disk_dir.join("data");
            config.initdb_options.push("wal-segsize: 1".into());
            config.dcs_yaml.push_str(mode.dcs_yaml());
            let config_path = node_dir.join("rampart.yml");
            config.write(&config_path).unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
            let disk = mount_tmpfs(dir.path(), &disk_dir);
            nodes.push(ChaosNode {
                config,
                config_path,
                log_path: node_dir.join("agent.log"),
                host,
                agent: None,
                disk,
            });
        }
        let proxy_host = net.host("proxy").clone();
        let mut c = ChaosCluster {
            nodes,
            etcd,
            proxy: None,
            proxy_port: free_port(),
            proxy_host,
            frozen: Vec::new(),
            kept: crate::support::keep_test_dirs(),
            net,
            bin: support::rampart_bin(),
            dir,
        };
        for i in 0..3 {
            c.start_agent(i);
        }
        c.start_proxy();
        c
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the run's directory after the test, for a failing run: logs, and the tmpfs disks
    /// with the data directories and PostgreSQL's logs stay mounted (`umount <dir>/node*/disk`
    /// when done; the reap script leaves kept directories alone).
    pub fn keep_dir(&mut self) {
        self.dir.keep();
        self.kept = true;
    }

    pub fn dcs_prefix(&self) -> String {
        self.nodes[0].config.dcs_prefix()
    }

    fn start_proxy(&mut self) {
        let mut cfg = self.nodes[0].config.clone();
        cfg.extra_yaml.push_str(&format!(
            "proxy:\n  listen: {addr}:{port}\n  listen_ro: {addr}:{ro}\n  hold_timeout: 30\n",
            addr = self.proxy_host.addr,
            port = self.proxy_port,
            ro = free_port()
        ));
        let config = self.dir.join("proxy.yml");
        std::fs::write(&config, cfg.to_yaml()).unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("proxy").arg("-c").arg(&config).env("RUST_LOG", "info").env("NO_COLOR", "1");
        if let Some(ns) = &self.proxy_host.netns {
            support::process::start_in_netns(&mut cmd, ns, None, AmbientCaps::None);
        }
        self.proxy = Some(LoggedChild::spawn("rampart proxy", cmd, &self.dir.join("proxy.log")));
    }

    /// Starts node `i`'s agent (again), in its namespace; a previous handle is killed first.
    pub fn start_agent(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut old) = node.agent.take() {
            old.kill_agent_tree();
            old.disown_postmaster();
        }
        let netns = node.host.netns.as_deref();
        node.agent =
            Some(Agent::start_in_netns(&self.bin, &node.config_path, &node.log_path, &[], netns, AmbientCaps::None));
    }

    fn agent(&mut self, i: usize) -> &mut Agent {
        self.nodes[i].agent.as_mut().expect("agent started")
    }

    /// SIGKILL of node `i`'s agent alone.
    pub fn kill_agent(&mut self, i: usize) {
        self.agent(i).sigkill();
    }

    /// SIGKILL of node `i`'s postmaster (its backends notice and exit).
    pub fn kill_postgres(&mut self, i: usize) {
        self.agent(i).kill_postmaster();
    }

    /// SIGKILL of node `i`'s agent and postmaster: its machine crashes.
    pub fn crash(&mut self, i: usize) {
        let pm = self.agent(i).postmaster_pid();
        self.agent(i).kill_agent_tree();
        if let Some(pm) = pm {
            signal(pm, Signal::SIGKILL);
            support::process::wait_gone(pm, Duration::from_secs(5));
        }
    }

    fn freeze(&mut self, pid: Option<u32>) {
        if let Some(pid) = pid {
            if signal(pid, Signal::SIGSTOP) {
                self.frozen.push(pid);
            }
        }
    }

    /// SIGSTOP of node `i`'s agent.
    pub fn freeze_agent(&mut self, i: usize) {
        let pid = Some(self.agent(i).pid());
        self.freeze(pid);
    }

    /// SIGSTOP of node `i`'s postmaster (its running backends carry on).
    pub fn freeze_postgres(&mut self, i: usize) {
        let pid = self.agent(i).postmaster_pid();
        self.freeze(pid);
    }

    /// SIGSTOP of etcd member `m` (thawed by [`ChaosCluster::thaw_all`]).
    pub fn freeze_etcd(&mut self, m: usize) {
        let pid = self.etcd[m].pid();
        self.freeze(pid);
    }

    /// Kills etcd members `members` (SIGKILL: a crash).
    pub fn kill_etcd(&mut self, members: &[usize]) {
        for &m in members {
            self.etcd[m].stop();
        }
    }

    /// Starts etcd members `members` again on their data, all at once (a member of several is
    /// healthy only once a quorum runs), and waits until each is healthy.
    pub fn start_etcd(&mut self, members: &[usize]) {
        Etcd::start_together(self.etcd.iter_mut().enumerate().filter(|(i, _)| members.contains(i)).map(|(_, e)| e));
    }

    /// The etcd member that is raft leader, by asking each member for its status.
    pub fn etcd_raft_leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for e in &self.etcd {
            let out = e.etcdctl(&["endpoint", "status", "-w", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let status = &v[0]["Status"];
            ids.push(status["header"]["member_id"].as_u64());
            leader = leader.or(status["leader"].as_u64());
        }
        let leader = leader?;
        ids.iter().position(|id| *id == Some(leader))
    }

    /// Every etcd member's client and peer ports.
    pub fn etcd_ports(&self) -> Vec<u16> {
        self.etcd.iter().flat_map(|e| [e.client_port(), e.peer_port()]).collect()
    }

    /// Drops everything but etcd's traffic between node `i` and `peers` (replication, the REST
    /// API, the proxy's connections).
    pub fn cut_all_but_etcd(&self, i: usize, peers: &[Ipv4Addr], dir: Direction) {
        self.net.cut_except_ports(&self.nodes[i].host, peers, &self.etcd_ports(), dir);
    }

    /// Drops etcd's traffic (its client and peer ports) between node `i` and `peers`.
    pub fn cut_etcd(&self, i: usize, peers: &[Ipv4Addr], dir: Direction) {
        self.net.cut_ports(&self.nodes[i].host, peers, &self.etcd_ports(), dir);
    }

    /// SIGCONT to everything frozen.
    pub fn thaw_all(&mut self) {
        for pid in self.frozen.drain(..) {
            signal(pid, Signal::SIGCONT);
        }
    }

    /// Drops packets between node `i` and `peers`.
    pub fn cut(&self, i: usize, peers: &[Ipv4Addr], dir: Direction) {
        self.net.cut(&self.nodes[i].host, peers, dir);
    }

    /// Removes every packet filter rule of every node.
    pub fn heal_network(&self) {
        for n in &self.nodes {
            self.net.heal(&n.host);
        }
    }

    pub fn node_addr(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].host.addr
    }

    /// Fills node `i`'s disk to the last byte; false when it has no disk of its own.
    pub fn fill_disk(&self, i: usize) -> bool {
        let Some(disk) = &self.nodes[i].disk else { return false };
        let ballast = disk.join("ballast");
        let Ok(st) = nix::sys::statvfs::statvfs(disk) else { return false };
        let free = st.blocks_available() * st.fragment_size();
        let Ok(f) = std::fs::File::create(&ballast) else { return false };
        // fallocate reserves the blocks at once; tmpfs supports it.
        let _ = nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, free as i64);
        // Whatever fallocate could not take (rounding), a write takes.
        let mut f = f;
        let chunk = vec![0u8; 1 << 16];
        while std::io::Write::write(&mut f, &chunk).map(|n| n > 0).unwrap_or(false) {}
        true
    }

    /// Removes node `i`'s ballast file.
    pub fn free_disk(&self, i: usize) {
        if let Some(disk) = &self.nodes[i].disk {
            let _ = std::fs::remove_file(disk.join("ballast"));
        }
    }

    pub fn has_disks(&self) -> bool {
        self.nodes.iter().all(|n| n.disk.is_some())
    }

    /// The DCS leader key's member index, if any, as the first etcd member that answers says.
    pub fn leader(&self) -> Option<usize> {
        let key = format!("{}leader", self.dcs_prefix());
        let name = self.etcd.iter().find_map(|e| e.try_get(&key).ok())??;
        self.nodes.iter().position(|n| n.config.name == name)
    }

    /// Node index whose PostgreSQL listens on `port`.
    pub fn node_by_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.config.pg_port == port)
    }

    /// A superuser connection to node `i`, bounded by 3 s.
    pub async fn sql(&self, i: usize) -> Option<Client> {
        let n = &self.nodes[i];
        let host = n.host.addr.to_string();
        let c = support::client::connect_at(&host, n.config.pg_port, support::SUPERUSER, support::SUPERUSER_PASSWORD);
        tokio::time::timeout(Duration::from_secs(3), c).await.ok()?.ok()
    }

    /// `rampart switchover --leader <from> --candidate <to> --force`; its output.
    pub fn switchover(&self, from: usize, to: usize) -> std::process::Output {
        Command::new(&self.bin)
            .arg("switchover")
            .arg("-c")
            .arg(self.dir.join("proxy.yml"))
            .args(["--leader", self.nodes[from].name(), "--candidate", self.nodes[to].name(), "--force"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running rampart switchover")
    }

    /// Prints the last lines of every log.
    pub fn dump_logs(&self) {
        let lines = support::log_tail_lines();
        let mut out = format!("\n===== [chaos] logs in {} =====\n", self.dir().display());
        for n in &self.nodes {
            out.push_str(&format!("----- {} agent log -----\n{}\n", n.name(), support::tail_file(&n.log_path, lines)));
            // rampart writes PostgreSQL's log beside the data directory.
            let pg_log = n.config.data_dir.with_file_name(format!("{}-postgres.log", n.name()));
            out.push_str(&format!(
                "----- {} postgres log -----\n{}\n",
                n.name(),
                support::tail_file(&pg_log, lines / 2)
            ));
        }
        let proxy_log = self.dir.join("proxy.log");
        out.push_str(&format!("----- proxy log -----\n{}\n", support::tail_file(&proxy_log, lines / 2)));
        for e in &self.etcd {
            out.push_str(&format!("----- {} log -----\n{}\n", e.name(), support::tail_file(&e.log_path(), 15)));
        }
        eprint!("{out}");
    }
}

/// Mounts a tmpfs of [`DISK_SIZE`] owned by the agent's user on `at` (recorded for the reap
/// script first); `None` when it cannot (not root).
fn mount_tmpfs(dir: &Path, at: &Path) -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    std::fs::create_dir_all(at).ok()?;
    let (uid, gid) = support::run_as().switch_to.unwrap_or((0, 0));
    let mut record = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(".harness-netns")).ok()?;
    let _ = std::io::Write::write_all(&mut record, format!("mount {}\n", at.display()).as_bytes());
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={DISK_SIZE},mode=0700,uid={uid},gid={gid}"), "tmpfs"])
        .arg(at)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then(|| at.to_path_buf())
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        self.thaw_all();
        if let Some(mut p) = self.proxy.take() {
            p.stop();
        }
        for n in &mut self.nodes {
            if let Some(a) = n.agent.as_mut() {
                a.kill_agent_tree();
            }
        }
        for n in &mut self.nodes {
            if let Some(mut a) = n.agent.take() {
                // A frozen postmaster was thawed above, so SIGQUIT reaches it.
                a.kill_all();
            }
        }
        for e in &mut self.etcd {
            e.stop();
        }
        for n in self.nodes.iter().filter(|_| !self.kept) {
            if let Some(disk) = &n.disk {
                let _ = Command::new("umount").arg("-l").arg(disk).status();
            }
        }
        // Then the namespaces (Net's drop) and the directory, in field order.
    }
}
