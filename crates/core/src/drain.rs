//! The switchover's drain: a leader about to stop PostgreSQL for a planned switchover first lets
//! the proxies finish the transactions they run on it, for a bounded time.
//!
//! Protocol, in etcd under the cluster's prefix (Patroni skips these keys, see [`crate::keys`]):
//! * each running `rampart proxy` holds `proxies/<id>` (say `/service/pg/proxies/host-1234`),
//!   attached to an etcd lease of its own (TTL about 10 s, kept alive by the proxy), so the key of
//!   a proxy that died goes away by itself. Its value is a [`ProxyReport`]:
//!   `{"drain_timeout": <seconds>, "drained": <member name or null>}`;
//! * while a switchover of leader L is due ([`draining_leader`]), a proxy starts no new
//!   transaction on L (it withholds the primary route) and writes `"drained": "L"` as soon as it
//!   holds no open transaction on L (at once if it had none); `null` once no switchover is due. It
//!   writes only when the value changes: two writes per proxy and switchover, so the many
//!   clusters sharing an etcd pay nothing while nothing happens;
//! * the leader, its switchover due and admitted, keeps the lock and PostgreSQL running while a
//!   report does not name it as drained, at most [`bound_ms`] counted from the first cycle it saw
//!   the switchover due; then it stops PostgreSQL all the same (the fast shutdown ends whatever is
//!   left). A change of a proxy key wakes its loop (the DCS watch), and it looks again every
//!   [`crate::node::HANDOVER_CYCLE_MS`] anyway.
//!
//! Invariants:
//! * no proxy key, no wait: a cluster without proxies switches over exactly as before;
//! * the wait is bounded: neither a stuck proxy nor a malformed key holds a switchover longer than
//!   [`MAX_DRAIN_TIMEOUT_S`];
//! * only a report naming this leader counts: one left over from a switchover of another member
//!   is not drained;
//! * a failover never waits: with the leader gone nothing runs on it, and a forced one is the
//!   operator saying "now" (the caller does not ask).

use std::collections::BTreeMap;

use crate::model::{Cluster, ProxyReport};
use crate::observe::Millis;

/// How long the leader waits when no pending proxy says how long it needs.
pub const DEFAULT_DRAIN_TIMEOUT_S: u64 = 5;

/// The longest the leader ever waits, whatever the proxies say: the switchover was asked for
/// now, and the candidate's catch-up wait comes after this one.
pub const MAX_DRAIN_TIMEOUT_S: u64 = 60;

/// What the leader does before stopping PostgreSQL for a switchover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainStep {
    /// Every proxy has drained (or there is none): stop now.
    Stop,
    /// Keep PostgreSQL running for these proxies (ids), until `until` at the latest.
    Wait {
        /// Proxies whose report does not name the leader as drained.
        pending: Vec<String>,
        /// When the wait ends whatever they report.
        until: Millis,
    },
    /// The bound passed: stop without waiting any longer for these proxies.
    GiveUp {
        /// Proxies whose report still does not name the leader as drained.
        pending: Vec<String>,
    },
}

/// The proxies (ids) whose report does not say they drained `leader`.
pub fn pending<'a>(leader: &str, proxies: &'a BTreeMap<String, ProxyReport>) -> Vec<&'a str> {
    proxies.iter().filter(|(_, r)| r.drained.as_deref() != Some(leader)).map(|(id, _)| id.as_str()).collect()
}

/// How long the leader waits for `reports` (the pending ones): the largest `drain_timeout` among
/// them, [`DEFAULT_DRAIN_TIMEOUT_S`] when none says, never more than [`MAX_DRAIN_TIMEOUT_S`]. A
/// proxy that has drained has nothing left to wait for, so its own timeout does not count.
pub fn bound_ms<'a>(reports: impl IntoIterator<Item = &'a ProxyReport>) -> u64 {
    let secs = reports.into_iter().filter_map(|r| r.drain_timeout).max().unwrap_or(DEFAULT_DRAIN_TIMEOUT_S);
    secs.min(MAX_DRAIN_TIMEOUT_S) * 1000
}

/// How much longer a switchover of this cluster may take because of its proxies: the whole wait
/// if none of them drains, 0 without proxies. For whoever waits for a switchover's outcome (the
/// REST API, the CLI), so that a wait the leader is entitled to is not reported as a failure.
pub fn longest_wait_ms(proxies: &BTreeMap<String, ProxyReport>) -> u64 {
    if proxies.is_empty() {
        0
    } else {
        bound_ms(proxies.values())
    }
}

/// The rule: whether the leader `leader`, which first saw its switchover due at `since`, stops
/// PostgreSQL at `now` or waits for the proxies in `proxies`.
pub fn before_stop(leader: &str, proxies: &BTreeMap<String, ProxyReport>, since: Millis, now: Millis) -> DrainStep {
    let pending = pending(leader, proxies);
    if pending.is_empty() {
        return DrainStep::Stop;
    }
    let until = since.plus_ms(bound_ms(pending.iter().map(|id| &proxies[*id])));
    let pending = pending.into_iter().map(str::to_string).collect();
    if now >= until {
        DrainStep::GiveUp { pending }
    } else {
        DrainStep::Wait { pending, until }
    }
}

/// For the proxy: the leader whose switchover is due at `wall_ms` (the one whose transactions it
/// lets finish, and whose name it reports once none is open), if any. The same condition that
/// withholds the primary route ([`crate::manual::handover_due`]).
pub fn draining_leader(cluster: &Cluster, wall_ms: i64) -> Option<&str> {
    let leader = cluster.leader.as_ref()?.name.as_str();
    crate::manual::handover_due(cluster, leader, wall_ms).then_some(leader)
}

/// For the proxy: the report to publish, given its `drain_timeout` (s) and how many transactions
/// it holds open on the draining leader (`open_on(leader)`, asked only while one is draining).
pub fn report(cluster: &Cluster, wall_ms: i64, drain_timeout: u64, open_on: impl FnOnce(&str) -> usize) -> ProxyReport {
    let drained = draining_leader(cluster, wall_ms).filter(|l| open_on(l) == 0).map(str::to_string);
    ProxyReport { drain_timeout: Some(drain_timeout), drained }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Failover, Leader};

    fn reports(list: &[(&str, Option<u64>, Option<&str>)]) -> BTreeMap<String, ProxyReport> {
        list.iter()
            .map(|(id, t, d)| (id.to_string(), ProxyReport { drain_timeout: *t, drained: d.map(Into::into) }))
            .collect()
    }

    #[test]
    fn the_leader_waits_only_for_proxies_that_have_not_drained_it_and_only_until_the_bound() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let t0 = Millis(1_000);
        let cases: [(&str, BTreeMap<String, ProxyReport>, u64, DrainStep); 8] = [
            ("no proxies: no wait", reports(&[]), 0, DrainStep::Stop),
            ("all drained: stop", reports(&[("p1", Some(30), Some("a")), ("p2", None, Some("a"))]), 0, DrainStep::Stop),
            (
                "waits while a proxy has not drained",
                reports(&[("p1", Some(30), Some("a")), ("p2", Some(10), None)]),
                9_999,
                DrainStep::Wait { pending: ids(&["p2"]), until: Millis(11_000) },
            ),
            (
                "demotes when the bound passed",
                reports(&[("p1", Some(30), Some("a")), ("p2", Some(10), None)]),
                10_000,
                DrainStep::GiveUp { pending: ids(&["p2"]) },
            ),
            (
                "a stale report naming another member is not drained",
                reports(&[("p1", Some(2), Some("b"))]),
                0,
                DrainStep::Wait { pending: ids(&["p1"]), until: Millis(3_000) },
            ),
            (
                "default bound when no pending proxy says",
                reports(&[("p1", None, None), ("p2", Some(50), Some("a"))]),
                0,
                DrainStep::Wait { pending: ids(&["p1"]), until: Millis(6_000) },
            ),
            (
                "the bound is capped",
                reports(&[("p1", Some(3600), None)]),
                59_999,
                DrainStep::Wait { pending: ids(&["p1"]), until: Millis(61_000) },
            ),
            (
                "a zero timeout does not wait",
                reports(&[("p1", Some(0), None)]),
                0,
                DrainStep::GiveUp { pending: ids(&["p1"]) },
            ),
        ];
        for (rule, proxies, after, want) in cases {
            assert_eq!(before_stop("a", &proxies, t0, t0.plus_ms(after)), want, "{rule}");
        }
    }

    #[test]
    fn whoever_waits_for_the_outcome_allows_for_the_whole_drain() {
        assert_eq!(longest_wait_ms(&reports(&[])), 0, "no proxies: Patroni's wait, unchanged");
        assert_eq!(longest_wait_ms(&reports(&[("p1", None, None)])), 5_000);
        assert_eq!(longest_wait_ms(&reports(&[("p1", Some(20), Some("a")), ("p2", Some(9), None)])), 20_000);
        assert_eq!(longest_wait_ms(&reports(&[("p1", Some(600), None)])), 60_000);
    }

    #[test]
    fn a_proxy_reports_the_draining_leader_once_it_holds_no_transaction_on_it() {
        let mut c = Cluster {
            leader: Some(Leader { name: "a".into(), lease: 1, mod_revision: 1 }),
            failover: Some(Failover { leader: Some("a".into()), member: Some("b".into()), ..Default::default() }),
            ..Default::default()
        };
        let drained = |c: &Cluster, open: usize| report(c, 0, 7, |l| if l == "a" { open } else { 99 }).drained;
        assert_eq!(drained(&c, 2), None, "transactions still open");
        assert_eq!(drained(&c, 0), Some("a".into()));
        assert_eq!(report(&c, 0, 7, |_| 0).drain_timeout, Some(7));
        c.failover.as_mut().unwrap().scheduled_at = Some("2100-01-01T00:00:00Z".into());
        assert_eq!(drained(&c, 0), None, "not due yet");
        c.failover = None;
        assert_eq!(drained(&c, 0), None, "no switchover");
        assert_eq!(draining_leader(&c, 0), None);
    }
}
