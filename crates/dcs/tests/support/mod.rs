//! A real single-node etcd for tests: free loopback ports, data in a temporary directory, and
//! killed by its PID when dropped (also when the test panics). Never kills by name, so tests
//! running in parallel, and anything else on the machine, are left alone.
//!
//! The directory follows the workspace harness convention (`/tmp/rampart-test-*` holding a
//! `.harness-owner` file, and `etcd.harness-pid` for the running etcd), so that
//! `scripts/reap-test-procs.sh` can stop an etcd whose test process was killed before `Drop` ran.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};

/// The etcd binary; `RAMPART_ETCD_BIN` overrides it, as for the workspace's e2e tests.
fn etcd_bin() -> String {
    std::env::var("RAMPART_ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".to_string())
}

/// Start time of a process (field 22 of `/proc/<pid>/stat`), which tells it apart from a later
/// process that reuses its PID.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split_whitespace().nth(19).map(str::to_string)
}

/// `<pid> <start time>`, the harness' PID file format.
fn pid_line(pid: u32) -> String {
    format!("{pid} {}\n", start_time(pid).unwrap_or_else(|| "0".into()))
}

fn test_dir() -> TempDir {
    let dir = tempfile::Builder::new().prefix("rampart-test-dcs-etcd-").tempdir_in("/tmp").expect("tempdir");
    std::fs::write(dir.path().join(".harness-owner"), pid_line(std::process::id())).expect("owner file");
    dir
}

/// TLS files for a server started with [`EtcdServer::start_tls`].
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub struct EtcdServer {
    child: Option<Child>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<TlsFiles>,
}

// Ports below the ephemeral range, picked as the workspace's e2e harness picks them (port 0 came
// from the ephemeral range, where a client connection of another test took one between the pick
// and etcd's bind: "bind: address already in use").
#[path = "../../../../tests/support/ports.rs"]
mod ports;
pub use ports::free_port;

impl EtcdServer {
    /// Starts etcd on plain HTTP and waits until it reports healthy.
    pub async fn start() -> EtcdServer {
        let mut server = EtcdServer::new(None);
        server.spawn();
        server.wait_ready().await;
        server
    }

    /// Starts etcd with TLS and client-certificate authentication; waits until it listens.
    pub async fn start_tls() -> EtcdServer {
        let mut server = EtcdServer::new(None);
        server.tls = Some(make_certificates(server.dir.path()));
        server.spawn();
        server.wait_ready().await;
        server
    }

    fn new(tls: Option<TlsFiles>) -> EtcdServer {
        EtcdServer { child: None, dir: test_dir(), client_port: free_port(), peer_port: free_port(), tls }
    }

    /// The client URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// Serves clients on `port` from the next (re)start on, with the same data directory.
    pub fn use_client_port(&mut self, port: u16) {
        self.client_port = port;
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "etcd already running");
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let data = self.dir.path().join("data");
        let log = File::options().create(true).append(true).open(self.dir.path().join("etcd.log")).expect("log file");
        let mut cmd = Command::new(etcd_bin());
        cmd.arg("--name=test")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            // Fast elections so start and restart take well under a second.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=300")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn");
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::from(log.try_clone().expect("log"))).stderr(Stdio::from(log));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", etcd_bin()));
        std::fs::write(self.dir.path().join("etcd.harness-pid"), pid_line(child.id())).expect("pid file");
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("etcd exited with {status}; log:\n{}", self.log());
            }
            if self.ready().await {
                return;
            }
            assert!(Instant::now() < until, "etcd not healthy after 15 s; log:\n{}", self.log());
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Plain HTTP: `/health` says true. TLS: the port accepts connections (the test's own client
    /// then retries within its deadline until etcd has elected itself).
    async fn ready(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.client_port)).await else {
            return false;
        };
        if self.tls.is_some() {
            return true;
        }
        let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.client_port);
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut body = String::new();
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read_to_string(&mut body)).await;
        matches!(read, Ok(Ok(_))) && body.contains("\"health\":\"true\"")
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("etcd running").id() as i32)
    }

    /// SIGKILL by PID and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(self.dir.path().join("etcd.harness-pid"));
        }
    }

    /// Starts again on the same ports and data directory.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// Deletes the data directory (etcd must be stopped): the next start is a brand-new store
    /// whose revisions start again from 1.
    pub fn wipe_data(&mut self) {
        assert!(self.child.is_none(), "stop etcd before wiping its data");
        std::fs::remove_dir_all(self.dir.path().join("data")).expect("remove etcd data");
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing is answered.
    /// Returns once every thread has stopped: `kill` only queues the signal, and a thread still
    /// running on another CPU could otherwise answer one more request.
    pub fn pause(&self) {
        kill(self.pid(), Signal::SIGSTOP).expect("SIGSTOP etcd");
        let tasks = format!("/proc/{}/task", self.pid());
        let all_stopped = || {
            std::fs::read_dir(&tasks).expect("list etcd threads").flatten().all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // The state follows the parenthesised command name; 'T' is stopped.
                stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_none_or(|state| state == "T")
            })
        };
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while !all_stopped() {
            assert!(std::time::Instant::now() < until, "etcd did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        kill(self.pid(), Signal::SIGCONT).expect("SIGCONT etcd");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // SIGKILL also ends a SIGSTOPped process.
        self.kill();
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI.
fn make_certificates(dir: &Path) -> TlsFiles {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=rampart-test-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    for (name, cn) in [("server", "127.0.0.1"), ("client", "rampart-client")] {
        let subj = format!("/CN={cn}");
        openssl(
            &[&["req"][..], &ec, &["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", &subj]]
                .concat(),
        );
        std::fs::write(
            dir.join(format!("{name}.ext")),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n",
        )
        .expect("write ext file");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    TlsFiles {
        ca: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    }
}
