//! Control queries against the local server: the per-cycle probe, promote, reload, checkpoint,
//! replication slots and the bootstrap roles.
//!
//! Invariants:
//! * every query has a deadline (the HA loop has one); a query that errs or times out drops the
//!   cached connection (and asks the server to cancel it), so the next call starts clean;
//! * passwords never reach the server in clear: they are hashed client-side into SCRAM verifiers,
//!   sent as escaped literals in statements that run with statement logging switched off, and a
//!   failure of such a statement reports only its SQLSTATE; no statement text is ever logged.

use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use rampart_core::hot_standby::{ReplayPause, Setting, Values};
use rampart_core::observe::{RunningPg, WalPositions, Walsender};
use rampart_core::slots::ExistingSlot;
use rampart_core::{Lsn, Timeline};
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use crate::conf::conninfo_host_port;
use crate::error::{PgError, Result};
use crate::settings::{LocalConnect, PgSettings};

mod slots;
pub use slots::SlotReport;

/// `pg_promote` waits this long for the end of recovery.
const PROMOTE_WAIT_SECS: i32 = 60;
/// A CHECKPOINT legitimately takes long on a busy server; it gets at least this.
const CHECKPOINT_LIMIT: Duration = Duration::from_secs(120);

/// One row of `pg_stat_replication`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationPeer {
    /// Role it connected as.
    pub usename: Option<String>,
    /// Its `application_name` (the member name, for Rampart and Patroni replicas).
    pub application_name: Option<String>,
    /// Client address (`None` over a Unix socket).
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, `startup`, ...
    pub state: Option<String>,
    /// `async`, `sync`, `potential`, `quorum`.
    pub sync_state: Option<String>,
    /// Position in `synchronous_standby_names` (0 when asynchronous).
    pub sync_priority: Option<i32>,
    /// Last position the standby wrote.
    pub write_lsn: Option<Lsn>,
    /// Last position the standby flushed.
    pub flush_lsn: Option<Lsn>,
    /// Last position the standby replayed.
    pub replay_lsn: Option<Lsn>,
}

/// Everything one probe learns about the running server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// Primary: from the current WAL file name. Replica: the WAL receiver's timeline, else the
    /// replay timeline as of the last restartpoint (or minimum recovery point).
    pub timeline: Timeline,
    /// Primary: `pg_current_wal_flush_lsn()`.
    pub flush_lsn: Option<Lsn>,
    /// Replica: `pg_last_wal_receive_lsn()`.
    pub received_lsn: Option<Lsn>,
    /// Replica: `pg_last_wal_replay_lsn()`.
    pub replayed_lsn: Option<Lsn>,
    /// `pg_stat_wal_receiver.received_tli`.
    pub received_tli: Option<Timeline>,
    /// `pg_stat_wal_receiver.status`.
    pub wal_receiver_status: Option<String>,
    /// The WAL receiver's status is `streaming`.
    pub streaming: bool,
    /// Milliseconds since the WAL receiver last heard from its upstream (server clock).
    pub upstream_silent_ms: Option<u64>,
    /// `(host, port)` of `primary_conninfo`.
    pub upstream: Option<(String, u16)>,
    /// `pg_postmaster_start_time()` as PostgreSQL prints it.
    pub postmaster_start_time: String,
    /// `server_version_num`, e.g. 150008.
    pub server_version_num: i32,
    /// `pg_last_xact_replay_timestamp()` as PostgreSQL prints it.
    pub replayed_at: Option<String>,
    /// `pg_is_wal_replay_paused()` (false on a primary).
    pub replay_paused: bool,
    /// `pg_get_wal_replay_pause_state()` (`NotPaused` on a primary).
    pub replay_pause: ReplayPause,
    /// `synchronous_commit` in force.
    pub synchronous_commit: String,
    /// The hot-standby-critical settings the server runs with (`current_setting`).
    pub hot_standby: Values,
    /// `pg_stat_replication`, ordered by application name.
    pub replication: Vec<ReplicationPeer>,
    /// Database system identifier.
    pub system_identifier: String,
    /// `synchronous_standby_names` as the server applies it now.
    pub synchronous_standby_names: String,
    /// Primary: its persistent replication slots, listed right after the flush position (`None`
    /// in recovery), so that `status` publishes the slots and the position of one moment.
    pub slots: Option<Vec<ExistingSlot>>,
}

impl Probe {
    /// The part of the probe the core decides on.
    pub fn to_core(&self) -> RunningPg {
        RunningPg {
            in_recovery: self.in_recovery,
            timeline: self.timeline,
            wal: WalPositions { flush: self.flush_lsn, received: self.received_lsn, replayed: self.replayed_lsn },
            streaming: self.streaming,
            receiver_timeline: self.received_tli,
            upstream_silent_ms: self.upstream_silent_ms,
            upstream: self.upstream.clone(),
            walsenders: self
                .replication
                .iter()
                .map(|r| Walsender {
                    application_name: r.application_name.clone().unwrap_or_default(),
                    state: r.state.as_deref().unwrap_or_default().into(),
                    sync_state: r.sync_state.as_deref().unwrap_or_default().into(),
                    write: r.write_lsn,
                    flush: r.flush_lsn,
                    replay: r.replay_lsn,
                })
                .collect(),
            synchronous_standby_names: self.synchronous_standby_names.clone(),
            commit_waits_for: rampart_core::sync::AckPoint::of(&self.synchronous_commit),
            replay_pause: self.replay_pause,
            hot_standby: self.hot_standby.clone(),
            slots: self.slots.clone(),
        }
    }
}

/// A parameter whose new value waits for a restart: Patroni's `pending_restart_reason` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRestart {
    /// Parameter name, as PostgreSQL spells it.
    pub name: String,
    /// The value the server runs with.
    pub old_value: String,
    /// The value a restart would apply.
    pub new_value: String,
}

/// A role to create at bootstrap besides the replication and rewind roles.
#[derive(Clone, PartialEq, Eq)]
pub struct ExtraUser {
    /// Role name.
    pub name: String,
    /// Password, if any.
    pub password: Option<String>,
    /// Role options such as `createrole`, `createdb`, `connection limit 5` (case-insensitive).
    /// `LOGIN` is added unless `NOLOGIN` is given.
    pub options: Vec<String>,
}

impl std::fmt::Debug for ExtraUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraUser")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("options", &self.options)
            .finish()
    }
}

/// The agent's control connection to its own server.
pub struct Sql {
    config: tokio_postgres::Config,
    /// TLS as the superuser's libpq parameters ask (never over the Unix socket); the error names
    /// a wrong setting and is reported at every connection attempt.
    tls: std::result::Result<tokio_postgres_rustls::MakeRustlsConnect, String>,
    target: String,
    timeout: Duration,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql").field("target", &self.target).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Sql {
    /// Connects (lazily, at the first query) as the superuser to the `postgres` database over
    /// [`PgSettings::local`], with [`PgSettings::query_timeout`] per query.
    pub fn new(settings: &PgSettings) -> Sql {
        let mut config = tokio_postgres::Config::new();
        let target = match &settings.local {
            LocalConnect::Tcp(host) => {
                config.host(host);
                format!("{host}:{}", settings.port)
            }
            LocalConnect::Socket(dir) => {
                config.host_path(dir);
                format!("{}/.s.PGSQL.{}", dir.display(), settings.port)
            }
        };
        config
            .port(settings.port)
            .user(&settings.superuser.username)
            .dbname("postgres")
            .application_name("rampart")
            .connect_timeout(settings.query_timeout);
        if let Some(p) = &settings.superuser.password {
            config.password(p);
        }
        let tls = match &settings.local {
            LocalConnect::Tcp(_) => crate::tls::connector(&mut config, &settings.superuser),
            LocalConnect::Socket(_) => {
                let plain = crate::Credentials::without_password(settings.superuser.username.clone());
                let tls = crate::tls::connector(&mut config, &plain);
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                tls
            }
        };
        Sql { config, tls, target, timeout: settings.query_timeout, client: Mutex::new(None) }
    }

    /// Drops the cached connection (e.g. before stopping the server).
    pub async fn disconnect(&self) {
        *self.client.lock().await = None;
    }

    /// Reads the server's role, timeline, WAL positions, WAL receiver and replication state.
    pub async fn probe(&self) -> Result<Probe> {
        const STATE: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
                CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL \
                     ELSE pg_catalog.pg_current_wal_flush_lsn()::text END, \
                CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL \
                     ELSE pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8) END, \
                pg_catalog.pg_last_wal_receive_lsn()::text, \
                pg_catalog.pg_last_wal_replay_lsn()::text, \
                r.received_tli, r.status, \
                pg_catalog.current_setting('primary_conninfo'), \
                pg_catalog.pg_postmaster_start_time()::text, \
                pg_catalog.current_setting('server_version_num')::int4, \
                pg_catalog.pg_last_xact_replay_timestamp()::text, \
                CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_is_wal_replay_paused() ELSE false END, \
                s.system_identifier::text, \
                GREATEST(c.timeline_id, rc.min_recovery_end_timeline), \
                pg_catalog.current_setting('synchronous_standby_names'), \
                (EXTRACT(EPOCH FROM (pg_catalog.clock_timestamp() - r.last_msg_receipt_time)) * 1000)::int8, \
                CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_get_wal_replay_pause_state() \
                     ELSE 'not paused' END, \
                pg_catalog.current_setting('synchronous_commit'), \
                pg_catalog.current_setting('max_connections')::int8, \
                pg_catalog.current_setting('max_worker_processes')::int8, \
                pg_catalog.current_setting('max_wal_senders')::int8, \
                pg_catalog.current_setting('max_prepared_transactions')::int8, \
                pg_catalog.current_setting('max_locks_per_transaction')::int8 \
            FROM pg_catalog.pg_control_system() s \
            CROSS JOIN pg_catalog.pg_control_checkpoint() c \
            CROSS JOIN pg_catalog.pg_control_recovery() rc \
            LEFT JOIN pg_catalog.pg_stat_wal_receiver r ON true";
        const REPLICATION: &str =
            "SELECT usename::text, application_name, client_addr::text, state, sync_state, sync_priority, \
                write_lsn::text, flush_lsn::text, replay_lsn::text \
            FROM pg_catalog.pg_stat_replication ORDER BY application_name, pid";

        let mut slot = self.client.lock().await;
        let client = self.connected(&mut slot).await?;
        let state = timed("probe", self.timeout, client.query_one(STATE, &[])).await;
        let peers = match &state {
            Ok(_) => timed("probe of pg_stat_replication", self.timeout, client.query(REPLICATION, &[])).await,
            Err(_) => Ok(Vec::new()),
        };
        // A primary's slots, right after its flush position: what `status` publishes of both.
        let slots = match (&state, &peers) {
            (Ok(row), Ok(_)) if !row.get::<_, bool>(0) => slots::list_on(client, self.timeout).await.map(Some),
            _ => Ok(None),
        };
        let (row, peers, slots) = match (state, peers, slots) {
            (Ok(r), Ok(p), Ok(s)) => (r, p, s),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                reset(&mut slot);
                return Err(e);
            }
        };
        drop(slot);

        let parse_lsn = |text: Option<String>| -> Result<Option<Lsn>> {
            text.map(|t| t.parse().map_err(|e| PgError::Unexpected { what: "probe", detail: format!("{e}") }))
                .transpose()
        };
        let lsn = |i: usize| parse_lsn(row.get(i));
        let in_recovery: bool = row.get(0);
        let flush_lsn = lsn(1)?;
        let wal_file_tli: Option<String> = row.get(2);
        let received_lsn = lsn(3)?;
        let replayed_lsn = lsn(4)?;
        let received_tli: Option<i32> = row.get(5);
        let received_tli = received_tli.filter(|t| *t > 0).map(|t| t as Timeline);
        let wal_receiver_status: Option<String> = row.get(6);
        let conninfo: String = row.get(7);
        let replay_tli: Option<i32> = row.get(13);
        let timeline = if in_recovery {
            received_tli.or(replay_tli.filter(|t| *t > 0).map(|t| t as Timeline)).unwrap_or(0)
        } else {
            let hex = wal_file_tli.unwrap_or_default();
            u32::from_str_radix(&hex, 16)
                .map_err(|_| PgError::Unexpected { what: "probe", detail: format!("WAL file timeline {hex:?}") })?
        };
        Ok(Probe {
            in_recovery,
            timeline,
            flush_lsn,
            received_lsn,
            replayed_lsn,
            received_tli,
            streaming: wal_receiver_status.as_deref() == Some("streaming"),
            upstream_silent_ms: row.get::<_, Option<i64>>(15).map(|ms| ms.max(0) as u64),
            wal_receiver_status,
            upstream: conninfo_host_port(&conninfo),
            postmaster_start_time: row.get(8),
            server_version_num: row.get(9),
            replayed_at: row.get(10),
            replay_paused: row.get(11),
            system_identifier: row.get(12),
            synchronous_standby_names: row.get(14),
            slots,
            replay_pause: ReplayPause::parse(&row.get::<_, String>(16)),
            synchronous_commit: row.get(17),
            hot_standby: Values::from_pairs(Setting::ALL.into_iter().zip(18..).map(|(s, i)| (s, row.get::<_, i64>(i)))),
            replication: peers
                .iter()
                .map(|r| {
                    Ok(ReplicationPeer {
                        usename: r.get(0),
                        application_name: r.get(1),
                        client_addr: r.get(2),
                        state: r.get(3),
                        sync_state: r.get(4),
                        sync_priority: r.get(5),
                        write_lsn: parse_lsn(r.get(6))?,
                        flush_lsn: parse_lsn(r.get(7))?,
                        replay_lsn: parse_lsn(r.get(8))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        })
    }

    /// Whether the server is in recovery, and its WAL positions now (flush on a primary; received
    /// and replayed on a replica): the cheap part of [`Sql::probe`], for status answers.
    pub async fn wal_now(&self) -> Result<(bool, WalPositions)> {
        const WAL: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
                CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL \
                     ELSE pg_catalog.pg_current_wal_flush_lsn()::text END, \
                pg_catalog.pg_last_wal_receive_lsn()::text, \
                pg_catalog.pg_last_wal_replay_lsn()::text";
        let mut slot = self.client.lock().await;
        let client = self.connected(&mut slot).await?;
        let row = match timed("WAL positions", self.timeout, client.query_one(WAL, &[])).await {
            Ok(r) => r,
            Err(e) => {
                reset(&mut slot);
                return Err(e);
            }
        };
        drop(slot);
        let lsn = |i: usize| -> Result<Option<Lsn>> {
            row.get::<_, Option<String>>(i)
                .map(|t| t.parse().map_err(|e| PgError::Unexpected { what: "WAL positions", detail: format!("{e}") }))
                .transpose()
        };
        Ok((row.get(0), WalPositions { flush: lsn(1)?, received: lsn(2)?, replayed: lsn(3)? }))
    }

    /// Promotes a replica (`pg_promote(true, 60)`, waiting for the end of recovery), then runs a
    /// CHECKPOINT so the control file shows the new timeline (pg_rewind on the old primary reads
    /// it from there). A server that is already a primary just gets the checkpoint.
    pub async fn promote(&self) -> Result<()> {
        self.end_recovery().await?;
        self.checkpoint_apart().await
    }

    /// The first half of [`Sql::promote`]: `pg_promote(true, 60)` on a server in recovery; returns
    /// once the server runs as a primary on its new timeline (nothing to do on a primary).
    pub async fn end_recovery(&self) -> Result<()> {
        let limit = Duration::from_secs(PROMOTE_WAIT_SECS as u64 + 10).max(self.timeout);
        let in_recovery: bool =
            self.query_one_col("pg_is_in_recovery", "SELECT pg_catalog.pg_is_in_recovery()", self.timeout).await?;
        if in_recovery {
            tracing::info!("promoting postgres");
            let promoted: bool = self
                .query_one_col("pg_promote", &format!("SELECT pg_catalog.pg_promote(true, {PROMOTE_WAIT_SECS})"), limit)
                .await?;
            if !promoted {
                return Err(PgError::Unexpected {
                    what: "pg_promote",
                    detail: format!("not promoted within {PROMOTE_WAIT_SECS} s"),
                });
            }
        }
        Ok(())
    }

    /// The second half of [`Sql::promote`]: a CHECKPOINT on a connection of its own, so that the
    /// agent's probes (on the shared control connection) are not held up while a large
    /// checkpoint runs: the member key shows the new role and timeline as soon as recovery ended.
    pub async fn checkpoint_apart(&self) -> Result<()> {
        let limit = self.timeout.max(CHECKPOINT_LIMIT);
        let (client, connection) = timed("connect", self.timeout, self.config.connect(NoTls)).await?;
        let driver = tokio::spawn(connection);
        let r = timed("CHECKPOINT", limit, client.batch_execute("CHECKPOINT")).await;
        if r.is_err() {
            let _ = client.cancel_token().cancel_query(NoTls).await;
        }
        drop(client);
        let _ = driver.await;
        r
    }

    /// `pg_reload_conf()`: re-read the configuration files.
    pub async fn reload(&self) -> Result<()> {
        let _: bool = self.query_one_col("pg_reload_conf", "SELECT pg_catalog.pg_reload_conf()", self.timeout).await?;
        Ok(())
    }

    /// Waits until this server applies `synchronous_standby_names = want` (after a reload each
    /// backend re-reads the file before its next statement, so a fresh statement sees it once the
    /// postmaster has passed the reload on). True if it did within `limit`.
    pub async fn wait_for_synchronous_standby_names(&self, want: &str, limit: Duration) -> Result<bool> {
        const SQL: &str = "SELECT pg_catalog.current_setting('synchronous_standby_names')";
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let now: String = self.query_one_col("synchronous_standby_names", SQL, self.timeout).await?;
            if now == want {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Parameters whose new value waits for a restart (`pg_settings.pending_restart`), sorted,
    /// leaving out the recovery settings the role decides (see [`crate::conf::restart_would_apply`]):
    /// every promoted replica would otherwise report a pending restart.
    ///
    /// Each comes with its running value (`current_setting`) and the value a restart would
    /// apply: the last line for it in the configuration files (`pg_file_settings`), or its
    /// built-in default when no file sets it any more, a bare number in the setting's base unit
    /// shown in a readable unit as Patroni does ([`crate::conf::human_value`]). This is Patroni's
    /// `pending_restart_reason`.
    pub async fn pending_restart(&self) -> Result<Vec<PendingRestart>> {
        const SQL: &str = "SELECT s.name, pg_catalog.current_setting(s.name), \
                COALESCE(f.setting, s.boot_val), s.unit \
            FROM pg_catalog.pg_settings s \
            LEFT JOIN LATERAL (SELECT fs.setting FROM pg_catalog.pg_file_settings fs \
                WHERE pg_catalog.lower(fs.name) = pg_catalog.lower(s.name) \
                ORDER BY fs.seqno DESC LIMIT 1) f ON true \
            WHERE s.pending_restart ORDER BY s.name";
        let mut slot = self.client.lock().await;
        let client = self.connected(&mut slot).await?;
        match timed("pending_restart", self.timeout, client.query(SQL, &[])).await {
            Ok(rows) => Ok(rows
                .iter()
                .filter_map(|r| {
                    Some(PendingRestart {
                        name: r.try_get(0).ok()?,
                        old_value: r.try_get::<_, Option<String>>(1).ok()?.unwrap_or_default(),
                        new_value: crate::conf::human_value(
                            &r.try_get::<_, Option<String>>(2).ok()?.unwrap_or_default(),
                            r.try_get::<_, Option<String>>(3).ok()?.as_deref(),
                        ),
                    })
                })
                .filter(|p| crate::conf::restart_would_apply(&p.name))
                .collect()),
            Err(e) => {
                reset(&mut slot);
                Err(e)
            }
        }
    }

    /// `CHECKPOINT` (with at least a two-minute limit).
    pub async fn checkpoint(&self) -> Result<()> {
        self.execute("CHECKPOINT", "CHECKPOINT", self.timeout.max(CHECKPOINT_LIMIT)).await
    }

    /// Creates (or updates) the roles of a fresh cluster: the superuser's password, the
    /// replication role (`LOGIN REPLICATION`), the rewind role with the functions pg_rewind
    /// needs when one is configured, and `extra` users.
    pub async fn create_roles(&self, settings: &PgSettings, extra: &[ExtraUser]) -> Result<()> {
        let su = &settings.superuser;
        if su.password.is_some() {
            self.ensure_role(&su.username, &[], su.password.as_deref()).await?;
        }
        let repl = &settings.replication;
        self.ensure_role(&repl.username, &["LOGIN".into(), "REPLICATION".into()], repl.password.as_deref()).await?;
        if let Some(rw) = &settings.rewind {
            self.ensure_role(&rw.username, &["LOGIN".into()], rw.password.as_deref()).await?;
            let who = quote_ident(&rw.username);
            for f in [
                "pg_catalog.pg_ls_dir(text, boolean, boolean)",
                "pg_catalog.pg_stat_file(text, boolean)",
                "pg_catalog.pg_read_binary_file(text)",
                "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
            ] {
                self.execute(
                    "granting pg_rewind's functions",
                    &format!("GRANT EXECUTE ON FUNCTION {f} TO {who}"),
                    self.timeout,
                )
                .await?;
            }
        }
        for u in extra {
            let mut options = role_options(&u.options)?;
            if !options.iter().any(|o| o == "LOGIN" || o == "NOLOGIN") {
                options.insert(0, "LOGIN".into());
            }
            self.ensure_role(&u.name, &options, u.password.as_deref()).await?;
        }
        Ok(())
    }

    /// `CREATE ROLE` or `ALTER ROLE` with `options` and, when given, the password as a SCRAM
    /// verifier computed here.
    async fn ensure_role(&self, name: &str, options: &[String], password: Option<&str>) -> Result<()> {
        let mut slot = self.client.lock().await;
        let client = self.connected(&mut slot).await?;
        let exists = match timed(
            "looking up a role",
            self.timeout,
            client.query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[&name]),
        )
        .await
        {
            Ok(row) => row.is_some(),
            Err(e) => {
                reset(&mut slot);
                return Err(e);
            }
        };
        if exists && options.is_empty() && password.is_none() {
            return Ok(());
        }
        let verb = if exists { "ALTER" } else { "CREATE" };
        let mut stmt = format!("{verb} ROLE {}", quote_ident(name));
        if !options.is_empty() || password.is_some() {
            stmt.push_str(" WITH");
        }
        for o in options {
            stmt.push(' ');
            stmt.push_str(o);
        }
        let Some(password) = password else {
            let r = timed("creating or updating a role", self.timeout, client.batch_execute(&stmt)).await;
            match &r {
                Ok(()) => tracing::info!(role = name, "{} role", if exists { "updated" } else { "created" }),
                Err(_) => reset(&mut slot),
            }
            return r;
        };
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        stmt.push_str(" PASSWORD ");
        stmt.push_str(&quote_literal(&verifier));
        // Logging settings are evaluated when a statement arrives, so they are switched off in
        // a statement of their own, before the one holding the verifier.
        const QUIET: &str = "BEGIN; SET LOCAL log_statement = 'none'; SET LOCAL log_min_duration_statement = -1; \
            SET LOCAL log_min_error_statement = 'panic'; SET LOCAL pg_stat_statements.track_utility = off";
        let what = || format!("{} role {name:?} with a password", if exists { "updating" } else { "creating" });
        let result = async {
            timed("preparing a quiet transaction", self.timeout, client.batch_execute(QUIET)).await?;
            match timed_raw(self.timeout, client.batch_execute(&stmt)).await {
                Ok(()) => {}
                Err(Raw::Pg(e)) => {
                    let sqlstate = sqlstate(&e).unwrap_or("connection").to_string();
                    return Err(PgError::SecretQuery { what: what(), sqlstate });
                }
                Err(Raw::Timeout) => return Err(PgError::SecretQuery { what: what(), sqlstate: "timeout".into() }),
            }
            timed("committing", self.timeout, client.batch_execute("COMMIT")).await
        }
        .await;
        if result.is_err() {
            // Dropping the connection also rolls the transaction back.
            reset(&mut slot);
        } else {
            tracing::info!(role = name, "{} role with password", if exists { "updated" } else { "created" });
        }
        result
    }

    async fn query_one_col<T: for<'a> tokio_postgres::types::FromSql<'a>>(
        &self,
        what: &'static str,
        sql: &str,
        limit: Duration,
    ) -> Result<T> {
        let mut slot = self.client.lock().await;
        let client = self.connected(&mut slot).await?;
        match timed(what, limit, client.query_one(sql, &[])).await {
            Ok(row) => row.try_get(0).map_err(|e| PgError::Unexpected { what, detail: describe(&e) }),
            Err(e) => {
                reset(&mut slot);
                Err(e)
            }
        }
    }

    async fn execute(&self, what: &'static str, sql: &str, limit: Duration) -> Result<()> {
        let mut slot = self.client.lock().await;
        let client = self.connected(&mut slot).await?;
        let r = timed(what, limit, client.batch_execute(sql)).await;
        if r.is_err() {
            reset(&mut slot);
        }
        r
    }

    /// The cached connection, opened if needed.
    async fn connected<'a>(&self, slot: &'a mut Option<Client>) -> Result<&'a Client> {
        if slot.as_ref().is_some_and(|c| c.is_closed()) {
            *slot = None;
        }
        if slot.is_none() {
            let err = |detail: String| PgError::Connect { target: self.target.clone(), detail };
            let tls = self.tls.clone().map_err(err)?;
            let (client, connection) = match tokio::time::timeout(self.timeout, self.config.connect(tls)).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return Err(err(describe(&e))),
                Err(_) => return Err(err(format!("no answer within {:?}", self.timeout))),
            };
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %describe(&e), "control connection ended");
                }
            });
            *slot = Some(client);
        }
        Ok(slot.as_ref().expect("connection was just opened"))
    }
}

/// Forgets the cached connection, asking the server to cancel whatever it still runs for it.
fn reset(slot: &mut Option<Client>) {
    if let Some(client) = slot.take() {
        let token = client.cancel_token();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), token.cancel_query(NoTls)).await;
        });
    }
}

/// A failure before it is given a name.
enum Raw {
    Pg(tokio_postgres::Error),
    Timeout,
}

impl Raw {
    fn into_error(self, what: &'static str, timeout: Duration) -> PgError {
        match self {
            Raw::Pg(e) => PgError::Query { what, detail: describe(&e) },
            Raw::Timeout => PgError::QueryTimeout { what, timeout },
        }
    }
}

async fn timed_raw<T>(limit: Duration, fut: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, Raw> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Raw::Pg(e)),
        Err(_) => Err(Raw::Timeout),
    }
}

async fn timed<T>(
    what: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    timed_raw(limit, fut).await.map_err(|e| e.into_error(what, limit))
}

fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

/// The server's message (severity, text, SQLSTATE) or the client-side cause chain.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
    }
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// A role option from the configuration, upper-cased, if it is one PostgreSQL knows.
pub fn role_options(options: &[String]) -> Result<Vec<String>> {
    const KEYWORDS: &[&str] = &[
        "SUPERUSER",
        "NOSUPERUSER",
        "CREATEDB",
        "NOCREATEDB",
        "CREATEROLE",
        "NOCREATEROLE",
        "INHERIT",
        "NOINHERIT",
        "LOGIN",
        "NOLOGIN",
        "REPLICATION",
        "NOREPLICATION",
        "BYPASSRLS",
        "NOBYPASSRLS",
    ];
    options
        .iter()
        .map(|o| {
            let words: Vec<String> = o.split_whitespace().map(|w| w.to_ascii_uppercase()).collect();
            match words.as_slice() {
                [w] if KEYWORDS.contains(&w.as_str()) => Ok(w.clone()),
                [c, l, n] if c == "CONNECTION" && l == "LIMIT" && n.parse::<i32>().is_ok() => {
                    Ok(format!("CONNECTION LIMIT {n}"))
                }
                _ => Err(PgError::Settings(format!("unknown role option {o:?}"))),
            }
        })
        .collect()
}

pub use rampart_core::sql_quote::{quote_ident, quote_literal};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_option_whitelist() {
        let ok = role_options(&["createrole".into(), " CreateDB ".into(), "connection limit 5".into()]).unwrap();
        assert_eq!(ok, ["CREATEROLE", "CREATEDB", "CONNECTION LIMIT 5"]);
        assert!(role_options(&["superuser; DROP TABLE x".into()]).is_err());
        assert!(role_options(&["connection limit x".into()]).is_err());
        assert!(role_options(&["password 'x'".into()]).is_err());
    }

    #[test]
    fn probe_to_core() {
        let p = Probe {
            in_recovery: true,
            timeline: 3,
            flush_lsn: None,
            received_lsn: Some(Lsn(200)),
            replayed_lsn: Some(Lsn(100)),
            received_tli: Some(3),
            wal_receiver_status: Some("streaming".into()),
            streaming: true,
            upstream_silent_ms: Some(40),
            upstream: Some(("h".into(), 5432)),
            postmaster_start_time: "2026-01-01 00:00:00+00".into(),
            server_version_num: 150008,
            replayed_at: None,
            replay_paused: false,
            replay_pause: ReplayPause::NotPaused,
            synchronous_commit: "on".into(),
            hot_standby: Values::default(),
            replication: vec![ReplicationPeer {
                usename: Some("replicator".into()),
                application_name: Some("n2".into()),
                client_addr: None,
                state: Some("streaming".into()),
                sync_state: Some("quorum".into()),
                sync_priority: Some(1),
                write_lsn: Some(Lsn(180)),
                flush_lsn: Some(Lsn(170)),
                replay_lsn: Some(Lsn(160)),
            }],
            system_identifier: "1".into(),
            synchronous_standby_names: "ANY 1 (\"n2\")".into(),
            slots: None,
        };
        let core = p.to_core();
        assert!(core.in_recovery && core.streaming);
        assert_eq!(core.wal.best(), Lsn(200));
        assert_eq!(core.upstream, Some(("h".into(), 5432)));
        assert_eq!(core.synchronous_standby_names, "ANY 1 (\"n2\")");
        let w = &core.walsenders[0];
        assert_eq!((w.application_name.as_str(), w.sync_state.as_str(), w.flush), ("n2", "quorum", Some(Lsn(170))));
    }

    #[test]
    fn debug_hides_passwords() {
        let u = ExtraUser { name: "app".into(), password: Some("s3cret".into()), options: vec![] };
        assert!(!format!("{u:?}").contains("s3cret"));
        let mut s = PgSettings::new("n", "/d");
        s.superuser.password = Some("s3cret".into());
        assert!(!format!("{:?}", Sql::new(&s)).contains("s3cret"));
    }
}
