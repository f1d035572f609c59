//! WAL segments for the archive tests: which segment a stopped server needs first, which is the
//! oldest a running server still holds, and a leader made to recycle the segments a stopped
//! replica needs, so that only the WAL archive can give them back.
//!
//! A segment's file name is 24 hex digits: timeline, then log and segment (e.g.
//! `000000010000000000000003`); with 16 MB segments, "log * 256 + seg" numbers a timeline's
//! segments in order, which is how the tests look for gaps in an archive.

use std::path::Path;
use std::time::Duration;

use super::client::{query_text, sql};
use super::config::NodeConfig;

/// Member `cfg` keeps as little WAL as it may, among the bootstrap's dynamic settings: no extra
/// WAL (`wal_keep_size: 0`), `max_wal_size` and `min_wal_size` of 32 MB (few segments kept for
/// reuse), and no replication slots (`use_slots: false`), which would keep the segments their
/// replicas have not received.
pub fn keep_little_wal(cfg: &mut NodeConfig) {
    for (k, v) in [("wal_keep_size", "0"), ("max_wal_size", "'32MB'"), ("min_wal_size", "'32MB'")] {
        cfg.dcs_parameters.push((k.into(), v.into()));
    }
    cfg.dcs_yaml.push_str("      use_slots: false\n");
}

/// The WAL segment a stopped server needs first at its next start (its control file's REDO).
pub fn redo_segment(data_dir: &Path) -> String {
    let out = std::process::Command::new(super::pg_bin_dir().join("pg_controldata"))
        .arg(data_dir)
        .env("LC_ALL", "C")
        .output()
        .expect("pg_controldata runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint's REDO WAL file:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no REDO WAL file in pg_controldata's output: {text}"))
}

/// The oldest WAL segment file name in a server's `pg_wal`.
pub async fn oldest_segment(port: u16) -> Option<String> {
    query_text(port, "SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'").await
}

/// Segment number (log * 256 + seg) of a 24-digit WAL file name.
pub fn segment_number(name: &str) -> u64 {
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&name[r], 16).unwrap();
    hex(8..16) * 256 + hex(16..24)
}

/// (timeline, segment number) of a WAL file name that starts with 24 hex digits.
pub fn segment_id(name: &str) -> (u32, u64) {
    (u32::from_str_radix(&name[..8], 16).unwrap(), segment_number(&name[..24]))
}

/// Makes the server at `port` (a leader) recycle the WAL segment `needed` and every one before
/// it: twelve rounds of `write(n)` (n = 1..=12, SQL the test's rows come from), `pg_switch_wal()`
/// and `CHECKPOINT`, then checkpoints until the oldest segment in its `pg_wal` is after `needed`.
/// The test fails if the leader still holds `needed` after a minute. The leader is expected to
/// keep little WAL ([`keep_little_wal`]).
pub async fn recycle_past(port: u16, needed: &str, write: impl Fn(u32) -> String) {
    for n in 1..=12 {
        sql(port, &write(n)).await;
        sql(port, "SELECT pg_switch_wal()").await;
        sql(port, "CHECKPOINT").await;
    }
    // A checkpoint keeps the segments the archiver has not archived yet: checkpoints go on until
    // it has caught up and `needed` is gone.
    let recycled = super::wait_until_async(Duration::from_secs(60), Duration::from_millis(500), || async {
        sql(port, "CHECKPOINT").await;
        oldest_segment(port).await.is_some_and(|oldest| oldest.as_str() > needed)
    })
    .await;
    assert!(recycled, "the leader still holds {needed}: its oldest segment is {:?}", oldest_segment(port).await);
}
