//! The leader's helpers: synchronous replication (`sync` key and `synchronous_standby_names`) and
//! whether a switchover or failover request may be carried out now.

use super::*;

impl HaNode {
    /// Synchronous mode on the leader: the step of [`sync::leader_step`], unless a setting we made
    /// is not confirmed yet, which is then set again first.
    pub(super) fn leader_sync(
        &mut self,
        now: Millis,
        cluster: &Cluster,
        r: &RunningPg,
    ) -> (Vec<Action>, Option<String>) {
        if let Some(v) = self.sync.sync_names_unconfirmed.take() {
            if self.config.sync_mode().is_active() && r.synchronous_standby_names != v {
                let note = format!("setting synchronous_standby_names = {v} again: its effect was not confirmed");
                return (vec![Action::SetSynchronousStandbyNames(v)], Some(note));
            }
        }
        let step = sync::leader_step(&LeaderSync {
            me: &self.s.name,
            config: &self.config,
            cluster,
            pg: r,
            mark: self.sync.sync_mark.as_ref(),
            now,
        });
        self.sync.sync_mark = step.mark;
        (step.actions, step.note)
    }

    /// The setting to start PostgreSQL with as primary in synchronous mode (none otherwise).
    pub(super) fn names_to_start_primary(&self, cluster: &Cluster) -> Option<Action> {
        self.config
            .sync_mode()
            .is_active()
            .then(|| Action::SetSynchronousStandbyNames(sync::restore_names(&self.s.name, &self.config, cluster)))
    }

    /// Peers as candidates for the lock: in `synchronous_mode: on`, those the `sync` key does not
    /// list cannot be promoted, so they are marked ineligible (they neither hold a candidate back
    /// nor count as handover targets). In a race (`my_timeline` given), peers on a branch the
    /// former leader left behind are ineligible to it too ([`SyncRule::left_behind`]).
    pub(super) fn sync_competitors(
        &self,
        cluster: &Cluster,
        peers: &[PeerReport],
        my_timeline: Option<crate::lsn::Timeline>,
    ) -> Vec<PeerReport> {
        let Some(rule) = SyncRule::of(&self.config, cluster) else { return peers.to_vec() };
        let me = self.s.name.as_str();
        peers
            .iter()
            .cloned()
            .map(|mut p| {
                let behind = |t| my_timeline.is_some_and(|mine| rule.left_behind(me, mine, t));
                if !rule.may_compete(&p.name) || p.status.as_ref().is_some_and(|s| behind(s.timeline)) {
                    if let Some(s) = p.status.as_mut() {
                        s.can_fail_over = false;
                    }
                }
                p
            })
            .collect()
    }

    /// A switchover (or unforced failover) the running leader must not start in synchronous
    /// mode, because too few of the sync key's voters stream from it for the candidate to prove
    /// it has every acknowledged commit: stopping would only leave the cluster without a primary
    /// until the leader took its own lock back (see [`SyncRule::handover_refusal`]).
    pub(super) fn handover_refusal(
        &self,
        cluster: &Cluster,
        f: &crate::model::Failover,
        r: &RunningPg,
    ) -> Option<String> {
        if f.force {
            return None;
        }
        let rule = SyncRule::of(&self.config, cluster)?;
        let streaming: Vec<&str> = r
            .walsenders
            .iter()
            .filter(|w| w.state == WalsenderState::Streaming)
            .map(|w| w.application_name.as_str())
            .collect();
        let why = rule.handover_refusal(f.member.as_deref(), &streaming)?;
        Some(match &f.member {
            Some(m) => format!("switchover to {m} refused: {why}"),
            None => format!("switchover refused: {why}"),
        })
    }

    /// Why the running leader refuses the request in the `failover` key (rule:
    /// [`admission`]), whoever wrote it. A key may name neither leader nor candidate (a
    /// switchover to the healthiest replica) or schedule a failover: Patroni's leader accepts
    /// both, so only what the key asks in maintenance mode and against the cluster is judged.
    pub(super) fn admission_refusal(&self, cluster: &Cluster, f: &crate::model::Failover) -> Option<String> {
        let r = admission::Request::of_key(f);
        let shape = admission::check_shape(&r, self.config.paused()).err().filter(|e| {
            !matches!(
                e,
                Refusal::FailoverWithoutCandidate | Refusal::SwitchoverWithoutLeader | Refusal::FailoverScheduled
            )
        });
        let refusal = shape.or_else(|| admission::check_cluster(cluster, self.config.sync_mode(), &r).err())?;
        Some(match f.member.as_deref() {
            Some(m) => format!("{} to {m} refused: {refusal}", r.kind.name()),
            None => format!("{} refused: {refusal}", r.kind.name()),
        })
    }
}
