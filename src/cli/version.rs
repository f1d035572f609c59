//! `rampart version [MEMBER...]`: this binary's version and, when a cluster is named (`-c`,
//! `--dcs`, `--scope`) or members are listed, each member's versions as its REST API reports
//! them.

use anyhow::Result;
use rampart_core::Member;
use serde_json::Value;

use super::rest::{Method, QUICK};
use super::session::{block_on, Session};
use super::target::{self, TargetArgs};

/// Options of `rampart version`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct VersionArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// [CLUSTER] then the members to ask (default: all, when a cluster is named).
    pub members: Vec<String>,
}

/// `11.22` style, as patronictl formats `server_version` (`90624` is `9.6.24`).
pub fn pg_version(v: u64) -> String {
    if v < 100_000 {
        format!("{}.{}.{}", v / 10_000, v / 100 % 100, v % 100)
    } else {
        format!("{}.{}", v / 10_000, v % 100)
    }
}

/// One member's line from its `/patroni` answer (and the Rampart version in its member key).
pub fn member_line(m: &Member, status: &Value) -> String {
    let patroni = status["patroni"]["version"].as_str().unwrap_or("unknown");
    let pg = status["server_version"].as_u64().map(|v| format!(" PostgreSQL {}", pg_version(v))).unwrap_or_default();
    match &m.data.rampart {
        Some(r) => format!("{}: Rampart {r} (Patroni {patroni} compatible){pg}", m.name),
        None => format!("{}: Patroni {patroni}{pg}", m.name),
    }
}

/// `rampart version`.
pub fn run(args: VersionArgs) -> Result<()> {
    println!("rampart {}", env!("CARGO_PKG_VERSION"));
    if !args.target.is_explicit() && args.members.is_empty() {
        return Ok(());
    }
    let (target, members) = target::resolve_with_members(&args.target, &args.members)?;
    let args = VersionArgs { members, ..args };
    block_on(async move {
        let mut session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        let scope = session.scope().to_string();
        let rest = session.rest()?;
        println!();
        for name in &args.members {
            if cluster.member(name).is_none() {
                println!("{name}: not a member of cluster {scope}");
            }
        }
        for m in &cluster.members {
            if m.data.api_url.is_empty() || !(args.members.is_empty() || args.members.contains(&m.name)) {
                continue;
            }
            let line = match rest.call(m, Method::Get, "patroni", None, QUICK).await {
                Ok(r) if r.ok() => match serde_json::from_str::<Value>(&r.text) {
                    Ok(v) => member_line(m, &v),
                    Err(e) => format!("{}: failed to get version: unreadable answer: {e}", m.name),
                },
                Ok(r) => format!("{}: failed to get version: status {}: {}", m.name, r.status, r.text),
                Err(e) => format!("{}: failed to get version: {e}", m.name),
            };
            println!("{line}");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_read_like_patronictl() {
        assert_eq!(pg_version(90624), "9.6.24");
        assert_eq!(pg_version(150010), "15.10");
        let mut m = crate::cli::rest::tests::member("n1", "http://h:1/patroni");
        let status = json!({"patroni": {"version": "4.1.4"}, "server_version": 150010});
        assert_eq!(member_line(&m, &status), "n1: Patroni 4.1.4 PostgreSQL 15.10");
        m.data.rampart = Some("0.1.0".into());
        assert_eq!(member_line(&m, &status), "n1: Rampart 0.1.0 (Patroni 4.1.4 compatible) PostgreSQL 15.10");
        assert_eq!(member_line(&m, &json!({})), "n1: Rampart 0.1.0 (Patroni unknown compatible)");
    }
}
