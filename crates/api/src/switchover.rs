//! `POST /switchover`, `POST /failover` and `DELETE /switchover`: Patroni's manual failover
//! requests, checked here and then handed to the cluster as the DCS `failover` key.
//!
//! The API decides nothing about HA: it validates the request against a fresh read of the cluster
//! and a live look at the candidates, writes the `failover` key (as `patronictl` would), and then
//! only watches the DCS until the leader changes, the key disappears, or time runs out.
//!
//! Invariants kept here:
//! * nothing is written unless every check passed; a scheduled switchover skips the live checks
//!   (the members decide at its time, as in Patroni);
//! * a candidate counts only if it answered its `/patroni` within the probe timeout, runs, may fail
//!   over (tags, watchdog) and, while a leader exists, is a replica; with nobody holding the lock a
//!   failover may promote a lagging member, so only "answers, runs, may fail over" is asked;
//! * status codes and messages are Patroni's (`do_POST_failover`, `is_failover_possible`,
//!   `poll_failover_result`), because patronictl prints them;
//! * in `synchronous_mode: on`, a failover to a member the `sync` key does not list may lose
//!   acknowledged commits: it is refused (412) unless the body says `"force": true`, which is
//!   passed on in the `failover` key so the agents honour it too. Patroni accepts such failovers
//!   silently; Rampart makes the operator say so.

use std::sync::Arc;

use rampart_core::admission::{self, Kind};
use rampart_core::eligibility::{Limitation, Report};
use rampart_core::manual::{outcome, Outcome};
use rampart_core::model::Failover;
use rampart_core::Cluster;
use serde_json::{Map, Value};
use tokio::task::JoinSet;

use crate::backend::Backend;
use crate::context::ApiContext;
use crate::reply::Reply;
use crate::request_values::{iso8601, parse_schedule};
use crate::snapshot::sync_mode;

/// A member name from the body: a non-empty string, or absent (`null` and `""` count as absent,
/// as in Patroni).
fn name_field(body: &Map<String, Value>, key: &str) -> Result<Option<String>, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Reply::text(400, format!("{key} must be a string, not {other}"))),
    }
}

/// Handles `POST /switchover` and `POST /failover` with a JSON object body.
pub async fn post(ctx: &ApiContext, backend: &Arc<dyn Backend>, body: &Map<String, Value>, called: Kind) -> Reply {
    match run(ctx, backend, body, called).await {
        Ok(reply) | Err(reply) => reply,
    }
}

async fn run(
    ctx: &ApiContext,
    backend: &Arc<dyn Backend>,
    body: &Map<String, Value>,
    called: Kind,
) -> Result<Reply, Reply> {
    let leader = name_field(body, "leader")?;
    let candidate = match name_field(body, "candidate")? {
        Some(c) => Some(c),
        None => name_field(body, "member")?,
    };
    let scheduled_at = name_field(body, "scheduled_at")?;
    let force = match body.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(Reply::text(400, format!("force must be true or false, not {other}"))),
    };
    tracing::info!(
        "received {} request with leader={leader:?} candidate={candidate:?} scheduled_at={scheduled_at:?}",
        called.name()
    );
    let cluster = backend
        .read_cluster()
        .await
        .map_err(|e| Reply::text(503, format!("cannot read the cluster from the DCS: {e}")))?;
    let paused = cluster.config.as_ref().is_some_and(|c| c.paused());
    let asked = admission::Request {
        kind: called,
        leader: leader.as_deref(),
        candidate: candidate.as_deref(),
        scheduled: scheduled_at.is_some(),
        force,
    };
    admission::check_shape(&asked, paused).map_err(|r| Reply::text(400, r.to_string()))?;
    let mut scheduled = None;
    if let Some(text) = &scheduled_at {
        let at = parse_schedule(text, called.name(), jiff::Timestamp::now())
            .map_err(|e| Reply::text(e.status, e.message))?;
        scheduled = Some(at);
    }
    // Patroni: a failover request naming the leader is a switchover.
    let action = if leader.is_some() { Kind::Switchover } else { called };
    if scheduled.is_none() {
        failover_possible(ctx, &cluster, &asked, action).await.map_err(|m| Reply::text(412, m))?;
    }

    let force = force && action == Kind::Failover;
    let request = Failover { leader, member: candidate.clone(), scheduled_at: scheduled.map(iso8601), force };
    if let Err(e) = backend.set_failover(request).await {
        tracing::warn!("{}: writing the failover key failed: {e}", action.name());
        return Err(Reply::text(503, "failed to write failover key into DCS"));
    }
    if scheduled.is_some() {
        return Ok(Reply::text(202, format!("{} scheduled", action.title())));
    }
    let old_leader = cluster.leader.as_ref().map(|l| l.name.clone());
    // The leader may first wait for the proxies to drain (rampart_core::drain).
    let drain_secs = rampart_core::drain::longest_wait_ms(&cluster.proxies).div_ceil(1000);
    let loop_wait = match &cluster.config {
        Some(c) => c.loop_wait,
        None => ctx.current().0.loop_wait.as_secs(),
    };
    Ok(wait_for_new_leader(ctx, backend, old_leader, candidate, action, loop_wait, drain_secs).await)
}

/// Why `status` (a member's `/patroni` answer) cannot take over, or `Ok` if it can (rule:
/// [`rampart_core::eligibility`]). `need_replica`: there is a leader to take over from.
pub fn candidate_fitness(status: &Value, need_replica: bool) -> Result<(), Limitation> {
    match Report::read(status) {
        None => Err(Limitation::NotRunning),
        Some(r) => r.failover_limitation(need_replica).map_or(Ok(()), Err),
    }
}

/// Patroni's `is_failover_possible`: the message of the first reason it is not, as a 412 body.
/// The cluster's part is the core's rule ([`admission::check_cluster`]); then the candidates are
/// asked about themselves.
async fn failover_possible(
    ctx: &ApiContext,
    cluster: &Cluster,
    asked: &admission::Request<'_>,
    action: Kind,
) -> Result<(), String> {
    let members = admission::check_cluster(cluster, sync_mode(cluster), asked).map_err(|r| r.to_string())?;
    let need_replica = cluster.leader.is_some();
    let mut probes = JoinSet::new();
    for m in members {
        let (probe, url, name, timeout) =
            (ctx.probe.clone(), m.data.api_url.clone(), m.name.clone(), ctx.timing.probe_timeout);
        probes.spawn(async move {
            let verdict = match probe.fetch(&url, timeout).await {
                Ok(status) => candidate_fitness(&status, need_replica).map_err(|l| l.to_string()),
                Err(e) => Err(format!("not reachable: {e}")),
            };
            (name, verdict)
        });
    }
    // One good candidate is enough; dropping the set cancels the probes still running.
    while let Some(joined) = probes.join_next().await {
        let Ok((name, verdict)) = joined else { continue };
        match verdict {
            Ok(()) => return Ok(()),
            Err(why) => tracing::info!("{}: member {name} cannot take over: {why}", action.name()),
        }
    }
    Err(format!("{} is not possible: no good candidates have been found", action.name()))
}

/// Patroni's `poll_failover_result`: waits `2 * max(10, loop_wait)` wait units (seconds), plus
/// `drain_secs` the leader may spend waiting for proxies (none without proxies), reading the
/// cluster once per poll interval. Unlike Patroni it names a new leader only once
/// that member runs as primary (rule: [`rampart_core::manual::outcome`]): a candidate that took
/// the lock but failed to promote is not reported as the leader.
async fn wait_for_new_leader(
    ctx: &ApiContext,
    backend: &Arc<dyn Backend>,
    old_leader: Option<String>,
    candidate: Option<String>,
    action: Kind,
    loop_wait: u64,
    drain_secs: u64,
) -> Reply {
    let polls = 2 * loop_wait.max(10) + drain_secs;
    // As many reads as poll intervals fit in the wait (at least one per wait unit).
    let wait = ctx.timing.wait_unit * polls as u32;
    let reads = (wait.as_micros() / ctx.timing.poll_interval.as_micros().max(1)).max(u128::from(polls));
    for _ in 0..reads {
        tokio::time::sleep(ctx.timing.poll_interval).await;
        // A failed read is not an answer: the DCS may be busy with the very change we wait for.
        let Ok(cluster) = backend.read_cluster().await else { continue };
        match outcome(&cluster, old_leader.as_deref()) {
            Outcome::Led(now) => {
                return match candidate.as_deref() {
                    Some(wanted) if wanted != now => {
                        let past = action.past();
                        let title = format!("{}{}", past[..1].to_ascii_uppercase(), &past[1..]);
                        Reply::text(200, format!("{title} to \"{now}\" instead of \"{wanted}\""))
                    }
                    _ => Reply::text(200, format!("Successfully {} to \"{now}\"", action.past())),
                }
            }
            Outcome::Refused => return Reply::text(503, format!("{} failed", action.title())),
            Outcome::Pending => {}
        }
    }
    Reply::text(
        503,
        format!("{} status unknown after {polls} seconds; operation may still be in progress", action.title()),
    )
}

/// Handles `DELETE /switchover`: clears a scheduled switchover.
pub async fn delete(backend: &Arc<dyn Backend>) -> Reply {
    let cluster = match backend.read_cluster().await {
        Ok(c) => c,
        Err(e) => return Reply::text(503, format!("cannot read the cluster from the DCS: {e}")),
    };
    match cluster.failover {
        Some(f) if f.scheduled_at.is_some() => match backend.clear_failover().await {
            Ok(()) => Reply::text(200, "scheduled switchover deleted"),
            Err(e) => {
                tracing::warn!("clearing the failover key failed: {e}");
                Reply::text(409, "failed to clear the failover key")
            }
        },
        _ => Reply::text(404, "no switchover is scheduled"),
    }
}
