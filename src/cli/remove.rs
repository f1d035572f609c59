//! `rampart remove CLUSTER`: deletes every key of a cluster from the DCS, after the operator has
//! typed the cluster name, then "Yes I am aware", then (if a leader still holds the lock) the
//! leader's name, as patronictl asks.
//!
//! There is no `--force`: the typed answers are the confirmation. They may come from a pipe
//! (`printf 'pg\nYes I am aware\n' | rampart remove pg`), which is how scripts do it on purpose.

use anyhow::{bail, Result};
use rampart_core::Cluster;
use rampart_dcs::Dcs;

use super::prompt::Console;
use super::session::{block_on, Session};
use super::table::Format;
use super::target::{self, TargetArgs};

/// What the operator must type to go on.
pub const AWARE: &str = "Yes I am aware";

/// Options of `rampart remove`.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Name of the cluster to remove (it replaces the configuration's `scope`).
    pub cluster: String,
    /// Format of the member table shown first.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: Format,
}

/// Whether anything of the cluster is in the DCS.
fn exists(c: &Cluster) -> bool {
    c.initialize.is_some()
        || c.config.is_some()
        || c.leader.is_some()
        || !c.members.is_empty()
        || !c.history.is_empty()
        || c.failover.is_some()
}

/// The typed confirmations; Ok only when each answer is exactly right.
pub fn confirm(console: &mut Console, scope: &str, leader: Option<&str>) -> Result<()> {
    let typed = console.typed("Please confirm the cluster name to remove")?;
    if typed != scope {
        bail!("remove: cluster names do not match (typed {typed:?}, removing {scope:?}); nothing removed");
    }
    let typed = console.typed(&format!(
        "You are about to remove all information in the DCS for cluster {scope}. Are you sure you want to remove this \
         cluster? Type \"{AWARE}\""
    ))?;
    if typed != AWARE {
        bail!("remove: you did not type \"{AWARE}\" exactly; nothing removed");
    }
    if let Some(leader) = leader {
        let typed = console.typed("This cluster currently has a leader. Please type the leader's name to continue")?;
        if typed != leader {
            bail!("remove: {typed:?} is not the current leader of cluster {scope}; nothing removed");
        }
    }
    Ok(())
}

/// `rampart remove`.
pub fn run(args: RemoveArgs) -> Result<()> {
    let target = target::resolve(&args.target, Some(&args.cluster))?;
    block_on(async move {
        let session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        if !exists(&cluster) {
            bail!(
                "remove: there is nothing under {} in etcd ({}); nothing to remove",
                session.target.prefix().as_str(),
                session.target.endpoints()
            );
        }
        print!("{}", super::list::render(session.scope(), &cluster, args.format, false, false));
        let mut console = Console::stdio("remove");
        confirm(&mut console, session.scope(), cluster.leader.as_ref().map(|l| l.name.as_str()))?;
        session.dcs.delete_cluster(session.deadline()).await?;
        println!("Removed every key under {}", session.target.prefix().as_str());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::prompt::tests::console;

    #[test]
    fn every_answer_must_be_exact() {
        let (mut c, _) = console("remove", "pg\nYes I am aware\nn1\n", false);
        confirm(&mut c, "pg", Some("n1")).unwrap();
        let (mut c, _) = console("remove", "pg\nYes I am aware\n", true);
        confirm(&mut c, "pg", None).unwrap();

        for (input, leader, want) in [
            ("pgx\n", None, "cluster names do not match"),
            ("pg\nyes i am aware\n", None, "did not type \"Yes I am aware\" exactly"),
            ("pg\nYes I am aware\nn2\n", Some("n1"), "\"n2\" is not the current leader"),
            ("pg\n", None, "aborted"),
            ("", None, "aborted"),
        ] {
            let (mut c, _) = console("remove", input, false);
            let e = confirm(&mut c, "pg", leader).unwrap_err().to_string();
            assert!(e.starts_with("remove: ") && e.contains(want), "{input:?}: {e}");
        }
    }
}
