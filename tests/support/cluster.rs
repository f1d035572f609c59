//! A whole test cluster: its etcd (one member or three, its own or shared with other clusters
//! through [`SharedEtcd`]), n node configurations and n agents in one [`TestDir`].
//!
//! By default everything runs on 127.0.0.1. [`ClusterOptions::in_namespaces`] puts etcd, each
//! node and a client on hosts of their own ([`super::netns`]): the nodes listen on their host's
//! address and the agents keep the network capabilities of a virtual IP. The test itself reaches
//! every host through the bridge, so the helpers here that take a node index ([`Cluster::http`],
//! [`Cluster::connect_superuser`], ...) work either way; the port-only helpers of
//! [`super::client`] reach 127.0.0.1 only.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use super::agent::Agent;
use super::client::{HttpResponse, HTTP_TIMEOUT};
use super::config::NodeConfig;
use super::dir::TestDir;
use super::etcd::Etcd;
use super::netns::{Host, Net, INTERFACE, PREFIX_LEN};
use super::process::AmbientCaps;

/// How [`Cluster::start`] sets the cluster up.
pub struct ClusterOptions {
    /// The agent binary; defaults to the `rampart` Cargo built for this test.
    pub bin: PathBuf,
    pub scope: String,
    pub namespace: String,
    /// Default 10/1/3: fast failover, still `loop_wait + 2 * retry_timeout <= ttl`.
    pub ttl: u64,
    pub loop_wait: u64,
    pub retry_timeout: u64,
    pub maximum_lag_on_failover: u64,
    pub use_pg_rewind: bool,
    /// Start the agents (default). When false only etcd runs and configs are written; use
    /// [`Cluster::start_agent`].
    pub start_agents: bool,
    /// Pause between starting consecutive agents (default: none, they race for initialization).
    pub stagger: Duration,
    /// Called for every node's configuration before it is written.
    pub tweak: Option<Box<dyn Fn(usize, NodeConfig) -> NodeConfig>>,
    /// Hosts of their own for etcd (`etcd`), each node (`node<i>`) and a client (`client`).
    pub namespaces: bool,
    /// A `vip` section in every node's configuration (implies `namespaces`).
    pub vip: bool,
    /// Further hosts, by label (with `namespaces`): machines on the LAN that run no member, such
    /// as proxies' hosts.
    pub extra_hosts: Vec<String>,
    /// etcd members: 1, or 3 as seeds 002 and 003 run it (each on a host of its own, `etcd`,
    /// `etcd1`, `etcd2`, with `namespaces`). Default: `RAMPART_ETCD_MEMBERS`, else 1, so that
    /// any scenario can be run against a three-member etcd unchanged.
    pub etcd_members: usize,
    /// etcd's client URLs with TLS and client certificates (on loopback only), and every node's
    /// `etcd3` section with `protocol: https` and the CA and client certificate, readable by the
    /// agent's user.
    pub etcd_tls: bool,
    /// An etcd this cluster shares with others (each under its own scope), as production
    /// clusters share one; `etcd_members` is then ignored. On loopback only.
    pub shared_etcd: Option<Arc<SharedEtcd>>,
}

/// etcd members started once for several [`Cluster`]s: they stop when the last cluster (or the
/// caller's handle) lets go of them.
pub struct SharedEtcd {
    members: Vec<Etcd>,
    // Declared last: removed after the members have stopped.
    dir: TestDir,
}

impl SharedEtcd {
    /// `members` etcd members on loopback, healthy when this returns.
    pub fn start(members: usize) -> Arc<SharedEtcd> {
        let dir = TestDir::new("shared-etcd");
        let members = match members {
            1 => vec![Etcd::start_in(&dir.join("etcd"))],
            n => Etcd::start_members(dir.path(), &vec![(Ipv4Addr::LOCALHOST, None); n]),
        };
        Arc::new(SharedEtcd { members, dir })
    }

    /// Every member, the first one first.
    pub fn members(&self) -> &[Etcd] {
        &self.members
    }
}

/// The etcd a [`Cluster`] talks to.
enum ClusterEtcd {
    /// Started for this cluster alone (the first member first); stopped with it.
    Own(Vec<Etcd>),
    /// Shared with other clusters: never stopped or restarted through one of them.
    Shared(Arc<SharedEtcd>),
}

impl ClusterEtcd {
    fn members(&self) -> &[Etcd] {
        match self {
            ClusterEtcd::Own(members) => members,
            ClusterEtcd::Shared(shared) => shared.members(),
        }
    }

    /// The members, to stop or restart them: only a cluster's own etcd.
    fn own_mut(&mut self) -> &mut [Etcd] {
        match self {
            ClusterEtcd::Own(members) => members,
            ClusterEtcd::Shared(_) => panic!("this cluster shares its etcd with other clusters: it cannot stop it"),
        }
    }
}

/// The etcd members a cluster gets by default: `RAMPART_ETCD_MEMBERS` (1 or 3), else 1.
pub fn default_etcd_members() -> usize {
    match std::env::var("RAMPART_ETCD_MEMBERS").ok().as_deref().map(str::trim) {
        None | Some("") | Some("1") => 1,
        Some("3") => 3,
        Some(other) => panic!("RAMPART_ETCD_MEMBERS={other}: expected 1 or 3"),
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            bin: super::rampart_bin(),
            scope: "postgres".into(),
            namespace: "/db/".into(),
            ttl: 10,
            loop_wait: 1,
            retry_timeout: 3,
            maximum_lag_on_failover: 1_048_576,
            use_pg_rewind: true,
            start_agents: true,
            stagger: Duration::ZERO,
            tweak: None,
            namespaces: false,
            vip: false,
            extra_hosts: Vec::new(),
            etcd_members: default_etcd_members(),
            etcd_tls: false,
            shared_etcd: None,
        }
    }
}

impl ClusterOptions {
    /// Sets the per-node configuration hook.
    pub fn tweak(mut self, f: impl Fn(usize, NodeConfig) -> NodeConfig + 'static) -> Self {
        self.tweak = Some(Box::new(f));
        self
    }

    /// Every process on a host of its own (see the module header). Panics at start when network
    /// namespaces cannot be made.
    pub fn in_namespaces(mut self) -> Self {
        self.namespaces = true;
        self
    }

    /// [`ClusterOptions::in_namespaces`], and every node configured with the virtual IP
    /// [`Cluster::vip`] (`vip: {ip: 10.77.<n>.100, netmask: 24, interface: eth0}`), before the
    /// tweak is called. Every node's PostgreSQL listens on all its host's addresses on one port
    /// ([`Cluster::vip_port`]), so the virtual IP reaches whichever host has it.
    pub fn with_vip(mut self) -> Self {
        self.namespaces = true;
        self.vip = true;
        self
    }

    /// [`ClusterOptions::in_namespaces`], with further hosts labelled `labels` (each a machine of
    /// its own on the LAN; `Cluster::net().host(label)`).
    pub fn with_hosts(mut self, labels: &[&str]) -> Self {
        self.namespaces = true;
        self.extra_hosts.extend(labels.iter().map(|l| l.to_string()));
        self
    }
}

/// One member of a [`Cluster`].
#[derive(Debug)]
pub struct Node {
    pub config: NodeConfig,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// Extra environment of the agent (and so of its PostgreSQL and the commands it runs), from
    /// the next [`Cluster::start_agent`] on.
    pub agent_env: Vec<(String, String)>,
    pub agent: Option<Agent>,
}

/// etcd plus n agents. Dropping it kills every agent first (so none restarts PostgreSQL), then
/// every postmaster, then etcd, then removes the directory. If the test is panicking, the logs are
/// dumped first.
pub struct Cluster {
    bin: PathBuf,
    nodes: Vec<Node>,
    /// Made on first use by [`Cluster::dcs`].
    dcs: std::sync::OnceLock<rampart_kit::dcs::BlockingReader>,
    /// One member by default, [`ClusterOptions::etcd_members`] or the shared ones.
    etcd: ClusterEtcd,
    /// The hosts, with [`ClusterOptions::in_namespaces`]; removed once etcd has stopped.
    net: Option<Net>,
    vip: Option<Ipv4Addr>,
    // Declared last: dropped after everything that lives in it.
    dir: TestDir,
}

impl Cluster {
    /// Starts etcd, writes `n` node configs (`<dir>/node<i>/rampart.yml`) and, unless
    /// `options.start_agents` is false, starts the `n` agents. Does not wait for PostgreSQL.
    pub fn start(n: usize, options: ClusterOptions) -> Cluster {
        let dir = TestDir::new("cluster");
        let net = options.namespaces.then(|| {
            let labels: Vec<String> = ["etcd".to_string()]
                .into_iter()
                .chain((0..n).map(node_label))
                .chain(["client".to_string()])
                .chain(options.extra_hosts.iter().cloned())
                .chain((1..options.etcd_members).map(|i| format!("etcd{i}")))
                .collect();
            Net::require(dir.path(), &labels.iter().map(String::as_str).collect::<Vec<_>>())
        });
        let etcd = match (&net, options.etcd_members, options.shared_etcd) {
            (Some(_), _, _) if options.etcd_tls => panic!("etcd with TLS runs on loopback only"),
            (None, members, None) if options.etcd_tls => {
                ClusterEtcd::Own(Etcd::start_tls_members(&dir.subdir("etcd"), members))
            }
            (None, _, Some(_)) if options.etcd_tls => panic!("a shared etcd has no TLS"),
            (None, _, Some(shared)) => ClusterEtcd::Shared(shared),
            (Some(_), _, Some(_)) => panic!("a cluster in network namespaces cannot share an etcd on loopback"),
            (Some(net), 1, None) => {
                let host = net.host("etcd");
                ClusterEtcd::Own(vec![Etcd::start_at(
                    &dir.join("etcd"),
                    host.addr,
                    super::free_port(),
                    host.netns.as_deref(),
                )])
            }
            (None, 1, None) => ClusterEtcd::Own(vec![Etcd::start_in(&dir.join("etcd"))]),
            (net, members, None) => {
                let hosts: Vec<_> = (0..members)
                    .map(|i| match net {
                        Some(net) => {
                            let h = net.host(&if i == 0 { "etcd".to_string() } else { format!("etcd{i}") });
                            (h.addr, h.netns.clone())
                        }
                        None => (std::net::Ipv4Addr::LOCALHOST, None),
                    })
                    .collect();
                ClusterEtcd::Own(Etcd::start_members(&dir.join("etcd"), &hosts))
            }
        };
        let etcd_hosts = etcd.members().iter().map(Etcd::host).collect::<Vec<_>>().join(",");
        let etcd_tls = etcd.members()[0].tls().cloned();
        if let Some(tls) = &etcd_tls {
            // The agents run as the agent user, who must read the client's key.
            for file in [&tls.ca, &tls.client_cert, &tls.client_key] {
                let _ = rampart_kit::user::chown_to_agent_user(file);
            }
        }
        let vip = net.as_ref().filter(|_| options.vip).map(Net::spare_addr);
        // One port on every host: each host is a machine of its own.
        let vip_port = super::free_port();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let node_dir = dir.subdir(format!("node{i}"));
            let mut config = NodeConfig::new(i, &node_dir, &etcd_hosts)
                .scope(&options.scope)
                .namespace(&options.namespace)
                .timing(options.ttl, options.loop_wait, options.retry_timeout)
                .maximum_lag_on_failover(options.maximum_lag_on_failover)
                .use_pg_rewind(options.use_pg_rewind);
            if let Some(net) = &net {
                config = config.host(&net.host(&node_label(i)).addr.to_string(), &net.cidr);
            }
            if let Some(tls) = &etcd_tls {
                config = config
                    .etcd_setting("protocol", "https")
                    .etcd_setting("cacert", &tls.ca.display().to_string())
                    .etcd_setting("cert", &tls.client_cert.display().to_string())
                    .etcd_setting("key", &tls.client_key.display().to_string());
            }
            if let Some(vip) = vip {
                config.pg_port = vip_port;
                config.listen_all = true;
                config
                    .extra_yaml
                    .push_str(&format!("vip:\n  ip: {vip}\n  netmask: {PREFIX_LEN}\n  interface: {INTERFACE}\n"));
            }
            if let Some(tweak) = &options.tweak {
                config = tweak(i, config);
            }
            let config_path = node_dir.join("rampart.yml");
            config.write(&config_path).unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
            nodes.push(Node {
                config,
                config_path,
                log_path: node_dir.join("agent.log"),
                agent_env: Vec::new(),
                agent: None,
            });
        }
        let mut cluster = Cluster { bin: options.bin, nodes, dcs: std::sync::OnceLock::new(), etcd, net, vip, dir };
        if options.start_agents {
            for i in 0..n {
                if i > 0 && !options.stagger.is_zero() {
                    std::thread::sleep(options.stagger);
                }
                cluster.start_agent(i);
            }
        }
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].config.name
    }

    /// Index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.config.name == name)
    }

    pub fn pg_port(&self, i: usize) -> u16 {
        self.nodes[i].config.pg_port
    }

    pub fn api_port(&self, i: usize) -> u16 {
        self.nodes[i].config.api_port
    }

    /// The address node `i` listens on: 127.0.0.1, or its host's in namespaces.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        let host = &self.nodes[i].config.host;
        host.parse().unwrap_or_else(|e| panic!("node {i}'s host {host}: {e}"))
    }

    /// The hosts; panics unless the cluster runs [`ClusterOptions::in_namespaces`].
    pub fn net(&self) -> &Net {
        self.net.as_ref().expect("the cluster does not run in network namespaces")
    }

    /// Node `i`'s host (in namespaces).
    pub fn host(&self, i: usize) -> &Host {
        self.net().host(&node_label(i))
    }

    /// The client's host (in namespaces): a machine on the nodes' LAN that is no member.
    pub fn client(&self) -> &Host {
        self.net().host("client")
    }

    /// The virtual IP of [`ClusterOptions::with_vip`].
    pub fn vip(&self) -> Ipv4Addr {
        self.vip.expect("the cluster was not started with_vip")
    }

    /// The port every node's PostgreSQL listens on with [`ClusterOptions::with_vip`].
    pub fn vip_port(&self) -> u16 {
        self.vip.expect("the cluster was not started with_vip");
        self.pg_port(0)
    }

    /// `method path` on node `i`'s REST API (`body` sent as JSON), waiting up to `timeout`.
    pub fn http_with_timeout(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> std::io::Result<HttpResponse> {
        super::client::http_request_at(self.addr(i), self.api_port(i), method, path, body, timeout)
    }

    /// [`Cluster::http_with_timeout`] with the usual timeout.
    pub fn http(&self, i: usize, method: &str, path: &str, body: Option<&str>) -> std::io::Result<HttpResponse> {
        self.http_with_timeout(i, method, path, body, HTTP_TIMEOUT)
    }

    /// Status code of `method path` on node `i`'s REST API; 0 without an HTTP response.
    pub fn http_status(&self, i: usize, method: &str, path: &str) -> u16 {
        self.http(i, method, path, None).map(|r| r.status).unwrap_or(0)
    }

    /// `GET path` on node `i`'s REST API parsed as JSON, whatever the status code.
    pub fn get_json(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        self.http(i, "GET", path, None).ok()?.json()
    }

    /// A superuser connection to node `i`'s PostgreSQL (from the test's own namespace).
    pub async fn connect_superuser(&self, i: usize) -> Result<Client, tokio_postgres::Error> {
        super::client::connect_at(
            &self.addr(i).to_string(),
            self.pg_port(i),
            super::SUPERUSER,
            super::SUPERUSER_PASSWORD,
        )
        .await
    }

    /// A superuser connection to `addr:port` made from the client's host (in namespaces), as an
    /// application on the LAN would connect, e.g. to [`Cluster::vip`]. The TCP connection is
    /// bounded by 5 s.
    pub async fn connect_from_client(&self, addr: Ipv4Addr, port: u16) -> Result<Client, String> {
        connect_from(self.client().clone(), addr, port).await
    }

    pub fn config_path(&self, i: usize) -> &Path {
        &self.nodes[i].config_path
    }

    pub fn log_path(&self, i: usize) -> &Path {
        &self.nodes[i].log_path
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes[i].config.data_dir
    }

    pub fn etcd(&self) -> &Etcd {
        &self.etcd.members()[0]
    }

    /// The first etcd member, to stop or restart it (not a shared etcd's).
    pub fn etcd_mut(&mut self) -> &mut Etcd {
        &mut self.etcd.own_mut()[0]
    }

    /// Every etcd member, the first one first.
    pub fn etcd_members(&self) -> impl Iterator<Item = &Etcd> {
        self.etcd.members().iter()
    }

    /// Freezes every etcd member (SIGSTOP): etcd as a whole hangs.
    pub fn freeze_etcd(&self) {
        self.etcd_members().for_each(Etcd::freeze);
    }

    /// Undoes [`Cluster::freeze_etcd`].
    pub fn thaw_etcd(&self) {
        self.etcd_members().for_each(Etcd::thaw);
    }

    /// Kills every etcd member: etcd as a whole is gone (data kept).
    pub fn stop_etcd(&mut self) {
        self.etcd.own_mut().iter_mut().for_each(Etcd::stop);
    }

    /// Starts every etcd member again after [`Cluster::stop_etcd`] and waits until all are
    /// healthy (a member of several is healthy only once a quorum runs: all start first).
    pub fn start_etcd_again(&mut self) {
        Etcd::start_together(self.etcd.own_mut().iter_mut());
    }

    /// etcd member `i` (0 is [`Cluster::etcd`]), to stop or restart it (not a shared etcd's).
    pub fn etcd_member_mut(&mut self, i: usize) -> &mut Etcd {
        &mut self.etcd.own_mut()[i]
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keep the cluster directory after the test.
    pub fn keep_dir(&mut self) {
        self.dir.keep();
    }

    /// The DCS prefix, e.g. `/db/postgres/`.
    pub fn dcs_prefix(&self) -> String {
        self.nodes.first().map(|n| n.config.dcs_prefix()).unwrap_or_default()
    }

    /// The cluster's keys read through `rampart_dcs` (one connection, kept): cheap enough to poll
    /// every few milliseconds, unlike [`Cluster::leader_name`]'s etcdctl.
    pub fn dcs(&self) -> &rampart_kit::dcs::BlockingReader {
        self.dcs.get_or_init(|| {
            let first = &self.nodes.first().expect("a cluster has nodes").config;
            let endpoint = self.etcd().endpoint();
            rampart_kit::dcs::BlockingReader::connect(&endpoint, &first.namespace, &first.scope)
                .unwrap_or_else(|e| panic!("reading the DCS at {endpoint}: {e}"))
        })
    }

    /// The agent of node `i`; panics if it was never started.
    pub fn agent(&self, i: usize) -> &Agent {
        self.nodes[i].agent.as_ref().unwrap_or_else(|| panic!("agent {i} was not started"))
    }

    pub fn agent_mut(&mut self, i: usize) -> &mut Agent {
        self.nodes[i].agent.as_mut().unwrap_or_else(|| panic!("agent {i} was not started"))
    }

    /// Starts node `i`'s agent (with the node's `agent_env`). A previous handle is killed (agent
    /// only) and replaced; the new agent inherits responsibility for the running postmaster, if any.
    pub fn start_agent(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut old) = node.agent.take() {
            old.kill_agent_tree();
            old.disown_postmaster();
        }
        let env: Vec<(&str, &str)> = node.agent_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // In namespaces the agent gets what a virtual IP needs, as systemd's unit would give it.
        let (netns, caps) = match &self.net {
            Some(net) => (net.host(&node_label(i)).netns.as_deref(), AmbientCaps::Net),
            None => (None, AmbientCaps::None),
        };
        node.agent = Some(Agent::start_in_netns(&self.bin, &node.config_path, &node.log_path, &env, netns, caps));
    }

    /// SIGKILLs node `i`'s agent alone; PostgreSQL keeps running. The handle is kept, so the
    /// postmaster is still stopped when the cluster is dropped.
    pub fn kill_agent(&mut self, i: usize) {
        self.agent_mut(i).sigkill();
    }

    /// SIGTERMs node `i`'s agent and waits up to `timeout` for it to exit; true if it did.
    pub fn stop_agent(&mut self, i: usize, timeout: Duration) -> bool {
        let agent = self.agent_mut(i);
        agent.sigterm();
        agent.wait_exit(timeout).is_some()
    }

    /// SIGKILLs node `i`'s postmaster (a PostgreSQL crash); returns its PID.
    pub fn kill_postgres(&self, i: usize) -> Option<u32> {
        self.agent(i).kill_postmaster()
    }

    /// SIGKILLs node `i`'s postmaster and all its backends, and waits until they are gone: its
    /// PostgreSQL is down at once, with no orphan backend left to answer; returns the PID.
    pub fn crash_postgres(&self, i: usize) -> Option<u32> {
        self.agent(i).kill_postmaster_tree()
    }

    /// Name of the leader according to the DCS leader key, if any, as the first etcd member
    /// that answers has it.
    pub fn leader_name(&self) -> Option<String> {
        let key = format!("{}leader", self.dcs_prefix());
        self.etcd_members().find_map(|e| e.try_get(&key).ok()).flatten().filter(|v| !v.is_empty())
    }

    /// Index of the leader according to the DCS leader key, if any.
    pub fn leader_index(&self) -> Option<usize> {
        self.leader_name().and_then(|n| self.index_of(&n))
    }

    /// Waits until the DCS names a leader that is one of our nodes.
    pub fn wait_for_leader(&self, timeout: Duration) -> Option<usize> {
        let mut found = None;
        super::wait_until(timeout, Duration::from_millis(200), || {
            found = self.leader_index();
            found.is_some()
        });
        found
    }

    /// Nodes whose REST API answers `GET path` with `status` (e.g. `/primary`, 200).
    pub fn nodes_answering(&self, path: &str, status: u16) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.http_status(i, "GET", path) == status).collect()
    }

    /// Nodes whose PostgreSQL answers `pg_is_in_recovery()` with `false`.
    pub async fn primaries_by_sql(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for i in 0..self.len() {
            let Ok(db) = self.connect_superuser(i).await else { continue };
            if super::query_one_bool(&db, "SELECT pg_is_in_recovery()").await.ok() == Some(false) {
                out.push(i);
            }
        }
        out
    }

    /// Waits until exactly one node is a primary by SQL; returns it.
    pub async fn wait_for_single_primary(&self, timeout: Duration) -> Option<usize> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let p = self.primaries_by_sql().await;
            if p.len() == 1 {
                return Some(p[0]);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `patronictl -c <node 0's config> <args>`.
    pub fn patronictl(&self, args: &[&str]) -> std::process::Output {
        super::patronictl(self.config_path(0), args)
    }

    /// `<agent binary> <args>`, e.g. `["list", "-c", path]` as `OsStr`s.
    pub fn rampart<I, S>(&self, args: I) -> std::process::Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        std::process::Command::new(&self.bin)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()))
    }

    /// Prints the last lines of etcd's log and of every agent and PostgreSQL log to stderr.
    pub fn dump_logs(&self) {
        let lines = super::log_tail_lines();
        let mut out = String::new();
        out.push_str(&format!("\n===== [harness] logs of cluster in {} =====\n", self.dir().display()));
        for node in &self.nodes {
            out.push_str(&format!(
                "----- node {} ({}): agent log {} -----\n{}\n",
                node.config.index,
                node.config.name,
                node.log_path.display(),
                super::tail_file(&node.log_path, lines)
            ));
            for pg_log in postgres_logs(&node.config) {
                out.push_str(&format!(
                    "----- node {} ({}): postgres log {} -----\n{}\n",
                    node.config.index,
                    node.config.name,
                    pg_log.display(),
                    super::tail_file(&pg_log, lines)
                ));
            }
        }
        for etcd in self.etcd_members() {
            out.push_str(&format!(
                "----- etcd log {} -----\n{}\n",
                etcd.log_path().display(),
                super::tail_file(&etcd.log_path(), lines.min(20))
            ));
        }
        out.push_str("===== [harness] end of logs =====\n");
        eprint!("{out}");
    }
}

/// A superuser connection to `addr:port` made from `host` (a namespace of a [`Net`]); the TCP
/// connection is bounded by 5 s.
pub async fn connect_from(host: Host, addr: Ipv4Addr, port: u16) -> Result<Client, String> {
    let (to, label) = (SocketAddr::from((addr, port)), host.label.clone());
    let stream = tokio::task::spawn_blocking(move || host.tcp_connect(to, Duration::from_secs(5)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("connecting to {to} from host {label}: {e}"))?;
    super::client::connect_over(stream, super::SUPERUSER, super::SUPERUSER_PASSWORD)
        .await
        .map_err(|e| format!("PostgreSQL at {to}: {e}"))
}

/// The host label of node `i`.
fn node_label(i: usize) -> String {
    format!("node{i}")
}

/// Likely PostgreSQL server logs of a node: `*.log` files in the node directory other than the
/// agent log (rampart-pg writes `<name>-postgres.log` beside the data directory),
/// `<data_dir>/postgres.log`, and the two newest files of `<data_dir>/log` and `<data_dir>/pg_log`
/// (where `logging_collector` writes).
fn postgres_logs(config: &NodeConfig) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&config.node_dir) {
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log") && p.file_name().is_some_and(|n| n != "agent.log"))
            .collect();
        files.sort();
        out.extend(files);
    }
    let inside = config.data_dir.join("postgres.log");
    if inside.is_file() {
        out.push(inside);
    }
    for sub in ["log", "pg_log"] {
        if let Ok(rd) = std::fs::read_dir(config.data_dir.join(sub)) {
            let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
                .flatten()
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .filter(|(_, p)| p.is_file())
                .collect();
            files.sort();
            let skip = files.len().saturating_sub(2);
            out.extend(files.into_iter().skip(skip).map(|(_, p)| p));
        }
    }
    out
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        // Agents first, all of them, so that no agent restarts a PostgreSQL we are stopping.
        for node in &mut self.nodes {
            if let Some(agent) = node.agent.as_mut() {
                agent.kill_agent_tree();
            }
        }
        for node in &mut self.nodes {
            if let Some(mut agent) = node.agent.take() {
                agent.kill_all();
            }
        }
        // Then etcd, the namespaces and the directory, in field order.
        if !std::thread::panicking() {
            self.assert_no_password_in_logs();
        }
    }
}

impl Cluster {
    /// `POST /switchover` from node `leader` to node `candidate` on the leader's REST API,
    /// waiting up to `timeout` for the answer (the agent answers once the switchover is done).
    pub fn request_switchover(
        &self,
        leader: usize,
        candidate: usize,
        timeout: std::time::Duration,
    ) -> super::client::HttpResponse {
        let body = format!(r#"{{"leader": "{}", "candidate": "{}"}}"#, self.name(leader), self.name(candidate));
        self.http_with_timeout(leader, "POST", "/switchover", Some(&body), timeout).expect("POST /switchover")
    }

    /// Secrets never reach logs: no agent or PostgreSQL log of this cluster contains a configured
    /// password. Checked when every cluster is torn down after a passing test.
    pub fn assert_no_password_in_logs(&self) {
        for node in &self.nodes {
            let mut files = vec![node.log_path.clone()];
            files.extend(postgres_logs(&node.config));
            for f in files {
                let Ok(text) = std::fs::read_to_string(&f) else { continue };
                for secret in [super::SUPERUSER_PASSWORD, super::REPLICATION_PASSWORD] {
                    assert!(!text.contains(secret), "{} contains a configured password", f.display());
                }
            }
        }
    }
}
