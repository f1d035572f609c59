//! PostgreSQL is not running, or there is no data directory yet: bootstrap or clone, start in
//! place, rewind before following, and the stopped leader handing the lock over in a switchover.

use super::*;

impl HaNode {
    pub(super) fn empty_data_dir(&mut self, obs: &Observation<'_>, cluster: &Cluster) -> Plan {
        let now = obs.now;
        if self.holds_lock(cluster) {
            return self.plan(now, vec![release_leader(obs)], "data directory is empty: releasing the leader lock");
        }
        if cluster.is_leader(&self.s.name) {
            // The key bears our name but this process never renewed it: it is another agent's
            // (one started with our name), or a previous run's that expires by itself. Deleting
            // it would fail over a live primary; cloning would copy from "ourselves".
            return self.plan(
                now,
                vec![],
                "data directory is empty and the leader key names this member, but this agent does not hold the \
                 lock: leaving it alone (is another agent running with this name?)",
            );
        }
        if let (true, Some(sc)) = (self.start.won_initialize, self.standby()) {
            return self.plan(
                now,
                vec![Action::StartJob(Job::BootstrapStandby(sc.clone()))],
                &format!("won the initialize race: bootstrapping a standby cluster from {}", sc.describe()),
            );
        }
        if self.start.won_initialize {
            return self.plan(
                now,
                vec![Action::StartJob(Job::Bootstrap)],
                "won the initialize race: bootstrapping a new cluster",
            );
        }
        match (&cluster.initialize, &cluster.leader) {
            (_, Some(_)) => match self.clone_source(cluster) {
                Some(src) => {
                    let msg = format!("cloning a replica from {}", src.name);
                    self.plan(now, vec![Action::StartJob(Job::Clone(Some(src)))], &msg)
                }
                None => self.plan(now, vec![], "waiting for the leader to publish its address"),
            },
            (None, None) => self.plan(now, vec![Action::TryInitialize], "racing to initialize a new cluster"),
            // An empty initialize key is another member's bootstrap in progress (Patroni's
            // "concurrent bootstrap"): its data directory is not worth restoring next to yet.
            (Some(init), None) if self.s.clone_without_leader && !init.is_empty() => self.plan(
                now,
                vec![Action::StartJob(Job::Clone(None))],
                "no leader: trying to bootstrap (without leader) with a replica creation method that needs none",
            ),
            (Some(_), None) => self.plan(now, vec![], "waiting for the leader to bootstrap"),
        }
    }

    /// Where to clone from: a running member tagged `clonefrom`, else the leader.
    pub(super) fn clone_source(&self, cluster: &Cluster) -> Option<Upstream> {
        let preferred = cluster
            .members
            .iter()
            .filter(|m| m.name != self.s.name && m.data.tags.clonefrom && m.data.state == PgState::Running)
            .find_map(|m| upstream_of(cluster, &m.name));
        preferred.or_else(|| cluster.leader.as_ref().and_then(|l| upstream_of(cluster, &l.name)))
    }

    pub(super) fn use_pg_rewind(&self) -> bool {
        self.s.use_pg_rewind.unwrap_or(self.config.postgresql.use_pg_rewind)
    }

    pub(super) fn not_running(&mut self, obs: &Observation<'_>, cluster: &Cluster, ctl: &ControlData) -> Plan {
        let now = obs.now;
        let me = self.s.name.clone();
        // A switchover we started goes on in maintenance mode too: the operator asked for it.
        if cluster.is_leader(&me) {
            if let (Some(started), Some(f)) = (self.handover.switchover_started, &cluster.failover) {
                return self.hand_over(obs, cluster, f, ctl, started);
            }
        }
        // After handing over, this node comes back as a replica even in maintenance mode: a
        // switchover is not meant to leave the old leader down. Nor is a copy the operator asked
        // for (reinitialize) or a fresh clone: Patroni's clone ends by starting it to follow.
        if self.config.paused() && !self.handover.rejoin_after_handover && !self.rewind.fresh_copy {
            // Patroni's rule: in maintenance mode a leader whose PostgreSQL is down gives the
            // lock up rather than claim a primary that does not run (nobody races while paused;
            // after `resume` the healthiest member takes over, or this one once started again).
            if self.holds_lock(cluster) {
                return self.plan(
                    now,
                    vec![release_leader(obs)],
                    "PAUSE: removed leader lock because postgres is not running",
                );
            }
            return self.plan(now, vec![], "PAUSE: PostgreSQL is not running; not starting it in maintenance mode");
        }
        if cluster.is_leader(&me) {
            self.handover.switchover_started = None;
            if self.config.primary_start_timeout() == 0 && self.start.restarting_primary_since.is_none() {
                // Patroni's rule: primary_start_timeout 0 prefers failing over to restarting the
                // primary, when someone can take over.
                if let Some(heir) = failover_heir(cluster, &me) {
                    return self.plan(
                        now,
                        vec![release_leader(obs)],
                        &format!(
                            "Primary crashed. Failing over. (primary_start_timeout is 0 and {heir} can take over)"
                        ),
                    );
                }
            }
            let since = *self.start.restarting_primary_since.get_or_insert(now);
            let timed_out = now.0.saturating_sub(since.0) > self.config.primary_start_timeout() * 1000;
            if self.start.primary_start_failed || timed_out {
                self.start.forget_restart();
                return self.plan(
                    now,
                    vec![release_leader(obs), Action::RoleChangeCallback("demoted".into())],
                    "removed leader key after trying and failing to start postgres",
                );
            }
            if let Some(sc) = self.standby() {
                // Never as a primary, whatever the data directory was: the standby leader
                // recovers from the other cluster.
                return self.plan(
                    now,
                    vec![Action::RenewLeader, Action::StartJob(Job::Start(StartRole::StandbyLeader(sc.clone())))],
                    &format!(
                        "PostgreSQL is not running on the standby leader: starting it to follow {}",
                        sc.describe()
                    ),
                );
            }
            if !ctl.state.was_primary() {
                // The lock was taken while this data directory was a replica's (the member died
                // between winning the race and its promotion). Started as a primary it would end
                // recovery on the old timeline, and a former primary that wrote past this point
                // would then look like it needs no rewind. Start it read-only; the next cycle
                // promotes it onto a new timeline, as Patroni does.
                return self.plan(
                    now,
                    vec![Action::RenewLeader, Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))],
                    "PostgreSQL is not running on the leader and its data directory is a replica's: starting it \
                     read-only to promote it",
                );
            }
            let mut actions = vec![Action::RenewLeader];
            actions.extend(self.names_to_start_primary(cluster));
            actions.push(Action::StartJob(Job::Start(StartRole::Primary)));
            return self.plan(now, actions, "PostgreSQL is not running on the leader: restarting it in place");
        }
        self.handover.switchover_started = None;
        self.start.forget_restart();
        if let Some(after) = self.start.retry_start_after {
            if now < after {
                let mut p = self.plan(now, vec![], "PostgreSQL failed to start; trying again shortly");
                p.next_cycle = p.next_cycle.min(after);
                return p;
            }
            self.start.retry_start_after = None;
        }
        let Some(leader) = &cluster.leader else {
            return self.plan(
                now,
                vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))],
                "no leader: starting PostgreSQL read-only to take part in the leader race",
            );
        };
        let Some(upstream) = self.desired_upstream(cluster, &leader.name) else {
            return self.plan(now, vec![], "waiting for the leader to publish its address");
        };
        // Only a former primary on an older timeline can have diverged. Rewinding a copy that is on
        // the leader's own timeline would run crash recovery on it and write WAL the leader never
        // had (that is how a fresh clone gets broken).
        let past_fork = stopped_past_fork(ctl, cluster);
        if (ctl.state.was_primary() || self.rewind.diverged || past_fork.is_some())
            && !self.rewind.fresh_copy
            && ctl.wal_timeline() < cluster.timeline()
        {
            if self.rewind.rewind_failed {
                return self.plan(
                    now,
                    vec![],
                    "former primary whose pg_rewind failed: waiting for manual action (reinitialize this member)",
                );
            }
            if self.use_pg_rewind() {
                if let Some(after) = self.rewind.retry_rewind_after.filter(|a| now < *a) {
                    let mut p =
                        self.plan(now, vec![], "pg_rewind failed before changing anything; trying again shortly");
                    p.next_cycle = p.next_cycle.min(after);
                    return p;
                }
                let leader_upstream = upstream_of(cluster, &leader.name).unwrap_or_else(|| upstream.clone());
                let what = match &past_fork {
                    Some(p) if !ctl.state.was_primary() => p.clone(),
                    _ => "former primary".to_string(),
                };
                let msg = format!("{what}: running pg_rewind against the new leader {}", leader_upstream.name);
                return self.plan(now, vec![Action::StartJob(Job::Rewind(leader_upstream))], &msg);
            }
        }
        // Stopped as diverged, but its control file shows it is on the leader's timeline after all
        // (or it is a fresh copy): nothing to rewind, and nothing to remember either.
        self.rewind.diverged = false;
        let msg = match self.s.tags.nostream {
            true => "starting PostgreSQL as a replica restoring WAL from the archive (nostream)".to_string(),
            false => format!("starting PostgreSQL as a replica of {}", upstream.name),
        };
        let upstream = self.streamed(upstream);
        self.plan(now, vec![Action::StartJob(Job::Start(StartRole::Replica { upstream }))], &msg)
    }

    /// The leader stopped PostgreSQL for a switchover: release the lock once a candidate has the
    /// shutdown checkpoint, or give up and start again as primary.
    pub(super) fn hand_over(
        &mut self,
        obs: &Observation<'_>,
        cluster: &Cluster,
        f: &crate::model::Failover,
        ctl: &ControlData,
        started: Millis,
    ) -> Plan {
        let now = obs.now;
        let peers = obs.peers.unwrap_or(&[]);
        let peers = if f.force { peers.to_vec() } else { self.sync_competitors(cluster, peers, None) };
        match manual::as_stopped_leader(f, &peers, ctl.checkpoint_lsn, now.0.saturating_sub(started.0)) {
            ReleaseStep::Release(to) => {
                self.handover.switchover_started = None;
                self.handover.rejoin_after_handover = true;
                self.plan(
                    now,
                    vec![release_leader(obs)],
                    &format!("switchover: {to} has received the shutdown checkpoint; releasing the leader lock"),
                )
            }
            ReleaseStep::Wait => {
                let mut p = self.plan(
                    now,
                    vec![Action::RenewLeader],
                    "switchover: waiting for the candidate to receive the shutdown checkpoint",
                );
                p.next_cycle = p.next_cycle.min(now.plus_ms(300));
                p
            }
            ReleaseStep::Abort => {
                self.handover.switchover_started = None;
                if let Some(sc) = self.standby() {
                    return self.plan(
                        now,
                        vec![
                            Action::ClearFailover,
                            Action::RenewLeader,
                            Action::StartJob(Job::Start(StartRole::StandbyLeader(sc))),
                        ],
                        "switchover aborted: no candidate received the shutdown checkpoint in time; starting again \
                         as the standby leader",
                    );
                }
                let mut actions = vec![Action::ClearFailover, Action::RenewLeader];
                actions.extend(self.names_to_start_primary(cluster));
                actions.push(Action::StartJob(Job::Start(StartRole::Primary)));
                self.plan(
                    now,
                    actions,
                    "switchover aborted: no candidate received the shutdown checkpoint in time; starting again as primary",
                )
            }
        }
    }
}
