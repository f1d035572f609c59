//! `failsafe_mode` (Patroni 3.0+): a primary may outlive a DCS outage when every member it knows
//! tells it, each cycle, that it may go on.
//!
//! The leader keeps the DCS `failsafe` key (`{member name: api_url}` of all known members). While
//! the DCS cannot be read, it POSTs `/failsafe` to every member of that topology; a member that
//! answers "Accepted" promises not to race for the lock for `ttl` from receipt (see
//! [`PingHold`]), and members missing from the topology never race at all. So a round that every
//! listed member accepted proves that nobody can become primary before `sent_at + ttl`: it serves
//! the leader exactly as a lock renewal sent at `sent_at` would ([`Round::proof_until`]).
//!
//! Invariants kept here (the safety rule is never two writable primaries):
//! * a round counts only when **every** listed member other than the leader accepted it, and only
//!   when it completed before the leader's current fence deadline: a member then accepted while
//!   the previous lease or round still bound it, so it cannot have been racing meanwhile;
//! * a round that misses a member proves nothing; the ordinary fencing deadline (last renewal or
//!   last complete round, plus ttl, minus the margin) still applies;
//! * the leader asks the union of the topology last read from the DCS and the one it derives
//!   from that snapshot (what it may have written since), so no member that could find itself in
//!   the stored key is left out;
//! * a replica holding a fresh ping does not race, even when it sees the DCS with the leader key
//!   expired: the old primary is alive and still writable until its own proof runs out, which is
//!   never later than the replica's hold. Patroni does the same by treating the pinging primary
//!   as the leader for `ttl` after its last POST.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::dynamic::DynamicConfig;
use crate::model::Cluster;
use crate::observe::Millis;

/// The `failsafe` key's value: member name to REST API URL.
pub type Topology = BTreeMap<String, String>;

/// Reads the `failsafe` key; `None` when it is not a JSON object of strings (Patroni discards
/// such a value, and so does the race rule below).
pub fn parse_topology(text: &str) -> Option<Topology> {
    match serde_json::from_str::<Value>(text).ok()? {
        Value::Object(map) => {
            map.into_iter().map(|(k, v)| v.as_str().map(|url| (k, url.to_string()))).collect::<Option<Topology>>()
        }
        _ => None,
    }
}

/// The topology the leader maintains: every member with a published API URL (Patroni's
/// `_failsafe_config`).
pub fn topology_of(cluster: &Cluster) -> Topology {
    cluster
        .members
        .iter()
        .filter(|m| !m.data.api_url.is_empty())
        .map(|m| (m.name.clone(), m.data.api_url.clone()))
        .collect()
}

/// Whom the leader must ask during an outage: the stored key and the topology derived from the
/// same snapshot together (the latter is what the leader wrote in that cycle).
pub fn targets_of(cluster: &Cluster) -> Topology {
    let mut t = cluster.failsafe.clone().unwrap_or_default();
    t.extend(topology_of(cluster));
    t
}

/// One member's answer to `POST /failsafe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Member name.
    pub name: String,
    /// It answered 200 with the body `Accepted` in time.
    pub accepted: bool,
    /// Its received/replayed WAL position (the `lsn` header), if it sent one.
    pub lsn: Option<u64>,
}

/// One round of `POST /failsafe` by the leader, as the driver ran it this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// When the first request was sent.
    pub sent_at: Millis,
    /// When the last answer arrived (or the round's timeout ran out).
    pub finished_at: Millis,
    /// One reply per member asked.
    pub replies: Vec<Reply>,
}

impl Round {
    /// Until when this round keeps the leader safe, if it counts: every member of `targets`
    /// other than `me` accepted, and the round ended before `deadline` (the fence deadline in
    /// force when it ran). `Err` says why it does not count.
    pub fn proof_until(&self, me: &str, targets: &Topology, deadline: Millis, ttl_secs: u64) -> Result<Millis, String> {
        if !targets.contains_key(me) {
            return Err(format!("{me} is not listed in the failsafe topology"));
        }
        let missing: Vec<&str> = targets
            .keys()
            .filter(|n| n.as_str() != me)
            .filter(|n| !self.replies.iter().any(|r| &r.name == *n && r.accepted))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!("no \"Accepted\" from {}", missing.join(", ")));
        }
        if self.finished_at >= deadline {
            return Err("the round ended after the fence deadline".into());
        }
        Ok(self.sent_at.plus_secs(ttl_secs))
    }
}

/// A replica's record of the last `POST /failsafe` it accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping {
    /// The primary that sent it.
    pub leader: String,
    /// When it arrived, on this node's monotonic clock.
    pub received_at: Millis,
    /// The primary's replication slots and their positions (its `slots`), its own member slot
    /// included.
    pub slots: BTreeMap<String, u64>,
}

/// The cluster as the leader sees it during an outage, for its slots (Patroni's
/// `Failsafe.update_cluster` on the primary): the last snapshot read, with each member that
/// cascades from another member at the position it gave in its answer, so the leader keeps
/// moving that member's idle slot forward and does not keep WAL for it forever.
pub fn with_reported_positions(cluster: &Cluster, round: &Round) -> Cluster {
    let mut c = cluster.clone();
    for m in c.members.iter_mut().filter(|m| m.data.tags.replicatefrom.is_some()) {
        if let Some(lsn) = round.replies.iter().find(|r| r.name == m.name && r.accepted).and_then(|r| r.lsn) {
            m.data.xlog_location = Some(lsn);
        }
    }
    c
}

/// The cluster as a replica sees it during an outage, for its slots (Patroni's
/// `Failsafe.update_cluster` on a replica): the last snapshot read, led by the primary that
/// pinged, with the slot positions that primary sent in place of `status.slots`, so the
/// replica keeps advancing its copies of the permanent and member slots.
pub fn with_pinged_slots(cluster: &Cluster, ping: &Ping) -> Cluster {
    let mut c = cluster.clone();
    if c.leader.as_ref().is_none_or(|l| l.name != ping.leader) {
        c.leader = Some(crate::model::Leader { name: ping.leader.clone(), lease: 0, mod_revision: 0 });
    }
    c.status.slots = ping.slots.clone();
    c
}

/// The promise a replica made by accepting a ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingHold;

impl PingHold {
    /// Whether `ping` still binds this member at `now`: it accepted it less than `ttl` ago.
    pub fn binds(ping: &Ping, now: Millis, ttl_secs: u64) -> bool {
        now < ping.received_at.plus_secs(ttl_secs)
    }
}

/// What this member answers to `POST /failsafe` (Patroni's `do_POST_failsafe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingAnswer {
    /// 200 `Accepted`: record the ping and do not race while it is fresh.
    Accept,
    /// 500 `Running as a leader`: this member is a primary itself.
    RunningAsLeader,
    /// 502: failsafe mode is off.
    Disabled,
}

impl PingAnswer {
    /// Decides the answer from the mode in force and whether PostgreSQL runs as a primary here.
    pub fn decide(failsafe_mode: bool, running_primary: bool) -> PingAnswer {
        match (failsafe_mode, running_primary) {
            (false, _) => PingAnswer::Disabled,
            (true, true) => PingAnswer::RunningAsLeader,
            (true, false) => PingAnswer::Accept,
        }
    }
}

/// Why `me` may not race for the lock because of failsafe mode, if it may not: a fresh ping from
/// a primary binds it, or the stored topology (non-empty) does not list it.
pub fn race_veto(
    config: &DynamicConfig,
    cluster: &Cluster,
    me: &str,
    ping: Option<&Ping>,
    now: Millis,
) -> Option<String> {
    if !config.failsafe_mode() {
        return None;
    }
    if let Some(p) = ping.filter(|p| p.leader != me && PingHold::binds(p, now, config.ttl)) {
        return Some(format!(
            "{} proved it is alive through failsafe {} ms ago; it stays primary until that expires",
            p.leader,
            p.received_at.until(now)
        ));
    }
    match &cluster.failsafe {
        Some(t) if !t.is_empty() && !t.contains_key(me) => Some(format!(
            "{me} is not listed in the failsafe topology ({})",
            t.keys().cloned().collect::<Vec<_>>().join(",")
        )),
        _ => None,
    }
}

/// `failsafe_mode` as written in the `config` key: absent or null means off; booleans and
/// Patroni's boolean words are read; anything else is refused.
pub(crate) fn opt_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => crate::sync_mode::lenient_bool(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("failsafe_mode must be true or false, not {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Member, MemberData};

    fn member(name: &str, url: &str) -> Member {
        Member { name: name.into(), data: MemberData { api_url: url.into(), ..Default::default() }, lease: 1 }
    }

    fn topo(names: &[&str]) -> Topology {
        names.iter().map(|n| (n.to_string(), format!("http://{n}/patroni"))).collect()
    }

    fn round(sent: u64, finished: u64, replies: &[(&str, bool)]) -> Round {
        Round {
            sent_at: Millis(sent),
            finished_at: Millis(finished),
            replies: replies.iter().map(|(n, a)| Reply { name: n.to_string(), accepted: *a, lsn: None }).collect(),
        }
    }

    #[test]
    fn during_an_outage_slots_follow_what_the_leader_and_the_members_sent() {
        let mut cascading = member("c", "http://c/patroni");
        cascading.data.tags.replicatefrom = Some("r".into());
        cascading.data.xlog_location = Some(10);
        let mut direct = member("r", "http://r/patroni");
        direct.data.xlog_location = Some(10);
        let c = Cluster { members: vec![cascading, direct], ..Default::default() };
        let mut r = round(0, 1, &[("c", true), ("r", true)]);
        r.replies.iter_mut().for_each(|x| x.lsn = Some(500));
        let seen = with_reported_positions(&c, &r);
        let at = |c: &Cluster, n: &str| c.member(n).and_then(|m| m.data.xlog_location);
        assert_eq!((at(&seen, "c"), at(&seen, "r")), (Some(500), Some(10)), "only the cascading member moves");

        let ping = Ping { leader: "p".into(), received_at: Millis(0), slots: [("perm".to_string(), 700)].into() };
        let seen = with_pinged_slots(&c, &ping);
        assert_eq!(seen.status.slots, ping.slots);
        assert_eq!(seen.leader.map(|l| l.name), Some("p".to_string()));
    }

    #[test]
    fn the_key_is_read_as_a_map_of_urls_or_discarded() {
        assert_eq!(parse_topology(r#"{"a":"http://a/patroni"}"#), Some(topo(&["a"])));
        assert_eq!(parse_topology("{}"), Some(Topology::new()));
        for bad in [r#"{"a":1}"#, "[]", "x", r#""a""#] {
            assert_eq!(parse_topology(bad), None, "{bad}");
        }
    }

    #[test]
    fn targets_cover_the_stored_key_and_the_current_members() {
        let c = Cluster {
            members: vec![member("a", "http://a/patroni"), member("c", "http://c/patroni"), member("x", "")],
            failsafe: Some(topo(&["a", "b"])),
            ..Default::default()
        };
        assert_eq!(topology_of(&c), topo(&["a", "c"]), "members without an API URL are left out");
        assert_eq!(targets_of(&c), topo(&["a", "b", "c"]));
    }

    #[test]
    fn a_round_counts_only_when_everyone_accepted_in_time() {
        let t = topo(&["me", "r1", "r2"]);
        let deadline = Millis(10_000);
        // (round, expected proof)
        let table: Vec<(Round, Result<Millis, &str>)> = vec![
            (round(1_000, 1_200, &[("r1", true), ("r2", true)]), Ok(Millis(11_000))),
            (round(1_000, 1_200, &[("r1", true), ("r2", false)]), Err("no \"Accepted\" from r2")),
            (round(1_000, 1_200, &[("r1", true)]), Err("no \"Accepted\" from r2")),
            (round(1_000, 3_000, &[]), Err("no \"Accepted\" from r1, r2")),
            (round(9_000, 10_000, &[("r1", true), ("r2", true)]), Err("the round ended after the fence deadline")),
            (round(1_000, 1_200, &[("r1", true), ("r2", true), ("stranger", false)]), Ok(Millis(11_000))),
        ];
        for (i, (r, want)) in table.into_iter().enumerate() {
            let got = r.proof_until("me", &t, deadline, 10);
            assert_eq!(got.map_err(|e| e.to_string()), want.map_err(str::to_string), "row {i}");
        }
        let alone = topo(&["me"]);
        assert_eq!(round(0, 1, &[]).proof_until("me", &alone, deadline, 10), Ok(Millis(10_000)), "single node");
        let not_me = topo(&["r1"]);
        assert!(round(0, 1, &[("r1", true)]).proof_until("me", &not_me, deadline, 10).is_err());
    }

    #[test]
    fn answers_to_a_ping() {
        assert_eq!(PingAnswer::decide(false, false), PingAnswer::Disabled);
        assert_eq!(PingAnswer::decide(false, true), PingAnswer::Disabled);
        assert_eq!(PingAnswer::decide(true, true), PingAnswer::RunningAsLeader);
        assert_eq!(PingAnswer::decide(true, false), PingAnswer::Accept);
    }

    #[test]
    fn who_may_race() {
        let on = DynamicConfig { ttl: 10, failsafe_mode: Some(true), ..Default::default() };
        let off = DynamicConfig { ttl: 10, ..Default::default() };
        let c = Cluster { failsafe: Some(topo(&["n1", "n2"])), ..Default::default() };
        let ping = Ping { leader: "n1".into(), received_at: Millis(1_000), slots: Default::default() };
        // (config, me, ping, now, vetoed)
        let table = [
            (&off, "n3", Some(&ping), 2_000, false),
            (&on, "n2", None, 2_000, false),
            (&on, "n3", None, 2_000, true),
            (&on, "n2", Some(&ping), 2_000, true),
            (&on, "n2", Some(&ping), 10_999, true),
            (&on, "n2", Some(&ping), 11_000, false),
        ];
        for (i, (cfg, me, p, now, vetoed)) in table.into_iter().enumerate() {
            assert_eq!(race_veto(cfg, &c, me, p, Millis(now)).is_some(), vetoed, "row {i}");
        }
        let empty = Cluster { failsafe: Some(Topology::new()), ..Default::default() };
        assert_eq!(race_veto(&on, &empty, "n3", None, Millis(0)), None, "an empty key vetoes nobody");
        assert_eq!(race_veto(&on, &Cluster::default(), "n3", None, Millis(0)), None, "nor does a missing one");
    }
}
