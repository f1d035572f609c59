//! A custom bootstrap method (`bootstrap.method: NAME`, `bootstrap.NAME.command`): the command
//! builds the new cluster's data directory instead of initdb (say, by restoring a backup), as
//! Patroni does it (`patroni/postgresql/bootstrap.py`, `_custom_bootstrap`).
//!
//! The command runs as the agent's user through `/bin/sh -c '<command> "$@"'` (as callbacks do)
//! with `--scope=SCOPE --datadir=DATA_DIR` (unless `no_params`) and `--KEY=VALUE` for the
//! section's other keys; a non-zero exit fails the bootstrap. Then, as in Patroni: a `promote`
//! trigger file is removed; with `recovery_conf` its settings go into the first start's
//! postgresql.conf with `recovery.signal`, so the server recovers and then promotes itself; without
//! it, signal files the command left are removed unless `keep_existing_recovery_conf`.
//! Invariant: the bootstrap counts as done only once the server has left recovery, so the roles
//! are created on a writable primary and the cluster's `initialize` key names a finished one.

use std::process::Stdio;
use std::time::Duration;

use rampart_config::BootstrapMethod;
use rampart_pg::{PgSettings, Sql};
use tracing::info;

/// Runs the method's command; returns the settings of the first start (with `recovery_conf`).
pub async fn run(method: &BootstrapMethod, s: &PgSettings, scope: &str) -> Result<PgSettings, String> {
    info!("Running custom bootstrap script: {}", method.command);
    let status = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{} \"$@\"", method.command))
        .arg("rampart-bootstrap")
        .args(method.args(scope, &s.data_dir))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("custom bootstrap {}: could not start its command: {e}", method.name))?;
    if !status.success() {
        return Err(format!("custom bootstrap {}: its command exited with {status}", method.name));
    }
    if !s.data_dir.join("PG_VERSION").is_file() {
        return Err(format!(
            "custom bootstrap {}: its command succeeded but left no PostgreSQL data directory in {}",
            method.name,
            s.data_dir.display()
        ));
    }
    let remove = |name: &str| match std::fs::remove_file(s.data_dir.join(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("removing {name}: {e}")),
        _ => Ok(()),
    };
    // Or PostgreSQL would promote at once.
    remove("promote")?;
    let mut first = s.clone();
    if !method.recovery_conf.is_empty() {
        for (k, v) in &method.recovery_conf {
            first.parameters.insert(k.clone(), v.clone());
        }
        std::fs::write(s.data_dir.join("recovery.signal"), b"").map_err(|e| format!("writing recovery.signal: {e}"))?;
    } else if !method.keep_existing_recovery_conf {
        remove("recovery.signal")?;
        remove("standby.signal")?;
    }
    Ok(first)
}

/// Waits until the server has left recovery (at once without `recovery_conf`). Not bounded: a
/// restore may replay for hours; the job is cancelled with the agent, like Patroni's wait.
pub async fn wait_for_end_of_recovery(sql: &Sql) -> Result<(), String> {
    let mut said = false;
    let mut unanswered = 0;
    loop {
        let probe = sql.probe().await;
        unanswered = if probe.is_ok() { 0 } else { unanswered + 1 };
        if unanswered > 60 {
            return Err("the bootstrapped server stopped answering while it recovered".into());
        }
        match probe {
            Ok(p) if !p.in_recovery => return Ok(()),
            Ok(_) if !said => {
                info!("waiting for end of recovery after bootstrap");
                said = true;
            }
            Ok(_) => {}
            Err(e) if !said => {
                info!(error = %e, "waiting for the bootstrapped server to answer");
                said = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
