//! The pools with their clients, and each database's counters, read at one moment: what the
//! admin console's `SHOW POOLS` and `SHOW STATS` show and what the admin port renders
//! (`/metrics`, `/stats.json`, `/stats`), computed here once so both always agree.
//!
//! Invariants:
//! * one line per database, user and backend (what `SHOW POOLS` documents as a pool): pools
//!   that differ only by the startup parameters their servers were opened with are summed, so
//!   no two lines (and no two Prometheus series) carry the same labels;
//! * a line's clients are those of its database and user, as PgBouncer counts them: waiting
//!   ones in `cl_waiting`, all others in `cl_active` (a transaction-mode client between
//!   transactions holds no server but can send a query at once).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clients::{ClientInfo, ClientState, Clients, DbTotals};
use crate::pools::{PoolFigures, Pools};
use crate::session_features::Feature;

/// One pool (database, user, backend) with its clients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolLine {
    /// The database.
    pub database: String,
    /// The user.
    pub user: String,
    /// The backend's member name.
    pub backend: String,
    /// Clients not waiting for a server (`cl_active`).
    pub cl_active: usize,
    /// Clients waiting for a server (`cl_waiting`).
    pub cl_waiting: usize,
    /// Servers in use by clients (`sv_active`).
    pub sv_active: usize,
    /// Servers idle (`sv_idle`).
    pub sv_idle: usize,
    /// Servers being opened (`sv_login`).
    pub sv_login: usize,
    /// The longest current wait for a server (`maxwait`).
    pub max_wait: Duration,
    /// The backend left the routes: its servers close as they come back.
    pub retired: bool,
}

/// The lines of `figures`, with the clients of `clients` counted in.
pub fn pool_lines(figures: Vec<PoolFigures>, clients: &[Arc<ClientInfo>]) -> Vec<PoolLine> {
    let mut lines: BTreeMap<(String, String, String), PoolLine> = BTreeMap::new();
    for f in figures {
        let key = (f.key.database, f.key.user, f.backend);
        let line = lines.entry(key).or_insert_with_key(|(database, user, backend)| {
            let mine = clients.iter().filter(|c| &c.database == database && &c.user == user);
            let cl_waiting = mine.clone().filter(|c| c.state() == ClientState::Waiting).count();
            PoolLine {
                database: database.clone(),
                user: user.clone(),
                backend: backend.clone(),
                cl_active: mine.count().saturating_sub(cl_waiting),
                cl_waiting,
                retired: true,
                ..PoolLine::default()
            }
        });
        line.sv_active += f.in_use;
        line.sv_idle += f.idle;
        line.sv_login += f.opening;
        line.max_wait = line.max_wait.max(f.max_wait);
        line.retired &= f.retired;
    }
    lines.into_values().collect()
}

/// The pools and the per-database counters, for the admin port's renderers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolsView {
    /// Every pool, by database, user and backend.
    pub pools: Vec<PoolLine>,
    /// Every database's counters since the proxy started, by name.
    pub stats: Vec<DbTotals>,
    /// Clients pinned to their server since the proxy started, by feature.
    pub pins: Vec<(Feature, u64)>,
}

impl PoolsView {
    /// Reads `pools` and `clients` now.
    pub fn take(pools: &Pools, clients: &Clients) -> PoolsView {
        PoolsView {
            pools: pool_lines(pools.figures(), &clients.snapshot()),
            stats: clients.totals(),
            pins: clients.pins(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pools::PoolKey;

    fn figures(database: &str, backend: &str, extra: &[(&str, &str)], servers: (usize, usize, usize)) -> PoolFigures {
        PoolFigures {
            key: PoolKey {
                database: database.into(),
                user: "app".into(),
                addr: format!("{backend}:5432"),
                extra: extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            },
            backend: backend.into(),
            in_use: servers.0,
            idle: servers.1,
            opening: servers.2,
            waiting: 0,
            max_wait: Duration::from_millis(servers.0 as u64 * 100),
            retired: false,
        }
    }

    #[test]
    fn a_line_per_database_user_and_backend_with_its_clients() {
        let clients = Clients::default();
        let a = clients.register("app", "db", "127.0.0.1:1", false);
        let b = clients.register("app", "db", "127.0.0.1:2", false);
        let _c = clients.register("app", "db", "127.0.0.1:3", false);
        let _other = clients.register("app", "other", "127.0.0.1:4", false);
        a.info.set(ClientState::Active, 7, crate::clients::Stamp::of(std::time::Instant::now()));
        b.info.set(ClientState::Waiting, 0, crate::clients::Stamp::of(std::time::Instant::now()));
        let lines = pool_lines(
            vec![
                figures("db", "pg1", &[], (1, 2, 0)),
                figures("db", "pg1", &[("options", "-c x=1")], (2, 0, 1)),
                figures("other", "pg1", &[], (0, 1, 0)),
            ],
            &clients.snapshot(),
        );
        assert_eq!(lines.len(), 2, "pools differing only by startup parameters are one line: {lines:?}");
        let db = &lines[0];
        assert_eq!((db.cl_active, db.cl_waiting), (2, 1), "the waiting client apart, idle ones are active");
        assert_eq!((db.sv_active, db.sv_idle, db.sv_login), (3, 2, 1));
        assert_eq!((db.max_wait, db.retired), (Duration::from_millis(200), false));
        assert_eq!((lines[1].database.as_str(), lines[1].cl_active, lines[1].sv_idle), ("other", 1, 1));
    }
}
