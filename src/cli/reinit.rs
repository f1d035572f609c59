//! `rampart reinit MEMBER...`: wipe replicas' data directories and clone them again
//! (`POST /reinitialize` with `{"force", "from_leader"}` on each member's REST API).
//!
//! Only replicas: the leader is refused here by name, before any request. With `--wait` the
//! command follows each member's `GET /patroni` until it runs again, with a spinner (on a
//! terminal) while it clones. A reinitialize counts as done when the member was seen busy and
//! runs again, or runs a postmaster started after the request's: one that finished between two
//! looks (a small database clones in a second) is done, not "never started". A member whose answer says a reinitialize is already running is
//! offered to cancel it and start over (interactively, or at once with `--force`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use rampart_core::{Cluster, Member};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::members::{select, Role};
use super::prompt::Console;
use super::rest::{Method, Reply, QUICK, REINIT};
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

/// Where a member is in its reinitialization, from its `GET /patroni`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still running as before: the agent has not started yet.
    NotStarted,
    /// Stopped, cloning, starting: the state it shows.
    Busy(String),
    /// Running again after having been busy.
    Done,
}

/// What one look at a member showed: its state and its postmaster's start time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Look {
    /// `state` of `GET /patroni`.
    pub state: String,
    /// `postmaster_start_time`, while PostgreSQL runs.
    pub started: Option<String>,
}

impl Look {
    fn of(body: &Value) -> Look {
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        Look { state: text("state").unwrap_or_default(), started: text("postmaster_start_time") }
    }
}

/// Advances a member's progress. `first` is what it showed before the request; `now` is `None`
/// when its API did not answer (as while its agent restarts PostgreSQL).
pub fn advance(before: &Progress, first: Option<&Look>, now: Option<&Look>) -> Progress {
    match (before, now) {
        (Progress::Done, _) => Progress::Done,
        (_, None) => Progress::Busy("no answer from its REST API".into()),
        (Progress::Busy(_), Some(l)) if l.state == "running" => Progress::Done,
        // Running a postmaster other than the one before the request: it was re-cloned and
        // started between two looks.
        (Progress::NotStarted, Some(l)) if l.state == "running" => {
            let restarted = l.started.is_some() && first.is_some_and(|f| f.started != l.started);
            if restarted {
                Progress::Done
            } else {
                Progress::NotStarted
            }
        }
        (_, Some(l)) => Progress::Busy(l.state.clone()),
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
            let first = if args.wait { look(rest, m).await } else { None };
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
                    started.push(((*m).clone(), first.clone()));
                } else {
                    failed += 1;
                }
                break;
            }
        }
        if args.wait && !started.is_empty() {
            wait(session.rest()?, &started).await?;
        }
        if failed > 0 {
            bail!("reinit: failed on {failed} of {} members", members.len());
        }
        Ok(())
    })
}

/// One look at a member's `GET /patroni`; `None` when it does not answer.
async fn look(rest: &super::rest::Rest, m: &Member) -> Option<Look> {
    match rest.call(m, Method::Get, "patroni", None, QUICK).await {
        Ok(r) if r.ok() => serde_json::from_str::<Value>(&r.text).ok().map(|v| Look::of(&v)),
        _ => None,
    }
}

/// Follows the members until each has been reinitialized and runs again.
async fn wait(rest: &super::rest::Rest, members: &[(Member, Option<Look>)]) -> Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    let names: Vec<&str> = members.iter().map(|(m, _)| m.name.as_str()).collect();
    println!("Waiting for reinitialize to complete on: {}", names.join(", "));
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let mut progress: BTreeMap<String, Progress> =
        names.iter().map(|n| (n.to_string(), Progress::NotStarted)).collect();
    let begun = Instant::now();
    // An agent acts on the request within a cycle or two; a member still running the same
    // postmaster after this long never started.
    let start_grace = Duration::from_secs(30);
    loop {
        for (m, first) in members {
            let Some(p) = progress.get_mut(&m.name) else { continue };
            if *p == Progress::Done {
                continue;
            }
            let next = advance(p, first.as_ref(), look(rest, m).await.as_ref());
            if next != *p {
                let line = match &next {
                    Progress::Done => format!("Reinitialize is completed on: {}", m.name),
                    Progress::Busy(s) => format!("{}: {s}", m.name),
                    Progress::NotStarted => String::new(),
                };
                spinner.suspend(|| println!("{line}"));
                *p = next;
            }
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

    fn at(state: &str, started: Option<&str>) -> Look {
        Look { state: state.into(), started: started.map(str::to_string) }
    }

    #[test]
    fn progress_needs_a_change_before_done() {
        let first = at("running", Some("t1"));
        let f = Some(&first);
        let p = advance(&Progress::NotStarted, f, Some(&first));
        assert_eq!(p, Progress::NotStarted, "not started yet");
        let p = advance(&p, f, Some(&at("stopped", None)));
        let p = advance(&p, f, Some(&at("creating replica", None)));
        assert_eq!(p, Progress::Busy("creating replica".into()));
        let p = advance(&p, f, None);
        assert_eq!(p, Progress::Busy("no answer from its REST API".into()));
        assert_eq!(advance(&p, f, Some(&first)), Progress::Done);
        assert_eq!(advance(&Progress::Done, f, Some(&at("stopped", None))), Progress::Done);
    }

    #[test]
    fn a_reinitialize_finished_between_two_looks_is_done() {
        let first = at("running", Some("t1"));
        let again = at("running", Some("t2"));
        assert_eq!(advance(&Progress::NotStarted, Some(&first), Some(&again)), Progress::Done);
        // Without a first look, a running member proves nothing yet.
        assert_eq!(advance(&Progress::NotStarted, None, Some(&again)), Progress::NotStarted);
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
