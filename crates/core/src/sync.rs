//! The leader's side of synchronous replication: which standbys PostgreSQL waits for
//! (`synchronous_standby_names`) and which members the DCS `sync` key says may take over.
//!
//! Terms: `L`/`k` are the names and count of the setting PostgreSQL applies (`FIRST k (L)` or
//! `ANY k (L)`: a commit is acknowledged once `k` of `L` have flushed it); `V`/`q` are the `sync`
//! key's voters (`sync_standby`) and `quorum`. A member may be promoted automatically when it,
//! together with `q` voters that are not ahead of it, makes `q + 1` voters (see
//! [`crate::sync_election`]); in `synchronous_mode: on` `q` is 0 and any voter qualifies.
//!
//! **The safety rule kept here:** for every acknowledged commit, at most `q` voters lack it.
//! Then any `q + 1` voters include one that has it, and a member at least as far as all of them
//! has it too. Each cycle the leader moves one safe step towards the wanted state:
//! 1. the key first (`V1`, `q1`): it drops members that left or are no longer wanted, admits
//!    members PostgreSQL has confirmed (listed, reported `sync`/`quorum` by
//!    `pg_stat_replication`, and flushed past the [`SyncMark`]), and sets the smallest `q1` that
//!    covers commits acknowledged under the setting in force *and* under the one about to be set;
//! 2. then the setting (`L2`, `k2`), with `V1 ⊆ L2` and `k2` large enough for `q1`.
//!
//! So a member enters `V` only in a cycle after PostgreSQL started waiting for it (names are set
//! first, written to the key later), and leaves `V` before PostgreSQL stops waiting for it (key
//! first, names after). At every moment the key names only members the setting in force lists.
//!
//! Why `q1` covers older commits: a commit acknowledged before the setting in force was first
//! seen is at or below the mark's flush position, so confirmed members have it; the others were
//! covered by the previous key, whose `q` is kept unless the confirmed members alone prove it can
//! be lowered (`min(q, |V1 \ C|)`).

use crate::action::Action;
use crate::dynamic::DynamicConfig;
use crate::lsn::Lsn;
use crate::model::{Cluster, SyncState};
use crate::observe::{Millis, RunningPg, Walsender};
use crate::roles::{PgState, WalsenderState};
use crate::standby_names::{Method, StandbyNames, STRICT_PLACEHOLDER};
use crate::sync_mode::SyncMode;

/// The primary's flush position when the setting `names` was first seen in force: every commit
/// acknowledged under an earlier setting lies at or below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncMark {
    /// The observed `synchronous_standby_names` this mark belongs to.
    pub names: String,
    /// The primary's flush position at that moment.
    pub flush: Lsn,
    /// When it was first seen.
    pub seen_at: Millis,
}

/// What the leader's sync step decides on.
#[derive(Clone, Debug)]
pub struct LeaderSync<'a> {
    /// This member (the leader).
    pub me: &'a str,
    /// The dynamic configuration in force.
    pub config: &'a DynamicConfig,
    /// The DCS snapshot (members, tags, the `sync` key and its revision).
    pub cluster: &'a Cluster,
    /// Local PostgreSQL, running as primary.
    pub pg: &'a RunningPg,
    /// The mark remembered from earlier cycles.
    pub mark: Option<&'a SyncMark>,
    /// Now.
    pub now: Millis,
}

/// The step: actions in order, the mark to remember, and a note for the cycle's message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// `WriteSync`/`DeleteSync` first, then `SetSynchronousStandbyNames`.
    pub actions: Vec<Action>,
    /// The mark for the setting observed this cycle.
    pub mark: Option<SyncMark>,
    /// What changed, if anything.
    pub note: Option<String>,
}

/// The setting PostgreSQL applies, as far as the bound needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Applied {
    /// Empty: commits are acknowledged without any standby.
    Async,
    /// Unreadable, or `*`: nothing can be said about who acknowledged a commit.
    Unknown,
    /// `FIRST k (L)` / `ANY k (L)`.
    Names(StandbyNames),
}

impl Applied {
    fn read(s: &str) -> Applied {
        match StandbyNames::parse(s) {
            Ok(None) => Applied::Async,
            Ok(Some(n)) if n.has_star() => Applied::Unknown,
            Ok(Some(n)) => Applied::Names(n),
            Err(_) => Applied::Unknown,
        }
    }

    fn lists(&self, name: &str) -> bool {
        matches!(self, Applied::Names(n) if n.lists(name))
    }
}

/// At most how many of `voters` can lack a commit acknowledged under `applied`.
///
/// `k` of `L` acknowledged it, at most `|L \ V|` of them outside `V`, so at least
/// `k - |L \ V|` voters have it. The strict placeholder names no standby: with `k` larger than
/// the real names, no commit is ever acknowledged and nobody can lack one.
fn lacking_bound(voters: &[String], applied: &Applied) -> usize {
    match applied {
        Applied::Async | Applied::Unknown => voters.len(),
        Applied::Names(n) => {
            let real: Vec<&String> = n.names.iter().filter(|x| x.as_str() != STRICT_PLACEHOLDER).collect();
            if n.num > real.len() {
                return 0;
            }
            let outside = real.iter().filter(|x| !voters.iter().any(|v| v.eq_ignore_ascii_case(x))).count();
            let voters_with_it = n.num.saturating_sub(outside);
            voters.len().saturating_sub(voters_with_it)
        }
    }
}

/// A standby that may be listed in `synchronous_standby_names`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Candidate {
    name: String,
    priority: i64,
    nofailover: bool,
    sticky: bool,
}

/// The position of a standby that a commit waits for under `synchronous_commit`, and so the one
/// `maximum_lag_on_syncnode` measures (Patroni's choice of `pg_stat_replication` column): under
/// `remote_apply` a standby whose replay is paused holds commits up however fast it flushes, so
/// it must stop being synchronous; under `remote_write` the written position counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckPoint {
    /// `write_lsn` (`remote_write`).
    Write,
    /// `flush_lsn` (`on`, and the levels that do not wait for a standby at all).
    #[default]
    Flush,
    /// `replay_lsn` (`remote_apply`).
    Replay,
}

impl AckPoint {
    /// Rule: **the lag of a synchronous standby is measured where commits wait for it.**
    pub fn of(synchronous_commit: &str) -> AckPoint {
        match synchronous_commit.trim().to_ascii_lowercase().as_str() {
            "remote_apply" => AckPoint::Replay,
            "remote_write" => AckPoint::Write,
            _ => AckPoint::Flush,
        }
    }

    /// That position of standby `w`.
    pub fn position(self, w: &Walsender) -> Option<Lsn> {
        match self {
            AckPoint::Write => w.write,
            AckPoint::Flush => w.flush,
            AckPoint::Replay => w.replay,
        }
    }
}

/// Streaming members that may be synchronous (not `nosync`, `sync_priority > 0`, running, within
/// `maximum_lag_on_syncnode` at their [`AckPoint`]), best first: higher `sync_priority`, members
/// that may fail over, members already synchronous (fewer changes), then by name.
fn candidates(inp: &LeaderSync<'_>, voters: &[String], applied: &Applied) -> Vec<Candidate> {
    let ack = inp.pg.commit_waits_for;
    let rows: Vec<(&Walsender, &crate::model::Member)> = inp
        .pg
        .walsenders
        .iter()
        .filter(|w| w.state == WalsenderState::Streaming && ack.position(w).is_some())
        .filter_map(|w| inp.cluster.member(&w.application_name).map(|m| (w, m)))
        .filter(|(_, m)| m.name != inp.me && m.data.tags.can_be_sync() && m.data.state == PgState::Running)
        .collect();
    // Lag is measured against the most advanced standby (the primary's own position when there is
    // only one), so a burst of writes does not swap every standby at once.
    let reference = if rows.len() > 1 {
        rows.iter().filter_map(|(w, _)| ack.position(w)).max().unwrap_or_default()
    } else {
        inp.pg.wal.flush.unwrap_or_default()
    };
    let max_lag = inp.config.sync_max_lag();
    let mut out: Vec<Candidate> = rows
        .into_iter()
        .filter(|(w, _)| max_lag.is_none_or(|l| ack.position(w).unwrap_or_default().lag_behind(reference) <= l))
        .map(|(w, m)| Candidate {
            name: m.name.clone(),
            priority: m.data.tags.sync_priority(),
            nofailover: !m.data.tags.can_fail_over(),
            sticky: voters.contains(&m.name) || applied.lists(&w.application_name),
        })
        .collect();
    out.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.nofailover.cmp(&b.nofailover))
            .then(b.sticky.cmp(&a.sticky))
            .then(a.name.cmp(&b.name))
    });
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// Members PostgreSQL treats as synchronous under the setting in force and that flushed past the
/// mark, so they hold every commit acknowledged before that setting.
fn confirmed(inp: &LeaderSync<'_>, applied: &Applied, mark: &SyncMark) -> Vec<String> {
    inp.pg
        .walsenders
        .iter()
        .filter(|w| w.state == WalsenderState::Streaming && w.sync_state.acknowledges_commits())
        .filter(|w| applied.lists(&w.application_name) && w.flush.is_some_and(|f| f >= mark.flush))
        .filter_map(|w| inp.cluster.member(&w.application_name).map(|m| m.name.clone()))
        .collect()
}

/// The setting the leader wants when nothing else decides it: names, count, method.
fn method_of(mode: SyncMode) -> Method {
    match mode {
        SyncMode::Quorum => Method::Any,
        _ => Method::First,
    }
}

/// The placeholder setting: waits for a standby that does not exist.
pub fn placeholder(mode: SyncMode) -> String {
    StandbyNames { method: method_of(mode), num: 1, names: vec![STRICT_PLACEHOLDER.into()] }.render()
}

/// Rule: **strict mode with no standby to name waits for any standby**, with Patroni's value:
/// `*` in `synchronous_mode: on`, `ANY 1 (*)` in quorum mode. No commit is acknowledged until a
/// standby has it, and none is lost: the `sync` key then names no voter, so no member but this
/// leader may be promoted until one is confirmed under a setting that names it (whose mark lies
/// past every commit acknowledged under `*`).
pub fn strict_without_standby(mode: SyncMode) -> String {
    match mode {
        SyncMode::Quorum => "ANY 1 (*)".into(),
        _ => "*".into(),
    }
}

/// The setting a leader starts PostgreSQL with (in place, after a crash or an aborted
/// switchover), derived from the `sync` key alone so it is safe before any observation: the
/// voters with `k = |V| - q`; when the key has no voters (only the leader may then be promoted),
/// asynchronous, or in strict mode [`strict_without_standby`]; the placeholder when the key is not
/// this leader's (nothing may be acknowledged before it claims the key).
pub fn restore_names(me: &str, config: &DynamicConfig, cluster: &Cluster) -> String {
    let mode = config.sync_mode();
    match cluster.sync.as_ref().filter(|s| s.leader_is(me)) {
        Some(s) if !s.voters().is_empty() => {
            let v = s.voters();
            let num = match mode {
                SyncMode::Quorum => v.len().saturating_sub(s.quorum()).max(1),
                _ => v.len(),
            };
            StandbyNames { method: method_of(mode), num, names: v }.render()
        }
        Some(_) if !config.sync_strict() => String::new(),
        Some(_) => strict_without_standby(mode),
        None => placeholder(mode),
    }
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

/// One cycle of the leader's synchronous replication management.
pub fn leader_step(inp: &LeaderSync<'_>) -> SyncPlan {
    let mode = inp.config.sync_mode();
    let observed = inp.pg.synchronous_standby_names.as_str();
    let mut plan = SyncPlan::default();

    if !mode.is_active() {
        // Turned off: the key goes (replicas no longer consult it). The setting returns to the
        // user's own value through the driver's parameter rendering.
        if inp.cluster.sync.is_some() || inp.cluster.sync_revision != 0 {
            plan.actions.push(Action::DeleteSync { expected_revision: inp.cluster.sync_revision });
            plan.note = Some("synchronous_mode is off: removed the sync key".into());
        }
        return plan;
    }

    let applied = Applied::read(observed);
    let mark = match inp.mark.filter(|m| m.names == observed) {
        Some(m) => m.clone(),
        None => SyncMark { names: observed.to_string(), flush: inp.pg.wal.flush.unwrap_or_default(), seen_at: inp.now },
    };
    let key = inp.cluster.sync.as_ref().filter(|s| s.leader_is(inp.me));
    let (v_cur, q_cur) = match key {
        Some(s) => (s.voters(), s.quorum()),
        None => (Vec::new(), 0),
    };
    let c = confirmed(inp, &applied, &mark);
    let cands = candidates(inp, &v_cur, &applied);
    let wanted = inp.config.synchronous_node_count();
    let strict = inp.config.sync_strict();

    // The wanted setting.
    let mut target: Vec<String> = match mode {
        SyncMode::On => cands.iter().take(wanted).map(|c| c.name.clone()).collect(),
        _ => {
            let mut t = Vec::new();
            for c in &cands {
                // A member that may not fail over adds no availability as a voter; Patroni takes
                // it only to reach the wanted count.
                if !c.nofailover || t.len() < wanted {
                    t.push(c.name.clone());
                }
            }
            t
        }
    };
    let keep_all = strict && target.is_empty();
    let mut k_target = match mode {
        SyncMode::On => target.len(),
        _ => wanted.min(target.len()),
    };

    // Phase 1: the key.
    let in_target = |n: &String, t: &[String]| t.contains(n);
    let v1: Vec<String> = if keep_all {
        // Strict mode with nobody to wait for: keep the last voters, they hold the latest commits.
        v_cur.iter().filter(|v| applied.lists(v)).cloned().collect()
    } else {
        // A voter the target no longer wants stays while its replacement is not confirmed yet, so
        // swapping a synchronous standby never leaves the key without one.
        let replacing = target.iter().any(|t| !v_cur.contains(t) && !c.contains(t));
        let still_candidate = |v: &String| cands.iter().any(|c| &c.name == v);
        let keep = |v: &&String| applied.lists(v) && (in_target(v, &target) || (replacing && still_candidate(v)));
        let mut v: Vec<String> = v_cur.iter().filter(keep).cloned().collect();
        for n in &c {
            if in_target(n, &target) && !v.contains(n) {
                v.push(n.clone());
            }
        }
        v
    };
    let any_standby = keep_all && v1.is_empty();
    if keep_all {
        if any_standby {
            target = Vec::new();
        } else {
            target = v1.clone();
            k_target = if mode == SyncMode::On { v1.len() } else { 1 };
        }
    }
    let unconfirmed_voters = v1.iter().filter(|v| !c.contains(v)).count();
    let old = q_cur.min(unconfirmed_voters);
    let cur = lacking_bound(&v1, &applied);
    let goal = if mode == SyncMode::Quorum && !keep_all {
        let g = lacking_bound(
            &v1,
            &Applied::Names(StandbyNames { method: Method::Any, num: k_target, names: target.clone() }),
        );
        if g < v1.len() {
            g
        } else {
            0
        }
    } else {
        0
    };
    let q1 = old.max(cur).max(goal);
    if key.is_none() || !same_set(&v1, &v_cur) || q1 != q_cur {
        let state = SyncState::new(inp.me, &v1, q1);
        plan.note = Some(format!("sync key: voters [{}], quorum {q1}", state.sync_standby.clone().unwrap_or_default()));
        plan.actions.push(Action::WriteSync { state, expected_revision: inp.cluster.sync_revision });
    }

    // Phase 2: the setting, safe under the key just written: every voter listed, and `k2` large
    // enough that at most `q1` voters can lack a commit.
    let mut names = target;
    for v in &v1 {
        if !names.contains(v) {
            names.push(v.clone());
        }
    }
    let desired = if any_standby {
        strict_without_standby(mode)
    } else if names.is_empty() {
        String::new()
    } else {
        let method = method_of(mode);
        let fits =
            |k: usize| lacking_bound(&v1, &Applied::Names(StandbyNames { method, num: k, names: names.clone() })) <= q1;
        let k2 = match mode {
            SyncMode::On => names.len(),
            _ => (k_target.max(1)..=names.len()).find(|&k| fits(k)).unwrap_or(names.len()),
        };
        StandbyNames { method, num: k2, names }.render()
    };
    if desired != observed {
        let what = if desired.is_empty() { "'' (asynchronous)".to_string() } else { desired.clone() };
        plan.note = Some(match plan.note {
            Some(n) => format!("{n}; synchronous_standby_names = {what}"),
            None => format!("synchronous_standby_names = {what}"),
        });
        plan.actions.push(Action::SetSynchronousStandbyNames(desired));
    }
    plan.mark = Some(mark);
    plan
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
