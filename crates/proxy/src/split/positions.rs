//! Where each member's WAL stands, as the proxy last read it, and what a session that wrote
//! needs a replica to have replayed before the replica may serve its reads (read-your-writes).
//! Sans-IO: the reader ([`super::monitor`]) records what it asked and when.
//!
//! How a write is matched to a position without asking anything per statement: the primary's
//! WAL insert position is read every `replica_position_interval`, each reading stamped with the
//! moment it was asked. A reading asked after a write was acknowledged is at or past that
//! write's commit record, so a replica that has replayed up to that reading has the write. A
//! session therefore needs the first primary reading asked after its last write's
//! acknowledgement; until that reading exists, no replica qualifies and its reads run on the
//! primary.
//!
//! Invariant: a replica qualifies only with a replay position read at or past the needed one
//! (replay positions only grow, so an old reading errs on the safe side).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Primary readings kept: at the default interval (20 ms), the last 2.5 s.
const PRIMARY_READINGS: usize = 128;

/// A WAL position (an LSN) as a number.
pub type Lsn = u64;

/// Parses PostgreSQL's text form of an LSN (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// The members' positions as last read.
#[derive(Debug, Default)]
pub struct Positions {
    /// The primary's insert positions, oldest first, each with when it was asked.
    primary: VecDeque<(Instant, Lsn)>,
    /// Each replica's replay position (by address) and when it was asked.
    replicas: HashMap<String, (Instant, Lsn)>,
    /// Each replica's replay lag as the primary last measured it (`pg_stat_replication`), by
    /// address; absent: not measured, or caught up.
    lag: HashMap<String, std::time::Duration>,
}

impl Positions {
    /// The primary's insert position, asked at `asked`.
    pub fn primary_read(&mut self, asked: Instant, lsn: Lsn) {
        if self.primary.back().is_some_and(|(at, _)| *at > asked) {
            return;
        }
        if self.primary.len() == PRIMARY_READINGS {
            self.primary.pop_front();
        }
        self.primary.push_back((asked, lsn));
    }

    /// A replica's replay position, asked at `asked`.
    pub fn replica_read(&mut self, addr: &str, asked: Instant, lsn: Lsn) {
        match self.replicas.get_mut(addr) {
            Some(r) if r.0 <= asked => *r = (asked, lsn),
            Some(_) => {}
            None => {
                self.replicas.insert(addr.to_string(), (asked, lsn));
            }
        }
    }

    /// The replicas' replay lags, as the primary measured them now (all of them: a replica not
    /// listed is caught up or not measured).
    pub fn lags(&mut self, lags: HashMap<String, std::time::Duration>) {
        self.lag = lags;
    }

    /// Whether the replica at `addr` replays more than `max` behind the primary.
    pub fn lags_behind(&self, addr: &str, max: std::time::Duration) -> bool {
        self.lag.get(addr).is_some_and(|l| *l > max)
    }

    /// Forgets members no longer routed, and the primary's readings when the primary changed
    /// (a new primary's positions continue another history).
    pub fn retain(&mut self, replicas: &[String], primary_changed: bool) {
        self.replicas.retain(|addr, _| replicas.contains(addr));
        self.lag.retain(|addr, _| replicas.contains(addr));
        if primary_changed {
            self.primary.clear();
        }
    }

    /// The position a replica must have replayed to show everything acknowledged before
    /// `acked`: the first primary reading asked at or after it; `None` while there is none yet.
    pub fn needed_after(&self, acked: Instant) -> Option<Lsn> {
        self.primary.iter().find(|(asked, _)| *asked >= acked).map(|(_, lsn)| *lsn)
    }

    /// Whether the replica at `addr` has replayed `needed`.
    pub fn has_replayed(&self, addr: &str, needed: Lsn) -> bool {
        self.replicas.get(addr).is_some_and(|(_, lsn)| *lsn >= needed)
    }

    /// The primary's last insert position read, if any.
    pub fn latest_primary(&self) -> Option<Lsn> {
        self.primary.back().map(|(_, lsn)| *lsn)
    }

    /// The replica at `addr`'s last replay position, if read.
    pub fn replica(&self, addr: &str) -> Option<Lsn> {
        self.replicas.get(addr).map(|(_, lsn)| *lsn)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn lsns_parse_as_postgresql_prints_them() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn(" 0/0 "), Some(0));
        for bad in ["", "0", "x/1", "1/", "/1", "0/100000000"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_write_needs_the_first_primary_reading_asked_after_its_acknowledgement() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut p = Positions::default();
        p.primary_read(at(0), 100);
        p.primary_read(at(20), 150);
        assert_eq!(p.needed_after(at(25)), None, "no reading after the write yet: the primary serves");
        p.primary_read(at(40), 180);
        assert_eq!(p.needed_after(at(25)), Some(180));
        assert_eq!(p.needed_after(at(20)), Some(150), "asked at the very moment counts");
        assert_eq!(p.needed_after(at(0)), Some(100));
        p.replica_read("r1:5432", at(41), 170);
        p.replica_read("r2:5432", at(41), 180);
        assert!(!p.has_replayed("r1:5432", 180));
        assert!(p.has_replayed("r2:5432", 180));
        assert!(!p.has_replayed("r3:5432", 0), "never read: never qualifies");
        p.replica_read("r1:5432", at(30), 999);
        assert_eq!(p.replica("r1:5432"), Some(170), "an older reading arriving late is ignored");
    }

    #[test]
    fn a_replica_is_judged_by_the_lag_the_primary_measured() {
        let mut p = Positions::default();
        p.lags(HashMap::from([("r1".to_string(), Duration::from_millis(600))]));
        assert!(p.lags_behind("r1", Duration::from_millis(500)));
        assert!(!p.lags_behind("r1", Duration::from_millis(600)));
        assert!(!p.lags_behind("r2", Duration::ZERO), "not listed: caught up");
        p.retain(&["r2".to_string()], false);
        assert!(!p.lags_behind("r1", Duration::ZERO));
    }

    #[test]
    fn the_readings_are_bounded_and_follow_the_routes() {
        let t0 = Instant::now();
        let mut p = Positions::default();
        for i in 0..(PRIMARY_READINGS as u64 + 10) {
            p.primary_read(t0 + Duration::from_millis(i), i);
        }
        assert_eq!(p.primary.len(), PRIMARY_READINGS);
        assert_eq!(p.needed_after(t0), Some(10), "an old write needs the oldest reading kept (later: safe)");
        p.replica_read("r1", t0, 5);
        p.replica_read("r2", t0, 5);
        p.retain(&["r2".to_string()], true);
        assert_eq!((p.replica("r1"), p.replica("r2")), (None, Some(5)));
        assert_eq!(p.needed_after(t0), None, "a new primary: its readings start again");
    }
}
