//! The `postgresql` section: the local PostgreSQL instance the agent manages.
//!
//! Invariants kept here: `listen` and `connect_address` are parsed addresses (the connect address
//! is never a wildcard), `data_dir` is set, the replication user is named, and `parameters` holds
//! only single values (strings, numbers, booleans) that can be written to `postgresql.conf`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value as Json;

use crate::addr::{HostPort, ListenAddresses};
use crate::check::Checker;
use crate::error::Problem;
use crate::raw::{RawPgRole, RawPostgresql};
use crate::restapi::connect_address;
use crate::secret::Secret;

/// Default `pg_ctl_timeout`, in seconds.
pub const DEFAULT_PG_CTL_TIMEOUT: u64 = 60;

/// The database roles the agent uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgAuthentication {
    /// Superuser for management connections (username defaults to `postgres`).
    pub superuser: PgRole,
    /// User replicas stream with.
    pub replication: PgRole,
    /// User pg_rewind connects as (defaults to the superuser when absent).
    pub rewind: Option<PgRole>,
}

/// One database role of [`PgAuthentication`]: how the agent, replicas, pg_basebackup and pg_rewind
/// connect as it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgRole {
    /// The role name.
    pub username: String,
    /// Its password; `None` when authentication relies on something else (trust, certificates).
    pub password: Option<Secret>,
    /// libpq connection parameters for this role, as Patroni passes them through (`sslmode`,
    /// `sslcert`, `sslkey`, `sslrootcert`, `sslcrl`, `sslcrldir`, `sslnegotiation`, `gssencmode`,
    /// `channel_binding`), by name. None of them is secret.
    pub options: BTreeMap<String, String>,
    /// `sslpassword`, the pass phrase of `sslkey`.
    pub sslpassword: Option<Secret>,
}

/// The values libpq accepts for the enumerated parameters of [`PgRole::options`].
const LIBPQ_CHOICES: &[(&str, &[&str])] = &[
    ("sslmode", &["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
    ("sslnegotiation", &["postgres", "direct"]),
    ("gssencmode", &["disable", "prefer", "require"]),
    ("channel_binding", &["disable", "prefer", "require"]),
];

/// The `postgresql` section, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Postgresql {
    /// Addresses and port PostgreSQL listens on.
    pub listen: ListenAddresses,
    /// Address other members and clients use (published as `conn_url`).
    pub connect_address: HostPort,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Directory of the PostgreSQL binaries; `None` means search `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// Password file written for replication and rewind connections.
    pub pgpass: Option<PathBuf>,
    /// Roles and their passwords.
    pub authentication: PgAuthentication,
    /// Local `postgresql.conf` parameters (override the dynamic ones).
    pub parameters: BTreeMap<String, Json>,
    /// Local pg_hba.conf lines (override the dynamic ones).
    pub pg_hba: Vec<String>,
    /// Local override of the dynamic `postgresql.use_pg_rewind`.
    pub use_pg_rewind: Option<bool>,
    /// Wipe the data directory and clone again when pg_rewind fails.
    pub remove_data_directory_on_rewind_failure: bool,
    /// Connect to the local instance over its Unix socket.
    pub use_unix_socket: bool,
    /// Scripts run on events (`on_start`, `on_stop`, `on_role_change`, ...), by event.
    pub callbacks: BTreeMap<String, String>,
    /// Command run (and waited for) after taking the leader lock and before promoting; a
    /// non-zero exit cancels the promotion and releases the lock.
    pub pre_promote: Option<String>,
    /// Command run (and waited for) before PostgreSQL is stopped cleanly.
    pub before_stop: Option<String>,
    /// Seconds to wait for `pg_ctl start/stop/promote`.
    pub pg_ctl_timeout: u64,
    /// `create_replica_methods`, their sections and `basebackup`.
    pub replica_creation: crate::ReplicaCreation,
    /// `recovery_conf`: what replicas recover with besides streaming (`restore_command`,
    /// `archive_cleanup_command`, `recovery_min_apply_delay`, ...); overrides the dynamic one.
    pub recovery_conf: BTreeMap<String, Json>,
}

impl Postgresql {
    /// `postgres://<connect_address>/postgres`, as published in the member key.
    pub fn conn_url(&self) -> String {
        format!("postgres://{}/postgres", self.connect_address)
    }

    /// The port PostgreSQL listens on.
    pub fn listen_port(&self) -> u16 {
        self.listen.port
    }

    /// The hosts PostgreSQL listens on (`listen_addresses`).
    pub fn listen_hosts(&self) -> &[String] {
        &self.listen.hosts
    }

    /// The host local connections use: the first listen host, with `0.0.0.0`/`*` replaced by
    /// `127.0.0.1` and `::` by `::1`.
    pub fn local_host(&self) -> String {
        self.listen.local_host()
    }

    /// Host and port of `connect_address`.
    pub fn connect_host_port(&self) -> (String, u16) {
        (self.connect_address.host.clone(), self.connect_address.port)
    }

    pub(crate) fn build(raw: Option<RawPostgresql>, c: &mut Checker<'_>) -> Result<Postgresql, Problem> {
        let raw = raw.unwrap_or_default();
        let listen_text = c.require(raw.listen, &["postgresql", "listen"])?;
        let listen = ListenAddresses::parse(&listen_text).ok_or_else(|| {
            c.problem(&["postgresql", "listen"], format!("expected host[,host]:port, got {listen_text:?}"))
        })?;
        let first = HostPort { host: listen.hosts[0].clone(), port: listen.port };
        let connect_address = connect_address(raw.connect_address, &first, "postgresql", c)?;
        let data_dir = c.require(raw.data_dir, &["postgresql", "data_dir"])?;
        if data_dir.as_os_str().is_empty() {
            return Err(c.problem(&["postgresql", "data_dir"], "must not be empty"));
        }

        let auth = raw.authentication.unwrap_or_default();
        let mut superuser = auth.superuser.unwrap_or_default();
        superuser.username = Some(superuser.username.unwrap_or_else(|| "postgres".to_string()));
        if superuser.username.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return Err(c.problem(&["postgresql", "authentication", "superuser", "username"], "must not be empty"));
        }
        let superuser = pg_role(superuser, "superuser", c)?;
        let replication = pg_role(auth.replication.unwrap_or_default(), "replication", c)?;
        let rewind = auth.rewind.map(|r| pg_role(r, "rewind", c)).transpose()?;

        let parameters = single_values(raw.parameters.unwrap_or_default(), "parameters", c)?;
        let recovery_conf = single_values(raw.recovery_conf.unwrap_or_default(), "recovery_conf", c)?;
        for (name, value) in &recovery_conf {
            let lower = name.to_ascii_lowercase();
            let why = match lower.as_str() {
                // What Rampart writes anyway.
                "recovery_target_timeline" if value.as_str().is_some_and(|v| v.eq_ignore_ascii_case("latest")) => {
                    continue
                }
                "primary_conninfo" | "primary_slot_name" => "ignored: a replica streams from the member its role names",
                "standby_mode" => "ignored: replicas start with standby.signal",
                l if l.starts_with("recovery_target") => {
                    "ignored: a replica recovers to the latest timeline without a target (a bootstrap \
                     method's recovery_conf can set one)"
                }
                _ => continue,
            };
            c.warn(&["postgresql", "recovery_conf", name], why);
        }

        // A relative socket directory lives inside the data directory: pg_rewind, which copies
        // every file of the leader's data directory, fails on the socket file there. Accepted (it
        // is Patroni-valid and bootstraps fine) but worth knowing before the first rejoin.
        if let Some(Json::String(dirs)) = parameters.get("unix_socket_directories") {
            if dirs.split(',').map(str::trim).any(|d| !d.is_empty() && !d.starts_with('/')) {
                c.warn(
                    &["postgresql", "parameters", "unix_socket_directories"],
                    format!(
                        "{dirs:?} is relative, so the socket is created inside the data directory; \
                         pg_rewind cannot copy socket files and a former primary will fail to rejoin. \
                         Use an absolute directory outside data_dir"
                    ),
                );
            }
        }

        // As in Patroni, a file `hba_file` names is the operator's: Rampart neither writes it nor
        // writes postgresql.pg_hba anywhere else.
        let hba_file = parameters.keys().any(|k| k.eq_ignore_ascii_case("hba_file"));
        if hba_file && raw.pg_hba.as_ref().is_some_and(|l| !l.is_empty()) {
            c.warn(
                &["postgresql", "pg_hba"],
                "is ignored: postgresql.parameters.hba_file names the file PostgreSQL reads, which Rampart \
                 leaves alone; remove one of the two",
            );
        }

        let pg_ctl_timeout = raw.pg_ctl_timeout.unwrap_or(DEFAULT_PG_CTL_TIMEOUT);
        if pg_ctl_timeout == 0 {
            return Err(c.problem(&["postgresql", "pg_ctl_timeout"], "must be at least 1 second"));
        }
        let (replica_creation, sections) =
            crate::replica_methods::build(raw.create_replica_methods, raw.create_replica_method, raw.basebackup, c)?;
        c.claimed.extend(sections.into_iter().map(|s| format!("postgresql.{s}")));
        Ok(Postgresql {
            listen,
            connect_address,
            data_dir,
            bin_dir: raw.bin_dir,
            pgpass: raw.pgpass,
            authentication: PgAuthentication { superuser, replication, rewind },
            parameters,
            pg_hba: raw.pg_hba.unwrap_or_default(),
            use_pg_rewind: raw.use_pg_rewind,
            remove_data_directory_on_rewind_failure: raw.remove_data_directory_on_rewind_failure.unwrap_or(false),
            use_unix_socket: raw.use_unix_socket.unwrap_or(false),
            callbacks: raw.callbacks.unwrap_or_default(),
            pre_promote: raw.pre_promote.filter(|c| !c.trim().is_empty()),
            before_stop: raw.before_stop.filter(|c| !c.trim().is_empty()),
            pg_ctl_timeout,
            replica_creation,
            recovery_conf,
        })
    }
}

/// A mapping of settings (`postgresql.parameters`, `postgresql.recovery_conf`): single values;
/// a setting without a value is left out with a warning.
fn single_values(
    raw: BTreeMap<String, Json>,
    section: &str,
    c: &mut Checker<'_>,
) -> Result<BTreeMap<String, Json>, Problem> {
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        match value {
            Json::Null => c.warn(&["postgresql", section, &name], "has no value (ignored)"),
            Json::Array(_) | Json::Object(_) => {
                return Err(
                    c.problem(&["postgresql", section, &name], "expected a single value (string, number or boolean)")
                );
            }
            v => {
                out.insert(name, v);
            }
        }
    }
    Ok(out)
}

/// A role whose username is required, with its libpq parameters checked.
fn pg_role(raw: RawPgRole, role: &str, c: &Checker<'_>) -> Result<PgRole, Problem> {
    let username = c.require_text(raw.username, &["postgresql", "authentication", role, "username"])?;
    let given = [
        ("sslmode", raw.sslmode),
        ("sslcert", raw.sslcert),
        ("sslkey", raw.sslkey),
        ("sslrootcert", raw.sslrootcert),
        ("sslcrl", raw.sslcrl),
        ("sslcrldir", raw.sslcrldir),
        ("sslnegotiation", raw.sslnegotiation),
        ("gssencmode", raw.gssencmode),
        ("channel_binding", raw.channel_binding),
    ];
    let mut options = BTreeMap::new();
    for (name, value) in given {
        let Some(value) = value else { continue };
        let path = ["postgresql", "authentication", role, name];
        if value.trim().is_empty() {
            return Err(c.problem(&path, "must not be empty"));
        }
        if let Some((_, allowed)) = LIBPQ_CHOICES.iter().find(|(n, _)| *n == name) {
            if !allowed.contains(&value.as_str()) {
                return Err(c.problem(&path, format!("{value:?} is not one of {}", allowed.join(", "))));
            }
        }
        options.insert(name.to_string(), value);
    }
    Ok(PgRole { username, password: raw.password, options, sslpassword: raw.sslpassword })
}
