//! A custom bootstrap method (`bootstrap.method: NAME`, `bootstrap.NAME.command`): the command
//! builds the new cluster's data directory instead of initdb (say, by restoring a backup), as
//! Patroni does it (`patroni/postgresql/bootstrap.py`, `_custom_bootstrap`).
//!
//! The command runs as the agent's user through `/bin/sh -c '<command> "$@"'` (as callbacks do)
//! with `--scope=SCOPE --datadir=DATA_DIR` (unless `no_params`) and `--KEY=VALUE` for the
//! section's other keys; a non-zero exit fails the bootstrap. Then, as in Patroni: a `promote`
//! trigger file is removed; with `recovery_conf` its settings go into the first start's
//! postgresql.conf with `recovery.signal`, so the server recovers and then promotes itself (at a
//! recovery target, `recovery_target_action` is `promote` unless the method says otherwise);
//! without it, signal files and `postgresql.auto.conf`'s recovery settings the command left are
//! removed at the first start unless `keep_existing_recovery_conf` ([`RecoveryFiles`]).
//! The restored cluster's passwords are unknown, so, as Patroni does, the first start runs with a
//! pg_hba.conf that trusts the agent's own way in for the superuser and replication roles
//! ([`rampart_pg::conf::bootstrap_trust_hba`]); the operator's file (the restored one with
//! `bootstrap.pg_hba` appended, set aside meanwhile) comes back once the configured passwords
//! are set.
//! Invariant: the bootstrap counts as done only once the server has left recovery, so the roles
//! are created on a writable primary and the cluster's `initialize` key names a finished one.

use std::time::Duration;

use rampart_config::BootstrapMethod;
use rampart_pg::{HbaFile, PgSettings, RecoveryFiles, Sql};
use tracing::info;

/// Runs the method's command and appends `pg_hba` (`bootstrap.pg_hba`) to the file it left;
/// returns the settings of the first start (with `recovery_conf`, and the trusting pg_hba.conf).
pub async fn run(
    method: &BootstrapMethod,
    s: &PgSettings,
    scope: &str,
    pg_hba: &[String],
) -> Result<PgSettings, String> {
    info!("Running custom bootstrap script: {}", method.command);
    let end = rampart_pg::run_script(super::callbacks::shell(
        &method.command,
        "rampart-bootstrap",
        method.args(scope, &s.data_dir),
    ))
    .await
    .map_err(|e| format!("custom bootstrap {}: could not start its command: {e}", method.name))?;
    if !end.success() {
        return Err(format!(
            "custom bootstrap {}: its command exited with {}{}",
            method.name,
            end.status,
            end.saying()
        ));
    }
    if !s.data_dir.join("PG_VERSION").is_file() {
        return Err(format!(
            "custom bootstrap {}: its command succeeded but left no PostgreSQL data directory in {}",
            method.name,
            s.data_dir.display()
        ));
    }
    let remove = |name: &str| match std::fs::remove_file(s.data_dir.join(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("removing {name}: {e}")),
        _ => Ok(()),
    };
    // Or PostgreSQL would promote at once.
    remove("promote")?;
    let text = |e: rampart_pg::PgError| e.to_string();
    rampart_pg::append_hba(s, pg_hba).map_err(text)?;
    rampart_pg::set_hba_aside(s).map_err(text)?;
    let mut first = s.clone();
    first.pg_hba = HbaFile::Managed(rampart_pg::conf::bootstrap_trust_hba(s));
    first.parameters.retain(|k, _| !k.eq_ignore_ascii_case("hba_file"));
    if !method.recovery_conf.is_empty() {
        for (k, v) in &method.recovery_conf {
            first.parameters.insert(k.clone(), v.clone());
        }
        // Without an action, PostgreSQL pauses at the target and the bootstrap would wait
        // forever for its end of recovery.
        let targeted = method
            .recovery_conf
            .keys()
            .any(|k| rampart_pg::recovery::RECOVERY_TARGETS.iter().any(|t| k.eq_ignore_ascii_case(t)));
        if targeted && !method.recovery_conf.keys().any(|k| k.eq_ignore_ascii_case("recovery_target_action")) {
            info!("custom bootstrap {}: recovery_conf sets a recovery target without recovery_target_action: promoting at the target", method.name);
            first.parameters.insert("recovery_target_action".into(), "promote".into());
        }
        first.recovery_files = RecoveryFiles::RecoverThenPromote;
    } else if method.keep_existing_recovery_conf {
        first.recovery_files = RecoveryFiles::AsLeft;
    }
    Ok(first)
}

/// Runs `bootstrap.post_bootstrap` with the superuser's connection string as its argument (the
/// password in the file `PGPASSFILE` names), as Patroni does, and waits: a non-zero exit fails
/// the bootstrap.
pub async fn post_bootstrap(cmd: &str, s: &PgSettings) -> Result<(), String> {
    info!("running post_bootstrap script: {cmd}");
    let connstring = rampart_pg::conf::local_superuser_conninfo(s);
    let mut script = super::callbacks::shell(cmd, "rampart-post-bootstrap", [connstring]);
    script.env("PGPASSFILE", &s.pgpass).env("PGOPTIONS", "-c synchronous_commit=local -c statement_timeout=0");
    let end = rampart_pg::run_script(script)
        .await
        .map_err(|e| format!("post_bootstrap script {cmd}: could not start it: {e}"))?;
    match end.success() {
        true => Ok(()),
        false => Err(format!("post_bootstrap script {cmd} returned {}{}", end.status, end.saying())),
    }
}

/// Waits until the server has left recovery (at once without `recovery_conf`). Not bounded: a
/// restore may replay for hours; the job is cancelled with the agent, like Patroni's wait.
pub async fn wait_for_end_of_recovery(sql: &Sql) -> Result<(), String> {
    let mut said = false;
    let mut unanswered = 0;
    loop {
        let probe = sql.probe().await;
        unanswered = if probe.is_ok() { 0 } else { unanswered + 1 };
        if unanswered > 60 {
            return Err("the bootstrapped server stopped answering while it recovered".into());
        }
        match probe {
            Ok(p) if !p.in_recovery => return Ok(()),
            Ok(_) if !said => {
                info!("waiting for end of recovery after bootstrap");
                said = true;
            }
            Ok(_) => {}
            Err(e) if !said => {
                info!(error = %e, "waiting for the bootstrapped server to answer");
                said = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_core::StartRole;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn post_bootstrap_gets_the_superusers_connection_string_and_its_exit_decides() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = PgSettings::new("n1", dir.path().join("data"));
        s.port = 5499;
        let out = dir.path().join("out");
        let record = format!(r#"echo "$1|$PGPASSFILE|$PGOPTIONS" > {}; true"#, out.display());
        post_bootstrap(&record, &s).await.unwrap();
        let seen = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            seen.trim(),
            format!(
                "dbname=postgres user=postgres host=/var/run/postgresql port=5499|{}|-c synchronous_commit=local -c \
                 statement_timeout=0",
                s.pgpass.display()
            )
        );
        let e = post_bootstrap("exit 4;", &s).await.unwrap_err();
        assert!(e.contains("post_bootstrap script exit 4; returned exit status: 4"), "{e}");
    }

    fn method(command: &str) -> BootstrapMethod {
        BootstrapMethod { name: "restore".into(), command: command.into(), ..Default::default() }
    }

    /// A command that makes a fake data directory with signal files and records its arguments.
    const MAKE: &str = r#"d="${2#--datadir=}"; mkdir -p "$d" && touch "$d/PG_VERSION" "$d/promote" "$d/standby.signal" && echo "$@" > "$d/args" && echo "local all all scram-sha-256" > "$d/pg_hba.conf"; true"#;

    #[tokio::test]
    async fn the_command_gets_patronis_arguments_and_signal_files_are_settled_at_the_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let s = PgSettings::new("n1", dir.path().join("data"));
        let d = &s.data_dir;
        // What the first start writes (the postmaster's start calls write_config).
        let first_start = |first: &PgSettings| rampart_pg::write_config(first, &StartRole::Primary).unwrap();
        let restored_auto_conf = "work_mem = '64MB'\nrestore_command = 'cp /archive/%f %p'\n";

        let added = vec!["host all all 10.0.0.0/8 scram-sha-256".to_string()];
        let first = run(&method(MAKE), &s, "pg", &added).await.unwrap();
        let args = std::fs::read_to_string(d.join("args")).unwrap();
        assert_eq!(args.trim(), format!("--scope=pg --datadir={}", d.display()));
        assert!(!d.join("promote").exists(), "a promote trigger would promote at once");
        std::fs::write(d.join("postgresql.auto.conf"), restored_auto_conf).unwrap();
        first_start(&first);
        assert!(!d.join("standby.signal").exists(), "removed without keep_existing_recovery_conf");
        assert_eq!(std::fs::read_to_string(d.join("postgresql.auto.conf")).unwrap(), "work_mem = '64MB'\n");
        assert_eq!(first.parameters, s.parameters);
        // The first start trusts the agent's way in; the restored file, with bootstrap.pg_hba
        // appended, comes back afterwards.
        let hba = std::fs::read_to_string(d.join("pg_hba.conf")).unwrap();
        assert!(hba.contains("local all \"postgres\" trust") && !hba.contains("scram"), "{hba}");
        rampart_pg::restore_hba(&s).unwrap();
        let hba = std::fs::read_to_string(d.join("pg_hba.conf")).unwrap();
        assert!(hba.starts_with("local all all scram-sha-256\n"), "{hba}");
        assert!(hba.ends_with("\nhost all all 10.0.0.0/8 scram-sha-256\n"), "{hba}");
        assert!(!d.join("pg_hba.conf.rampart-bootstrap").exists());

        // keep_existing_recovery_conf keeps them.
        std::fs::remove_dir_all(d).unwrap();
        let keep = BootstrapMethod { keep_existing_recovery_conf: true, ..method(MAKE) };
        let first = run(&keep, &s, "pg", &[]).await.unwrap();
        std::fs::write(d.join("postgresql.auto.conf"), restored_auto_conf).unwrap();
        first_start(&first);
        assert!(d.join("standby.signal").exists());
        assert_eq!(std::fs::read_to_string(d.join("postgresql.auto.conf")).unwrap(), restored_auto_conf);

        // recovery_conf asks for a recovery, then promotion, at the target when it names one.
        std::fs::remove_dir_all(d).unwrap();
        let recovery = BTreeMap::from([
            ("restore_command".to_string(), "cp /archive/%f %p".to_string()),
            ("recovery_target_time".to_string(), "2026-12-05 10:00:00+00".to_string()),
        ]);
        let restore = BootstrapMethod { recovery_conf: recovery, ..method(MAKE) };
        let first = run(&restore, &s, "pg", &[]).await.unwrap();
        first_start(&first);
        assert!(d.join("recovery.signal").exists() && !d.join("standby.signal").exists());
        assert_eq!(first.parameters["restore_command"], "cp /archive/%f %p");
        assert_eq!(first.parameters["recovery_target_action"], "promote", "else PostgreSQL pauses there");
        let conf = std::fs::read_to_string(d.join("postgresql.conf")).unwrap();
        assert!(conf.contains("recovery_target_time = '2026-12-05 10:00:00+00'\n"), "{conf}");
        // Later starts, with the normal settings, leave no signal file behind.
        rampart_pg::write_config(&s, &StartRole::Primary).unwrap();
        assert!(!d.join("recovery.signal").exists());
    }

    #[tokio::test]
    async fn a_failing_command_or_no_data_directory_fails_the_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let s = PgSettings::new("n1", dir.path().join("data"));
        let e = run(&method("exit 3;"), &s, "pg", &[]).await.unwrap_err();
        assert!(e.contains("custom bootstrap restore: its command exited with exit status: 3"), "{e}");
        let e = run(&method("true"), &s, "pg", &[]).await.unwrap_err();
        assert!(e.contains("left no PostgreSQL data directory"), "{e}");
    }
}
