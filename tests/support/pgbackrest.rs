//! pgBackRest (Debian's 2.45, `/usr/bin/pgbackrest`) for the backup tests: a [`Repo`] keeps one
//! stanza's backups and archived WAL in a directory of the test, or in a bucket of the test's
//! [`S3Server`].
//!
//! Nothing here touches `/etc/pgbackrest.conf`, `/var/lib/pgbackrest` or `/var/log/pgbackrest`:
//! each repository has a configuration file of its own (mode 0600, owned by the agent's OS user:
//! it holds the S3 key) with its own lock, log and spool directories, all in the test's directory,
//! and every command names it with `--config`. pgBackRest always runs as the agent's OS user, as
//! PostgreSQL (archive-push) and the agent (a restore) run it.
//!
//! Seed 002 has one `/etc/pgbackrest.conf` per host, whose `pg1-path` is that host's data
//! directory, so `archive_command` and the restore command are the same on every member. Here
//! the members share a host and their data directories, ports and socket directories differ:
//! each agent gets its own as `PGBACKREST_PG1_*` in its environment ([`Repo::agent_env`]), which
//! PostgreSQL and the agent's replica methods inherit, and the commands stay the same on every
//! member ([`Repo::archive_into`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::config::NodeConfig;
use super::s3::S3Server;

pub const PGBACKREST_BIN: &str = "/usr/bin/pgbackrest";

/// `s` as a single-quoted YAML scalar, e.g. a command for the configuration.
pub fn yaml_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// How long one pgBackRest command of a test may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// `pgbackrest backup --type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }
}

/// Where a [`Repo`] keeps its files.
#[derive(Clone, Debug)]
pub enum Storage {
    /// A directory (`repo1-type=posix`).
    Path(PathBuf),
    /// A bucket on the test's S3 server, path-style (`repo1-type=s3`).
    S3 { port: u16, bucket: String },
}

/// One pgBackRest repository holding one stanza.
#[derive(Debug)]
pub struct Repo {
    stanza: String,
    dir: PathBuf,
    config: PathBuf,
    storage: Storage,
}

impl Repo {
    /// A repository in `<dir>/repo`, with its configuration, locks and logs in `dir`.
    pub fn on_path(dir: &Path, stanza: &str) -> Repo {
        let repo = super::dir::make_agent_dir(&dir.join("repo"));
        Repo::new(dir, stanza, Storage::Path(repo))
    }

    /// A repository in the bucket `bucket` of `s3` (created here), with its configuration, locks
    /// and logs in `dir`.
    pub fn on_s3(dir: &Path, stanza: &str, s3: &S3Server, bucket: &str) -> Repo {
        s3.create_bucket(bucket);
        Repo::new(dir, stanza, Storage::S3 { port: s3.port(), bucket: bucket.into() })
    }

    fn new(dir: &Path, stanza: &str, storage: Storage) -> Repo {
        let dir = super::dir::make_agent_dir(dir);
        for sub in ["lock", "log", "spool"] {
            super::dir::make_agent_dir(&dir.join(sub));
        }
        let repo = Repo { stanza: stanza.into(), config: dir.join("pgbackrest.conf"), dir, storage };
        super::config::write_private(&repo.config, &repo.config_text())
            .unwrap_or_else(|e| panic!("writing {}: {e}", repo.config.display()));
        repo
    }

    fn config_text(&self) -> String {
        let mut lines = vec!["[global]".to_string()];
        match &self.storage {
            Storage::Path(path) => {
                lines.push("repo1-type=posix".into());
                lines.push(format!("repo1-path={}", path.display()));
            }
            Storage::S3 { port, bucket } => {
                lines.extend([
                    "repo1-type=s3".into(),
                    "repo1-path=/pgbackrest".into(),
                    "repo1-s3-endpoint=127.0.0.1".into(),
                    format!("repo1-storage-port={port}"),
                    "repo1-s3-uri-style=path".into(),
                    // The test's server has a self-signed certificate.
                    "repo1-storage-verify-tls=n".into(),
                    format!("repo1-s3-bucket={bucket}"),
                    format!("repo1-s3-region={}", super::s3::REGION),
                    format!("repo1-s3-key={}", super::s3::ACCESS_KEY),
                    format!("repo1-s3-key-secret={}", super::s3::SECRET_KEY),
                    // Retries of an unreachable server end after a few times this (the default,
                    // 60 s, makes a restore from a stopped server fail after 8 minutes).
                    "io-timeout=3".into(),
                ]);
            }
        }
        lines.extend([
            // Small files go into one object per batch: a backup of a new cluster is then a few
            // dozen requests instead of a thousand, which moto answers slowly.
            "repo1-bundle=y".into(),
            "repo1-retention-full=10".into(),
            "start-fast=y".into(),
            format!("lock-path={}", self.dir.join("lock").display()),
            format!("log-path={}", self.dir.join("log").display()),
            format!("spool-path={}", self.dir.join("spool").display()),
            // Warnings and errors on stderr (where the agent reads why a restore failed), the
            // rest in `<log-path>/<stanza>-<command>.log`.
            "log-level-console=warn".into(),
            "log-level-file=detail".into(),
        ]);
        lines.join("\n") + "\n"
    }

    pub fn stanza(&self) -> &str {
        &self.stanza
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// `pgbackrest --config=<file> --stanza=<stanza>`, what every command of this repository
    /// starts with.
    pub fn command(&self) -> String {
        format!("{PGBACKREST_BIN} --config={} --stanza={}", self.config.display(), self.stanza)
    }

    /// `archive_command` for PostgreSQL (the data directory comes from [`Repo::agent_env`]).
    pub fn archive_command(&self) -> String {
        format!("{} archive-push %p", self.command())
    }

    /// `restore_command` for PostgreSQL.
    pub fn restore_command(&self) -> String {
        format!("{} archive-get %f \"%p\"", self.command())
    }

    /// The command of a `pgbackrest` replica creation method (with `no_params`, `keep_data`):
    /// restores the latest backup into the member's data directory, as in seed 002.
    pub fn restore_method_command(&self) -> String {
        format!("{} --delta --link-all restore", self.command())
    }

    /// The `postgresql.pgbackrest` replica creation method of seed 002, a YAML flow mapping:
    /// [`Repo::restore_method_command`] with `keep_data`, `no_params` and `no_leader`.
    pub fn replica_method(&self) -> String {
        format!(
            "{{command: {}, keep_data: true, no_params: true, no_leader: true}}",
            yaml_quoted(&self.restore_method_command())
        )
    }

    /// Member `node` archiving its WAL into this repository, among the bootstrap's dynamic
    /// parameters: `archive_mode: on` (as seed 002 writes it) and [`Repo::archive_command`].
    pub fn archive_into(&self, node: &mut NodeConfig) {
        node.dcs_parameters.push(("archive_mode".into(), "on".into()));
        node.dcs_parameters.push(("archive_command".into(), yaml_quoted(&self.archive_command())));
    }

    /// The environment of a member's agent for this repository: what the member's
    /// `/etc/pgbackrest.conf` would say about its PostgreSQL, its data directory as `pg1-path`,
    /// its port as `pg1-port` and its socket directory as `pg1-socket-path`. `archive-push` and
    /// a restore need only the data directory; the commands that connect (a backup run by
    /// `rampart backup`, `check`) need the rest.
    pub fn agent_env(node: &NodeConfig) -> Vec<(String, String)> {
        vec![
            ("PGBACKREST_PG1_PATH".into(), node.data_dir.display().to_string()),
            ("PGBACKREST_PG1_PORT".into(), node.pg_port.to_string()),
            ("PGBACKREST_PG1_SOCKET_PATH".into(), node.socket_dir.display().to_string()),
        ]
    }

    /// Runs `pgbackrest --config --stanza [--pg1-path --pg1-port --pg1-socket-path of node] args`
    /// as the agent's OS user and returns what it printed; the test fails if it runs for more
    /// than five minutes.
    pub fn run(&self, node: Option<&NodeConfig>, args: &[&str]) -> Output {
        let mut all = vec![format!("--config={}", self.config.display()), format!("--stanza={}", self.stanza)];
        if let Some(n) = node {
            all.push(format!("--pg1-path={}", n.data_dir.display()));
            all.push(format!("--pg1-port={}", n.pg_port));
            all.push(format!("--pg1-socket-path={}", n.socket_dir.display()));
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&std::ffi::OsStr> = all.iter().map(std::ffi::OsStr::new).collect();
        super::agent::run_to_exit(Path::new(PGBACKREST_BIN), &all, &self.dir, &[], COMMAND_TIMEOUT)
    }

    /// [`Repo::run`], failing the test with pgBackRest's output unless it succeeds; returns its
    /// stdout.
    pub fn run_ok(&self, node: Option<&NodeConfig>, args: &[&str]) -> String {
        let out = self.run(node, args);
        assert!(
            out.status.success(),
            "pgbackrest {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `stanza-create` on `node`, a running primary (its data directory, port and socket directory).
    pub fn stanza_create(&self, node: &NodeConfig) {
        self.run_ok(Some(node), &["stanza-create"]);
    }

    /// A backup of `node`, a running primary.
    pub fn backup(&self, node: &NodeConfig, kind: BackupType) {
        self.run_ok(Some(node), &[&format!("--type={}", kind.as_str()), "backup"]);
    }

    /// `check` on `node`: its configuration, and that WAL it switches to reaches the archive.
    pub fn check(&self, node: &NodeConfig) -> Output {
        self.run(Some(node), &["check"])
    }

    /// `info --output=json` for this stanza (the object of its stanza).
    pub fn info(&self) -> serde_json::Value {
        let out = self.run_ok(None, &["--output=json", "info"]);
        let all: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("pgbackrest info is not JSON ({e}): {out}"));
        all.as_array()
            .and_then(|stanzas| stanzas.iter().find(|s| s["name"] == self.stanza.as_str()))
            .cloned()
            .unwrap_or_else(|| panic!("pgbackrest info has no stanza {}: {out}", self.stanza))
    }

    /// The labels of the backups in the repository, oldest first (`20261205-222929F`, ...).
    pub fn backup_labels(&self) -> Vec<String> {
        let info = self.info();
        let backups = info["backup"].as_array().cloned().unwrap_or_default();
        backups.iter().filter_map(|b| b["label"].as_str().map(str::to_string)).collect()
    }

    /// What pgBackRest logged of `command` (`restore`, `backup`, `archive-push-async`, ...) in
    /// `<log-path>/<stanza>-<command>.log`; empty if it never ran.
    pub fn command_log(&self, command: &str) -> String {
        std::fs::read_to_string(self.dir.join("log").join(format!("{}-{command}.log", self.stanza))).unwrap_or_default()
    }

    /// Makes a repository on a path unreadable to the agent's user (mode 0000), as a broken mount
    /// would be. Panics for a repository in S3 (stop the server instead).
    pub fn make_unreadable(&self) {
        let Storage::Path(path) = &self.storage else { panic!("make_unreadable is for a repository on a path") };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000))
            .unwrap_or_else(|e| panic!("chmod 000 {}: {e}", path.display()));
    }

    /// Undoes [`Repo::make_unreadable`].
    pub fn make_readable(&self) {
        if let Storage::Path(path) = &self.storage {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        }
    }
}

impl Drop for Repo {
    /// A repository made unreadable is readable again, so the test directory can be removed.
    fn drop(&mut self) {
        self.make_readable();
    }
}
