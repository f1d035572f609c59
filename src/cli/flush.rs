//! `rampart flush [MEMBER...] restart|switchover`: discard scheduled events. `restart` cancels
//! the restarts scheduled on members (`DELETE /restart`); `switchover` cancels the pending
//! switchover (`DELETE /switchover` on a member's API, the leader first, or, when none can take
//! it, by clearing the DCS `failover` key directly).

use anyhow::{bail, Result};

use super::members::{select, Role};
use super::pause::leader_first;
use super::prompt::Console;
use super::rest::{Method, QUICK};
use super::session::{block_on, timestamp, Session};
use super::target::{self, TargetArgs};

/// Options of `rampart flush`.
#[derive(clap::Args, Debug, Clone)]
pub struct FlushArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Members (for restart), then what to discard: restart or switchover.
    #[arg(required = true, value_name = "[CLUSTER] [MEMBER...] restart|switchover")]
    pub words: Vec<String>,
    /// Flush only members with this role (restart).
    #[arg(short = 'r', long, value_enum, default_value = "any")]
    pub role: Role,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
}

/// What to discard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// Scheduled restarts.
    Restart,
    /// The pending switchover.
    Switchover,
}

/// Splits `[MEMBER...] restart|switchover`.
pub fn parse_words(words: &[String]) -> Result<(Vec<String>, What)> {
    let Some((last, members)) = words.split_last() else {
        bail!("flush: say what to discard: restart or switchover");
    };
    let what = match last.as_str() {
        "restart" => What::Restart,
        "switchover" => What::Switchover,
        other => bail!(
            "flush: the last word must be restart or switchover, not {other:?} (e.g. `rampart flush node1 restart`)"
        ),
    };
    if what == What::Switchover && !members.is_empty() {
        bail!("flush: a switchover belongs to the cluster, not to members; use `rampart flush switchover`");
    }
    Ok((members.to_vec(), what))
}

/// `rampart flush`.
pub fn run(args: FlushArgs) -> Result<()> {
    let (target, words) = target::resolve_with_members(&args.target, &args.words)?;
    let (names, what) = parse_words(&words)?;
    block_on(async move {
        let mut session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        let scope = session.scope().to_string();
        match what {
            What::Restart => {
                let members = select(&cluster, &scope, "flush", &names, args.role)?;
                print!("{}", super::list::render_table(&scope, &cluster));
                let list = members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
                if !args.force
                    && !Console::stdio("flush").confirm(&format!("Are you sure you want to flush members {list}?"))?
                {
                    bail!("flush: aborted");
                }
                let rest = session.rest()?;
                let mut failed = 0;
                for m in members {
                    if !m.data.extra.contains_key("scheduled_restart") {
                        println!("No scheduled restart for member {}", m.name);
                        continue;
                    }
                    match rest.call(m, Method::Delete, "restart", None, QUICK).await {
                        Ok(r) if r.status < 400 => println!("Success: flush scheduled restart for member {}", m.name),
                        Ok(r) => {
                            println!(
                                "Failed: flush scheduled restart for member {}, status code={}, ({})",
                                m.name, r.status, r.text
                            );
                            failed += 1;
                        }
                        Err(e) => {
                            println!("Failed: flush scheduled restart for member {}: {e}", m.name);
                            failed += 1;
                        }
                    }
                }
                if failed > 0 {
                    bail!("flush: failed on {failed} members");
                }
                Ok(())
            }
            What::Switchover => {
                if cluster.failover.is_none() {
                    println!("No pending scheduled switchover");
                    return Ok(());
                }
                let rest = session.rest()?;
                for m in leader_first(&cluster) {
                    match rest.call(m, Method::Delete, "switchover", None, QUICK).await {
                        Ok(r) if r.status == 200 => {
                            println!("Success: {}", r.text);
                            return Ok(());
                        }
                        Ok(r) if r.unsupported() => {}
                        Ok(r) if r.status == 404 => {
                            println!("Failed: {}", r.text);
                            return Ok(());
                        }
                        Ok(r) => println!("Failed: member={}, status_code={}, ({})", m.name, r.status, r.text),
                        Err(e) => eprintln!("warning: {e}"),
                    }
                }
                println!("{} Could not flush the switchover through any member of cluster {scope}; clearing the failover key in the DCS", timestamp());
                rampart_dcs::Dcs::clear_failover(&session.dcs, session.deadline()).await?;
                println!("Success: switchover discarded");
                Ok(())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn members_then_target() {
        assert_eq!(parse_words(&words(&["restart"])).unwrap(), (vec![], What::Restart));
        assert_eq!(parse_words(&words(&["a", "b", "restart"])).unwrap(), (words(&["a", "b"]), What::Restart));
        assert_eq!(parse_words(&words(&["switchover"])).unwrap(), (vec![], What::Switchover));
        let e = parse_words(&words(&["a", "switchover"])).unwrap_err().to_string();
        assert!(e.contains("use `rampart flush switchover`"), "{e}");
        let e = parse_words(&words(&["a", "b"])).unwrap_err().to_string();
        assert!(e.starts_with("flush: the last word must be restart or switchover, not \"b\""), "{e}");
    }
}
