//! `rampart demo`: a whole cluster on this machine — etcd, N PostgreSQL nodes each with its own
//! `rampart agent`, and `rampart proxy` in front of them — in one working directory, until Ctrl-C.
//!
//! The demo uses exactly what an operator would: the agent binary, Patroni-format config files
//! (written to the working directory for reading, mode 0600 since they hold passwords), a real
//! etcd. It prints progress until the cluster is healthy (one leader, every replica streaming),
//! then the proxy's read-write and read-only connection strings, its `/stats` page, the direct
//! connection strings and the member table.
//!
//! Invariants kept here, whatever ends the demo:
//! * SIGINT, SIGTERM and SIGHUP, an error, or a panic stop the children in order: the proxy, then
//!   every agent with SIGTERM (each stops its PostgreSQL cleanly), then etcd. Output goes through
//!   [`say!`], which ignores write errors: a closed stdout (the pipe to `tee` gone with the same
//!   Ctrl-C) must not end the demo before it has stopped its children.
//! * If the demo is killed outright (SIGKILL), every child gets SIGTERM from the kernel
//!   (`PR_SET_PDEATHSIG`), so the agents still stop their PostgreSQL. The death signal belongs to
//!   the thread that forked the child, so children are only ever spawned from the main thread,
//!   which lives as long as the demo.
//! * It only ever signals processes it started, by PID; their PIDs are in `<dir>/demo.pids`.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rampart_core::Cluster;
use rampart_core::PgState;
use rampart_dcs::Dcs;
use tokio::signal::unix::{signal, Signal as Sig, SignalKind};

/// `println!` that ignores write errors: stdout may be a pipe whose reader is gone (Rust ignores
/// SIGPIPE, so a write fails with EPIPE instead of killing us, and `println!` would panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Marks a directory as created by the demo, so a re-run may clear it and nothing else.
const MARKER: &str = ".rampart-demo";
const SCOPE: &str = "demo";
const SUPERUSER_PASSWORD: &str = "demo-superuser";
const REPLICATION_PASSWORD: &str = "demo-replication";

/// A process the demo started, stopped by PID on drop.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn terminate(&mut self, grace: Duration) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < grace {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = writeln!(std::io::stderr(), "{} did not stop within {:?}; killing it", self.name, grace);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every process the demo started, in start order. Dropping it (on any exit: normal, error or
/// panic) stops them in reverse order: the proxy, the agents (each stops its PostgreSQL), etcd.
#[derive(Default)]
struct Procs(Vec<Proc>);

impl Procs {
    fn stop_all(&mut self) {
        while let Some(mut p) = self.0.pop() {
            p.terminate(Duration::from_secs(60));
            say!("  {} stopped", p.name);
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `n` distinct free ports on 127.0.0.1. All are held open until every one is picked: a port
/// released at once can be handed out again by the next `bind(0)`, before the server it was meant
/// for binds it (etcd then PostgreSQL were once given the same port).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

fn find_program(candidates: &[&str], what: &str, package: &str) -> Result<PathBuf> {
    for c in candidates {
        if Path::new(c).is_file() {
            return Ok(PathBuf::from(c));
        }
    }
    bail!(
        "{what} not found (looked in {}); install Debian's {package} package (`make demo` does it)",
        candidates.join(", ")
    )
}

/// The user the agents run as: the invoking user, or `postgres` when invoked as root
/// (PostgreSQL refuses to run as root).
fn agent_user() -> Result<Option<nix::unistd::User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let u = nix::unistd::User::from_name("postgres")?
        .context("running as root, but there is no `postgres` user to run PostgreSQL as; install postgresql-15")?;
    Ok(Some(u))
}

fn chown_to(path: &Path, user: &Option<nix::unistd::User>) -> Result<()> {
    if let Some(u) = user {
        nix::unistd::chown(path, Some(u.uid), Some(u.gid)).with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

fn prepare_dir(dir: &Path, user: &Option<nix::unistd::User>) -> Result<()> {
    if dir.exists() {
        let empty = fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!("{} exists and was not made by `rampart demo`; choose another --dir", dir.display());
        }
        if !empty {
            fs::remove_dir_all(dir).with_context(|| format!("clearing the previous demo in {}", dir.display()))?;
        }
    }
    fs::create_dir_all(dir)?;
    fs::write(dir.join(MARKER), "created by rampart demo; removed on the next run\n")?;
    chown_to(dir, user)?;
    Ok(())
}

struct Node {
    name: String,
    pg_port: u16,
    api_port: u16,
    config: PathBuf,
}

fn node_config(dir: &Path, n: &Node, etcd_port: u16) -> String {
    let d = dir.join(&n.name);
    format!(
        r#"# Written by `rampart demo`: a Patroni-format configuration.
scope: {SCOPE}
namespace: /service/
name: {name}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  host: 127.0.0.1:{etcd_port}
bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
  initdb:
    - auth: scram-sha-256
    - encoding: UTF8
    - data-checksums
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {data}
  pgpass: {pgpass}
  authentication:
    superuser:
      username: postgres
      password: {SUPERUSER_PASSWORD}
    replication:
      username: replicator
      password: {REPLICATION_PASSWORD}
  parameters:
    unix_socket_directories: '{sock}'
    password_encryption: scram-sha-256
"#,
        name = n.name,
        api = n.api_port,
        pg = n.pg_port,
        data = d.join("data").display(),
        pgpass = d.join("pgpass").display(),
        sock = d.join("sock").display(),
    )
}

/// Writes a file only `user` (or we) can read: it may hold passwords. Created with mode 0600,
/// so no other user can open it even for a moment.
fn write_private(path: &Path, text: &str, user: &Option<nix::unistd::User>) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    // A file left from elsewhere keeps its mode on open: set it.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    chown_to(path, user)
}

/// Must run on the main thread (see the module's invariants): the parent-death signal is tied to
/// the thread that forks.
fn spawn_logged(mut cmd: Command, log: &Path, name: &str, user: &Option<nix::unistd::User>) -> Result<Proc> {
    let out = fs::File::create(log)?;
    chown_to(log, user)?;
    cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    if let Some(u) = user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw()).env("HOME", &u.dir);
    }
    // Our own process group: Ctrl-C in the terminal reaches only the demo, which then stops the
    // agents in order instead of having the terminal signal all of them at once.
    cmd.process_group(0);
    let demo = nix::unistd::getpid();
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid) are made.
    // std runs this after switching uid, which would clear a death signal set before it.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            // The demo may have died between fork and prctl: then nobody would send the signal.
            if nix::unistd::getppid() != demo {
                return Err(std::io::Error::other("rampart demo exited while starting this process"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    Ok(Proc { name: name.to_string(), child })
}

/// The signals that stop the demo, registered before the first child starts so that none of
/// them can kill the demo with its default action and orphan the cluster.
struct StopSignals {
    int: Sig,
    term: Sig,
    hup: Sig,
}

impl StopSignals {
    fn install() -> Result<StopSignals> {
        Ok(StopSignals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Waits for one of them; returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// The proxy's configuration: an application host's file (no member settings, no password).
fn proxy_config(etcd_port: u16, ports: &ProxyPorts) -> String {
    format!(
        r#"# Written by `rampart demo`: `rampart proxy -c` this file.
scope: {SCOPE}
namespace: /service/
etcd3:
  host: 127.0.0.1:{etcd_port}
proxy:
  listen: 127.0.0.1:{rw}
  listen_ro: 127.0.0.1:{ro}
  listen_admin: 127.0.0.1:{admin}
"#,
        rw = ports.rw,
        ro = ports.ro,
        admin = ports.admin,
    )
}

struct ProxyPorts {
    rw: u16,
    ro: u16,
    admin: u16,
}

/// Runs the demo until SIGINT (Ctrl-C), SIGTERM or SIGHUP.
pub fn run(dir: &Path, nodes: u8) -> Result<()> {
    let etcd = find_program(&["/usr/bin/etcd", "/usr/local/bin/etcd"], "etcd", "etcd-server")?;
    find_program(&["/usr/lib/postgresql/15/bin/postgres"], "PostgreSQL 15", "postgresql-15")?;
    let user = agent_user()?;
    let dir = if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir()?.join(dir) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut stop = rt.block_on(async { StopSignals::install() })?;
    prepare_dir(&dir, &user)?;

    // The agents run as `postgres` when we are root: give them a copy of this binary they can
    // execute even if ours sits in a directory they cannot enter.
    let bin = dir.join("rampart");
    fs::copy(std::env::current_exe()?, &bin).context("copying the rampart binary into the demo directory")?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;

    let n = usize::from(nodes);
    let ports = free_ports(2 + 2 * n + 3)?;
    let (etcd_port, etcd_peer) = (ports[0], ports[1]);
    let proxy_ports = ProxyPorts { rw: ports[2 + 2 * n], ro: ports[3 + 2 * n], admin: ports[4 + 2 * n] };
    let mut procs = Procs::default();
    let mut cmd = Command::new(&etcd);
    cmd.args(["--name", "demo-etcd", "--data-dir"])
        .arg(dir.join("etcd"))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"))
        .arg(format!("--initial-cluster=demo-etcd=http://127.0.0.1:{etcd_peer}"));
    procs.0.push(spawn_logged(cmd, &dir.join("etcd.log"), "etcd", &None)?);
    say!("etcd          listening on 127.0.0.1:{etcd_port} (log: {})", dir.join("etcd.log").display());

    let mut members = Vec::new();
    for i in 1..=nodes {
        let n = Node {
            name: format!("node{i}"),
            pg_port: ports[2 * usize::from(i)],
            api_port: ports[2 * usize::from(i) + 1],
            config: dir.join(format!("node{i}.yml")),
        };
        let nd = dir.join(&n.name);
        fs::create_dir_all(nd.join("sock"))?;
        chown_to(&nd, &user)?;
        chown_to(&nd.join("sock"), &user)?;
        write_private(&n.config, &node_config(&dir, &n, etcd_port), &user)?;
        members.push(n);
    }
    for n in &members {
        let mut cmd = Command::new(&bin);
        cmd.arg("agent").arg(&n.config).env("RUST_LOG", "info");
        let log = dir.join(format!("{}.log", n.name));
        procs.0.push(spawn_logged(cmd, &log, &n.name, &user)?);
        say!(
            "{:<13} postgres 127.0.0.1:{}  REST API http://127.0.0.1:{}  (config: {}, log: {})",
            n.name,
            n.pg_port,
            n.api_port,
            n.config.display(),
            log.display()
        );
    }
    let proxy_yml = dir.join("proxy.yml");
    write_private(&proxy_yml, &proxy_config(etcd_port, &proxy_ports), &user)?;
    let mut cmd = Command::new(&bin);
    cmd.arg("proxy").arg("-c").arg(&proxy_yml).env("RUST_LOG", "info");
    procs.0.push(spawn_logged(cmd, &dir.join("proxy.log"), "proxy", &user)?);
    say!(
        "proxy         read-write 127.0.0.1:{}  read-only 127.0.0.1:{}  admin http://127.0.0.1:{}  (config: {}, log: {})",
        proxy_ports.rw,
        proxy_ports.ro,
        proxy_ports.admin,
        proxy_yml.display(),
        dir.join("proxy.log").display()
    );
    write_pids(&dir, &procs)?;

    let why = rt.block_on(watch_cluster(&members, &proxy_ports, &dir, etcd_port, nodes, &mut stop))?;

    say!("\n{why} received; stopping: the proxy, then the agents (each stops its PostgreSQL), then etcd");
    // Still listening: a second signal while stopping must not kill the demo halfway.
    procs.stop_all();
    say!("done; data and logs are kept in {}", dir.display());
    Ok(())
}

/// `<dir>/demo.pids`: `name pid` per line, for whoever must find what the demo started.
fn write_pids(dir: &Path, procs: &Procs) -> Result<()> {
    let text: String = procs.0.iter().map(|p| format!("{} {}\n", p.name, p.child.id())).collect();
    fs::write(dir.join("demo.pids"), text).context("writing demo.pids")
}

async fn read(dcs: &rampart_dcs::EtcdDcs) -> Option<Cluster> {
    dcs.read_cluster(tokio::time::Instant::now() + Duration::from_secs(3)).await.ok()
}

fn healthy(c: &Cluster, nodes: u8) -> bool {
    let Some(leader) = c.leader_member() else { return false };
    leader.data.state == PgState::Running
        && c.members.len() == nodes as usize
        && c.members
            .iter()
            .filter(|m| m.name != leader.name)
            .all(|m| m.data.replication_state.as_deref() == Some("streaming"))
}

/// Reports progress until a stop signal arrives; returns its name.
async fn watch_cluster(
    members: &[Node],
    proxy: &ProxyPorts,
    dir: &Path,
    etcd_port: u16,
    nodes: u8,
    stop: &mut StopSignals,
) -> Result<&'static str> {
    let opts = rampart_dcs::EtcdOptions {
        endpoints: vec![format!("http://127.0.0.1:{etcd_port}")],
        op_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let prefix = rampart_core::keys::ClusterPrefix::new("/service/", SCOPE);
    let dcs = tokio::select! {
        dcs = rampart_dcs::EtcdDcs::connect(opts, prefix, "demo-observer".into(), 30) => dcs?,
        why = stop.recv() => return Ok(why),
    };
    let started = Instant::now();
    let mut last = String::new();
    let mut became_healthy = false;
    loop {
        let status = match tokio::select! { c = read(&dcs) => c, why = stop.recv() => return Ok(why) } {
            Some(c) => {
                let line = describe(&c);
                if !became_healthy && healthy(&c, nodes) {
                    became_healthy = true;
                    say!("\ncluster healthy after {:.1}s\n", started.elapsed().as_secs_f64());
                    print_connection_info(members, proxy, &c);
                    say!("{}", crate::cli::list::render_table(SCOPE, &c).trim_end());
                    say!("\nTry: {} list -c {}", dir.join("rampart").display(), members[0].config.display());
                    say!("Press Ctrl-C to stop the cluster.");
                }
                line
            }
            None => "waiting for etcd".to_string(),
        };
        if status != last {
            say!("[{:>5.1}s] {status}", started.elapsed().as_secs_f64());
            last = status;
        }
        tokio::select! {
            why = stop.recv() => return Ok(why),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn describe(c: &Cluster) -> String {
    let leader = c.leader.as_ref().map(|l| l.name.as_str()).unwrap_or("none");
    let states: Vec<String> = c
        .members
        .iter()
        .map(|m| {
            format!(
                "{}={}",
                m.name,
                m.data
                    .replication_state
                    .clone()
                    .filter(|_| m.data.state == PgState::Running)
                    .unwrap_or_else(|| m.data.state.to_string())
            )
        })
        .collect();
    format!("leader: {leader}; members: {}", if states.is_empty() { "none yet".into() } else { states.join(", ") })
}

fn print_connection_info(members: &[Node], proxy: &ProxyPorts, c: &Cluster) {
    let hosts: Vec<String> = members.iter().map(|n| format!("127.0.0.1:{}", n.pg_port)).collect();
    say!("Connect (the password of user postgres is {SUPERUSER_PASSWORD}):");
    say!("  through rampart proxy, read-write (the leader): postgresql://postgres@127.0.0.1:{}/postgres", proxy.rw);
    say!("  through rampart proxy, read-only (replicas):    postgresql://postgres@127.0.0.1:{}/postgres", proxy.ro);
    say!("  the proxy's statistics:                         http://127.0.0.1:{}/stats", proxy.admin);
    say!(
        "  directly, read-write, follows failovers: postgresql://postgres@{}/postgres?target_session_attrs=read-write",
        hosts.join(",")
    );
    say!(
        "  directly, any replica:                   postgresql://postgres@{}/postgres?target_session_attrs=standby",
        hosts.join(",")
    );
    if let Some(l) = c.leader_member().and_then(|m| m.data.conn_host_port()) {
        say!("  the current leader:                      psql -h {} -p {} -U postgres", l.0, l.1);
    }
    say!();
}
