//! Who may take the leader lock when there is none.
//!
//! A replica races only if it is the healthiest eligible member: not tagged `nofailover`, not
//! further behind the leader's last published position than `maximum_lag_on_failover`, and no
//! reachable eligible peer is further ahead (or equally far with a higher priority). If any peer
//! still reports itself a running primary, nobody races. Several members may still consider
//! themselves healthiest (equal positions and priorities); the atomic create of the leader key
//! then picks one.
//!
//! A replica whose WAL receiver is still streaming does not race either: it is connected to a
//! primary that is evidently alive (for example one whose agent died while PostgreSQL kept
//! running), and promoting next to it would make two writable primaries. A primary that fences
//! itself, crashes or is stopped drops that connection, so a real failover is not held up.
//! Only a stream that has carried something lately counts ([`stream_is_stale`]): behind a
//! network partition the connection is not closed, it goes silent, and PostgreSQL would report it
//! `streaming` until `wal_receiver_timeout` (a minute by default) — holding the failover of an
//! isolated primary, which has fenced itself long before, for that long.

use crate::lsn::{Lsn, Timeline};
use crate::model::{Cluster, Tags};
use crate::observe::{LocalPg, PeerReport, PgProcess};

/// Whether a WAL receiver that has heard nothing from its upstream for `silent_ms` is no evidence
/// that the upstream is alive: silent for half the ttl or more. By the time the leader key has
/// expired (a ttl after its last renewal), a primary cut off from its replicas has been silent
/// longer than that, while one that is alive answers its standbys' pings: the agent sets
/// `wal_receiver_timeout` to half the ttl unless the operator chose a value, so an idle standby
/// pings every quarter ttl. (With a longer `wal_receiver_timeout` an idle primary beside a dead
/// agent can look gone; the watchdog covers that, as in Patroni.)
pub fn stream_is_stale(silent_ms: u64, ttl_secs: u64) -> bool {
    silent_ms >= ttl_secs * 500
}

/// Why this member will not race, or `Ok` if it may.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It may try to take the lock.
    Healthiest,
    /// It may not, for this reason (logged as the cycle's message).
    NotHealthiest(String),
}

/// Inputs of the race decision for this member.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    /// Our tags.
    pub tags: &'a Tags,
    /// Our furthest WAL position.
    pub wal: Lsn,
    /// Our timeline.
    pub timeline: Timeline,
    /// The leader's last published position (`status.optime`).
    pub cluster_optime: Lsn,
    /// The cluster's timeline.
    pub cluster_timeline: Timeline,
    /// `maximum_lag_on_failover`.
    pub max_lag: u64,
    /// `check_timeline`.
    pub check_timeline: bool,
    /// Our WAL receiver is streaming from an upstream right now, and heard from it lately (see
    /// [`stream_is_stale`]).
    pub streaming: bool,
}

/// Decides whether this member is the healthiest, given what its peers reported.
pub fn judge(me: &Candidate<'_>, peers: &[PeerReport]) -> Verdict {
    if !me.tags.can_fail_over() {
        // Patroni's words (ha.py), which its acceptance suite and operators' log searches look for.
        return Verdict::NotHealthiest(
            "following a different leader because I am not allowed to promote (nofailover or failover_priority <= 0)"
                .into(),
        );
    }
    if me.streaming {
        return Verdict::NotHealthiest(
            "still streaming from the former leader, whose PostgreSQL is therefore alive".into(),
        );
    }
    let lag = me.wal.lag_behind(me.cluster_optime);
    if lag > me.max_lag {
        return Verdict::NotHealthiest(format!(
            "{lag} bytes behind the last known leader position, over maximum_lag_on_failover ({})",
            me.max_lag
        ));
    }
    if me.check_timeline && me.timeline < me.cluster_timeline {
        return Verdict::NotHealthiest(format!(
            "on timeline {} while the cluster is on {}",
            me.timeline, me.cluster_timeline
        ));
    }
    for p in peers {
        let Some(s) = &p.status else { continue };
        if s.is_primary {
            return Verdict::NotHealthiest(format!("primary ({}) is still alive", p.name));
        }
        if !s.can_fail_over {
            continue;
        }
        if s.wal > me.wal {
            return Verdict::NotHealthiest(format!(
                "Wal position of {} is ahead of my wal position ({} > {})",
                p.name, s.wal, me.wal
            ));
        }
        if s.wal == me.wal && s.priority > me.tags.priority() {
            return Verdict::NotHealthiest(format!(
                "{} has equally tolerable WAL position and priority {}, while this node has priority {}",
                p.name,
                s.priority,
                me.tags.priority()
            ));
        }
    }
    Verdict::Healthiest
}

/// Whether this cycle needs the other members' own reports (`GET /patroni`): during a leader
/// race (no leader, and our PostgreSQL runs, so we may race) and while a switchover or failover
/// request is handled (the leader checks its candidates; replicas defer to the named one).
pub fn wants_peer_reports(cluster: &Cluster, local: &LocalPg) -> bool {
    (cluster.leader.is_none() && matches!(local.process, PgProcess::Running(_))) || cluster.failover.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::PeerStatus;

    #[test]
    fn a_silent_stream_is_no_evidence_of_a_live_primary() {
        assert!(!stream_is_stale(0, 10));
        assert!(!stream_is_stale(4_999, 10));
        assert!(stream_is_stale(5_000, 10));
        assert!(stream_is_stale(60_000, 30) && !stream_is_stale(14_000, 30));
    }

    fn peer(name: &str, wal: u64, primary: bool, eligible: bool, prio: i64) -> PeerReport {
        PeerReport {
            name: name.into(),
            status: Some(PeerStatus {
                is_primary: primary,
                wal: Lsn(wal),
                timeline: 1,
                can_fail_over: eligible,
                priority: prio,
            }),
        }
    }

    fn me(tags: &Tags, wal: u64) -> Candidate<'_> {
        Candidate {
            tags,
            wal: Lsn(wal),
            timeline: 1,
            cluster_optime: Lsn(1000),
            cluster_timeline: 1,
            max_lag: 100,
            check_timeline: false,
            streaming: false,
        }
    }

    #[test]
    fn table() {
        let t = Tags::default();
        let nofail = Tags { nofailover: Some(true), ..Default::default() };
        let high = Tags { failover_priority: Some(5.into()), ..Default::default() };
        let unreachable = PeerReport { name: "gone".into(), status: None };
        let cases: Vec<(&str, Candidate, Vec<PeerReport>, bool)> = vec![
            ("alone and caught up", me(&t, 1000), vec![], true),
            ("nofailover never races", me(&nofail, 2000), vec![], false),
            ("too far behind", me(&t, 800), vec![], false),
            ("within lag", me(&t, 950), vec![], true),
            ("peer ahead wins", me(&t, 1000), vec![peer("b", 1010, false, true, 1)], false),
            ("ineligible peer ahead ignored", me(&t, 1000), vec![peer("b", 1010, false, false, 1)], true),
            ("unreachable peer ignored", me(&t, 1000), vec![unreachable], true),
            ("live primary blocks race", me(&t, 1000), vec![peer("a", 0, true, true, 1)], false),
            ("tie, peer higher priority", me(&t, 1000), vec![peer("b", 1000, false, true, 5)], false),
            ("tie, we have higher priority", me(&high, 1000), vec![peer("b", 1000, false, true, 1)], true),
            ("tie, same priority: both race", me(&t, 1000), vec![peer("b", 1000, false, true, 1)], true),
        ];
        for (name, c, peers, want) in cases {
            let got = judge(&c, &peers) == Verdict::Healthiest;
            assert_eq!(got, want, "{name}: {:?}", judge(&c, &peers));
        }
    }

    #[test]
    fn a_replica_still_streaming_does_not_race() {
        let t = Tags::default();
        let mut c = me(&t, 1000);
        c.streaming = true;
        assert!(matches!(judge(&c, &[]), Verdict::NotHealthiest(why) if why.contains("still streaming")));
    }

    #[test]
    fn timeline_check_is_optional() {
        let t = Tags::default();
        let mut c = me(&t, 1000);
        c.cluster_timeline = 3;
        assert_eq!(judge(&c, &[]), Verdict::Healthiest);
        c.check_timeline = true;
        assert!(matches!(judge(&c, &[]), Verdict::NotHealthiest(_)));
    }

    #[test]
    fn peers_are_asked_in_a_leader_race_and_while_a_request_is_handled() {
        use crate::model::{Failover, Leader};
        use crate::observe::{DataDir, LocalPg, PgProcess, RunningPg};
        let local = |process| LocalPg { data: DataDir::Empty, process };
        let running = local(PgProcess::Running(RunningPg::default()));
        let led =
            Cluster { leader: Some(Leader { name: "n1".into(), lease: 1, mod_revision: 1 }), ..Default::default() };
        assert!(!wants_peer_reports(&led, &running), "a leader in place: nothing to race for");
        assert!(wants_peer_reports(&Cluster::default(), &running), "no leader: the race needs them");
        assert!(!wants_peer_reports(&Cluster::default(), &local(PgProcess::Stopped)), "a stopped server races not");
        let requested = Cluster { failover: Some(Failover { member: Some("n2".into()), ..Default::default() }), ..led };
        assert!(wants_peer_reports(&requested, &local(PgProcess::Stopped)));
    }
}
