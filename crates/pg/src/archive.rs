//! The WAL archive around a rewind, as Patroni handles it (`patroni/postgresql/rewind.py`):
//! * WAL segments a former primary completed but had not archived yet (`archive_status/*.ready`,
//!   say it crashed with its archiver behind) are archived with its `archive_command` before
//!   pg_rewind runs, because pg_rewind replaces its `pg_wal` with the new leader's and the
//!   promoted replica never archives the old timeline's segments (`archive_mode = on`): without
//!   this the archive would keep a gap before the timeline switch for good;
//! * pg_rewind fetches the WAL it needs from the archive (`--restore-target-wal`) when the member
//!   has a `restore_command`, so a former primary that recycled the segments back to the fork
//!   still rejoins without a new copy.
//!
//! Invariant: a segment is marked archived (`.ready` becomes `.done`) only after its
//! `archive_command` exited 0; a failure stops at that segment (archives keep order) and is
//! logged, and the rewind goes on (as in Patroni: the new leader's WAL is what the member needs).

use std::path::Path;

use crate::settings::PgSettings;

/// The value of a parameter among `settings.parameters`, case-insensitively.
fn parameter<'a>(settings: &'a PgSettings, name: &str) -> Option<&'a str> {
    settings.parameters.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The `archive_command` in force when the server archives (`archive_mode` `on` or `always`).
pub fn archive_command(settings: &PgSettings) -> Option<&str> {
    let mode = parameter(settings, "archive_mode")?.trim().to_ascii_lowercase();
    if !matches!(mode.as_str(), "on" | "always" | "true" | "yes" | "1") {
        return None;
    }
    parameter(settings, "archive_command").map(str::trim).filter(|c| !c.is_empty() && *c != "(disabled)")
}

/// The `restore_command` the member recovers with: its recovery settings' (the agent puts a
/// `restore_command` among the parameters there too, as Patroni's `_adjust_recovery_parameters`
/// does, so there is one place to read it from).
pub fn restore_command(settings: &PgSettings) -> Option<&str> {
    settings
        .recovery_conf
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("restore_command"))
        .map(|(_, v)| v.trim())
        .filter(|c| !c.is_empty())
}

/// Whether `name` is a WAL segment's file name (24 hexadecimal digits), or a partial one.
fn is_segment(name: &str) -> bool {
    let base = name.strip_suffix(".partial").unwrap_or(name);
    base.len() == 24 && base.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// The segments waiting for the archiver, in order, from the names in `pg_wal/archive_status`.
pub fn ready_segments<'a>(status_files: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = status_files
        .into_iter()
        .filter_map(|f| f.strip_suffix(".ready"))
        .filter(|w| is_segment(w))
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

/// `archive_command` with PostgreSQL's placeholders replaced: `%p` by the path relative to the
/// data directory (the command runs there, as the archiver runs it), `%f` by the file name,
/// `%%` by `%`; any other `%` stays.
pub fn expand(command: &str, file: &str) -> String {
    let mut out = String::with_capacity(command.len() + 64);
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('p') => {
                out.push_str("pg_wal/");
                out.push_str(file);
                chars.next();
            }
            Some('f') => {
                out.push_str(file);
                chars.next();
            }
            Some('%') => {
                out.push('%');
                chars.next();
            }
            _ => out.push('%'),
        }
    }
    out
}

/// Archives the segments a stopped server left `.ready`, oldest first, with its
/// `archive_command`; returns how many it archived. Nothing to do without archiving.
pub async fn archive_ready_segments(settings: &PgSettings) -> usize {
    let Some(command) = archive_command(settings) else { return 0 };
    let status_dir = settings.data_dir.join("pg_wal").join("archive_status");
    let names: Vec<String> = match std::fs::read_dir(&status_dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
        Err(_) => return 0,
    };
    let mut archived = 0;
    for wal in ready_segments(names.iter().map(String::as_str)) {
        if !archive_one(&settings.data_dir, command, &wal).await {
            break;
        }
        let (ready, done) = (status_dir.join(format!("{wal}.ready")), status_dir.join(format!("{wal}.done")));
        if let Err(e) = std::fs::rename(&ready, &done) {
            tracing::warn!(segment = %wal, "archived, but could not mark it done: {e}");
            break;
        }
        archived += 1;
    }
    archived
}

/// Runs the archive command for one segment in the data directory; true when it exited 0.
async fn archive_one(data_dir: &Path, command: &str, wal: &str) -> bool {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(expand(command, wal)).current_dir(data_dir).kill_on_drop(true);
    match crate::tools::run_script(cmd).await {
        Ok(status) if status.success() => {
            tracing::info!(segment = %wal, "archived a WAL segment left unarchived before the rewind");
            true
        }
        Ok(end) => {
            tracing::warn!(
                segment = %wal,
                "archive_command failed ({}{}) for a WAL segment left unarchived; rewinding anyway",
                end.status,
                end.saying()
            );
            false
        }
        Err(e) => {
            tracing::warn!(segment = %wal, "could not run archive_command: {e}; rewinding anyway");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(params: &[(&str, &str)]) -> PgSettings {
        let mut s = PgSettings::new("n1", "/tmp/none/data");
        s.parameters = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        s
    }

    #[test]
    fn archiving_needs_a_mode_and_a_command_and_restore_comes_from_the_recovery_settings() {
        assert_eq!(archive_command(&settings(&[("archive_command", "cp %p /a/%f")])), None, "archive_mode off");
        let s = settings(&[("Archive_Mode", "on"), ("archive_command", " cp %p /a/%f ")]);
        assert_eq!(archive_command(&s), Some("cp %p /a/%f"));
        assert_eq!(archive_command(&settings(&[("archive_mode", "always"), ("archive_command", "")])), None);
        let mut s = settings(&[]);
        assert_eq!(restore_command(&s), None);
        s.recovery_conf.insert("Restore_Command".into(), " cp /r/%f %p ".into());
        assert_eq!(restore_command(&s), Some("cp /r/%f %p"));
        s.recovery_conf.insert("Restore_Command".into(), " ".into());
        assert_eq!(restore_command(&s), None, "blank means none");
    }

    #[test]
    fn only_ready_segments_are_archived_in_order_with_placeholders_expanded() {
        let files = [
            "000000010000000000000005.ready",
            "000000010000000000000003.done",
            "000000010000000000000004.ready",
            "000000020000000000000005.partial.ready",
            "00000002.history.ready",
            "junk.ready",
        ];
        assert_eq!(
            ready_segments(files),
            ["000000010000000000000004", "000000010000000000000005", "000000020000000000000005.partial"]
        );
        assert_eq!(
            expand("test ! -f /a/%f && cp %p /a/%f # 100%% %x", "000000010000000000000004"),
            "test ! -f /a/000000010000000000000004 && cp pg_wal/000000010000000000000004 /a/000000010000000000000004 # 100% %x"
        );
    }

    #[tokio::test]
    async fn ready_segments_are_archived_and_marked_done_until_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let status = data.join("pg_wal/archive_status");
        std::fs::create_dir_all(&status).unwrap();
        let archive = dir.path().join("archive");
        std::fs::create_dir(&archive).unwrap();
        for n in 1..=3 {
            let wal = format!("00000001000000000000000{n}");
            std::fs::write(data.join("pg_wal").join(&wal), format!("segment {n}")).unwrap();
            std::fs::write(status.join(format!("{wal}.ready")), "").unwrap();
        }
        // The archive refuses the third (say, it is full).
        let cmd = format!("test %f != 000000010000000000000003 && cp %p {}/%f", archive.display());
        let mut s = PgSettings::new("n1", &data);
        s.parameters = [("archive_mode".to_string(), "on".to_string()), ("archive_command".into(), cmd)].into();
        assert_eq!(archive_ready_segments(&s).await, 2);
        assert_eq!(std::fs::read_to_string(archive.join("000000010000000000000002")).unwrap(), "segment 2");
        assert!(status.join("000000010000000000000001.done").exists());
        assert!(status.join("000000010000000000000003.ready").exists(), "not marked done");
        assert!(!archive.join("000000010000000000000003").exists());
        // Without archive_mode nothing runs.
        s.parameters.remove("archive_mode");
        assert_eq!(archive_ready_segments(&s).await, 0);
    }
}
