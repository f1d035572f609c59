//! The REST API's live WAL positions (see `rampart_api::live`): answered on a connection of
//! their own, so a status request never waits behind the HA loop's queries, and replaced when a
//! reload changes how the agent connects to PostgreSQL.

use std::sync::{Arc, RwLock};

use rampart_api::{BoxFuture, LiveWal, WalNow};
use rampart_pg::{PgSettings, Sql};

/// The connection the API reads live positions on; shared with the driver, which swaps it on
/// reload.
pub struct LiveSql {
    sql: RwLock<Arc<Sql>>,
}

impl LiveSql {
    /// A lazily connected control connection with `settings`.
    pub fn new(settings: &PgSettings) -> Arc<LiveSql> {
        Arc::new(LiveSql { sql: RwLock::new(Arc::new(Sql::new(settings))) })
    }

    /// Connects with new settings from now on.
    pub fn replace(&self, settings: &PgSettings) {
        *self.sql.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Sql::new(settings));
    }
}

impl LiveWal for LiveSql {
    fn wal_now(&self) -> BoxFuture<'_, Option<WalNow>> {
        let sql = self.sql.read().unwrap_or_else(|e| e.into_inner()).clone();
        Box::pin(async move {
            let (in_recovery, wal) = sql.wal_now().await.ok()?;
            let lsn = |l: Option<rampart_core::Lsn>| l.map(|l| l.0);
            Some(WalNow {
                in_recovery,
                flush: lsn(wal.flush),
                received: lsn(wal.received),
                replayed: lsn(wal.replayed),
            })
        })
    }
}
