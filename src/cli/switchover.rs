//! `rampart switchover` and `rampart failover`: hand the leader role to another member.
//!
//! As patronictl: read the cluster from the DCS, show it, ask for what is missing (the leader
//! defaults to the current one, the candidate to "any healthy member", the time to now), check
//! the answers against the cluster, confirm, then `POST /switchover` (or `/failover`) to the
//! leader's REST API and print its answer. A failover in a cluster without a leader has no API
//! to ask, and a leader whose API cannot be reached (or has no such endpoint) cannot be asked
//! either: then the request is written to the DCS `failover` key, which every agent reads, and
//! the command waits for the leader key to change, printing progress.
//!
//! The planning ([`plan`]) is separate from the doing, so prompts and checks are unit-tested
//! with a scripted console.

use std::time::Duration;

use anyhow::{bail, Result};
use rampart_core::admission::{self, Kind, Refusal};
use rampart_core::manual::{outcome, Outcome};
use rampart_core::model::Failover;
use rampart_core::Cluster;
use rampart_dcs::Dcs;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::members::names;
use super::prompt::Console;
use super::rest::{Method, HANDOVER};
use super::session::{block_on, timestamp, Session};
use super::target::{self, TargetArgs};

/// Options of `rampart switchover`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SwitchoverArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The cluster (patronictl 4's positional CLUSTER_NAME); default: the configuration's `scope`.
    #[arg(value_name = "CLUSTER_NAME")]
    pub cluster: Option<String>,
    /// The current leader, as a check (default: whoever holds the leader lock).
    #[arg(long, visible_alias = "primary", value_name = "NAME")]
    pub leader: Option<String>,
    /// The member to promote (default: the healthiest one, chosen by the agents).
    #[arg(long, value_name = "NAME")]
    pub candidate: Option<String>,
    /// When: an ISO 8601 time (local time without an offset), or now.
    #[arg(long, value_name = "TIME")]
    pub scheduled: Option<String>,
    /// Do not ask anything: current leader, any candidate, now unless given.
    #[arg(long)]
    pub force: bool,
}

/// Options of `rampart failover`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The cluster (patronictl 4's positional CLUSTER_NAME); default: the configuration's `scope`.
    #[arg(value_name = "CLUSTER_NAME")]
    pub cluster: Option<String>,
    /// The member to promote.
    #[arg(long, value_name = "NAME")]
    pub candidate: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
}

/// A checked request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Switchover or failover.
    pub action: Kind,
    /// The leader now (always set for a switchover).
    pub leader: Option<String>,
    /// The member to promote; `None` lets the agents choose (switchover only).
    pub candidate: Option<String>,
    /// When, ISO 8601 with offset; `None` for now (switchover only).
    pub scheduled_at: Option<String>,
    /// A failover to a member the `sync` key does not list, which the operator confirmed (or
    /// forced): sent as `"force": true`, without which the agents refuse to promote a member that
    /// may lack acknowledged commits.
    pub force: bool,
}

impl Plan {
    /// The REST body: Patroni's `{"leader", "candidate", "scheduled_at"}` for a switchover,
    /// `{"candidate"}` for a failover.
    pub fn body(&self) -> Value {
        let mut b = serde_json::Map::new();
        if self.action == Kind::Switchover {
            if let Some(l) = &self.leader {
                b.insert("leader".into(), json!(l));
            }
        }
        if let Some(c) = &self.candidate {
            b.insert("candidate".into(), json!(c));
        }
        if let Some(at) = &self.scheduled_at {
            b.insert("scheduled_at".into(), json!(at));
        }
        if self.force {
            b.insert("force".into(), json!(true));
        }
        Value::Object(b)
    }

    /// The DCS `failover` key written when no API takes the request.
    pub fn failover_key(&self) -> Failover {
        Failover {
            leader: if self.action == Kind::Switchover { self.leader.clone() } else { None },
            member: self.candidate.clone(),
            scheduled_at: self.scheduled_at.clone(),
            force: self.force,
        }
    }

    /// The confirmation question.
    pub fn question(&self, scope: &str) -> String {
        let demote = self.leader.as_ref().map(|l| format!(", demoting current leader {l}")).unwrap_or_default();
        match &self.scheduled_at {
            Some(at) => format!("Are you sure you want to schedule switchover of cluster {scope} at {at}{demote}?"),
            None => format!("Are you sure you want to {} cluster {scope}{demote}?", self.action.name()),
        }
    }
}

/// Members that may be promoted: not the leader, not tagged `nofailover` (or priority 0), sorted.
pub fn candidates(cluster: &Cluster) -> Vec<String> {
    cluster
        .members
        .iter()
        .filter(|m| !cluster.is_leader(&m.name) && m.data.tags.can_fail_over())
        .map(|m| m.name.clone())
        .collect()
}

/// The CLI's words for a refusal of the core's admission rule (more telling than Patroni's, which
/// the REST API returns).
fn refusal_text(
    refusal: &Refusal,
    scope: &str,
    cands: &[String],
    cluster: &Cluster,
    candidate: Option<&str>,
) -> String {
    let leader = cluster.leader.as_ref().map_or("nobody", |l| l.name.as_str());
    let candidate = candidate.unwrap_or_default();
    match refusal {
        Refusal::FailoverWithoutCandidate => format!(
            "a failover needs a candidate (--candidate NAME); candidates in cluster {scope}: {}",
            cands.join(", ")
        ),
        Refusal::UnknownCandidate => {
            format!("candidate {candidate} is not a member of cluster {scope} (members: {})", names(&cluster.members))
        }
        Refusal::PausedWithoutCandidate => {
            format!("cluster {scope} is paused (maintenance mode): name the member to promote with --candidate")
        }
        Refusal::ScheduledWhilePaused => format!(
            "cannot schedule a switchover while cluster {scope} is paused; switch over now, or `rampart resume` first"
        ),
        Refusal::LeaderMismatch => {
            format!("the named leader is not the leader of cluster {scope} (the leader is {leader})")
        }
        Refusal::SameMember => format!("{candidate} is already the leader of cluster {scope}"),
        Refusal::NotSynchronous => format!(
            "{candidate} is not a synchronous standby of {leader}; in synchronous_mode a switchover goes to one \
             (the sync key lists: {})",
            cluster.sync.as_ref().and_then(|s| s.sync_standby.clone()).unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

/// What the operator gave on the command line.
#[derive(Clone, Debug, Default)]
pub struct Given {
    /// `--leader`.
    pub leader: Option<String>,
    /// `--candidate`.
    pub candidate: Option<String>,
    /// `--scheduled`.
    pub scheduled: Option<String>,
    /// `--force`.
    pub force: bool,
}

/// Checks the request against the cluster, asking for what is missing (unless `force`) and for
/// confirmation (unless `force`).
pub fn plan(cluster: &Cluster, scope: &str, action: Kind, given: &Given, console: &mut Console) -> Result<Plan> {
    let verb = action.name();
    let current = cluster.leader.as_ref().map(|l| l.name.clone());
    let leader = match action {
        Kind::Switchover => {
            let Some(current) = &current else {
                bail!("switchover: cluster {scope} has no leader, so there is no one to switch over from; use `rampart failover --candidate NAME` to promote a replica");
            };
            let leader = match &given.leader {
                Some(l) => l.clone(),
                None if given.force => current.clone(),
                None => console.ask("Primary", current, "--leader")?,
            };
            if &leader != current {
                bail!("switchover: {leader} is not the leader of cluster {scope} (the leader is {current})");
            }
            Some(leader)
        }
        Kind::Failover => current.clone(),
    };
    let cands = candidates(cluster);
    if cands.is_empty() {
        bail!(
            "{verb}: no member of cluster {scope} can be promoted: every member other than the leader is tagged nofailover \
             or failover_priority 0, or there is none (members: {})",
            names(&cluster.members)
        );
    }
    let candidate = match &given.candidate {
        Some(c) => Some(c.clone()),
        None if given.force => None,
        None => Some(console.ask(&format!("Candidate ({})", cands.join(", ")), "", "--candidate")?)
            .filter(|c| !c.is_empty()),
    };
    if let Some(c) = &candidate {
        if current.as_deref() == Some(c.as_str()) {
            bail!("{verb}: {c} is already the leader of cluster {scope}; pick one of: {}", cands.join(", "));
        }
        if cluster.member(c).is_some() && !cands.contains(c) {
            bail!("{verb}: candidate {c} is tagged nofailover (or failover_priority 0) and cannot become leader; pick one of: {}", cands.join(", "));
        }
    }
    let paused = cluster.config.as_ref().is_some_and(|c| c.paused());
    let kind = action;
    let mut asked = admission::Request {
        kind,
        leader: if action == Kind::Switchover { leader.as_deref() } else { None },
        candidate: candidate.as_deref(),
        scheduled: false,
        force: false,
    };
    // Before asking when: a request that cannot run now is refused at once.
    if let Err(refusal) = admission::check_shape(&asked, paused) {
        bail!("{verb}: {}", refusal_text(&refusal, scope, &cands, cluster, candidate.as_deref()));
    }
    let scheduled_at = match action {
        Kind::Failover => None,
        Kind::Switchover => {
            let text = match &given.scheduled {
                Some(s) => s.clone(),
                None if given.force => "now".into(),
                None => console.ask(
                    &format!("When should the switchover take place (e.g. {})", super::schedule::example()),
                    "now",
                    "--scheduled",
                )?,
            };
            super::schedule::parse(&text)?
        }
    };
    // The rule is the core's (as the REST API and the leader apply it); the words are the CLI's.
    asked.scheduled = scheduled_at.is_some();
    let mode = cluster.config.as_ref().map(|c| c.sync_mode()).unwrap_or_default();
    let mut checked =
        admission::check_shape(&asked, paused).and_then(|()| admission::check_cluster(cluster, mode, &asked).map(drop));
    if let Err(Refusal::MayLackCommits(c)) = &checked {
        if given.force {
            // No question is asked, so say plainly what --force is doing.
            console.warn(&format!(
                "{c} is not a synchronous standby: it may lack commits the leader acknowledged, \
                 and those would be lost; failing over to it anyway (--force)"
            ))?;
        } else if !console.confirm(&format!("Are you sure you want to failover to the asynchronous node {c}?"))? {
            bail!("failover: aborted");
        }
        asked.force = true;
        checked = admission::check_cluster(cluster, mode, &asked).map(drop);
    }
    if let Err(refusal) = checked {
        bail!("{verb}: {}", refusal_text(&refusal, scope, &cands, cluster, candidate.as_deref()));
    }
    let force = asked.force;
    let plan = Plan { action, leader, candidate, scheduled_at, force };
    if !given.force && !console.confirm(&plan.question(scope))? {
        bail!("{verb}: aborted");
    }
    Ok(plan)
}

/// `rampart switchover`.
pub fn run_switchover(args: SwitchoverArgs) -> Result<()> {
    let given = Given { leader: args.leader, candidate: args.candidate, scheduled: args.scheduled, force: args.force };
    run(args.target, args.cluster, Kind::Switchover, given)
}

/// `rampart failover`.
pub fn run_failover(args: FailoverArgs) -> Result<()> {
    let given = Given { candidate: args.candidate, force: args.force, ..Default::default() };
    run(args.target, args.cluster, Kind::Failover, given)
}

fn run(target: TargetArgs, cluster: Option<String>, action: Kind, given: Given) -> Result<()> {
    if let (Some(named), Some(scope)) = (&cluster, &target.scope) {
        if named != scope {
            bail!("{}: the cluster named on the command line ({named}) is not --scope {scope}", action.name());
        }
    }
    let target = target::resolve(&target, cluster.as_deref())?;
    block_on(async move {
        let mut session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        let scope = session.scope().to_string();
        println!("Current cluster topology");
        print!("{}", super::list::render_table(&scope, &cluster));
        let mut console = Console::stdio(action.name());
        let plan = plan(&cluster, &scope, action, &given, &mut console)?;
        let verb = action.name();
        // The leader's API decides (and checks the candidate's health); without one, the DCS.
        if let Some(m) = plan.leader.as_deref().and_then(|l| cluster.member(l)).filter(|m| !m.data.api_url.is_empty()) {
            let rest = session.rest()?;
            match rest.call(m, Method::Post, verb, Some(&plan.body()), HANDOVER).await {
                Ok(r) if r.ok() => {
                    println!("{} {}", timestamp(), r.text);
                    if plan.scheduled_at.is_some() {
                        return Ok(());
                    }
                    // The API answered once the lock moved; whether the member holding it runs as
                    // primary (and is the one asked for) is checked here, also against an API
                    // that reports the lock alone (Patroni's).
                    let pace = Pace::for_cluster(&cluster);
                    let (now, leader) = wait_for_new_leader(&mut &session, &plan, pace, &mut std::io::stdout()).await?;
                    print!("{}", super::list::render_table(&scope, &now));
                    return check_candidate(&plan, &leader);
                }
                Ok(r) if r.unsupported() => println!(
                    "{} The REST API of {} has no POST /{verb} ({}), falling back to the DCS",
                    timestamp(),
                    m.name,
                    r.status
                ),
                Ok(r) => bail!("{verb} failed, details: {}, {}", r.status, r.text),
                Err(e) => {
                    println!("{} Could not {verb} using the REST API ({e}), falling back to the DCS", timestamp())
                }
            }
        } else {
            println!(
                "{} Cluster {scope} has no leader whose REST API could take the request; writing it to the DCS",
                timestamp()
            );
        }
        session.dcs.set_failover(&plan.failover_key(), session.deadline()).await?;
        if let Some(at) = &plan.scheduled_at {
            println!("{} Switchover scheduled at {at} (in the DCS failover key)", timestamp());
            return Ok(());
        }
        let pace = Pace::for_cluster(&cluster);
        let who = plan.candidate.as_deref().unwrap_or("a new leader");
        println!("{} Waiting up to {} s for {who} to take over", timestamp(), pace.limit.as_secs());
        let (now, leader) = wait_for_new_leader(&mut &session, &plan, pace, &mut std::io::stdout()).await?;
        println!("{} {}", timestamp(), report(&plan, &leader));
        print!("{}", super::list::render_table(&scope, &now));
        check_candidate(&plan, &leader)
    })
}

/// Reads the cluster: the session, or a script in tests.
pub(crate) trait ReadCluster {
    /// One fresh read.
    async fn read(&mut self) -> Result<Cluster>;
}

impl ReadCluster for &Session {
    async fn read(&mut self) -> Result<Cluster> {
        self.cluster().await
    }
}

/// How long to wait for a new leader, how often to look, and how long a withdrawn request may
/// go without a new leader before the wait counts as failed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    pub limit: Duration,
    pub poll: Duration,
    pub grace: Duration,
}

impl Pace {
    /// From the dynamic configuration: time for the agents to notice (a few loop_waits) and,
    /// for a failover without a leader, for the old lease to run out (ttl); plus what the
    /// leader may spend waiting for the proxies to drain (nothing without proxies).
    pub fn for_cluster(c: &Cluster) -> Pace {
        let (ttl, loop_wait) = c.config.as_ref().map(|c| (c.ttl, c.loop_wait)).unwrap_or((30, 10));
        let drain = Duration::from_millis(rampart_core::drain::longest_wait_ms(&c.proxies));
        Pace {
            limit: Duration::from_secs((ttl + 3 * loop_wait).max(60)) + drain,
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(loop_wait.max(2)),
        }
    }
}

/// After a request: waits until a member other than the old leader leads, that is holds the
/// lock *and* runs as primary (rule: [`rampart_core::manual::outcome`]; a candidate that took the
/// lock but failed to promote does not count), writing progress to `out`; fails when the agents
/// drop the request or time runs out. Returns the cluster as it ended and who leads it.
pub(crate) async fn wait_for_new_leader(
    src: &mut impl ReadCluster,
    plan: &Plan,
    pace: Pace,
    out: &mut dyn std::io::Write,
) -> Result<(Cluster, String)> {
    let verb = plan.action.name();
    let started = Instant::now();
    let old = plan.leader.clone();
    let mut last_note = Instant::now();
    loop {
        tokio::time::sleep(pace.poll).await;
        let now = match src.read().await {
            Ok(c) => c,
            Err(e) => {
                writeln!(out, "{} {e:#}", timestamp())?;
                if started.elapsed() >= pace.limit {
                    bail!("{verb}: no new leader seen within {} s (etcd did not answer)", pace.limit.as_secs());
                }
                continue;
            }
        };
        let leader = now.leader.as_ref().map(|l| l.name.clone());
        match outcome(&now, old.as_deref()) {
            Outcome::Led(l) => return Ok((now, l)),
            // The agents clear the key once they have acted on it, or refused it.
            Outcome::Refused if started.elapsed() >= pace.grace => bail!(
                "{verb}: the agents dropped the request and {} is still the leader; their logs say why (for \
                 example, the candidate was not healthy enough)",
                leader.as_deref().unwrap_or_default()
            ),
            Outcome::Refused | Outcome::Pending => {}
        }
        if started.elapsed() >= pace.limit {
            bail!(
                "{verb}: no new leader running as primary after {} s; if the request is still in the DCS failover \
                 key (see `rampart list`), `rampart flush switchover` discards it",
                pace.limit.as_secs()
            );
        }
        if last_note.elapsed() >= Duration::from_secs(5) {
            let what = match &leader {
                Some(l) if Some(l) != old.as_ref() => format!("{l} holds the leader lock and is not primary yet"),
                Some(l) => format!("the leader is {l}, the request is pending in the DCS"),
                None => "no member holds the leader lock".into(),
            };
            writeln!(out, "{} Still waiting: {what}", timestamp())?;
            last_note = Instant::now();
        }
    }
}

/// Patroni's report of who leads now.
fn report(plan: &Plan, leader: &str) -> String {
    match &plan.candidate {
        Some(c) if c != leader => format!("{} to \"{leader}\" instead of \"{c}\"", capital(plan.action.past())),
        _ => format!("Successfully {} to \"{leader}\"", plan.action.past()),
    }
}

/// The command fails when a member other than the requested candidate leads afterwards.
fn check_candidate(plan: &Plan, leader: &str) -> Result<()> {
    match &plan.candidate {
        Some(c) if c != leader => bail!(
            "{}: {leader} leads the cluster now, not the requested candidate {c}; its logs and {c}'s say why",
            plan.action.name()
        ),
        _ => Ok(()),
    }
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::members::tests::{cluster, three};
    use crate::cli::prompt::tests::console;

    fn given(leader: Option<&str>, candidate: Option<&str>, scheduled: Option<&str>, force: bool) -> Given {
        Given {
            leader: leader.map(Into::into),
            candidate: candidate.map(Into::into),
            scheduled: scheduled.map(Into::into),
            force,
        }
    }

    #[test]
    fn the_wait_for_a_new_leader_allows_for_the_proxies_drain() {
        let config = ("config", r#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#);
        assert_eq!(Pace::for_cluster(&cluster(&[config])).limit, Duration::from_secs(60));
        let proxy = ("proxies/app-1", r#"{"drain_timeout":20,"drained":null}"#);
        assert_eq!(Pace::for_cluster(&cluster(&[config, proxy])).limit, Duration::from_secs(80));
    }

    #[test]
    fn interactive_switchover_asks_and_confirms() {
        let c = three();
        // Leader: default (a); candidate: b; time: now; confirm: y.
        let (mut con, out) = console("switchover", "\nb\n\ny\n", true);
        let p = plan(&c, "pg", Kind::Switchover, &Given::default(), &mut con).unwrap();
        assert_eq!(
            p,
            Plan {
                action: Kind::Switchover,
                leader: Some("a".into()),
                candidate: Some("b".into()),
                scheduled_at: None,
                force: false,
            }
        );
        let text = out.text();
        assert!(
            text.starts_with("Primary [a]: Candidate (b) []: When should the switchover take place (e.g. "),
            "{text}"
        );
        assert!(
            text.ends_with("[now]: Are you sure you want to switchover cluster pg, demoting current leader a? [y/N]: "),
            "{text}"
        );
        assert_eq!(p.body(), json!({"leader": "a", "candidate": "b"}));
    }

    #[test]
    fn declining_or_no_terminal_does_nothing() {
        let c = three();
        let (mut con, _) = console("switchover", "a\nb\nnow\n\n", true);
        let e = plan(&c, "pg", Kind::Switchover, &Given::default(), &mut con).unwrap_err().to_string();
        assert_eq!(e, "switchover: aborted", "an empty answer is no");
        let (mut con, _) = console("switchover", "y\n", false);
        let e = plan(&c, "pg", Kind::Switchover, &given(Some("a"), Some("b"), Some("now"), false), &mut con)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("switchover: this needs confirmation (Are you sure you want to switchover cluster pg, demoting current leader a?)"), "{e}");
        assert!(e.ends_with("re-run with --force to go ahead without questions"), "{e}");
        // A missing value is not guessed either.
        let (mut con, _) = console("switchover", "", false);
        let e = plan(&c, "pg", Kind::Switchover, &Given::default(), &mut con).unwrap_err().to_string();
        assert!(e.starts_with("switchover: --leader was not given and stdin is not a terminal to ask for it"), "{e}");
    }

    #[test]
    fn forced_switchover_takes_defaults_without_asking() {
        let c = three();
        let (mut con, out) = console("switchover", "", false);
        let p = plan(&c, "pg", Kind::Switchover, &given(None, None, None, true), &mut con).unwrap();
        assert_eq!(p.body(), json!({"leader": "a"}));
        assert_eq!(
            p.failover_key(),
            Failover { leader: Some("a".into()), member: None, scheduled_at: None, force: false }
        );
        assert!(out.text().is_empty());
    }

    #[test]
    fn checks_name_the_member_and_the_choices() {
        let c = three();
        let check = |g: Given| {
            let (mut con, _) = console("switchover", "", false);
            plan(&c, "pg", Kind::Switchover, &g, &mut con).unwrap_err().to_string()
        };
        assert_eq!(
            check(given(Some("b"), None, None, true)),
            "switchover: b is not the leader of cluster pg (the leader is a)"
        );
        assert_eq!(
            check(given(None, Some("x"), None, true)),
            "switchover: candidate x is not a member of cluster pg (members: a, b, c)"
        );
        assert_eq!(
            check(given(None, Some("a"), None, true)),
            "switchover: a is already the leader of cluster pg; pick one of: b"
        );
        assert_eq!(
            check(given(None, Some("c"), None, true)),
            "switchover: candidate c is tagged nofailover (or failover_priority 0) and cannot become leader; pick one of: b"
        );
        assert!(check(given(None, Some("b"), Some("yesterday"), true)).starts_with("--scheduled yesterday: "));
        let leaderless = cluster(&[("members/b", r#"{"state":"running"}"#)]);
        let (mut con, _) = console("switchover", "", false);
        let e = plan(&leaderless, "pg", Kind::Switchover, &given(None, None, None, true), &mut con)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("switchover: cluster pg has no leader") && e.contains("rampart failover --candidate NAME"),
            "{e}"
        );
    }

    #[test]
    fn scheduled_switchover() {
        let c = three();
        let (mut con, out) = console("switchover", "y\n", true);
        let p = plan(
            &c,
            "pg",
            Kind::Switchover,
            &given(Some("a"), Some("b"), Some("2999-01-01T00:00:00Z"), false),
            &mut con,
        )
        .unwrap();
        let at = p.scheduled_at.clone().unwrap();
        assert!(at.starts_with("2998-12-31T") || at.starts_with("2999-01-01T"), "{at}");
        assert_eq!(p.body()["scheduled_at"], json!(at));
        assert_eq!(p.failover_key().scheduled_at.as_deref(), Some(at.as_str()));
        assert!(out.text().starts_with(&format!(
            "Are you sure you want to schedule switchover of cluster pg at {at}, demoting current leader a? [y/N]"
        )));

        let mut paused = c.clone();
        paused.config.as_mut().unwrap().pause = Some(true);
        let (mut con, _) = console("switchover", "", false);
        let e = plan(
            &paused,
            "pg",
            Kind::Switchover,
            &given(None, Some("b"), Some("2999-01-01T00:00:00Z"), true),
            &mut con,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("switchover: cannot schedule a switchover while cluster pg is paused"),
            "{e}"
        );
        let (mut con, _) = console("switchover", "", false);
        let e = plan(&paused, "pg", Kind::Switchover, &given(None, None, None, true), &mut con).unwrap_err();
        assert!(e.to_string().contains("name the member to promote with --candidate"), "{e}");
    }

    #[test]
    fn failover_needs_a_candidate_and_works_without_a_leader() {
        let c = three();
        let (mut con, _) = console("failover", "", false);
        let e = plan(&c, "pg", Kind::Failover, &given(None, None, None, true), &mut con).unwrap_err().to_string();
        assert_eq!(e, "failover: a failover needs a candidate (--candidate NAME); candidates in cluster pg: b");
        let (mut con, out) = console("failover", "b\ny\n", true);
        let p = plan(&c, "pg", Kind::Failover, &Given::default(), &mut con).unwrap();
        assert_eq!(p.body(), json!({"candidate": "b"}));
        assert!(
            out.text().ends_with("Are you sure you want to failover cluster pg, demoting current leader a? [y/N]: "),
            "{}",
            out.text()
        );

        let mut leaderless = three();
        leaderless.leader = None;
        let (mut con, _) = console("failover", "", false);
        let p = plan(&leaderless, "pg", Kind::Failover, &given(None, Some("a"), None, true), &mut con).unwrap();
        assert_eq!(
            p.failover_key(),
            Failover { leader: None, member: Some("a".into()), scheduled_at: None, force: false }
        );
        assert_eq!(p.question("pg"), "Are you sure you want to failover cluster pg?");
    }

    #[test]
    fn failover_to_an_asynchronous_node_is_confirmed_twice() {
        let c = cluster(&[
            ("config", r#"{"synchronous_mode":true}"#),
            ("leader", "a"),
            ("sync", r#"{"leader":"a","sync_standby":"b"}"#),
            ("members/a", r#"{"state":"running","role":"primary"}"#),
            ("members/b", r#"{"state":"running","role":"replica"}"#),
            ("members/c", r#"{"state":"running","role":"replica"}"#),
        ]);
        let (mut con, out) = console("failover", "y\ny\n", true);
        let p = plan(&c, "pg", Kind::Failover, &given(None, Some("c"), None, false), &mut con).unwrap();
        assert!(
            out.text().starts_with("Are you sure you want to failover to the asynchronous node c? [y/N]: "),
            "{}",
            out.text()
        );
        // The confirmation is what lets the agents promote a member that may lack commits.
        assert_eq!(p.body(), json!({"candidate": "c", "force": true}));
        assert!(p.failover_key().force);
        let (mut con, _) = console("failover", "y\n", true);
        let p = plan(&c, "pg", Kind::Failover, &given(None, Some("b"), None, false), &mut con).unwrap();
        assert!(!p.force, "a listed synchronous standby needs no force");
        let (mut con, _) = console("failover", "n\n", true);
        assert!(plan(&c, "pg", Kind::Failover, &given(None, Some("c"), None, false), &mut con).is_err());
        // --force asks nothing, but warns.
        let (mut con, out) = console("failover", "", false);
        let p = plan(&c, "pg", Kind::Failover, &given(None, Some("c"), None, true), &mut con).unwrap();
        assert!(p.force);
        assert!(
            out.text()
                .starts_with("Warning: c is not a synchronous standby: it may lack commits the leader acknowledged"),
            "{}",
            out.text()
        );
    }

    /// Answers with the scripted clusters, then the last one forever.
    struct Script(Vec<Cluster>);

    impl ReadCluster for Script {
        async fn read(&mut self) -> Result<Cluster> {
            Ok(if self.0.len() > 1 { self.0.remove(0) } else { self.0[0].clone() })
        }
    }

    fn fast(limit_ms: u64, grace_ms: u64) -> Pace {
        Pace {
            limit: Duration::from_millis(limit_ms),
            poll: Duration::from_millis(1),
            grace: Duration::from_millis(grace_ms),
        }
    }

    /// `c` with the lock held by `leader`, whose member key says it runs as primary when
    /// `promoted` (the others replicas), and the request pending or not.
    fn with(mut c: Cluster, leader: Option<&str>, promoted: bool, pending: bool) -> Cluster {
        match (leader, c.leader.as_mut()) {
            (Some(name), Some(l)) => l.name = name.into(),
            _ => c.leader = None,
        }
        for m in &mut c.members {
            let primary = promoted && Some(m.name.as_str()) == leader;
            m.data.role = if primary { "primary".into() } else { "replica".into() };
        }
        c.failover = pending.then(|| Failover {
            leader: Some("a".into()),
            member: Some("b".into()),
            scheduled_at: None,
            force: false,
        });
        c
    }

    fn switchover_to_b() -> Plan {
        Plan {
            action: Kind::Switchover,
            leader: Some("a".into()),
            candidate: Some("b".into()),
            scheduled_at: None,
            force: false,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dcs_fallback_waits_for_the_candidate_to_run_as_primary() {
        let plan = switchover_to_b();
        let mut src = Script(vec![
            with(three(), Some("a"), true, true),
            with(three(), None, false, true),
            with(three(), Some("b"), false, false),
            with(three(), Some("b"), true, false),
        ]);
        let (end, leader) = wait_for_new_leader(&mut src, &plan, fast(5_000, 5_000), &mut Vec::new()).await.unwrap();
        assert!(end.is_leader("b"));
        assert_eq!(src.0.len(), 1, "b holding the lock before it ran as primary was not enough");
        assert_eq!(report(&plan, &leader), "Successfully switched over to \"b\"");
        assert!(check_candidate(&plan, &leader).is_ok());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_switchover_led_by_another_member_is_reported_and_fails() {
        // b took the lock, never ran as primary and let go; c leads.
        let plan = switchover_to_b();
        let mut src = Script(vec![
            with(three(), Some("b"), false, false),
            with(three(), None, false, false),
            with(three(), Some("c"), true, false),
        ]);
        let (_, leader) = wait_for_new_leader(&mut src, &plan, fast(5_000, 5_000), &mut Vec::new()).await.unwrap();
        assert_eq!(leader, "c");
        assert_eq!(report(&plan, &leader), "Switched over to \"c\" instead of \"b\"");
        let e = check_candidate(&plan, &leader).unwrap_err().to_string();
        assert!(e.starts_with("switchover: c leads the cluster now, not the requested candidate b"), "{e}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dcs_fallback_reports_a_dropped_request_and_a_timeout() {
        let plan = Plan {
            action: Kind::Failover,
            leader: Some("a".into()),
            candidate: Some("b".into()),
            scheduled_at: None,
            force: false,
        };
        let mut src = Script(vec![with(three(), Some("a"), true, true), with(three(), Some("a"), true, false)]);
        let e = wait_for_new_leader(&mut src, &plan, fast(5_000, 20), &mut Vec::new()).await.unwrap_err().to_string();
        assert!(e.starts_with("failover: the agents dropped the request and a is still the leader"), "{e}");
        let mut src = Script(vec![with(three(), Some("a"), true, true)]);
        let e = wait_for_new_leader(&mut src, &plan, fast(50, 5_000), &mut Vec::new()).await.unwrap_err().to_string();
        assert!(e.starts_with("failover: no new leader running as primary after 0 s"), "{e}");
    }
}
