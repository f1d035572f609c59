//! `rampart history`: the timeline switches recorded in the DCS `history` key (TL, LSN, Reason,
//! Timestamp, New Leader), as `patronictl history` prints them.

use anyhow::Result;
use rampart_core::Cluster;
use serde_json::{json, Value};

use super::session::{block_on, Session};
use super::table::{Format, Table};
use super::target::{self, TargetArgs};

/// Options of `rampart history`.
#[derive(clap::Args, Debug, Clone)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The cluster (default: the configuration's `scope`).
    pub cluster: Option<String>,
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: Format,
}

/// The history table, oldest switch first.
pub fn history_table(cluster: &Cluster) -> Table {
    let mut t = Table::new(["TL", "LSN", "Reason", "Timestamp", "New Leader"]);
    t.right = vec!["TL".into(), "LSN".into()];
    let text = |v: &Option<String>| v.clone().map(Value::from).unwrap_or_else(|| json!(""));
    t.rows = cluster
        .history
        .iter()
        .map(|h| vec![json!(h.timeline), json!(h.lsn.0), json!(h.reason), text(&h.timestamp), text(&h.new_leader)])
        .collect();
    t
}

/// `rampart history`.
pub fn run(args: HistoryArgs) -> Result<()> {
    let target = target::resolve(&args.target, args.cluster.as_deref())?;
    block_on(async move {
        let session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        print!("{}", history_table(&cluster).render(args.format));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::members::tests::cluster;

    #[test]
    fn columns_and_formats() {
        let c = cluster(&[(
            "history",
            r#"[[1,50331808,"no recovery target specified","2024-01-01T00:00:00.000000+00:00","n2"],[2,67109024,"no recovery target specified"]]"#,
        )]);
        let t = history_table(&c);
        assert_eq!(
            t.render(Format::Pretty),
            "+----+----------+------------------------------+----------------------------------+------------+\n\
             | TL |      LSN | Reason                       | Timestamp                        | New Leader |\n\
             +----+----------+------------------------------+----------------------------------+------------+\n\
             |  1 | 50331808 | no recovery target specified | 2024-01-01T00:00:00.000000+00:00 | n2         |\n\
             |  2 | 67109024 | no recovery target specified |                                  |            |\n\
             +----+----------+------------------------------+----------------------------------+------------+\n"
        );
        let v: Value = serde_json::from_str(&t.render(Format::Json)).unwrap();
        assert_eq!(
            v[0],
            json!({"TL": 1, "LSN": 50331808, "Reason": "no recovery target specified", "Timestamp": "2024-01-01T00:00:00.000000+00:00", "New Leader": "n2"})
        );
        assert_eq!(v[1]["New Leader"], "", "patronictl pads short lines");
        assert!(t.render(Format::Tsv).starts_with("TL\tLSN\tReason\tTimestamp\tNew Leader\n1\t50331808\t"));
        assert_eq!(
            history_table(&cluster(&[])).render(Format::Pretty).lines().count(),
            4,
            "an empty history is a header and PrettyTable's closing rule"
        );
    }
}
