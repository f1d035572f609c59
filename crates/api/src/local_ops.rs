//! `POST /restart`, `DELETE /restart`, `POST /reinitialize` and `POST /reload`: operations on this
//! node, validated here and performed by the agent's loop through [`Backend::local`].
//!
//! Invariants kept here:
//! * a body is validated completely before anything is asked of the agent (unknown restart filters
//!   and malformed values are a 400, as in Patroni);
//! * an immediate restart whose filters do not match the current snapshot is refused with 503
//!   `restart conditions are not satisfied` without bothering the agent; a scheduled restart keeps
//!   its filters, which the agent checks when its time comes (Patroni does the same);
//! * the agent's [`LocalReply`] is passed through as it is: it alone knows whether a restart is
//!   already scheduled (409) or whether this node may be reinitialized.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::backend::{Backend, LocalReply, LocalRequest, RestartRequest, ScheduledRestart};
use crate::reply::Reply;
use crate::request_values::{iso8601, parse_bool, parse_schedule, parse_seconds, postgres_version_num};
use crate::snapshot::NodeSnapshot;

fn passthrough(reply: LocalReply) -> Reply {
    Reply::text(reply.status, reply.message)
}

/// A validated `POST /restart` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartBody {
    /// Filters and timeout.
    pub request: RestartRequest,
    /// When to restart, if not now.
    pub schedule: Option<jiff::Timestamp>,
}

/// Validates a `POST /restart` body (Patroni's keys: `schedule`, `role`, `postgres_version`,
/// `timeout`, `restart_pending`). `paused`: the cluster is in maintenance mode, where Patroni
/// refuses to schedule restarts (with 500).
pub fn parse_restart(body: &Map<String, Value>, paused: bool, now: jiff::Timestamp) -> Result<RestartBody, Reply> {
    if paused && body.contains_key("schedule") {
        return Err(Reply::text(500, "Can't schedule restart in the paused state"));
    }
    let mut out = RestartBody { request: RestartRequest::default(), schedule: None };
    for (key, value) in body {
        match key.as_str() {
            "schedule" => {
                let text = value.as_str().ok_or_else(|| Reply::text(422, "schedule must be a string"))?;
                let at = parse_schedule(text, "restart", now).map_err(|e| Reply::text(e.status, e.message))?;
                out.schedule = Some(at);
            }
            "role" => {
                let role = match value.as_str() {
                    // `master` is the pre-3.0 spelling of `primary`.
                    Some("primary" | "master") => "primary",
                    Some(r @ ("standby_leader" | "replica")) => r,
                    _ => {
                        return Err(Reply::text(
                            400,
                            "PostgreSQL role should be either primary, standby_leader, or replica",
                        ))
                    }
                };
                out.request.role = Some(role.to_string());
            }
            "postgres_version" => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => other.to_string(),
                };
                out.request.postgres_version = Some(postgres_version_num(&text).map_err(|m| Reply::text(400, m))?);
            }
            "timeout" => match parse_seconds(value) {
                Some(secs) if secs > 0 => out.request.timeout_secs = Some(secs),
                _ => return Err(Reply::text(400, "Timeout should be a positive number of seconds")),
            },
            "restart_pending" => {
                out.request.restart_pending =
                    parse_bool(value).ok_or_else(|| Reply::text(400, "restart_pending should be a boolean"))?;
            }
            other => return Err(Reply::text(400, format!("Unknown filter for the scheduled restart: {other}"))),
        }
    }
    Ok(out)
}

/// Whether this node, as `snap` shows it, passes the restart filters (rule:
/// [`rampart_core::restart::restart_matches`], which the agent applies to a scheduled restart at
/// its time).
pub fn restart_matches(request: &RestartRequest, snap: &NodeSnapshot) -> bool {
    let filter = rampart_core::restart::RestartFilter {
        role: request.role.as_deref(),
        restart_pending: request.restart_pending,
        postgres_version: request.postgres_version,
    };
    let server = rampart_core::restart::ServerFacts { role: snap.role.clone(), server_version: snap.server_version };
    rampart_core::restart::restart_matches(&filter, Some(&server), snap.pending_restart)
}

/// Handles `POST /restart`.
pub async fn restart(backend: &Arc<dyn Backend>, snap: &NodeSnapshot, body: &Map<String, Value>) -> Reply {
    let parsed = match parse_restart(body, snap.paused, jiff::Timestamp::now()) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let request = match parsed.schedule {
        Some(at) => LocalRequest::ScheduleRestart(ScheduledRestart {
            at_unix_ms: at.as_millisecond(),
            schedule: iso8601(at),
            request: parsed.request,
        }),
        None if !restart_matches(&parsed.request, snap) => {
            return Reply::text(503, "restart conditions are not satisfied");
        }
        None => LocalRequest::Restart(parsed.request),
    };
    passthrough(backend.local(request).await)
}

/// Handles `DELETE /restart`.
pub async fn cancel_restart(backend: &Arc<dyn Backend>) -> Reply {
    passthrough(backend.local(LocalRequest::CancelScheduledRestart).await)
}

/// Handles `POST /reinitialize` (`force` and `from_leader`, both optional booleans).
pub async fn reinitialize(backend: &Arc<dyn Backend>, body: &Map<String, Value>) -> Reply {
    let flag = |k: &str| body.get(k).and_then(parse_bool).unwrap_or(false);
    passthrough(
        backend.local(LocalRequest::Reinitialize { force: flag("force"), from_leader: flag("from_leader") }).await,
    )
}

/// Handles `POST /reload`.
pub async fn reload(backend: &Arc<dyn Backend>) -> Reply {
    passthrough(backend.local(LocalRequest::Reload).await)
}
