//! `rampart demote-cluster` and `rampart promote-cluster` (Patroni 4's verbs): a cluster made a
//! standby cluster of another one, and a standby cluster made to run on its own.
//!
//! As patronictl does them: the cluster must have a leader (and not be in the asked state
//! already); the topology is shown; after confirmation (or `--force`) the leader's REST API gets
//! `PATCH /config {"standby_cluster": {...}}` (or `null`); then the verb watches the DCS until the
//! leader runs in the new role (and, for a demotion, is running again) and says
//! `<time> cluster is successfully demoted|promoted`. When no leader's API takes the request,
//! the `config` key is written with compare-and-swap instead (the agents read it either way).
//! The agents do the rest (rampart_core::standby_cluster): the leader restarts as the standby
//! leader keeping the lock, or the standby leader is promoted.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rampart_core::{Cluster, PgState, Role};
use rampart_dcs::Dcs;
use serde_json::{json, Map, Value};

use super::config_patch::validate;
use super::edit_config::current_config;
use super::prompt::Console;
use super::rest::{Method, QUICK};
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
    if args.host.is_none() && args.port.is_none() && args.restore_command.is_none() {
        bail!("demote-cluster: At least --host, --port or --restore-command should be specified");
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

/// `rampart demote-cluster`.
pub fn run_demote(args: DemoteArgs) -> Result<()> {
    let target = target::resolve(&args.target, args.cluster.as_deref())?;
    let section = section(&args)?;
    block_on(change_role(target, args.force, Some(section)))
}

/// `rampart promote-cluster`.
pub fn run_promote(args: PromoteArgs) -> Result<()> {
    let target = target::resolve(&args.target, args.cluster.as_deref())?;
    block_on(change_role(target, args.force, None))
}

/// Patroni's `change_cluster_role`: `section` demotes, `None` promotes.
async fn change_role(target: target::Target, force: bool, section: Option<Value>) -> Result<()> {
    let demote = section.is_some();
    let (verb, action, target_role) = match demote {
        true => ("demote-cluster", "demot", Role::StandbyLeader),
        false => ("promote-cluster", "promot", Role::Primary),
    };
    let mut session = Session::open(target).await?;
    let cluster = session.cluster().await?;
    let scope = session.scope().to_string();
    let Some(leader) = cluster.leader_member() else {
        bail!("{verb}: Cluster has no leader, {action}ion is not possible");
    };
    let leader_name = leader.name.clone();
    if leader.data.role == target_role {
        bail!("{verb}: Cluster is already in the required state");
    }
    println!("Current cluster topology");
    print!("{}", super::list::render_table(&scope, &cluster));
    let question = format!("Are you sure you want to {action}e {scope} cluster?");
    if !force && !Console::stdio(verb).confirm(&question)? {
        bail!("{verb}: Aborted cluster {action}ion");
    }
    let body = json!({ "standby_cluster": section.clone().unwrap_or(Value::Null) });
    let answer = match leader.data.api_url.is_empty() {
        true => None,
        false => Some(session.rest()?.call(leader, Method::Patch, "config", Some(&body), QUICK).await),
    };
    match answer {
        Some(Ok(r)) if r.ok() => {}
        Some(Ok(r)) if !r.unsupported() => {
            bail!("{verb}: Failed to {action}e {scope} cluster: /config PATCH status code={}, ({})", r.status, r.text)
        }
        other => {
            if let Some(why) = other.map(|o| o.map_or_else(|e| e.to_string(), |r| format!("status {}", r.status))) {
                eprintln!(
                    "{} {verb}: the leader's REST API did not take the request ({why}); writing the config key",
                    timestamp()
                );
            }
            let config = current_config(&cluster, &scope, verb)?;
            let changed = validate(&with_section(&config, section))
                .map_err(|e| anyhow::anyhow!("{}", e.to_string().replacen("edit-config", verb, 1)))?;
            write(&session, &cluster, &changed, verb).await?;
        }
    }
    wait_for(&session, &leader_name, target_role, verb, action).await
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

/// Patroni's wait: until the leader runs in `role` (and, demoting, the old leader runs again), for
/// at most three ttl (a restart or a promotion takes a cycle or two, then a start).
async fn wait_for(session: &Session, old_leader: &str, role: Role, verb: &str, action: &str) -> Result<()> {
    let cluster = session.cluster().await?;
    let ttl = cluster.config.as_ref().map(|c| c.ttl).unwrap_or(30).max(10);
    let until = Instant::now() + Duration::from_secs(3 * ttl);
    loop {
        let cluster = session.cluster().await?;
        let running = |m: &rampart_core::Member| m.data.state == PgState::Running;
        let leader_in_role = cluster.leader_member().is_some_and(|l| l.data.role == role && running(l));
        let old_running = role == Role::Primary || cluster.member(old_leader).is_some_and(running);
        if leader_in_role && old_running {
            println!("{} cluster is successfully {action}ed", timestamp());
            return Ok(());
        }
        if Instant::now() >= until {
            let now = cluster.leader_member().map_or("no leader".to_string(), |l| {
                format!("the leader {} is {} ({})", l.name, l.data.role, l.data.state)
            });
            bail!(
                "{verb}: the request was taken, but after {} s {now}, not a running {} ({}): look at `rampart list` \
                 and the agents' logs",
                3 * ttl,
                role_words(&role),
                role
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
        assert_eq!(e, "demote-cluster: At least --host, --port or --restore-command should be specified");
    }

    #[test]
    fn the_section_is_added_and_removed_and_nothing_else_changes() {
        let before = json!({"ttl": 30, "postgresql": {"use_slots": true}});
        let demoted = with_section(&before, Some(json!({"host": "h"})));
        assert_eq!(demoted, json!({"ttl": 30, "postgresql": {"use_slots": true}, "standby_cluster": {"host": "h"}}));
        assert_eq!(with_section(&demoted, None), before);
    }
}
