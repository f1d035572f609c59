//! The admin console on the PostgreSQL protocol, as PgBouncer's: `psql -p <proxy port>
//! rampart` (or `pgbouncer`) as one of `proxy.admin_users` (every command) or
//! `proxy.stats_users` (`SHOW` only), authenticated like a pooled client. The commands and
//! their result sets are [`crate::console`]'s; this module runs a session and fills the rows
//! from the pools, the clients and the settings.
//!
//! Invariant: the console never touches a server connection itself; PAUSE, RESUME and
//! RECONNECT act through the pools and the pause state the sessions obey, and RELOAD and
//! SHUTDOWN are handed to the proxy's main loop ([`Control`]) exactly as SIGHUP and SIGTERM.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::access_log::{AccessRecord, Outcome};
use crate::backend::{BackendKeyData, SqlState, TransactionStatus};
use crate::cancel::CancelKey;
use crate::clients::ClientState;
use crate::console::{
    encode_empty_query, encode_error, encode_help, encode_rows, Action, Command, ConfigRow, ConnectionRow,
    ConsoleError, DatabaseRow, ListRow, NodeRow, PoolRow, Show, Side, StatsRow, VersionRow,
};
use crate::frame::put_frame;
use crate::pooled_login::{authenticate, identity, read_frame};
use crate::pooling::Pooling;
use crate::pools_view::pool_lines;
use crate::relay::{send_error, Ended};
use crate::session::{fatal, SessionSettings, Shared};
use crate::startup::StartupMessage;
use crate::wire;

/// What the console asks of the proxy's main loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// RELOAD: as SIGHUP.
    Reload,
    /// SHUTDOWN: as SIGTERM.
    Shutdown,
}

/// Serves one admin console connection.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<R, W>(
    shared: &Shared,
    settings: &SessionSettings,
    pooling: Arc<Pooling>,
    mut client_r: R,
    mut client_w: W,
    mut cbuf: BytesMut,
    startup: StartupMessage,
    record: &mut AccessRecord,
    (addr, tls): (Option<IpAddr>, bool),
) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let id = match identity(&startup) {
        Ok(id) => id,
        Err(r) => {
            let _ = send_error(&mut client_w, &r.error).await;
            return Ended::from(r);
        }
    };
    let admin = pooling.admin_users.contains(&id.user);
    if !admin && !pooling.stats_users.contains(&id.user) {
        let r = fatal(
            Outcome::Refused,
            SqlState::new("28000"),
            format!("not allowed: user \"{}\" is in neither proxy.admin_users nor proxy.stats_users", id.user),
        );
        let _ = send_error(&mut client_w, &r.error).await;
        return Ended::from(r);
    }
    let out = BytesMut::new();
    let authenticated =
        authenticate(shared, settings, &pooling, &id, &mut client_r, &mut client_w, &mut cbuf, out, (addr, tls)).await;
    if let Err(r) = authenticated {
        let _ = send_error(&mut client_w, &r.error).await;
        return Ended::from(r);
    }
    let mut out = BytesMut::new();
    for (name, value) in [
        ("server_version", "15.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", "rampart"),
    ] {
        put_frame(&mut out, b'S', |d| {
            wire::put_cstr(d, name.as_bytes());
            wire::put_cstr(d, value.as_bytes());
        });
    }
    // A cancel key nobody can use: the console runs nothing that a cancel could stop.
    let key = CancelKey::new(vec![0u8; 4]).expect("four bytes are a valid key");
    BackendKeyData { pid: 0, key }.encode(&mut out);
    TransactionStatus::Idle.encode_ready_for_query(&mut out);
    loop {
        if client_w.write_all(&out).await.is_err() {
            break;
        }
        out.clear();
        let frame = match read_frame(&mut client_r, &mut cbuf).await {
            Ok(f) => f,
            Err(_) => break,
        };
        record.bytes_from_client += frame.len() as u64;
        match frame.tag() {
            b'X' => break,
            b'Q' => {
                let sql = wire::split_cstr(frame.body()).map(|(q, _)| String::from_utf8_lossy(q).into_owned());
                run(shared, &pooling, admin, sql.as_deref().unwrap_or(""), &mut out).await;
            }
            b'S' => {}
            _ => encode_error(&mut out, SqlState::PROTOCOL_VIOLATION, "the admin console takes simple queries only"),
        }
        if matches!(frame.tag(), b'Q' | b'S') {
            TransactionStatus::Idle.encode_ready_for_query(&mut out);
        }
    }
    Ended { outcome: Outcome::ClientClosed, sqlstate: None, error: None }
}

/// Runs one console command into `out`.
async fn run(shared: &Shared, pooling: &Pooling, admin: bool, sql: &str, out: &mut BytesMut) {
    let command = match Command::parse(sql) {
        Ok(c) => c,
        Err(e) => return e.encode(out),
    };
    if command.needs_admin() && !admin {
        if let Command::Action(a) = &command {
            ConsoleError::AdminAccessNeeded(a.tag()).encode(out);
        }
        return;
    }
    match command {
        Command::Empty => encode_empty_query(out),
        Command::Show(show) => self::show(shared, pooling, show, out),
        Command::Action(action) => {
            if let Err(message) = act(shared, &action).await {
                return encode_error(out, SqlState::new("08P01"), message);
            }
            action.encode_complete(out);
        }
    }
}

/// Carries out PAUSE, RESUME, RECONNECT, RELOAD or SHUTDOWN.
async fn act(shared: &Shared, action: &Action) -> Result<(), String> {
    match action {
        Action::Pause(db) => {
            shared.paused.send_modify(|p| match db {
                Some(d) => {
                    p.databases.insert(d.clone());
                }
                None => p.all = true,
            });
            // As PgBouncer: it returns once every server of those pools is back (their
            // transactions ended), and closes them.
            loop {
                let busy = shared
                    .pools
                    .figures()
                    .iter()
                    .filter(|f| db.as_deref().is_none_or(|d| d == f.key.database))
                    .map(|f| f.in_use)
                    .sum::<usize>();
                if busy == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            shared.pools.close_idle(db.as_deref());
            tracing::info!(database = db.as_deref().unwrap_or("*"), "PAUSE from the admin console");
        }
        Action::Resume(db) => {
            let mut was_paused = false;
            shared.paused.send_modify(|p| match db {
                Some(d) => was_paused = p.databases.remove(d),
                None => {
                    was_paused = p.all || !p.databases.is_empty();
                    *p = Default::default();
                }
            });
            if !was_paused {
                return Err(match db {
                    Some(d) => format!("database {d} is not paused"),
                    None => "the pooler is not paused".into(),
                });
            }
            tracing::info!(database = db.as_deref().unwrap_or("*"), "RESUME from the admin console");
        }
        Action::Reconnect(db) => shared.pools.reconnect(db.as_deref()),
        Action::Reload => shared.control(Control::Reload)?,
        Action::Shutdown => shared.control(Control::Shutdown)?,
    }
    Ok(())
}

/// Writes one `SHOW` result.
fn show(shared: &Shared, pooling: &Pooling, show: Show, out: &mut BytesMut) {
    let clients = shared.clients.snapshot();
    let paused = shared.paused.borrow().clone();
    match show {
        Show::Help => encode_help(out),
        Show::Pools => {
            let rows: Vec<PoolRow> = pool_lines(shared.pools.figures(), &clients)
                .into_iter()
                .map(|l| PoolRow {
                    cl_active: l.cl_active as u32,
                    cl_waiting: l.cl_waiting as u32,
                    cl_active_cancel_req: 0,
                    cl_waiting_cancel_req: 0,
                    sv_active: l.sv_active as u32,
                    sv_active_cancel: 0,
                    sv_being_canceled: 0,
                    sv_idle: l.sv_idle as u32,
                    sv_used: 0,
                    sv_tested: 0,
                    sv_login: l.sv_login as u32,
                    maxwait: l.max_wait,
                    pool_mode: pooling.mode_for(&l.database).as_str().to_string(),
                    database: l.database,
                    user: l.user,
                    backend: l.backend,
                })
                .collect();
            encode_rows(out, &rows);
        }
        Show::Clients => {
            let rows: Vec<ConnectionRow> = clients
                .iter()
                .map(|c| {
                    let (addr, port) = split_addr(&c.addr);
                    ConnectionRow {
                        side: Side::Client,
                        user: c.user.clone(),
                        database: c.database.clone(),
                        state: c.state().as_str().to_string(),
                        addr,
                        port,
                        local_addr: String::new(),
                        local_port: 0,
                        connect_time: c.connect_time,
                        request_time: c.connect_time,
                        wait: if c.state() == ClientState::Waiting { c.in_state_for() } else { Duration::ZERO },
                        close_needed: false,
                        ptr: String::new(),
                        link: String::new(),
                        remote_pid: c.server_pid(),
                        tls: if c.tls { "TLS".into() } else { String::new() },
                        application_name: String::new(),
                        prepared_statements: 0,
                    }
                })
                .collect();
            encode_rows(out, &rows);
        }
        Show::Servers => {
            let now = Instant::now();
            let wall = jiff::Timestamp::now();
            let ago = |at: Instant| {
                let span = jiff::SignedDuration::try_from(now.duration_since(at)).unwrap_or_default();
                wall.checked_sub(span).unwrap_or(wall)
            };
            let mut rows: Vec<ConnectionRow> = shared
                .pools
                .idle_servers()
                .into_iter()
                .map(|(key, _, pid, born)| server_row(&key.user, &key.database, &key.addr, "idle", pid, ago(born)))
                .collect();
            rows.extend(
                clients
                    .iter()
                    .filter(|c| c.server_pid() != 0)
                    .map(|c| server_row(&c.user, &c.database, "", "active", c.server_pid(), c.connect_time)),
            );
            encode_rows(out, &rows);
        }
        Show::Stats => {
            let rows: Vec<StatsRow> = shared
                .clients
                .totals()
                .into_iter()
                .map(|t| StatsRow {
                    database: t.database,
                    total_xact_count: t.xacts,
                    total_query_count: t.queries,
                    total_received: t.received,
                    total_sent: t.sent,
                    total_xact_time: t.xact_us,
                    total_wait_time: t.wait_us,
                    ..StatsRow::default()
                })
                .collect();
            encode_rows(out, &rows);
        }
        Show::Databases => {
            let primary = shared.routes.borrow().primary.clone();
            let (host, port) = match &primary {
                Some(p) => split_addr(&p.addr()),
                None => (String::new(), 0),
            };
            // One read of the pools for every row.
            let figures = shared.pools.figures();
            let mut names: Vec<String> = pooling.databases.keys().cloned().collect();
            names.extend(figures.iter().map(|f| f.key.database.clone()));
            names.sort();
            names.dedup();
            let rows: Vec<DatabaseRow> = names
                .into_iter()
                .map(|name| {
                    let limits = pooling.limits_for(&name);
                    let current =
                        figures.iter().filter(|f| f.key.database == name).map(|f| f.idle + f.in_use).sum::<usize>();
                    DatabaseRow {
                        host: primary.as_ref().map(|_| host.clone()),
                        port,
                        database: name.clone(),
                        force_user: None,
                        pool_size: limits.size as u32,
                        min_pool_size: limits.min_size as u32,
                        reserve_pool_size: limits.reserve as u32,
                        server_lifetime: limits.lifetime.map_or(0, |d| d.as_secs() as u32),
                        pool_mode: Some(pooling.mode_for(&name).as_str().to_string()),
                        max_connections: limits.max_db.unwrap_or(0) as u32,
                        current_connections: current as u32,
                        paused: paused.holds(&name),
                        disabled: false,
                        name,
                    }
                })
                .collect();
            encode_rows(out, &rows);
        }
        Show::Config => {
            let secs = |d: Option<Duration>| d.map_or(0, |d| d.as_secs()).to_string();
            let defaults = crate::pool::Limits::default();
            let rows: Vec<ConfigRow> = [
                ("pool_mode", pooling.mode.as_str().to_string(), "session".to_string()),
                ("default_pool_size", pooling.limits.size.to_string(), defaults.size.to_string()),
                ("min_pool_size", pooling.limits.min_size.to_string(), defaults.min_size.to_string()),
                ("reserve_pool_size", pooling.limits.reserve.to_string(), defaults.reserve.to_string()),
                ("reserve_pool_timeout", pooling.limits.reserve_after.as_secs().to_string(), "5".into()),
                ("max_client_conn", pooling.max_client_conn.to_string(), "100".into()),
                ("server_idle_timeout", secs(pooling.limits.idle_timeout), "600".into()),
                ("server_lifetime", secs(pooling.limits.lifetime), "3600".into()),
                ("query_wait_timeout", secs(pooling.limits.wait_timeout), "120".into()),
                ("idle_transaction_timeout", secs(pooling.idle_transaction_timeout), "0".into()),
                ("auth_user", pooling.auth_user.clone().unwrap_or_default(), String::new()),
                ("admin_users", pooling.admin_users.join(","), String::new()),
                ("stats_users", pooling.stats_users.join(","), String::new()),
                ("switchover_drain_timeout", pooling.drain_timeout.as_secs().to_string(), "5".into()),
            ]
            .into_iter()
            .map(|(key, value, default)| ConfigRow { key: key.into(), value, default, changeable: true })
            .collect();
            encode_rows(out, &rows);
        }
        Show::Lists => {
            let figures = shared.pools.figures();
            let mut users: Vec<&str> = figures.iter().map(|f| f.key.user.as_str()).collect();
            users.sort();
            users.dedup();
            let mut dbs: Vec<&str> = figures.iter().map(|f| f.key.database.as_str()).collect();
            dbs.sort();
            dbs.dedup();
            let sum = |f: fn(&crate::pools::PoolFigures) -> usize| figures.iter().map(f).sum::<usize>() as u32;
            let count = |s: ClientState| clients.iter().filter(|c| c.state() == s).count() as u32;
            let rows: Vec<ListRow> = [
                ("databases", dbs.len() as u32),
                ("users", users.len() as u32),
                ("pools", figures.len() as u32),
                ("free_clients", 0),
                ("used_clients", clients.len() as u32),
                ("login_clients", 0),
                ("waiting_clients", count(ClientState::Waiting)),
                ("free_servers", 0),
                ("used_servers", sum(|f| f.idle + f.in_use)),
                ("idle_servers", sum(|f| f.idle)),
                ("active_servers", sum(|f| f.in_use)),
                ("login_servers", sum(|f| f.opening)),
            ]
            .into_iter()
            .map(|(list, items)| ListRow { list: list.into(), items })
            .collect();
            encode_rows(out, &rows);
        }
        Show::Version => {
            encode_rows(out, &[VersionRow { version: format!("rampart {}", env!("CARGO_PKG_VERSION")) }]);
        }
        Show::PoolNodes => encode_rows(out, &node_rows(shared)),
    }
}

/// `SHOW POOL_NODES`: the routed members, the primary first, with what the splitter sent each.
fn node_rows(shared: &Shared) -> Vec<NodeRow> {
    let routes = shared.routes.borrow().clone();
    let figures = shared.split().map(|s| s.figures()).unwrap_or_default();
    let positions = shared.split().map(|s| {
        let p = s.positions();
        let primary = p.latest_primary();
        routes.replicas.iter().map(|b| (b.addr(), primary.zip(p.replica(&b.addr())))).collect::<Vec<_>>()
    });
    let sent = |addr: &str| figures.per_backend.iter().find(|(a, _)| a == addr).map_or(0, |(_, n)| *n);
    let total: f64 = routes.replicas.iter().map(|b| f64::from(b.weight)).sum();
    let share = |b: &crate::topology::Backend| if total > 0.0 { f64::from(b.weight) / total } else { 0.0 };
    let members = routes.primary.iter().map(|b| (b, true)).chain(routes.replicas.iter().map(|b| (b, false)));
    members
        .enumerate()
        .map(|(i, (b, primary))| {
            let addr = b.addr();
            let delay = positions
                .as_ref()
                .and_then(|p| p.iter().find(|(a, _)| *a == addr).and_then(|(_, lsns)| *lsns))
                .map_or(String::new(), |(p, r)| p.saturating_sub(r).to_string());
            NodeRow {
                node_id: i as u32,
                name: b.name.clone(),
                hostname: b.host.clone(),
                port: u32::from(b.port),
                status: "up".into(),
                lb_weight: format!("{:.6}", if primary { 0.0 } else { share(b) }),
                role: if primary { "primary" } else { "standby" }.into(),
                select_cnt: sent(&addr),
                replication_delay: if primary { "0".into() } else { delay },
            }
        })
        .collect()
}

fn server_row(user: &str, database: &str, addr: &str, state: &str, pid: u32, at: jiff::Timestamp) -> ConnectionRow {
    let (addr, port) = split_addr(addr);
    ConnectionRow {
        side: Side::Server,
        user: user.into(),
        database: database.into(),
        state: state.into(),
        addr,
        port,
        local_addr: String::new(),
        local_port: 0,
        connect_time: at,
        request_time: at,
        wait: Duration::ZERO,
        close_needed: false,
        ptr: String::new(),
        link: String::new(),
        remote_pid: pid,
        tls: String::new(),
        application_name: String::new(),
        prepared_statements: 0,
    }
}

/// `host:port` split; the port 0 when there is none.
fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']).to_string(), p.parse().unwrap_or(0)),
        None => (addr.to_string(), 0),
    }
}
