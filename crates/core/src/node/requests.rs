//! Operators' local requests (restart, reinitialize): whether they may run now, and in which
//! role PostgreSQL is started.

use super::*;

impl HaNode {
    /// An operator's request.
    pub(super) fn on_request(&mut self, obs: &Observation<'_>, cluster: &Cluster, req: &Request) -> Plan {
        let now = obs.now;
        let me = self.s.name.clone();
        let leader = cluster.is_leader(&me);
        let mut actions = if leader { vec![Action::RenewLeader] } else { vec![] };
        let refuse = |this: &Self, why: &str| {
            let actions = if leader { vec![Action::RenewLeader] } else { vec![] };
            with_answer(
                this.plan(now, actions, &format!("refused an operator request: {why}")),
                Answer::Refused(why.into()),
            )
        };
        match req {
            Request::Restart => {
                let role = match &obs.local.process {
                    PgProcess::Running(r) if !r.in_recovery && leader => StartRole::Primary,
                    PgProcess::Running(r) if !r.in_recovery => {
                        return refuse(self, "running as primary without the leader lock; not restarting it")
                    }
                    PgProcess::Running(_) => match self.standby().filter(|_| leader) {
                        Some(sc) => StartRole::StandbyLeader(sc),
                        None => StartRole::Replica {
                            upstream: cluster
                                .leader
                                .as_ref()
                                .and_then(|l| self.desired_upstream(cluster, &l.name))
                                .and_then(|u| self.streamed(u)),
                        },
                    },
                    PgProcess::Starting => return refuse(self, "PostgreSQL is starting"),
                    // As Patroni's restart, which starts a server that is not running: in
                    // maintenance mode that is how an operator brings a stopped member back.
                    PgProcess::Stopped | PgProcess::Crashed => {
                        match self.start_role_on_request(cluster, &obs.local.data) {
                            Ok(role) => role,
                            Err(why) => return refuse(self, &why),
                        }
                    }
                };
                actions.push(Action::StartJob(Job::Restart(role)));
                with_answer(self.plan(now, actions, "restarting PostgreSQL on request"), Answer::Started)
            }
            Request::Reinitialize { from_leader, .. } => {
                if leader {
                    return refuse(self, "I am the leader, can not reinitialize");
                }
                let source = if *from_leader {
                    cluster.leader.as_ref().and_then(|l| upstream_of(cluster, &l.name))
                } else {
                    self.clone_source(cluster)
                };
                let Some(source) = source else { return refuse(self, "Cluster has no leader, can not reinitialize") };
                let msg = format!("reinitializing on request: cloning again from {}", source.name);
                actions.push(Action::StartJob(Job::Reinitialize(source)));
                with_answer(self.plan(now, actions, &msg), Answer::Started)
            }
        }
    }

    /// The role in which an operator's restart starts a PostgreSQL that is not running: the
    /// leader's former primary as primary; anything else as a replica of its upstream, except a
    /// former primary behind the cluster's timeline (it needs pg_rewind first) and a data
    /// directory that holds no cluster.
    pub(super) fn start_role_on_request(&self, cluster: &Cluster, data: &DataDir) -> Result<StartRole, String> {
        let DataDir::Initialized(ctl) = data else {
            return Err("PostgreSQL is not running and the data directory holds no cluster".into());
        };
        if let (true, Some(sc)) = (cluster.is_leader(&self.s.name), self.standby()) {
            return Ok(StartRole::StandbyLeader(sc));
        }
        if cluster.is_leader(&self.s.name) {
            return Ok(match ctl.state.was_primary() {
                true => StartRole::Primary,
                false => StartRole::Replica { upstream: None },
            });
        }
        if ctl.state.was_primary() && ctl.wal_timeline() < cluster.timeline() {
            return Err("PostgreSQL is not running and is a former primary that needs pg_rewind first".into());
        }
        if let Some(p) = stopped_past_fork(ctl, cluster) {
            return Err(format!("PostgreSQL is not running and needs pg_rewind first: {p}"));
        }
        let upstream = cluster.leader.as_ref().and_then(|l| self.desired_upstream(cluster, &l.name));
        Ok(StartRole::Replica { upstream: upstream.and_then(|u| self.streamed(u)) })
    }
}
