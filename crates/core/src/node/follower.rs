//! A follower's upstream: whom it streams from (the leader, or its `replicatefrom` member), and
//! the replica that replayed past the leader's fork and must be rewound, never re-pointed.

use super::*;

impl HaNode {
    /// A replica on an older timeline than the cluster's that replayed past the point where its
    /// timeline ended in the leader's history can never follow the leader (PostgreSQL says "new
    /// timeline forked off current database system timeline before current recovery point" and
    /// waits forever). This happens to a former primary that was started read-only before the new
    /// timeline existed, so its control file no longer says it was a primary. It is stopped
    /// cleanly, and rewound before it runs again.
    pub(super) fn diverged_replica(
        &mut self,
        now: Millis,
        cluster: &Cluster,
        ctl: &ControlData,
        r: &RunningPg,
        paused: bool,
    ) -> Option<Plan> {
        // Only the WAL receiver's timeline says which timeline the replay is on now: the control
        // file's lags until the next restartpoint, and a healthy replica that already replays the
        // leader's timeline past the fork would look diverged by it. A diverged replica never
        // streams (its upstream refuses a start point that is not in its history), so one that
        // streams is left alone too.
        let suspect = self.rewind.diverged_suspect.take();
        let replayed = r.wal.replayed?;
        if r.streaming {
            return None;
        }
        // A server started after the fork with WAL past it never streams, so it has no receiver
        // timeline at all: then the control file's (timeline, position) pairs are judged, each of
        // which holds together, as for a stopped data directory (the simulation's "replica that
        // replayed past the fork" found this case).
        let (timeline, fork) = match r.receiver_timeline {
            Some(t) => (t, cluster.passed_fork(t, replayed)?),
            None => ctl.wal_ends().into_iter().find_map(|(t, at)| Some((t, cluster.passed_fork(t, at)?)))?,
        };
        // The receiver's timeline is the last one it streamed: a replica that went on to the new
        // timeline through restore_command, or whose upstream just went away, still shows the
        // old one until it streams again. Only a replica stuck there, replaying nothing, for
        // longer than its receiver takes to reconnect has diverged.
        match suspect {
            Some((since, at)) if at == replayed => {
                if since.until(now) < DIVERGED_AFTER_MS {
                    self.rewind.diverged_suspect = suspect;
                    return None;
                }
            }
            _ => {
                self.rewind.diverged_suspect = Some((now, replayed));
                return None;
            }
        }
        let what = format!(
            "replayed {replayed} on timeline {timeline} past where the leader's timeline forked off it ({fork})"
        );
        if paused || !self.use_pg_rewind() {
            let why = if paused { "maintenance mode" } else { "use_pg_rewind is off" };
            return Some(self.plan(now, vec![], &format!("{what}: needs pg_rewind or reinitialize ({why})")));
        }
        self.rewind.diverged = true;
        Some(self.plan(now, vec![Action::Stop(StopMode::Fast)], &format!("{what}: stopping PostgreSQL to rewind it")))
    }

    /// What a replica puts in `primary_conninfo`: `upstream`, or nothing with the `nostream` tag
    /// (it replays only what `restore_command` brings from the archive, as in Patroni 4).
    pub(super) fn streamed(&self, upstream: Upstream) -> Option<Upstream> {
        (!self.s.tags.nostream).then_some(upstream)
    }

    /// Where a replica streams from: the member its `replicatefrom` tag names, while that member
    /// is a running replica (cascading replication), else the leader. Also the source of a
    /// rewind, so it is named with `nostream` too (see [`HaNode::streamed`]).
    pub(super) fn desired_upstream(&self, cluster: &Cluster, leader: &str) -> Option<Upstream> {
        let cascade = self.s.tags.replicatefrom.as_deref().filter(|m| *m != self.s.name && *m != leader).filter(|m| {
            cluster.member(m).is_some_and(|mm| mm.data.state == PgState::Running && mm.data.role == Role::Replica)
        });
        cascade.and_then(|m| upstream_of(cluster, m)).or_else(|| upstream_of(cluster, leader))
    }
}
