//! `rampart restart [MEMBER...]`: restart PostgreSQL on members, now or at a scheduled time,
//! through `POST /restart` on each member's REST API (the agent restarts its own PostgreSQL and
//! keeps or hands over the leader lock as its HA rules say).
//!
//! As patronictl: members by name and/or `--role`; `--pending` restarts only members whose key
//! shows a pending restart (for a scheduled restart the agent decides at that time); `--any`
//! picks one of them; the time is asked for unless given or `--force`; each member's answer is
//! printed, and the command fails if any member failed.

use anyhow::{bail, Result};
use rampart_core::{Cluster, Member};
use serde_json::{json, Value};

use super::members::{select, Role};
use super::prompt::Console;
use super::rest::{Method, Reply, QUICK, RESTART};
use super::session::{block_on, Session};
use super::target::{self, TargetArgs};

/// Options of `rampart restart`.
#[derive(clap::Args, Debug, Clone)]
pub struct RestartArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// [CLUSTER] then the members to restart (default: every member with --role). The cluster
    /// name is recognised when it is the configuration's `scope`, as patronictl writes it.
    pub members: Vec<String>,
    /// Restart only members with this role.
    #[arg(short = 'r', long, value_enum, default_value = "any")]
    pub role: Role,
    /// Restart one of the selected members only, picked at random.
    #[arg(long = "any")]
    pub one: bool,
    /// Restart only members with a pending restart (a parameter change that needs one).
    #[arg(long)]
    pub pending: bool,
    /// When: an ISO 8601 time (local time without an offset), or now.
    #[arg(long, value_name = "TIME")]
    pub scheduled: Option<String>,
    /// Restart only if the running PostgreSQL is older than VERSION (e.g. 15.4).
    #[arg(long = "pg-version", value_name = "VERSION")]
    pub pg_version: Option<String>,
    /// Fail (and let the cluster fail over) when PostgreSQL takes longer than this to restart.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<String>,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

/// The options that shape the request body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// `restart_pending`.
    pub pending: bool,
    /// `postgres_version`.
    pub pg_version: Option<String>,
    /// `timeout`.
    pub timeout: Option<String>,
    /// `schedule`.
    pub schedule: Option<String>,
}

/// The role a member must still have when its agent runs the restart, in `POST /restart`'s
/// terms; `None` when any role will do.
pub fn role_filter(role: Role, m: &Member) -> Option<&'static str> {
    match role {
        Role::Any => None,
        Role::Replica | Role::Standby => Some("replica"),
        Role::StandbyLeader => Some("standby_leader"),
        Role::Primary => Some("primary"),
        Role::Leader if m.data.role == rampart_core::Role::StandbyLeader => Some("standby_leader"),
        Role::Leader => Some("primary"),
    }
}

/// The body of `POST /restart` for member `m`.
pub fn body(req: &Request, role: Role, m: &Member) -> Value {
    let mut b = serde_json::Map::new();
    if req.pending {
        b.insert("restart_pending".into(), json!(true));
    }
    if let Some(r) = role_filter(role, m) {
        b.insert("role".into(), json!(r));
    }
    if let Some(v) = &req.pg_version {
        b.insert("postgres_version".into(), json!(v));
    }
    if let Some(t) = &req.timeout {
        // A plain number of seconds goes as a number, anything else (`1min`) as Patroni's text.
        b.insert("timeout".into(), t.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(t)));
    }
    if let Some(at) = &req.schedule {
        b.insert("schedule".into(), json!(at));
    }
    Value::Object(b)
}

/// `9.6.24`, `15`, `16.1`: what `--pg-version` accepts.
fn valid_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    (1..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Chooses the members and builds the request, asking what is missing unless `force`.
pub fn plan<'c>(
    cluster: &'c Cluster,
    scope: &str,
    args: &RestartArgs,
    console: &mut Console,
) -> Result<(Vec<&'c Member>, Request)> {
    let mut members = select(cluster, scope, "restart", &args.members, args.role)?;
    let when = match &args.scheduled {
        Some(s) => s.clone(),
        None if args.force => "now".into(),
        None => console.ask(
            &format!("When should the restart take place (e.g. {})", super::schedule::example()),
            "now",
            "--scheduled",
        )?,
    };
    let schedule = super::schedule::parse(&when)?;
    if args.pending && schedule.is_none() {
        members.retain(|m| m.data.pending_restart == Some(true));
        if members.is_empty() {
            bail!("restart: no selected member of cluster {scope} has a pending restart; nothing to do");
        }
    }
    if args.one {
        let pick = (super::random_index(members.len())).min(members.len() - 1);
        members = vec![members[pick]];
    }
    if let Some(v) = &args.pg_version {
        if !valid_version(v) {
            bail!("restart: --pg-version {v}: expected a PostgreSQL version such as 15.4 or 9.6.24");
        }
    }
    if schedule.is_some() && cluster.config.as_ref().is_some_and(|c| c.paused()) {
        bail!("restart: cannot schedule a restart while cluster {scope} is paused; restart now, or `rampart resume` first");
    }
    let list = members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
    if !args.force {
        let question = match (&schedule, args.pending) {
            (Some(_), true) => "The members needing a restart will be identified at the scheduled time, and might be \
                                different from the ones showing pending restart right now. Is this fine?"
                .to_string(),
            (Some(at), false) => format!("Are you sure you want to schedule restart of members {list} at {at}?"),
            (None, _) => format!("Are you sure you want to restart members {list}?"),
        };
        if !console.confirm(&question)? {
            bail!("restart: aborted");
        }
    }
    let req =
        Request { pending: args.pending, pg_version: args.pg_version.clone(), timeout: args.timeout.clone(), schedule };
    Ok((members, req))
}

/// patronictl's line for one member's answer, and whether it succeeded.
pub fn outcome(member: &str, reply: &Reply) -> (String, bool) {
    match reply.status {
        200 => (format!("Success: restart on member {member}"), true),
        202 => (format!("Success: restart scheduled on member {member}"), true),
        409 => (format!("Failed: another restart is already scheduled on member {member}"), false),
        s => (format!("Failed: restart for member {member}, status code={s}, ({})", reply.text), false),
    }
}

/// `rampart restart`.
pub fn run(args: RestartArgs) -> Result<()> {
    let (target, members) = target::resolve_with_members(&args.target, &args.members)?;
    let args = RestartArgs { members, ..args };
    block_on(async move {
        let mut session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        let scope = session.scope().to_string();
        print!("{}", super::list::render_table(&scope, &cluster));
        let mut console = Console::stdio("restart");
        let (members, req) = plan(&cluster, &scope, &args, &mut console)?;
        let rest = session.rest()?;
        let mut failed = 0;
        for m in &members {
            if req.schedule.is_some() && args.force && m.data.extra.contains_key("scheduled_restart") {
                // --force replaces a restart already scheduled on this member.
                match rest.call(m, Method::Delete, "restart", None, QUICK).await {
                    Ok(r) if r.status >= 400 => println!(
                        "Failed: flush scheduled restart for member {}, status code={}, ({})",
                        m.name, r.status, r.text
                    ),
                    Ok(_) => {}
                    Err(e) => println!("Failed: flush scheduled restart for member {}: {e}", m.name),
                }
            }
            let (line, ok) = match rest.call(m, Method::Post, "restart", Some(&body(&req, args.role, m)), RESTART).await
            {
                Ok(r) => outcome(&m.name, &r),
                Err(e) => (format!("Failed: restart for member {}: {e}", m.name), false),
            };
            println!("{line}");
            failed += usize::from(!ok);
        }
        if failed > 0 {
            bail!("restart: failed on {failed} of {} members", members.len());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::members::tests::{cluster, three};
    use crate::cli::prompt::tests::console;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RestartArgs,
    }

    fn args(line: &[&str]) -> RestartArgs {
        Cli::parse_from(std::iter::once("restart").chain(line.iter().copied())).args
    }

    #[test]
    fn bodies_follow_patroni() {
        let c = three();
        let a = c.member("a").unwrap();
        let req = Request {
            pending: true,
            pg_version: Some("16.1".into()),
            timeout: Some("30".into()),
            schedule: Some("2030-01-01T00:00:00+00:00".into()),
        };
        assert_eq!(
            body(&req, Role::Leader, a),
            json!({"restart_pending": true, "role": "primary", "postgres_version": "16.1", "timeout": 30, "schedule": "2030-01-01T00:00:00+00:00"})
        );
        assert_eq!(body(&Request::default(), Role::Any, a), json!({}));
        assert_eq!(
            body(&Request { timeout: Some("2min".into()), ..Default::default() }, Role::Replica, a),
            json!({"role": "replica", "timeout": "2min"})
        );
    }

    #[test]
    fn interactive_restart_asks_when_then_confirms() {
        let c = three();
        let (mut con, out) = console("restart", "\ny\n", true);
        let (members, req) = plan(&c, "pg", &args(&["b", "c"]), &mut con).unwrap();
        assert_eq!(members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(req, Request::default());
        assert!(
            out.text().ends_with("[now]: Are you sure you want to restart members b, c? [y/N]: "),
            "{}",
            out.text()
        );
        let (mut con, _) = console("restart", "now\n\n", true);
        assert_eq!(plan(&c, "pg", &args(&[]), &mut con).unwrap_err().to_string(), "restart: aborted");
        let (mut con, _) = console("restart", "", false);
        assert!(plan(&c, "pg", &args(&["b"]), &mut con).unwrap_err().to_string().contains("--force"));
    }

    #[test]
    fn pending_any_and_role() {
        let c = cluster(&[
            ("leader", "a"),
            ("members/a", r#"{"api_url":"http://a/patroni","role":"primary","pending_restart":true}"#),
            ("members/b", r#"{"api_url":"http://b/patroni","role":"replica"}"#),
            ("members/c", r#"{"api_url":"http://c/patroni","role":"replica","pending_restart":true}"#),
        ]);
        let (mut con, _) = console("restart", "", false);
        let (m, req) = plan(&c, "pg", &args(&["--pending", "--force"]), &mut con).unwrap();
        assert_eq!(m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert!(req.pending);
        let (m, _) = plan(&c, "pg", &args(&["--pending", "--force", "--role", "replica"]), &mut con).unwrap();
        assert_eq!(m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["c"]);
        let (m, _) = plan(&c, "pg", &args(&["--any", "--force"]), &mut con).unwrap();
        assert_eq!(m.len(), 1);
        let e = plan(&c, "pg", &args(&["b", "--pending", "--force"]), &mut con).unwrap_err().to_string();
        assert_eq!(e, "restart: no selected member of cluster pg has a pending restart; nothing to do");
        let e = plan(&c, "pg", &args(&["--force", "--pg-version", "fifteen"]), &mut con).unwrap_err().to_string();
        assert!(e.starts_with("restart: --pg-version fifteen: "), "{e}");
    }

    #[test]
    fn scheduled_restart() {
        let c = three();
        let (mut con, out) = console("restart", "y\n", true);
        let (_, req) = plan(&c, "pg", &args(&["a", "--scheduled", "2999-06-01T10:00:00Z"]), &mut con).unwrap();
        let at = req.schedule.unwrap();
        assert!(
            out.text().starts_with(&format!("Are you sure you want to schedule restart of members a at {at}? [y/N]")),
            "{}",
            out.text()
        );
    }

    #[test]
    fn answers_read_like_patronictl() {
        let r = |status, text: &str| Reply { status, text: text.into() };
        assert_eq!(outcome("a", &r(200, "restarted successfully")), ("Success: restart on member a".into(), true));
        assert_eq!(outcome("a", &r(202, "restart scheduled")), ("Success: restart scheduled on member a".into(), true));
        assert!(!outcome("a", &r(409, "")).1);
        assert_eq!(
            outcome("a", &r(503, "restart failed")).0,
            "Failed: restart for member a, status code=503, (restart failed)"
        );
    }
}
