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
//!   bytes behind the leader's last known WAL position.

use std::time::Duration;

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

/// The routes for `cluster`, read `age` ago, at wall-clock time `wall_ms` (Unix milliseconds,
/// for scheduled switchovers).
pub fn routes(cluster: &Cluster, age: Duration, policy: Policy, wall_ms: i64) -> Routes {
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
        let r = routes(&healthy(), Duration::ZERO, POLICY, 0);
        assert_eq!(names(&r), (Some("a"), vec!["b", "c"]));
        assert_eq!(r.primary.unwrap().addr(), "127.0.0.1:5001");
    }

    #[test]
    fn no_leader_key_no_primary_but_replicas_stay() {
        let mut c = healthy();
        c.leader = None;
        c.status.optime = 10_000;
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0)), (None, vec!["b", "c"]));
    }

    #[test]
    fn leader_must_report_running_primary() {
        let mut c = healthy();
        c.members[0].data.role = "replica".into();
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0)).0, None, "promotion not finished");
        let mut c = healthy();
        c.members[0].data.state = "stopped".into();
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0)).0, None);
        let mut c = healthy();
        c.members[0].data.role = "master".into();
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0)).0, Some("a"), "Patroni 2 spelling");
        let mut c = healthy();
        c.members.remove(0);
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0)).0, None, "leader key without member key");
    }

    #[test]
    fn stale_snapshot_fails_closed() {
        let c = healthy();
        assert_eq!(names(&routes(&c, Duration::from_secs(30), POLICY, 0)).0, Some("a"));
        assert_eq!(names(&routes(&c, Duration::from_secs(31), POLICY, 0)).0, None);
        let mut c = healthy();
        c.config = Some(DynamicConfig { ttl: 10, ..Default::default() });
        assert_eq!(names(&routes(&c, Duration::from_secs(11), POLICY, 0)).0, None, "the cluster's own ttl");
    }

    #[test]
    fn a_due_switchover_withholds_the_primary_but_not_the_replicas() {
        let due = |f: Failover, wall_ms: i64| {
            let mut c = healthy();
            c.failover = Some(f);
            let r = routes(&c, Duration::ZERO, POLICY, wall_ms);
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
    fn replica_filters() {
        let mut c = healthy();
        c.members[2].data.tags.noloadbalance = true;
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0)).1, vec!["b"]);
        let mut c = healthy();
        c.members[1].data.replication_state = Some("in archive recovery".into());
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0)).1, vec!["c"]);
        let mut c = healthy();
        c.members[1].data.replay_lsn = Some(8_000);
        c.members[1].data.receive_lsn = Some(8_999);
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0)).1, vec!["c"], "1001 bytes behind");
        c.members[1].data.receive_lsn = Some(9_000);
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0)).1, vec!["b", "c"], "exactly max_lag behind");
        let mut c = healthy();
        c.members[1].data.conn_url = String::new();
        assert_eq!(names(&routes(&c, Duration::ZERO, POLICY, 0)).1, vec!["c"], "no address");
    }

    #[test]
    fn the_lb_weight_tag_weighs_a_replica_and_zero_takes_it_out() {
        let mut c = healthy();
        c.members[1].data.tags.other.insert("lb_weight".into(), serde_json::json!("2.5"));
        c.members[2].data.tags.other.insert("lb_weight".into(), serde_json::json!(0));
        let r = routes(&c, Duration::ZERO, POLICY, 0);
        assert_eq!(names(&r).1, vec!["b"], "weight 0: no reads");
        assert_eq!(r.replicas[0].weight, 2500);
        for (tag, weight) in
            [(serde_json::json!(1), 1000), (serde_json::json!("x"), 1000), (serde_json::json!(-1), 1000)]
        {
            let mut c = healthy();
            c.members[1].data.tags.other.insert("lb_weight".into(), tag.clone());
            assert_eq!(routes(&c, Duration::ZERO, POLICY, 0).replicas[0].weight, weight, "{tag}");
        }
        assert_eq!(healthy().members.len(), 3);
        assert!(routes(&healthy(), Duration::ZERO, POLICY, 0).replicas.iter().all(|b| b.weight == DEFAULT_WEIGHT));
    }
}
