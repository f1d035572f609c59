//! Parser for PostgreSQL's timeline history files (`pg_wal/<TLI>.history`), which a promotion
//! writes and the agent copies into the DCS `history` key.
//!
//! Invariant: the parser is pure and strict about the first two fields (a wrong switch point
//! would mislead pg_rewind decisions), lenient about the free-text reason.

use std::path::{Path, PathBuf};

use rampart_core::model::HistoryEntry;
use rampart_core::{Lsn, Timeline};

use crate::error::{PgError, Result};

/// Parses a history file: one `<parent TLI>\t<switch LSN>\t<reason>` line per ancestor timeline;
/// blank lines and `#` comments are skipped.
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (tli, rest) = next_field(line);
        let timeline: Timeline = tli.parse().map_err(|_| format!("line {}: bad timeline {tli:?}", n + 1))?;
        let (lsn, reason) = next_field(rest);
        let lsn: Lsn = lsn.parse().map_err(|_| format!("line {}: bad switch point {lsn:?}", n + 1))?;
        let reason = reason.to_string();
        out.push(HistoryEntry { timeline, lsn, reason, timestamp: None, new_leader: None });
    }
    Ok(out)
}

/// Splits off the first whitespace-separated field; the rest comes back trimmed.
fn next_field(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

/// Path of the history file for `timeline`.
pub fn history_path(data_dir: &Path, timeline: Timeline) -> PathBuf {
    data_dir.join("pg_wal").join(format!("{timeline:08X}.history"))
}

/// Reads the history of `timeline` from the data directory. Timeline 1 has no history file and
/// no ancestors, so it yields an empty list.
pub fn read_history(data_dir: &Path, timeline: Timeline) -> Result<Vec<HistoryEntry>> {
    if timeline <= 1 {
        return Ok(Vec::new());
    }
    let path = history_path(data_dir, timeline);
    let text = std::fs::read_to_string(&path).map_err(|e| PgError::io("reading", &path, e))?;
    parse_history(&text).map_err(|reason| PgError::History { path, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postgres_format() {
        let text = "1\t0/3000060\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n";
        let h = parse_history(text).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].timeline, 1);
        assert_eq!(h[0].lsn, Lsn(0x3000060));
        assert_eq!(h[0].reason, "no recovery target specified");
        assert_eq!(h[1].reason, "at restore point \"x\"");
        assert_eq!(h[1].timestamp, None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_history("x\t0/1\tr").is_err());
        assert!(parse_history("1\t01\tr").is_err());
        assert_eq!(parse_history("# comment\n").unwrap(), vec![]);
        assert_eq!(parse_history("3\t0/10").unwrap()[0].reason, "");
        assert_eq!(parse_history("4  0/10   two  spaces ").unwrap()[0].reason, "two  spaces");
    }

    #[test]
    fn reads_from_pg_wal() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("pg_wal")).unwrap();
        std::fs::write(d.path().join("pg_wal/0000000A.history"), "9\t1/0\tpromoted\n").unwrap();
        assert_eq!(history_path(d.path(), 10).file_name().unwrap(), "0000000A.history");
        assert_eq!(read_history(d.path(), 10).unwrap()[0].lsn, Lsn(1 << 32));
        assert!(read_history(d.path(), 1).unwrap().is_empty());
        assert!(read_history(d.path(), 11).is_err());
    }
}
