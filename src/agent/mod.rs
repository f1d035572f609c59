//! `rampart agent CONFIG_FILE`: the HA agent beside one PostgreSQL.
//!
//! Start-up order matters: the configuration is validated before anything is touched (a bad
//! file changes nothing), the signal handlers are installed as soon as the runtime runs (so
//! SIGHUP never kills the agent, and a stop signal during start-up ends it before it acts), the
//! REST API is bound before the loop starts (a port clash is reported at once), and only then
//! does the loop begin to act.
//!
//! Module map: [`identity`] (no second agent under one member name), [`settings`] (config →
//! adapter settings), [`driver`] (the loop), [`jobs`] (long actions), [`ports`] (what the loop touches, as traits), [`peers`] (the leader race's questions), [`publish`] (member key and API snapshot),
//! [`signals`] (stop and reload requests).

pub mod backend;
pub mod callbacks;
pub mod custom_bootstrap;
pub mod driver;
pub mod failsafe;
pub mod identity;
pub mod jobs;
pub mod live_wal;
pub mod peers;
pub mod ports;
pub mod publish;
pub mod replica_methods;
pub mod settings;
pub mod signals;
#[cfg(test)]
pub(crate) mod sim;
pub mod watchdog;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rampart_api::{ApiContext, NodeSnapshot};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

/// Loads the configuration, then runs the agent until it is told to stop.
pub fn run(config_path: &Path) -> Result<()> {
    // The overrides are kept in memory for reloads before they leave the environment below.
    let source = driver::reload::ConfigSource::capture(config_path);
    let loaded = source.load()?;
    if nix::unistd::geteuid().is_root() {
        bail!(
            "refusing to run as root: PostgreSQL will not run as root. Run the agent as the user that \
             owns the data directory, e.g. `runuser -u postgres -- rampart agent {}`",
            config_path.display()
        );
    }
    // After the root check, so that root never creates the log file the agent's user must write.
    crate::logging::init(&loaded.config.log, crate::logging::AGENT_LOG_FILE)?;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    // A value PostgreSQL would refuse is refused now, before anything is touched.
    for note in crate::cli::check_config::parameter_values(config_path, &loaded.config)? {
        warn!("{note}");
    }
    // Overrides may carry passwords: keep them out of every child process's environment.
    for var in rampart_config::override_variables() {
        std::env::remove_var(var);
    }
    // A current-thread runtime: the agent's work is I/O-bound and one thread keeps it small.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let (mut stops, hangups) = signals::install().context("installing signal handlers")?;
        let started = tokio::select! {
            biased;
            signal = stops.requested() => {
                info!("{} received while starting: exiting before touching anything", signal.name());
                return Ok(());
            }
            started = start(loaded.config, source) => started?,
        };
        started.run(stops, hangups).await
    })
}

/// The agent with its REST API serving, ready to run its loop.
struct Started {
    agent: driver::Agent<ports::real::RealPorts>,
    watcher: tokio::task::JoinHandle<()>,
    stop_api: tokio::sync::oneshot::Sender<()>,
    api_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Started {
    async fn run(self, stops: signals::StopWatch, hangups: signals::Hangups) -> Result<()> {
        let result = self.agent.run(stops, hangups).await;
        self.watcher.abort();
        let _ = self.stop_api.send(());
        let _ = self.api_task.await;
        result
    }
}

/// Connects the DCS client, checks that no live agent runs under this name, binds the REST API
/// and builds the agent; touches nothing else.
async fn start(cfg: rampart_config::Config, source: driver::reload::ConfigSource) -> Result<Started> {
    let dynamic = cfg.bootstrap_dcs();
    let dcs = rampart_dcs::EtcdDcs::connect(
        settings::etcd_options(&cfg.etcd3, dynamic.retry_timeout),
        cfg.prefix(),
        cfg.name.clone(),
        dynamic.ttl,
    )
    .await
    .context("etcd3 settings")?;
    // restapi.authentication / allowlist / certfile...: loaded and resolved now, so a bad
    // certificate stops the agent here rather than failing requests later.
    let security = driver::reload::security_settings(&cfg.restapi);
    let security = rampart_api::Security::prepare(&security).await.context("restapi")?;
    // Before our own API answers for the name, and before anything is touched.
    let probe = rampart_api::HttpProbe::new(security.peer_tls.clone());
    identity::ensure_unique_name(&dcs, &probe, &cfg.name, &cfg.etcd_endpoints().join(",")).await?;
    let pg = settings::pg_settings(&cfg, &dynamic);
    let pm = Arc::new(rampart_pg::Postmaster::new(pg.data_dir.clone()));

    let (snap_tx, snap_rx) = watch::channel(NodeSnapshot {
        scope: cfg.scope.clone(),
        name: cfg.name.clone(),
        last_loop: Some(std::time::Instant::now()),
        ..Default::default()
    });
    let listen = cfg.restapi.listen.to_string();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on restapi.listen {listen}"))?;
    info!(%listen, "REST API listening");
    let alive_pm = pm.clone();
    let (queue_tx, queue_rx) = tokio::sync::mpsc::channel(8);
    let failsafe_inbox = failsafe::Inbox::default();
    let backend = backend::AgentBackend {
        dcs: dcs.clone(),
        queue: queue_tx,
        failsafe: failsafe_inbox.clone(),
        bin_dir: pg.bin_dir.clone(),
    };
    let live_sql = live_wal::LiveSql::new(&pg);
    let api = ApiContext::new(snap_rx, move || alive_pm.is_alive())
        .with_backend(Arc::new(backend))
        .with_security(security)
        .with_live_wal(live_sql.clone());
    // A reload replaces the security settings through this handle.
    let api_security = api.security.clone();
    // The leader race asks peers through the same client (TLS-aware when the API uses TLS).
    let peer_probe = api.probe.clone();
    let (stop_api, stop_api_rx) = tokio::sync::oneshot::channel::<()>();
    let api_task = tokio::spawn(rampart_api::serve(listener, api, async move {
        let _ = stop_api_rx.await;
    }));

    let wake = Arc::new(Notify::new());
    let watcher = dcs.spawn_watcher(wake.clone());
    info!(member = %cfg.name, scope = %cfg.scope, endpoints = %cfg.etcd_endpoints().join(","), "agent starting");
    let ports = ports::PortSet::<ports::real::RealPorts> {
        dcs,
        pg: ports::real::LocalServer::new(pm, &pg),
        watchdog: watchdog::LinuxWatchdog::default(),
        address: cfg.vip.clone().map(crate::vip::HostAddress::new),
        clock: ports::real::SystemClock,
        peers: peer_probe,
    };
    let agent = driver::Agent::new(cfg, source, ports, snap_tx, wake, queue_rx)
        .with_failsafe_inbox(failsafe_inbox)
        .with_api_security(api_security)
        .with_live_sql(live_sql);
    Ok(Started { agent, watcher, stop_api, api_task })
}
