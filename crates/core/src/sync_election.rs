//! Who may take the leader lock when synchronous replication is on: the second safety rule,
//! applied by replicas on the `sync` key of the DCS snapshot (never on their own guesses).
//!
//! The rule is active while `synchronous_mode` is on or quorum and the `sync` key names a leader;
//! otherwise the asynchronous election alone decides (a cluster that has not yet written the key
//! has acknowledged no commit synchronously).
//!
//! * The former leader (`sync.leader`) may always be promoted: it has all of its own commits.
//! * `synchronous_mode: on`: only a member listed in `sync_standby`.
//! * Both modes: the member, counted if it is a voter, plus the voters that answered and are not
//!   ahead of it, must make `quorum + 1`. The leader keeps "at most `quorum` voters lack any
//!   acknowledged commit" (see [`crate::sync`]), so among `quorum + 1` voters one has every
//!   acknowledged commit, and a member at least as far as all of them has them too. In mode `on`
//!   `quorum` is 0: a listed member qualifies on its own.
//!
//! Peers that could not be promoted under this rule do not hold a candidate back by being ahead
//! ([`SyncRule::may_compete`]): an asynchronous standby can be ahead of the synchronous ones, and
//! deferring to it would leave the cluster without a leader. Nor does, for the former leader, a
//! peer on an older timeline than its own ([`SyncRule::left_behind`]).

use crate::dynamic::DynamicConfig;
use crate::lsn::Lsn;
use crate::model::{Cluster, SyncState};
use crate::observe::PeerReport;
use crate::sync_mode::SyncMode;

/// The rule in force, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncRule<'a> {
    mode: SyncMode,
    key: &'a SyncState,
}

impl<'a> SyncRule<'a> {
    /// The rule for this configuration and snapshot; `None` while it does not apply.
    pub fn of(config: &DynamicConfig, cluster: &'a Cluster) -> Option<SyncRule<'a>> {
        let mode = config.sync_mode();
        let key = cluster.sync.as_ref()?;
        (mode.is_active() && key.leader.as_deref().is_some_and(|l| !l.is_empty())).then_some(SyncRule { mode, key })
    }

    /// Whether `peer`'s position matters to a candidate: it could itself be promoted.
    pub fn may_compete(&self, peer: &str) -> bool {
        match self.mode {
            SyncMode::On => self.key.vouches_for(peer),
            _ => true,
        }
    }

    /// Whether, for `me` on `my_timeline`, `peer_timeline` is a branch the cluster left: `me` is
    /// the key's leader (the last primary, which promoted onto `my_timeline` and has every
    /// acknowledged commit), and the peer reports an older timeline, so whatever it has past the
    /// fork (a former primary not rewound yet) was never acknowledged on the cluster's history.
    /// Such a peer being "ahead" must not hold the former leader back: Patroni lets it, and a
    /// leader that promoted and crashed at once then waits for ever for a member that can only
    /// rewind once there is a leader again. (A peer on the leader's own timeline cannot be ahead
    /// of it, so a timeline the peer reports late changes nothing.)
    pub fn left_behind(
        &self,
        me: &str,
        my_timeline: crate::lsn::Timeline,
        peer_timeline: crate::lsn::Timeline,
    ) -> bool {
        self.key.leader_is(me) && peer_timeline < my_timeline
    }

    /// Whether `me`, at `my_wal`, may be promoted given what the peers reported. `Err` says why
    /// not, in words for the cycle's message.
    pub fn may_promote(&self, me: &str, my_wal: Lsn, peers: &[PeerReport]) -> Result<(), String> {
        if self.key.leader_is(me) {
            return Ok(());
        }
        let voters = self.key.voters();
        let listed = voters.iter().any(|v| v == me);
        if self.mode == SyncMode::On && !listed {
            return Err(format!(
                "not a synchronous standby (the sync key lists [{}])",
                self.key.sync_standby.as_deref().unwrap_or_default()
            ));
        }
        let need = self.key.quorum() + 1;
        let seen = peers
            .iter()
            .filter(|p| voters.contains(&p.name))
            .filter(|p| p.status.as_ref().is_some_and(|s| !s.is_primary && s.wal.0 > 0 && s.wal <= my_wal))
            .count();
        let votes = seen + usize::from(listed);
        if votes >= need {
            Ok(())
        } else {
            Err(format!(
                "{votes} of the {need} voters needed ({}quorum {} of [{}]) confirm I have every acknowledged commit",
                if listed { "myself included, " } else { "" },
                self.key.quorum(),
                self.key.sync_standby.as_deref().unwrap_or_default()
            ))
        }
    }

    /// Why a planned handover (switchover) from the running leader could not end with a promotion,
    /// judged before the leader stops: the candidate (named, or the best of the voters) will need
    /// `quorum + 1` voters, itself included, to confirm it has every acknowledged commit, and only
    /// voters streaming from the leader right now (`streaming`, by application name) will have the
    /// shutdown checkpoint to confirm it with. `None` when enough are streaming.
    pub fn handover_refusal(&self, candidate: Option<&str>, streaming: &[&str]) -> Option<String> {
        let voters = self.key.voters();
        let need = self.key.quorum() + 1;
        let live: Vec<&String> = voters.iter().filter(|v| streaming.contains(&v.as_str())).collect();
        let candidate_counts = candidate.is_none_or(|c| live.iter().any(|v| v.as_str() == c));
        if let Some(c) = candidate {
            if !candidate_counts && self.mode == SyncMode::On {
                return Some(format!("{c} is not a synchronous standby streaming from the leader"));
            }
        }
        // A named candidate that is not a voter adds no vote of its own.
        if live.len() >= need {
            return None;
        }
        Some(format!(
            "only {} of the sync key's voters [{}] stream from the leader, and the new leader needs {need} to confirm it has every acknowledged commit (quorum {})",
            live.len(),
            voters.join(","),
            self.key.quorum()
        ))
    }

    /// The voters in `synchronous_mode: on`, whose members alone may take over; `None` in quorum
    /// mode, where any member with enough votes may.
    pub fn listed_only(&self) -> Option<Vec<String>> {
        (self.mode == SyncMode::On).then(|| self.key.voters())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::PeerStatus;

    fn cluster(mode: SyncMode, voters: &[&str], quorum: usize) -> Cluster {
        let config = DynamicConfig { synchronous_mode: Some(mode), ..Default::default() };
        let v: Vec<String> = voters.iter().map(|s| s.to_string()).collect();
        Cluster { config: Some(config), sync: Some(SyncState::new("old", &v, quorum)), ..Default::default() }
    }

    #[test]
    fn a_handover_needs_quorum_plus_one_voters_streaming() {
        let c = cluster(SyncMode::Quorum, &["a", "b"], 1);
        let rule = SyncRule::of(&DynamicConfig { synchronous_mode: Some(SyncMode::Quorum), ..Default::default() }, &c)
            .unwrap();
        assert_eq!(rule.handover_refusal(Some("a"), &["a", "b"]), None);
        assert_eq!(rule.handover_refusal(None, &["a", "b"]), None);
        // b crashed: a alone cannot show it has the commits only b acknowledged.
        let why = rule.handover_refusal(Some("a"), &["a"]).expect("refused");
        assert!(why.contains("only 1 of the sync key's voters [a,b]"), "{why}");
        assert!(rule.handover_refusal(None, &["b"]).is_some());

        let on = cluster(SyncMode::On, &["a"], 0);
        let rule =
            SyncRule::of(&DynamicConfig { synchronous_mode: Some(SyncMode::On), ..Default::default() }, &on).unwrap();
        assert_eq!(rule.handover_refusal(Some("a"), &["a", "b"]), None);
        assert!(rule.handover_refusal(Some("a"), &["b"]).is_some(), "the sync standby itself is gone");
    }

    fn peer(name: &str, wal: u64) -> PeerReport {
        PeerReport {
            name: name.into(),
            status: Some(PeerStatus {
                is_primary: false,
                wal: Lsn(wal),
                timeline: 1,
                can_fail_over: true,
                priority: 1,
            }),
        }
    }

    fn rule(c: &Cluster) -> SyncRule<'_> {
        SyncRule::of(c.config.as_ref().unwrap(), c).unwrap()
    }

    #[test]
    fn inactive_without_mode_or_key_leader() {
        let mut c = cluster(SyncMode::Off, &["a"], 0);
        assert!(SyncRule::of(c.config.as_ref().unwrap(), &c).is_none());
        c.config.as_mut().unwrap().synchronous_mode = Some(SyncMode::On);
        c.sync.as_mut().unwrap().leader = None;
        assert!(SyncRule::of(c.config.as_ref().unwrap(), &c).is_none());
    }

    #[test]
    fn mode_on_only_listed_members_or_the_former_leader() {
        let c = cluster(SyncMode::On, &["a"], 0);
        let r = rule(&c);
        assert_eq!(r.may_promote("a", Lsn(10), &[]), Ok(()));
        assert!(r.may_promote("b", Lsn(99), &[]).unwrap_err().contains("not a synchronous standby"));
        assert_eq!(r.may_promote("old", Lsn(1), &[]), Ok(()));
        assert!(r.may_compete("a") && r.may_compete("old") && !r.may_compete("b"));
    }

    #[test]
    fn quorum_needs_enough_voters_not_ahead() {
        // ANY 2 (a, b, c): quorum 1, any 2 voters include one with every commit.
        let c = cluster(SyncMode::Quorum, &["a", "b", "c"], 1);
        let r = rule(&c);
        assert!(r.may_promote("a", Lsn(10), &[]).is_err(), "alone, a cannot know");
        assert_eq!(r.may_promote("a", Lsn(10), &[peer("b", 10)]), Ok(()));
        assert!(r.may_promote("a", Lsn(10), &[peer("b", 11)]).is_err(), "b is ahead: no vote");
        assert!(r.may_promote("a", Lsn(10), &[peer("x", 5)]).is_err(), "non-voters do not vote");
        // A non-voter needs quorum + 1 voters.
        assert!(r.may_promote("x", Lsn(10), &[peer("a", 10)]).is_err());
        assert_eq!(r.may_promote("x", Lsn(10), &[peer("a", 10), peer("c", 9)]), Ok(()));
        let silent = PeerReport { name: "b".into(), status: None };
        assert!(r.may_promote("a", Lsn(10), &[silent]).is_err(), "a silent voter is no vote");
        assert!(r.may_compete("x"));
    }

    #[test]
    fn empty_key_lets_only_the_former_leader_go() {
        let c = cluster(SyncMode::Quorum, &[], 0);
        let r = rule(&c);
        assert!(r.may_promote("a", Lsn(10), &[peer("b", 1)]).is_err());
        assert_eq!(r.may_promote("old", Lsn(0), &[]), Ok(()));
    }
}
