//! What the suite holds the cluster to, over the log of acknowledged writes and against the
//! databases themselves:
//!
//! * (a) every acknowledged write is on the primary and every replica ([`missing_on`]);
//! * (b) never two writable primaries ([`split_brain`]): a timeline is written by one node only,
//!   and no write is acknowledged on a timeline after a write on a newer timeline was — judged on
//!   the test's own clock, by when statements were sent and answered, so a finding is certain;
//! * (c) convergence ([`converged`]): one leader, every other member streaming from it on its
//!   timeline through its replication slot, and a write acknowledged through the proxy;
//! * (d) in asynchronous mode, how much acknowledged WAL a failover threw away ([`loss_bytes`]);
//! * (e) no failover without a fault: checked by the runner from [`Converged`] before and after.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use crate::cluster::ChaosCluster;
use crate::workload::Ack;

/// (b) Findings of two writable primaries, one line each; `name` names a node by its port.
pub fn split_brain(acks: &[Ack], name: impl Fn(u16) -> String) -> Vec<String> {
    let mut out = Vec::new();
    let mut writers: BTreeMap<i32, BTreeSet<u16>> = BTreeMap::new();
    let mut first_recv: BTreeMap<i32, f64> = BTreeMap::new();
    for a in acks {
        writers.entry(a.timeline).or_default().insert(a.port);
        let e = first_recv.entry(a.timeline).or_insert(f64::MAX);
        *e = e.min(a.recv);
    }
    for (tl, ports) in &writers {
        if ports.len() > 1 {
            let names: Vec<String> = ports.iter().map(|p| name(*p)).collect();
            out.push(format!("timeline {tl} was written by more than one node: {}", names.join(", ")));
        }
    }
    // For each timeline, the first moment any newer timeline had acknowledged a write.
    let mut newer_since: BTreeMap<i32, f64> = BTreeMap::new();
    let mut best = f64::MAX;
    for (tl, t) in first_recv.iter().rev() {
        newer_since.insert(*tl, best);
        best = best.min(*t);
    }
    let mut late: BTreeMap<(i32, u16), (usize, f64, f64)> = BTreeMap::new();
    for a in acks {
        if a.sent > newer_since[&a.timeline] {
            let e = late.entry((a.timeline, a.port)).or_insert((0, f64::MAX, 0.0));
            e.0 += 1;
            e.1 = e.1.min(a.sent);
            e.2 = e.2.max(a.recv);
        }
    }
    for ((tl, port), (n, from, to)) in late {
        out.push(format!(
            "{} acknowledged {n} write(s) on timeline {tl} sent between {from:.2} s and {to:.2} s, after a newer \
             timeline had acknowledged one at {:.2} s",
            name(port),
            newer_since[&tl]
        ));
    }
    out
}

/// (a) The acknowledged writes in `acks` that `db` does not have.
pub async fn missing_on(db: &Client, acks: &[Ack]) -> Result<Vec<(i32, i64)>, tokio_postgres::Error> {
    let mut by_client: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for a in acks {
        by_client.entry(a.client).or_default().push(a.seq);
    }
    let mut out = Vec::new();
    for (client, seqs) in by_client {
        let rows = db
            .query(
                "SELECT s FROM unnest($2::bigint[]) s WHERE NOT EXISTS \
                 (SELECT 1 FROM chaos WHERE client = $1 AND seq = s)",
                &[&client, &seqs],
            )
            .await?;
        out.extend(rows.iter().map(|r| (client, r.get::<_, i64>(0))));
    }
    Ok(out)
}

/// (d) For the lost writes among `acks`, per timeline: WAL bytes from the last write of that
/// timeline that survived (before the first lost one) to the last lost one — how far behind the
/// promoted member was, as far as acknowledged writes can tell.
pub fn loss_bytes(acks: &[Ack], lost: &BTreeSet<(i32, i64)>) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    let timelines: BTreeSet<i32> =
        acks.iter().filter(|a| lost.contains(&(a.client, a.seq))).map(|a| a.timeline).collect();
    for tl in timelines {
        let on_tl: Vec<&Ack> = acks.iter().filter(|a| a.timeline == tl).collect();
        let lost_lsns: Vec<i64> = on_tl.iter().filter(|a| lost.contains(&(a.client, a.seq))).map(|a| a.lsn).collect();
        let (first_lost, last_lost) = (*lost_lsns.iter().min().unwrap(), *lost_lsns.iter().max().unwrap());
        let kept_before = on_tl
            .iter()
            .filter(|a| !lost.contains(&(a.client, a.seq)) && a.lsn < first_lost)
            .map(|a| a.lsn)
            .max()
            .unwrap_or(first_lost);
        out.insert(tl, last_lost - kept_before);
    }
    out
}

/// The cluster as (c) wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converged {
    pub leader: usize,
    pub timeline: i32,
}

/// (c) Whether the cluster has converged: the DCS names a leader whose PostgreSQL is a primary;
/// every other member is in recovery, streaming from that leader's address and port on its
/// timeline, through an active physical slot named after it. The reason when not.
pub async fn converged(c: &ChaosCluster) -> Result<Converged, String> {
    let leader = c.leader().ok_or("the DCS names no leader")?;
    let lname = c.nodes[leader].name().to_owned();
    let db = c.sql(leader).await.ok_or_else(|| format!("cannot connect to the leader {lname}"))?;
    let row = db
        .query_one(
            "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN 0 ELSE \
             ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END",
            &[],
        )
        .await
        .map_err(|e| format!("asking the leader {lname}: {e}"))?;
    if row.get::<_, bool>(0) {
        return Err(format!("the leader {lname} is still in recovery"));
    }
    let timeline: i32 = row.get(1);
    let slots: Vec<String> = db
        .query("SELECT slot_name::text FROM pg_replication_slots WHERE active AND slot_type = 'physical'", &[])
        .await
        .map_err(|e| format!("reading the leader's slots: {e}"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (i, n) in c.nodes.iter().enumerate() {
        if i == leader {
            continue;
        }
        let db = c.sql(i).await.ok_or_else(|| format!("cannot connect to {}", n.name()))?;
        let row = db
            .query_one(
                "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver), \
                 (SELECT received_tli FROM pg_stat_wal_receiver), (SELECT sender_port FROM pg_stat_wal_receiver)",
                &[],
            )
            .await
            .map_err(|e| format!("asking {}: {e}", n.name()))?;
        if !row.get::<_, bool>(0) {
            return Err(format!("{} is a primary too", n.name()));
        }
        let status: Option<String> = row.get(1);
        let tli: Option<i32> = row.get(2);
        let sender: Option<i32> = row.get(3);
        if status.as_deref() != Some("streaming")
            || tli != Some(timeline)
            || sender != Some(i32::from(c.nodes[leader].config.pg_port))
        {
            return Err(format!(
                "{} is not streaming from {lname} on timeline {timeline} (receiver {status:?}, timeline {tli:?}, \
                 sender port {sender:?})",
                n.name()
            ));
        }
        let slot = rampart_core::slots::slot_name_from_member_name(n.name());
        if !slots.contains(&slot) {
            return Err(format!("the leader has no active slot {slot} for {} (active: {slots:?})", n.name()));
        }
    }
    Ok(Converged { leader, timeline })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(client: i32, seq: i64, sent: f64, recv: f64, port: u16, timeline: i32, lsn: i64) -> Ack {
        Ack { client, seq, sent, recv, port, timeline, lsn }
    }

    fn name(p: u16) -> String {
        format!("n{p}")
    }

    #[test]
    fn a_clean_handover_is_not_split_brain() {
        let acks = vec![
            ack(1, 1, 0.0, 0.1, 1, 1, 100),
            ack(1, 2, 0.2, 0.3, 1, 1, 200),
            // Sent before the new timeline's first answer: may have committed first.
            ack(2, 1, 0.9, 1.6, 1, 1, 300),
            ack(1, 3, 1.0, 1.5, 2, 2, 400),
        ];
        assert!(split_brain(&acks, name).is_empty(), "{:?}", split_brain(&acks, name));
    }

    #[test]
    fn an_old_primary_answering_after_the_new_one_is_split_brain() {
        let acks = vec![ack(1, 1, 0.0, 0.1, 1, 1, 100), ack(1, 2, 1.0, 1.1, 2, 2, 400), ack(2, 1, 1.2, 1.3, 1, 1, 200)];
        let f = split_brain(&acks, name);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("n1 acknowledged 1 write(s) on timeline 1"), "{f:?}");
    }

    #[test]
    fn two_nodes_on_one_timeline_is_split_brain() {
        let acks = vec![ack(1, 1, 0.0, 0.1, 1, 2, 100), ack(2, 1, 5.0, 5.1, 3, 2, 100)];
        let f = split_brain(&acks, name);
        assert!(f.iter().any(|l| l.contains("timeline 2 was written by more than one node")), "{f:?}");
    }

    #[test]
    fn loss_is_measured_from_the_last_surviving_write() {
        let acks =
            vec![ack(1, 1, 0.0, 0.1, 1, 1, 1000), ack(1, 2, 0.2, 0.3, 1, 1, 1500), ack(1, 3, 0.4, 0.5, 1, 1, 4000)];
        let lost: BTreeSet<(i32, i64)> = [(1, 2), (1, 3)].into_iter().collect();
        assert_eq!(loss_bytes(&acks, &lost)[&1], 3000);
    }
}
