//! `rampart dsn [CLUSTER] [-m MEMBER | -r ROLE]`: a libpq connection string (`host=... port=...`)
//! for the leader, a named member, or the first member with a role, as `patronictl dsn` prints it.
//! [`pick`] is also how `query` chooses its member.

use anyhow::{bail, Context, Result};
use rampart_core::{Cluster, Member};

use super::members::{names, Role};
use super::session::{block_on, Session};
use super::target::{self, TargetArgs};

/// Options of `rampart dsn`.
#[derive(clap::Args, Debug, Clone)]
pub struct DsnArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The cluster (default: the configuration's `scope`).
    pub cluster: Option<String>,
    /// The member to connect to (default: the leader).
    #[arg(short = 'm', long)]
    pub member: Option<String>,
    /// The first member with this role instead.
    #[arg(short = 'r', long, value_enum, conflicts_with = "member")]
    pub role: Option<Role>,
}

/// The member the DSN is for.
pub fn pick<'c>(cluster: &'c Cluster, scope: &str, member: Option<&str>, role: Option<Role>) -> Result<&'c Member> {
    if let Some(name) = member {
        return cluster.member(name).ok_or_else(|| {
            anyhow::anyhow!("{name} is not a member of cluster {scope} (members: {})", names(&cluster.members))
        });
    }
    let role = role.unwrap_or(Role::Leader);
    match cluster.members.iter().find(|m| role.matches(cluster, m)) {
        Some(m) => Ok(m),
        None if role == Role::Leader => {
            bail!("cluster {scope} has no leader right now; name a member (-m) or use --role any")
        }
        None => {
            bail!("no member of cluster {scope} has role {} (members: {})", role.name(), names(&cluster.members))
        }
    }
}

/// `host=H port=P` from the member's `conn_url`.
pub fn dsn(m: &Member) -> Result<String> {
    match m.data.conn_host_port() {
        Some((host, port)) => Ok(format!("host={host} port={port}")),
        None => bail!("dsn: member {} published no usable conn_url ({:?})", m.name, m.data.conn_url),
    }
}

/// `rampart dsn`.
pub fn run(args: DsnArgs) -> Result<()> {
    let target = target::resolve(&args.target, args.cluster.as_deref())?;
    block_on(async move {
        let session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        let member = pick(&cluster, session.scope(), args.member.as_deref(), args.role).context("dsn")?;
        println!("{}", dsn(member)?);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::members::tests::{cluster, three};

    #[test]
    fn leader_by_default_then_name_or_role() {
        let c = three();
        assert_eq!(dsn(pick(&c, "pg", None, None).unwrap()).unwrap(), "host=10.0.0.1 port=5432");
        assert_eq!(dsn(pick(&c, "pg", Some("c"), None).unwrap()).unwrap(), "host=10.0.0.3 port=5432");
        assert_eq!(pick(&c, "pg", None, Some(Role::Replica)).unwrap().name, "b");
        let e = pick(&c, "pg", Some("x"), None).unwrap_err().to_string();
        assert_eq!(e, "x is not a member of cluster pg (members: a, b, c)");
        let leaderless = cluster(&[("members/b", r#"{"conn_url":"postgres://h:5433/postgres"}"#)]);
        let e = pick(&leaderless, "pg", None, None).unwrap_err().to_string();
        assert!(e.starts_with("cluster pg has no leader right now"), "{e}");
        assert_eq!(dsn(pick(&leaderless, "pg", None, Some(Role::Any)).unwrap()).unwrap(), "host=h port=5433");
    }
}
