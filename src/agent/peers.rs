//! Asking the other members about themselves during a leader race (`GET <api_url>`, which is
//! their `/patroni` endpoint), in parallel with a short timeout, as Patroni does. The requests go
//! through the REST API's [`MemberProbe`], so they reach members serving HTTPS too.
//!
//! A member that does not answer in time is reported as silent and ignored by the election;
//! one that answers garbage is treated the same way. Reading the answer, and whether it makes the
//! member a candidate, is the core's rule ([`rampart_core::eligibility`]).

use std::sync::Arc;
use std::time::Duration;

use rampart_api::MemberProbe;

use rampart_core::eligibility::Report;
use rampart_core::observe::PeerReport;
use rampart_core::Member;

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
            let status = if url.is_empty() {
                None
            } else {
                probe.fetch(&url, PEER_TIMEOUT).await.ok().as_ref().and_then(Report::read).and_then(|r| r.peer_status())
            };
            (i, PeerReport { name, status })
        });
    }
    let mut out: Vec<(usize, PeerReport)> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}
