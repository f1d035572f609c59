//! `rampart pause` and `rampart resume`: maintenance mode on and off, as patronictl does it:
//! `PATCH /config {"pause": true}` (or `null`) on a member's REST API, the leader first.
//!
//! When no member's API can take the request (none reachable, or an agent without the write
//! endpoints), the `config` key is written directly in the DCS with compare-and-swap on its
//! revision, retried on a concurrent change: the agents read it each cycle either way. `--wait`
//! then watches the member keys until every member that was there publishes the new state.

use std::time::Duration;

use anyhow::{bail, Result};
use rampart_core::{Cluster, Member};
use rampart_dcs::Dcs;
use serde_json::{json, Value};

use super::edit_config::current_config;
use super::rest::{Method, QUICK};
use super::session::{block_on, timestamp, Session};
use super::target::{self, TargetArgs};

/// Options of `rampart pause` and `rampart resume`.
#[derive(clap::Args, Debug, Clone)]
pub struct PauseArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The cluster (default: the configuration's `scope`).
    pub cluster: Option<String>,
    /// Wait until every member reports the new state.
    #[arg(long)]
    pub wait: bool,
}

fn verb(paused: bool) -> &'static str {
    if paused {
        "pause"
    } else {
        "resume"
    }
}

/// The body of `PATCH /config`.
pub fn patch_body(paused: bool) -> Value {
    json!({ "pause": if paused { Value::Bool(true) } else { Value::Null } })
}

/// The configuration with maintenance mode set (`pause: true`) or cleared (key removed).
pub fn toggled(config: &Value, paused: bool) -> Value {
    let mut c = config.clone();
    super::config_patch::merge(&mut c, &patch_body(paused));
    c
}

/// Whether a member's key shows maintenance mode.
pub fn member_paused(m: &Member) -> bool {
    m.data.extra.get("pause").and_then(Value::as_bool).unwrap_or(false)
}

/// Members leader first, those with a REST API only.
pub fn leader_first(cluster: &Cluster) -> Vec<&Member> {
    let mut out: Vec<&Member> = cluster.leader_member().into_iter().collect();
    out.extend(cluster.members.iter().filter(|m| !cluster.is_leader(&m.name)));
    out.retain(|m| !m.data.api_url.is_empty());
    out
}

/// Members of `before` (with an API) whose key in `now` does not show `paused` yet.
pub fn not_yet(before: &Cluster, now: &Cluster, paused: bool) -> Vec<String> {
    before
        .members
        .iter()
        .filter(|m| !m.data.api_url.is_empty())
        .filter(|m| now.member(&m.name).is_none_or(|n| member_paused(n) != paused))
        .map(|m| m.name.clone())
        .collect()
}

/// `rampart pause` (`paused`) or `rampart resume`.
pub fn run(args: PauseArgs, paused: bool) -> Result<()> {
    let target = target::resolve(&args.target, args.cluster.as_deref())?;
    block_on(async move {
        let v = verb(paused);
        let mut session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        let scope = session.scope().to_string();
        let config = current_config(&cluster, &scope, v)?;
        let is_paused = cluster.config.as_ref().is_some_and(|c| c.paused());
        if is_paused == paused {
            bail!("{v}: cluster {scope} is {}", if paused { "already paused" } else { "not paused" });
        }
        let body = patch_body(paused);
        let mut done = false;
        let rest = session.rest()?;
        for m in leader_first(&cluster) {
            match rest.call(m, Method::Patch, "config", Some(&body), QUICK).await {
                Ok(r) if r.ok() => {
                    done = true;
                    break;
                }
                Ok(r) if r.unsupported() => {
                    eprintln!("{} {}: the REST API of {} has no PATCH /config ({})", timestamp(), v, m.name, r.status)
                }
                Ok(r) => bail!(
                    "{v}: failed: {v} cluster management through {}: status code={}, ({})",
                    m.name,
                    r.status,
                    r.text
                ),
                Err(e) => eprintln!("{} {v}: {e}", timestamp()),
            }
        }
        if !done {
            eprintln!("{} {v}: no member's REST API took the request; writing the config key in the DCS", timestamp());
            write_config(&session, &cluster, config, paused).await?;
        }
        if !args.wait {
            println!("Success: cluster management is {}", if paused { "paused" } else { "resumed" });
            return Ok(());
        }
        println!("'{v}' request sent, waiting until it is recognized by all nodes");
        let loop_wait = cluster.config.as_ref().map(|c| c.loop_wait).unwrap_or(10);
        let limit = Duration::from_secs(2 * loop_wait + 10);
        let deadline = tokio::time::Instant::now() + limit;
        let pending = loop {
            let now = session.cluster().await?;
            let pending = not_yet(&cluster, &now, paused);
            if pending.is_empty() || tokio::time::Instant::now() >= deadline {
                break pending;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        if !pending.is_empty() {
            bail!(
                "{v}: {} did not report the new state within {} s (loop_wait is {loop_wait} s); check that their agents run \
                 (rampart list)",
                pending.join(", "),
                limit.as_secs()
            );
        }
        println!("Success: cluster management is {}", if paused { "paused" } else { "resumed" });
        Ok(())
    })
}

/// The DCS fallback: compare-and-swap on the config key, re-reading on a concurrent change.
async fn write_config(session: &Session, first: &Cluster, config: Value, paused: bool) -> Result<()> {
    let v = verb(paused);
    let (mut config, mut revision) = (config, first.config_revision);
    for _ in 0..5 {
        let json = serde_json::to_string(&toggled(&config, paused))?;
        if session.dcs.set_config(&json, Some(revision), session.deadline()).await? {
            return Ok(());
        }
        let again = session.cluster().await?;
        config = current_config(&again, session.scope(), v)?;
        revision = again.config_revision;
    }
    bail!("{v}: the config key kept changing under us (5 compare-and-swap attempts failed); try again")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::members::tests::{cluster, three};

    #[test]
    fn bodies_and_config() {
        assert_eq!(patch_body(true).to_string(), r#"{"pause":true}"#);
        assert_eq!(patch_body(false).to_string(), r#"{"pause":null}"#);
        let c = json!({"ttl": 30});
        assert_eq!(toggled(&c, true), json!({"ttl": 30, "pause": true}));
        assert_eq!(toggled(&toggled(&c, true), false), c);
    }

    #[test]
    fn leader_is_asked_first() {
        let mut c = three();
        c.leader.as_mut().unwrap().name = "b".into();
        let order: Vec<&str> = leader_first(&c).iter().map(|m| m.name.as_str()).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn waiting_tracks_members_that_were_there() {
        let before = three();
        let now = cluster(&[
            ("members/a", r#"{"api_url":"http://a/patroni","pause":true}"#),
            ("members/b", r#"{"api_url":"http://b/patroni"}"#),
            ("members/d", r#"{"api_url":"http://d/patroni"}"#),
        ]);
        assert_eq!(not_yet(&before, &now, true), ["b", "c"], "c vanished, b has not seen it, d is new");
        assert_eq!(not_yet(&before, &now, false), ["a", "c"]);
    }
}
