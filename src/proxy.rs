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
//! served until SIGTERM or SIGINT. The admin port stops after the client listeners.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rampart_config::RoPolicy;
use rampart_dcs::{Dcs, WakeOn};
use rampart_proxy::admin::{self, Admin};
use rampart_proxy::server;
use rampart_proxy::session::{Balance, SessionSettings, Shared};
use rampart_proxy::stats::Stats;
use rampart_proxy::topology::{Policy, Routes};
use rampart_proxy::workers::Workers;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

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
    // The accept loops, the DCS follower and the admin port share one thread; sessions run on
    // their own worker threads (rampart_proxy::workers).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: rampart_config::ProxyConfig) -> Result<()> {
    let proxy = cfg.proxy.clone();
    let dynamic = &cfg.dcs;
    // Certificate files are read before anything is bound, so a bad file is refused at start.
    let tls = match &proxy.certfile {
        Some(cert) => Some(rampart_proxy::tls::server_config(cert, proxy.keyfile.as_deref())?),
        None => None,
    };
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
    // Served from here on, before etcd is reached: until the first read the page says so.
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_server = admin_listener.map(|listener| {
        let state = Admin { scope: cfg.scope.clone(), stats: stats.clone(), routes: routes_rx.clone(), policy };
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
    let follower = tokio::spawn(server::follow(
        move || {
            let dcs = read_dcs.clone();
            async move { dcs.read_cluster(dcs.op_deadline()).await }
        },
        wake,
        policy,
        routes_tx,
        stats.clone(),
    ));

    let settings = SessionSettings {
        hold_timeout: Duration::from_secs(proxy.hold_timeout),
        fallback_to_primary: proxy.fallback_to_primary,
        balance: match proxy.ro_policy {
            RoPolicy::RoundRobin => Balance::RoundRobin,
            RoPolicy::LeastConnections => Balance::LeastConnections,
        },
        ..SessionSettings::default()
    };
    let mut shared = Shared::new(routes_rx, settings).with_stats(stats.clone());
    if let Some(tls) = tls {
        shared = shared.with_tls(tls);
    }
    let shared = Arc::new(shared);
    let workers = Arc::new(Workers::start(proxy.workers, shared).context("starting proxy workers")?);
    listeners.serve(workers, shutdown_signal()).await;
    info!("rampart proxy stopping");
    let _ = admin_stop.send(());
    if let Some(server) = admin_server {
        // Bounded: the admin server gives its open connections a short grace, then drops them.
        let _ = server.await;
    }
    watcher.abort();
    follower.abort();
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        warn!("cannot install signal handlers; stop the proxy with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
