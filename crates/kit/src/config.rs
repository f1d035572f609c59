//! Patroni-format YAML configuration for one local node: what `rampart agent` reads, written the
//! same way for the demo and the e2e tests.
//!
//! Modelled on the configuration in seed 000 (the Patroni + HAProxy guide: scope, namespace, name,
//! restapi, etcd3, bootstrap.dcs/initdb/pg_hba, postgresql, tags) with every address moved to
//! 127.0.0.1, every port chosen by [`crate::free_port`] and every path inside the node directory.
//! The file holds passwords: it is written with mode 0600, owned by the agent's user.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::user::chown_to_agent_user;

/// Superuser credentials the e2e tests' configurations carry (the demo sets its own).
pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "secretpassword";
/// Replication credentials the e2e tests' configurations carry.
pub const REPLICATION_USER: &str = "replicator";
pub const REPLICATION_PASSWORD: &str = "rep-pass";

/// Directory holding `initdb`, `pg_ctl`, `postgres`, ... (`RAMPART_PG_BIN_DIR` overrides).
pub fn pg_bin_dir() -> PathBuf {
    match std::env::var_os("RAMPART_PG_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/usr/lib/postgresql/15/bin"),
    }
}

/// A PostgreSQL role's name and password, as `postgresql.authentication.<role>` holds them.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: &str, password: &str) -> Credentials {
        Credentials { username: username.into(), password: password.into() }
    }
}

/// Configuration of node `index`, rendered by [`NodeConfig::to_yaml`].
/// Fields are public so tests can read them; the setters exist for chaining.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub index: usize,
    /// The comment on the file's first line (who wrote it).
    pub header: String,
    pub scope: String,
    pub namespace: String,
    pub name: String,
    /// The address PostgreSQL and the REST API listen on (127.0.0.1, or the node's own address in
    /// a network namespace of the chaos suite).
    pub host: String,
    /// The network pg_hba admits TCP clients and replicas from (`127.0.0.1/32` by default).
    pub client_net: String,
    pub api_port: u16,
    pub pg_port: u16,
    /// PostgreSQL listens on every address of its host (`postgresql.listen: 0.0.0.0:<pg_port>`),
    /// so a virtual IP the host takes reaches it too; `connect_address` stays `host`.
    pub listen_all: bool,
    /// `etcd3.host`, e.g. `127.0.0.1:2379`, or several comma-separated (then `etcd3.hosts`).
    pub etcd_host: String,
    pub ttl: u64,
    pub loop_wait: u64,
    pub retry_timeout: u64,
    pub maximum_lag_on_failover: u64,
    pub use_pg_rewind: bool,
    /// The node's directory: holds data/, sock/, pgpass, the config and the logs.
    pub node_dir: PathBuf,
    pub data_dir: PathBuf,
    pub pgpass: PathBuf,
    pub socket_dir: PathBuf,
    /// `postgresql.bin_dir`; `None` leaves it out of the file.
    pub bin_dir: Option<PathBuf>,
    /// Extra `postgresql.parameters` as (name, YAML scalar) pairs, appended after the defaults.
    pub parameters: Vec<(String, String)>,
    /// `tags` as (name, YAML scalar) pairs.
    pub tags: Vec<(String, String)>,
    /// Raw YAML appended at the end of the file (top-level sections a test needs).
    pub extra_yaml: String,
    /// `bootstrap.dcs.postgresql.parameters` as (name, YAML scalar) pairs.
    pub dcs_parameters: Vec<(String, String)>,
    /// Raw YAML lines for `bootstrap.dcs` (each indented by the caller as a dcs key, 4 spaces).
    pub dcs_yaml: String,
    /// Extra `bootstrap.initdb` items, as YAML list items without the dash (`wal-segsize: 1`).
    pub initdb_options: Vec<String>,
    /// Raw YAML lines for `bootstrap` (each indented as a bootstrap key, 2 spaces), e.g.
    /// `method` and a custom method's section.
    pub bootstrap_yaml: String,
    /// Extra `postgresql.<key>: <yaml value>` lines (e.g. `pre_promote`, `callbacks`).
    pub pg_settings: Vec<(String, String)>,
    /// Extra `restapi.<key>: <yaml value>` lines (e.g. `authentication`, `certfile`).
    pub restapi_settings: Vec<(String, String)>,
    /// Extra `etcd3.<key>: <yaml value>` lines (e.g. `protocol`, `cacert`, `username`).
    pub etcd_settings: Vec<(String, String)>,
    /// `postgresql.authentication.superuser`.
    pub superuser: Credentials,
    /// `postgresql.authentication.replication`, also named in `pg_hba`.
    pub replication: Credentials,
}

impl NodeConfig {
    /// Node `index` (named `node<index>`) with its files under `node_dir`, using etcd at
    /// `etcd_host` (`127.0.0.1:<port>`). Picks free ports for the REST API and PostgreSQL.
    /// Timing values are the seed's (ttl 30, loop_wait 10, retry_timeout 10); tests usually want
    /// faster ones (the harness' `ClusterOptions`).
    pub fn new(index: usize, node_dir: &Path, etcd_host: &str) -> NodeConfig {
        NodeConfig {
            index,
            header: format!("Written by the Rampart e2e test harness for node {index}."),
            scope: "postgres".into(),
            namespace: "/db/".into(),
            name: format!("node{index}"),
            host: "127.0.0.1".into(),
            client_net: "127.0.0.1/32".into(),
            api_port: crate::free_port(),
            pg_port: crate::free_port(),
            listen_all: false,
            etcd_host: etcd_host.into(),
            ttl: 30,
            loop_wait: 10,
            retry_timeout: 10,
            maximum_lag_on_failover: 1_048_576,
            use_pg_rewind: true,
            node_dir: node_dir.to_path_buf(),
            data_dir: node_dir.join("data"),
            pgpass: node_dir.join("pgpass"),
            socket_dir: node_dir.join("sock"),
            bin_dir: Some(pg_bin_dir()),
            parameters: Vec::new(),
            tags: ["nofailover", "noloadbalance", "clonefrom", "nosync"]
                .iter()
                .map(|t| (t.to_string(), "false".to_string()))
                .collect(),
            extra_yaml: String::new(),
            dcs_parameters: Vec::new(),
            dcs_yaml: String::new(),
            bootstrap_yaml: String::new(),
            initdb_options: Vec::new(),
            pg_settings: Vec::new(),
            restapi_settings: Vec::new(),
            etcd_settings: Vec::new(),
            superuser: Credentials::new(SUPERUSER, SUPERUSER_PASSWORD),
            replication: Credentials::new(REPLICATION_USER, REPLICATION_PASSWORD),
        }
    }

    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = scope.into();
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.into();
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// Listen on `host` and admit clients and replicas from `client_net` (CIDR).
    pub fn host(mut self, host: &str, client_net: &str) -> Self {
        self.host = host.into();
        self.client_net = client_net.into();
        self
    }

    pub fn ttl(mut self, secs: u64) -> Self {
        self.ttl = secs;
        self
    }

    pub fn loop_wait(mut self, secs: u64) -> Self {
        self.loop_wait = secs;
        self
    }

    pub fn retry_timeout(mut self, secs: u64) -> Self {
        self.retry_timeout = secs;
        self
    }

    /// Sets ttl, loop_wait and retry_timeout at once.
    pub fn timing(self, ttl: u64, loop_wait: u64, retry_timeout: u64) -> Self {
        self.ttl(ttl).loop_wait(loop_wait).retry_timeout(retry_timeout)
    }

    pub fn maximum_lag_on_failover(mut self, bytes: u64) -> Self {
        self.maximum_lag_on_failover = bytes;
        self
    }

    pub fn use_pg_rewind(mut self, on: bool) -> Self {
        self.use_pg_rewind = on;
        self
    }

    pub fn bin_dir(mut self, dir: Option<&Path>) -> Self {
        self.bin_dir = dir.map(Path::to_path_buf);
        self
    }

    /// Adds or replaces `postgresql.parameters.<name>`; `value` is a YAML scalar (`'on'`, `10`).
    pub fn parameter(mut self, name: &str, value: &str) -> Self {
        self.parameters.retain(|(n, _)| n != name);
        self.parameters.push((name.into(), value.into()));
        self
    }

    /// Adds or replaces `tags.<name>`; `value` is a YAML scalar (`true`, `1`, `'x'`).
    pub fn tag(mut self, name: &str, value: &str) -> Self {
        match self.tags.iter_mut().find(|(n, _)| n == name) {
            Some(t) => t.1 = value.into(),
            None => self.tags.push((name.into(), value.into())),
        }
        self
    }

    /// Appends raw top-level YAML (must end with a newline to be followed by more).
    /// Adds `postgresql.<key>: <value>` (`value` is YAML, e.g. `'exit 1'` or a flow mapping).
    pub fn pg_setting(mut self, key: &str, value: &str) -> Self {
        self.pg_settings.push((key.into(), value.into()));
        self
    }

    /// Adds `restapi.<key>: <value>` (`value` is YAML).
    pub fn restapi_setting(mut self, key: &str, value: &str) -> Self {
        self.restapi_settings.push((key.into(), value.into()));
        self
    }

    /// Adds `etcd3.<key>: <value>` (`value` is YAML).
    pub fn etcd_setting(mut self, key: &str, value: &str) -> Self {
        self.etcd_settings.push((key.into(), value.into()));
        self
    }

    pub fn extra_yaml(mut self, yaml: &str) -> Self {
        self.extra_yaml.push_str(yaml);
        self
    }

    /// `<host>:<api_port>`.
    pub fn api_address(&self) -> String {
        format!("{}:{}", self.host, self.api_port)
    }

    /// `<host>:<pg_port>`.
    pub fn pg_address(&self) -> String {
        format!("{}:{}", self.host, self.pg_port)
    }

    /// The DCS key prefix of this cluster, e.g. `/db/postgres/` (Patroni's `<namespace>/<scope>/`).
    pub fn dcs_prefix(&self) -> String {
        match self.namespace.trim_matches('/') {
            "" => format!("/{}/", self.scope),
            ns => format!("/{ns}/{}/", self.scope),
        }
    }

    /// `host: <host:port>`, or `hosts: <host:port>,...` for several etcd members.
    fn etcd_hosts_line(&self) -> String {
        match self.etcd_host.contains(',') {
            true => format!("hosts: {}", self.etcd_host),
            false => format!("host: {}", self.etcd_host),
        }
    }

    /// A bare `patronictl.yaml` for this node's cluster: `scope`, `namespace` and `etcd3`, no
    /// `restapi` (so no REST credentials unless the caller appends a `ctl` section).
    pub fn patronictl_yaml(&self) -> String {
        format!("scope: {}\nnamespace: {}\netcd3:\n  {}\n", q(&self.scope), q(&self.namespace), self.etcd_hosts_line())
    }

    /// The configuration as Patroni-format YAML.
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let mut line = |s: String| {
            y.push_str(&s);
            y.push('\n');
        };
        line(format!("# {}", self.header));
        line(format!("scope: {}", q(&self.scope)));
        line(format!("namespace: {}", q(&self.namespace)));
        line(format!("name: {}", q(&self.name)));
        line(String::new());
        line("restapi:".into());
        line(format!("  listen: {}", self.api_address()));
        line(format!("  connect_address: {}", self.api_address()));
        for (key, value) in &self.restapi_settings {
            line(format!("  {key}: {value}"));
        }
        line(String::new());
        line("etcd3:".into());
        line(format!("  {}", self.etcd_hosts_line()));
        for (key, value) in &self.etcd_settings {
            line(format!("  {key}: {value}"));
        }
        line(String::new());
        line("bootstrap:".into());
        line("  dcs:".into());
        line(format!("    ttl: {}", self.ttl));
        line(format!("    loop_wait: {}", self.loop_wait));
        line(format!("    retry_timeout: {}", self.retry_timeout));
        line(format!("    maximum_lag_on_failover: {}", self.maximum_lag_on_failover));
        line("    postgresql:".into());
        line(format!("      use_pg_rewind: {}", self.use_pg_rewind));
        if !self.dcs_parameters.is_empty() {
            line("      parameters:".into());
            for (name, value) in &self.dcs_parameters {
                line(format!("        {name}: {value}"));
            }
        }
        if !self.dcs_yaml.is_empty() {
            line(self.dcs_yaml.trim_end().to_string());
        }
        line("  initdb:".into());
        // Trust over the Unix socket (the agent, pgBackRest, local administration), SCRAM over TCP:
        // initdb writes these rules, and `bootstrap.pg_hba` below is appended after them.
        line("    - auth-local: trust".into());
        line("    - auth-host: scram-sha-256".into());
        line("    - encoding: UTF8".into());
        line("    - data-checksums".into());
        for option in &self.initdb_options {
            line(format!("    - {option}"));
        }
        line("  pg_hba:".into());
        line(format!("    - host replication {} {} scram-sha-256", self.replication.username, self.client_net));
        line(format!("    - host all all {} scram-sha-256", self.client_net));
        if !self.bootstrap_yaml.is_empty() {
            line(self.bootstrap_yaml.trim_end().to_string());
        }
        line(String::new());
        line("postgresql:".into());
        match self.listen_all {
            true => line(format!("  listen: 0.0.0.0:{}", self.pg_port)),
            false => line(format!("  listen: {}", self.pg_address())),
        }
        line(format!("  connect_address: {}", self.pg_address()));
        line(format!("  data_dir: {}", qp(&self.data_dir)));
        if let Some(bin) = &self.bin_dir {
            line(format!("  bin_dir: {}", qp(bin)));
        }
        line(format!("  pgpass: {}", qp(&self.pgpass)));
        line("  authentication:".into());
        line("    replication:".into());
        line(format!("      username: {}", self.replication.username));
        line(format!("      password: {}", q(&self.replication.password)));
        line("    superuser:".into());
        line(format!("      username: {}", self.superuser.username));
        line(format!("      password: {}", q(&self.superuser.password)));
        line("  parameters:".into());
        line(format!("    unix_socket_directories: {}", qp(&self.socket_dir)));
        line("    password_encryption: scram-sha-256".into());
        for (name, value) in &self.parameters {
            line(format!("    {name}: {value}"));
        }
        for (key, value) in &self.pg_settings {
            line(format!("  {key}: {value}"));
        }
        if !self.tags.is_empty() {
            line(String::new());
            line("tags:".into());
            for (name, value) in &self.tags {
                line(format!("  {name}: {value}"));
            }
        }
        if !self.extra_yaml.is_empty() {
            line(String::new());
            y.push_str(&self.extra_yaml);
        }
        y
    }

    /// Creates the node, socket and (parent of the) data directories owned by the agent's user,
    /// then writes [`NodeConfig::to_yaml`] to `path` (also owned by that user, mode 0600).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::dir::make_agent_dir(&self.node_dir);
        crate::dir::make_agent_dir(&self.socket_dir);
        if let Some(parent) = self.data_dir.parent() {
            crate::dir::make_agent_dir(parent);
        }
        write_private(path, &self.to_yaml())
    }
}

/// A single-quoted YAML scalar.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn qp(p: &Path) -> String {
    q(&p.to_string_lossy())
}

/// Writes a file only the agent's user (or we) can read: it may hold passwords. Created with mode
/// 0600, so no other user can open it even for a moment.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    // A file left from elsewhere keeps its mode on open: set it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    chown_to_agent_user(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the demo writes is a configuration the agent accepts, with the demo's own names,
    /// credentials and no tags (the agent's parser, not a text comparison, is the judge).
    #[test]
    fn a_demo_style_configuration_reads_back_as_written() {
        let dir = Path::new("/tmp/rampart-kit-unit/node1");
        let mut c = NodeConfig::new(1, dir, "127.0.0.1:2379").scope("demo").namespace("/service/").bin_dir(None);
        c.header = "Written by a unit test.".into();
        c.tags.clear();
        c.superuser = Credentials::new("admin", "it's secret");
        c.replication = Credentials::new("rep", "r");
        let yaml = c.to_yaml();
        assert!(yaml.starts_with("# Written by a unit test.\n"), "{yaml}");
        let read = rampart_config::parse(&yaml, "node1.yml", Vec::new()).expect("the agent accepts it").config;
        assert_eq!((read.scope.as_str(), read.name.as_str()), ("demo", "node1"));
        assert_eq!(read.namespace.trim_matches('/'), "service");
        let auth = &read.postgresql.authentication;
        assert_eq!(auth.superuser.username, "admin");
        assert_eq!(auth.superuser.password.as_ref().map(|p| p.expose()), Some("it's secret"));
        assert_eq!(auth.replication.username, "rep");
        assert!(!yaml.contains("bin_dir") && !yaml.contains("tags:"), "{yaml}");
    }

    /// The file holds passwords: nobody but its owner may read it, even when it existed before.
    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::MetadataExt;
        let dir = crate::dir::TestDir::new("kit-config");
        let path = dir.join("node.yml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        NodeConfig::new(0, &dir.join("node0"), "127.0.0.1:2379").write(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(&path).unwrap().contains(SUPERUSER_PASSWORD));
    }
}
