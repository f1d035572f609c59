//! Parser for `pg_controldata` output (run with `LANG=C`), and the classification of a data
//! directory built on it. The parser is pure; [`crate::tools::controldata`] runs the program.
//!
//! Invariant: a directory is [`DataDir::Empty`] only when it holds nothing worth keeping, and
//! anything that is neither empty nor readable as a cluster is [`DataDir::Invalid`], which the core
//! never wipes on its own.

use std::collections::BTreeMap;
use std::path::Path;

use rampart_core::hot_standby::{Setting, Values};
use rampart_core::observe::{ClusterState, ControlData};
use rampart_core::{DataDir, Lsn};

/// `pg_controldata`'s `Key: value` lines as a map (keys and values trimmed).
pub fn parse_controldata_map(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect()
}

/// The fields the core needs, or what is missing or malformed.
pub fn parse_controldata(text: &str) -> Result<ControlData, String> {
    let map = parse_controldata_map(text);
    let field = |k: &str| map.get(k).map(String::as_str).ok_or_else(|| format!("no {k:?} in pg_controldata output"));
    let sysid = field("Database system identifier")?;
    if sysid.is_empty() || !sysid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad system identifier {sysid:?}"));
    }
    let timeline = field("Latest checkpoint's TimeLineID")?;
    let timeline = timeline.parse().map_err(|_| format!("bad timeline {timeline:?}"))?;
    let lsn = field("Latest checkpoint location")?;
    let checkpoint_lsn: Lsn = lsn.parse().map_err(|e| format!("{e}"))?;
    // Older or unusual outputs may lack it; 0 means "unset", as in the control file itself.
    let min_recovery_timeline = map.get("Min recovery ending loc's timeline").and_then(|v| v.parse().ok()).unwrap_or(0);
    let min_recovery_lsn = map.get("Minimum recovery ending location").and_then(|v| v.parse().ok()).unwrap_or(Lsn(0));
    Ok(ControlData {
        sysid: sysid.to_string(),
        state: ClusterState::parse(field("Database cluster state")?),
        timeline,
        checkpoint_lsn,
        min_recovery_timeline,
        min_recovery_lsn,
        hot_standby: hot_standby_values(&map),
    })
}

/// The hot-standby-critical settings recorded in the control file; a line that is missing or
/// not a number is left out (and then never compared), as Patroni does with a warning.
fn hot_standby_values(map: &BTreeMap<String, String>) -> Values {
    Values::from_pairs(Setting::ALL.into_iter().filter_map(|s| match map.get(s.controldata_label()) {
        Some(v) => v.parse().ok().map(|v| (s, v)),
        None => {
            tracing::warn!("{} is missing from pg_controldata output", s.controldata_label());
            None
        }
    }))
}

/// Whether a data directory has nothing worth keeping: missing, or holding only hidden entries
/// and `lost+found` (what a fresh mount point has). Errors reading it are returned, not guessed.
pub fn is_empty_dir(dir: &Path) -> std::io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') || name == "lost+found") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Classifies a data directory from its listing and `pg_controldata`'s result.
pub fn classify(empty: std::io::Result<bool>, control: impl FnOnce() -> Result<String, String>) -> DataDir {
    match empty {
        Ok(true) => DataDir::Empty,
        Err(e) => DataDir::Invalid(format!("cannot list the data directory: {e}")),
        Ok(false) => match control().and_then(|text| parse_controldata(&text)) {
            Ok(c) => DataDir::Initialized(c),
            Err(reason) => DataDir::Invalid(reason),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from PostgreSQL 15.x right after initdb (`LANG=C pg_controldata`).
    const SAMPLE: &str = include_str!("testdata/controldata_pg15_shut_down.txt");

    #[test]
    fn parses_real_output() {
        let c = parse_controldata(SAMPLE).unwrap();
        assert_eq!(c.sysid, "7710601456285547349");
        assert_eq!(c.state, ClusterState::ShutDown);
        assert_eq!(c.timeline, 1);
        assert_eq!(c.checkpoint_lsn, "0/17414F8".parse().unwrap());
        assert_eq!(c.hot_standby.get(Setting::MaxConnections), Some(100));
        assert_eq!(c.hot_standby.get(Setting::MaxWorkerProcesses), Some(8));
        assert_eq!(c.hot_standby.get(Setting::MaxWalSenders), Some(10));
        assert_eq!(c.hot_standby.get(Setting::MaxPreparedTransactions), Some(0));
        assert_eq!(c.hot_standby.get(Setting::MaxLocksPerTransaction), Some(64));
        let map = parse_controldata_map(SAMPLE);
        assert_eq!(map["Data page checksum version"], "1");
        assert_eq!(map["Latest checkpoint's oldestCommitTsXid"], "0");
    }

    #[test]
    fn states_after_crash_and_in_recovery() {
        let crashed = SAMPLE.replace("shut down\n", "in production\n");
        assert_eq!(parse_controldata(&crashed).unwrap().state, ClusterState::InProduction);
        let replica = SAMPLE.replace("shut down\n", "shut down in recovery\n");
        assert_eq!(parse_controldata(&replica).unwrap().state, ClusterState::ShutDownInRecovery);
        // A replica that followed a promotion: its last restartpoint is still on timeline 1,
        // its replay reached timeline 2.
        let followed =
            replica.replace("Min recovery ending loc's timeline:   0", "Min recovery ending loc's timeline:   2");
        let c = parse_controldata(&followed).unwrap();
        assert_eq!((c.timeline, c.min_recovery_timeline, c.wal_timeline()), (1, 2, 2));
        assert_eq!(parse_controldata(SAMPLE).unwrap().wal_timeline(), 1, "a primary's is its checkpoint's");
    }

    #[test]
    fn rejects_truncated_or_garbled_output() {
        assert!(parse_controldata("").is_err());
        assert!(parse_controldata(&SAMPLE.replace("7710601456285547349", "zz")).is_err());
        assert!(parse_controldata(&SAMPLE.replace("0/17414F8\n", "nope\n")).is_err());
        let no_tli: String = SAMPLE.lines().filter(|l| !l.contains("TimeLineID")).map(|l| format!("{l}\n")).collect();
        assert!(parse_controldata(&no_tli).is_err());
    }

    #[test]
    fn classification() {
        assert_eq!(classify(Ok(true), || unreachable!()), DataDir::Empty);
        assert!(matches!(classify(Ok(false), || Ok(SAMPLE.to_string())), DataDir::Initialized(_)));
        assert!(matches!(classify(Ok(false), || Err("no pg_control".into())), DataDir::Invalid(_)));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(matches!(classify(Err(denied), || unreachable!()), DataDir::Invalid(_)));
    }

    #[test]
    fn empty_dirs() {
        let d = tempfile::tempdir().unwrap();
        assert!(is_empty_dir(&d.path().join("missing")).unwrap());
        assert!(is_empty_dir(d.path()).unwrap());
        std::fs::create_dir(d.path().join("lost+found")).unwrap();
        std::fs::write(d.path().join(".keep"), "").unwrap();
        assert!(is_empty_dir(d.path()).unwrap());
        std::fs::write(d.path().join("PG_VERSION"), "15\n").unwrap();
        assert!(!is_empty_dir(d.path()).unwrap());
    }
}
