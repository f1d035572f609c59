//! `rampart reload [MEMBER...]`: ask members to re-read their configuration and reload
//! PostgreSQL (`POST /reload`, what SIGHUP to the agent does).

use anyhow::{bail, Result};

use super::members::{select, Role};
use super::prompt::Console;
use super::rest::{Method, Reply, QUICK};
use super::session::{block_on, Session};
use super::target::{self, TargetArgs};

/// Options of `rampart reload`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// [CLUSTER] then the members to reload (default: every member with --role). The cluster
    /// name is recognised when it is the configuration's `scope`, as patronictl writes it.
    pub members: Vec<String>,
    /// Reload only members with this role.
    #[arg(short = 'r', long, value_enum, default_value = "any")]
    pub role: Role,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
}

/// patronictl's line for one member's answer, and whether it succeeded.
pub fn outcome(member: &str, reply: &Reply, loop_wait: u64) -> (String, bool) {
    match reply.status {
        200 => (format!("No changes to apply on member {member}"), true),
        202 => (
            format!("Reload request received for member {member} and will be processed within {loop_wait} seconds"),
            true,
        ),
        s => (format!("Failed: reload for member {member}, status code={s}, ({})", reply.text), false),
    }
}

/// `rampart reload`.
pub fn run(args: ReloadArgs) -> Result<()> {
    let (target, members) = target::resolve_with_members(&args.target, &args.members)?;
    let args = ReloadArgs { members, ..args };
    block_on(async move {
        let mut session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        let scope = session.scope().to_string();
        let members = select(&cluster, &scope, "reload", &args.members, args.role)?;
        print!("{}", super::list::render_table(&scope, &cluster));
        let list = members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
        if !args.force
            && !Console::stdio("reload").confirm(&format!("Are you sure you want to reload members {list}?"))?
        {
            bail!("reload: aborted");
        }
        let loop_wait = cluster.config.as_ref().map(|c| c.loop_wait).unwrap_or(10);
        let rest = session.rest()?;
        let mut failed = 0;
        for m in &members {
            let (line, ok) = match rest.call(m, Method::Post, "reload", None, QUICK).await {
                Ok(r) => outcome(&m.name, &r, loop_wait),
                Err(e) => (format!("Failed: reload for member {}: {e}", m.name), false),
            };
            println!("{line}");
            failed += usize::from(!ok);
        }
        if failed > 0 {
            bail!("reload: failed on {failed} of {} members", members.len());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_like_patronictl() {
        let r = |status| Reply { status, text: "x".into() };
        assert_eq!(outcome("a", &r(200), 10), ("No changes to apply on member a".into(), true));
        assert_eq!(
            outcome("a", &r(202), 10).0,
            "Reload request received for member a and will be processed within 10 seconds"
        );
        assert_eq!(outcome("a", &r(401), 10), ("Failed: reload for member a, status code=401, (x)".into(), false));
    }
}
