//! `POST /failsafe`: a primary cut off from the DCS asks this member whether it may keep running
//! (Patroni's `do_POST_failsafe`, `failsafe_mode`).
//!
//! The answer is the core's ([`PingAnswer::decide`]) on the snapshot: 200 `Accepted` with this
//! member's WAL position in the `lsn` header when failsafe mode is on and PostgreSQL is not a
//! primary here; 500 `Running as a leader` on a primary; 502 when failsafe mode is off.
//!
//! Invariant kept here: "Accepted" is only sent after the ping was handed to the agent, whose
//! core then keeps this member out of leader races for `ttl`; an answer that promises without
//! the record would let the primary run on a promise nobody keeps.

use std::sync::Arc;

use rampart_core::failsafe::PingAnswer;
use serde_json::{Map, Value};

use crate::backend::{Backend, FailsafePing};
use crate::reply::Reply;
use crate::snapshot::NodeSnapshot;

/// Reads the primary's body: `name` is required, the URLs are kept when present, and so are the
/// `slots` given as whole numbers (Patroni sends absolute LSNs).
pub fn ping_of(body: &Map<String, Value>) -> Option<FailsafePing> {
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let name = text("name").filter(|n| !n.is_empty())?;
    let slots = body
        .get("slots")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_u64().map(|l| (k.clone(), l))).collect())
        .unwrap_or_default();
    Some(FailsafePing {
        name,
        conn_url: text("conn_url").unwrap_or_default(),
        api_url: text("api_url").unwrap_or_default(),
        slots,
    })
}

/// Answers one `POST /failsafe` (access already checked, body read as a JSON object).
pub async fn post(snap: &NodeSnapshot, backend: &Arc<dyn Backend>, body: &Map<String, Value>) -> Reply {
    let running_primary = snap.is_running() && !snap.in_recovery;
    match PingAnswer::decide(snap.failsafe_mode, running_primary) {
        PingAnswer::Disabled => Reply::text(502, "failsafe_mode is not enabled"),
        PingAnswer::RunningAsLeader => Reply::text(500, "Running as a leader"),
        PingAnswer::Accept => {
            let Some(ping) = ping_of(body) else {
                return Reply::text(400, "the body must name the primary (\"name\")");
            };
            backend.failsafe_ping(ping).await;
            // Patroni's primary reads our received/replayed position from the `lsn` header.
            match snap.xlog_received.max(snap.xlog_replayed) {
                0 => Reply::text(200, "Accepted"),
                lsn => Reply::text(200, "Accepted").with_lsn(lsn),
            }
        }
    }
}
