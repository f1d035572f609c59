//! Reads every routed member's WAL position every `replica_position_interval` (one connection
//! per member, one small query each time) into [`super::positions::Positions`], for
//! read-your-writes. It logs in with a login a client gave a pool (the proxy has no credentials
//! of its own): until a client has logged in there is nothing to read for.
//!
//! Invariant: a reading is stamped with the moment its query was sent, before the server ran
//! it; a member that does not answer within the interval's budget loses its connection and is
//! read again on a new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::positions::parse_lsn;
use super::state::Splitting;
use crate::pools::Pools;
use crate::server_auth::ServerLogin;
use crate::server_conn::ServerConn;
use crate::topology::Routes;

/// One query for either role: whether it is in recovery, and its replay position (a replica)
/// or its WAL insert position (the primary).
const POSITION_QUERY: &str = "SELECT pg_catalog.pg_is_in_recovery()::text, (CASE WHEN pg_catalog.pg_is_in_recovery() \
     THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_insert_lsn() END)::text";

/// On the primary, for `max_lag_time`: each standby's replay lag by its `application_name`
/// (the member's name, as the agents set it), in seconds.
const LAG_QUERY: &str = "SELECT application_name, extract(epoch FROM replay_lag)::text \
     FROM pg_catalog.pg_stat_replication WHERE replay_lag IS NOT NULL";

/// Reads positions until the routes are gone (the proxy stops).
pub async fn run(
    mut routes: watch::Receiver<Routes>,
    pools: Arc<Pools>,
    split: Arc<Splitting>,
    connect_timeout: Duration,
) {
    let interval = split.settings.position_interval;
    // A reading must not hold the others up for long: at most a second, at least the interval.
    let budget = (interval * 5).clamp(interval, Duration::from_secs(1));
    let mut conns: HashMap<String, ServerConn> = HashMap::new();
    let mut primary_was: Option<String> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = routes.changed() => if changed.is_err() { return },
        }
        let (primary, replicas, names) = {
            let r = routes.borrow();
            let names: HashMap<String, String> = r.replicas.iter().map(|b| (b.name.clone(), b.addr())).collect();
            (r.primary.as_ref().map(|b| b.addr()), r.replicas.iter().map(|b| b.addr()).collect::<Vec<_>>(), names)
        };
        let changed = primary != primary_was;
        split.positions().retain(&replicas, changed);
        primary_was = primary.clone();
        conns.retain(|addr, _| primary.as_deref() == Some(addr.as_str()) || replicas.contains(addr));
        let Some((key, login)) = pools.any_login() else { continue };
        for (addr, is_primary) in primary.iter().map(|a| (a, true)).chain(replicas.iter().map(|a| (a, false))) {
            if !conns.contains_key(addr) {
                let login_as = ServerLogin::new(&key.user, login.credentials.clone(), login.secret.clone());
                match ServerConn::open(addr, &key.database, &key.user, &key.extra, login_as, connect_timeout).await {
                    Ok(c) => {
                        conns.insert(addr.clone(), c);
                    }
                    Err(e) => {
                        tracing::debug!(backend = %addr, "position reader: {e}");
                        continue;
                    }
                }
            }
            let Some(conn) = conns.get_mut(addr) else { continue };
            let asked = Instant::now();
            let read = tokio::time::timeout(budget, conn.rows(POSITION_QUERY)).await;
            let row = match read {
                Ok(Ok(rows)) => rows.into_iter().next(),
                Ok(Err(e)) => {
                    tracing::debug!(backend = %addr, "position reader: {e}");
                    None
                }
                Err(_) => None,
            };
            let Some(row) = row else {
                conns.remove(addr);
                continue;
            };
            let in_recovery = row.first().and_then(|v| v.as_deref()) == Some("true");
            let Some(lsn) = row.get(1).and_then(|v| v.as_deref()).and_then(parse_lsn) else { continue };
            match (is_primary, in_recovery) {
                (true, false) => {
                    split.positions().primary_read(asked, lsn);
                    if split.settings.max_lag_time.is_some() {
                        if let Ok(Ok(rows)) = tokio::time::timeout(budget, conn.rows(LAG_QUERY)).await {
                            let lags = rows
                                .iter()
                                .filter_map(|r| match r.as_slice() {
                                    [Some(name), Some(secs)] => {
                                        let addr = names.get(name)?;
                                        let secs = secs.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0)?;
                                        Some((addr.clone(), Duration::from_secs_f64(secs)))
                                    }
                                    _ => None,
                                })
                                .collect();
                            split.positions().lags(lags);
                        }
                    }
                }
                (false, true) => split.positions().replica_read(addr, asked, lsn),
                // A member whose role is not the routed one yet (a switchover under way): its
                // reading counts for neither.
                _ => {}
            }
        }
    }
}
