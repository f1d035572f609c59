//! What the admin pages (`/stats`, `/stats.json`) show, computed from one [`Snapshot`] and the
//! [`Routes`] in force: one row per member, with its role, lag, routing and connections.
//!
//! Pure: no I/O and no clock; the snapshot already carries the view's age.
//!
//! Invariants:
//! * every member of the DCS view has a row, and so does every backend that still has counters
//!   but left the view (its sessions may still be open), so no connection is ever hidden;
//! * lag is measured against the same reference as routing ([`crate::topology`]): the leader's
//!   own WAL position, else the leader's last `status` optime;
//! * "routed" is read from the routes in force, never recomputed, so the page shows what the
//!   proxy really does.

use std::time::Duration;

use rampart_core::Cluster;

use crate::server::POLL_INTERVAL;
use crate::session::Port;
use crate::stats::Snapshot;
use crate::topology::{self, Backend, Policy, Routes};

/// How fresh the DCS view is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// No successful read yet: nothing is routed.
    NoView,
    /// Read within the last few poll intervals.
    Fresh,
    /// Older than a few poll intervals (reads are failing) but within ttl: routes still stand.
    Lagging,
    /// Older than ttl: the primary route has been dropped (fail closed).
    Stale,
}

impl Freshness {
    /// Label for JSON and HTML.
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::NoView => "no_view",
            Freshness::Fresh => "fresh",
            Freshness::Lagging => "lagging",
            Freshness::Stale => "stale",
        }
    }
}

/// A view this many poll intervals old means reads have failed a few times in a row.
const LAGGING_POLLS: u32 = 3;

/// One member (or former member with counters) as the admin pages show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberRow {
    /// Member name (user input: escape before display).
    pub name: String,
    /// Whether the member is in the current DCS view.
    pub in_view: bool,
    /// Whether it holds the leader key.
    pub leader: bool,
    /// Role it published (`primary`, `replica`, ...).
    pub role: String,
    /// PostgreSQL state it published.
    pub state: String,
    /// Timeline it published.
    pub timeline: Option<u32>,
    /// Bytes behind the leader; `None` when it reports no position or there is no reference.
    pub lag: Option<u64>,
    /// `host:port` from its `conn_url`.
    pub address: Option<String>,
    /// `noloadbalance` tag.
    pub noloadbalance: bool,
    /// `nofailover` tag.
    pub nofailover: bool,
    /// It is the read-write route now.
    pub rw_route: bool,
    /// It is one of the read-only routes now.
    pub ro_route: bool,
    /// Sessions open now through the read-write port.
    pub active_rw: u64,
    /// Sessions open now through the read-only port.
    pub active_ro: u64,
    /// Sessions ever connected, through either port.
    pub total: u64,
    /// Bytes relayed from clients to it.
    pub bytes_to_server: u64,
    /// Bytes relayed from it to clients.
    pub bytes_to_client: u64,
}

/// The header facts and member rows of the admin pages.
#[derive(Clone, Debug, PartialEq)]
pub struct Overview {
    /// The cluster's scope (from the configuration).
    pub scope: String,
    /// Name on the leader key, if any.
    pub leader: Option<String>,
    /// Age of the DCS view, `None` before the first read.
    pub view_age: Option<Duration>,
    /// The ttl the view is judged against.
    pub ttl: Duration,
    /// How fresh the view is.
    pub freshness: Freshness,
    /// The read-write route now.
    pub primary_route: Option<String>,
    /// The read-only routes now.
    pub replica_routes: Vec<String>,
    /// Members in name order, then former members with counters.
    pub members: Vec<MemberRow>,
}

/// The overview for `snapshot` and `routes`; `policy` gives the ttl when the cluster has none.
pub fn overview(scope: &str, snapshot: &Snapshot, routes: &Routes, policy: Policy) -> Overview {
    let view = snapshot.view.as_ref();
    let ttl = view.map(|(c, _)| topology::ttl(c, policy)).unwrap_or(policy.default_ttl);
    let view_age = view.map(|(_, age)| *age);
    let freshness = match view_age {
        None => Freshness::NoView,
        Some(age) if age > ttl => Freshness::Stale,
        Some(age) if age > POLL_INTERVAL * LAGGING_POLLS => Freshness::Lagging,
        Some(_) => Freshness::Fresh,
    };
    let mut members: Vec<MemberRow> = match view {
        Some((cluster, _)) => member_rows(cluster),
        None => Vec::new(),
    };
    // Backends with counters that the view no longer lists: their sessions may still be open.
    for b in &snapshot.backends {
        if !members.iter().any(|m| m.name == b.name) {
            members.push(MemberRow { name: b.name.clone(), role: "-".into(), state: "-".into(), ..Default::default() });
        }
    }
    for m in &mut members {
        m.rw_route = routes.primary.as_ref().is_some_and(|p| p.name == m.name);
        m.ro_route = routes.replicas.iter().any(|r| r.name == m.name);
        for b in snapshot.backends.iter().filter(|b| b.name == m.name) {
            match b.port {
                Port::ReadWrite => m.active_rw += b.active,
                Port::ReadOnly => m.active_ro += b.active,
            }
            m.total += b.total;
            m.bytes_to_server += b.bytes_to_server;
            m.bytes_to_client += b.bytes_to_client;
        }
    }
    Overview {
        scope: scope.to_string(),
        leader: view.and_then(|(c, _)| c.leader.as_ref()).map(|l| l.name.clone()),
        view_age,
        ttl,
        freshness,
        primary_route: routes.primary.as_ref().map(|b| b.name.clone()),
        replica_routes: routes.replicas.iter().map(|b| b.name.clone()).collect(),
        members,
    }
}

fn member_rows(cluster: &Cluster) -> Vec<MemberRow> {
    let leader = cluster.leader_member();
    let reference = leader.map(|m| m.data.wal_position().0).filter(|&p| p > 0).unwrap_or(cluster.status.optime);
    cluster
        .members
        .iter()
        .map(|m| {
            let position = m.data.wal_position().0;
            let address = m
                .data
                .conn_host_port()
                .map(|(host, port)| Backend { name: String::new(), host, port, weight: 0 }.addr());
            MemberRow {
                name: m.name.clone(),
                in_view: true,
                leader: cluster.is_leader(&m.name),
                role: m.data.role.to_string(),
                state: m.data.state.to_string(),
                timeline: m.data.timeline,
                lag: (reference > 0 && position > 0).then(|| reference.saturating_sub(position)),
                address,
                noloadbalance: m.data.tags.noloadbalance,
                nofailover: m.data.tags.nofailover(),
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clients::DbTotals;
    use crate::pools_view::{PoolLine, PoolsView};
    use crate::stats::{BackendSnapshot, Decision, Holds};
    use rampart_core::model::{Leader, Member};
    use rampart_core::MemberData;

    pub(crate) const POLICY: Policy = Policy { max_lag: 1000, default_ttl: Duration::from_secs(30) };

    fn member(name: &str, port: u16, role: &str, xlog: u64) -> Member {
        let data = MemberData {
            conn_url: format!("postgres://127.0.0.1:{port}/postgres"),
            state: "running".into(),
            role: role.into(),
            timeline: Some(3),
            xlog_location: (role == "primary").then_some(xlog),
            receive_lsn: (role == "replica").then_some(xlog),
            replication_state: (role == "replica").then(|| "streaming".to_string()),
            ..Default::default()
        };
        Member { name: name.into(), data, lease: 1 }
    }

    /// A healthy three-member cluster led by `a`; `c` has a name that needs escaping everywhere.
    pub(crate) fn cluster() -> Cluster {
        Cluster {
            leader: Some(Leader { name: "a".into(), lease: 1, mod_revision: 1 }),
            members: vec![
                member("a", 5001, "primary", 10_000),
                member("b", 5002, "replica", 9_500),
                member("c<\"&'>\\\n", 5003, "replica", 10_000),
            ],
            ..Default::default()
        }
    }

    /// A snapshot of [`cluster`] read `age` ago, with one open session on `a` (rw) and on `b`
    /// (ro), some traffic, decisions and holds; and the routes for it.
    pub(crate) fn snapshot(age: Duration) -> (Snapshot, Routes) {
        let c = cluster();
        let routes = topology::routes(&c, age, POLICY, 0, None);
        let backend = |name: &str, port, active, total, bytes| BackendSnapshot {
            name: name.into(),
            port,
            active,
            total,
            bytes_to_server: bytes,
            bytes_to_client: bytes * 10,
        };
        let snapshot = Snapshot {
            uptime: Duration::from_secs(90),
            accepted_rw: 4,
            accepted_ro: 3,
            backends: vec![
                backend("a", Port::ReadWrite, 1, 4, 100),
                backend("b", Port::ReadOnly, 1, 2, 50),
                backend("c<\"&'>\\\n", Port::ReadOnly, 0, 1, 7),
            ],
            decisions: vec![
                (Port::ReadWrite, Decision::Primary, 4),
                (Port::ReadOnly, Decision::Replica, 3),
                (Port::ReadWrite, Decision::Refused, 1),
            ],
            holds: Holds { count: 2, sum_secs: 40.3, buckets: [0, 0, 1, 1, 1, 1, 1, 1, 2], timeouts: 1, waiting: 1 },
            protocol_errors: 5,
            fenced: 6,
            cancels: 7,
            tls_ok: 8,
            tls_failed: 9,
            view: Some((c, age)),
        };
        (snapshot, routes)
    }

    /// Two pools of `app` on `a` (one with a client waiting 1.5 s), one of a user whose name
    /// needs escaping on the retired `b`, and the counters of their databases.
    pub(crate) fn pools() -> PoolsView {
        let line = |database: &str, user: &str, backend: &str| PoolLine {
            database: database.into(),
            user: user.into(),
            backend: backend.into(),
            ..PoolLine::default()
        };
        PoolsView {
            pools: vec![
                PoolLine {
                    cl_active: 5,
                    cl_waiting: 2,
                    sv_active: 4,
                    sv_idle: 0,
                    sv_login: 1,
                    max_wait: Duration::from_millis(1500),
                    ..line("app", "app", "a")
                },
                PoolLine { cl_active: 1, sv_idle: 2, ..line("postgres", "app", "a") },
                PoolLine { cl_active: 1, sv_active: 1, retired: true, ..line("postgres", "u<\"&'>\\\n", "b") },
            ],
            stats: vec![
                DbTotals {
                    database: "app".into(),
                    xacts: 100,
                    queries: 250,
                    received: 4096,
                    sent: 8192,
                    xact_us: 2_500_000,
                    wait_us: 500_000,
                },
                DbTotals { database: "postgres".into(), xacts: 3, ..DbTotals::default() },
            ],
            pins: vec![(crate::session_features::Feature::Listen, 2)],
        }
    }

    #[test]
    fn rows_show_roles_lag_routes_and_connections() {
        let (snap, routes) = snapshot(Duration::from_millis(200));
        let o = overview("pg", &snap, &routes, POLICY);
        assert_eq!((o.leader.as_deref(), o.freshness, o.ttl), (Some("a"), Freshness::Fresh, Duration::from_secs(30)));
        assert_eq!(o.primary_route.as_deref(), Some("a"));
        assert_eq!(o.members.len(), 3);
        let a = &o.members[0];
        assert!(a.leader && a.rw_route && !a.ro_route);
        assert_eq!((a.lag, a.active_rw, a.active_ro, a.timeline), (Some(0), 1, 0, Some(3)));
        assert_eq!(a.address.as_deref(), Some("127.0.0.1:5001"));
        let b = &o.members[1];
        assert!(!b.leader && !b.rw_route && b.ro_route);
        assert_eq!((b.lag, b.active_rw, b.active_ro, b.total, b.bytes_to_client), (Some(500), 0, 1, 2, 500));
    }

    #[test]
    fn no_view_and_former_members() {
        let (mut snap, _) = snapshot(Duration::ZERO);
        snap.view = None;
        let o = overview("pg", &snap, &Routes::default(), POLICY);
        assert_eq!((o.freshness, o.leader.clone(), o.view_age), (Freshness::NoView, None, None));
        assert_eq!(o.members.len(), 3, "backends with counters still get rows");
        assert!(o.members.iter().all(|m| !m.in_view && !m.rw_route && m.lag.is_none()));
        assert_eq!(o.members[1].active_ro, 1);
    }

    #[test]
    fn freshness_follows_age_and_ttl() {
        let fresh = |secs| {
            let (snap, routes) = snapshot(Duration::from_secs(secs));
            overview("pg", &snap, &routes, POLICY).freshness
        };
        assert_eq!(
            (fresh(1), fresh(3), fresh(4), fresh(30)),
            (Freshness::Fresh, Freshness::Fresh, Freshness::Lagging, Freshness::Lagging)
        );
        assert_eq!(fresh(31), Freshness::Stale);
    }
}
