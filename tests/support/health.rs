//! What "the cluster is healthy" means to a test, asked through the agents' own REST APIs.

use std::time::Duration;

use serde_json::Value;

use super::cluster::Cluster;

/// `GET /patroni` of node `i`.
pub fn status(c: &Cluster, i: usize) -> Option<Value> {
    c.get_json(i, "/patroni")
}

/// Whether node `i` reports itself a replica streaming on `timeline` (any timeline if `None`).
pub fn is_streaming_replica(c: &Cluster, i: usize, timeline: Option<u64>) -> bool {
    status(c, i).is_some_and(|s| {
        s["role"] == "replica"
            && s["state"] == "running"
            && s["replication_state"] == "streaming"
            && timeline.is_none_or(|t| s["timeline"].as_u64() == Some(t))
    })
}

/// Waits until one node holds the leader key and answers `/primary` with 200 while every other
/// live node is a streaming replica; returns the leader's index.
pub fn wait_healthy(c: &Cluster, timeout: Duration) -> Option<usize> {
    let mut leader = None;
    super::wait_until(timeout, Duration::from_millis(200), || {
        leader = c.leader_index();
        let Some(l) = leader else { return false };
        c.http_status(l, "GET", "/primary") == 200
            && (0..c.len()).filter(|&i| i != l).all(|i| is_streaming_replica(c, i, None))
    });
    leader.filter(|&l| c.http_status(l, "GET", "/primary") == 200)
}

/// Timeline node `i` reports.
pub fn timeline(c: &Cluster, i: usize) -> Option<u64> {
    status(c, i)?["timeline"].as_u64()
}
