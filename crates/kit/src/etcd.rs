//! etcd on loopback ports (or a host's own address in a network namespace), each member's data
//! and log in one directory: the one launcher of the demo, the e2e harness and the DCS tests. A
//! single member by default; [`Etcd::start_members`] starts a cluster of several, as seeds 002 and
//! 003 run it.
//!
//! Invariants: the process is stopped by its PID, never by name, when its [`Etcd`] is dropped
//! (also during a panic); its PID is recorded next to its log (`etcd.log.harness-pid`) for
//! `scripts/reap-test-procs.sh`; [`Etcd::start_again`] brings the same member back on the same
//! ports and data (a cluster member rejoins its cluster).

mod ctl;
mod tls;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

pub use self::ctl::etcdctl_bin;
pub use self::tls::TlsFiles;
use crate::dir::TestDir;
use crate::pid::{pid_file_for, signal, write_pid_file};

/// How long [`Etcd::start`] and [`Etcd::start_again`] wait for `/health` to report healthy.
pub const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The etcd binary: `/usr/bin/etcd`, or `RAMPART_ETCD_BIN`.
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("RAMPART_ETCD_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/etcd".into())
}

/// How one etcd member runs: its name, addresses, data directory and TLS files.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// The program: [`etcd_bin`] unless the caller found it elsewhere.
    pub bin: PathBuf,
    pub name: String,
    /// The address it listens on: 127.0.0.1, or its own in a network namespace.
    pub host: Ipv4Addr,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    /// Serve clients over TLS and require their certificates.
    pub tls: Option<TlsFiles>,
    /// The cluster of several this member belongs to; `None`: a cluster of this member alone.
    pub cluster: Option<MemberOf>,
}

/// A member's cluster of several, as every member's command line names it.
#[derive(Clone, Debug)]
pub struct MemberOf {
    /// `--initial-cluster`: `name=peer-url,...` of every member.
    pub initial_cluster: String,
    /// `--initial-cluster-token`, the same on every member.
    pub token: String,
}

impl EtcdConfig {
    /// A member called `name` on 127.0.0.1, on ports picked by [`crate::free_port`].
    pub fn loopback(name: &str, data_dir: &Path) -> EtcdConfig {
        EtcdConfig {
            bin: etcd_bin(),
            name: name.into(),
            host: Ipv4Addr::LOCALHOST,
            client_port: crate::free_port(),
            peer_port: crate::free_port(),
            data_dir: data_dir.to_path_buf(),
            tls: None,
            cluster: None,
        }
    }

    /// `http://<host>:<peer port>`.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.host, self.peer_port)
    }

    /// `http(s)://<host>:<client port>`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.client_port)
    }

    /// The command line that starts this member (no stdio, no user set: the caller's business).
    pub fn command(&self) -> Command {
        let client = self.endpoint();
        let peer = self.peer_url();
        let (initial_cluster, token, heartbeat, election) = match &self.cluster {
            // etcd's own defaults: members must hear each other's heartbeats over real links.
            Some(m) => (m.initial_cluster.clone(), m.token.clone(), 100, 1000),
            // A single member: a short election timeout only makes it ready sooner.
            None => (format!("{}={peer}", self.name), format!("rampart-{}-{}", self.name, self.peer_port), 100, 500),
        };
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token={token}"))
            .arg(format!("--heartbeat-interval={heartbeat}"))
            .arg(format!("--election-timeout={election}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .env_remove("ETCDCTL_API");
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        cmd
    }
}

/// One etcd process (run as our own user), killed by PID on drop.
#[derive(Debug)]
pub struct Etcd {
    config: EtcdConfig,
    /// The network namespace it runs in (`/var/run/netns/<name>`), if any.
    netns: Option<PathBuf>,
    /// Holds `data/` and `etcd.log`.
    dir: PathBuf,
    child: Option<Child>,
    /// Set when this Etcd created its own directory.
    own_dir: Option<TestDir>,
}

impl Etcd {
    /// Starts etcd in a fresh [`TestDir`] of its own and waits until it is healthy.
    pub fn start() -> Etcd {
        let own = TestDir::new("etcd");
        let mut etcd = Etcd::start_in(own.path());
        etcd.own_dir = Some(own);
        etcd
    }

    /// Starts etcd with TLS and client-certificate authentication (a CA, server and client
    /// certificates made in its own [`TestDir`]); waits until it accepts connections.
    pub fn start_tls() -> Etcd {
        let own = TestDir::new("etcd-tls");
        let mut etcd = Etcd::new(own.path(), Ipv4Addr::LOCALHOST, crate::free_port(), None);
        etcd.config.tls = Some(tls::make_certificates(own.path()));
        etcd.own_dir = Some(own);
        etcd.start_again();
        etcd
    }

    /// Starts etcd with its files in `dir` (`dir/data`, `dir/etcd.log`; `dir` is created if
    /// missing) and waits until it is healthy.
    pub fn start_in(dir: &Path) -> Etcd {
        Etcd::start_in_on_port(dir, crate::free_port())
    }

    /// [`Etcd::start_in`] with the client listening on `client_port`, a port the test chose
    /// itself (for example one an agent was told to use before any etcd ran there). The peer
    /// port is picked by [`crate::free_port`].
    pub fn start_in_on_port(dir: &Path, client_port: u16) -> Etcd {
        Etcd::start_at(dir, Ipv4Addr::LOCALHOST, client_port, None)
    }

    /// Starts etcd listening on `host:client_port`, inside the network namespace `netns` when
    /// one is given (the chaos suite's own host for etcd).
    pub fn start_at(dir: &Path, host: Ipv4Addr, client_port: u16, netns: Option<&Path>) -> Etcd {
        let mut etcd = Etcd::new(dir, host, client_port, netns);
        etcd.start_again();
        etcd
    }

    fn new(dir: &Path, host: Ipv4Addr, client_port: u16, netns: Option<&Path>) -> Etcd {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let config = EtcdConfig { host, client_port, ..EtcdConfig::loopback("default", &dir.join("data")) };
        Etcd { config, netns: netns.map(Path::to_path_buf), dir: dir.to_path_buf(), child: None, own_dir: None }
    }

    /// (Re)starts the process on the same ports and data directory and waits until healthy.
    /// Panics if it is already running.
    pub fn start_again(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Starts the process without waiting for it (a member of several is healthy only once a
    /// quorum runs). Panics if it is already running.
    pub fn spawn(&mut self) {
        assert!(!self.is_running(), "etcd is already running (pid {:?})", self.pid());
        let log_path = self.log_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
        let _ = writeln!(log, "=== harness: starting etcd on client port {} ===", self.config.client_port);
        let mut cmd = self.config.command();
        if let Some(ns) = &self.netns {
            crate::user::start_in_netns(&mut cmd, ns, None, crate::user::AmbientCaps::None);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("spawning {}: {e} (run scripts/setup.sh to install etcd-server)", self.config.bin.display())
            });
        write_pid_file(&pid_file_for(&log_path), child.id());
        self.child = Some(child);
    }

    /// Waits until the started process is healthy; panics with its log's tail if it exits or
    /// is not healthy within [`ETCD_START_TIMEOUT`].
    pub fn wait_ready(&mut self) {
        let log_path = self.log_path();
        let mut exited = None;
        let ready = crate::wait_until(ETCD_START_TIMEOUT, Duration::from_millis(50), || {
            exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            exited.is_some() || self.is_healthy()
        });
        if !ready || exited.is_some() {
            let tail = crate::tail_file(&log_path, 40);
            self.stop();
            panic!(
                "etcd on port {} did not become healthy within {ETCD_START_TIMEOUT:?} (exit status: {exited:?}); \
                 last lines of {}:\n{tail}",
                self.config.client_port,
                log_path.display()
            );
        }
    }

    /// Starts a cluster of one member per `(address, network namespace)` of `hosts`, member `i`
    /// called `etcd<i>` with its files in `dir/etcd<i>`, and waits until every member is healthy.
    pub fn start_members(dir: &Path, hosts: &[(Ipv4Addr, Option<PathBuf>)]) -> Vec<Etcd> {
        Etcd::start_members_with(dir, hosts, None)
    }

    /// `count` members on loopback, as [`Etcd::start_members`], with TLS and client-certificate
    /// authentication on their client URLs (one CA, and one server certificate for 127.0.0.1
    /// that every member presents, made in `dir`).
    pub fn start_tls_members(dir: &Path, count: usize) -> Vec<Etcd> {
        let files = tls::make_certificates(dir);
        Etcd::start_members_with(dir, &vec![(Ipv4Addr::LOCALHOST, None); count], Some(files))
    }

    fn start_members_with(dir: &Path, hosts: &[(Ipv4Addr, Option<PathBuf>)], tls: Option<TlsFiles>) -> Vec<Etcd> {
        let mut members: Vec<Etcd> = hosts
            .iter()
            .enumerate()
            .map(|(i, (host, netns))| {
                let name = format!("etcd{i}");
                let member_dir = dir.join(&name);
                let mut etcd = Etcd::new(&member_dir, *host, crate::free_port(), netns.as_deref());
                etcd.config.name = name;
                etcd.config.tls = tls.clone();
                etcd
            })
            .collect();
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.config.name, m.config.peer_url())).collect::<Vec<_>>().join(",");
        let token = format!("rampart-{}", members[0].config.peer_port);
        for m in &mut members {
            m.config.cluster = Some(MemberOf { initial_cluster: initial_cluster.clone(), token: token.clone() });
        }
        Etcd::start_together(&mut members);
        members
    }

    /// Starts stopped members of one cluster and waits until each is healthy: all are spawned
    /// first, since a member of several is healthy only once a quorum runs.
    pub fn start_together<'a>(members: impl IntoIterator<Item = &'a mut Etcd>) {
        let mut members: Vec<&mut Etcd> = members.into_iter().collect();
        members.iter_mut().for_each(|m| m.spawn());
        members.iter_mut().for_each(|m| m.wait_ready());
    }

    /// The member's name (`default` for a single member, `etcd<i>` in a cluster of several).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Kills the process with SIGKILL (by PID) and reaps it. Data and ports are kept, so
    /// [`Etcd::start_again`] brings the same member back. A no-op when not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(pid_file_for(&self.log_path()));
        }
    }

    /// [`Etcd::stop`] then [`Etcd::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the process with SIGSTOP: connections stay open but nothing answers. Returns once
    /// every thread has stopped: `kill` only queues the signal, and a thread still running on
    /// another CPU could otherwise answer one more request.
    pub fn freeze(&self) {
        let Some(pid) = self.pid() else { return };
        signal(pid, Signal::SIGSTOP);
        let tasks = format!("/proc/{pid}/task");
        let all_stopped = || {
            std::fs::read_dir(&tasks).map(|d| d.flatten().all(|t| crate::pid::task_stopped(&t.path()))).unwrap_or(true)
        };
        assert!(crate::wait_until(Duration::from_secs(5), Duration::from_millis(5), all_stopped), "etcd did not stop");
    }

    /// Undoes [`Etcd::freeze`] (SIGCONT).
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::SIGCONT);
        }
    }

    /// Whether our process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http(s)://<host>:<client port>`.
    pub fn endpoint(&self) -> String {
        self.config.endpoint()
    }

    /// `<host>:<client port>`, the form Patroni's `etcd3.host` takes.
    pub fn host(&self) -> String {
        format!("{}:{}", self.config.host, self.config.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.config.client_port
    }

    /// Serves clients on `port` from the next (re)start on, with the same data directory.
    pub fn set_client_port(&mut self, port: u16) {
        self.config.client_port = port;
    }

    pub fn peer_port(&self) -> u16 {
        self.config.peer_port
    }

    /// The TLS files of a server started with [`Etcd::start_tls`].
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.config.tls.as_ref()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// Deletes the data directory (etcd must be stopped): the next start is a brand-new store
    /// whose revisions start again from 1.
    pub fn wipe_data(&mut self) {
        assert!(!self.is_running(), "stop etcd before wiping its data");
        std::fs::remove_dir_all(self.data_dir()).expect("remove etcd data");
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The whole log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Plain HTTP: `GET /health` answers `"health":"true"`. TLS: the client port accepts
    /// connections (a client then retries within its deadline until etcd has elected itself).
    pub fn is_healthy(&self) -> bool {
        let addr = SocketAddr::from((self.config.host, self.config.client_port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
        if self.config.tls.is_some() {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.0 200")
            && answer.contains("\"health\":\"true\"")
    }

    /// Polls [`Etcd::is_healthy`] until true or `timeout`.
    pub fn wait_healthy(&self, timeout: Duration) -> bool {
        crate::wait_until(timeout, Duration::from_millis(50), || self.is_healthy())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // SIGKILL also ends a SIGSTOPped process.
        self.stop();
    }
}
