//! Operators' local requests on their way through the HA loop: restart, reinitialize, reload,
//! and restarts scheduled for later.
//!
//! A restart or reinitialize request waits here until the next cycle hands it to the core, which
//! decides whether it may run now ([`rampart_core::Answer`]). A restart is answered when its job
//! ends; a reinitialize as soon as it starts (it may take long), as Patroni does. Reload (see
//! `reload.rs`) and scheduling are not HA decisions and are handled at once. Invariant: every request gets exactly
//! one answer, also when the agent shuts down.

use rampart_api::{LocalReply, LocalRequest, ScheduledRestart};
use rampart_core::observe::JobKind;
use rampart_core::{restart, Answer, Request, Role};
use rampart_pg::Probe;
use tokio::sync::oneshot;
use tracing::info;

use super::super::backend::Queued;
use super::{callbacks, Agent};
use crate::agent::jobs::JobResult;
use crate::agent::ports::{Ports, WallClock};

/// Requests waiting for the loop, and the scheduled restart.
#[derive(Default)]
pub(in crate::agent) struct LocalState {
    /// A request for the core, with where to answer.
    pending: Option<(Request, oneshot::Sender<LocalReply>)>,
    /// A started restart whose end must be reported.
    job_reply: Option<(JobKind, oneshot::Sender<LocalReply>)>,
    /// A restart to run at its time.
    pub(in crate::agent) scheduled: Option<ScheduledRestart>,
}

impl LocalState {
    /// The request the next cycle should hand to the core.
    pub(in crate::agent) fn pending_request(&self) -> Option<Request> {
        self.pending.as_ref().map(|(r, _)| r.clone())
    }

    /// Answers everything still waiting with 503 and `why`.
    pub(in crate::agent) fn refuse_all(&mut self, why: &str) {
        let reply = || LocalReply { status: 503, message: why.to_string() };
        if let Some((_, tx)) = self.pending.take() {
            let _ = tx.send(reply());
        }
        if let Some((_, tx)) = self.job_reply.take() {
            let _ = tx.send(reply());
        }
    }
}

fn reply(tx: oneshot::Sender<LocalReply>, status: u16, message: impl Into<String>) {
    let _ = tx.send(LocalReply { status, message: message.into() });
}

impl<P: Ports> Agent<P> {
    /// A request arrived from the REST API.
    pub(in crate::agent) async fn on_local_request(&mut self, (request, tx): Queued) {
        match request {
            LocalRequest::Reload => {
                let answer = self.reload("POST /reload").await;
                let _ = tx.send(answer);
                self.wake.notify_one();
            }
            LocalRequest::ScheduleRestart(s) => {
                if self.local.scheduled.is_some() {
                    reply(tx, 409, "Failed to schedule restart: another restart is already scheduled");
                } else {
                    info!(at = %s.schedule, "restart scheduled");
                    self.local.scheduled = Some(s);
                    reply(tx, 202, "Restart scheduled");
                }
            }
            LocalRequest::CancelScheduledRestart => match self.local.scheduled.take() {
                Some(_) => reply(tx, 200, "scheduled restart deleted"),
                None => reply(tx, 404, "no restarts are scheduled"),
            },
            LocalRequest::Restart(_) | LocalRequest::Reinitialize { .. } if self.local.pending.is_some() => {
                reply(tx, 503, "another request is being processed; try again");
            }
            LocalRequest::Restart(_) => {
                self.local.pending = Some((Request::Restart, tx));
                self.wake.notify_one();
            }
            LocalRequest::Reinitialize { force, from_leader } => {
                self.local.pending = Some((Request::Reinitialize { force, from_leader }, tx));
                self.wake.notify_one();
            }
        }
    }

    /// The core's answer to the pending request, after the plan ran.
    pub(in crate::agent) fn answer(&mut self, answer: &Answer) {
        let Some((request, tx)) = self.local.pending.take() else { return };
        match (answer, &request, self.job.as_ref().map(|j| j.kind())) {
            (Answer::Refused(why), ..) => {
                info!(?request, %why, "request refused");
                reply(tx, 503, why.clone());
            }
            (Answer::Started, Request::Restart, Some(JobKind::Restart)) => {
                self.local.job_reply = Some((JobKind::Restart, tx))
            }
            (Answer::Started, Request::Reinitialize { .. }, Some(JobKind::Reinitialize)) => {
                reply(tx, 200, "reinitialize started")
            }
            (Answer::Started, ..) => reply(tx, 503, "the request could not be started; see the agent's log"),
        }
    }

    /// A job ended: answer whoever waits for it and run the matching callback.
    pub(in crate::agent) fn job_finished(&mut self, kind: JobKind, result: &JobResult) {
        if let Some((k, tx)) = self.local.job_reply.take() {
            if k == kind {
                match result {
                    Ok(()) => reply(tx, 200, "restarted successfully"),
                    Err(e) => reply(tx, 503, format!("restart failed: {e}")),
                }
            } else {
                self.local.job_reply = Some((k, tx));
            }
        }
        if result.is_ok() {
            let role = self.core.callback_role();
            let role = role.as_str();
            let cb = &self.cfg.postgresql.callbacks;
            match kind {
                JobKind::Start => callbacks::fire(cb, "on_start", role, &self.cfg.scope),
                JobKind::Restart => callbacks::fire(cb, "on_restart", role, &self.cfg.scope),
                _ => {}
            }
        }
    }

    /// Turns a due scheduled restart into a pending request (if its filters still hold).
    pub(in crate::agent) fn due_scheduled_restart(&mut self, probe: Option<&Probe>) {
        let now = self.clock.unix_ms();
        let due = self.local.scheduled.as_ref().is_some_and(|s| restart::is_due(s.at_unix_ms, now));
        if !due || self.local.pending.is_some() {
            return;
        }
        let s = self.local.scheduled.take().expect("checked above");
        let filter = restart::RestartFilter {
            role: s.request.role.as_deref(),
            restart_pending: s.request.restart_pending,
            postgres_version: s.request.postgres_version,
        };
        let server = probe.map(|p| restart::ServerFacts {
            role: if p.in_recovery { Role::Replica } else { Role::Primary },
            server_version: p.server_version_num as u32,
        });
        if restart::restart_matches(&filter, server.as_ref(), self.params.pending_restart()) {
            info!(at = %s.schedule, "running the scheduled restart");
            // Nobody waits for the answer of a scheduled restart.
            let (tx, _rx) = oneshot::channel();
            self.local.pending = Some((Request::Restart, tx));
        } else {
            info!(at = %s.schedule, "scheduled restart skipped: its conditions no longer hold");
        }
    }
}
