//! `rampart demo`: a whole cluster on this machine — etcd plus N PostgreSQL nodes, each with its
//! own `rampart agent` — in one working directory, until Ctrl-C.
//!
//! The demo uses exactly what an operator would: the agent binary, Patroni-format config files
//! (written to the working directory for reading), a real etcd. It prints progress until the
//! cluster is healthy (one leader, every replica streaming), then the connection strings and the
//! member table. On Ctrl-C it stops every agent with SIGTERM (each stops its PostgreSQL cleanly)
//! and then etcd; it only ever signals processes it started, by PID.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rampart_core::Cluster;
use rampart_dcs::Dcs;

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
            eprintln!("{} did not stop within {:?}; killing it", self.name, grace);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(30));
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
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    Ok(Proc { name: name.to_string(), child })
}

/// Runs the demo until Ctrl-C.
pub fn run(dir: &Path, nodes: u8) -> Result<()> {
    let etcd = find_program(&["/usr/bin/etcd", "/usr/local/bin/etcd"], "etcd", "etcd-server")?;
    find_program(&["/usr/lib/postgresql/15/bin/postgres"], "PostgreSQL 15", "postgresql-15")?;
    let user = agent_user()?;
    let dir = if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir()?.join(dir) };
    prepare_dir(&dir, &user)?;

    // The agents run as `postgres` when we are root: give them a copy of this binary they can
    // execute even if ours sits in a directory they cannot enter.
    let bin = dir.join("rampart");
    fs::copy(std::env::current_exe()?, &bin).context("copying the rampart binary into the demo directory")?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;

    let ports = free_ports(2 + 2 * usize::from(nodes))?;
    let (etcd_port, etcd_peer) = (ports[0], ports[1]);
    let mut procs: Vec<Proc> = Vec::new();
    let mut cmd = Command::new(&etcd);
    cmd.args(["--name", "demo-etcd", "--data-dir"])
        .arg(dir.join("etcd"))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"))
        .arg(format!("--initial-cluster=demo-etcd=http://127.0.0.1:{etcd_peer}"));
    procs.push(spawn_logged(cmd, &dir.join("etcd.log"), "etcd", &None)?);
    println!("etcd          listening on 127.0.0.1:{etcd_port} (log: {})", dir.join("etcd.log").display());

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
        fs::write(&n.config, node_config(&dir, &n, etcd_port))?;
        chown_to(&n.config, &user)?;
        members.push(n);
    }
    for n in &members {
        let mut cmd = Command::new(&bin);
        cmd.arg("agent").arg(&n.config).env("RUST_LOG", "info");
        let log = dir.join(format!("{}.log", n.name));
        procs.push(spawn_logged(cmd, &log, &n.name, &user)?);
        println!(
            "{:<13} postgres 127.0.0.1:{}  REST API http://127.0.0.1:{}  (config: {}, log: {})",
            n.name,
            n.pg_port,
            n.api_port,
            n.config.display(),
            log.display()
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(watch_cluster(&members, &dir, etcd_port, nodes))?;

    println!("\nstopping: agents first (each stops its PostgreSQL), then etcd");
    // Agents in reverse start order, etcd (started first) last.
    while let Some(mut p) = procs.pop() {
        p.terminate(Duration::from_secs(60));
        println!("  {} stopped", p.name);
    }
    println!("done; data and logs are kept in {}", dir.display());
    Ok(())
}

async fn read(dcs: &rampart_dcs::EtcdDcs) -> Option<Cluster> {
    dcs.read_cluster(tokio::time::Instant::now() + Duration::from_secs(3)).await.ok()
}

fn healthy(c: &Cluster, nodes: u8) -> bool {
    let Some(leader) = c.leader_member() else { return false };
    leader.data.state == "running"
        && c.members.len() == nodes as usize
        && c.members
            .iter()
            .filter(|m| m.name != leader.name)
            .all(|m| m.data.replication_state.as_deref() == Some("streaming"))
}

async fn watch_cluster(members: &[Node], dir: &Path, etcd_port: u16, nodes: u8) -> Result<()> {
    let opts = rampart_dcs::EtcdOptions {
        endpoints: vec![format!("http://127.0.0.1:{etcd_port}")],
        op_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let prefix = rampart_core::keys::ClusterPrefix::new("/service/", SCOPE);
    let dcs = rampart_dcs::EtcdDcs::connect(opts, prefix, "demo-observer".into(), 30).await?;
    let started = Instant::now();
    let mut last = String::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut became_healthy = false;
    loop {
        let status = match read(&dcs).await {
            Some(c) => {
                let line = describe(&c);
                if !became_healthy && healthy(&c, nodes) {
                    became_healthy = true;
                    println!("\ncluster healthy after {:.1}s\n", started.elapsed().as_secs_f64());
                    print_connection_info(members, &c);
                    print!("{}", crate::cli::list::render_table(SCOPE, &c));
                    println!("\nTry: {} list -c {}", dir.join("rampart").display(), members[0].config.display());
                    println!("Press Ctrl-C to stop the cluster.");
                }
                line
            }
            None => "waiting for etcd".to_string(),
        };
        if status != last {
            println!("[{:>5.1}s] {status}", started.elapsed().as_secs_f64());
            last = status;
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
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
                m.data.replication_state.clone().filter(|_| m.data.state == "running").unwrap_or(m.data.state.clone())
            )
        })
        .collect();
    format!("leader: {leader}; members: {}", if states.is_empty() { "none yet".into() } else { states.join(", ") })
}

fn print_connection_info(members: &[Node], c: &Cluster) {
    let hosts: Vec<String> = members.iter().map(|n| format!("127.0.0.1:{}", n.pg_port)).collect();
    println!("Connect (the password of user postgres is {SUPERUSER_PASSWORD}):");
    println!(
        "  read-write, follows failovers: postgresql://postgres@{}/postgres?target_session_attrs=read-write",
        hosts.join(",")
    );
    println!(
        "  any replica:                   postgresql://postgres@{}/postgres?target_session_attrs=standby",
        hosts.join(",")
    );
    if let Some(l) = c.leader_member().and_then(|m| m.data.conn_host_port()) {
        println!("  current leader:                psql -h {} -p {} -U postgres", l.0, l.1);
    }
    println!();
}
