//! Asking the other members about themselves during a leader race (`GET <api_url>`, which is
//! their `/patroni` endpoint), in parallel with a short timeout, as Patroni does. The requests go
//! through the REST API's [`MemberProbe`], so they reach members serving HTTPS too.
//!
//! A member that does not answer in time is reported as silent and ignored by the election;
//! one that answers garbage is treated the same way. Parsing the answer is a pure function.

use std::sync::Arc;
use std::time::Duration;

use rampart_api::MemberProbe;

use rampart_core::observe::{PeerReport, PeerStatus};
use rampart_core::{Lsn, Member, Tags};
use serde_json::Value;

/// How long to wait for each member (Patroni uses 2 s and no retries).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// Fetches the status of every member in `members` at once (one task each, so the timeouts do
/// not add up), in member order.
pub async fn fetch(probe: &Arc<dyn MemberProbe>, members: &[Member]) -> Vec<PeerReport> {
    let mut set = tokio::task::JoinSet::new();
    for (i, m) in members.iter().enumerate() {
        let probe = probe.clone();
        let (name, url) = (m.name.clone(), m.data.api_url.clone());
        set.spawn(async move {
            let status =
                if url.is_empty() { None } else { probe.fetch(&url, PEER_TIMEOUT).await.ok().and_then(|v| parse(&v)) };
            (i, PeerReport { name, status })
        });
    }
    let mut out: Vec<(usize, PeerReport)> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Reads the race-relevant fields of a `/patroni` answer.
pub fn parse(v: &Value) -> Option<PeerStatus> {
    let role = v.get("role")?.as_str()?;
    let running = v.get("state").and_then(Value::as_str) == Some("running");
    let is_primary = running && matches!(role, "primary" | "master");
    let x = v.get("xlog");
    let field = |k: &str| x.and_then(|x| x.get(k)).and_then(Value::as_u64);
    let wal =
        [field("location"), field("received_location"), field("replayed_location")].into_iter().flatten().max()?;
    let tags: Tags = v.get("tags").cloned().and_then(|t| serde_json::from_value(t).ok()).unwrap_or_default();
    // A member backing off after a refused promotion is no candidate for now.
    let backing_off = v.get("failover_backoff").and_then(Value::as_bool).unwrap_or(false);
    // Nor is one whose required watchdog cannot be used (Patroni's `watchdog_failed`).
    let no_watchdog = v.get("watchdog_failed").and_then(Value::as_bool).unwrap_or(false);
    // Nor is one whose replay is stuck for insufficient settings: its promotion would not end.
    let replay_blocked = v.get("replay_blocked").and_then(Value::as_bool).unwrap_or(false);
    Some(PeerStatus {
        is_primary,
        wal: Lsn(wal),
        timeline: v.get("timeline").and_then(Value::as_u64).unwrap_or(0) as u32,
        can_fail_over: tags.can_fail_over() && !backing_off && !no_watchdog && !replay_blocked,
        priority: tags.priority(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_patroni_answers() {
        let replica = json!({"state":"running","role":"replica","timeline":2,
            "xlog":{"received_location":100,"replayed_location":90},"tags":{"nofailover":true}});
        let p = parse(&replica).unwrap();
        assert!(!p.is_primary);
        assert_eq!(p.wal, Lsn(100));
        assert!(!p.can_fail_over);
        let primary = json!({"state":"running","role":"primary","timeline":1,"xlog":{"location":500}});
        assert!(parse(&primary).unwrap().is_primary);
        let stopped = json!({"state":"stopped","role":"primary","xlog":{"location":1}});
        assert!(!parse(&stopped).unwrap().is_primary, "a stopped primary does not block the race");
        assert_eq!(parse(&json!({"state":"running"})), None);
        let vetoed = json!({"state":"running","role":"replica","xlog":{"received_location":9},"failover_backoff":true});
        assert!(!parse(&vetoed).unwrap().can_fail_over);
        let no_watchdog =
            json!({"state":"running","role":"replica","xlog":{"received_location":9},"watchdog_failed":true});
        assert!(!parse(&no_watchdog).unwrap().can_fail_over);
        let blocked = json!({"state":"running","role":"replica","xlog":{"received_location":9,"paused":true},
            "replay_blocked":true});
        assert!(!parse(&blocked).unwrap().can_fail_over, "a replica paused for insufficient settings");
    }
}
