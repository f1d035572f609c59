//! The fault schedule: which fault, on which role, for how long, drawn from a seed so that a run
//! can be repeated exactly (`RAMPART_CHAOS_SEED`).
//!
//! Targets are roles (the leader, "a replica" by a drawn index), not node names: the same seed
//! gives the same schedule whichever node happens to lead when a fault comes.
//!
//! Durations are chosen against the cluster's timing (ttl 10 s, loop_wait 1 s, retry_timeout 3 s;
//! a leader fences a quarter of ttl before its lease ends): the faults the issue says must *not*
//! cause a failover (an agent frozen for less than what is left of its lease, an etcd blip
//! shorter than retry_timeout, anything done to a replica, one etcd member of three lost, a slow
//! etcd) stay inside those bounds, and the others last long enough to force one. At ttl 5 the
//! bounds of the harmless faults shrink in proportion, and the others still outlast the ttl.
//!
//! etcd has three members, one on each node's host (seed 003): "the leader's etcd" is the
//! member beside the leader, which its agent lists first.

use std::fmt;

use crate::cluster::Timing;

/// A tiny deterministic RNG (xorshift64), so a seed reproduces a schedule.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in `[lo, hi]`, to the tenth of a second.
    pub fn secs(&mut self, lo: f64, hi: f64) -> f64 {
        let steps = ((hi - lo) * 10.0).round() as u64;
        lo + self.below(steps + 1) as f64 / 10.0
    }
}

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL of the leader's agent and postmaster (its machine crashes); back after the hold.
    LeaderCrash,
    /// SIGKILL of the leader's agent alone, restarted within ttl − safety margin.
    LeaderAgentKill,
    /// SIGKILL of the leader's postmaster alone; its agent deals with it.
    LeaderPostgresKill,
    /// SIGSTOP of the leader's agent for less than ttl − safety margin.
    LeaderAgentFreeze,
    /// SIGSTOP of the leader's postmaster.
    LeaderPostgresFreeze,
    /// SIGKILL of a replica's agent and postmaster; back after the hold.
    ReplicaCrash,
    /// SIGSTOP of a replica's agent.
    ReplicaAgentFreeze,
    /// SIGSTOP of a replica's postmaster.
    ReplicaPostgresFreeze,
    /// No etcd traffic between the leader's host and the others (longer than ttl): its agent
    /// reaches only the member beside it, which is cut off from the quorum.
    LeaderEtcdCut,
    /// The leader's host's etcd packets to the others are dropped; theirs still arrive.
    LeaderEtcdOneWayOut,
    /// The others' etcd packets to the leader's host are dropped; its own still arrive.
    LeaderEtcdOneWayIn,
    /// The leader cannot exchange packets with the replicas but etcd's (replication, REST API).
    LeaderReplicaCut,
    /// The leader reaches nothing but the test's own address: not etcd, not the replicas, not
    /// the proxy.
    LeaderIsolated,
    /// A replica's packets to the leader are dropped.
    ReplicaOneWayOut,
    /// Every etcd member is killed for longer than ttl, then started again on its data.
    EtcdDown,
    /// Every etcd member is killed for less than retry_timeout.
    EtcdBlip,
    /// The etcd member beside the leader is killed, and started again after the hold.
    EtcdMemberKill,
    /// etcd's raft leader is killed under the write load, and started again after the hold.
    EtcdRaftLeaderKill,
    /// The etcd member beside the leader is cut off from the other two (their peer traffic); the
    /// leader's agent still reaches the others' client ports and must use them.
    LeaderEtcdMemberCut,
    /// Two etcd members, the one beside the leader among them, are killed for longer than ttl:
    /// etcd has no quorum.
    EtcdQuorumLoss,
    /// etcd answers slowly for longer than retry_timeout: every member is stopped for 150 ms of
    /// every 200 ms (the kernel here has no netem to add latency on the links).
    EtcdSlow,
    /// A replica's disk (its tmpfs) is filled to the last byte.
    ReplicaDiskFull,
    /// The leader's machine crashes; as soon as another member leads, its machine crashes too.
    BackToBackFailovers,
    /// A replica's machine crashes and, during that, a switchover to the other replica.
    SwitchoverDuringFault,
}

impl Kind {
    pub const ALL: [Kind; 24] = [
        Kind::LeaderCrash,
        Kind::LeaderAgentKill,
        Kind::LeaderPostgresKill,
        Kind::LeaderAgentFreeze,
        Kind::LeaderPostgresFreeze,
        Kind::ReplicaCrash,
        Kind::ReplicaAgentFreeze,
        Kind::ReplicaPostgresFreeze,
        Kind::LeaderEtcdCut,
        Kind::LeaderEtcdOneWayOut,
        Kind::LeaderEtcdOneWayIn,
        Kind::LeaderReplicaCut,
        Kind::LeaderIsolated,
        Kind::ReplicaOneWayOut,
        Kind::EtcdDown,
        Kind::EtcdBlip,
        Kind::EtcdMemberKill,
        Kind::EtcdRaftLeaderKill,
        Kind::LeaderEtcdMemberCut,
        Kind::EtcdQuorumLoss,
        Kind::EtcdSlow,
        Kind::ReplicaDiskFull,
        Kind::BackToBackFailovers,
        Kind::SwitchoverDuringFault,
    ];

    /// The CI profile: one of each family, the ones that matter most for safety.
    pub const SHORT: [Kind; 9] = [
        Kind::LeaderCrash,
        Kind::LeaderAgentFreeze,
        Kind::LeaderIsolated,
        Kind::EtcdBlip,
        Kind::LeaderEtcdMemberCut,
        Kind::LeaderReplicaCut,
        Kind::ReplicaDiskFull,
        Kind::LeaderAgentKill,
        Kind::SwitchoverDuringFault,
    ];

    /// Needs packet filtering between hosts (network namespaces).
    pub fn is_partition(self) -> bool {
        matches!(
            self,
            Kind::LeaderEtcdCut
                | Kind::LeaderEtcdOneWayOut
                | Kind::LeaderEtcdOneWayIn
                | Kind::LeaderReplicaCut
                | Kind::LeaderIsolated
                | Kind::ReplicaOneWayOut
                | Kind::LeaderEtcdMemberCut
        )
    }

    /// Faults of etcd itself rather than of one node.
    pub fn is_etcd(self) -> bool {
        matches!(
            self,
            Kind::EtcdDown
                | Kind::EtcdBlip
                | Kind::EtcdMemberKill
                | Kind::EtcdRaftLeaderKill
                | Kind::EtcdQuorumLoss
                | Kind::EtcdSlow
        )
    }

    /// Faults after which the leader and its timeline must be unchanged (check e).
    pub fn forbids_failover(self) -> bool {
        matches!(
            self,
            Kind::LeaderAgentKill
                | Kind::LeaderAgentFreeze
                | Kind::ReplicaCrash
                | Kind::ReplicaAgentFreeze
                | Kind::ReplicaPostgresFreeze
                | Kind::LeaderReplicaCut
                | Kind::ReplicaOneWayOut
                | Kind::EtcdBlip
                | Kind::ReplicaDiskFull
                | Kind::EtcdMemberKill
                | Kind::EtcdRaftLeaderKill
                | Kind::LeaderEtcdMemberCut
                | Kind::EtcdSlow
        )
    }

    /// How long the fault is held, in seconds (for BackToBackFailovers: after the second crash).
    fn hold(self, rng: &mut Rng, timing: Timing) -> f64 {
        // The harmless faults' bounds, set for ttl 10, shrink with a shorter ttl.
        let k = timing.ttl as f64 / 10.0;
        match self {
            // Restarted before the lease (renewed at most loop_wait ago) minus the margin runs out.
            Kind::LeaderAgentKill => rng.secs(0.5, 3.0 * k),
            // Less than ttl − the fencing margin (a quarter of ttl) minus a loop and some.
            Kind::LeaderAgentFreeze => rng.secs(0.5, 3.5 * k),
            // Shorter than retry_timeout minus a loop, and the members' election after it.
            Kind::EtcdBlip => rng.secs(0.3 * k, 1.8 * k),
            // Past the lease: these must end in a failover or a demotion.
            Kind::LeaderEtcdCut | Kind::LeaderEtcdOneWayOut | Kind::LeaderEtcdOneWayIn | Kind::LeaderIsolated => {
                rng.secs(12.0, 20.0)
            }
            Kind::EtcdDown | Kind::EtcdQuorumLoss => rng.secs(12.0, 18.0),
            // Longer than retry_timeout (3 s), and long enough to be a real test of patience.
            Kind::EtcdSlow => rng.secs(4.0, 10.0),
            // One member of three: as long as it likes, etcd still has a quorum.
            Kind::EtcdMemberKill | Kind::EtcdRaftLeaderKill | Kind::LeaderEtcdMemberCut => rng.secs(3.0, 20.0),
            Kind::LeaderCrash => rng.secs(3.0, 20.0),
            Kind::BackToBackFailovers => rng.secs(2.0, 8.0),
            _ => rng.secs(2.0, 12.0),
        }
    }
}

/// One scheduled fault.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: Kind,
    /// Seconds the fault is held before it heals.
    pub hold: f64,
    /// Which replica, for faults that pick one (index among the replicas, sorted by name).
    pub pick: u64,
}

/// A profile's faults in order.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub seed: u64,
    pub faults: Vec<Fault>,
}

impl Schedule {
    /// `count` faults: first every kind of `kinds` once in a seeded order, then seeded draws
    /// from `kinds`. Partition kinds are left out when `partitions` is false.
    pub fn generate(seed: u64, kinds: &[Kind], count: usize, partitions: bool, timing: Timing) -> Schedule {
        let mut rng = Rng::new(seed);
        let usable: Vec<Kind> = kinds.iter().copied().filter(|k| partitions || !k.is_partition()).collect();
        let mut first = usable.clone();
        for i in (1..first.len()).rev() {
            first.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut faults = Vec::with_capacity(count);
        for i in 0..count {
            let kind = if i < first.len() { first[i] } else { usable[rng.below(usable.len() as u64) as usize] };
            let hold = kind.hold(&mut rng, timing);
            faults.push(Fault { kind, hold, pick: rng.below(2) });
        }
        Schedule { seed, faults }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fault schedule of seed {} ({} faults):", self.seed, self.faults.len())?;
        for (i, fault) in self.faults.iter().enumerate() {
            writeln!(
                f,
                "  {:>3}  {:<24} hold {:>5.1} s  replica pick {}",
                i + 1,
                format!("{:?}", fault.kind),
                fault.hold,
                fault.pick
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_its_schedule_and_covers_every_kind_first() {
        let a = Schedule::generate(42, &Kind::ALL, 40, true, Timing::TTL_10);
        let b = Schedule::generate(42, &Kind::ALL, 40, true, Timing::TTL_10);
        assert_eq!(a.to_string(), b.to_string());
        let firsts: std::collections::BTreeSet<Kind> = a.faults[..Kind::ALL.len()].iter().map(|f| f.kind).collect();
        assert_eq!(firsts.len(), Kind::ALL.len());
        let c = Schedule::generate(43, &Kind::ALL, 40, true, Timing::TTL_10);
        assert_ne!(a.to_string(), c.to_string());
        let no_net = Schedule::generate(42, &Kind::ALL, 40, false, Timing::TTL_10);
        assert!(no_net.faults.iter().all(|f| !f.kind.is_partition()));
    }

    #[test]
    fn benign_faults_stay_inside_their_bounds() {
        for t in [Timing::TTL_10, Timing::TTL_5] {
            let (ttl, retry, lw) = (t.ttl as f64, t.retry_timeout as f64, t.loop_wait as f64);
            let s = Schedule::generate(7, &Kind::ALL, 2000, true, t);
            for f in &s.faults {
                match f.kind {
                    // What is left of a lease renewed a loop ago, before the fencing margin.
                    Kind::LeaderAgentFreeze | Kind::LeaderAgentKill => assert!(f.hold < ttl * 0.75 - lw, "{t:?} {f:?}"),
                    Kind::EtcdBlip => assert!(f.hold < retry - lw, "{t:?} {f:?}"),
                    Kind::EtcdSlow => assert!(f.hold > retry, "{t:?} {f:?}"),
                    Kind::LeaderEtcdCut | Kind::LeaderIsolated | Kind::EtcdQuorumLoss | Kind::EtcdDown => {
                        assert!(f.hold > ttl, "{t:?} {f:?}")
                    }
                    _ => {}
                }
            }
        }
    }
}
