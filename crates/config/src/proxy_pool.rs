//! Connection pooling keys of the `proxy` section: how many server connections `rampart proxy`
//! keeps for each database, how long they live, how clients wait for them, and how the proxy
//! authenticates clients itself when it pools. The keys are PgBouncer's, with its defaults
//! wherever they mean the same thing, written directly under `proxy:`.
//!
//! Invariant kept here: a [`Pooling`] can work as written. Every pool (proxy-wide and per
//! database) has between 1 and [`MAX_POOL_SIZE`] connections and a minimum no larger than
//! that; every timeout is within a day; `auth_hba_file` comes exactly with `auth_type: hba`; an
//! `auth_query` takes the user name as its only parameter, `$1`, and comes with an `auth_user`;
//! and when any pool is in transaction mode the proxy has somewhere to find the users' secrets
//! (`auth_file` or `auth_user`) unless it trusts every client. The files named here (`auth_file`,
//! `auth_hba_file`) are read by the proxy when it starts, not by this crate.
//!
//! Seconds are whole numbers of at least 0 in this configuration (PgBouncer also takes
//! fractions). Where 0 means "never" or "off", the validated value is `None`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::check::Checker;
use crate::error::Problem;
use crate::raw::{RawPoolDatabase, RawProxy, StrList};

/// Default `default_pool_size`: server connections per pool (PgBouncer's).
pub const DEFAULT_POOL_SIZE: usize = 20;
/// Default `reserve_pool_timeout`, in seconds (PgBouncer's).
pub const DEFAULT_RESERVE_POOL_TIMEOUT: u64 = 5;
/// Default `max_client_conn` (PgBouncer's).
pub const DEFAULT_MAX_CLIENT_CONN: usize = 100;
/// Default `server_idle_timeout`, in seconds (PgBouncer's).
pub const DEFAULT_SERVER_IDLE_TIMEOUT: u64 = 600;
/// Default `server_lifetime`, in seconds (PgBouncer's).
pub const DEFAULT_SERVER_LIFETIME: u64 = 3600;
/// Default `query_wait_timeout`, in seconds (PgBouncer's).
pub const DEFAULT_QUERY_WAIT_TIMEOUT: u64 = 120;
/// Default `server_reset_query` (PgBouncer's): run when a server connection goes back to the pool.
pub const DEFAULT_SERVER_RESET_QUERY: &str = "DISCARD ALL";
/// Default `switchover_drain_timeout`, in seconds: long enough for the transactions of an OLTP
/// application, short enough not to stretch a switchover (the old primary waits for the proxy).
pub const DEFAULT_SWITCHOVER_DRAIN_TIMEOUT: u64 = 5;
/// The longest `switchover_drain_timeout` accepted, in seconds.
pub const MAX_SWITCHOVER_DRAIN_TIMEOUT: u64 = 60;
/// The most server connections accepted for one pool (and for `max_db_connections`): far above
/// what one PostgreSQL server serves well, low enough to catch a misplaced digit.
pub const MAX_POOL_SIZE: usize = 10_000;
/// The most `max_client_conn` accepted.
pub const MAX_CLIENT_CONN: usize = 1_000_000;
/// The longest timeout accepted (but `switchover_drain_timeout`), in seconds: a day.
pub const MAX_TIMEOUT: u64 = 86_400;

/// `proxy.pool_mode` (proxy-wide or per database): when a server connection goes back to its pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PoolMode {
    /// When the client disconnects: one server connection per client, the client authenticated
    /// by the server (relayed). What a file without `pool_mode` has always meant.
    #[default]
    Session,
    /// When each transaction ends; the proxy authenticates clients itself (`auth_type`).
    Transaction,
}

impl PoolMode {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }

    fn parse(text: &str) -> Option<PoolMode> {
        [PoolMode::Session, PoolMode::Transaction].into_iter().find(|m| m.as_str() == text)
    }
}

/// `proxy.auth_type`: how the proxy authenticates clients of transaction-mode pools (PgBouncer's
/// values, but for the ones it keeps only for old clients).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthType {
    /// SCRAM-SHA-256 (RFC 7677), PostgreSQL's default since version 14.
    #[default]
    ScramSha256,
    /// MD5 password hashes.
    Md5,
    /// The password in clear text (PgBouncer's `plain`); only sensible over TLS.
    Plain,
    /// No authentication: every client is who it says it is.
    Trust,
    /// The method named by the first matching rule of `auth_hba_file` (pg_hba.conf's format).
    Hba,
}

impl AuthType {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::ScramSha256 => "scram-sha-256",
            AuthType::Md5 => "md5",
            AuthType::Plain => "plain",
            AuthType::Trust => "trust",
            AuthType::Hba => "hba",
        }
    }

    fn parse(text: &str) -> Option<AuthType> {
        [AuthType::ScramSha256, AuthType::Md5, AuthType::Plain, AuthType::Trust, AuthType::Hba]
            .into_iter()
            .find(|t| t.as_str() == text)
    }
}

/// `proxy.databases.<name>`: what one database sets over the proxy-wide values; `None` takes
/// the proxy-wide one. Read it through [`Pooling::for_database`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabasePool {
    /// `pool_size`, over `default_pool_size`.
    pub pool_size: Option<usize>,
    /// `min_pool_size`.
    pub min_pool_size: Option<usize>,
    /// `reserve_pool_size`.
    pub reserve_pool_size: Option<usize>,
    /// `max_db_connections`: `Some(None)` is an explicit 0, unlimited even when the proxy-wide
    /// value is a limit.
    pub max_db_connections: Option<Option<usize>>,
    /// `pool_mode`.
    pub pool_mode: Option<PoolMode>,
}

/// The pool settings in force for one database: its overrides over the proxy-wide values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// When a server connection goes back to the pool.
    pub pool_mode: PoolMode,
    /// Server connections per pool (one pool per user and database, as PgBouncer).
    pub pool_size: usize,
    /// Server connections kept open even when idle.
    pub min_pool_size: usize,
    /// Extra connections a pool may open for clients that waited `reserve_pool_timeout`.
    pub reserve_pool_size: usize,
    /// The most server connections to this database over all its pools; `None`: no limit.
    pub max_db_connections: Option<usize>,
}

/// The pooling keys of the `proxy` section, validated (see the module header for what holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pooling {
    /// `pool_mode`, for databases that do not set their own.
    pub pool_mode: PoolMode,
    /// `default_pool_size`: server connections per pool (user and database).
    pub default_pool_size: usize,
    /// `min_pool_size`: server connections a pool keeps open even when idle.
    pub min_pool_size: usize,
    /// `reserve_pool_size`: extra connections a pool may open for clients that waited too long.
    pub reserve_pool_size: usize,
    /// `reserve_pool_timeout`: how long a client waits before the reserve may serve it.
    pub reserve_pool_timeout: Duration,
    /// `max_client_conn`: the most client connections the proxy accepts at once.
    pub max_client_conn: usize,
    /// `max_db_connections`: the most server connections per database; `None`: no limit (0).
    pub max_db_connections: Option<usize>,
    /// `server_idle_timeout`: an idle server connection is closed after this; `None`: never (0).
    pub server_idle_timeout: Option<Duration>,
    /// `server_lifetime`: a server connection this old is closed when it is next released;
    /// `None`: no limit (0).
    pub server_lifetime: Option<Duration>,
    /// `query_wait_timeout`: a client waiting this long for a server connection gets an error;
    /// `None`: it waits for ever (0).
    pub query_wait_timeout: Option<Duration>,
    /// `idle_transaction_timeout`: a client idle in a transaction this long is disconnected;
    /// `None`: off (0).
    pub idle_transaction_timeout: Option<Duration>,
    /// `server_reset_query`: run on a server connection before another client gets it (in
    /// session mode, as PgBouncer); `None` when set to the empty string (or to blanks).
    pub server_reset_query: Option<String>,
    /// `databases`: per-database overrides, by database name (exact, case-sensitive).
    pub databases: BTreeMap<String, DatabasePool>,
    /// `auth_type`: how the proxy authenticates clients when it pools: in transaction mode, and in
    /// session mode with an `auth_file` or an `auth_user` (without, session-mode clients are
    /// relayed and the server authenticates them).
    pub auth_type: AuthType,
    /// `auth_hba_file`: the HBA rules; present exactly when `auth_type` is hba.
    pub auth_hba_file: Option<PathBuf>,
    /// `auth_file`: user names and secrets in PgBouncer's `userlist.txt` format.
    pub auth_file: Option<PathBuf>,
    /// `auth_user`: the role that looks up the secrets of users not in `auth_file` with `auth_query`.
    pub auth_user: Option<String>,
    /// `auth_query`: the lookup, taking the user name as `$1`; `None`: the proxy's built-in query.
    pub auth_query: Option<String>,
    /// `admin_users`: users allowed every command of the admin console.
    pub admin_users: Vec<String>,
    /// `stats_users`: users allowed the admin console's SHOW commands.
    pub stats_users: Vec<String>,
    /// `switchover_drain_timeout`: in transaction mode, how long in-flight transactions on a
    /// primary about to be switched over get to finish before its server connections close.
    pub switchover_drain_timeout: Duration,
}

impl Default for Pooling {
    /// The values a `proxy` section without any pooling key gets: session mode, PgBouncer's sizes
    /// and timeouts.
    fn default() -> Pooling {
        Pooling {
            pool_mode: PoolMode::Session,
            default_pool_size: DEFAULT_POOL_SIZE,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::from_secs(DEFAULT_RESERVE_POOL_TIMEOUT),
            max_client_conn: DEFAULT_MAX_CLIENT_CONN,
            max_db_connections: None,
            server_idle_timeout: Some(Duration::from_secs(DEFAULT_SERVER_IDLE_TIMEOUT)),
            server_lifetime: Some(Duration::from_secs(DEFAULT_SERVER_LIFETIME)),
            query_wait_timeout: Some(Duration::from_secs(DEFAULT_QUERY_WAIT_TIMEOUT)),
            idle_transaction_timeout: None,
            server_reset_query: Some(DEFAULT_SERVER_RESET_QUERY.to_string()),
            databases: BTreeMap::new(),
            auth_type: AuthType::ScramSha256,
            auth_hba_file: None,
            auth_file: None,
            auth_user: None,
            auth_query: None,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            switchover_drain_timeout: Duration::from_secs(DEFAULT_SWITCHOVER_DRAIN_TIMEOUT),
        }
    }
}

impl Pooling {
    /// The settings in force for database `db`: its `databases` entry over the proxy-wide values.
    pub fn for_database(&self, db: &str) -> PoolSettings {
        let o = self.databases.get(db);
        PoolSettings {
            pool_mode: o.and_then(|o| o.pool_mode).unwrap_or(self.pool_mode),
            pool_size: o.and_then(|o| o.pool_size).unwrap_or(self.default_pool_size),
            min_pool_size: o.and_then(|o| o.min_pool_size).unwrap_or(self.min_pool_size),
            reserve_pool_size: o.and_then(|o| o.reserve_pool_size).unwrap_or(self.reserve_pool_size),
            max_db_connections: o.and_then(|o| o.max_db_connections).unwrap_or(self.max_db_connections),
        }
    }

    /// Whether any pool (proxy-wide or of a listed database) is in transaction mode, so that the
    /// proxy must authenticate clients itself.
    pub fn any_transaction_mode(&self) -> bool {
        self.transaction_mode_key().is_some()
    }

    /// Whether any database's clients are served from a pool: one pools by transaction, or the
    /// proxy authenticates clients itself (`auth_file`, `auth_user`), which pools session mode too.
    pub fn any_pooled(&self) -> bool {
        self.any_transaction_mode() || self.auth_file.is_some() || self.auth_user.is_some()
    }

    /// The key that puts a pool in transaction mode, first the proxy-wide one.
    fn transaction_mode_key(&self) -> Option<Vec<&str>> {
        if self.pool_mode == PoolMode::Transaction {
            return Some(vec!["proxy", "pool_mode"]);
        }
        let (name, _) = self.databases.iter().find(|(_, d)| d.pool_mode == Some(PoolMode::Transaction))?;
        Some(vec!["proxy", "databases", name, "pool_mode"])
    }

    /// Takes the pooling keys out of `raw` and checks them.
    pub(crate) fn build(raw: &mut RawProxy, c: &Checker<'_>) -> Result<Pooling, Problem> {
        let d = Pooling::default();
        let pool_mode = match raw.pool_mode.take() {
            Some(text) => pool_mode(&text, &["proxy", "pool_mode"], c)?,
            None => d.pool_mode,
        };
        let default_pool_size = count(raw.default_pool_size, 1, MAX_POOL_SIZE, &["proxy", "default_pool_size"], c)?
            .unwrap_or(d.default_pool_size);
        let min_pool_size =
            count(raw.min_pool_size, 0, MAX_POOL_SIZE, &["proxy", "min_pool_size"], c)?.unwrap_or(d.min_pool_size);
        if min_pool_size > default_pool_size {
            let message = format!("{min_pool_size} is more than proxy.default_pool_size ({default_pool_size})");
            return Err(c.problem(&["proxy", "min_pool_size"], message));
        }
        let reserve_pool_size = count(raw.reserve_pool_size, 0, MAX_POOL_SIZE, &["proxy", "reserve_pool_size"], c)?;
        let max_db_connections = count(raw.max_db_connections, 0, MAX_POOL_SIZE, &["proxy", "max_db_connections"], c)?;
        let max_client_conn = count(raw.max_client_conn, 1, MAX_CLIENT_CONN, &["proxy", "max_client_conn"], c)?;
        let day = |value: Option<u64>, key: &str| seconds(value, MAX_TIMEOUT, "a day", &["proxy", key], c);
        let reserve_pool_timeout = day(raw.reserve_pool_timeout, "reserve_pool_timeout")?;
        let server_idle_timeout = day(raw.server_idle_timeout, "server_idle_timeout")?;
        let server_lifetime = day(raw.server_lifetime, "server_lifetime")?;
        let query_wait_timeout = day(raw.query_wait_timeout, "query_wait_timeout")?;
        let idle_transaction_timeout = day(raw.idle_transaction_timeout, "idle_transaction_timeout")?;
        let switchover_drain_timeout = seconds(
            raw.switchover_drain_timeout,
            MAX_SWITCHOVER_DRAIN_TIMEOUT,
            "a minute",
            &["proxy", "switchover_drain_timeout"],
            c,
        )?;
        let mut databases = BTreeMap::new();
        for (name, db) in raw.databases.take().unwrap_or_default() {
            let db = database(&name, db, default_pool_size, min_pool_size, c)?;
            databases.insert(name, db);
        }
        let server_reset_query = match raw.server_reset_query.take() {
            // The empty string is PgBouncer's way to say "no reset query".
            Some(q) if q.trim().is_empty() => None,
            Some(q) => Some(q),
            None => d.server_reset_query,
        };
        let pooling = Pooling {
            pool_mode,
            default_pool_size,
            min_pool_size,
            reserve_pool_size: reserve_pool_size.unwrap_or(d.reserve_pool_size),
            reserve_pool_timeout: reserve_pool_timeout.map_or(d.reserve_pool_timeout, Duration::from_secs),
            max_client_conn: max_client_conn.unwrap_or(d.max_client_conn),
            max_db_connections: max_db_connections.map_or(d.max_db_connections, unlimited_if_zero),
            server_idle_timeout: server_idle_timeout.map_or(d.server_idle_timeout, never_if_zero),
            server_lifetime: server_lifetime.map_or(d.server_lifetime, never_if_zero),
            query_wait_timeout: query_wait_timeout.map_or(d.query_wait_timeout, never_if_zero),
            idle_transaction_timeout: idle_transaction_timeout.map_or(d.idle_transaction_timeout, never_if_zero),
            server_reset_query,
            databases,
            switchover_drain_timeout: switchover_drain_timeout.map_or(d.switchover_drain_timeout, Duration::from_secs),
            ..d
        };
        authentication(pooling, raw, c)
    }
}

/// Fills in and checks the authentication keys of `pooling`, once its pool modes are known.
fn authentication(mut pooling: Pooling, raw: &mut RawProxy, c: &Checker<'_>) -> Result<Pooling, Problem> {
    let written_auth_type = raw.auth_type.is_some();
    if let Some(text) = raw.auth_type.take() {
        pooling.auth_type = AuthType::parse(&text).ok_or_else(|| {
            let message = format!("expected scram-sha-256, md5, plain, trust or hba, got {text:?}");
            c.problem(&["proxy", "auth_type"], message)
        })?;
    }
    pooling.auth_hba_file = path(raw.auth_hba_file.take(), "auth_hba_file", c)?;
    pooling.auth_file = path(raw.auth_file.take(), "auth_file", c)?;
    match (pooling.auth_type, &pooling.auth_hba_file) {
        (AuthType::Hba, None) => {
            return Err(c.problem(&["proxy", "auth_type"], "hba needs proxy.auth_hba_file (the HBA rules to apply)"))
        }
        (AuthType::Hba, Some(_)) | (_, None) => {}
        (other, Some(_)) => {
            let message = format!("set, but proxy.auth_type is {} (the file is read only with hba)", other.as_str());
            return Err(c.problem(&["proxy", "auth_hba_file"], message));
        }
    }
    pooling.auth_user = match raw.auth_user.take() {
        Some(user) => Some(c.require_text(Some(user), &["proxy", "auth_user"])?),
        None => None,
    };
    if let Some(query) = raw.auth_query.take() {
        if query.trim().is_empty() {
            return Err(c.problem(&["proxy", "auth_query"], "is empty (leave the key out for the built-in query)"));
        }
        check_auth_query(&query).map_err(|message| c.problem(&["proxy", "auth_query"], message))?;
        if pooling.auth_user.is_none() {
            return Err(c.problem(&["proxy", "auth_query"], "set without proxy.auth_user"));
        }
        pooling.auth_query = Some(query);
    }
    if let Some(key) = pooling.transaction_mode_key() {
        let no_secrets = pooling.auth_file.is_none() && pooling.auth_user.is_none();
        if no_secrets && pooling.auth_type != AuthType::Trust {
            let message = format!(
                "{} in transaction mode ({}: transaction) needs the users' secrets: set proxy.auth_file \
                 (a userlist.txt) or proxy.auth_user (to look them up with auth_query)",
                pooling.auth_type.as_str(),
                key.join("."),
            );
            // Located at auth_type when it is written, otherwise at what asked for transactions.
            let mut problem = c.problem(&["proxy", "auth_type"], message);
            if !written_auth_type {
                problem.origin = c.problem(&key, "").origin;
            }
            return Err(problem);
        }
    }
    pooling.admin_users = users(raw.admin_users.take(), "admin_users", c)?;
    pooling.stats_users = users(raw.stats_users.take(), "stats_users", c)?;
    Ok(pooling)
}

/// One `databases` entry, checked against the proxy-wide sizes it falls back to.
fn database(
    name: &str,
    raw: RawPoolDatabase,
    default_pool_size: usize,
    min_pool_size: usize,
    c: &Checker<'_>,
) -> Result<DatabasePool, Problem> {
    if name.trim().is_empty() {
        let mut problem = c.problem(&["proxy", "databases"], "a database name is empty");
        problem.origin = c.problem(&["proxy", "databases", name], "").origin;
        return Err(problem);
    }
    let key = |k| ["proxy", "databases", name, k];
    let pool_size = count(raw.pool_size, 1, MAX_POOL_SIZE, &key("pool_size"), c)?;
    let min = count(raw.min_pool_size, 0, MAX_POOL_SIZE, &key("min_pool_size"), c)?;
    let (size, size_key) = match pool_size {
        Some(n) => (n, format!("proxy.databases.{name}.pool_size")),
        None => (default_pool_size, "proxy.default_pool_size".to_string()),
    };
    match min {
        Some(m) if m > size => {
            return Err(c.problem(&key("min_pool_size"), format!("{m} is more than {size_key} ({size})")))
        }
        None if min_pool_size > size => {
            let message = format!("{size} is less than proxy.min_pool_size ({min_pool_size})");
            return Err(c.problem(&key("pool_size"), message));
        }
        _ => {}
    }
    Ok(DatabasePool {
        pool_size,
        min_pool_size: min,
        reserve_pool_size: count(raw.reserve_pool_size, 0, MAX_POOL_SIZE, &key("reserve_pool_size"), c)?,
        max_db_connections: count(raw.max_db_connections, 0, MAX_POOL_SIZE, &key("max_db_connections"), c)?
            .map(unlimited_if_zero),
        pool_mode: match raw.pool_mode {
            Some(text) => Some(pool_mode(&text, &key("pool_mode"), c)?),
            None => None,
        },
    })
}

fn pool_mode(text: &str, path: &[&str], c: &Checker<'_>) -> Result<PoolMode, Problem> {
    PoolMode::parse(text).ok_or_else(|| c.problem(path, format!("expected session or transaction, got {text:?}")))
}

/// A count of connections written at `path`, checked to be within `lowest..=highest`.
fn count(
    value: Option<u64>,
    lowest: usize,
    highest: usize,
    path: &[&str],
    c: &Checker<'_>,
) -> Result<Option<usize>, Problem> {
    let Some(n) = value else { return Ok(None) };
    match usize::try_from(n) {
        Ok(n) if (lowest..=highest).contains(&n) => Ok(Some(n)),
        _ if lowest == 0 => Err(c.problem(path, format!("{n} is more than {highest}"))),
        _ => Err(c.problem(path, format!("{n} is not between {lowest} and {highest}"))),
    }
}

/// Seconds written at `path`, checked to be at most `most` (`longest` says it in words).
fn seconds(
    value: Option<u64>,
    most: u64,
    longest: &str,
    path: &[&str],
    c: &Checker<'_>,
) -> Result<Option<u64>, Problem> {
    match value {
        Some(n) if n > most => Err(c.problem(path, format!("{n} s is more than {longest}"))),
        other => Ok(other),
    }
}

fn never_if_zero(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

fn unlimited_if_zero(n: usize) -> Option<usize> {
    (n > 0).then_some(n)
}

/// A file path, refused when empty.
fn path(value: Option<PathBuf>, key: &str, c: &Checker<'_>) -> Result<Option<PathBuf>, Problem> {
    match value {
        Some(p) if p.as_os_str().is_empty() => Err(c.problem(&["proxy", key], "is empty")),
        other => Ok(other),
    }
}

/// A list of user names, none of them empty.
fn users(value: Option<StrList>, key: &str, c: &Checker<'_>) -> Result<Vec<String>, Problem> {
    let users = value.map(|l| l.0).unwrap_or_default();
    if users.iter().any(|u| u.is_empty()) {
        return Err(c.problem(&["proxy", key], "has an empty user name"));
    }
    Ok(users)
}

/// Checks that `query` takes the user name as its only parameter, `$1`. The proxy always binds
/// the name as a parameter and never splices it into the text (PgBouncer's CVE-2025-12819 came
/// from a query built with the name in it); a query with another parameter could not be run.
fn check_auth_query(query: &str) -> Result<(), String> {
    let params = parameters(query);
    if let Some(other) = params.iter().find(|&&n| n != 1) {
        return Err(format!("takes ${other}, but its only parameter is the user name, $1"));
    }
    if params.is_empty() {
        return Err("must take the user name as the parameter $1".to_string());
    }
    Ok(())
}

/// The numbers of the positional parameters (`$1`, `$12`) that `query` refers to. A `$` inside
/// an identifier (`a$1`) is part of the name, as PostgreSQL reads it.
fn parameters(query: &str) -> Vec<u64> {
    let bytes = query.as_bytes();
    let mut out = Vec::new();
    for (i, _) in query.match_indices('$') {
        let in_name = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'_' | b'$'));
        let digits = query[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
        if !in_name && digits > 0 {
            // Too many digits to be a number is no parameter PostgreSQL would take either.
            out.push(query[i + 1..i + 1 + digits].parse().unwrap_or(u64::MAX));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::{parameters, AuthType, DatabasePool, PoolMode, PoolSettings, Pooling};
    use crate::{ConfigError, Loaded};

    fn load(proxy: &str) -> Result<Loaded, ConfigError> {
        crate::tests::minimal_with(&format!("proxy:\n  listen: h:1\n{proxy}"), "p.yml")
    }

    fn pooling(proxy: &str) -> Pooling {
        load(proxy).unwrap_or_else(|e| panic!("{e}")).config.proxy.unwrap().pooling
    }

    /// The error for `proxy` (its keys start on line 13 of the file).
    fn refused(proxy: &str) -> String {
        match load(proxy) {
            Ok(l) => panic!("accepted: {:?}", l.config.proxy),
            Err(e) => e.to_string(),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_section_without_pooling_keys_gets_session_mode_and_pgbouncers_defaults() {
        let p = pooling("");
        assert_eq!(p, Pooling::default());
        assert_eq!(p.pool_mode, PoolMode::Session, "existing files keep their meaning");
        assert_eq!((p.default_pool_size, p.min_pool_size, p.reserve_pool_size), (20, 0, 0));
        assert_eq!((p.reserve_pool_timeout, p.max_client_conn, p.max_db_connections), (secs(5), 100, None));
        assert_eq!((p.server_idle_timeout, p.server_lifetime), (Some(secs(600)), Some(secs(3600))));
        assert_eq!((p.query_wait_timeout, p.idle_transaction_timeout), (Some(secs(120)), None));
        assert_eq!(p.server_reset_query.as_deref(), Some("DISCARD ALL"));
        assert_eq!((p.auth_type, &p.auth_hba_file, &p.auth_file), (AuthType::ScramSha256, &None, &None));
        assert_eq!((&p.auth_user, &p.auth_query), (&None, &None));
        assert!(p.databases.is_empty() && p.admin_users.is_empty() && p.stats_users.is_empty());
        assert_eq!(p.switchover_drain_timeout, secs(5));
        assert!(!p.any_transaction_mode());
        assert!(!p.any_pooled(), "a bare proxy relays sessions");
    }

    #[test]
    fn session_mode_pools_when_the_proxy_authenticates() {
        for pooled in [
            "  auth_file: /etc/rampart/userlist.txt\n",
            "  auth_user: pgbouncer\n",
            "  pool_mode: transaction\n  auth_type: trust\n",
        ] {
            assert!(pooling(pooled).any_pooled(), "{pooled}");
        }
        assert!(!pooling("  default_pool_size: 5\n").any_pooled());
    }

    #[test]
    fn every_key_is_read() {
        let p = pooling(
            "  pool_mode: transaction
  default_pool_size: 30
  min_pool_size: 2
  reserve_pool_size: 3
  reserve_pool_timeout: 4
  max_client_conn: 5000
  max_db_connections: 50
  server_idle_timeout: 60
  server_lifetime: 7200
  query_wait_timeout: 30
  idle_transaction_timeout: 15
  server_reset_query: RESET ALL
  databases:
    app: {pool_size: 10, min_pool_size: 1, reserve_pool_size: 2, max_db_connections: 0, pool_mode: session}
  auth_type: md5
  auth_file: /etc/rampart/userlist.txt
  auth_user: pgbouncer
  auth_query: SELECT usename, passwd FROM pg_shadow WHERE usename = $1
  admin_users: [alice, bob]
  stats_users: carol, dave
  switchover_drain_timeout: 20
",
        );
        let app = DatabasePool {
            pool_size: Some(10),
            min_pool_size: Some(1),
            reserve_pool_size: Some(2),
            max_db_connections: Some(None),
            pool_mode: Some(PoolMode::Session),
        };
        let expected = Pooling {
            pool_mode: PoolMode::Transaction,
            default_pool_size: 30,
            min_pool_size: 2,
            reserve_pool_size: 3,
            reserve_pool_timeout: secs(4),
            max_client_conn: 5000,
            max_db_connections: Some(50),
            server_idle_timeout: Some(secs(60)),
            server_lifetime: Some(secs(7200)),
            query_wait_timeout: Some(secs(30)),
            idle_transaction_timeout: Some(secs(15)),
            server_reset_query: Some("RESET ALL".into()),
            databases: [("app".to_string(), app)].into(),
            auth_type: AuthType::Md5,
            auth_hba_file: None,
            auth_file: Some(PathBuf::from("/etc/rampart/userlist.txt")),
            auth_user: Some("pgbouncer".into()),
            auth_query: Some("SELECT usename, passwd FROM pg_shadow WHERE usename = $1".into()),
            admin_users: vec!["alice".into(), "bob".into()],
            stats_users: vec!["carol".into(), "dave".into()],
            switchover_drain_timeout: secs(20),
        };
        assert_eq!(p, expected);
        assert_eq!(pooling("  auth_type: hba\n  auth_hba_file: /etc/rampart/hba.conf\n").auth_type, AuthType::Hba);
        for t in ["scram-sha-256", "md5", "plain", "trust", "hba"] {
            let extra = if t == "hba" { "  auth_hba_file: /h\n" } else { "" };
            assert_eq!(pooling(&format!("  auth_type: {t}\n{extra}")).auth_type.as_str(), t);
        }
    }

    #[test]
    fn zero_means_never_or_unlimited_and_an_empty_reset_query_means_none() {
        let p = pooling(
            "  max_db_connections: 0\n  server_idle_timeout: 0\n  server_lifetime: 0\n  query_wait_timeout: 0\n  idle_transaction_timeout: 0\n  server_reset_query: ''\n  reserve_pool_timeout: 0\n",
        );
        assert_eq!((p.max_db_connections, p.server_idle_timeout, p.server_lifetime), (None, None, None));
        assert_eq!((p.query_wait_timeout, p.idle_transaction_timeout, &p.server_reset_query), (None, None, &None));
        assert_eq!(p.reserve_pool_timeout, Duration::ZERO);
    }

    #[test]
    fn sizes_and_timeouts_out_of_range_are_refused_with_their_line() {
        for (text, expected) in [
            ("  default_pool_size: 0\n", "p.yml:13: proxy.default_pool_size: 0 is not between 1 and 10000"),
            ("  default_pool_size: 10001\n", "p.yml:13: proxy.default_pool_size: 10001 is not between 1 and 10000"),
            ("  min_pool_size: 10001\n", "p.yml:13: proxy.min_pool_size: 10001 is more than 10000"),
            ("  min_pool_size: 21\n", "p.yml:13: proxy.min_pool_size: 21 is more than proxy.default_pool_size (20)"),
            ("  reserve_pool_size: 20000\n", "p.yml:13: proxy.reserve_pool_size: 20000 is more than 10000"),
            ("  max_db_connections: 10001\n", "p.yml:13: proxy.max_db_connections: 10001 is more than 10000"),
            ("  max_client_conn: 0\n", "p.yml:13: proxy.max_client_conn: 0 is not between 1 and 1000000"),
            ("  max_client_conn: 1000001\n", "p.yml:13: proxy.max_client_conn: 1000001 is not between 1 and 1000000"),
            ("  reserve_pool_timeout: 86401\n", "p.yml:13: proxy.reserve_pool_timeout: 86401 s is more than a day"),
            ("  server_idle_timeout: 86401\n", "p.yml:13: proxy.server_idle_timeout: 86401 s is more than a day"),
            ("  server_lifetime: 100000\n", "p.yml:13: proxy.server_lifetime: 100000 s is more than a day"),
            ("  query_wait_timeout: 90000\n", "p.yml:13: proxy.query_wait_timeout: 90000 s is more than a day"),
            (
                "  idle_transaction_timeout: 90000\n",
                "p.yml:13: proxy.idle_transaction_timeout: 90000 s is more than a day",
            ),
            (
                "  switchover_drain_timeout: 61\n",
                "p.yml:13: proxy.switchover_drain_timeout: 61 s is more than a minute",
            ),
            (
                "  pool_mode: statement\n",
                "p.yml:13: proxy.pool_mode: expected session or transaction, got \"statement\"",
            ),
            (
                "  auth_type: password\n",
                "p.yml:13: proxy.auth_type: expected scram-sha-256, md5, plain, trust or hba, got \"password\"",
            ),
        ] {
            assert_eq!(refused(text), expected, "{text}");
        }
        let e = refused("  server_lifetime: -1\n");
        assert_eq!(
            e,
            "p.yml:13: proxy.server_lifetime: invalid value: integer `-1`, expected a whole number of at least 0"
        );
        assert_eq!(pooling("  default_pool_size: 10000\n  switchover_drain_timeout: 60\n").default_pool_size, 10_000);
    }

    #[test]
    fn per_database_overrides_resolve_over_the_proxy_wide_values() {
        let p = pooling(
            "  pool_mode: transaction\n  auth_type: trust\n  default_pool_size: 10\n  min_pool_size: 2\n  max_db_connections: 40\n  databases:\n    app: {pool_size: 50, pool_mode: session, max_db_connections: 0}\n    reports: {reserve_pool_size: 4, min_pool_size: 0}\n    bare:\n",
        );
        let wide = PoolSettings {
            pool_mode: PoolMode::Transaction,
            pool_size: 10,
            min_pool_size: 2,
            reserve_pool_size: 0,
            max_db_connections: Some(40),
        };
        assert_eq!(p.for_database("other"), wide, "an unlisted database gets the proxy-wide values");
        assert_eq!(p.for_database("bare"), wide, "an entry without keys changes nothing");
        assert_eq!(p.for_database("APP"), wide, "names are case-sensitive, as PostgreSQL's");
        let app = PoolSettings { pool_mode: PoolMode::Session, pool_size: 50, max_db_connections: None, ..wide };
        assert_eq!(p.for_database("app"), app);
        assert_eq!(p.for_database("reports"), PoolSettings { reserve_pool_size: 4, min_pool_size: 0, ..wide });
    }

    #[test]
    fn per_database_refusals_name_the_database_key() {
        for (text, expected) in [
            (
                "  databases:\n    app: {pool_size: 0}\n",
                "p.yml:14: proxy.databases.app.pool_size: 0 is not between 1 and 10000",
            ),
            (
                "  databases:\n    app:\n      pool_mode: statement\n",
                "p.yml:15: proxy.databases.app.pool_mode: expected session or transaction, got \"statement\"",
            ),
            (
                "  databases:\n    app:\n      min_pool_size: 21\n",
                "p.yml:15: proxy.databases.app.min_pool_size: 21 is more than proxy.default_pool_size (20)",
            ),
            (
                "  databases:\n    app:\n      pool_size: 5\n      min_pool_size: 6\n",
                "p.yml:16: proxy.databases.app.min_pool_size: 6 is more than proxy.databases.app.pool_size (5)",
            ),
            (
                "  min_pool_size: 8\n  databases:\n    app:\n      pool_size: 5\n",
                "p.yml:16: proxy.databases.app.pool_size: 5 is less than proxy.min_pool_size (8)",
            ),
            (
                "  databases:\n    app:\n      max_db_connections: 10001\n",
                "p.yml:15: proxy.databases.app.max_db_connections: 10001 is more than 10000",
            ),
            ("  databases:\n    '': {pool_size: 5}\n", "p.yml:14: proxy.databases: a database name is empty"),
        ] {
            assert_eq!(refused(text), expected, "{text}");
        }
        let l = load("  databases:\n    app:\n      pool_sise: 5\n").unwrap();
        assert!(
            l.warnings.iter().any(|w| w == "p.yml:15: unknown key proxy.databases.app.pool_sise (ignored)"),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn auth_hba_file_comes_exactly_with_auth_type_hba() {
        assert_eq!(
            refused("  auth_type: hba\n"),
            "p.yml:13: proxy.auth_type: hba needs proxy.auth_hba_file (the HBA rules to apply)"
        );
        assert_eq!(
            refused("  auth_type: md5\n  auth_hba_file: /h\n"),
            "p.yml:14: proxy.auth_hba_file: set, but proxy.auth_type is md5 (the file is read only with hba)"
        );
        assert_eq!(
            refused("  auth_hba_file: /h\n"),
            "p.yml:13: proxy.auth_hba_file: set, but proxy.auth_type is scram-sha-256 (the file is read only with hba)"
        );
        let p = pooling("  auth_type: hba\n  auth_hba_file: /etc/rampart/hba.conf\n");
        assert_eq!(p.auth_hba_file, Some(PathBuf::from("/etc/rampart/hba.conf")));
    }

    #[test]
    fn empty_paths_and_names_are_refused() {
        assert_eq!(refused("  auth_file: ''\n"), "p.yml:13: proxy.auth_file: is empty");
        assert_eq!(refused("  auth_type: hba\n  auth_hba_file: ''\n"), "p.yml:14: proxy.auth_hba_file: is empty");
        assert_eq!(refused("  auth_user: ' '\n"), "p.yml:13: proxy.auth_user: must not be empty");
        assert_eq!(refused("  admin_users: [alice, '']\n"), "p.yml:13: proxy.admin_users: has an empty user name");
    }

    #[test]
    fn auth_query_takes_the_user_name_as_its_only_parameter() {
        let with_user = |q: &str| format!("  auth_user: pgbouncer\n  auth_query: {q}\n");
        let e = refused(&with_user("SELECT usename, passwd FROM pg_shadow WHERE usename = 'x'"));
        assert_eq!(e, "p.yml:14: proxy.auth_query: must take the user name as the parameter $1");
        let e = refused(&with_user("SELECT u, p FROM users WHERE u = $1 AND db = $2"));
        assert_eq!(e, "p.yml:14: proxy.auth_query: takes $2, but its only parameter is the user name, $1");
        let e = refused(&with_user("SELECT u, p FROM users WHERE u = $10"));
        assert_eq!(e, "p.yml:14: proxy.auth_query: takes $10, but its only parameter is the user name, $1");
        let e = refused("  auth_user: pgbouncer\n  auth_query: ''\n");
        assert_eq!(e, "p.yml:14: proxy.auth_query: is empty (leave the key out for the built-in query)");
        let e = refused("  auth_query: SELECT u, p FROM users WHERE u = $1\n");
        assert_eq!(e, "p.yml:13: proxy.auth_query: set without proxy.auth_user");
        let p = pooling(&with_user("SELECT * FROM lookup($1) WHERE $1 <> ''"));
        assert_eq!(p.auth_query.as_deref(), Some("SELECT * FROM lookup($1) WHERE $1 <> ''"));
        assert_eq!(pooling("  auth_user: pgbouncer\n").auth_query, None, "None: the proxy's built-in query");
    }

    #[test]
    fn parameters_are_read_as_postgresql_reads_them() {
        assert_eq!(parameters("SELECT $1, $23, a$4, $$text$$, $tag$x$tag$, $"), [1, 23]);
        assert_eq!(parameters("$1"), [1]);
        assert_eq!(parameters("$99999999999999999999999"), [u64::MAX]);
    }

    #[test]
    fn transaction_mode_needs_the_users_secrets_unless_it_trusts_everyone() {
        let e = refused("  pool_mode: transaction\n");
        assert_eq!(
            e,
            "p.yml:13: proxy.auth_type: scram-sha-256 in transaction mode (proxy.pool_mode: transaction) needs the \
             users' secrets: set proxy.auth_file (a userlist.txt) or proxy.auth_user (to look them up with auth_query)"
        );
        let e = refused("  auth_type: md5\n  databases:\n    app: {pool_mode: transaction}\n");
        assert!(
            e.starts_with(
                "p.yml:13: proxy.auth_type: md5 in transaction mode (proxy.databases.app.pool_mode: transaction) needs"
            ),
            "{e}"
        );
        let e = refused("  databases:\n    app:\n      pool_mode: transaction\n");
        assert!(e.starts_with("p.yml:15: proxy.auth_type: scram-sha-256 in transaction mode"), "{e}");
        for ok in [
            "  pool_mode: transaction\n  auth_type: trust\n",
            "  pool_mode: transaction\n  auth_file: /etc/rampart/userlist.txt\n",
            "  pool_mode: transaction\n  auth_user: pgbouncer\n",
        ] {
            assert!(pooling(ok).any_transaction_mode(), "{ok}");
        }
        let p = pooling("  pool_mode: transaction\n  auth_file: /u\n  databases:\n    app: {pool_mode: session}\n");
        assert_eq!(p.for_database("app").pool_mode, PoolMode::Session);
    }

    #[test]
    fn admin_and_stats_users_take_a_list_or_a_comma_separated_string() {
        let p = pooling("  admin_users: alice, bob\n  stats_users:\n    - carol\n");
        assert_eq!(p.admin_users, ["alice", "bob"]);
        assert_eq!(p.stats_users, ["carol"]);
    }
}
