//! Writes the managed files into the data directory (and the password file next to it).
//!
//! Invariants:
//! * everything is rendered (and validated) before anything is written, so bad settings leave the
//!   old files in place;
//! * each file is replaced atomically (temporary file, fsync, rename), so a crash never leaves a
//!   truncated `postgresql.conf` behind;
//! * initdb's `postgresql.conf` is preserved once, as `postgresql.base.conf`, and the managed file
//!   includes it; a managed file is never mistaken for initdb's;
//! * the password file is mode 0600, as libpq requires.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rampart_core::StartRole;

use crate::conf::{appended_hba, render_hba, render_pgpass, render_postgresql_conf, BASE_CONF, MANAGED_HEADER};
use crate::error::{PgError, Result};
use crate::recovery::RecoveryFiles;
use crate::settings::{HbaFile, PgSettings};

/// Marker file that makes PostgreSQL start as a standby.
pub const STANDBY_SIGNAL: &str = "standby.signal";

/// Marker file that makes PostgreSQL recover from the archive, then promote.
pub const RECOVERY_SIGNAL: &str = "recovery.signal";

/// Writes `postgresql.conf`, `pg_hba.conf` when it is managed ([`HbaFile::Managed`]), the signal files (`standby.signal` for replicas, none
/// for primaries; see [`RecoveryFiles`] for a custom bootstrap's first start) and the password file
/// for `role`, and removes recovery settings other tools left in `postgresql.auto.conf`.
/// PostgreSQL reads them at its next start or reload.
///
/// Signal files are removed only when starting as a primary: the agent writes a running server's
/// file for the role it runs in (a server in recovery as a replica), and a running server that
/// finds its signal file gone at the end of recovery fails (PostgreSQL removes it then, FATAL if
/// it cannot).
pub fn write_config(settings: &PgSettings, role: &StartRole) -> Result<()> {
    let settings = &without_refused_parameters(settings);
    let conf = render_postgresql_conf(settings, role)?;
    let dir = &settings.data_dir;
    if !dir.join("PG_VERSION").is_file() {
        return Err(PgError::DataDir {
            path: dir.clone(),
            reason: "not a PostgreSQL data directory (no PG_VERSION)".into(),
        });
    }
    preserve_base_conf(dir)?;
    write_atomic(&dir.join("postgresql.conf"), conf.as_bytes(), 0o600)?;
    if let HbaFile::Managed(lines) = &settings.pg_hba {
        write_atomic(&dir.join("pg_hba.conf"), render_hba(lines).as_bytes(), 0o600)?;
    }
    if settings.recovery_files != RecoveryFiles::AsLeft {
        clean_auto_conf(dir)?;
    }
    let (standby, recovery) = (dir.join(STANDBY_SIGNAL), dir.join(RECOVERY_SIGNAL));
    match (role, settings.recovery_files) {
        (_, RecoveryFiles::AsLeft) => {}
        (StartRole::Replica { .. } | StartRole::StandbyLeader(_), _) => {
            if !standby.exists() {
                write_atomic(&standby, b"", 0o600)?;
            }
        }
        (StartRole::Primary, RecoveryFiles::Managed) => {
            remove_if_present(&standby)?;
            remove_if_present(&recovery)?;
        }
        (StartRole::Primary, RecoveryFiles::RecoverThenPromote) => {
            remove_if_present(&standby)?;
            if !recovery.exists() {
                write_atomic(&recovery, b"", 0o600)?;
            }
        }
    }
    write_pgpass(settings)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PgError::io("removing", path, e)),
    }
}

/// Removes the recovery settings a restore left in `postgresql.auto.conf` (read after
/// `postgresql.conf`, so they would win over the agent's), with a line in the log saying so.
fn clean_auto_conf(dir: &Path) -> Result<()> {
    let path = dir.join("postgresql.auto.conf");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PgError::io("reading", path, e)),
    };
    if let Some(kept) = crate::recovery::auto_conf_without_recovery(&text) {
        tracing::info!(file = %path.display(), "removing recovery settings another tool left there (the agent's configuration decides them)");
        write_atomic(&path, kept.as_bytes(), 0o600)?;
    }
    Ok(())
}

/// `settings` without the parameters the server would refuse to start with, each left out with
/// a warning, as Patroni does (`validator.py`: "Removing unexpected parameter", "Removing invalid
/// parameter"): a name PostgreSQL does not know (extensions' dotted names are kept) or a value it
/// cannot read. The configuration writers refuse such values already; this covers files and
/// DCS keys written by other tools. When the server's settings cannot be read, nothing is removed.
fn without_refused_parameters(settings: &PgSettings) -> std::borrow::Cow<'_, PgSettings> {
    if settings.parameters.is_empty() && settings.recovery_conf.is_empty() {
        return std::borrow::Cow::Borrowed(settings);
    }
    let Ok(table) = crate::guc::for_bin_dir(&settings.bin_dir) else { return std::borrow::Cow::Borrowed(settings) };
    let refused = |map: &BTreeMap<String, String>| -> Vec<(String, String)> {
        map.iter()
            // A malformed name is left for the rendering to refuse, so that nothing is written.
            .filter(|(name, _)| crate::conf::check_parameter_name(name).is_ok())
            .filter_map(|(name, value)| {
                let json = serde_json::Value::String(value.clone());
                match table.check(name, &json) {
                    Err(e) => Some((name.clone(), e.to_string())),
                    Ok(_)
                        if table.get(name).is_none()
                            && !name.contains('.')
                            && !name.eq_ignore_ascii_case(crate::guc::WAL_KEEP_SEGMENTS)
                            // Written (or left out) by the recovery rules, never as it is.
                            && !name.eq_ignore_ascii_case("standby_mode") =>
                    {
                        Some((name.clone(), format!("{name} is not a parameter of PostgreSQL {}", table.major())))
                    }
                    Ok(_) => None,
                }
            })
            .collect()
    };
    let (parameters, recovery) = (refused(&settings.parameters), refused(&settings.recovery_conf));
    if parameters.is_empty() && recovery.is_empty() {
        return std::borrow::Cow::Borrowed(settings);
    }
    let mut kept = settings.clone();
    for (name, why) in parameters {
        tracing::warn!(parameter = %name, value = %settings.parameters[&name], "removing it from postgresql.conf: {why}");
        kept.parameters.remove(&name);
    }
    for (name, why) in recovery {
        // Without its value: a restore_command may carry credentials.
        tracing::warn!(parameter = %name, "removing it from the recovery settings (postgresql.recovery_conf): {why}");
        kept.recovery_conf.remove(&name);
    }
    std::borrow::Cow::Owned(kept)
}

/// After a bootstrap, appends `bootstrap.pg_hba` to the `pg_hba.conf` initdb or a custom bootstrap
/// left in the data directory when that file is the operator's ([`HbaFile::InDataDir`]), as
/// Patroni's `append_pg_hba`; a managed or named file is left alone. Nothing to append, nothing
/// written.
pub fn append_hba(settings: &PgSettings, lines: &[String]) -> Result<()> {
    if settings.pg_hba != HbaFile::InDataDir || lines.is_empty() {
        return Ok(());
    }
    let path = settings.data_dir.join("pg_hba.conf");
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| PgError::io("opening", &path, e))?;
    f.write_all(appended_hba(lines).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| PgError::io("appending bootstrap.pg_hba to", &path, e))
}

/// Where the operator's `pg_hba.conf` waits while a custom bootstrap's first start runs with
/// [`crate::conf::bootstrap_trust_hba`].
const HBA_SET_ASIDE: &str = "pg_hba.conf.rampart-bootstrap";

/// Before a custom bootstrap's first start: keeps the data directory's `pg_hba.conf` aside (a
/// copy, so a crash leaves the original in place until the trust file replaces it).
pub fn set_hba_aside(settings: &PgSettings) -> Result<()> {
    let (from, to) = (settings.data_dir.join("pg_hba.conf"), settings.data_dir.join(HBA_SET_ASIDE));
    match fs::read(&from) {
        Ok(text) => write_atomic(&to, &text, 0o600),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PgError::io("reading", from, e)),
    }
}

/// After a custom bootstrap: puts the file [`set_hba_aside`] kept back in place (the managed
/// file is written by [`write_config`] instead).
pub fn restore_hba(settings: &PgSettings) -> Result<()> {
    let (from, to) = (settings.data_dir.join(HBA_SET_ASIDE), settings.data_dir.join("pg_hba.conf"));
    match fs::rename(&from, &to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PgError::io("restoring pg_hba.conf from", from, e)),
        _ => Ok(()),
    }
}

/// Writes the libpq password file (mode 0600) with the configured credentials.
pub fn write_pgpass(settings: &PgSettings) -> Result<()> {
    write_atomic(&settings.pgpass, render_pgpass(settings).as_bytes(), 0o600)
}

/// On first configuration, moves initdb's `postgresql.conf` to [`BASE_CONF`]. A base file copied
/// by pg_basebackup or pg_rewind from another member is kept as it is.
fn preserve_base_conf(dir: &Path) -> Result<()> {
    let base = dir.join(BASE_CONF);
    if base.exists() {
        return Ok(());
    }
    let conf = dir.join("postgresql.conf");
    let original = match fs::read_to_string(&conf) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(PgError::io("reading", conf, e)),
    };
    match original {
        Some(text) if !text.starts_with(MANAGED_HEADER) => {
            fs::rename(&conf, &base).map_err(|e| PgError::io("renaming to postgresql.base.conf", &conf, e))
        }
        // Our own file without its base (someone removed it): start from an empty base.
        _ => write_atomic(&base, b"# initdb's postgresql.conf was not found; add base settings here.\n", 0o600),
    }
}

/// Replaces `path` atomically with `contents`, created with `mode`.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.rampart-tmp"));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        PgError::io("writing", path, e)
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::settings::Credentials;

    fn fake_data_dir() -> (tempfile::TempDir, PgSettings) {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        fs::write(data.join("postgresql.conf"), "shared_buffers = 128MB # initdb\n").unwrap();
        let mut s = PgSettings::new("n1", &data);
        s.replication = Credentials::new("repl", "secret");
        (d, s)
    }

    #[test]
    fn first_configure_keeps_initdb_conf_as_base() {
        let (_d, s) = fake_data_dir();
        write_config(&s, &StartRole::Replica { upstream: None }).unwrap();
        let dir = &s.data_dir;
        assert_eq!(fs::read_to_string(dir.join(BASE_CONF)).unwrap(), "shared_buffers = 128MB # initdb\n");
        assert!(fs::read_to_string(dir.join("postgresql.conf")).unwrap().starts_with(MANAGED_HEADER));
        assert!(dir.join(STANDBY_SIGNAL).exists());
        let mode = fs::metadata(&s.pgpass).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_to_string(&s.pgpass).unwrap(), "*:*:*:repl:secret\n");

        // Second configure: the base stays initdb's, the signal goes away for a primary.
        write_config(&s, &StartRole::Primary).unwrap();
        assert_eq!(fs::read_to_string(dir.join(BASE_CONF)).unwrap(), "shared_buffers = 128MB # initdb\n");
        assert!(!dir.join(STANDBY_SIGNAL).exists());
        assert!(!dir.join("pg_hba.conf").exists(), "the data directory's pg_hba.conf is the operator's");
        let leftovers: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with("rampart-tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn pg_hba_conf_is_written_only_when_managed_and_bootstrap_lines_are_appended_only_to_the_operators() {
        let (_d, mut s) = fake_data_dir();
        let hba = s.data_dir.join("pg_hba.conf");
        fs::write(&hba, "local all all trust\n").unwrap();
        let lines = vec!["host all all 10.0.0.0/8 scram-sha-256".to_string()];
        for who in [HbaFile::Named, HbaFile::Managed(vec!["local all all peer".into()])] {
            s.pg_hba = who;
            append_hba(&s, &lines).unwrap();
            assert_eq!(fs::read_to_string(&hba).unwrap(), "local all all trust\n");
        }
        s.pg_hba = HbaFile::InDataDir;
        append_hba(&s, &lines).unwrap();
        let appended = fs::read_to_string(&hba).unwrap();
        assert!(appended.starts_with("local all all trust\n\n"), "{appended}");
        assert!(appended.ends_with("\nhost all all 10.0.0.0/8 scram-sha-256\n"), "{appended}");
        write_config(&s, &StartRole::Primary).unwrap();
        assert_eq!(fs::read_to_string(&hba).unwrap(), appended, "never rewritten");
        s.pg_hba = HbaFile::Named;
        write_config(&s, &StartRole::Primary).unwrap();
        assert_eq!(fs::read_to_string(&hba).unwrap(), appended);
        s.pg_hba = HbaFile::Managed(vec!["local all all peer".into()]);
        write_config(&s, &StartRole::Primary).unwrap();
        assert!(fs::read_to_string(&hba).unwrap().ends_with("\nlocal all all peer\n"));
    }

    #[test]
    fn parameters_the_server_would_refuse_are_left_out_as_patroni_does() {
        let (_d, mut s) = fake_data_dir();
        s.bin_dir = crate::settings::default_bin_dir();
        for (k, v) in [
            ("max_connections", "lots"),
            ("no_such_setting", "1"),
            ("work_mem", "8MB"),
            ("pg_stat_statements.max", "5000"),
        ] {
            s.parameters.insert(k.into(), v.into());
        }
        write_config(&s, &StartRole::Primary).unwrap();
        let conf = fs::read_to_string(s.data_dir.join("postgresql.conf")).unwrap();
        assert!(!conf.contains("max_connections") && !conf.contains("no_such_setting"), "{conf}");
        assert!(conf.contains("work_mem = '8MB'") && conf.contains("pg_stat_statements.max = '5000'"), "{conf}");
    }

    #[test]
    fn bad_settings_touch_nothing() {
        let (_d, mut s) = fake_data_dir();
        s.parameters.insert("bad name".into(), "1".into());
        assert!(write_config(&s, &StartRole::Primary).is_err());
        assert!(!s.data_dir.join(BASE_CONF).exists());
    }

    #[test]
    fn refuses_a_directory_that_is_not_a_cluster() {
        let d = tempfile::tempdir().unwrap();
        let s = PgSettings::new("n1", d.path());
        assert!(matches!(write_config(&s, &StartRole::Primary), Err(PgError::DataDir { .. })));
    }
}
