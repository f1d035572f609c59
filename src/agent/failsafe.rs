//! The agent's part of `failsafe_mode` (the policy is in [`rampart_core::failsafe`]).
//!
//! * Leader, DCS unreachable: [`run_round`] POSTs `/failsafe` to every member the core names, in
//!   parallel, each bounded by [`PING_TIMEOUT`] and by the fence deadline, and reports who
//!   answered `200 Accepted` (and the position each gave in its `lsn` header). The body is
//!   Patroni's: `name`, `conn_url`, `api_url`, `slots`.
//! * Replica: the REST API hands every accepted ping to the [`Inbox`]; the loop turns the last one
//!   into the core's [`Ping`] each cycle.
//!
//! Invariant: the round's `sent_at` is taken before the first request leaves, so a proof derived
//! from it never starts later than any member's receipt; the REST credentials ride in the
//! `Authorization` header only and are never logged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_api::{FailsafePing, MemberProbe};
use rampart_core::failsafe::{Ping, Reply, Round, Topology};
use rampart_core::Millis;
use serde_json::Value;
use tracing::{debug, warn};

/// How long the leader waits for each member (Patroni: 2 s).
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The last ping this member accepted, shared by the REST API (writer) and the loop (reader).
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<Option<(std::time::Instant, FailsafePing)>>>);

impl Inbox {
    /// Records a ping accepted now.
    pub fn record(&self, ping: FailsafePing) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), ping));
    }

    /// The last ping, with its arrival converted by `at` to the loop's clock.
    pub fn last(&self, at: impl Fn(std::time::Instant) -> Millis) -> Option<Ping> {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|(t, p)| Ping { leader: p.name.clone(), received_at: at(*t), slots: p.slots.clone() })
    }
}

/// What the leader tells the members about itself.
pub struct Announce {
    /// The body of the POST.
    pub body: Value,
    /// `Authorization` header for members that require REST credentials.
    pub authorization: Option<String>,
}

/// One round: POSTs to every target but `me`, in parallel; `now` reads the loop's clock.
pub async fn run_round(
    probe: &Arc<dyn MemberProbe>,
    me: &str,
    targets: &Topology,
    announce: &Announce,
    limit: Duration,
    now: impl Fn() -> Millis,
) -> Round {
    let sent_at = now();
    let timeout = PING_TIMEOUT.min(limit);
    let mut set = tokio::task::JoinSet::new();
    for (name, api_url) in targets.iter().filter(|(n, _)| n.as_str() != me) {
        let (probe, name, url) = (probe.clone(), name.clone(), failsafe_url(api_url));
        let body = announce.body.clone();
        let auth = announce.authorization.clone();
        set.spawn(async move {
            let (accepted, lsn) = match probe.post(&url, &body, auth.as_deref(), timeout).await {
                Ok(a) => {
                    debug!(member = %name, status = a.status, body = %a.body, "failsafe answer");
                    // Patroni's members send their position as a decimal number.
                    let lsn = a.lsn.as_deref().and_then(|l| l.trim().parse::<u64>().ok());
                    (a.status == 200 && a.body.trim() == "Accepted", lsn)
                }
                Err(e) => {
                    warn!(member = %name, error = %e, "failsafe: POST /failsafe failed");
                    (false, None)
                }
            };
            Reply { name, accepted, lsn }
        });
    }
    let replies = set.join_all().await;
    Round { sent_at, finished_at: now(), replies }
}

/// `http://h:p/patroni` (a member's `api_url`) to `http://h:p/failsafe`, as Patroni's
/// `get_endpoint_url` does.
pub fn failsafe_url(api_url: &str) -> String {
    let base = match api_url.find("://") {
        Some(i) => match api_url[i + 3..].find('/') {
            Some(j) => &api_url[..i + 3 + j],
            None => api_url,
        },
        None => api_url,
    };
    format!("{base}/failsafe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        for (api, want) in [
            ("http://10.0.0.1:8008/patroni", "http://10.0.0.1:8008/failsafe"),
            ("https://n1:8443/patroni", "https://n1:8443/failsafe"),
            ("http://n1:8008", "http://n1:8008/failsafe"),
        ] {
            assert_eq!(failsafe_url(api), want);
        }
    }
}
