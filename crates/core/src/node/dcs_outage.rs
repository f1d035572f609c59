//! The DCS cannot be read: a leader keeps its primary only while its lock (or, in failsafe mode,
//! a complete round of its members' promises) vouches for it, and fences itself before that
//! runs out; a replica keeps replicating and its slots, and takes no lock.

use super::*;

impl HaNode {
    /// Failsafe mode, DCS unreachable: moves the lock's horizon to the round's proof when every
    /// listed member accepted it in time. Returns the proof or why there is none.
    pub(super) fn weigh_failsafe_round(
        &mut self,
        obs: &Observation<'_>,
        round: &failsafe::Round,
    ) -> Result<Millis, String> {
        let (Some(targets), Some(deadline)) = (self.failsafe_targets(), self.fence_deadline()) else {
            return Err("this node does not lead in failsafe mode".into());
        };
        if !obs.local.process.is_primary() {
            return Err("PostgreSQL is not running as primary".into());
        }
        let until = round.proof_until(&self.s.name, targets, deadline, self.config.ttl)?;
        if self.lease.leader_until.is_none_or(|u| u < until) {
            self.lease.leader_until = Some(until);
        }
        self.failsafe.failsafe_active_until = Some(until);
        Ok(until)
    }

    pub(super) fn dcs_unavailable(
        &mut self,
        obs: &Observation<'_>,
        why: &str,
        failsafe_outcome: Option<Result<Millis, String>>,
    ) -> Plan {
        let now = obs.now;
        if let Some(Ok(_)) = failsafe_outcome {
            // Still the primary: its slots keep being kept, those of members cascading from
            // others moved to where they said they are.
            let view = self
                .failsafe
                .last_cluster
                .as_ref()
                .zip(obs.failsafe_round)
                .map(|(c, r)| failsafe::with_reported_positions(c, r));
            let actions = match view {
                Some(c) if self.config.postgresql.use_slots => {
                    vec![self.sync_slots(now, &c, true)]
                }
                _ => vec![],
            };
            // Patroni's wording. The next round is due a loop_wait later, well before the proof
            // runs out (ttl >= loop_wait + 2 * retry_timeout).
            return self.plan(
                now,
                actions,
                &format!(
                    "DCS unreachable ({why}); continue to run as a leader because failsafe mode is enabled and all \
                     members are accessible"
                ),
            );
        }
        let paused = self.config.paused();
        if let (Some(Err(e)), true) = (&failsafe_outcome, self.failsafe_targets().is_some()) {
            if obs.local.process.is_primary() && !paused {
                // Failsafe mode's contract (Patroni's): the primary outlives the DCS only while
                // every member of the topology accepts it; one that does not ends it at once.
                // It is started again read-only, to serve reads and to follow whoever leads once
                // the DCS is back.
                self.start.offline_demoted = true;
                return self.plan(
                    now,
                    vec![Action::Stop(StopMode::Fast)],
                    &format!("demoting self because DCS is not accessible and I was a leader ({why}; failsafe: {e})"),
                );
            }
        }
        let why = match &failsafe_outcome {
            Some(Err(e)) => format!("{why}; failsafe: {e}"),
            _ => why.to_string(),
        };
        let why = why.as_str();
        if obs.local.process.is_primary() && self.lease.leader_until.is_none() && !paused {
            // A primary whose lock we never confirmed (e.g. the agent just restarted): we cannot
            // know that nobody else was promoted, so it must not take writes.
            self.start.offline_demoted = true;
            return self.plan(
                now,
                vec![Action::Stop(StopMode::Immediate)],
                &format!("demoting: running as primary without a confirmed lock and the DCS is unreachable ({why})"),
            );
        }
        if self.start.offline_demoted && !obs.local.process.is_alive() && !paused && obs.job.is_none() {
            if let DataDir::Initialized(_) = &obs.local.data {
                // Patroni's offline demotion ends with the server following nobody, read-only.
                self.start.offline_demoted = false;
                return self.plan(
                    now,
                    vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))],
                    &format!("DCS unreachable ({why}); starting PostgreSQL read-only after demoting"),
                );
            }
        }
        match self.fence_deadline() {
            Some(d) if obs.local.process.is_alive() => {
                let mut p = self.plan(
                    now,
                    vec![],
                    &format!("DCS unreachable ({why}); still the leader for {} ms, retrying", now.until(d)),
                );
                // Retry the DCS often while the clock runs.
                p.next_cycle = p.next_cycle.min(now.plus_ms(1000));
                p
            }
            _ => {
                let actions = self.failsafe_replica_slots(obs).into_iter().collect();
                self.plan(now, actions, &format!("DCS unreachable ({why})"))
            }
        }
    }

    /// A replica during a DCS outage, bound by a fresh ping of the primary in failsafe mode:
    /// the slot sync of a normal cycle, on the last snapshot with the positions the primary
    /// sent, so that its permanent and member slots keep following the primary's (Patroni does
    /// the same; no logical slot is copied meanwhile).
    pub(super) fn failsafe_replica_slots(&mut self, obs: &Observation<'_>) -> Option<Action> {
        let PgProcess::Running(r) = &obs.local.process else { return None };
        let ping = obs.failsafe_ping.filter(|p| failsafe::PingHold::binds(p, obs.now, self.config.ttl))?;
        if !r.in_recovery || !self.config.failsafe_mode() || !self.config.postgresql.use_slots {
            return None;
        }
        let view = failsafe::with_pinged_slots(self.failsafe.last_cluster.as_ref()?, ping);
        Some(self.sync_replica_slots(obs.now, &view))
    }
}
