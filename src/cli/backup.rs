//! `rampart backup [--role leader|replica] -- COMMAND [ARG...]`: runs a backup command on the one
//! member that should run it (rule: [`rampart_core::backup::decide`]), so the same crontab line
//! can stand on every member (seed 002 runs `pgbackrest --type=full backup` from cron); on the
//! others it says why not and exits 0. The member is the one the configuration file names
//! (`-c` with the member's own file), or `--member`.
//!
//! The run is recorded in the cluster's `backup` key (member, role, program, state, times, exit
//! code) before and after, which `list` and the agents' `/metrics` show. Only the program's name
//! is recorded: the arguments may carry secrets. The exit code is the command's.

use anyhow::{bail, Context, Result};
use rampart_core::backup::{decide, BackupReport, BackupRole, BackupState};
use rampart_dcs::Dcs;

use super::session::{block_on, Session};
use super::target::{self, TargetArgs};

/// Options of `rampart backup`.
#[derive(clap::Args, Debug, Clone)]
pub struct BackupArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Run on the leader, or on one replica (the least behind, then the first by name).
    #[arg(short = 'r', long, value_enum, default_value = "leader")]
    pub role: RoleArg,
    /// This member's name (default: `name` in the configuration file).
    #[arg(long, value_name = "NAME")]
    pub member: Option<String>,
    /// The backup command and its arguments (after `--`).
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `--role`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    /// The leader (`primary` is the same).
    #[value(alias = "primary", alias = "master")]
    Leader,
    /// One replica.
    Replica,
}

impl From<RoleArg> for BackupRole {
    fn from(r: RoleArg) -> BackupRole {
        match r {
            RoleArg::Leader => BackupRole::Leader,
            RoleArg::Replica => BackupRole::Replica,
        }
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `rampart backup`.
pub fn run(args: BackupArgs) -> Result<()> {
    let (target, name) = target::resolve_with_name(&args.target)?;
    let Some(me) = args.member.clone().or(name) else {
        bail!("backup: which member is this? Give -c with this member's configuration file (its `name`), or --member NAME");
    };
    let role = BackupRole::from(args.role);
    let code = std::cell::Cell::new(0);
    block_on(async {
        let session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        if let Err(skip) = decide(&cluster, &me, role) {
            println!("backup: not running it on {me} (role {}): {skip}", role.as_str());
            return Ok(());
        }
        let program = args.command[0].clone();
        let mut report = BackupReport {
            member: me.clone(),
            role,
            program: std::path::Path::new(&program)
                .file_name()
                .map_or(program.clone(), |n| n.to_string_lossy().into_owned()),
            state: BackupState::Running,
            started_at: now_secs(),
            finished_at: None,
            exit_code: None,
            last_success_at: cluster.backup.as_ref().and_then(|b| b.last_success_at),
        };
        session.dcs.write_backup(&report, session.deadline()).await.context("backup: recording the start in etcd")?;
        println!("backup: running {} on {me} ({})", report.program, role.as_str());
        let status = tokio::process::Command::new(&program).args(&args.command[1..]).status().await;
        report.finished_at = Some(now_secs());
        let outcome = match &status {
            Ok(s) => {
                report.exit_code = s.code();
                report.state = if s.success() { BackupState::Succeeded } else { BackupState::Failed };
                if s.success() {
                    report.last_success_at = report.finished_at;
                }
                code.set(s.code().unwrap_or(1));
                format!("{} ({s})", report.state.as_str())
            }
            Err(e) => {
                report.state = BackupState::Failed;
                code.set(127);
                format!("failed: could not run {program}: {e}")
            }
        };
        if let Err(e) = session.dcs.write_backup(&report, session.deadline()).await {
            eprintln!("backup: could not record the result in etcd: {e}");
        }
        println!("backup: {outcome} after {:.1} s", report.duration_secs().unwrap_or(0.0));
        Ok(())
    })?;
    match code.get() {
        0 => Ok(()),
        c => std::process::exit(c),
    }
}
