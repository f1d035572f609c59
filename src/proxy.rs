//! `rampart proxy -c FILE`: the PostgreSQL-protocol router (crate `rampart-proxy`) run against
//! the cluster the configuration file names.
//!
//! The configuration file can be a member's own (with a `proxy` section added) or a small file
//! with nothing but `scope`, `etcd3` and `proxy` on an application host (see
//! [`rampart_config::ProxyConfig`]).
//!
//! Start-up order: the configuration is validated (a missing `proxy` section is refused), the
//! listeners (and the admin port, `proxy.listen_admin`, when set) are bound (a port in use is reported at
//! once), then the follower starts reading the cluster from etcd (woken by a watch on the
//! cluster's keys and re-reading every second, since a watch can go silent), and connections are
//! served until SIGTERM or SIGINT. The signal handlers are installed first, so that no signal
//! kills the proxy by default.
//!
//! With `proxy.vip`, the proxies sharing the address elect its holder through etcd
//! ([`crate::proxy_vip`]); a stopping holder gives the address up and releases its claim before
//! anything else, so another proxy serves the address while this one drains.
//!
//! Stop (SIGTERM/SIGINT): the listeners are closed at once; sessions end with FATAL 57P01 as soon
//! as they are idle, queries and transactions in progress get `proxy.shutdown_timeout` seconds to
//! finish (a second signal cuts that short), then every session left gets 57P01 and the proxy
//! exits 0. The admin port stops last.
//!
//! Reload (SIGHUP): the file is read again; when it is valid, what can change live is applied to
//! new connections and what needs a restart is named in the log ([`rampart_config::ReloadPlan`]);
//! when it is not, the proxy says why and keeps the configuration in force. Open sessions are
//! never touched by a reload.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rampart_config::{AuthType, ProxyConfig, ReloadPlan, RoPolicy};
use rampart_dcs::{Dcs, WakeOn};
use rampart_proxy::access_log::AccessLog;
use rampart_proxy::admin::{self, Admin};
use rampart_proxy::auth_file::AuthFile;
use rampart_proxy::console_session::Control;
use rampart_proxy::hba::{Hba, Method};
use rampart_proxy::lifecycle::Phase;
use rampart_proxy::pool::Limits;
use rampart_proxy::pooling::{DatabaseOverride, Pooling, Rules};
use rampart_proxy::server;
use rampart_proxy::session::{Balance, SessionSettings, Shared};
use rampart_proxy::stats::Stats;
use rampart_proxy::topology::{Policy, Routes};
use rampart_proxy::workers::Workers;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

/// The name the proxy uses towards etcd (it never writes a member key).
const DCS_CLIENT_NAME: &str = "rampart-proxy";

/// Loads the configuration, then proxies until told to stop.
pub fn run(config_path: &Path) -> Result<()> {
    let loaded = rampart_config::load_proxy(config_path)?;
    crate::logging::init(&loaded.config.log, crate::logging::PROXY_LOG_FILE)?;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let cfg = loaded.config;
    raise_open_files_limit();
    // The accept loops, the DCS follower and the admin port share one thread; sessions run on
    // their own worker threads (rampart_proxy::workers).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(config_path, cfg))
}

async fn run_async(config_path: &Path, cfg: ProxyConfig) -> Result<()> {
    let mut signals = Signals::install()?;
    let proxy = cfg.proxy.clone();
    let dynamic = &cfg.dcs;
    // Certificate files are read before anything is bound, so a bad file is refused at start.
    let tls = match &proxy.certfile {
        Some(cert) => Some(rampart_proxy::tls::server_config(cert, proxy.keyfile.as_deref())?),
        None => None,
    };
    // So are the pooling files (users' secrets, client authentication rules).
    let pooling = pooling_settings(&proxy)?;
    // So is the access log's path: it is opened (created) before the ports are bound.
    let access_log = AccessLog::default();
    access_log.reopen(proxy.access_log.as_deref()).context("proxy.access_log")?;
    let listeners =
        server::bind(&proxy.listen.to_string(), proxy.listen_ro.as_ref().map(|a| a.to_string()).as_deref()).await?;
    let admin_listener = match &proxy.listen_admin {
        Some(addr) => Some(admin::bind(&addr.to_string()).await?),
        None => None,
    };
    info!(
        rw = %proxy.listen,
        ro = %proxy.listen_ro.as_ref().map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        admin = %proxy.listen_admin.as_ref().map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        scope = %cfg.scope,
        "rampart proxy listening"
    );
    let (routes_tx, routes_rx) = watch::channel(Routes::default());
    let stats = Arc::new(Stats::default());
    let policy = Policy { max_lag: proxy.max_lag, default_ttl: Duration::from_secs(dynamic.ttl) };

    // The sessions' shared state: the admin port reads its pools and pooled clients.
    let mut shared = Shared::new(routes_rx.clone(), session_settings(&proxy)).with_stats(stats.clone());
    let split = match &proxy.load_balance {
        Some(lb) => {
            // The patterns were compiled when the file was checked: this cannot fail here.
            let split = rampart_proxy::split::state::Splitting::new(lb.clone()).context("proxy.load_balance")?;
            tracing::info!(
                disable_load_balance_on_write = lb.on_write.as_str(),
                "read/write splitting on the read-write port"
            );
            let split = Arc::new(split);
            shared.set_split(split.clone());
            Some(split)
        }
        None => None,
    };
    let id = proxy_id();
    let (vip_tx, vip_rx) = match &proxy.vip {
        Some(vip) => {
            let (tx, rx) = watch::channel(crate::proxy_vip::initial_figures(vip, &id));
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    // Served from here on, before etcd is reached: until the first read the page says so.
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_server = admin_listener.map(|listener| {
        let state = Admin {
            scope: cfg.scope.clone(),
            stats: stats.clone(),
            routes: routes_rx,
            policy,
            pools: shared.pools.clone(),
            clients: shared.clients.clone(),
            split,
            vip: vip_rx,
        };
        tokio::spawn(admin::serve(listener, Arc::new(state), async move {
            let _ = admin_stopped.await;
        }))
    });

    let dcs = rampart_dcs::EtcdDcs::connect(
        crate::agent::settings::etcd_options(&cfg.etcd3, dynamic.retry_timeout),
        cfg.prefix(),
        DCS_CLIENT_NAME.to_string(),
        dynamic.ttl,
    )
    .await
    .context("etcd3 settings")?;

    let wake = Arc::new(Notify::new());
    let watcher = dcs.spawn_watcher_with(wake.clone(), WakeOn::AnyEvent);
    let read_dcs = dcs.clone();
    // The last snapshot read, for the switchover drain reports (no extra reads of etcd).
    let (cluster_tx, cluster_rx) = watch::channel(None::<Arc<rampart_core::Cluster>>);
    let cluster_tx = Arc::new(cluster_tx);
    let follower = tokio::spawn(server::follow(
        move || {
            let dcs = read_dcs.clone();
            let cluster_tx = cluster_tx.clone();
            async move {
                let read = dcs.read_cluster(dcs.op_deadline()).await;
                if let Ok(c) = &read {
                    cluster_tx.send_replace(Some(Arc::new(c.clone())));
                }
                read
            }
        },
        wake,
        policy,
        routes_tx,
        stats.clone(),
    ));

    if let Some(tls) = tls {
        shared = shared.with_tls(tls);
    }
    shared.access_log = access_log;
    shared.set_pooling(pooling);
    let (control_tx, mut control_rx) = tokio::sync::mpsc::unbounded_channel();
    shared.set_control(control_tx);
    let shared = Arc::new(shared);
    let pool_keeper = tokio::spawn(server::maintain_pools(shared.pools.clone(), shared.routes.clone()));
    // Read-your-writes: every routed member's WAL position, read beside the sessions.
    let _position_reader = shared.split().map(|split| {
        tokio::spawn(rampart_proxy::split::monitor::run(
            shared.routes.clone(),
            shared.pools.clone(),
            split.clone(),
            shared.settings().connect_timeout,
        ))
    });
    // The proxies' virtual address: claimed through etcd, held while the claim covers it.
    let election = proxy.vip.clone().zip(vip_tx).map(|(vip, figures)| {
        crate::proxy_vip::Election::start(dcs.clone(), vip, dynamic.ttl, id.clone(), cluster_rx.clone(), figures)
    });
    let reporter_stop = Arc::new(Notify::new());
    let drain_reporter =
        tokio::spawn(report_drains(dcs.clone(), id, shared.clone(), cluster_rx, reporter_stop.clone()));
    let workers = Arc::new(Workers::start(proxy.workers, shared.clone()).context("starting proxy workers")?);
    // Kept until the end: dropping the last handle stops the workers, and their sessions with them.
    let accepting = listeners.serve(workers.clone());
    let mut in_force = cfg;
    let stop = loop {
        let event = tokio::select! {
            e = signals.next() => e,
            Some(c) = control_rx.recv() => match c {
                Control::Reload => Event::Reload,
                Control::Shutdown => Event::Stop("SHUTDOWN (admin console)"),
            },
        };
        match event {
            Event::Stop(name) => break name,
            Event::Reload => reload(config_path, &mut in_force, &shared),
        }
    };
    // The address goes to another proxy before this one stops serving: clients that connect to
    // it from now on reach that one (new connections here are refused once the listeners close).
    if let Some(election) = election {
        election.stop(VIP_STOP_BOUND).await;
    }
    stop_gracefully(stop, accepting, &shared, &mut signals, Duration::from_secs(in_force.proxy.shutdown_timeout)).await;
    drop(workers);
    let _ = admin_stop.send(());
    if let Some(server) = admin_server {
        // Bounded: the admin server gives its open connections a short grace, then drops them.
        let _ = server.await;
    }
    watcher.abort();
    follower.abort();
    pool_keeper.abort();
    // Withdrawn at once rather than left to expire: a switchover then waits for no one.
    reporter_stop.notify_one();
    if let Ok(Ok(Some(registration))) = tokio::time::timeout(Duration::from_secs(2), drain_reporter).await {
        let _ = registration.unregister(dcs.op_deadline()).await;
    }
    Ok(())
}

/// How long a stopping proxy waits for its virtual address to be given up and its claim released
/// (giving up is bounded by the claim's lease; the release is one etcd call).
const VIP_STOP_BOUND: Duration = Duration::from_secs(15);

/// This running proxy's id towards etcd: `<hostname>-<pid>` (no `/`), unique among running
/// proxies.
fn proxy_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim().replace('/', "_"), std::process::id())
}

/// How long a proxy's registration outlives it (its lease), in seconds.
const REGISTRATION_TTL: u64 = 10;

/// While any database is pooled by transaction, registers this proxy under the cluster's keys
/// and reports when it holds no open transaction on a leader that is being switched over, so
/// the leader stops PostgreSQL only then (or after the proxies' `drain_timeout`). The report
/// is computed by the core ([`rampart_core::drain::report`]) and written only when it changes.
/// Returns the registration once `stop` is notified, for the caller to withdraw.
async fn report_drains(
    dcs: rampart_dcs::EtcdDcs,
    id: String,
    shared: Arc<Shared>,
    mut cluster: watch::Receiver<Option<Arc<rampart_core::Cluster>>>,
    stop: Arc<Notify>,
) -> Option<rampart_dcs::ProxyRegistration> {
    let mut registration: Option<rampart_dcs::ProxyRegistration> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_keep_alive = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = cluster.changed() => if r.is_err() { return registration },
            () = stop.notified() => return registration,
        }
        let pooling = shared.pooling();
        if !pooling.any_transaction() {
            continue;
        }
        let Some(c) = cluster.borrow().clone() else { continue };
        let wall_ms = jiff::Timestamp::now().as_millisecond();
        // The pools are read (under their lock) only when a switchover asks for the count.
        let report = rampart_core::drain::report(&c, wall_ms, pooling.drain_timeout.as_secs(), |leader| {
            shared.pools.figures().iter().filter(|f| f.backend == leader).map(|f| f.in_use).sum()
        });
        match &registration {
            None => match dcs.register_proxy(&id, &report, REGISTRATION_TTL, dcs.op_deadline()).await {
                Ok(r) => {
                    info!(id = %id, "registered with the cluster (the leader waits for this proxy's transactions at a switchover)");
                    registration = Some(r);
                    last_keep_alive = Instant::now();
                }
                Err(e) => warn!("registering the proxy with the cluster: {e}"),
            },
            Some(r) => {
                match r.update(&report, dcs.op_deadline()).await {
                    Ok(true) => info!(drained = ?report.drained, "switchover drain report written"),
                    Ok(false) => {}
                    Err(e) => warn!("writing the switchover drain report: {e}"),
                }
                if last_keep_alive.elapsed() >= Duration::from_secs(REGISTRATION_TTL / 3) {
                    match r.keep_alive(dcs.op_deadline()).await {
                        Ok(()) => last_keep_alive = Instant::now(),
                        Err(e) => warn!("keeping the proxy's registration alive: {e}"),
                    }
                }
            }
        }
    }
}

/// The graceful stop: close the listeners, let sessions finish within `bound`, then end the rest.
async fn stop_gracefully(
    signal: &str,
    accepting: server::Accepting,
    shared: &Shared,
    signals: &mut Signals,
    bound: Duration,
) {
    let began = Instant::now();
    accepting.close().await;
    shared.lifecycle.advance(Phase::Draining);
    info!(
        open = shared.lifecycle.open_connections(),
        "rampart proxy stopping ({signal}): listeners closed; idle sessions end now, busy ones get up to {} s \
         (proxy.shutdown_timeout; a second signal ends them at once)",
        bound.as_secs()
    );
    let waited = async {
        loop {
            match signals.next().await {
                Event::Stop(name) => return name,
                Event::Reload => info!("SIGHUP while stopping: not reloading"),
            }
        }
    };
    tokio::select! {
        () = shared.lifecycle.all_closed() => {}
        () = tokio::time::sleep(bound) => {
            info!(open = shared.lifecycle.open_connections(), "shutdown timeout reached: ending the sessions left with 57P01");
        }
        name = waited => {
            info!(open = shared.lifecycle.open_connections(), "{name} again: ending the sessions left with 57P01");
        }
    }
    shared.lifecycle.advance(Phase::Closing);
    // Each session writes its 57P01 between two messages and closes; a client that does not read
    // cannot hold the exit up for long.
    if tokio::time::timeout(CLOSE_GRACE, shared.lifecycle.all_closed()).await.is_err() {
        warn!(
            open = shared.lifecycle.open_connections(),
            "connections still open after the close grace; exiting anyway"
        );
    }
    info!("rampart proxy stopped after {:.1} s", began.elapsed().as_secs_f64());
}

/// How long sessions get to send their 57P01 and close once the wait is over.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The session settings a `proxy` section gives.
fn session_settings(proxy: &rampart_config::Proxy) -> SessionSettings {
    SessionSettings {
        hold_timeout: Duration::from_secs(proxy.hold_timeout),
        fallback_to_primary: proxy.fallback_to_primary,
        balance: match proxy.ro_policy {
            RoPolicy::RoundRobin => Balance::RoundRobin,
            RoPolicy::LeastConnections => Balance::LeastConnections,
        },
        ..SessionSettings::default()
    }
}

/// The pooling settings a `proxy` section gives, with the files it names read and checked
/// (`auth_file`, `auth_hba_file`): a file that cannot be read or parsed is refused with its name
/// and, for the rules, the line.
fn pooling_settings(proxy: &rampart_config::Proxy) -> Result<Pooling> {
    let p = &proxy.pooling;
    let limits = |db: Option<&str>| {
        let s = match db {
            Some(db) => p.for_database(db),
            None => p.for_database(""),
        };
        Limits {
            size: s.pool_size,
            min_size: s.min_pool_size,
            reserve: s.reserve_pool_size,
            reserve_after: p.reserve_pool_timeout,
            idle_timeout: p.server_idle_timeout,
            lifetime: p.server_lifetime,
            wait_timeout: p.query_wait_timeout,
            max_db: s.max_db_connections,
        }
    };
    let auth_file = match &p.auth_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("proxy.auth_file: {}", path.display()))?;
            AuthFile::parse(&text).map_err(|e| anyhow::anyhow!("proxy.auth_file: {}: {e}", path.display()))?
        }
        None => AuthFile::default(),
    };
    let rules = match p.auth_type {
        AuthType::ScramSha256 => Rules::Method(Method::ScramSha256),
        AuthType::Md5 => Rules::Method(Method::Md5),
        AuthType::Plain => Rules::Method(Method::Password),
        AuthType::Trust => Rules::Method(Method::Trust),
        AuthType::Hba => {
            let path = p.auth_hba_file.as_ref().context("proxy.auth_hba_file: missing (auth_type is hba)")?;
            let text =
                std::fs::read_to_string(path).with_context(|| format!("proxy.auth_hba_file: {}", path.display()))?;
            Rules::Hba(Hba::parse(&text).map_err(|e| anyhow::anyhow!("proxy.auth_hba_file: {}: {e}", path.display()))?)
        }
    };
    let databases = p
        .databases
        .keys()
        .map(|db| (db.clone(), DatabaseOverride { limits: limits(Some(db)), mode: p.for_database(db).pool_mode }))
        .collect();
    Ok(Pooling {
        mode: p.pool_mode,
        limits: limits(None),
        databases,
        rules,
        auth_file,
        auth_user: p.auth_user.clone(),
        auth_query: p.auth_query.clone().unwrap_or_else(|| rampart_proxy::auth_query::DEFAULT.to_string()),
        max_client_conn: p.max_client_conn,
        idle_transaction_timeout: p.idle_transaction_timeout,
        admin_users: p.admin_users.clone(),
        stats_users: p.stats_users.clone(),
        drain_timeout: p.switchover_drain_timeout,
        reset_query: p.server_reset_query.clone(),
    })
}

/// SIGHUP: reads `path` again and applies what can change live; keeps `in_force` (and
/// everything else) when the file or a file it names is invalid. Existing sessions are untouched.
fn reload(path: &Path, in_force: &mut ProxyConfig, shared: &Shared) {
    let loaded = match rampart_config::load_proxy(path) {
        Ok(l) => l,
        Err(e) => {
            error!("reload refused, the configuration in force stays: {e}");
            return;
        }
    };
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let new = loaded.config;
    // Certificates are read again even when their paths did not change: a renewal replaces the
    // files in place.
    let tls = match &new.proxy.certfile {
        Some(cert) => match rampart_proxy::tls::server_config(cert, new.proxy.keyfile.as_deref()) {
            Ok(t) => Some(t),
            Err(e) => {
                error!("reload refused, the configuration in force stays: proxy.certfile: {e}");
                return;
            }
        },
        None => None,
    };
    // Reopened even when unchanged, so that logrotate can move the file away.
    if let Err(e) = shared.access_log.reopen(new.proxy.access_log.as_deref()) {
        error!("reload refused, the configuration in force stays: proxy.access_log: {e}");
        return;
    }
    if let Err(e) = crate::logging::reconfigure(&new.log) {
        error!("reload refused, the configuration in force stays: log: {e:#}");
        return;
    }
    let pooling = match pooling_settings(&new.proxy) {
        Ok(p) => p,
        Err(e) => {
            error!("reload refused, the configuration in force stays: {e:#}");
            return;
        }
    };
    let plan = ReloadPlan::new(in_force, &new);
    shared.set_settings(session_settings(&new.proxy));
    shared.set_pooling(pooling);
    shared.set_tls(tls);
    // Keys that need a restart keep their running values, so the next reload names them again.
    let old = std::mem::replace(in_force, new);
    in_force.scope = old.scope;
    in_force.namespace = old.namespace;
    in_force.etcd3 = old.etcd3;
    in_force.dcs = old.dcs;
    let (p, o) = (&mut in_force.proxy, old.proxy);
    (p.listen, p.listen_ro, p.listen_admin, p.workers, p.workers_set, p.max_lag, p.vip) =
        (o.listen, o.listen_ro, o.listen_admin, o.workers, o.workers_set, o.max_lag, o.vip);
    info!(path = %path.display(), changed = ?plan.live, "configuration reloaded");
    if !plan.restart.is_empty() {
        warn!(keys = ?plan.restart, "changed in the file but applied only after a restart: the running values stay");
    }
}

/// What a signal asks for.
enum Event {
    /// SIGTERM or SIGINT, by name.
    Stop(&'static str),
    /// SIGHUP.
    Reload,
}

/// The proxy's signal handlers, installed before anything else so that none of these signals
/// can kill it with the default action.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        let install =
            |kind: SignalKind, name: &str| signal(kind).with_context(|| format!("installing the {name} handler"));
        Ok(Signals {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.term.recv() => Event::Stop("SIGTERM"),
            _ = self.int.recv() => Event::Stop("SIGINT"),
            _ = self.hup.recv() => Event::Reload,
        }
    }
}

/// Raises the soft limit on open files to the hard one: every client and every server
/// connection is a file, and the usual soft limit (1024) would refuse clients long before
/// `max_client_conn` (PgBouncer's packages raise it in their service file instead).
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!("open files limit raised from {soft} to {hard}"),
            Err(e) => warn!("could not raise the open files limit from {soft}: {e}"),
        },
        Ok(_) => {}
        Err(e) => warn!("reading the open files limit: {e}"),
    }
}
