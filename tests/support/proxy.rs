//! `rampart proxy -c <file>` run as a child of the test, stopped by its PID when the handle is
//! dropped. Its configuration is what an application host would have: node 0's cluster (`scope`,
//! `namespace`, `etcd3`) and a `proxy` section on free ports, no member sections.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::cluster::Cluster;
use super::netns::Host;
use super::process::LoggedChild;

/// One running `rampart proxy`.
#[derive(Debug)]
pub struct Proxy {
    proc: LoggedChild,
    /// Read-write port on 127.0.0.1.
    pub rw_port: u16,
    /// Read-only port on 127.0.0.1.
    pub ro_port: u16,
    /// Admin HTTP port on 127.0.0.1 (`proxy.listen_admin`), when started with one.
    pub admin_port: Option<u16>,
    config: PathBuf,
    /// The file's text before the test's own lines (`extra`).
    base: String,
}

impl Proxy {
    /// Starts a proxy for `c` with `extra` appended to its `proxy` section (indented lines such
    /// as `"  hold_timeout: 5\n"`), and waits until both ports accept connections.
    pub fn start(c: &Cluster, extra: &str) -> Proxy {
        Proxy::launch(c, "proxy", extra, false)
    }

    /// [`Proxy::start`] with its files named `<name>.yml` and `<name>.log` in the cluster
    /// directory, for a second proxy beside the first (bench/proxy.rs runs one per pool mode).
    pub fn start_named(c: &Cluster, name: &str, extra: &str) -> Proxy {
        Proxy::launch(c, name, extra, false)
    }

    /// [`Proxy::start`] with an admin HTTP port as well (`proxy.listen_admin`, in
    /// [`Proxy::admin_port`]), waiting until it accepts connections too.
    pub fn start_with_admin(c: &Cluster, extra: &str) -> Proxy {
        Proxy::launch(c, "proxy", extra, true)
    }

    fn launch(c: &Cluster, name: &str, extra: &str, admin: bool) -> Proxy {
        let rw_port = super::free_port();
        let ro_port = super::free_port();
        let admin_port = admin.then(super::free_port);
        let mut section = format!("proxy:\n  listen: 127.0.0.1:{rw_port}\n  listen_ro: 127.0.0.1:{ro_port}\n");
        if let Some(port) = admin_port {
            section.push_str(&format!("  listen_admin: 127.0.0.1:{port}\n"));
        }
        let base = format!("{}{section}", c.node(0).config.patronictl_yaml());
        let config = c.dir().join(format!("{name}.yml"));
        std::fs::write(&config, format!("{base}{extra}"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let mut cmd = Command::new(super::rampart_bin());
        cmd.arg("proxy")
            .arg("-c")
            .arg(&config)
            .env("RUST_LOG", std::env::var("RAMPART_AGENT_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1");
        let proc = LoggedChild::spawn("rampart proxy", cmd, &c.dir().join(format!("{name}.log")));
        let mut p = Proxy { proc, rw_port, ro_port, admin_port, config, base };
        for port in [rw_port, ro_port].into_iter().chain(admin_port) {
            assert!(p.proc.wait_listening(port, Duration::from_secs(10)), "rampart proxy does not listen on {port}");
        }
        p
    }

    /// Starts a proxy for `c` on `host` (a machine of its own, see [`super::netns`]), as the
    /// `postgres` user with the capabilities a virtual address needs (as systemd's
    /// `AmbientCapabilities=` gives them), listening on all the host's addresses: read-write on
    /// `rw_port`, admin on `admin_port`. Waits until both accept connections at the host's address.
    pub fn start_on(c: &Cluster, host: &Host, name: &str, rw_port: u16, admin_port: u16, extra: &str) -> Proxy {
        let ro_port = super::free_port();
        let section = format!(
            "proxy:\n  listen: 0.0.0.0:{rw_port}\n  listen_ro: 0.0.0.0:{ro_port}\n  listen_admin: 0.0.0.0:{admin_port}\n"
        );
        let base = format!("{}{section}", c.node(0).config.patronictl_yaml());
        let config = c.dir().join(format!("{name}.yml"));
        std::fs::write(&config, format!("{base}{extra}"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let netns = host.netns.as_deref().expect("a host in a network namespace");
        let mut cmd = super::agent::agent_user_command_in(
            &super::rampart_bin(),
            c.dir(),
            &[],
            Some(netns),
            rampart_kit::user::AmbientCaps::Net,
        );
        cmd.arg("proxy").arg("-c").arg(&config);
        let proc = LoggedChild::spawn("rampart proxy", cmd, &c.dir().join(format!("{name}.log")));
        let mut p = Proxy { proc, rw_port, ro_port, admin_port: Some(admin_port), config, base };
        for port in [rw_port, admin_port] {
            let to = std::net::SocketAddr::from((host.addr, port));
            let listening = super::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                p.proc.is_running() && host.tcp_connect(to, Duration::from_millis(500)).is_ok()
            });
            assert!(listening, "rampart proxy on {} does not listen on {to}:\n{}", host.label, p.log());
        }
        p
    }

    /// The proxy's PID while it runs (the benches read its memory and CPU time from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Rewrites the configuration file with `extra` in place of the lines given at start (for a
    /// reload: the proxy reads it on SIGHUP).
    pub fn rewrite_config(&self, extra: &str) {
        std::fs::write(&self.config, format!("{}{extra}", self.base))
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.config.display()));
    }

    /// Sends `sig` to the proxy by its PID.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.pid().expect("the proxy runs");
        assert!(super::process::signal(pid, sig), "sending {sig} to rampart proxy ({pid})");
    }

    /// Waits up to `timeout` for the proxy to exit by itself: its exit status, or `None`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILLs the proxy by PID and reaps it; a no-op when already stopped.
    pub fn stop(&mut self) {
        self.proc.stop();
    }
}

/// A superuser session to `dbname` through `port` whose connection task is kept: the handle
/// yields how the connection ended, e.g. the FATAL error the server (or the proxy) sent while the
/// client sat idle, which a plain [`super::connect`] drops.
pub async fn connect_watched(
    port: u16,
    dbname: &str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>), tokio_postgres::Error>
{
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(super::SUPERUSER)
        .password(super::SUPERUSER_PASSWORD)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = cfg.connect(tokio_postgres::NoTls).await?;
    Ok((client, tokio::spawn(connection)))
}

/// The login of [`cluster_and_pool`]'s clients (a SCRAM superuser the proxy looks up by
/// `auth_query`).
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret";

/// A one-node cluster with an [`APP_USER`] (SCRAM), and a transaction-mode proxy in front of it
/// whose `auth_user` is the superuser (its password in the `auth_file`) and whose pools hold at
/// most `pool_size` server connections; `extra` is appended to its `proxy` section. Returns the
/// cluster, the proxy and the leader's PostgreSQL port. The proxy looks the app user's secret up
/// with `auth_query`, over a connection of its own for each client login.
pub fn cluster_and_pool(pool_size: usize, extra: &str) -> (Cluster, Proxy, u16) {
    start_cluster_and_pool(pool_size, extra, false)
}

/// [`cluster_and_pool`] with the [`APP_USER`]'s SCRAM verifier (read from `pg_authid`) in the
/// `auth_file` as well: its clients log in without an `auth_query` connection each, which makes
/// thousands of logins quick.
pub fn cluster_and_pool_app_in_auth_file(pool_size: usize, extra: &str) -> (Cluster, Proxy, u16) {
    start_cluster_and_pool(pool_size, extra, true)
}

fn start_cluster_and_pool(pool_size: usize, extra: &str, app_in_auth_file: bool) -> (Cluster, Proxy, u16) {
    let (c, proxy, leader) = pool_cluster(1, pool_size, extra, app_in_auth_file, Proxy::start);
    let port = c.pg_port(leader);
    (c, proxy, port)
}

/// [`cluster_and_pool`] with the proxy in session mode (`pool_mode: session`; it authenticates
/// clients, so it pools server connections across sessions).
pub fn cluster_and_session_pool(pool_size: usize, extra: &str) -> (Cluster, Proxy, u16) {
    let (c, proxy, leader) = pool_cluster_in("session", 1, pool_size, extra, false, Proxy::start);
    let port = c.pg_port(leader);
    (c, proxy, port)
}

/// [`cluster_and_pool`] with `nodes` members, the [`APP_USER`] in the `auth_file` or not, and the
/// proxy started by `start` (e.g. [`Proxy::start_with_admin`]); returns the leader's index.
pub fn pool_cluster(
    nodes: usize,
    pool_size: usize,
    extra: &str,
    app_in_auth_file: bool,
    start: fn(&Cluster, &str) -> Proxy,
) -> (Cluster, Proxy, usize) {
    pool_cluster_in("transaction", nodes, pool_size, extra, app_in_auth_file, start)
}

/// [`pool_cluster`] with the proxy in `pool_mode` (`transaction` or `session`).
pub fn pool_cluster_in(
    pool_mode: &str,
    nodes: usize,
    pool_size: usize,
    extra: &str,
    app_in_auth_file: bool,
    start: fn(&Cluster, &str) -> Proxy,
) -> (Cluster, Proxy, usize) {
    let c = Cluster::start(nodes, super::ClusterOptions::default());
    let leader = super::health::wait_healthy(&c, Duration::from_secs(90)).expect("a leader");
    let port = c.pg_port(leader);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(super::client::sql(port, &format!("CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}' SUPERUSER")));
    let mut users = format!("\"{}\" \"{}\"\n", super::SUPERUSER, super::SUPERUSER_PASSWORD);
    if app_in_auth_file {
        let sql = format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{APP_USER}'");
        let verifier = rt.block_on(super::client::query_text(port, &sql)).expect("the app user's verifier");
        users.push_str(&format!("\"{APP_USER}\" \"{verifier}\"\n"));
    }
    let auth_file = c.dir().join("userlist.txt");
    std::fs::write(&auth_file, users).unwrap();
    let proxy = start(
        &c,
        &format!(
            "  pool_mode: {pool_mode}\n  default_pool_size: {pool_size}\n  auth_file: {}\n  auth_user: {}\n{extra}",
            auth_file.display(),
            super::SUPERUSER
        ),
    );
    (c, proxy, leader)
}

/// Server connections the proxy holds for `user` on the server at `port` (client backends of
/// that user in `pg_stat_activity`, asked directly as the superuser).
pub fn server_connections(port: u16, user: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}' AND backend_type = 'client backend' \
         AND pid <> pg_backend_pid()"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = rt.block_on(super::client::query_text(port, &sql)).expect("asking the server");
    out.parse().unwrap_or_else(|_| panic!("a count: {out}"))
}
