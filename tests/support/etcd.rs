//! A single-member etcd on loopback ports, with its data in a test directory.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::dir::TestDir;
use super::process::{pid_file_for, signal, write_pid_file};

/// How long [`Etcd::start`] and [`Etcd::start_again`] wait for `/health` to report healthy.
pub const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn etcd_bin() -> PathBuf {
    std::env::var_os("RAMPART_ETCD_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/etcd".into())
}

pub fn etcdctl_bin() -> PathBuf {
    std::env::var_os("RAMPART_ETCDCTL_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/etcdctl".into())
}

/// One etcd process (run as the test's own user) listening on `127.0.0.1:<client_port>` and
/// `127.0.0.1:<peer_port>`. Killed by PID on drop.
#[derive(Debug)]
pub struct Etcd {
    /// The address it listens on: 127.0.0.1, or its own in a network namespace.
    host: std::net::Ipv4Addr,
    /// The network namespace it runs in (`/var/run/netns/<name>`), if any.
    netns: Option<PathBuf>,
    client_port: u16,
    peer_port: u16,
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

    /// Starts etcd with its files in `dir` (`dir/data`, `dir/etcd.log`; `dir` is created if
    /// missing) and waits until it is healthy.
    pub fn start_in(dir: &Path) -> Etcd {
        Etcd::start_in_on_port(dir, super::free_port())
    }

    /// [`Etcd::start_in`] with the client listening on `client_port`, a port the test chose
    /// itself (for example one an agent was told to use before any etcd ran there). The peer
    /// port is picked by [`super::free_port`].
    pub fn start_in_on_port(dir: &Path, client_port: u16) -> Etcd {
        Etcd::start_at(dir, std::net::Ipv4Addr::LOCALHOST, client_port, None)
    }

    /// Starts etcd listening on `host:client_port`, inside the network namespace `netns` when
    /// one is given (the chaos suite's own host for etcd).
    pub fn start_at(dir: &Path, host: std::net::Ipv4Addr, client_port: u16, netns: Option<&Path>) -> Etcd {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut etcd = Etcd {
            host,
            netns: netns.map(Path::to_path_buf),
            client_port,
            peer_port: super::free_port(),
            dir: dir.to_path_buf(),
            child: None,
            own_dir: None,
        };
        etcd.start_again();
        etcd
    }

    /// (Re)starts the process on the same ports and data directory and waits until healthy.
    /// Panics if it is already running.
    pub fn start_again(&mut self) {
        assert!(!self.is_running(), "etcd is already running (pid {:?})", self.pid());
        let log_path = self.log_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
        let _ = writeln!(log, "=== harness: starting etcd on client port {} ===", self.client_port);
        let client = self.endpoint();
        let peer = format!("http://{}:{}", self.host, self.peer_port);
        let mut cmd = Command::new(etcd_bin());
        if let Some(ns) = &self.netns {
            super::process::start_in_netns(&mut cmd, ns, None);
        }
        let child = cmd
            .arg("--name=default")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token=rampart-test-{}", self.client_port))
            // A single member: a short election timeout only makes it ready sooner.
            .arg("--heartbeat-interval=100")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("spawning {}: {e} (run scripts/setup.sh to install etcd-server)", etcd_bin().display())
            });
        write_pid_file(&pid_file_for(&log_path), child.id());
        self.child = Some(child);
        if !self.wait_healthy(ETCD_START_TIMEOUT) {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            let tail = super::tail_file(&log_path, 40);
            self.stop();
            panic!(
                "etcd on port {} did not become healthy within {ETCD_START_TIMEOUT:?} (exit status: {exited:?}); \
                 last lines of {}:\n{tail}",
                self.client_port,
                log_path.display()
            );
        }
    }

    /// Kills the process with SIGKILL (by PID) and reaps it. Data and ports are kept, so
    /// [`Etcd::start_again`] brings the same member back. A no-op when not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// [`Etcd::stop`] then [`Etcd::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the process with SIGSTOP: connections stay open but nothing answers.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::SIGSTOP);
        }
    }

    /// Undoes [`Etcd::freeze`] (SIGCONT).
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::SIGCONT);
        }
    }

    /// Whether our process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http://<host>:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.client_port)
    }

    /// `<host>:<client port>`, the form Patroni's `etcd3.host` takes.
    pub fn host(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// `GET /health` answered `{"health":"true"}`.
    pub fn is_healthy(&self) -> bool {
        match super::client::http_request_at(
            self.host,
            self.client_port,
            "GET",
            "/health",
            None,
            Duration::from_secs(1),
        ) {
            Ok(r) => {
                r.status == 200
                    && r.json()
                        .and_then(|v| v.get("health").cloned())
                        .map(|h| h == "true" || h == true)
                        .unwrap_or(false)
            }
            Err(_) => false,
        }
    }

    /// Polls [`Etcd::is_healthy`] until true or `timeout`.
    pub fn wait_healthy(&self, timeout: Duration) -> bool {
        super::wait_until(timeout, Duration::from_millis(50), || self.is_healthy())
    }

    /// Runs `etcdctl --endpoints=<endpoint> <args>` (API v3) and returns its output.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        Command::new(etcdctl_bin())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--dial-timeout=3s")
            .arg("--command-timeout=5s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", etcdctl_bin().display()))
    }

    /// The value of `key`, or `None` when absent or etcd does not answer.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", "--print-value-only", key]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let value = text.strip_suffix('\n').unwrap_or(&text);
        (!out.stdout.is_empty()).then(|| value.to_owned())
    }

    /// Sets `key` to `value`; panics when etcdctl fails.
    pub fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl(&["put", key, value]);
        assert!(out.status.success(), "etcdctl put {key} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Every key in etcd, sorted; panics when etcdctl fails (so that "no keys" really means none).
    pub fn all_keys(&self) -> Vec<String> {
        let out = self.etcdctl(&["get", "--from-key", "", "--keys-only"]);
        assert!(out.status.success(), "etcdctl get --from-key '' failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut keys: Vec<String> =
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
        keys.sort();
        keys
    }

    /// All keys under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.etcdctl(&["get", "--prefix", "--keys-only", prefix]);
        let mut keys: Vec<String> =
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
        keys.sort();
        keys
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
