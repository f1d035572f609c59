//! The hot-standby-critical settings: `max_connections`, `max_worker_processes`,
//! `max_wal_senders`, `max_prepared_transactions` and `max_locks_per_transaction`.
//!
//! A standby must run each of them at no less than the primary that wrote the WAL it replays.
//! The primary records its values in a parameter-change WAL record (at start and promotion);
//! a standby replaying it copies them into its control file first, then compares. Too low and
//! PostgreSQL 15 refuses to start ("recovery aborted because of insufficient parameter
//! settings") or, once hot standby runs, pauses replay for good ("hot standby is not possible
//! because of insufficient parameter settings") until it is restarted with enough.
//!
//! So the control file always holds what the standby needs, and two rules follow (Patroni's
//! `effective_configuration` and its resume-and-restart of a paused replica):
//! * [`raise_for_replica`]: a replica starts with the larger of its configured value and the
//!   control file's for each setting. This also orders changes the way PostgreSQL needs: a
//!   raise reaches a replica by its own restart or, at the latest, with the primary's (whose
//!   record raises the control file); a decrease waits until the primary runs the lower value
//!   and the replica replayed that, because until then the control file keeps it up.
//! * [`replay_blocked`]: a replica whose replay is paused while it runs below its control file
//!   is stuck until a restart; it is unhealthy (not streaming, not a candidate, no read-only
//!   traffic) and the core restarts it, which applies the first rule.

use std::collections::BTreeMap;
use std::fmt;

/// One of the settings a standby must not run below the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    /// `max_connections`.
    MaxConnections,
    /// `max_worker_processes`.
    MaxWorkerProcesses,
    /// `max_wal_senders`.
    MaxWalSenders,
    /// `max_prepared_transactions`.
    MaxPreparedTransactions,
    /// `max_locks_per_transaction`.
    MaxLocksPerTransaction,
}

impl Setting {
    /// All of them, in `pg_controldata`'s order.
    pub const ALL: [Setting; 5] = [
        Setting::MaxConnections,
        Setting::MaxWorkerProcesses,
        Setting::MaxWalSenders,
        Setting::MaxPreparedTransactions,
        Setting::MaxLocksPerTransaction,
    ];

    /// The parameter's name.
    pub fn name(self) -> &'static str {
        match self {
            Setting::MaxConnections => "max_connections",
            Setting::MaxWorkerProcesses => "max_worker_processes",
            Setting::MaxWalSenders => "max_wal_senders",
            Setting::MaxPreparedTransactions => "max_prepared_transactions",
            Setting::MaxLocksPerTransaction => "max_locks_per_transaction",
        }
    }

    /// The label of its line in `pg_controldata`'s output.
    pub fn controldata_label(self) -> &'static str {
        match self {
            Setting::MaxConnections => "max_connections setting",
            Setting::MaxWorkerProcesses => "max_worker_processes setting",
            Setting::MaxWalSenders => "max_wal_senders setting",
            Setting::MaxPreparedTransactions => "max_prepared_xacts setting",
            Setting::MaxLocksPerTransaction => "max_locks_per_xact setting",
        }
    }

    /// PostgreSQL's built-in default, what the server runs when no file sets it.
    pub fn pg_default(self) -> i64 {
        match self {
            Setting::MaxConnections => 100,
            Setting::MaxWorkerProcesses => 8,
            Setting::MaxWalSenders => 10,
            Setting::MaxPreparedTransactions => 0,
            Setting::MaxLocksPerTransaction => 64,
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Values of these settings as one source has them (the control file, or the running server);
/// a setting the source did not show is absent and never compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Values(BTreeMap<Setting, i64>);

impl Values {
    /// From `(setting, value)` pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (Setting, i64)>) -> Values {
        Values(pairs.into_iter().collect())
    }

    /// The value of `s`, if known.
    pub fn get(&self, s: Setting) -> Option<i64> {
        self.0.get(&s).copied()
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `pg_get_wal_replay_pause_state()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplayPause {
    /// `not paused` (and what a primary reports).
    #[default]
    NotPaused,
    /// `pause requested`: asked for, not in effect yet.
    Requested,
    /// `paused`.
    Paused,
}

impl ReplayPause {
    /// Reads PostgreSQL's wording; anything unknown counts as not paused.
    pub fn parse(s: &str) -> ReplayPause {
        match s.trim() {
            "paused" => ReplayPause::Paused,
            "pause requested" => ReplayPause::Requested,
            _ => ReplayPause::NotPaused,
        }
    }
}

/// A setting a replica is started with above its configuration, because the control file
/// says the primary's WAL needs that much.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raise {
    /// Which.
    pub setting: Setting,
    /// The configured value (PostgreSQL's default when the configuration does not set it).
    pub configured: i64,
    /// The control file's value, which the replica starts with.
    pub to: i64,
}

impl fmt::Display for Raise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {} (configured {})", self.setting, self.to, self.configured)
    }
}

/// The configured value of `s` in `params` (names compared case-insensitively); `None` when it
/// is set to something that is not a plain integer (validation reports that elsewhere, and a
/// value that cannot be compared is left alone).
fn configured(params: &BTreeMap<String, String>, s: Setting) -> Option<i64> {
    match params.iter().find(|(k, _)| k.eq_ignore_ascii_case(s.name())) {
        None => Some(s.pg_default()),
        Some((_, v)) => v.trim().parse().ok(),
    }
}

/// Rule: **a replica starts with at least its control file's values.** Raises each setting in
/// `params` that is below `control`'s value to that value (replacing the entry under whatever
/// spelling it had) and returns what it raised; settings the control file does not show, or
/// whose configured value is not an integer, stay as configured.
pub fn raise_for_replica(params: &mut BTreeMap<String, String>, control: &Values) -> Vec<Raise> {
    let mut raised = Vec::new();
    for s in Setting::ALL {
        let (Some(want), Some(have)) = (control.get(s), configured(params, s)) else { continue };
        if want > have {
            params.retain(|k, _| !k.eq_ignore_ascii_case(s.name()));
            params.insert(s.name().to_string(), want.to_string());
            raised.push(Raise { setting: s, configured: have, to: want });
        }
    }
    raised
}

/// A setting the running server has below what the WAL it replays needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Which.
    pub setting: Setting,
    /// What the server runs with.
    pub running: i64,
    /// What the control file (the primary's parameter-change record) needs.
    pub needed: i64,
}

/// Why replay is stuck, for the log and the cycle's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked(pub Vec<Shortfall>);

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.0.iter().map(|s| format!("{} = {} below the primary's {}", s.setting, s.running, s.needed)).collect();
        write!(f, "recovery paused for insufficient parameter settings ({})", parts.join(", "))
    }
}

/// Rule: **a replica paused for insufficient settings is stuck until restarted.** PostgreSQL
/// pauses replay on its own when a parameter-change record asks for more than the server runs
/// with; it is told from an operator's pause by the server running below its control file
/// (which the record updated). `None` when replay is not paused, or paused with enough.
pub fn replay_blocked(pause: ReplayPause, running: &Values, control: &Values) -> Option<Blocked> {
    if pause != ReplayPause::Paused {
        return None;
    }
    let short: Vec<Shortfall> = Setting::ALL
        .into_iter()
        .filter_map(|s| match (running.get(s), control.get(s)) {
            (Some(r), Some(c)) if r < c => Some(Shortfall { setting: s, running: r, needed: c }),
            _ => None,
        })
        .collect();
    (!short.is_empty()).then_some(Blocked(short))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn control(conns: i64) -> Values {
        Values::from_pairs([
            (Setting::MaxConnections, conns),
            (Setting::MaxWorkerProcesses, 8),
            (Setting::MaxWalSenders, 10),
            (Setting::MaxPreparedTransactions, 0),
            (Setting::MaxLocksPerTransaction, 64),
        ])
    }

    #[test]
    fn a_replica_starts_with_at_least_its_control_file_values() {
        let mut p = params(&[("max_connections", "100"), ("work_mem", "4MB")]);
        let raised = raise_for_replica(&mut p, &control(150));
        assert_eq!(raised, vec![Raise { setting: Setting::MaxConnections, configured: 100, to: 150 }]);
        assert_eq!(p["max_connections"], "150");
        assert_eq!(p["work_mem"], "4MB", "other parameters untouched");
        assert_eq!(raised[0].to_string(), "max_connections = 150 (configured 100)");
    }

    #[test]
    fn a_replica_keeps_a_configured_value_at_or_above_the_control_file() {
        let mut p = params(&[("max_connections", "200")]);
        assert!(raise_for_replica(&mut p, &control(150)).is_empty(), "raising: the replica goes first");
        assert_eq!(p["max_connections"], "200");
        let mut p = params(&[("max_connections", "150")]);
        assert!(raise_for_replica(&mut p, &control(150)).is_empty());
    }

    #[test]
    fn a_decrease_waits_until_the_primary_replayed_lower() {
        // The operator lowered max_connections to 100; the primary still runs 150 (its control
        // record says so), so a replica restarted now keeps 150, and takes 100 only once the
        // primary's lower value reached its control file.
        let mut p = params(&[("max_connections", "100")]);
        assert_eq!(raise_for_replica(&mut p, &control(150)).len(), 1);
        assert_eq!(p["max_connections"], "150");
        let mut p = params(&[("max_connections", "100")]);
        assert!(raise_for_replica(&mut p, &control(100)).is_empty());
        assert_eq!(p["max_connections"], "100");
    }

    #[test]
    fn an_unset_setting_counts_as_postgres_default() {
        let mut p = params(&[]);
        let c = Values::from_pairs([(Setting::MaxPreparedTransactions, 10), (Setting::MaxLocksPerTransaction, 64)]);
        let raised = raise_for_replica(&mut p, &c);
        assert_eq!(raised, vec![Raise { setting: Setting::MaxPreparedTransactions, configured: 0, to: 10 }]);
        assert_eq!(p.len(), 1, "only what must change is set: {p:?}");
    }

    #[test]
    fn a_raise_replaces_any_spelling_and_leaves_unreadable_values() {
        let mut p = params(&[("Max_Connections", "50"), ("max_worker_processes", "lots")]);
        let c = Values::from_pairs([(Setting::MaxConnections, 100), (Setting::MaxWorkerProcesses, 16)]);
        let raised = raise_for_replica(&mut p, &c);
        assert_eq!(raised.len(), 1);
        assert_eq!(p, params(&[("max_connections", "100"), ("max_worker_processes", "lots")]));
        assert!(raise_for_replica(&mut params(&[]), &Values::default()).is_empty(), "no control data: nothing");
    }

    #[test]
    fn a_replica_paused_below_its_control_file_is_blocked() {
        let running = control(100);
        let b = replay_blocked(ReplayPause::Paused, &running, &control(150)).expect("blocked");
        assert_eq!(b.0, vec![Shortfall { setting: Setting::MaxConnections, running: 100, needed: 150 }]);
        assert_eq!(
            b.to_string(),
            "recovery paused for insufficient parameter settings (max_connections = 100 below the primary's 150)"
        );
    }

    #[test]
    fn an_operators_pause_or_a_running_replay_is_not_blocked() {
        assert_eq!(replay_blocked(ReplayPause::Paused, &control(150), &control(150)), None, "operator's pause");
        assert_eq!(replay_blocked(ReplayPause::Paused, &control(200), &control(150)), None);
        assert_eq!(replay_blocked(ReplayPause::NotPaused, &control(100), &control(150)), None);
        assert_eq!(replay_blocked(ReplayPause::Requested, &control(100), &control(150)), None);
        assert_eq!(replay_blocked(ReplayPause::Paused, &Values::default(), &control(150)), None, "unknown");
    }

    #[test]
    fn pause_state_wording() {
        assert_eq!(ReplayPause::parse("paused"), ReplayPause::Paused);
        assert_eq!(ReplayPause::parse("pause requested"), ReplayPause::Requested);
        assert_eq!(ReplayPause::parse("not paused"), ReplayPause::NotPaused);
    }
}
