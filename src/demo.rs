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
//!
//! Ports, etcd's command line, the node configurations, the agents' user and directories and the
//! DCS reader come from `rampart-kit`, the same parts the e2e tests run a cluster with.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rampart_core::Cluster;
use rampart_core::PgState;
use rampart_kit::config::{Credentials, NodeConfig};
use rampart_kit::etcd::EtcdConfig;
use rampart_kit::user::{chown_to_agent_user, RunAs};
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
const NAMESPACE: &str = "/service/";
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

fn prepare_dir(dir: &Path) -> Result<()> {
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
    chown(dir)
}

/// Gives `path` to the agents' user (when we are root).
fn chown(path: &Path) -> Result<()> {
    chown_to_agent_user(path).with_context(|| format!("chown {}", path.display()))
}

/// Node `i`'s configuration: a Patroni-format file the demo writes for its agent.
fn node_config(dir: &Path, i: u8, etcd: &EtcdConfig) -> NodeConfig {
    let name = format!("node{i}");
    let mut c = NodeConfig::new(usize::from(i), &dir.join(&name), &format!("{}:{}", etcd.host, etcd.client_port))
        .scope(SCOPE)
        .namespace(NAMESPACE)
        .name(&name)
        .bin_dir(None);
    c.header = "Written by `rampart demo`: a Patroni-format configuration.".into();
    c.tags.clear();
    c.superuser = Credentials::new("postgres", SUPERUSER_PASSWORD);
    c.replication = Credentials::new("replicator", REPLICATION_PASSWORD);
    c
}

/// Must run on the main thread (see the module's invariants): the parent-death signal is tied to
/// the thread that forks. `user` is the agents' user, `None` for our own.
fn spawn_logged(mut cmd: Command, log: &Path, name: &str, user: Option<&RunAs>) -> Result<Proc> {
    let out = fs::File::create(log)?;
    if user.is_some() {
        chown(log)?;
    }
    cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    if let Some((uid, gid)) = user.and_then(|u| u.switch_to) {
        cmd.uid(uid).gid(gid).env("HOME", &user.expect("a user to switch to").home);
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
namespace: {NAMESPACE}
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
    let etcd_bin = find_program(&["/usr/bin/etcd", "/usr/local/bin/etcd"], "etcd", "etcd-server")?;
    find_program(&["/usr/lib/postgresql/15/bin/postgres"], "PostgreSQL 15", "postgresql-15")?;
    let user = rampart_kit::user::try_run_as().map_err(|e| anyhow!("{e}; install postgresql-15"))?;
    let dir = if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir()?.join(dir) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut stop = rt.block_on(async { StopSignals::install() })?;
    prepare_dir(&dir)?;

    // The agents run as `postgres` when we are root: give them a copy of this binary they can
    // execute even if ours sits in a directory they cannot enter.
    let bin = dir.join("rampart");
    fs::copy(std::env::current_exe()?, &bin).context("copying the rampart binary into the demo directory")?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;

    let etcd = EtcdConfig { bin: etcd_bin, ..EtcdConfig::loopback("demo-etcd", &dir.join("etcd")) };
    let etcd_port = etcd.client_port;
    let proxy_ports =
        ProxyPorts { rw: rampart_kit::free_port(), ro: rampart_kit::free_port(), admin: rampart_kit::free_port() };
    let mut procs = Procs::default();
    procs.0.push(spawn_logged(etcd.command(), &dir.join("etcd.log"), "etcd", None)?);
    say!("etcd          listening on 127.0.0.1:{etcd_port} (log: {})", dir.join("etcd.log").display());

    let mut members = Vec::new();
    for i in 1..=nodes {
        let config = node_config(&dir, i, &etcd);
        let path = dir.join(format!("{}.yml", config.name));
        config.write(&path).with_context(|| format!("writing {}", path.display()))?;
        members.push((config, path));
    }
    for (n, path) in &members {
        let mut cmd = Command::new(&bin);
        cmd.arg("agent").arg(path).env("RUST_LOG", "info");
        let log = dir.join(format!("{}.log", n.name));
        procs.0.push(spawn_logged(cmd, &log, &n.name, Some(user))?);
        say!(
            "{:<13} postgres 127.0.0.1:{}  REST API http://127.0.0.1:{}  (config: {}, log: {})",
            n.name,
            n.pg_port,
            n.api_port,
            path.display(),
            log.display()
        );
    }
    let proxy_yml = dir.join("proxy.yml");
    rampart_kit::config::write_private(&proxy_yml, &proxy_config(etcd_port, &proxy_ports))
        .with_context(|| format!("writing {}", proxy_yml.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("proxy").arg("-c").arg(&proxy_yml).env("RUST_LOG", "info");
    procs.0.push(spawn_logged(cmd, &dir.join("proxy.log"), "proxy", Some(user))?);
    say!(
        "proxy         read-write 127.0.0.1:{}  read-only 127.0.0.1:{}  admin http://127.0.0.1:{}  (config: {}, log: {})",
        proxy_ports.rw,
        proxy_ports.ro,
        proxy_ports.admin,
        proxy_yml.display(),
        dir.join("proxy.log").display()
    );
    write_pids(&dir, &procs)?;

    let why = rt.block_on(watch_cluster(&members, &proxy_ports, &dir, &etcd.endpoint(), nodes, &mut stop))?;

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
    members: &[(NodeConfig, PathBuf)],
    proxy: &ProxyPorts,
    dir: &Path,
    etcd: &str,
    nodes: u8,
    stop: &mut StopSignals,
) -> Result<&'static str> {
    let dcs = tokio::select! {
        dcs = rampart_kit::dcs::Reader::connect(etcd, NAMESPACE, SCOPE) => dcs?,
        why = stop.recv() => return Ok(why),
    };
    let started = Instant::now();
    let mut last = String::new();
    let mut became_healthy = false;
    loop {
        let status = match tokio::select! { c = dcs.cluster() => c, why = stop.recv() => return Ok(why) } {
            Some(c) => {
                let line = describe(&c);
                if !became_healthy && healthy(&c, nodes) {
                    became_healthy = true;
                    say!("\ncluster healthy after {:.1}s\n", started.elapsed().as_secs_f64());
                    print_connection_info(members, proxy, &c);
                    say!("{}", crate::cli::list::render_table(SCOPE, &c).trim_end());
                    say!("\nTry: {} list -c {}", dir.join("rampart").display(), members[0].1.display());
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

fn print_connection_info(members: &[(NodeConfig, PathBuf)], proxy: &ProxyPorts, c: &Cluster) {
    let hosts: Vec<String> = members.iter().map(|(n, _)| format!("127.0.0.1:{}", n.pg_port)).collect();
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
