//! Making a replica's data directory with the configured methods (`create_replica_methods`),
//! tried in order as Patroni tries them (`patroni/postgresql/bootstrap.py`, `create_replica`):
//! `basebackup` is pg_basebackup (tried twice), any other method is the operator's command, run
//! with `--scope --role=replica --datadir --connstring` (unless `no_params`) and its section's
//! keys, the replication role's password in the file `PGPASSFILE` names.
//!
//! Invariants: a method starts on an empty data directory unless it says `keep_data`; a failed
//! method leaves it empty again (same exception); success means PostgreSQL's data directory is
//! there (`PG_VERSION`), whatever the command's exit status claimed. A command's failure is
//! logged with the last lines it wrote on stderr (pgBackRest's error and hints, say), so the log
//! says why the next method was tried.

use rampart_config::{CustomReplicaMethod, ReplicaCreation, ReplicaMethod};
use rampart_core::Upstream;
use rampart_pg::PgSettings;
use tracing::{error, info};

/// How many times pg_basebackup is tried before the next method (Patroni's `maxfailures`).
const BASEBACKUP_TRIES: usize = 2;

/// Makes the data directory, copying from `from` (or, without it, only with the methods that
/// need no leader). The error names every method tried and why it failed.
pub async fn create(
    creation: &ReplicaCreation,
    s: &PgSettings,
    from: Option<&Upstream>,
    scope: &str,
) -> Result<(), String> {
    let methods = creation.to_try(from.is_some());
    if methods.is_empty() {
        return Err("no replica creation method works without a leader (none has no_leader)".into());
    }
    let mut failures = Vec::new();
    for method in methods {
        let outcome = match (method, from) {
            (ReplicaMethod::Basebackup, Some(up)) => basebackup(s, up).await,
            (ReplicaMethod::Basebackup, None) => Err("needs a member to copy from".into()),
            (ReplicaMethod::Custom(m), _) => custom(m, s, from, scope).await,
        };
        let name = match method {
            ReplicaMethod::Basebackup => "basebackup",
            ReplicaMethod::Custom(m) => m.name.as_str(),
        };
        match outcome {
            Ok(()) => {
                info!("replica has been created using {name}");
                return Ok(());
            }
            Err(e) => {
                error!("Error creating replica using method {name}: {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    Err(format!("could not create a replica: {}", failures.join("; ")))
}

/// The methods a standby cluster's bootstrap tries: those `standby_cluster.create_replica_methods`
/// names, in its order (`basebackup` when it names none), each custom one described by its
/// section under `postgresql` as for this member's own methods. A name without a section is an
/// error that says so.
pub fn for_standby(creation: &ReplicaCreation, names: &[String]) -> Result<ReplicaCreation, String> {
    let methods = match names {
        [] => vec![ReplicaMethod::Basebackup],
        names => names
            .iter()
            .map(|name| match name.as_str() {
                "basebackup" => Ok(ReplicaMethod::Basebackup),
                name => creation
                    .methods
                    .iter()
                    .find(|m| matches!(m, ReplicaMethod::Custom(c) if c.name == name))
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "standby_cluster.create_replica_methods names {name}, which has no section under \
                             postgresql (postgresql.{name}.command) in postgresql.create_replica_methods"
                        )
                    }),
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(ReplicaCreation { methods, basebackup_args: creation.basebackup_args.clone() })
}

async fn basebackup(s: &PgSettings, from: &Upstream) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..BASEBACKUP_TRIES {
        empty(s).await?;
        match rampart_pg::basebackup(s, from).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

async fn custom(m: &CustomReplicaMethod, s: &PgSettings, from: Option<&Upstream>, scope: &str) -> Result<(), String> {
    if m.keep_data {
        info!("Leaving data directory uncleaned");
    } else {
        empty(s).await?;
    }
    // The command reads the replication role's password from the password file, as libpq does.
    rampart_pg::write_pgpass(s).map_err(|e| e.to_string())?;
    let connstring = from.map(|up| rampart_pg::conf::replica_source_conninfo(s, up)).unwrap_or_default();
    let result = run(m, s, scope, &connstring).await;
    if result.is_err() && !m.keep_data {
        empty(s).await?;
    }
    result
}

async fn run(m: &CustomReplicaMethod, s: &PgSettings, scope: &str, connstring: &str) -> Result<(), String> {
    info!(method = %m.name, "creating the replica with {}", m.command);
    let mut script =
        super::callbacks::shell(&m.command, "rampart-replica-method", m.args(scope, &s.data_dir, connstring));
    script.env("PGPASSFILE", &s.pgpass);
    let end = rampart_pg::run_script(script).await.map_err(|e| format!("could not start {}: {e}", m.command))?;
    if !end.success() {
        return Err(format!("{} exited with {}{}", m.command, end.status, end.saying()));
    }
    if !s.data_dir.join("PG_VERSION").is_file() {
        return Err(format!(
            "{} succeeded but left no PostgreSQL data directory in {}",
            m.command,
            s.data_dir.display()
        ));
    }
    Ok(())
}

/// Empties the data directory if anything is in it. The directory itself stays (it may be a
/// mount point), so its mode is made one PostgreSQL accepts (0700, or 0750 as it was): a failed
/// method may have created it with the umask's 0755, which a later pg_basebackup into it keeps.
async fn empty(s: &PgSettings) -> Result<(), String> {
    if !matches!(rampart_pg::controldata::is_empty_dir(&s.data_dir), Ok(true)) {
        rampart_pg::wipe_data_dir(&s.data_dir).await.map_err(|e| e.to_string())?;
    }
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(&s.data_dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode != 0o700 && mode != 0o750 {
            std::fs::set_permissions(&s.data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("making {} private: {e}", s.data_dir.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(name: &str, command: &str) -> CustomReplicaMethod {
        CustomReplicaMethod { name: name.into(), command: command.into(), ..Default::default() }
    }

    /// A command that makes a fake data directory and records its arguments and PGPASSFILE.
    const RESTORE: &str = r#"for a; do case "$a" in --datadir=*) d="${a#--datadir=}";; esac; done; mkdir -p "$d" && touch "$d/PG_VERSION" && echo "$@" > "$d/args" && echo "$PGPASSFILE" > "$d/passfile"; true"#;

    fn settings(dir: &std::path::Path) -> PgSettings {
        PgSettings::new("n1", dir.join("data"))
    }

    #[test]
    fn a_standby_clusters_methods_are_its_own_list_described_by_the_members_sections() {
        let restore = CustomReplicaMethod { no_leader: true, ..method("pgbackrest", "restore") };
        let creation = ReplicaCreation {
            methods: vec![ReplicaMethod::Custom(restore.clone()), ReplicaMethod::Basebackup],
            basebackup_args: vec!["--max-rate=10M".into()],
        };
        let named = for_standby(&creation, &["basebackup".into(), "pgbackrest".into()]).unwrap();
        assert_eq!(named.methods, vec![ReplicaMethod::Basebackup, ReplicaMethod::Custom(restore)]);
        assert_eq!(named.basebackup_args, ["--max-rate=10M"]);
        assert_eq!(for_standby(&creation, &[]).unwrap().methods, vec![ReplicaMethod::Basebackup]);
        let e = for_standby(&creation, &["wal_e".into()]).unwrap_err();
        assert!(e.contains("names wal_e, which has no section under postgresql"), "{e}");
    }

    #[tokio::test]
    async fn a_custom_method_gets_patronis_arguments_and_the_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let m =
            CustomReplicaMethod { own_args: vec!["--test-argument=test-value".into()], ..method("restore", RESTORE) };
        let creation = ReplicaCreation { methods: vec![ReplicaMethod::Custom(m)], basebackup_args: vec![] };
        let up = Upstream { name: "n2".into(), host: "127.0.0.1".into(), port: 5433 };
        create(&creation, &s, Some(&up), "pg").await.unwrap();
        let args = std::fs::read_to_string(s.data_dir.join("args")).unwrap();
        assert_eq!(
            args.trim(),
            format!(
                "--test-argument=test-value --scope=pg --role=replica --datadir={} --connstring=dbname=postgres \
                 user=replicator host=127.0.0.1 port=5433",
                s.data_dir.display()
            )
        );
        let passfile = std::fs::read_to_string(s.data_dir.join("passfile")).unwrap();
        assert_eq!(passfile.trim(), s.pgpass.display().to_string());
    }

    #[tokio::test]
    async fn methods_are_tried_in_order_and_a_failed_one_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        // Writes a file, then fails: its leftovers must be gone before the next method runs.
        let broken = method(
            "broken",
            r#"for a; do case "$a" in --datadir=*) d="${a#--datadir=}";; esac; done; mkdir -p "$d" && touch "$d/half"; echo 'ERROR: [075]: no backup set found to restore' >&2; exit 2;"#,
        );
        let creation = ReplicaCreation {
            methods: vec![ReplicaMethod::Custom(broken.clone()), ReplicaMethod::Custom(method("restore", RESTORE))],
            basebackup_args: vec![],
        };
        let up = Upstream { name: "n2".into(), host: "127.0.0.1".into(), port: 5433 };
        create(&creation, &s, Some(&up), "pg").await.unwrap();
        assert!(!s.data_dir.join("half").exists(), "the failed method's files were removed");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&s.data_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the directory the failed method made is private again");
        assert!(s.data_dir.join("PG_VERSION").exists());

        // All failing: the error names each; a command that "succeeds" without a data directory fails.
        std::fs::remove_dir_all(&s.data_dir).unwrap();
        let creation = ReplicaCreation {
            methods: vec![ReplicaMethod::Custom(broken), ReplicaMethod::Custom(method("noop", "true"))],
            basebackup_args: vec![],
        };
        let e = create(&creation, &s, Some(&up), "pg").await.unwrap_err();
        assert!(e.contains("broken: ") && e.contains("exited with exit status: 2"), "{e}");
        assert!(
            e.contains("exit status: 2, saying: ERROR: [075]: no backup set found to restore"),
            "why, in its words: {e}"
        );
        assert!(e.contains("noop: true succeeded but left no PostgreSQL data directory"), "{e}");
        assert!(rampart_pg::controldata::is_empty_dir(&s.data_dir).unwrap());
    }

    #[tokio::test]
    async fn without_a_leader_only_no_leader_methods_run_with_an_empty_connstring() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let creation = ReplicaCreation {
            methods: vec![ReplicaMethod::Basebackup, ReplicaMethod::Custom(method("restore", RESTORE))],
            basebackup_args: vec![],
        };
        let e = create(&creation, &s, None, "pg").await.unwrap_err();
        assert!(e.contains("no replica creation method works without a leader"), "{e}");
        let restore = CustomReplicaMethod { no_leader: true, ..method("restore", RESTORE) };
        let creation = ReplicaCreation {
            methods: vec![ReplicaMethod::Basebackup, ReplicaMethod::Custom(restore)],
            basebackup_args: vec![],
        };
        create(&creation, &s, None, "pg").await.unwrap();
        let args = std::fs::read_to_string(s.data_dir.join("args")).unwrap();
        assert!(args.trim().ends_with("--connstring="), "{args}");
    }
}
