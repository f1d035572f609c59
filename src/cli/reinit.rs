//! `rampart reinit MEMBER...`: wipe replicas' data directories and clone them again
//! (`POST /reinitialize` with `{"force", "from_leader"}` on each member's REST API).
//!
//! Only replicas: the leader is refused here by name, before any request. With `--wait` the
//! command follows each member's key in the DCS until it runs again, with a spinner (on a
//! terminal) while it clones. A member whose answer says a reinitialize is already running is
//! offered to cancel it and start over (interactively, or at once with `--force`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use rampart_core::{Cluster, Member};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::members::{select, Role};
use super::prompt::Console;
use super::rest::{Method, Reply, REINIT};
use super::session::{block_on, Session};
use super::target::{self, TargetArgs};

/// Options of `rampart reinit`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReinitArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// [CLUSTER] then the replicas to reinitialize. The cluster name is recognised when it is
    /// the configuration's `scope`, as patronictl writes it.
    #[arg(required = true)]
    pub members: Vec<String>,
    /// Do not ask; also cancel a reinitialize already running on a member.
    #[arg(long)]
    pub force: bool,
    /// Wait until every member runs again.
    #[arg(long)]
    pub wait: bool,
    /// Clone from the leader rather than from any healthy member.
    #[arg(long)]
    pub from_leader: bool,
}

/// The body of `POST /reinitialize`.
pub fn body(force: bool, from_leader: bool) -> Value {
    json!({"force": force, "from_leader": from_leader})
}

/// The replicas to reinitialize; the leader is refused by name.
pub fn choose<'c>(cluster: &'c Cluster, scope: &str, names: &[String]) -> Result<Vec<&'c Member>> {
    if let Some(l) = names.iter().find(|n| cluster.is_leader(n)) {
        bail!("reinit: {l} is the leader of cluster {scope}; only replicas can be reinitialized (switch over first)");
    }
    select(cluster, scope, "reinit", names, Role::Replica)
}

/// patronictl's line for one member's answer, and whether it started.
pub fn outcome(member: &str, reply: &Reply) -> (String, bool) {
    if reply.status >= 400 {
        (format!("Failed: reinitialize for member {member}, status code={}, ({})", reply.status, reply.text), false)
    } else {
        (format!("Success: reinitialize for member {member}"), true)
    }
}

/// Where a member is in its reinitialization, from its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still running as before: the agent has not started yet.
    NotStarted,
    /// Stopped, cloning, starting: the state it shows.
    Busy(String),
    /// Running again after having been busy.
    Done,
}

/// Advances a member's progress from its key (`None`: the key is gone, as while it restarts).
pub fn advance(before: &Progress, state: Option<&str>) -> Progress {
    match (before, state) {
        (Progress::Done, _) => Progress::Done,
        (Progress::NotStarted, Some("running")) => Progress::NotStarted,
        (Progress::Busy(_), Some("running")) => Progress::Done,
        (_, Some(s)) => Progress::Busy(s.to_string()),
        (_, None) => Progress::Busy("no member key".into()),
    }
}

/// `rampart reinit`.
pub fn run(args: ReinitArgs) -> Result<()> {
    let (target, members) = target::resolve_with_members(&args.target, &args.members)?;
    if members.is_empty() {
        bail!("reinit: name the members to reinitialize ({} is the cluster)", target.scope);
    }
    let args = ReinitArgs { members, ..args };
    block_on(async move {
        let mut session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        let scope = session.scope().to_string();
        let members = choose(&cluster, &scope, &args.members)?;
        print!("{}", super::list::render_table(&scope, &cluster));
        let mut console = Console::stdio("reinit");
        let list = members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
        if !args.force && !console.confirm(&format!("Are you sure you want to reinitialize members {list}?"))? {
            bail!("reinit: aborted");
        }
        let rest = session.rest()?;
        let mut started = Vec::new();
        let mut failed = 0;
        for m in &members {
            let mut force = args.force;
            loop {
                let (line, ok, retry) = match rest
                    .call(m, Method::Post, "reinitialize", Some(&body(force, args.from_leader)), REINIT)
                    .await
                {
                    Ok(r) => {
                        let (line, ok) = outcome(&m.name, &r);
                        let running = !ok && r.text.ends_with("already in progress");
                        (line, ok, running)
                    }
                    Err(e) => (format!("Failed: reinitialize for member {}: {e}", m.name), false, false),
                };
                println!("{line}");
                if retry
                    && !force
                    && console.is_interactive()
                    && console.confirm("Do you want to cancel it and reinitialize anyway?")?
                {
                    force = true;
                    continue;
                }
                if ok {
                    started.push(m.name.clone());
                } else {
                    failed += 1;
                }
                break;
            }
        }
        if args.wait && !started.is_empty() {
            wait(&session, &started).await?;
        }
        if failed > 0 {
            bail!("reinit: failed on {failed} of {} members", members.len());
        }
        Ok(())
    })
}

/// Follows the members' keys until each has been busy and runs again.
async fn wait(session: &Session, names: &[String]) -> Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    println!("Waiting for reinitialize to complete on: {}", names.join(", "));
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let mut progress: BTreeMap<String, Progress> = names.iter().map(|n| (n.clone(), Progress::NotStarted)).collect();
    let begun = Instant::now();
    // An agent acts on the request within a cycle or two; a member still plainly running after
    // this long never started.
    let start_grace = Duration::from_secs(30);
    loop {
        match session.cluster().await {
            Ok(c) => {
                for (name, p) in progress.iter_mut() {
                    let next = advance(p, c.member(name).map(|m| m.data.state.as_str()));
                    if next != *p {
                        let line = match &next {
                            Progress::Done => format!("Reinitialize is completed on: {name}"),
                            Progress::Busy(s) => format!("{name}: {s}"),
                            Progress::NotStarted => String::new(),
                        };
                        spinner.suspend(|| println!("{line}"));
                        *p = next;
                    }
                }
            }
            Err(e) => spinner.suspend(|| eprintln!("{e:#}")),
        }
        let busy: Vec<String> = progress
            .iter()
            .filter_map(|(n, p)| match p {
                Progress::Busy(s) => Some(format!("{n}: {s}")),
                Progress::NotStarted => Some(format!("{n}: waiting for its agent")),
                Progress::Done => None,
            })
            .collect();
        if busy.is_empty() {
            spinner.finish_and_clear();
            return Ok(());
        }
        let stuck: Vec<&String> =
            progress.iter().filter(|(_, p)| **p == Progress::NotStarted).map(|(n, _)| n).collect();
        if !stuck.is_empty() && begun.elapsed() > start_grace {
            spinner.finish_and_clear();
            bail!(
                "reinit: {} still running as before {} s after the request; see the agent log",
                stuck.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                start_grace.as_secs()
            );
        }
        spinner.set_message(busy.join(", "));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::members::tests::three;

    #[test]
    fn only_replicas_and_patroni_body() {
        let c = three();
        let e = choose(&c, "pg", &["b".into(), "a".into()]).unwrap_err().to_string();
        assert_eq!(e, "reinit: a is the leader of cluster pg; only replicas can be reinitialized (switch over first)");
        assert_eq!(choose(&c, "pg", &["c".into()]).unwrap()[0].name, "c");
        assert!(choose(&c, "pg", &["z".into()]).unwrap_err().to_string().contains("z is not a member"));
        assert_eq!(body(true, false), json!({"force": true, "from_leader": false}));
    }

    #[test]
    fn progress_needs_a_change_before_done() {
        let p = advance(&Progress::NotStarted, Some("running"));
        assert_eq!(p, Progress::NotStarted, "not started yet");
        let p = advance(&p, Some("stopped"));
        let p = advance(&p, Some("creating replica"));
        assert_eq!(p, Progress::Busy("creating replica".into()));
        let p = advance(&p, None);
        assert_eq!(p, Progress::Busy("no member key".into()));
        assert_eq!(advance(&p, Some("running")), Progress::Done);
        assert_eq!(advance(&Progress::Done, Some("stopped")), Progress::Done);
    }

    #[test]
    fn answers() {
        let r = |status, text: &str| Reply { status, text: text.into() };
        assert_eq!(outcome("b", &r(200, "reinitialize started")), ("Success: reinitialize for member b".into(), true));
        assert_eq!(
            outcome("a", &r(503, "I am the leader, can not reinitialize")).0,
            "Failed: reinitialize for member a, status code=503, (I am the leader, can not reinitialize)"
        );
    }
}
