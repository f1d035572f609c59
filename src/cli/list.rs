//! `rampart list`: the member table, as `patronictl list` prints it.
//!
//! Pure rendering from a [`Cluster`] snapshot so the layout is unit-tested without a DCS.
//! Columns: Member, Host, Role, State, TL, Lag in MB, under a title naming the cluster and its
//! system identifier; `-f json` prints one object per member with the same keys plus `Cluster`.

use rampart_core::Cluster;
use serde_json::{json, Value};

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Member name.
    pub member: String,
    /// `host` or `host:port`.
    pub host: String,
    /// `Leader` or `Replica`.
    pub role: String,
    /// PostgreSQL or replication state.
    pub state: String,
    /// Timeline, if known.
    pub tl: Option<u32>,
    /// Lag behind the leader in whole MB; `None` for the leader, `Some(None)` when unknown.
    pub lag_mb: Option<Option<u64>>,
}

/// Builds the rows, sorted by member name.
pub fn rows(cluster: &Cluster) -> Vec<Row> {
    let leader_pos =
        cluster.leader_member().map(|m| m.data.wal_position().0).or(Some(cluster.status.optime).filter(|&o| o > 0));
    let hosts: Vec<(String, u16)> = cluster.members.iter().filter_map(|m| m.data.conn_host_port()).collect();
    // patronictl shows the port only when it is needed to tell members apart or is not 5432.
    let show_port = hosts.iter().any(|(_, p)| *p != 5432)
        || hosts.iter().enumerate().any(|(i, (h, _))| hosts[..i].iter().any(|(h2, _)| h2 == h));
    cluster
        .members
        .iter()
        .map(|m| {
            let is_leader = cluster.is_leader(&m.name);
            let host = match m.data.conn_host_port() {
                Some((h, p)) if show_port => format!("{h}:{p}"),
                Some((h, _)) => h,
                None => String::new(),
            };
            let state = if is_leader {
                m.data.state.clone()
            } else {
                match (&m.data.replication_state, m.data.state.as_str()) {
                    (Some(rs), "running") => rs.clone(),
                    _ => m.data.state.clone(),
                }
            };
            let lag_mb = if is_leader {
                None
            } else {
                let mine = [m.data.xlog_location, m.data.receive_lsn, m.data.replay_lsn].into_iter().flatten().max();
                Some(match (leader_pos, mine) {
                    (Some(l), Some(me)) => Some(l.saturating_sub(me) / (1024 * 1024)),
                    _ => None,
                })
            };
            Row {
                member: m.name.clone(),
                host,
                role: if is_leader { "Leader".into() } else { "Replica".into() },
                state,
                tl: m.data.timeline,
                lag_mb,
            }
        })
        .collect()
}

fn lag_text(l: &Option<Option<u64>>) -> String {
    match l {
        None => String::new(),
        Some(None) => "unknown".into(),
        Some(Some(v)) => v.to_string(),
    }
}

/// The pretty table.
pub fn render_table(scope: &str, cluster: &Cluster) -> String {
    let rows = rows(cluster);
    let head = ["Member", "Host", "Role", "State", "TL", "Lag in MB"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.member.clone(),
                r.host.clone(),
                r.role.clone(),
                r.state.clone(),
                r.tl.map(|t| t.to_string()).unwrap_or_default(),
                lag_text(&r.lag_mb),
            ]
        })
        .collect();
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for c in &cells {
        for (i, v) in c.iter().enumerate() {
            w[i] = w[i].max(v.chars().count());
        }
    }
    let sep = |out: &mut String| {
        out.push('+');
        for x in &w {
            out.push_str(&"-".repeat(x + 2));
            out.push('+');
        }
        out.push('\n');
    };
    let mut out = String::new();
    // Title line: "+ Cluster: name (sysid) ---...+" spanning the table width.
    let total: usize = w.iter().map(|x| x + 3).sum::<usize>() + 1;
    let sysid = match cluster.initialize.as_deref() {
        None => "uninitialized".to_string(),
        Some("") => "initializing".to_string(),
        Some(s) => s.to_string(),
    };
    let title = format!("+ Cluster: {scope} ({sysid}) ");
    let pad = total.saturating_sub(title.chars().count() + 1);
    out.push_str(&title);
    out.push_str(&"-".repeat(pad));
    out.push_str("+\n");
    let line = |out: &mut String, vals: &[String]| {
        out.push('|');
        for (i, v) in vals.iter().enumerate() {
            // Numbers right-aligned, text left-aligned, as patronictl does.
            if i >= 4 {
                out.push_str(&format!(" {:>width$} |", v, width = w[i]));
            } else {
                out.push_str(&format!(" {:<width$} |", v, width = w[i]));
            }
        }
        out.push('\n');
    };
    line(&mut out, &head.map(String::from));
    sep(&mut out);
    for c in &cells {
        line(&mut out, c);
    }
    sep(&mut out);
    if cluster.config.as_ref().is_some_and(|c| c.paused()) {
        out.push_str(" Maintenance mode: on\n");
    }
    out
}

/// The JSON form: one object per member, with patronictl's keys.
pub fn render_json(scope: &str, cluster: &Cluster) -> Value {
    Value::Array(
        rows(cluster)
            .into_iter()
            .map(|r| {
                let mut o = json!({
                    "Cluster": scope,
                    "Member": r.member,
                    "Host": r.host,
                    "Role": r.role,
                    "State": r.state,
                    "TL": r.tl,
                });
                if let Some(l) = r.lag_mb {
                    o["Lag in MB"] = match l {
                        Some(v) => json!(v),
                        None => json!("unknown"),
                    };
                }
                o
            })
            .collect(),
    )
}

/// Reads the cluster named by the configuration file from the DCS and prints it.
pub fn run(path: &std::path::Path, format: crate::Format) -> anyhow::Result<()> {
    use anyhow::Context;
    use rampart_dcs::Dcs;
    let loaded = rampart_config::load(path)?;
    let cfg = loaded.config;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cluster = rt
        .block_on(async {
            let dynamic = cfg.bootstrap_dcs();
            let dcs = rampart_dcs::EtcdDcs::connect(
                crate::agent::settings::etcd_options(&cfg, dynamic.retry_timeout),
                cfg.prefix(),
                cfg.name.clone(),
                dynamic.ttl,
            )
            .await?;
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(dynamic.retry_timeout.max(3));
            dcs.read_cluster(deadline).await.map_err(anyhow::Error::from)
        })
        .with_context(|| format!("reading cluster '{}' from etcd ({})", cfg.scope, cfg.etcd_endpoints().join(",")))?;
    match format {
        crate::Format::Pretty => print!("{}", render_table(&cfg.scope, &cluster)),
        crate::Format::Json => println!("{}", render_json(&cfg.scope, &cluster)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_core::keys::ClusterPrefix;
    use rampart_core::model::RawKv;

    fn sample() -> Cluster {
        let p = ClusterPrefix::new("/service", "pg");
        let kv =
            |k: &str, v: &str| RawKv { key: format!("/service/pg/{k}"), value: v.into(), lease: 1, mod_revision: 1 };
        Cluster::from_kvs(
            &p,
            &[
                kv("initialize", "7301"),
                kv("leader", "a"),
                kv(
                    "members/a",
                    r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","state":"running","role":"primary","xlog_location":5242880,"timeline":2}"#,
                ),
                kv(
                    "members/b",
                    r#"{"conn_url":"postgres://127.0.0.1:5434/postgres","state":"running","role":"replica","xlog_location":1048576,"replication_state":"streaming","timeline":2}"#,
                ),
                kv(
                    "members/c",
                    r#"{"conn_url":"postgres://127.0.0.1:5435/postgres","state":"stopped","role":"replica"}"#,
                ),
            ],
            1,
        )
    }

    #[test]
    fn table_looks_like_patronictl() {
        let t = render_table("pg", &sample());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("+ Cluster: pg (7301) -"), "{t}");
        assert_eq!(lines[0].len(), lines[2].len(), "title spans the table\n{t}");
        assert!(lines[1].contains("| Member | Host") && lines[1].contains("| Lag in MB |"), "{t}");
        assert!(lines[3].contains("| a      | 127.0.0.1:5433 | Leader  | running   |  2 |           |"), "{t}");
        assert!(lines[4].contains("| b      | 127.0.0.1:5434 | Replica | streaming |  2 |         4 |"), "{t}");
        assert!(lines[5].contains("stopped") && lines[5].contains("unknown"), "{t}");
    }

    #[test]
    fn json_rows_have_patronictl_keys() {
        let v = render_json("pg", &sample());
        assert_eq!(v[0]["Role"], "Leader");
        assert_eq!(v[0]["Cluster"], "pg");
        assert!(v[0].get("Lag in MB").is_none());
        assert_eq!(v[1]["Lag in MB"], 4);
        assert_eq!(v[1]["State"], "streaming");
        assert_eq!(v[1]["TL"], 2);
    }
}
