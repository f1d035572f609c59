//! PostgreSQL runs: the three paths of Patroni's `_run_cycle` for a running server, chosen by
//! who holds the leader lock. The leader renews, manages synchronous replication, slots and
//! switchovers ([`HaNode::running_as_leader`]); a follower follows the leader and demotes a
//! primary that lost the lock ([`HaNode::running_as_follower`]); with no leader the healthiest
//! eligible member races ([`HaNode::running_without_leader`]).

use super::*;

/// What every path of a running server looks at.
#[derive(Clone, Copy)]
struct Seen<'a> {
    obs: &'a Observation<'a>,
    cluster: &'a Cluster,
    r: &'a RunningPg,
    /// Replay paused for insufficient settings (a replica only).
    blocked: Option<&'a hot_standby::Blocked>,
}

impl HaNode {
    /// A running PostgreSQL: the path for who holds the lock.
    pub(super) fn running(
        &mut self,
        obs: &Observation<'_>,
        cluster: &Cluster,
        ctl: &ControlData,
        r: &RunningPg,
    ) -> Plan {
        self.rewind.fresh_copy = false;
        self.start.forget_restart();
        self.handover.rejoin_after_handover = false;
        // Replay paused for insufficient settings never resumes by itself; until a restart the
        // replica can neither serve current data nor be promoted.
        let blocked = if r.in_recovery {
            hot_standby::replay_blocked(r.replay_pause, &r.hot_standby, &ctl.hot_standby)
        } else {
            None
        };

        let seen = Seen { obs, cluster, r, blocked: blocked.as_ref() };
        if cluster.is_leader(&self.s.name) {
            self.running_as_leader(seen, ctl)
        } else if let Some(leader) = &cluster.leader {
            self.running_as_follower(seen, ctl, &leader.name)
        } else {
            self.running_without_leader(seen)
        }
    }

    /// Now, my name, whether the cluster is paused and the prefix of a paused cycle's message.
    fn basics(&self, obs: &Observation<'_>) -> (Millis, String, bool, &'static str) {
        let paused = self.config.paused();
        (obs.now, self.s.name.clone(), paused, if paused { "PAUSE: " } else { "" })
    }

    /// We hold the lock: promote a replica, or lead the running primary (renew, status,
    /// failsafe topology, slots, synchronous replication, the `failover` key).
    fn running_as_leader(&mut self, seen: Seen<'_>, ctl: &ControlData) -> Plan {
        let Seen { obs, cluster, r, blocked } = seen;
        let (now, me, paused, pause) = self.basics(obs);
        let standby = self.standby();
        if let (Some(sc), false) = (&standby, r.in_recovery) {
            // `demote-cluster`: the section appeared above a running primary. It keeps the lock
            // and comes back as the standby leader (Patroni's `demote('demote-cluster')`).
            if paused {
                return self.plan(
                    now,
                    vec![Action::RenewLeader],
                    "PAUSE: standby_cluster is set but I run as a primary; not demoting in maintenance mode",
                );
            }
            return self.plan(
                now,
                vec![Action::RenewLeader, Action::StartJob(Job::Restart(StartRole::StandbyLeader(sc.clone())))],
                &format!("demoting to the standby leader of a standby cluster following {}", sc.describe()),
            );
        }
        if r.in_recovery && standby.is_none() {
            if paused && cluster.failover.is_none() {
                return self.plan(
                    now,
                    vec![Action::RenewLeader],
                    "PAUSE: holding the leader lock as a replica; not promoting",
                );
            }
            if let Some(b) = &blocked {
                // pg_promote would wait forever ("promotion is not possible because of
                // insufficient parameter settings"): restart with enough first.
                return self.plan(
                    now,
                    vec![Action::RenewLeader, Action::StartJob(Job::Restart(StartRole::Replica { upstream: None }))],
                    &format!("{b}: restarting PostgreSQL with the control file's values before promoting"),
                );
            }
            // Slots first: the other replicas switch to us as soon as they see the new leader
            // key, and a missing slot would make each of them wait a retry interval.
            // Still in recovery, so replica-style: physical slots only.
            let mut actions = vec![Action::RenewLeader];
            if self.config.postgresql.use_slots {
                actions.push(self.sync_slots(now, cluster, false));
            }
            if cluster.failover.is_some() {
                actions.push(Action::ClearFailover);
            }
            let mode = self.config.sync_mode();
            if mode.is_active() && r.synchronous_standby_names != sync::placeholder(mode) {
                // Nothing may be acknowledged until the `sync` key names us: the first cycle
                // as primary writes it, then picks the real standbys. (Replicas normally
                // have this in force already; see the following branch.)
                actions.push(Action::SetSynchronousStandbyNames(sync::placeholder(mode)));
            }
            actions.push(Action::StartJob(Job::Promote));
            return self.plan(now, actions, "promoting self: holding the leader lock");
        }
        self.handover.switchover_started = None;
        // Remembered only while every cycle goes on waiting for the proxies (see below).
        let drain_since = self.handover.drain_since.take();
        let mut actions = vec![Action::RenewLeader];
        if cluster.initialize.as_deref().is_none_or(str::is_empty) {
            actions.push(Action::RecordInitialize { sysid: ctl.sysid.clone() });
        }
        actions.extend(self.status_to_write(cluster, r).map(Action::WriteStatus));
        if let Some(sc) = &standby {
            // The standby leader: physical slots for the members cascading from it, and the
            // other cluster as its upstream (again after a change of the section, or when it
            // just took the lock as a replica of the previous standby leader).
            if self.config.postgresql.use_slots {
                actions.push(self.sync_slots(now, cluster, false));
            }
            let role = StartRole::StandbyLeader(sc.clone());
            if let (Some(b), false) = (&blocked, paused) {
                // Replay paused for insufficient settings never resumes by itself.
                actions.push(Action::StartJob(Job::Restart(role)));
                return self.plan(now, actions, &format!("{b}: restarting the standby leader with enough"));
            }
            let mut message = format!("{pause}no action. I am ({me}), the standby leader with the lock");
            if self.server.configured.as_ref() != Some(&role) {
                actions.push(Action::FollowRemote(sc.clone()));
                message = format!("{pause}I am ({me}), the standby leader with the lock; following {}", sc.describe());
            }
            return self.leader_handover(seen, drain_since, actions, message);
        }
        if self.config.failsafe_mode() {
            let topology = failsafe::topology_of(cluster);
            if cluster.failsafe.as_ref() != Some(&topology) {
                actions.push(Action::WriteFailsafe(topology));
            }
        }
        if self.config.postgresql.use_slots {
            actions.push(self.sync_slots(now, cluster, true));
        }
        let mut message = format!("{pause}no action. I am ({me}), the leader with the lock");
        let (sync_actions, sync_note) = self.leader_sync(now, cluster, r);
        actions.extend(sync_actions);
        if let Some(note) = sync_note {
            message = format!("{pause}I am ({me}), the leader with the lock; {note}");
        }
        // The history written right after the promotion may have failed (the DCS was away then):
        // until it is there, replicas past the fork cannot be told to rewind. Last of the
        // routine actions: a failing action ends the plan, and an unreadable history file must
        // not hold back slots and synchronous replication every cycle.
        if cluster.lacks_history_of(r.timeline) {
            actions.push(Action::PublishHistory { timeline: r.timeline });
        }
        self.leader_handover(seen, drain_since, actions, message)
    }

    /// The leader's part in a switchover or failover the `failover` key asks for (the running
    /// primary's, or the standby leader's): refuse it, wait for its time, wait for the proxies to
    /// finish their transactions on us, or stop PostgreSQL cleanly to hand over. Otherwise the
    /// cycle's routine `actions`.
    fn leader_handover(
        &mut self,
        seen: Seen<'_>,
        drain_since: Option<Millis>,
        mut actions: Vec<Action>,
        mut message: String,
    ) -> Plan {
        let Seen { obs, cluster, r, .. } = seen;
        let (now, me, _, pause) = self.basics(obs);
        let peers = obs.peers.unwrap_or(&[]);
        let mut wake_at = None;
        if let Some(f) = &cluster.failover {
            let max_lag = self.config.maximum_lag_on_failover;
            // A forced failover may go to a member the sync key does not list.
            let competitors = if f.force { peers.to_vec() } else { self.sync_competitors(cluster, peers, None) };
            let step = match self.admission_refusal(cluster, f).or_else(|| self.handover_refusal(cluster, f, r)) {
                Some(why) => LeaderStep::Clear(why),
                None => manual::as_running_leader(&me, f, &competitors, obs.wall_clock_ms, r.wal.best(), max_lag),
            };
            match step {
                LeaderStep::Clear(why) => {
                    actions.push(Action::ClearFailover);
                    message = why;
                }
                LeaderStep::WaitUntil(at) => {
                    let ms = u64::try_from(at - obs.wall_clock_ms).unwrap_or(0);
                    wake_at = Some(now.plus_ms(ms));
                    message = format!("{message}; switchover scheduled in {} s", ms / 1000);
                }
                LeaderStep::Demote { to } => {
                    let to = to.unwrap_or_else(|| "the healthiest replica".into());
                    // The proxies first finish their transactions on us (rule: [`drain`]); a
                    // forced failover is the operator saying "now", and waits for nobody.
                    let since = drain_since.unwrap_or(now);
                    let step = match f.force {
                        true => DrainStep::Stop,
                        false => drain::before_stop(&me, &cluster.proxies, since, now),
                    };
                    let stopping =
                        format!("switchover to {to}: stopping PostgreSQL cleanly before handing over the lock");
                    let stop = match step {
                        // Still the primary while waiting: the routine work goes on (a sync
                        // standby dropping out must still be handled, or the very transactions
                        // we wait for could hang), only the stop is held back.
                        DrainStep::Wait { pending, until } => {
                            self.handover.drain_since = Some(since);
                            message = format!(
                                "{pause}switchover to {to}: waiting for {} to finish their transactions on me ({}), \
                                 at most {} s more",
                                count(pending.len(), "proxy", "proxies"),
                                pending.join(", "),
                                now.until(until).div_ceil(1000)
                            );
                            wake_at = Some(until);
                            None
                        }
                        DrainStep::GiveUp { pending } => Some(format!(
                            "{stopping}; not waiting any longer ({} s) for {} to finish their transactions on me ({})",
                            since.until(now) / 1000,
                            count(pending.len(), "proxy", "proxies"),
                            pending.join(", ")
                        )),
                        DrainStep::Stop => Some(stopping),
                    };
                    if let Some(why) = stop {
                        self.handover.switchover_started = Some(now);
                        return self.plan(now, vec![Action::RenewLeader, Action::Stop(StopMode::Fast)], &why);
                    }
                }
            }
        }
        let mut p = self.plan(now, actions, &message);
        if let Some(w) = wake_at {
            p.next_cycle = p.next_cycle.min(w);
        }
        p
    }

    /// Another member holds the lock (`leader`): a primary demotes; a replica follows it, or is
    /// stopped to be rewound when it replayed past the leader's fork.
    fn running_as_follower(&mut self, seen: Seen<'_>, ctl: &ControlData, leader: &str) -> Plan {
        let Seen { obs, cluster, r, blocked } = seen;
        let (now, me, paused, pause) = self.basics(obs);
        if !r.in_recovery {
            if paused {
                return self.plan(now, vec![], &format!("PAUSE: running as primary while {} holds the lock", leader));
            }
            return self.plan(
                now,
                vec![Action::Stop(StopMode::Immediate)],
                &format!("demoting self: {} holds the leader lock", leader),
            );
        }
        if let Some(p) = self.diverged_replica(now, cluster, ctl, r, paused) {
            return p;
        }
        let Some(upstream) = self.desired_upstream(cluster, leader) else {
            return self.plan(now, vec![], "waiting for the leader to publish its address");
        };
        if let Some(b) = &blocked {
            if paused {
                return self.plan(now, vec![], &format!("PAUSE: {b}; not restarting PostgreSQL in maintenance mode"));
            }
            return self.plan(
                now,
                vec![Action::StartJob(Job::Restart(StartRole::Replica { upstream: Some(upstream) }))],
                &format!("{b}: restarting PostgreSQL with the values the primary's WAL needs"),
            );
        }
        let target = (upstream.host.clone(), upstream.port);
        let nostream = self.s.tags.nostream;
        // A nostream replica gets no copies: without a stream its feedback never reaches the
        // primary, so a logical slot on it would be unsafe to use (as in Patroni).
        if !nostream {
            if let Some(p) = self.copy_logical_slots(now, r, cluster, &upstream, leader, &target) {
                return p;
            }
        }
        // Slots for every other member (cascading children included) and the permanent ones,
        // so that whoever is promoted next already holds them.
        let mut actions = vec![];
        if self.config.postgresql.use_slots {
            actions.push(self.sync_replica_slots(now, cluster));
        }
        if r.upstream.as_ref() != (!nostream).then_some(&target) {
            let msg = match nostream {
                true => format!("{pause}not streaming (nostream): restoring WAL from the archive only"),
                false => format!("{pause}following new upstream {}", upstream.name),
            };
            actions.push(Action::Follow { upstream: self.streamed(upstream) });
            return self.plan(now, actions, &msg);
        }
        let mode = self.config.sync_mode();
        if mode.is_active() && r.synchronous_standby_names != sync::placeholder(mode) {
            // A replica keeps the placeholder in force all along, so that a promotion needs no
            // reload at that moment (a reload right before pg_promote can make the startup
            // process miss the promote request for wal_retrieve_retry_interval) and the new
            // primary acknowledges nothing until it has claimed the `sync` key.
            actions.push(Action::SetSynchronousStandbyNames(sync::placeholder(mode)));
        }
        self.plan(
            now,
            actions,
            &format!("{pause}no action. I am ({me}), a secondary, and following a leader ({leader})"),
        )
    }

    /// Nobody holds the lock: a running primary takes it back (unless the cluster moved past its
    /// timeline); a replica takes it when it is the requested candidate or the healthiest
    /// eligible member, and may.
    fn running_without_leader(&mut self, seen: Seen<'_>) -> Plan {
        let Seen { obs, cluster, r, blocked } = seen;
        let (now, me, paused, pause) = self.basics(obs);
        let peers = obs.peers.unwrap_or(&[]);
        if !r.in_recovery {
            if r.timeline < cluster.timeline() && !paused {
                return self.plan(
                    now,
                    vec![Action::Stop(StopMode::Immediate)],
                    &format!(
                        "demoting self: primary on timeline {} but the cluster reached {}",
                        r.timeline,
                        cluster.timeline()
                    ),
                );
            }
            return self.plan(
                now,
                vec![Action::AcquireLeader],
                &format!("{pause}acquiring the leader lock as the running primary"),
            );
        }
        // A replica that cannot replay cannot be promoted either: neither the requested candidate
        // nor a racer until it runs with enough (a restart does that).
        if let Some(b) = &blocked {
            if paused {
                return self.plan(now, vec![], &format!("PAUSE: no leader; {b}; not restarting in maintenance mode"));
            }
            return self.plan(
                now,
                vec![Action::StartJob(Job::Restart(StartRole::Replica { upstream: None }))],
                &format!("no leader, not racing: {b}; restarting PostgreSQL with the control file's values"),
            );
        }
        // Before any race, manual failovers included: a primary kept alive by failsafe may still
        // take writes, and only members it asks can vouch for not racing it.
        if let Some(why) = failsafe::race_veto(&self.config, cluster, &me, obs.failsafe_ping, now) {
            let mut p = self.plan(now, vec![], &format!("no leader, not racing (failsafe mode): {why}"));
            if let Some(ping) = obs.failsafe_ping {
                p.next_cycle = p.next_cycle.min(ping.received_at.plus_secs(self.config.ttl));
            }
            return p;
        }
        let mut race_peers: Vec<PeerReport> = peers.to_vec();
        if let Some(f) = &cluster.failover {
            match manual::as_replica(&me, f, peers) {
                // Streaming from a cascade parent (a replica) says nothing about the old primary:
                // the same test as the race below, or a `replicatefrom` candidate never takes over.
                ReplicaStep::Take if r.streaming && !upstream_is_a_replica(cluster, peers, r.upstream.as_ref()) => {
                    // Still connected to the old primary: it is not down yet. Look again soon.
                    let mut p = self.plan(now, vec![], "requested candidate, but still streaming from the old primary");
                    p.next_cycle = p.next_cycle.min(now.plus_ms(200));
                    return p;
                }
                ReplicaStep::Take => {
                    if let Some(rule) = SyncRule::of(&self.config, cluster) {
                        if let (Err(why), false) = (rule.may_promote(&me, r.wal.best(), peers), f.force) {
                            return self.plan(
                                now,
                                vec![Action::ClearFailover],
                                &format!(
                                    "refused the {} to me: {why}; promoting me could lose acknowledged commits \
                                     (a failover with \"force\": true accepts that)",
                                    if f.leader.is_some() { "switchover" } else { "failover" }
                                ),
                            );
                        }
                    }
                    return self.plan(
                        now,
                        vec![Action::AcquireLeader],
                        "taking the leader lock: I am the requested candidate",
                    );
                }
                ReplicaStep::Wait(why) => return self.plan(now, vec![], &why),
                ReplicaStep::Race => {
                    if let Some(old) = &f.leader {
                        race_peers.retain(|p| &p.name != old);
                    }
                }
            }
        }
        if paused {
            return self.plan(now, vec![], "PAUSE: no leader; not racing in maintenance mode");
        }
        if let Some(until) = self.handover.no_race_until {
            if now < until {
                return self.plan(now, vec![], "no leader, not racing: a promotion of mine was refused recently");
            }
            self.handover.no_race_until = None;
        }
        let me_cand = Candidate {
            tags: &self.s.tags,
            wal: r.wal.best(),
            timeline: r.timeline,
            cluster_optime: crate::Lsn(cluster.status.optime),
            cluster_timeline: cluster.timeline(),
            max_lag: self.config.maximum_lag_on_failover,
            check_timeline: self.config.check_timeline,
            streaming: r.streaming
                && !r.upstream_silent_ms.is_some_and(|ms| crate::election::stream_is_stale(ms, self.config.ttl))
                && !upstream_is_a_replica(cluster, &race_peers, r.upstream.as_ref()),
        };
        if let Some(rule) = SyncRule::of(&self.config, cluster) {
            if let Err(why) = rule.may_promote(&me, r.wal.best(), &race_peers) {
                let mut p = self.plan(now, vec![], &format!("no leader, not racing (synchronous mode): {why}"));
                if r.streaming {
                    p.next_cycle = p.next_cycle.min(now.plus_ms(300));
                }
                return p;
            }
        }
        let race_peers = self.sync_competitors(cluster, &race_peers, Some(r.timeline));
        match election::judge(&me_cand, &race_peers) {
            Verdict::Healthiest => {
                self.plan(now, vec![Action::AcquireLeader], "no leader: I am the healthiest member, taking the lock")
            }
            Verdict::NotHealthiest(why) => {
                let mut p = self.plan(now, vec![], &format!("no leader, not racing: {why}"));
                if r.streaming {
                    // The old primary is going away (its WAL sender ends a moment after the lock
                    // is released): check again soon rather than after a whole loop_wait.
                    p.next_cycle = p.next_cycle.min(now.plus_ms(300));
                }
                p
            }
        }
    }
}

/// `n` and the noun in the right number ("1 proxy", "2 proxies").
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
