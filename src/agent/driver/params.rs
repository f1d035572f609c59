//! PostgreSQL parameters while the server runs: changes to `postgresql.parameters` (local file
//! or the DCS `config` key) are written into postgresql.conf and reloaded within one cycle, and
//! parameters that only a restart applies are reported as `pending_restart`.
//!
//! The leader-managed `synchronous_standby_names` goes through the same rendering and reload
//! (it never needs a restart); setting it waits until the server shows the new value, so the
//! next cycle observes what PostgreSQL really applies.
//!
//! Invariants: a replica's recovery settings are rewritten only when its upstream is known, so a
//! parameter change never drops `primary_conninfo` (the one exception is a replica about to be
//! promoted, whose upstream no longer matters); a replica's file never sets a hot-standby-critical
//! setting below its control file's value ([`rampart_core::hot_standby::raise_for_replica`]), and
//! one raised that way counts as a pending restart, as in Patroni.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use rampart_core::observe::LocalPg;
use rampart_core::{ActionResult, Cluster, StartRole};
use rampart_pg::{HbaFile, PendingRestart, PgSettings, Probe};
use tracing::{info, warn};

use super::{settings, Agent, SYNC_NAMES_APPLY_LIMIT};
use crate::agent::ports::{Control, DataFiles, Ports};

/// The parts of the settings a rewrite and reload apply: the parameters and who writes which
/// pg_hba.conf lines (a changed `postgresql.pg_hba` is applied like a changed parameter).
type Applied = (BTreeMap<String, String>, HbaFile);

/// What was last applied.
#[derive(Default)]
pub(in crate::agent) struct ParamState {
    applied: Option<Applied>,
    /// PostgreSQL reports a parameter change waiting for a restart.
    /// Parameters PostgreSQL reports waiting for a restart, with their running and their next
    /// value (published as Patroni's `pending_restart_reason`).
    pub(in crate::agent) pending_reason: Vec<PendingRestart>,
    /// This replica runs hot-standby-critical settings above its configuration because its
    /// control file needs them (Patroni flags that as a pending restart too).
    raised: bool,
}

impl ParamState {
    /// Whether to report `pending_restart`.
    pub(in crate::agent) fn pending_restart(&self) -> bool {
        !self.pending_reason.is_empty() || self.raised
    }

    /// Forces a rewrite of the configuration files at the next cycle (after a reload).
    pub(in crate::agent) fn force_rewrite(&mut self) {
        self.applied = None;
    }
}

fn applied(s: &PgSettings) -> Applied {
    (s.parameters.clone(), s.pg_hba.clone())
}

impl<P: Ports> Agent<P> {
    /// Writes and reloads changed parameters and pg_hba lines; refreshes `pending_restart`.
    pub(in crate::agent) async fn apply_parameters(
        &mut self,
        local: &LocalPg,
        probe: Option<&Probe>,
        cluster: Option<&Cluster>,
    ) {
        let Some(p) = probe else {
            self.params.pending_reason.clear();
            self.params.raised = false;
            return;
        };
        // Decided on this cycle's configuration: a server adopted after a restart keeps the
        // synchronous_standby_names it runs with until the core changes it.
        self.core.observe_sync_names(local);
        let role = match p.in_recovery {
            true => self.core.running_role(local, cluster),
            false => Some(StartRole::Primary),
        };
        let (s, raised) = match &role {
            Some(r) => settings::for_role(self.pg_settings(), r, &self.control),
            None => (self.pg_settings(), Vec::new()),
        };
        self.params.raised = !raised.is_empty();
        if self.params.applied != Some(applied(&s)) {
            if let Some(role) = role {
                let first = self.params.applied.is_none();
                match self.pg.write_config(&s, &role) {
                    Ok(()) => match self.pg.reload().await {
                        Ok(()) => {
                            if !first {
                                info!("PostgreSQL parameters changed: configuration rewritten and reloaded");
                            }
                            self.params.applied = Some(applied(&s));
                        }
                        Err(e) => warn!(error = %e, "could not reload PostgreSQL"),
                    },
                    Err(e) => warn!(error = %e, "could not write postgresql.conf"),
                }
            }
        }
        match self.pg.pending_restart().await {
            Ok(pending) => {
                if !pending.is_empty() && pending != self.params.pending_reason {
                    let changes: Vec<String> =
                        pending.iter().map(|p| format!("{}: {}->{}", p.name, p.old_value, p.new_value)).collect();
                    info!(parameters = ?changes, "parameter change waits for a restart");
                }
                self.params.pending_reason = pending;
            }
            Err(e) => warn!(error = %e, "could not read pending_restart"),
        }
    }
}

impl<P: Ports> Agent<P> {
    /// Executes [`rampart_core::Action::SetSynchronousStandbyNames`]: remembers the value (a
    /// start renders it), and on a running server rewrites postgresql.conf, reloads, and waits
    /// until the server shows it. When it does not in time, the core is told, so that it sets the
    /// same value again before deciding anything else.
    pub(in crate::agent) async fn set_sync_names(
        &mut self,
        names: &str,
        local: &LocalPg,
        probe: Option<&Probe>,
        cluster: Option<&Cluster>,
    ) -> Result<bool> {
        self.core.advance(ActionResult::SyncNamesWritten(names.to_string()));
        let Some(p) = probe else { return Ok(true) };
        let role = match p.in_recovery {
            true => self.core.running_role(local, cluster).unwrap_or(StartRole::Replica { upstream: None }),
            false => StartRole::Primary,
        };
        let s = self.pg_settings_for(&role);
        self.pg.write_config(&s, &role)?;
        self.pg.reload().await?;
        self.params.applied = Some(applied(&s));
        let shown = self.pg.wait_for_synchronous_standby_names(names, SYNC_NAMES_APPLY_LIMIT).await;
        if !matches!(shown, Ok(true)) {
            self.core.advance(ActionResult::SyncNamesUnconfirmed(names.to_string()));
            bail!("PostgreSQL did not show synchronous_standby_names = {names:?} in time ({shown:?})");
        }
        info!(synchronous_standby_names = names, "synchronous_standby_names in force");
        Ok(true)
    }
}
