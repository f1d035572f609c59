//! `rampart demote-cluster` and `rampart promote-cluster` (Patroni 4's verbs): a cluster made a
//! standby cluster of another one, and a standby cluster made to run on its own.
//!
//! Both write the `standby_cluster` section of the dynamic configuration (added, or removed) with
//! compare-and-swap on the `config` key's revision, after the same checks as `edit-config`; the
//! agents do the rest (rampart_core::standby_cluster): the leader restarts as the standby leader
//! keeping the lock, or the standby leader is promoted. The verb then waits until the leader's
//! key shows the new role, and says which it saw.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rampart_core::{Cluster, Role};
use rampart_dcs::Dcs;
use serde_json::{Map, Value};

use super::config_patch::validate;
use super::edit_config::current_config;
use super::prompt::Console;
use super::session::{block_on, timestamp, Session};
use super::target::{self, TargetArgs};

/// Options of `rampart demote-cluster`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DemoteArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The cluster (default: the configuration's `scope`).
    pub cluster: Option<String>,
    /// The other cluster's primary (or several hosts, comma-separated) to replicate from.
    #[arg(long)]
    pub host: Option<String>,
    /// Its port.
    #[arg(long)]
    pub port: Option<u16>,
    /// How to fetch WAL from the other cluster's archive.
    #[arg(long)]
    pub restore_command: Option<String>,
    /// The replication slot to use on the other cluster's primary.
    #[arg(long)]
    pub primary_slot_name: Option<String>,
    /// Do it without asking.
    #[arg(long)]
    pub force: bool,
}

/// Options of `rampart promote-cluster`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The cluster (default: the configuration's `scope`).
    pub cluster: Option<String>,
    /// Do it without asking.
    #[arg(long)]
    pub force: bool,
}

/// The `standby_cluster` section `demote-cluster` writes.
pub fn section(args: &DemoteArgs) -> Result<Value> {
    if args.host.is_none() && args.restore_command.is_none() {
        bail!("demote-cluster: give the other cluster's primary (--host) or its archive (--restore-command), or both");
    }
    let mut m = Map::new();
    if let Some(h) = &args.host {
        m.insert("host".into(), h.clone().into());
    }
    if let Some(p) = args.port {
        m.insert("port".into(), p.into());
    }
    if let Some(s) = &args.primary_slot_name {
        m.insert("primary_slot_name".into(), s.clone().into());
    }
    if let Some(c) = &args.restore_command {
        m.insert("restore_command".into(), c.clone().into());
    }
    Ok(Value::Object(m))
}

/// The configuration with `section` as its `standby_cluster` (`None`: without one).
pub fn with_section(config: &Value, section: Option<Value>) -> Value {
    let mut c = config.clone();
    if let Value::Object(m) = &mut c {
        match section {
            Some(s) => m.insert("standby_cluster".into(), s),
            None => m.remove("standby_cluster"),
        };
    }
    c
}

/// Whether the cluster's configuration makes it a standby cluster.
fn is_standby(cluster: &Cluster) -> bool {
    cluster.config.as_ref().is_some_and(|c| c.standby_cluster().is_some())
}

/// The leader's role as its key shows it, if there is a leader.
fn leader_role(cluster: &Cluster) -> Option<Role> {
    cluster.leader_member().map(|m| m.data.role.clone())
}

/// `rampart demote-cluster`.
pub fn run_demote(args: DemoteArgs) -> Result<()> {
    let target = target::resolve(&args.target, args.cluster.as_deref())?;
    let section = section(&args)?;
    block_on(async move {
        let session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        let scope = session.scope().to_string();
        if is_standby(&cluster) {
            bail!("demote-cluster: cluster {scope} is already a standby cluster");
        }
        let config = current_config(&cluster, &scope, "demote-cluster")?;
        let changed = validate(&with_section(&config, Some(section)))
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().replacen("edit-config", "demote-cluster", 1)))?;
        let question = format!(
            "Are you sure you want to demote cluster {scope}? Its primary stops taking writes and follows the other \
             cluster"
        );
        if !args.force && !Console::stdio("demote-cluster").confirm(&question)? {
            bail!("demote-cluster: aborted; nothing changed");
        }
        write(&session, &cluster, &changed, "demote-cluster").await?;
        println!("{} cluster {scope}: standby_cluster written; waiting for the leader to follow it", timestamp());
        wait_for(&session, Role::StandbyLeader, "demote-cluster").await
    })
}

/// `rampart promote-cluster`.
pub fn run_promote(args: PromoteArgs) -> Result<()> {
    let target = target::resolve(&args.target, args.cluster.as_deref())?;
    block_on(async move {
        let session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        let scope = session.scope().to_string();
        if !is_standby(&cluster) {
            bail!("promote-cluster: cluster {scope} is not a standby cluster");
        }
        let config = current_config(&cluster, &scope, "promote-cluster")?;
        let changed = validate(&with_section(&config, None))
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().replacen("edit-config", "promote-cluster", 1)))?;
        let question = format!(
            "Are you sure you want to promote cluster {scope}? Its standby leader becomes a writable primary and \
             stops following the other cluster"
        );
        if !args.force && !Console::stdio("promote-cluster").confirm(&question)? {
            bail!("promote-cluster: aborted; nothing changed");
        }
        write(&session, &cluster, &changed, "promote-cluster").await?;
        println!(
            "{} cluster {scope}: standby_cluster removed; waiting for the standby leader's promotion",
            timestamp()
        );
        wait_for(&session, Role::Primary, "promote-cluster").await
    })
}

/// Writes the configuration if the key is still at the revision read.
async fn write(session: &Session, cluster: &Cluster, config: &Value, verb: &str) -> Result<()> {
    let json = serde_json::to_string(config)?;
    if !session.dcs.set_config(&json, Some(cluster.config_revision), session.deadline()).await? {
        bail!(
            "{verb}: the configuration was changed by someone else meanwhile (it is no longer at revision {}); nothing \
             was written, run {verb} again",
            cluster.config_revision
        );
    }
    Ok(())
}

/// Waits until the leader's key shows `role`, for at most three ttl (a restart or a promotion
/// takes a cycle or two, then a start).
async fn wait_for(session: &Session, role: Role, verb: &str) -> Result<()> {
    let cluster = session.cluster().await?;
    let ttl = cluster.config.as_ref().map(|c| c.ttl).unwrap_or(30);
    let until = Instant::now() + Duration::from_secs(3 * ttl.max(10));
    loop {
        let cluster = session.cluster().await?;
        if let (Some(leader), Some(have)) = (cluster.leader_member(), leader_role(&cluster)) {
            if have == role {
                println!("{} {verb}: {} is now the {}", timestamp(), leader.name, role_words(&role));
                return Ok(());
            }
        }
        if Instant::now() >= until {
            let now = leader_role(&cluster).map_or("no leader".to_string(), |r| format!("the leader's role is {r}"));
            bail!(
                "{verb}: the configuration was written, but after {} s {now}, not {role}; look at `rampart list` and \
                 the agents' logs",
                3 * ttl.max(10)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn role_words(role: &Role) -> &'static str {
    match role {
        Role::StandbyLeader => "standby leader",
        _ => "primary",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn demote_writes_only_what_was_given_and_needs_something_to_follow() {
        let args = DemoteArgs {
            host: Some("10.0.0.1".into()),
            port: Some(5433),
            primary_slot_name: Some("dc2".into()),
            ..Default::default()
        };
        assert_eq!(section(&args).unwrap(), json!({"host": "10.0.0.1", "port": 5433, "primary_slot_name": "dc2"}));
        let archive = DemoteArgs { restore_command: Some("cp /a/%f %p".into()), ..Default::default() };
        assert_eq!(section(&archive).unwrap(), json!({"restore_command": "cp /a/%f %p"}));
        let e = section(&DemoteArgs::default()).unwrap_err().to_string();
        assert!(e.contains("--host") && e.contains("--restore-command"), "{e}");
    }

    #[test]
    fn the_section_is_added_and_removed_and_nothing_else_changes() {
        let before = json!({"ttl": 30, "postgresql": {"use_slots": true}});
        let demoted = with_section(&before, Some(json!({"host": "h"})));
        assert_eq!(demoted, json!({"ttl": 30, "postgresql": {"use_slots": true}, "standby_cluster": {"host": "h"}}));
        assert_eq!(with_section(&demoted, None), before);
    }
}
