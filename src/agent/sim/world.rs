//! The simulated machines: a toy PostgreSQL per machine (WAL as a counter, replicas copying
//! their upstream's position, timelines and their fork points), the watchdog device, the
//! network cuts and freezes the faults set, and the checks of the invariants.
//!
//! All times are virtual milliseconds since the start of the run (tokio's paused clock), so a
//! seed reproduces its run exactly.

use rampart_core::keys::ClusterPrefix;
use rampart_core::model::RawKv;
use rampart_core::standby_names::{Method, StandbyNames};
use rampart_core::SyncMode;
use tokio::time::Instant;

/// A tiny deterministic RNG (xorshift), so a seed reproduces a run.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// The generator of `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// WAL a primary writes per 100 ms step (160 kB/s): a replica that fell a few seconds behind is
/// within `maximum_lag_on_failover` (1 MB), one that missed a failover is not.
const WAL_PER_STEP: u64 = 16_384;

/// A toy PostgreSQL: just what the HA rules look at.
#[derive(Clone, Debug, Default)]
pub struct Pg {
    /// The postmaster runs.
    pub running: bool,
    /// Its last exit was not asked for.
    pub crashed: bool,
    /// Runs as a standby.
    pub in_recovery: bool,
    /// Its timeline.
    pub timeline: u32,
    /// WAL written (primary) or replayed (replica).
    pub wal: u64,
    /// Ended timelines and where each ended, as its history files say.
    pub history: Vec<(u32, u64)>,
    /// Where it streams from (a machine).
    pub upstream: Option<usize>,
    /// The control file says it ran as a primary.
    pub was_primary: bool,
    /// `synchronous_standby_names` in force.
    pub ssn: String,
    /// What postgresql.conf says (applied by a reload or a start).
    pub conf_ssn: String,
    /// The upstream postgresql.conf names.
    pub conf_upstream: Option<usize>,
    /// The WAL receiver is connected (a partition leaves it connected, silent).
    pub receiving: bool,
    /// The timeline it last streamed on (`pg_stat_wal_receiver.received_tli`).
    pub receiver_tli: Option<u32>,
    /// When it last heard from its upstream.
    pub last_heard: u64,
}

impl Pg {
    /// Where this server's `timeline` ended in its history, if it did.
    pub fn fork_of(&self, timeline: u32) -> Option<u64> {
        self.history.iter().find(|(t, _)| *t == timeline).map(|(_, at)| *at)
    }

    /// Whether a standby at (`timeline`, `wal`) can stream from this server: same timeline, or
    /// this server's history forked off that timeline at or after `wal`.
    pub fn can_feed(&self, timeline: u32, wal: u64) -> bool {
        self.timeline == timeline || (self.timeline > timeline && self.fork_of(timeline).is_some_and(|f| f >= wal))
    }
}

/// An armed watchdog device: it resets the machine `timeout_ms` after the last keepalive.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    /// Last keepalive.
    pub last_fed: u64,
    /// Its timeout.
    pub timeout_ms: u64,
}

/// One machine: its PostgreSQL, its agent's fate and the faults on it.
#[derive(Debug, Default)]
pub struct Machine {
    /// PostgreSQL.
    pub pg: Pg,
    /// Incremented at every reset: a job of an agent from before the reset does nothing.
    pub epoch: u64,
    /// The agent does nothing until then.
    pub frozen_until: u64,
    /// Cut off from the DCS until then.
    pub dcs_cut_until: u64,
    /// Cut off from the other machines (replication and REST API) until then.
    pub link_cut_until: u64,
    /// As a replica, hears nothing from its upstream until then (the upstream goes silent).
    pub silent_until: u64,
    /// As a replica, receives nothing (falls behind) until then.
    pub lag_until: u64,
    /// The armed watchdog device.
    pub device: Option<Device>,
    /// The machine is down (reset) and its agent starts again at this time.
    pub down_until: Option<u64>,
    /// The machine has the cluster's virtual address.
    pub holds_address: bool,
    /// How far its agent's watch-fed copy of the DCS may lag behind the store (ms; 0: never).
    pub watch_lag: u64,
}

/// The in-memory DCS's content.
#[derive(Debug, Default)]
pub struct Store {
    /// etcd's revision.
    pub revision: i64,
    /// key → (value, lease, mod_revision).
    pub kv: std::collections::BTreeMap<String, (String, i64, i64)>,
    /// lease → expiry.
    pub leases: std::collections::BTreeMap<i64, u64>,
    /// The last lease granted.
    pub last_lease: i64,
}

impl Store {
    /// Drops expired leases and their keys.
    pub fn expire(&mut self, now: u64) {
        let dead: Vec<i64> = self.leases.iter().filter(|(_, exp)| **exp <= now).map(|(l, _)| *l).collect();
        if dead.is_empty() {
            return;
        }
        for l in &dead {
            self.leases.remove(l);
        }
        let before = self.kv.len();
        self.kv.retain(|_, (_, lease, _)| !dead.contains(lease));
        if self.kv.len() != before {
            self.revision += 1;
        }
    }

    /// Writes `key`.
    pub fn put(&mut self, key: String, value: String, lease: i64) {
        self.revision += 1;
        self.kv.insert(key, (value, lease, self.revision));
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(&mut self, key: &str) -> bool {
        let existed = self.kv.remove(key).is_some();
        if existed {
            self.revision += 1;
        }
        existed
    }

    /// The key's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.kv.get(key).map(|(v, _, _)| v.as_str())
    }

    /// Everything, as etcd's range read gives it.
    pub fn kvs(&self) -> Vec<RawKv> {
        self.kv
            .iter()
            .map(|(k, (v, lease, rev))| RawKv { key: k.clone(), value: v.clone(), lease: *lease, mod_revision: *rev })
            .collect()
    }
}

/// The whole simulated world, shared by the ports of every agent.
#[derive(Debug)]
pub struct World {
    /// The instant of virtual time 0.
    pub start: Instant,
    /// The cluster's synchronous mode.
    pub mode: SyncMode,
    /// The machines.
    pub machines: Vec<Machine>,
    /// The DCS.
    pub store: Store,
    /// The key prefix.
    pub prefix: ClusterPrefix,
    /// The newest commit any primary acknowledged.
    pub acked: u64,
    /// What happened (faults, promotions, resets), for a failing seed.
    pub log: Vec<String>,
    /// The first invariant broken.
    pub violation: Option<String>,
    /// The faults tied to events (fault 8).
    pub rng: Rng,
    /// No fault starts after this.
    pub faults_until: u64,
    /// The lease's ttl.
    pub ttl_ms: u64,
    /// The timelines promotions created, and by whom.
    pub timelines: std::collections::BTreeMap<u32, usize>,
    /// The next job of this kind (on any machine) fails with this error (the driver's tests).
    pub fail_next_job: Option<(rampart_core::observe::JobKind, rampart_core::observe::JobError)>,
    /// Every job started: when, on which machine, what.
    pub jobs_started: Vec<(u64, usize, rampart_core::observe::JobKind)>,
}

/// Member `i`'s name.
pub fn name(i: usize) -> String {
    format!("n{i}")
}

/// The machine of member `name`.
pub fn index(name: &str) -> Option<usize> {
    name.strip_prefix('n')?.parse().ok()
}

impl World {
    /// Now, in virtual milliseconds.
    pub fn now(&self) -> u64 {
        Instant::now().saturating_duration_since(self.start).as_millis() as u64
    }

    /// Records an event at `now`.
    pub fn note(&mut self, what: String) {
        let now = self.now();
        self.log.push(format!("t={now} {what}"));
    }

    /// Records the first violation.
    pub fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            let now = self.now();
            self.violation = Some(format!("t={now}: {what}"));
        }
    }

    /// Whether machines `a` and `b` can talk now.
    pub fn linked(&self, a: usize, b: usize, now: u64) -> bool {
        let up = |i: usize| self.machines[i].link_cut_until <= now && self.machines[i].down_until.is_none();
        up(a) && up(b)
    }

    /// Whether replica `j` receives data from its upstream now.
    pub fn flows(&self, j: usize, now: u64) -> bool {
        let me = &self.machines[j];
        let Some(u) = me.pg.upstream else { return false };
        me.pg.receiving && self.linked(j, u, now) && me.silent_until <= now
    }

    /// One 100 ms step of PostgreSQL: primaries write, WAL receivers connect, drop or receive,
    /// primaries acknowledge what their `synchronous_standby_names` lets them.
    pub fn step_postgres(&mut self, lag: &mut impl FnMut() -> bool) {
        let now = self.now();
        for m in self.machines.iter_mut() {
            if m.pg.running && !m.pg.in_recovery {
                m.pg.wal += WAL_PER_STEP;
            }
        }
        let snap: Vec<Pg> = self.machines.iter().map(|m| m.pg.clone()).collect();
        for j in 0..self.machines.len() {
            let me = &snap[j];
            if !me.running || !me.in_recovery {
                continue;
            }
            let Some(u) = me.upstream.filter(|&u| u != j) else {
                self.machines[j].pg.receiving = false;
                continue;
            };
            let up = &snap[u];
            // The connection closes when the upstream stops or refuses our history; behind a
            // partition it stays open and goes silent.
            if !up.running || !up.can_feed(me.timeline, me.wal) {
                self.machines[j].pg.receiving = false;
                continue;
            }
            if !self.linked(j, u, now) || self.machines[j].silent_until > now {
                continue;
            }
            let m = &mut self.machines[j];
            m.pg.receiving = true;
            let behind = m.lag_until > now || (self.mode.is_active() && lag());
            if up.wal >= me.wal && !behind {
                m.pg.wal = up.wal;
                m.pg.timeline = up.timeline;
                m.pg.history = up.history.clone();
                m.pg.receiver_tli = Some(up.timeline);
            }
            m.pg.last_heard = now;
        }
        // Acknowledgements.
        let snap: Vec<Pg> = self.machines.iter().map(|m| m.pg.clone()).collect();
        for (i, p) in snap.iter().enumerate() {
            if p.running && !p.in_recovery {
                let flushes: Vec<(usize, u64)> = self.streaming_from(i).into_iter().map(|j| (j, snap[j].wal)).collect();
                self.acked = self.acked.max(ack_frontier(p, &flushes));
            }
        }
    }

    /// The standbys connected to machine `i` (a silent connection still counts, as a walsender
    /// lingers until its timeout).
    pub fn streaming_from(&self, i: usize) -> Vec<usize> {
        (0..self.machines.len())
            .filter(|&j| {
                let p = &self.machines[j].pg;
                j != i && p.running && p.in_recovery && p.upstream == Some(i) && p.receiving
            })
            .collect()
    }

    /// The machines that have the virtual address.
    pub fn address_holders(&self) -> Vec<usize> {
        (0..self.machines.len()).filter(|&i| self.machines[i].holds_address).collect()
    }

    /// The writable primaries.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.machines.len()).filter(|&i| self.machines[i].pg.running && !self.machines[i].pg.in_recovery).collect()
    }

    /// Watchdogs: a device whose timeout ran out since its last keepalive resets its machine;
    /// returns the machines reset.
    pub fn fire_watchdogs(&mut self) -> Vec<usize> {
        let now = self.now();
        let fired: Vec<usize> = (0..self.machines.len())
            .filter(|&i| self.machines[i].device.is_some_and(|d| now >= d.last_fed + d.timeout_ms))
            .collect();
        for &i in &fired {
            let d = self.machines[i].device.expect("filtered above");
            self.note(format!(
                "n{i} watchdog fired (fed at {}, timeout {} ms): machine reset",
                d.last_fed, d.timeout_ms
            ));
        }
        fired
    }

    /// Resets machine `i` (watchdog or crash): PostgreSQL is gone without a shutdown, the device
    /// with it, and its agent starts again (as a new process) at `back` at the earliest.
    pub fn reset(&mut self, i: usize, back: u64) {
        let m = &mut self.machines[i];
        m.pg.running = false;
        m.pg.crashed = true;
        m.pg.receiving = false;
        m.pg.receiver_tli = None;
        m.device = None;
        // The address lives in the machine's memory: a reboot comes up without it.
        m.holds_address = false;
        m.epoch += 1;
        m.down_until = Some(back.max(m.frozen_until));
    }
}

/// How PostgreSQL judges standby `j` under `ssn` given who streams (`FIRST`: the first `num`
/// streaming listed ones are `sync`).
pub fn sync_state(ssn: &str, j: usize, streaming: &[usize]) -> String {
    match StandbyNames::parse(ssn).ok().flatten() {
        Some(n) if n.lists(&name(j)) => match n.method {
            Method::Any => "quorum".into(),
            Method::First => {
                let up: Vec<&String> =
                    n.names.iter().filter(|x| streaming.iter().any(|&k| name(k) == **x)).take(n.num).collect();
                if up.iter().any(|x| **x == name(j)) { "sync" } else { "potential" }.into()
            }
        },
        _ => "async".into(),
    }
}

/// Up to where a primary at `me` has acknowledged commits: all of its WAL without synchronous
/// standbys, else the position `num` of the listed streaming standbys have flushed (`FIRST`: the
/// first `num` of them).
fn ack_frontier(me: &Pg, flushes: &[(usize, u64)]) -> u64 {
    let Some(n) = StandbyNames::parse(&me.ssn).ok().flatten() else { return me.wal };
    let listed: Vec<u64> =
        n.names.iter().filter_map(|x| flushes.iter().find(|(k, _)| name(*k) == *x).map(|(_, f)| *f)).collect();
    if n.num == 0 || listed.len() < n.num {
        return 0;
    }
    let f = match n.method {
        Method::First => listed[..n.num].iter().copied().min().unwrap_or(0),
        Method::Any => {
            let mut l = listed;
            l.sort_unstable_by(|a, b| b.cmp(a));
            l[n.num - 1]
        }
    };
    f.min(me.wal)
}
