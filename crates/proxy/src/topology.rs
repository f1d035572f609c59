//! Where connections go: the [`Routes`] computed from one cluster snapshot read from the DCS.
//!
//! Pure: no I/O and no clock; the caller passes the age of the snapshot.
//!
//! Invariants:
//! * the primary route is the leader key's member, and only while that member itself reports
//!   `role: primary` and `state: running` (a leader key alone is not enough: during a
//!   switchover the key can name a member that has not finished promoting);
//! * fail closed: a snapshot older than the cluster's ttl has no primary route, because the
//!   leader's lease may have expired since and another member may already be promoting;
//! * no new session for a primary that is about to step down: while a switchover of the current
//!   leader is due (a `failover` key naming it, or no leader, and not scheduled for later), the
//!   primary route is withheld, so new clients are held for the new leader instead of starting
//!   on a server whose fast shutdown would end them, possibly halfway through authentication;
//! * read-only routes are streaming replicas not tagged `noloadbalance`, at most `max_lag`
//!   bytes behind the leader's WAL position as the leader reported it when they could last
//!   report theirs ([`LeaderPositions`]): a lag may be underestimated by up to one loop of WAL,
//!   as by Patroni's `/replica?lag`, never overestimated.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rampart_core::Cluster;
use rampart_core::{PgState, Role};

/// One PostgreSQL server the proxy can connect to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Member name.
    pub name: String,
    /// Host from the member's `conn_url`.
    pub host: String,
    /// Port from the member's `conn_url`.
    pub port: u16,
    /// Its share of balanced reads, in thousandths (the member's `lb_weight` tag, as Pgpool-II's
    /// `backend_weight`; 1000 without the tag). A replica weighing 0 gets no reads.
    pub weight: u32,
}

/// The weight of a member without an `lb_weight` tag.
pub const DEFAULT_WEIGHT: u32 = 1000;

/// The `lb_weight` tag in thousandths: a non-negative number (or numeric string); anything else
/// counts as absent.
fn weight_of(data: &rampart_core::MemberData) -> u32 {
    let tag = data.tags.other.get("lb_weight");
    let value = match tag {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match value {
        Some(w) if w.is_finite() && w >= 0.0 => (w * 1000.0).round().min(f64::from(u32::MAX)) as u32,
        _ => DEFAULT_WEIGHT,
    }
}

impl Backend {
    /// `host:port`, for connecting and logging (IPv6 hosts in brackets).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Where new connections go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// The primary, for the read-write port; `None` while there is none (or it is not known
    /// for certain).
    pub primary: Option<Backend>,
    /// Replicas eligible for read-only connections, in member-name order.
    pub replicas: Vec<Backend>,
}

/// The routing inputs that do not come from the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Maximum replica lag in bytes.
    pub max_lag: u64,
    /// ttl to use when the cluster has no dynamic configuration yet.
    pub default_ttl: Duration,
}

/// How long a snapshot of `cluster` may be trusted for the primary route: the cluster's ttl.
pub fn ttl(cluster: &Cluster, policy: Policy) -> Duration {
    cluster.config.as_ref().map(|c| Duration::from_secs(c.ttl)).unwrap_or(policy.default_ttl)
}

/// The leader's WAL positions the proxy saw over the last loop, to measure replica lag from.
///
/// Every member publishes its position once per loop (`loop_wait`), each at its own moment, so
/// under a heavy write load the leader's latest report can be up to a loop newer than a
/// replica's: compared with it, a replica that streams in step looks as far behind as the WAL
/// written in between (16 MB a second under pgbench's random updates), and its read route comes
/// and goes. A replica's report is at most a loop old, so the leader position it is measured
/// from is the one the leader had reported a loop ago (the oldest of the window kept here).
#[derive(Debug, Default)]
pub struct LeaderPositions {
    /// The leader's name and its reports, oldest first, with when they were seen.
    leader: String,
    seen: VecDeque<(Instant, u64)>,
}

impl LeaderPositions {
    /// Records the leader's position in `cluster`, read at `at`.
    pub fn observe(&mut self, cluster: &Cluster, at: Instant) {
        let Some(leader) = cluster.leader.as_ref().and_then(|l| cluster.members.iter().find(|m| m.name == l.name))
        else {
            self.seen.clear();
            return;
        };
        let position = leader.data.wal_position().0;
        if position == 0 {
            return;
        }
        if self.leader != leader.name {
            // Another leader (or the first): its history starts now.
            self.leader.clone_from(&leader.name);
            self.seen.clear();
        }
        if self.seen.back().is_none_or(|&(_, p)| p != position) {
            self.seen.push_back((at, position));
        }
    }

    /// The position to measure replica lag from at `now`: the leader's report that was current
    /// `window` ago (the lowest kept), or `None` without reports. Forgets older ones.
    pub fn reference(&mut self, now: Instant, window: Duration) -> Option<u64> {
        let since = now.checked_sub(window).unwrap_or(now);
        // Keep the newest report from before the window: it was current at its start.
        while self.seen.len() > 1 && self.seen[1].0 <= since {
            self.seen.pop_front();
        }
        self.seen.iter().map(|&(_, p)| p).min()
    }
}

/// How far back the leader positions go: a loop, and a second for the members' own delays.
pub fn lag_window(cluster: &Cluster) -> Duration {
    let loop_wait = cluster.config.as_ref().map_or(10, |c| c.loop_wait);
    Duration::from_secs(loop_wait + 1)
}

/// The routes for `cluster`, read `age` ago, at wall-clock time `wall_ms` (Unix milliseconds,
/// for scheduled switchovers); replica lag is measured from `lag_from` (see [`LeaderPositions`])
/// when it is lower than the leader's latest report.
pub fn routes(cluster: &Cluster, age: Duration, policy: Policy, wall_ms: i64, lag_from: Option<u64>) -> Routes {
    let ttl = ttl(cluster, policy);
    let leader = cluster.leader.as_ref().and_then(|l| cluster.members.iter().find(|m| m.name == l.name));
    let fresh = age <= ttl;
    let primary = leader
        .filter(|_| fresh)
        .filter(|m| m.data.role.is_primary() && m.data.state == PgState::Running)
        .filter(|m| !rampart_core::manual::handover_due(cluster, &m.name, wall_ms))
        .and_then(|m| backend(&m.name, &m.data));
    // The reference position: the leader's own report, else the last optime it wrote.
    let reference = leader.map(|m| m.data.wal_position().0).filter(|&p| p > 0).unwrap_or(cluster.status.optime);
    let reference = lag_from.map_or(reference, |r| r.min(reference));
    let replicas = cluster
        .members
        .iter()
        .filter(|m| leader.is_none_or(|l| l.name != m.name))
        .filter(|m| m.data.role == Role::Replica && m.data.replication_state.as_deref() == Some("streaming"))
        .filter(|m| !m.data.tags.noloadbalance && weight_of(&m.data) > 0)
        .filter(|m| reference.saturating_sub(m.data.wal_position().0) <= policy.max_lag)
        .filter_map(|m| backend(&m.name, &m.data))
        .collect();
    Routes { primary, replicas }
}

fn backend(name: &str, data: &rampart_core::MemberData) -> Option<Backend> {
    let (host, port) = data.conn_host_port()?;
    Some(Backend { name: name.to_string(), host, port, weight: weight_of(data) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_core::model::{Failover, Leader, Member};
    use rampart_core::{DynamicConfig, MemberData};

    const POLICY: Policy = Policy { max_lag: 1000, default_ttl: Duration::from_secs(30) };

    fn member(name: &str, port: u16, role: &str, xlog: u64) -> Member {
        let data = MemberData {
            conn_url: format!("postgres://127.0.0.1:{port}/postgres"),
            state: "running".into(),
            role: role.into(),
            xlog_location: (role == "primary").then_some(xlog),
            replay_lsn: (role == "replica").then_some(xlog),
            receive_lsn: (role == "replica").then_some(xlog),
            replication_state: (role == "replica").then(|| "streaming".to_string()),
            ..Default::default()
        };
        Member { name: name.into(), data, lease: 1 }
    }

    fn cluster(leader: Option<&str>, members: Vec<Member>) -> Cluster {
        Cluster {
            leader: leader.map(|l| Leader { name: l.into(), lease: 1, mod_revision: 1 }),
            members,
            ..Default::default()
        }
    }

    fn healthy() -> Cluster {
        cluster(
            Some("a"),
            vec![
                member("a", 5001, "primary", 10_000),
                member("b", 5002, "replica", 9_500),
                member("c", 5003, "replica", 10_000),
            ],
        )
    }

    fn names(r: &Routes) -> (Option<&str>, Vec<&str>) {
        (r.primary.as_ref().map(|b| b.name.as_str()), r.replicas.iter().map(|b| b.name.as_str()).collect())
    }

    #[test]
    fn healthy_cluster() {
        let r = routes(&healthy(), Duration::ZERO, POLICY, 0, None);
        assert_eq!(names(&r), (Some("a"), vec!["b", "c"]));
        assert_eq!(r.primary.unwrap().addr(), "127.0.0.1:5001");
    }

    #[test]
    fn no_leader_key_no_primary_but_replicas_stay() {
        let mut c = healthy();
        c.leader = None;
        c.status.optime = 10_000;
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, None)), (None, vec!["b", "c"]));
    }

    #[test]
    fn leader_must_report_running_primary() {
        let mut c = healthy();
        c.members[0].data.role = "replica".into();
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, None)).0, None, "promotion not finished");
        let mut c = healthy();
        c.members[0].data.state = "stopped".into();
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, None)).0, None);
        let mut c = healthy();
        c.members[0].data.role = "master".into();
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, None)).0, Some("a"), "Patroni 2 spelling");
        let mut c = healthy();
        c.members.remove(0);
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, None)).0, None, "leader key without member key");
    }

    #[test]
    fn stale_snapshot_fails_closed() {
        let c = healthy();
        assert_eq!(names(&routes(&c, Duration::from_secs(30), POLICY, 0, None)).0, Some("a"));
        assert_eq!(names(&routes(&c, Duration::from_secs(31), POLICY, 0, None)).0, None);
        let mut c = healthy();
        c.config = Some(DynamicConfig { ttl: 10, ..Default::default() });
        assert_eq!(names(&routes(&c, Duration::from_secs(11), POLICY, 0, None)).0, None, "the cluster's own ttl");
    }

    #[test]
    fn a_due_switchover_withholds_the_primary_but_not_the_replicas() {
        let due = |f: Failover, wall_ms: i64| {
            let mut c = healthy();
            c.failover = Some(f);
            let r = routes(&c, Duration::ZERO, POLICY, wall_ms, None);
            let (primary, replicas) = names(&r);
            (primary.map(str::to_string), replicas.into_iter().map(str::to_string).collect::<Vec<_>>())
        };
        let req = |leader: Option<&str>, member: Option<&str>, at: Option<&str>| Failover {
            leader: leader.map(Into::into),
            member: member.map(Into::into),
            scheduled_at: at.map(Into::into),
            force: false,
        };
        assert_eq!(due(req(Some("a"), Some("b"), None), 0), (None, vec!["b".into(), "c".into()]), "switchover from a");
        assert_eq!(
            due(req(None, Some("b"), None), 0),
            (None, vec!["b".into(), "c".into()]),
            "failover to b with a leader"
        );
        assert_eq!(due(req(Some("x"), None, None), 0).0.as_deref(), Some("a"), "names another leader: a ignores it");
        assert_eq!(due(req(None, Some("a"), None), 0).0.as_deref(), Some("a"), "a is the candidate already");
        let at = "2026-11-22T03:00:00+00:00";
        let t = rampart_core::clock::parse_rfc3339_ms(at).unwrap();
        assert_eq!(due(req(Some("a"), None, Some(at)), t - 1).0.as_deref(), Some("a"), "scheduled for later");
        assert_eq!(due(req(Some("a"), None, Some(at)), t).0, None, "its time has come");
        assert_eq!(due(req(Some("a"), None, Some("soon")), t).0.as_deref(), Some("a"), "unreadable: a clears it");
    }

    #[test]
    fn lag_is_measured_from_the_leader_position_of_a_loop_ago() {
        // The leader reported 10_000 a loop ago, then 10_900 and 11_500; replica b still reports
        // 9_500 (within max_lag of the older report), c 11_100.
        let t0 = Instant::now();
        let window = Duration::from_secs(2);
        let mut seen = LeaderPositions::default();
        let mut c = healthy();
        c.members[2].data.replay_lsn = Some(11_100);
        c.members[2].data.receive_lsn = Some(11_100);
        for (secs, position) in [(0, 10_000), (1, 10_900), (2, 11_500)] {
            c.members[0].data.xlog_location = Some(position);
            seen.observe(&c, t0 + Duration::from_secs(secs));
        }
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, None)).1, vec!["c"], "from the latest report");
        let from = seen.reference(t0 + Duration::from_secs(2), window);
        assert_eq!(from, Some(10_000), "the report current a window ago");
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, from)).1, vec!["b", "c"]);
        // A replica that stops reporting falls behind as the window moves on.
        c.members[0].data.xlog_location = Some(12_000);
        seen.observe(&c, t0 + Duration::from_secs(4));
        let from = seen.reference(t0 + Duration::from_secs(4), window);
        assert_eq!(from, Some(11_500), "older reports forgotten");
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, from)).1, vec!["c"]);
        // A lower reference than the latest report only: never above it.
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, Some(99_000))).1, vec!["c"]);
        // Another leader starts afresh; no leader, no reference.
        c.leader.as_mut().unwrap().name = "c".into();
        c.members[2].data.xlog_location = Some(20_000);
        seen.observe(&c, t0 + Duration::from_secs(5));
        assert_eq!(seen.reference(t0 + Duration::from_secs(5), window), Some(20_000));
        c.leader = None;
        seen.observe(&c, t0 + Duration::from_secs(6));
        assert_eq!(seen.reference(t0 + Duration::from_secs(6), window), None);
    }

    #[test]
    fn replica_filters() {
        let mut c = healthy();
        c.members[2].data.tags.noloadbalance = true;
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, None)).1, vec!["b"]);
        let mut c = healthy();
        c.members[1].data.replication_state = Some("in archive recovery".into());
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, None)).1, vec!["c"]);
        let mut c = healthy();
        c.members[1].data.replay_lsn = Some(8_000);
        c.members[1].data.receive_lsn = Some(8_999);
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, None)).1, vec!["c"], "1001 bytes behind");
        c.members[1].data.receive_lsn = Some(9_000);
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, None)).1, vec!["b", "c"], "exactly max_lag behind");
        let mut c = healthy();
        c.members[1].data.conn_url = String::new();
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0, None)).1, vec!["c"], "no address");
    }

    #[test]
    fn the_lb_weight_tag_weighs_a_replica_and_zero_takes_it_out() {
        let mut c = healthy();
        c.members[1].data.tags.other.insert("lb_weight".into(), serde_json::json!("2.5"));
        c.members[2].data.tags.other.insert("lb_weight".into(), serde_json::json!(0));
        let r = routes(&c, Duration::ZERO, POLICY, 0, None);
        assert_eq!(names(&r).1, vec!["b"], "weight 0: no reads");
        assert_eq!(r.replicas[0].weight, 2500);
        for (tag, weight) in
            [(serde_json::json!(1), 1000), (serde_json::json!("x"), 1000), (serde_json::json!(-1), 1000)]
        {
            let mut c = healthy();
            c.members[1].data.tags.other.insert("lb_weight".into(), tag.clone());
            assert_eq!(routes(&c, Duration::ZERO, POLICY, 0, None).replicas[0].weight, weight, "{tag}");
        }
        assert_eq!(healthy().members.len(), 3);
        assert!(routes(&healthy(), Duration::ZERO, POLICY, 0, None)
            .replicas
            .iter()
            .all(|b| b.weight == DEFAULT_WEIGHT));
    }
}
