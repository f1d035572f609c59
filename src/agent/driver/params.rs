//! PostgreSQL parameters while the server runs: changes to `postgresql.parameters` (local file
//! or the DCS `config` key) are written into postgresql.conf and reloaded within one cycle, and
//! parameters that only a restart applies are reported as `pending_restart`.
//!
//! Invariant: a replica's recovery settings are rewritten only when its upstream is known, so a
//! parameter change never drops `primary_conninfo`.

use std::collections::BTreeMap;

use rampart_core::{Cluster, StartRole, Upstream};
use rampart_pg::Probe;
use tracing::{info, warn};

use super::{settings, Agent};

/// What was last applied.
#[derive(Default)]
pub(in crate::agent) struct ParamState {
    applied: Option<BTreeMap<String, String>>,
    /// PostgreSQL reports a parameter change waiting for a restart.
    pub(in crate::agent) pending_restart: bool,
}

impl ParamState {
    /// Forces a rewrite of the configuration files at the next cycle (after a reload).
    pub(in crate::agent) fn force_rewrite(&mut self) {
        self.applied = None;
    }
}

impl Agent {
    /// Writes and reloads changed parameters; refreshes `pending_restart`.
    pub(in crate::agent) async fn apply_parameters(&mut self, probe: Option<&Probe>, cluster: Option<&Cluster>) {
        let Some(p) = probe else {
            self.params.pending_restart = false;
            return;
        };
        let s = settings::pg_settings(&self.cfg, self.core.config());
        if self.params.applied.as_ref() != Some(&s.parameters) {
            let role = if p.in_recovery {
                if self.upstream.is_none() {
                    self.upstream = upstream_from_probe(p, cluster);
                }
                self.upstream.as_ref().map(|u| StartRole::Replica { upstream: Some(u.clone()) })
            } else {
                Some(StartRole::Primary)
            };
            if let Some(role) = role {
                let first = self.params.applied.is_none();
                match rampart_pg::write_config(&s, &role) {
                    Ok(()) => match self.sql.reload().await {
                        Ok(()) => {
                            if !first {
                                info!("PostgreSQL parameters changed: configuration rewritten and reloaded");
                            }
                            self.params.applied = Some(s.parameters.clone());
                        }
                        Err(e) => warn!(error = %e, "could not reload PostgreSQL"),
                    },
                    Err(e) => warn!(error = %e, "could not write postgresql.conf"),
                }
            }
        }
        match self.sql.pending_restart().await {
            Ok(names) => {
                if !names.is_empty() && !self.params.pending_restart {
                    info!(parameters = ?names, "parameter change waits for a restart");
                }
                self.params.pending_restart = !names.is_empty();
            }
            Err(e) => warn!(error = %e, "could not read pending_restart"),
        }
    }
}

/// The member this replica streams from, recognised by the host and port in `primary_conninfo`
/// (after the agent restarted and adopted a running server).
fn upstream_from_probe(p: &Probe, cluster: Option<&Cluster>) -> Option<Upstream> {
    let (host, port) = p.upstream.clone()?;
    let m = cluster?.members.iter().find(|m| m.data.conn_host_port().as_ref() == Some(&(host.clone(), port)))?;
    Some(Upstream { name: m.name.clone(), host, port })
}
