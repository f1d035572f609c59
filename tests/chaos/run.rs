//! The runner: start the cluster and the workload, inject each scheduled fault, hold it, heal it,
//! wait for convergence, check, and print a summary. Violations are collected, not thrown at the
//! first one, so a long run reports everything it found; a cluster that does not converge ends
//! the run (nothing after it would mean anything).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::checks::{self, Converged};
use crate::cluster::{ChaosCluster, Mode, Timing, MAXIMUM_LAG_ON_FAILOVER};
use crate::schedule::{Fault, Kind, Schedule};
use crate::support::netns::Direction;
use crate::workload::{Ack, Target, Workload, TABLE_DDL};

/// How long a healed cluster may take to converge before the run is declared failed.
const CONVERGE_LIMIT: Duration = Duration::from_secs(120);

/// What one fault did.
#[derive(Clone, Debug)]
pub struct FaultResult {
    pub fault: Fault,
    /// Node the fault hit (the leader or the picked replica), by name.
    pub target: String,
    pub before: Converged,
    pub after: Option<Converged>,
    /// Seconds from the heal to convergence.
    pub converge: Option<f64>,
    /// Seconds since the run's start (the clock of the write log) when the fault began.
    pub start: f64,
    pub note: String,
}

impl FaultResult {
    pub fn failed_over(&self) -> bool {
        self.after.as_ref().is_some_and(|a| a.leader != self.before.leader || a.timeline != self.before.timeline)
    }
}

/// The outcome of a run.
pub struct Report {
    pub mode: Mode,
    pub timing: Timing,
    pub seed: u64,
    pub schedule: Schedule,
    pub results: Vec<FaultResult>,
    pub acks: usize,
    pub probe_acks: usize,
    pub failed_writes: u64,
    pub lost: usize,
    pub max_loss_bytes: i64,
    pub split_brain: Vec<String>,
    pub violations: Vec<String>,
}

/// What to run.
pub struct Options {
    pub mode: Mode,
    pub timing: Timing,
    pub seed: u64,
    pub kinds: Vec<Kind>,
    pub faults: usize,
}

pub async fn run(opts: Options) -> Report {
    let mut c = ChaosCluster::start(opts.mode, opts.timing);
    let schedule = Schedule::generate(opts.seed, &opts.kinds, opts.faults, c.net.partitions(), opts.timing);
    let mut schedule_kinds = schedule.clone();
    if !c.has_disks() {
        println!("[chaos] no tmpfs disks (not root): ReplicaDiskFull is left out");
        schedule_kinds.faults.retain(|f| f.kind != Kind::ReplicaDiskFull);
    }
    let schedule = schedule_kinds;
    println!(
        "[chaos] mode {:?}, {}, seed {} (RAMPART_CHAOS_SEED={} repeats it)",
        opts.mode,
        opts.timing.long_label(),
        opts.seed,
        opts.seed
    );
    print!("{schedule}");

    let mut state = match wait_converged(&c, Duration::from_secs(180)).await {
        Ok((s, _)) => s,
        Err(e) => {
            c.dump_logs();
            panic!("the cluster never formed: {e}");
        }
    };
    c.sql(state.leader).await.expect("leader").batch_execute(TABLE_DDL).await.expect("creating the table");
    let t0 = Instant::now();
    let nodes: Vec<Target> =
        c.nodes.iter().map(|n| Target { host: n.host.addr.to_string(), port: n.config.pg_port }).collect();
    let proxy = Target { host: c.proxy_host.addr.to_string(), port: c.proxy_port };
    let workload = Workload::start(t0, proxy, 3, Duration::from_millis(20), &nodes);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut results = Vec::new();
    let mut violations = Vec::new();
    let mut checked_up_to = 0usize;
    for (n, fault) in schedule.faults.iter().enumerate() {
        let start = t0.elapsed().as_secs_f64();
        let (target, note) = inject(&mut c, &state, fault).await;
        let healed = Instant::now();
        let outcome = wait_converged(&c, CONVERGE_LIMIT).await;
        let (after, converge) = match &outcome {
            Ok((s, _)) => (Some(s.clone()), Some(healed.elapsed().as_secs_f64())),
            Err(_) => (None, None),
        };
        // A write through the proxy acknowledged after convergence: clients are served again.
        let served_from = t0.elapsed().as_secs_f64();
        let served = support_wait(Duration::from_secs(30), || {
            workload.acks().iter().any(|a| !a.is_probe() && a.sent > served_from)
        })
        .await;
        let result = FaultResult {
            fault: fault.clone(),
            target,
            before: state.clone(),
            after: after.clone(),
            converge,
            start,
            note,
        };
        let label = format!("fault {} ({:?} on {}, held {:.1} s)", n + 1, fault.kind, result.target, fault.hold);
        println!(
            "[chaos] {label}: {}{}{}",
            match (&result.after, result.converge) {
                (Some(a), Some(t)) => format!(
                    "converged in {t:.1} s, leader {} on timeline {}{}",
                    c.nodes[a.leader].name(),
                    a.timeline,
                    if result.failed_over() { " (failed over)" } else { "" }
                ),
                _ => "did not converge".into(),
            },
            if result.note.is_empty() { String::new() } else { format!("; {}", result.note) },
            if served { "" } else { "; no write through the proxy for 30 s after convergence" }
        );
        if let Err(e) = &outcome {
            violations.push(format!("(c) {label}: no convergence within {CONVERGE_LIMIT:?}: {e}"));
            results.push(result);
            break;
        }
        if !served {
            violations.push(format!("(c) {label}: no write acknowledged through the proxy within 30 s of convergence"));
        }
        if fault.kind.forbids_failover() && result.failed_over() {
            violations.push(format!(
                "(e) {label}: failover without a fault that warrants one: leader {} timeline {} -> leader {} timeline {}",
                c.nodes[result.before.leader].name(),
                result.before.timeline,
                c.nodes[after.as_ref().unwrap().leader].name(),
                after.as_ref().unwrap().timeline
            ));
        }
        // (a) so far: the writes acknowledged since the last check are on the leader.
        let acks = workload.acks();
        let fresh = &acks[checked_up_to..];
        if opts.mode.is_sync() && !fresh.is_empty() {
            let leader = after.as_ref().unwrap().leader;
            match c.sql(leader).await {
                Some(db) => match checks::missing_on(&db, fresh).await {
                    Ok(m) if !m.is_empty() => violations.push(format!(
                        "(a) {label}: {} acknowledged write(s) missing on the leader {}: {:?}",
                        m.len(),
                        c.nodes[leader].name(),
                        &m[..m.len().min(10)]
                    )),
                    Ok(_) => {}
                    Err(e) => println!("[chaos] {label}: could not check the leader's rows: {e}"),
                },
                None => println!("[chaos] {label}: could not connect to the leader to check its rows"),
            }
        }
        checked_up_to = acks.len();
        state = after.unwrap();
        results.push(result);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let failed_writes = workload.failures();
    let acks = workload.finish().await;
    let name = |port: u16| c.node_by_port(port).map(|i| c.nodes[i].name().to_owned()).unwrap_or(format!("port {port}"));
    let split_brain = checks::split_brain(&acks, name);
    for s in &split_brain {
        violations.push(format!("(b) {s}"));
    }
    let (lost, max_loss_bytes) = final_check(&c, opts.mode, &acks, &mut violations).await;
    let report = Report {
        mode: opts.mode,
        timing: opts.timing,
        seed: opts.seed,
        schedule,
        results,
        acks: acks.iter().filter(|a| !a.is_probe()).count(),
        probe_acks: acks.iter().filter(|a| a.is_probe()).count(),
        failed_writes,
        lost,
        max_loss_bytes,
        split_brain,
        violations,
    };
    print!("{}", summary(&report, &c));
    if !report.violations.is_empty() {
        c.dump_logs();
        // Everything a diagnosis needs: agent and PostgreSQL logs, data directories, the proxy's.
        c.keep_dir();
    }
    report
}

/// Polls `f` every 100 ms without blocking the runtime the workload runs on.
async fn support_wait(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls [`checks::converged`] until it holds or `limit` passes; the state, or the last reason.
async fn wait_converged(c: &ChaosCluster, limit: Duration) -> Result<(Converged, Duration), String> {
    let start = Instant::now();
    loop {
        let r = checks::converged(c).await;
        match r {
            Ok(s) => return Ok((s, start.elapsed())),
            Err(e) if start.elapsed() >= limit => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn sleep_secs(s: f64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_secs_f64(s))
}

/// Injects `fault`, holds it, heals it. Returns the target's name and a note on what happened.
async fn inject(c: &mut ChaosCluster, state: &Converged, fault: &Fault) -> (String, String) {
    let l = state.leader;
    let replicas: Vec<usize> = (0..c.nodes.len()).filter(|&i| i != l).collect();
    let r = replicas[(fault.pick as usize) % replicas.len()];
    let other = replicas.iter().copied().find(|&i| i != r).unwrap_or(r);
    let replica_addrs: Vec<_> = replicas.iter().map(|&i| c.node_addr(i)).collect();
    let mut note = String::new();
    let target = match fault.kind {
        Kind::LeaderCrash
        | Kind::LeaderAgentKill
        | Kind::LeaderPostgresKill
        | Kind::LeaderAgentFreeze
        | Kind::LeaderPostgresFreeze
        | Kind::LeaderEtcdCut
        | Kind::LeaderEtcdOneWayOut
        | Kind::LeaderEtcdOneWayIn
        | Kind::LeaderReplicaCut
        | Kind::LeaderIsolated
        | Kind::LeaderEtcdMemberCut
        | Kind::BackToBackFailovers => l,
        _ => r,
    };
    let hold = fault.hold;
    match fault.kind {
        Kind::LeaderCrash | Kind::ReplicaCrash => {
            c.crash(target);
            sleep_secs(hold).await;
            c.start_agent(target);
        }
        Kind::LeaderAgentKill => {
            c.kill_agent(l);
            sleep_secs(hold).await;
            c.start_agent(l);
        }
        Kind::LeaderPostgresKill => {
            c.kill_postgres(l);
            sleep_secs(hold).await;
        }
        Kind::LeaderAgentFreeze | Kind::ReplicaAgentFreeze => {
            c.freeze_agent(target);
            sleep_secs(hold).await;
            c.thaw_all();
        }
        Kind::LeaderPostgresFreeze | Kind::ReplicaPostgresFreeze => {
            c.freeze_postgres(target);
            sleep_secs(hold).await;
            c.thaw_all();
        }
        Kind::LeaderEtcdCut | Kind::LeaderEtcdOneWayOut | Kind::LeaderEtcdOneWayIn => {
            let dir = match fault.kind {
                Kind::LeaderEtcdCut => Direction::Both,
                Kind::LeaderEtcdOneWayOut => Direction::Outgoing,
                _ => Direction::Incoming,
            };
            c.cut_etcd(l, &replica_addrs, dir);
            sleep_secs(hold).await;
            c.heal_network();
        }
        Kind::LeaderEtcdMemberCut => {
            // Only the members' peer links: the leader's agent can still reach the other two
            // members' client ports, and must move to them before its lease runs out.
            let peer_ports: Vec<u16> = c.etcd.iter().map(|e| e.peer_port()).collect();
            c.net.cut_ports(&c.nodes[l].host, &replica_addrs, &peer_ports, Direction::Both);
            note = format!("{} cut off from the other members", c.etcd[l].name());
            sleep_secs(hold).await;
            c.heal_network();
        }
        Kind::LeaderReplicaCut => {
            c.cut_all_but_etcd(l, &replica_addrs, Direction::Both);
            sleep_secs(hold).await;
            c.heal_network();
        }
        Kind::LeaderIsolated => {
            let mut peers = replica_addrs.clone();
            peers.push(c.proxy_host.addr);
            c.cut(l, &peers, Direction::Both);
            sleep_secs(hold).await;
            c.heal_network();
        }
        Kind::ReplicaOneWayOut => {
            let leader_addr = c.node_addr(l);
            c.cut_all_but_etcd(r, &[leader_addr], Direction::Outgoing);
            sleep_secs(hold).await;
            c.heal_network();
        }
        Kind::EtcdDown | Kind::EtcdBlip => {
            c.kill_etcd(&[0, 1, 2]);
            sleep_secs(hold).await;
            c.start_etcd(&[0, 1, 2]);
        }
        Kind::EtcdMemberKill => {
            c.kill_etcd(&[l]);
            note = format!("{} (beside the leader) killed", c.etcd[l].name());
            sleep_secs(hold).await;
            c.start_etcd(&[l]);
        }
        Kind::EtcdRaftLeaderKill => {
            let m = c.etcd_raft_leader().unwrap_or(l);
            c.kill_etcd(&[m]);
            note = format!("raft leader {} killed", c.etcd[m].name());
            sleep_secs(hold).await;
            c.start_etcd(&[m]);
        }
        Kind::EtcdQuorumLoss => {
            c.kill_etcd(&[l, r]);
            note = format!("{} and {} killed", c.etcd[l].name(), c.etcd[r].name());
            sleep_secs(hold).await;
            c.start_etcd(&[l, r]);
        }
        Kind::EtcdSlow => {
            let until = Instant::now() + Duration::from_secs_f64(hold);
            while Instant::now() < until {
                for m in 0..c.etcd.len() {
                    c.freeze_etcd(m);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
                c.thaw_all();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Kind::ReplicaDiskFull => {
            if !c.fill_disk(r) {
                note = "could not fill the disk".into();
            }
            sleep_secs(hold).await;
            c.free_disk(r);
        }
        Kind::BackToBackFailovers => {
            c.crash(l);
            let mut second = None;
            let _ = support_wait(Duration::from_secs(45), || {
                second = c.leader().filter(|&n| n != l);
                second.is_some()
            })
            .await;
            match second {
                Some(s) => {
                    c.crash(s);
                    note = format!("then {} crashed as soon as it led", c.nodes[s].name());
                    sleep_secs(hold).await;
                    c.start_agent(s);
                }
                None => note = "no second leader within 45 s".into(),
            }
            c.start_agent(l);
        }
        Kind::SwitchoverDuringFault => {
            // The replica's machine is gone; once the leader has had a few cycles to notice (its
            // sync key no longer counts on that replica), the operator moves the leader to the
            // other replica.
            c.crash(r);
            sleep_secs(3.0).await;
            let out = c.switchover(l, other);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            // The topology tables go to stdout; the verdict is the last other line.
            let verdict = stderr
                .lines()
                .chain(stdout.lines())
                .map(str::trim)
                .rfind(|l| !l.is_empty() && !l.starts_with('+') && !l.starts_with('|'))
                .unwrap_or("")
                .to_owned();
            note = format!(
                "switchover to {} while {} was down: {} ({verdict})",
                c.nodes[other].name(),
                c.nodes[r].name(),
                if out.status.success() { "done" } else { "refused" }
            );
            sleep_secs(hold).await;
            c.start_agent(r);
        }
    }
    let target = match fault.kind {
        k if k.is_etcd() => "etcd".to_owned(),
        _ => c.nodes[target].name().to_owned(),
    };
    (target, note)
}

/// After the last fault: the cluster converges once more, every replica replays everything the
/// primary has, and (a) / (d) are checked over every acknowledged write on every member.
/// Returns (lost writes on the primary, largest loss in bytes on one timeline).
async fn final_check(c: &ChaosCluster, mode: Mode, acks: &[Ack], violations: &mut Vec<String>) -> (usize, i64) {
    let state = match wait_converged(c, CONVERGE_LIMIT).await {
        Ok((s, _)) => s,
        Err(e) => {
            violations.push(format!("(c) the cluster did not converge at the end: {e}"));
            return (0, 0);
        }
    };
    let primary = c.sql(state.leader).await.expect("connecting to the final primary");
    let end: i64 = primary
        .query_one("SELECT (pg_current_wal_lsn() - '0/0')::bigint", &[])
        .await
        .expect("final primary position")
        .get(0);
    let lost: BTreeSet<(i32, i64)> =
        checks::missing_on(&primary, acks).await.expect("reading the final primary's rows").into_iter().collect();
    for i in (0..c.nodes.len()).filter(|&i| i != state.leader) {
        let db = c.sql(i).await.expect("connecting to a replica");
        let caught_up =
            crate::support::wait_until_async(Duration::from_secs(60), Duration::from_millis(200), || async {
                db.query_one("SELECT (pg_last_wal_replay_lsn() - '0/0')::bigint >= $1", &[&end])
                    .await
                    .map(|r| r.get::<_, bool>(0))
                    .unwrap_or(false)
            })
            .await;
        if !caught_up {
            violations
                .push(format!("(c) {} did not replay up to the primary's position within 60 s", c.nodes[i].name()));
            continue;
        }
        let missing = checks::missing_on(&db, acks).await.expect("reading a replica's rows");
        let extra: Vec<_> = missing.iter().filter(|m| !lost.contains(m)).collect();
        if mode.is_sync() && !missing.is_empty() {
            violations.push(format!(
                "(a) {} acknowledged write(s) missing on the replica {}: {:?}",
                missing.len(),
                c.nodes[i].name(),
                &missing[..missing.len().min(10)]
            ));
        } else if !extra.is_empty() {
            violations.push(format!(
                "(c) the replica {} lacks {} write(s) its primary has: {:?}",
                c.nodes[i].name(),
                extra.len(),
                &extra[..extra.len().min(10)]
            ));
        }
    }
    let mut max_loss = 0;
    if !lost.is_empty() {
        if mode.is_sync() {
            let sample: Vec<_> = lost.iter().take(10).collect();
            violations.push(format!(
                "(a) {} acknowledged write(s) missing on the final primary {}: {sample:?}",
                lost.len(),
                c.nodes[state.leader].name()
            ));
        } else {
            for (tl, bytes) in checks::loss_bytes(acks, &lost) {
                println!("[chaos] asynchronous mode: lost {bytes} bytes of acknowledged WAL on timeline {tl}");
                max_loss = max_loss.max(bytes);
                if bytes > MAXIMUM_LAG_ON_FAILOVER as i64 {
                    violations.push(format!(
                        "(d) {bytes} bytes of acknowledged WAL on timeline {tl} lost, more than \
                         maximum_lag_on_failover ({MAXIMUM_LAG_ON_FAILOVER})"
                    ));
                }
            }
        }
    }
    (lost.len(), max_loss)
}

/// The summary table: per fault kind, then totals, then every violation.
pub fn summary(r: &Report, c: &ChaosCluster) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n===== chaos summary: mode {:?}, {}, seed {} =====", r.mode, r.timing.long_label(), r.seed);
    let _ = writeln!(s, "  #  at s    fault                     target  hold s  failover  converge s  note");
    for (i, f) in r.results.iter().enumerate() {
        let _ = writeln!(
            s,
            "{:>3}  {:>6.1}  {:<24}  {:<6}  {:>6.1}  {:<8}  {:>10}  {}",
            i + 1,
            f.start,
            format!("{:?}", f.fault.kind),
            f.target,
            f.fault.hold,
            if f.failed_over() { "yes" } else { "no" },
            f.converge.map(|t| format!("{t:.1}")).unwrap_or("-".into()),
            f.note
        );
    }
    let mut by_kind: BTreeMap<Kind, Vec<&FaultResult>> = BTreeMap::new();
    for f in &r.results {
        by_kind.entry(f.fault.kind).or_default().push(f);
    }
    let _ = writeln!(s, "\n  fault kind                 count  failovers  converge s (median / max)");
    for (k, fs) in &by_kind {
        let mut t: Vec<f64> = fs.iter().filter_map(|f| f.converge).collect();
        t.sort_by(f64::total_cmp);
        let _ = writeln!(
            s,
            "  {:<24}  {:>5}  {:>9}  {:>6.1} / {:>5.1}",
            format!("{k:?}"),
            fs.len(),
            fs.iter().filter(|f| f.failed_over()).count(),
            t.get(t.len() / 2).copied().unwrap_or(0.0),
            t.last().copied().unwrap_or(0.0)
        );
    }
    let mut all: Vec<f64> = r.results.iter().filter_map(|f| f.converge).collect();
    all.sort_by(f64::total_cmp);
    let _ = writeln!(s, "\n  faults injected                      {}", r.results.len());
    let _ = writeln!(s, "  acknowledged writes (proxy / probe)  {} / {}", r.acks, r.probe_acks);
    let _ = writeln!(s, "  writes failed or unanswered (proxy)  {}", r.failed_writes);
    let _ = writeln!(
        s,
        "  acknowledged writes lost             {}{}",
        r.lost,
        if r.mode.is_sync() {
            String::new()
        } else {
            format!(" (at most {} bytes of WAL on one timeline)", r.max_loss_bytes)
        }
    );
    let _ = writeln!(s, "  intervals with two writable primaries {}", r.split_brain.len());
    let _ = writeln!(
        s,
        "  convergence after heal (median / max) {:.1} s / {:.1} s",
        all.get(all.len() / 2).copied().unwrap_or(0.0),
        all.last().copied().unwrap_or(0.0)
    );
    let _ = writeln!(s, "  violations                           {}", r.violations.len());
    for v in &r.violations {
        let _ = writeln!(s, "    {v}");
    }
    let _ = writeln!(s, "  (logs in {})", c.dir().display());
    s
}
