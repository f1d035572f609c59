//! The fault schedule: which fault, on which role, for how long, drawn from a seed so that a run
//! can be repeated exactly (`RAMPART_CHAOS_SEED`).
//!
//! Targets are roles (the leader, "a replica" by a drawn index), not node names: the same seed
//! gives the same schedule whichever node happens to lead when a fault comes.
//!
//! Durations are chosen against the cluster's timing (ttl 10 s, loop_wait 1 s, retry_timeout 3 s,
//! watchdog safety margin 5 s): the faults the issue says must *not* cause a failover (an agent
//! frozen for less than ttl − safety margin, an etcd blip shorter than retry_timeout, anything
//! done to a replica) stay inside those bounds, and the others last long enough to force one.

use std::fmt;

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
    /// The leader cannot exchange packets with etcd (longer than ttl).
    LeaderEtcdCut,
    /// The leader's packets to etcd are dropped; etcd's to it still arrive.
    LeaderEtcdOneWayOut,
    /// etcd's packets to the leader are dropped; the leader's still arrive.
    LeaderEtcdOneWayIn,
    /// The leader cannot exchange packets with the replicas (it still reaches etcd).
    LeaderReplicaCut,
    /// The leader reaches nothing but the test's own address: not etcd, not the replicas, not
    /// the proxy.
    LeaderIsolated,
    /// A replica's packets to the leader are dropped.
    ReplicaOneWayOut,
    /// etcd is killed for longer than ttl, then started again on its data.
    EtcdDown,
    /// etcd is killed for less than retry_timeout.
    EtcdBlip,
    /// A replica's disk (its tmpfs) is filled to the last byte.
    ReplicaDiskFull,
    /// The leader's machine crashes; as soon as another member leads, its machine crashes too.
    BackToBackFailovers,
    /// A replica's machine crashes and, during that, a switchover to the other replica.
    SwitchoverDuringFault,
}

impl Kind {
    pub const ALL: [Kind; 19] = [
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
        Kind::ReplicaDiskFull,
        Kind::BackToBackFailovers,
        Kind::SwitchoverDuringFault,
    ];

    /// The CI profile: one of each family, the ones that matter most for safety.
    pub const SHORT: [Kind; 8] = [
        Kind::LeaderCrash,
        Kind::LeaderAgentFreeze,
        Kind::LeaderIsolated,
        Kind::EtcdBlip,
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
        )
    }

    /// How long the fault is held, in seconds (for BackToBackFailovers: after the second crash).
    fn hold(self, rng: &mut Rng) -> f64 {
        match self {
            // Restarted before the lease (renewed at most loop_wait ago) minus the margin runs out.
            Kind::LeaderAgentKill => rng.secs(0.5, 3.0),
            // Less than ttl − safety_margin (5 s) minus a loop.
            Kind::LeaderAgentFreeze => rng.secs(0.5, 3.5),
            // Shorter than retry_timeout (3 s) minus a loop.
            Kind::EtcdBlip => rng.secs(0.3, 1.8),
            // Past the lease: these must end in a failover or a demotion.
            Kind::LeaderEtcdCut | Kind::LeaderEtcdOneWayOut | Kind::LeaderEtcdOneWayIn | Kind::LeaderIsolated => {
                rng.secs(12.0, 20.0)
            }
            Kind::EtcdDown => rng.secs(12.0, 18.0),
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
    pub fn generate(seed: u64, kinds: &[Kind], count: usize, partitions: bool) -> Schedule {
        let mut rng = Rng::new(seed);
        let usable: Vec<Kind> = kinds.iter().copied().filter(|k| partitions || !k.is_partition()).collect();
        let mut first = usable.clone();
        for i in (1..first.len()).rev() {
            first.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut faults = Vec::with_capacity(count);
        for i in 0..count {
            let kind = if i < first.len() { first[i] } else { usable[rng.below(usable.len() as u64) as usize] };
            let hold = kind.hold(&mut rng);
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
        let a = Schedule::generate(42, &Kind::ALL, 40, true);
        let b = Schedule::generate(42, &Kind::ALL, 40, true);
        assert_eq!(a.to_string(), b.to_string());
        let firsts: std::collections::BTreeSet<Kind> = a.faults[..Kind::ALL.len()].iter().map(|f| f.kind).collect();
        assert_eq!(firsts.len(), Kind::ALL.len());
        let c = Schedule::generate(43, &Kind::ALL, 40, true);
        assert_ne!(a.to_string(), c.to_string());
        let no_net = Schedule::generate(42, &Kind::ALL, 40, false);
        assert!(no_net.faults.iter().all(|f| !f.kind.is_partition()));
    }

    #[test]
    fn benign_faults_stay_inside_their_bounds() {
        let s = Schedule::generate(7, &Kind::ALL, 2000, true);
        for f in &s.faults {
            match f.kind {
                Kind::LeaderAgentFreeze => assert!(f.hold < 10.0 - 5.0 - 1.0),
                Kind::EtcdBlip => assert!(f.hold < 3.0 - 1.0),
                Kind::LeaderEtcdCut | Kind::LeaderIsolated => assert!(f.hold > 10.0),
                _ => {}
            }
        }
    }
}
