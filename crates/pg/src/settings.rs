//! What this crate needs to know about the local PostgreSQL, as one plain struct the agent fills
//! from its configuration.
//!
//! Invariant: credentials never print. [`Credentials`] has a hand-written `Debug` that redacts the
//! password, so `{:?}` of the whole [`PgSettings`] is safe to log.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where Debian and Ubuntu install PostgreSQL 15's programs.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// A role name, its password and the libpq parameters connections as it carry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Role name.
    pub username: String,
    /// Password; `None` relies on trust or peer authentication.
    pub password: Option<String>,
    /// libpq connection parameters besides host, port, user and password (`sslmode`, `sslcert`,
    /// `sslkey`, `sslrootcert`, `sslpassword`, ...), passed to every connection as this role:
    /// `primary_conninfo`, pg_basebackup, pg_rewind and the agent's own connections.
    pub options: BTreeMap<String, String>,
}

/// The one parameter of [`Credentials::options`] that is secret.
const SECRET_OPTION: &str = "sslpassword";

impl Credentials {
    /// A role with a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials { username: username.into(), password: Some(password.into()), options: BTreeMap::new() }
    }

    /// A role without a password.
    pub fn without_password(username: impl Into<String>) -> Self {
        Credentials { username: username.into(), password: None, options: BTreeMap::new() }
    }

    /// The libpq parameters, as `(name, value)` pairs for a conninfo string.
    pub fn option_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.options.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// One libpq parameter.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| (k.as_str(), if k == SECRET_OPTION { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("options", &options)
            .finish()
    }
}

/// How the agent reaches its own PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalConnect {
    /// Over TCP to this host (usually `127.0.0.1`), on [`PgSettings::port`].
    Tcp(String),
    /// Over the Unix socket in this directory, on [`PgSettings::port`]. The managed
    /// `postgresql.conf` makes PostgreSQL create its socket there unless the parameters set
    /// `unix_socket_directories` themselves.
    Socket(PathBuf),
}

/// Settings of the local PostgreSQL instance.
#[derive(Clone, Debug, PartialEq)]
pub struct PgSettings {
    /// Member name: `application_name` towards the upstream and the name of our replication slot.
    pub name: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Directory holding `postgres`, `initdb`, `pg_ctl`, `pg_basebackup`, `pg_rewind`, ...
    pub bin_dir: PathBuf,
    /// `listen_addresses`.
    pub listen_hosts: Vec<String>,
    /// `port`.
    pub port: u16,
    /// Host other members use to reach this server (published in the member key).
    pub connect_host: String,
    /// Port other members use to reach this server.
    pub connect_port: u16,
    /// How the agent itself connects.
    pub local: LocalConnect,
    /// The superuser the agent connects as.
    pub superuser: Credentials,
    /// The role replicas stream and clone with.
    pub replication: Credentials,
    /// The role pg_rewind connects as; `None` uses the superuser.
    pub rewind: Option<Credentials>,
    /// Extra `postgresql.conf` parameters. They win over Rampart's defaults, except
    /// `listen_addresses` and `port`, which always come from these settings.
    pub parameters: BTreeMap<String, String>,
    /// Who writes the server's `pg_hba.conf`.
    pub pg_hba: HbaFile,
    /// The password file written for libpq (`passfile` in `primary_conninfo`).
    pub pgpass: PathBuf,
    /// Stream through a physical replication slot named after the member.
    pub use_slots: bool,
    /// How long [`crate::Postmaster::start`] waits for the server to accept connections.
    pub start_timeout: Duration,
    /// Limit for each control query (probe, reload, slots, ...).
    pub query_timeout: Duration,
    /// Extra pg_basebackup arguments (`postgresql.basebackup`), after Rampart's own.
    pub basebackup_args: Vec<String>,
    /// What replicas recover with besides streaming (`postgresql.recovery_conf`, e.g.
    /// `restore_command`); see [`crate::recovery::replica_settings`].
    pub recovery_conf: BTreeMap<String, String>,
    /// What is done with recovery files other tools left in the data directory.
    pub recovery_files: crate::recovery::RecoveryFiles,
}

/// Who writes the host-based authentication file, as Patroni decides it (`replace_pg_hba`,
/// `append_pg_hba`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HbaFile {
    /// `postgresql.pg_hba`: the agent writes `<data_dir>/pg_hba.conf` from these lines at every
    /// start and configuration change.
    Managed(Vec<String>),
    /// `<data_dir>/pg_hba.conf` belongs to the operator: initdb's file with `bootstrap.pg_hba`
    /// appended once after the bootstrap ([`crate::append_hba`]), or the copy a clone brought from
    /// its source. The agent never rewrites it.
    InDataDir,
    /// The `hba_file` parameter names another file, which the agent never writes.
    Named,
}

impl PgSettings {
    /// Settings with defaults for everything but the name and the data directory: PostgreSQL 15
    /// programs, port 5432 on `127.0.0.1`, the agent connecting over `/var/run/postgresql`, slots
    /// on, a 60 s start timeout and a 5 s query timeout. The password file sits next to the data
    /// directory as `<name>.pgpass`.
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        let name = name.into();
        let data_dir = data_dir.into();
        let pgpass = data_dir.with_file_name(format!("{name}.pgpass"));
        PgSettings {
            name,
            data_dir,
            bin_dir: default_bin_dir(),
            listen_hosts: vec!["127.0.0.1".into()],
            port: 5432,
            connect_host: "127.0.0.1".into(),
            connect_port: 5432,
            local: LocalConnect::Socket(PathBuf::from("/var/run/postgresql")),
            superuser: Credentials::without_password("postgres"),
            replication: Credentials::without_password("replicator"),
            rewind: None,
            parameters: BTreeMap::new(),
            pg_hba: HbaFile::InDataDir,
            pgpass,
            use_slots: true,
            start_timeout: Duration::from_secs(60),
            query_timeout: Duration::from_secs(5),
            basebackup_args: Vec::new(),
            recovery_conf: BTreeMap::new(),
            recovery_files: crate::recovery::RecoveryFiles::Managed,
        }
    }

    /// Path of one PostgreSQL program.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The credentials pg_rewind uses: the rewind role if configured, else the superuser.
    pub fn rewind_credentials(&self) -> &Credentials {
        self.rewind.as_ref().unwrap_or(&self.superuser)
    }

    /// Where the postmaster's stdout and stderr go: `<member>-postgres.log` next to the data
    /// directory if that directory is writable (so pg_basebackup, pg_rewind and wipes never touch
    /// it), else `postgres.log` inside the data directory.
    pub fn log_file(&self) -> PathBuf {
        let beside = self.data_dir.parent().filter(|p| !p.as_os_str().is_empty());
        match beside {
            Some(parent) if is_writable_dir(parent) => parent.join(format!("{}-postgres.log", self.name)),
            _ => self.data_dir.join("postgres.log"),
        }
    }
}

fn is_writable_dir(dir: &Path) -> bool {
    dir.is_dir() && nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// [`DEFAULT_BIN_DIR`] if it holds `postgres`, else the directory of the first `postgres` on
/// `PATH`, else [`DEFAULT_BIN_DIR`] anyway (so the error later names the expected place).
pub fn default_bin_dir() -> PathBuf {
    let default = PathBuf::from(DEFAULT_BIN_DIR);
    if default.join("postgres").is_file() {
        return default;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("postgres").is_file() {
                return dir;
            }
        }
    }
    default
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_passwords() {
        let mut s = PgSettings::new("n1", "/data/n1");
        s.superuser = Credentials::new("postgres", "hunter2");
        let mut rewind = Credentials::new("rewind", "sw0rdfish");
        rewind.options.insert("sslpassword".into(), "keyphrase".into());
        rewind.options.insert("sslmode".into(), "verify-ca".into());
        s.rewind = Some(rewind);
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("sw0rdfish"), "{shown}");
        assert!(!shown.contains("keyphrase"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("verify-ca"), "{shown}");
    }

    #[test]
    fn defaults() {
        let s = PgSettings::new("n1", "/data/n1");
        assert_eq!(s.pgpass, PathBuf::from("/data/n1.pgpass"));
        assert_eq!(s.rewind_credentials().username, "postgres");
        assert_eq!(s.program("initdb"), s.bin_dir.join("initdb"));
    }
}
