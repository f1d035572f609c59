//! Replication slot I/O on the control connection: list the local slots and run the steps the
//! core computed ([`rampart_core::slots::reconcile`]).
//!
//! Invariants:
//! * one failing step does not stop the others (a permanent slot naming a database that does not
//!   exist must not keep the member slots from being made); each failure is returned for logging;
//! * logical slots are created and advanced over a short-lived connection to their own database,
//!   as PostgreSQL requires; that connection is closed right after;
//! * no decision is taken here: what to create, drop or advance comes from the core.

use rampart_core::slots::{ExistingSlot, SlotKind, SlotSteps};
use rampart_core::Lsn;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::{describe, reset, timed, timed_raw, Raw, Sql};
use crate::error::{PgError, Result};

/// What [`Sql::apply_slot_steps`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotReport {
    /// One line per step done, e.g. `created cdc (logical)`.
    pub done: Vec<String>,
    /// One line per step that failed, with the reason.
    pub failed: Vec<String>,
    /// Logical slots that could not be advanced because the WAL they need is gone from this
    /// server, or PostgreSQL invalidated them: only a fresh copy from the leader repairs them
    /// (Patroni copies such a slot again too).
    pub lost: Vec<String>,
}

// SQLSTATEs of harmless races: the slot appeared, or became active, since the listing.
const DUPLICATE_OBJECT: &str = "42710";
const OBJECT_IN_USE: &str = "55006";
const UNDEFINED_OBJECT: &str = "42704";
// SQLSTATEs of a logical slot that cannot be advanced here any more: the WAL segment it must
// read from was removed, or the slot was invalidated (as Patroni reads them).
const WAL_REMOVED: &str = "58P01";
const NOT_IN_PREREQUISITE_STATE: &str = "55000";

impl Sql {
    /// The persistent replication slots of the local server, with their positions (logical:
    /// `confirmed_flush_lsn`, physical: `restart_lsn`) and whether they hold an `xmin`.
    pub async fn list_slots(&self) -> Result<Vec<ExistingSlot>> {
        let mut slot = self.client.lock().await;
        let client = self.connected(&mut slot).await?;
        match list_on(client, self.timeout).await {
            Ok(slots) => Ok(slots),
            Err(e) => {
                reset(&mut slot);
                Err(e)
            }
        }
    }

    /// Runs `steps` in order (drop, create, advance); copying is a job of its own.
    pub async fn apply_slot_steps(&self, steps: &SlotSteps) -> SlotReport {
        let mut report = SlotReport::default();
        let mut lost = Vec::new();
        let mut note = |r: Result<Option<String>>, what: String| match r {
            Ok(Some(done)) => report.done.push(done),
            Ok(None) => {}
            Err(e) => report.failed.push(format!("{what}: {e}")),
        };
        for name in &steps.drop {
            let r = self
                .slot_query(
                    None,
                    "dropping a replication slot",
                    "SELECT pg_catalog.pg_drop_replication_slot($1)",
                    name,
                    None,
                    &[OBJECT_IN_USE, UNDEFINED_OBJECT],
                )
                .await;
            note(r.map(|c| c.is_none().then(|| format!("dropped {name}"))), format!("dropping {name}"));
        }
        for (name, kind) in &steps.create {
            let r = match kind {
                SlotKind::Physical => {
                    self.slot_query(
                        None,
                        "creating a physical slot",
                        "SELECT pg_catalog.pg_create_physical_replication_slot($1, true)",
                        name,
                        None,
                        &[DUPLICATE_OBJECT],
                    )
                    .await
                }
                SlotKind::Logical { database, plugin } => {
                    self.slot_query(
                        Some(database),
                        "creating a logical slot",
                        "SELECT pg_catalog.pg_create_logical_replication_slot($1, $2)",
                        name,
                        Some(plugin),
                        &[DUPLICATE_OBJECT],
                    )
                    .await
                }
            };
            let what = match kind {
                SlotKind::Physical => "physical".to_string(),
                SlotKind::Logical { database, plugin } => format!("logical, {database}, {plugin}"),
            };
            note(
                r.map(|c| c.is_none().then(|| format!("created {name} ({what})"))),
                format!("creating {name} ({what})"),
            );
        }
        for a in &steps.advance {
            let to = Lsn(a.to).to_string();
            let r = self
                .slot_query(
                    a.database.as_ref(),
                    "advancing a replication slot",
                    "SELECT pg_catalog.pg_replication_slot_advance($1, $2::text::pg_lsn)",
                    &a.name,
                    Some(&to),
                    &[UNDEFINED_OBJECT, OBJECT_IN_USE, WAL_REMOVED, NOT_IN_PREREQUISITE_STATE],
                )
                .await;
            let what = format!("advancing {} to {to}", a.name);
            match r {
                Ok(Some(code)) if [WAL_REMOVED, NOT_IN_PREREQUISITE_STATE].contains(&code) => {
                    let detail = format!("SQLSTATE {code}: the WAL it needs is gone here, or the slot was invalidated");
                    note(Err(PgError::Query { what: "advancing a replication slot", detail }), what);
                    if a.database.is_some() {
                        lost.push(a.name.clone());
                    }
                }
                // Advances happen every cycle: reported only when they fail.
                r => note(r.map(|_| None), what),
            }
        }
        report.lost = lost;
        report
    }

    /// Runs one slot function with the slot name and an optional second text argument, on the
    /// control connection or, for `database`, on a connection of its own. `Ok(Some(code))` when
    /// the server answered one of the `expected` SQLSTATEs, `Ok(None)` when it succeeded.
    async fn slot_query(
        &self,
        database: Option<&String>,
        what: &'static str,
        sql: &str,
        name: &str,
        arg: Option<&String>,
        expected: &[&'static str],
    ) -> Result<Option<&'static str>> {
        let outcome = match database {
            None => {
                let mut slot = self.client.lock().await;
                let client = self.connected(&mut slot).await?;
                let r = timed_raw(self.timeout, query(client, sql, name, arg)).await;
                if matches!(&r, Err(Raw::Timeout)) {
                    reset(&mut slot);
                }
                r
            }
            Some(db) => {
                let client = self.connect_to(db).await?;
                timed_raw(self.timeout, query(&client, sql, name, arg)).await
            }
        };
        match outcome {
            Ok(_) => Ok(None),
            Err(Raw::Pg(e)) if e.code().is_some_and(|c| expected.contains(&c.code())) => {
                Ok(e.code().and_then(|c| expected.iter().copied().find(|x| *x == c.code())))
            }
            Err(e) => Err(e.into_error(what, self.timeout)),
        }
    }

    /// A fresh connection like the control one, to `database`; closed when dropped.
    async fn connect_to(&self, database: &str) -> Result<Client> {
        let mut config = self.config.clone();
        config.dbname(database);
        let err =
            |detail: String| PgError::Connect { target: format!("{} (database {database})", self.target), detail };
        let (client, connection) = match tokio::time::timeout(self.timeout, config.connect(NoTls)).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(err(describe(&e))),
            Err(_) => return Err(err(format!("no answer within {:?}", self.timeout))),
        };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

async fn query(
    client: &Client,
    sql: &str,
    name: &str,
    arg: Option<&String>,
) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    match arg {
        Some(a) => client.query(sql, &[&name, a]).await,
        None => client.query(sql, &[&name]).await,
    }
}

/// The listing of [`Sql::list_slots`] on a connection the caller holds: the probe lists them
/// right after it read the flush position, so that `status` publishes both from one moment.
pub(super) async fn list_on(client: &Client, limit: Duration) -> Result<Vec<ExistingSlot>> {
    const LIST: &str = "SELECT slot_name::text, slot_type::text, database::text, plugin::text, active, \
            (CASE WHEN slot_type = 'logical' THEN confirmed_flush_lsn ELSE restart_lsn END)::text, \
            xmin IS NOT NULL \
        FROM pg_catalog.pg_replication_slots WHERE NOT temporary ORDER BY slot_name";
    let rows = timed("listing replication slots", limit, client.query(LIST, &[])).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let kind = match r.get::<_, String>(1).as_str() {
            "logical" => SlotKind::Logical {
                database: r.get::<_, Option<String>>(2).unwrap_or_default(),
                plugin: r.get::<_, Option<String>>(3).unwrap_or_default(),
            },
            _ => SlotKind::Physical,
        };
        let position = r.get::<_, Option<String>>(5).and_then(|s| s.parse::<Lsn>().ok()).map(|l| l.0);
        out.push(ExistingSlot { name: r.get(0), kind, active: r.get(4), position, holds_xmin: r.get(6) });
    }
    Ok(out)
}
