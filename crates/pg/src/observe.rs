//! One cycle's look at local PostgreSQL, in the core's terms.
//!
//! Invariant: this only reports (it adopts a postmaster it finds, but never starts, stops or
//! changes anything); the mapping to [`PgProcess`] is mechanical, with no HA policy:
//! alive and answering → `Running`, alive but not answering → `Starting`, gone after a
//! [`crate::Postmaster::stop`] or never seen → `Stopped`, gone otherwise → `Crashed`.

use rampart_core::{LocalPg, PgProcess};

use crate::process::Postmaster;
use crate::settings::PgSettings;
use crate::sql::{Probe, Sql};
use crate::tools::controldata;

/// Observes the data directory and the server. The full [`Probe`] comes back too, for the
/// member key and the REST API.
pub async fn observe_local(settings: &PgSettings, postmaster: &Postmaster, sql: &Sql) -> (LocalPg, Option<Probe>) {
    let data = controldata(&settings.bin_dir, &settings.data_dir).await;
    if postmaster.pid().is_none() {
        postmaster.adopt();
    }
    if !postmaster.is_alive() {
        let process = match postmaster.last_exit() {
            Some(e) if !e.requested => PgProcess::Crashed,
            _ => PgProcess::Stopped,
        };
        return (LocalPg { data, process }, None);
    }
    match sql.probe().await {
        Ok(p) => (LocalPg { data, process: PgProcess::Running(p.to_core()) }, Some(p)),
        Err(e) => {
            tracing::debug!(error = %e, "postgres is alive but does not answer yet");
            (LocalPg { data, process: PgProcess::Starting }, None)
        }
    }
}
