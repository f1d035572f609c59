//! A background job is running or has just ended: the leader keeps renewing meanwhile, and what
//! follows a job's end (typed by [`crate::observe::JobError`]) is decided here: retry, wipe,
//! give up the lock, or wait for an operator.

use super::*;

impl HaNode {
    /// A background job is running or has just finished.
    pub(super) fn on_job(&mut self, obs: &Observation<'_>) -> Option<Plan> {
        let now = obs.now;
        let holds = matches!(&obs.dcs, DcsView::Ok(c) if c.is_leader(&self.s.name));
        match &obs.job {
            None => None,
            Some(JobState::Running(kind)) => {
                if let (Some(req @ Request::Reinitialize { force: true, .. }), DcsView::Ok(c), false) =
                    (&obs.request, &obs.dcs, holds)
                {
                    // Patroni's `reinitialize(force=True)`: the job in progress (a clone or a
                    // rewind that hangs, a start that never ends) is cancelled first.
                    let mut plan = self.on_request(obs, c, req);
                    if plan.answer == Some(Answer::Started) {
                        plan.actions.insert(0, Action::CancelJob);
                        plan.message = format!("cancelling the {}; {}", kind.describe(), plan.message);
                    }
                    return Some(plan);
                }
                let plan = if holds {
                    self.plan(
                        now,
                        vec![Action::RenewLeader],
                        &format!("updated leader lock during {}", kind.describe()),
                    )
                } else {
                    self.plan(now, vec![], &format!("{} in progress", kind.describe()))
                };
                Some(match &obs.request {
                    Some(_) => with_answer(plan, Answer::Refused(format!("a {} is in progress", kind.describe()))),
                    None => plan,
                })
            }
            Some(JobState::Finished(kind, result)) => match (kind, result) {
                (JobKind::Bootstrap, Ok(())) => {
                    self.start.won_initialize = false;
                    let sysid = match &obs.local.data {
                        DataDir::Initialized(ctl) => ctl.sysid.clone(),
                        _ => String::new(),
                    };
                    Some(self.plan(
                        now,
                        vec![Action::RecordInitialize { sysid }, Action::AcquireLeader],
                        "bootstrap finished: recording the system identifier and taking the leader lock",
                    ))
                }
                (JobKind::Bootstrap, Err(e)) => {
                    self.start.won_initialize = false;
                    let mut actions = vec![];
                    if obs.local.process.is_alive() {
                        actions.push(Action::Stop(StopMode::Immediate));
                    }
                    // As Patroni (`Ha.cancel_initialization`): the agent then exits rather than
                    // bootstrapping again and again, each time destroying what the failed
                    // attempt left for the operator to look at.
                    actions.push(Action::CancelInitialize);
                    actions.push(Action::Fatal("Failed to bootstrap cluster".into()));
                    Some(self.plan(now, actions, &format!("bootstrap failed ({e}); cancelled initialization")))
                }
                (JobKind::Clone, Err(e)) => {
                    Some(self.plan(now, vec![Action::WipeDataDir], &format!("replica clone failed ({e}); will retry")))
                }
                (JobKind::Rewind, Err(e @ JobError::RewindSourceUnavailable { .. })) => {
                    Some(self.plan(now, vec![], &format!("pg_rewind not started ({e}); trying again")))
                }
                (JobKind::Rewind, Err(e @ JobError::RewindUntouched { .. }))
                    if !self.s.remove_data_directory_on_rewind_failure =>
                {
                    let wait = rewind_retry_secs(self.config.loop_wait, self.rewind.rewind_retries);
                    self.rewind.rewind_retries = self.rewind.rewind_retries.saturating_add(1);
                    self.rewind.retry_rewind_after = Some(now.plus_secs(wait));
                    Some(self.plan(now, vec![], &format!("{e}; trying again in {wait} s")))
                }
                (JobKind::Rewind, Err(e)) => {
                    self.rewind.rewind_failed = true;
                    if self.s.remove_data_directory_on_rewind_failure {
                        Some(self.plan(
                            now,
                            vec![Action::WipeDataDir],
                            &format!("pg_rewind failed ({e}); removing the data directory to re-clone"),
                        ))
                    } else {
                        Some(self.plan(
                            now,
                            vec![],
                            &format!(
                                "pg_rewind failed ({e}); not starting PostgreSQL. Set \
                                 remove_data_directory_on_rewind_failure or reinitialize this member"
                            ),
                        ))
                    }
                }
                (JobKind::Clone, Ok(())) => {
                    self.rewind.fresh_copy = true;
                    None
                }
                (JobKind::Rewind, Ok(())) => {
                    self.rewind.rewound();
                    None
                }
                (JobKind::Promote, Err(e)) if holds => {
                    // pre_promote said no (or the promotion failed): hand the lock to someone
                    // else and stay out of the race for a ttl, as Patroni does.
                    self.handover.no_race_until = Some(now.plus_secs(self.config.ttl));
                    Some(self.plan(
                        now,
                        vec![release_leader(obs)],
                        &format!(
                            "promotion refused ({e}); releasing the leader lock and staying out of the race for {} s",
                            self.config.ttl
                        ),
                    ))
                }
                (JobKind::Reinitialize, Ok(())) => {
                    self.rewind.fresh_copy = true;
                    self.rewind.rewind_failed = false;
                    None
                }
                (JobKind::Start | JobKind::Restart, Err(_)) if !holds => {
                    // Do not hammer a start that just failed: try again after a loop_wait.
                    self.start.retry_start_after = Some(now.plus_secs(self.config.loop_wait));
                    None
                }
                (JobKind::Start | JobKind::Restart, Err(_)) if holds => {
                    // The rule: a leader whose in-place restart fails hands over.
                    self.start.primary_start_failed = true;
                    None
                }
                _ => None,
            },
        }
    }
}
