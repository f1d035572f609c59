//! Story: an operator keeps Patroni's `log` section when moving to Rampart, asking for JSON lines
//! in a directory with small rotated files, as a log shipper expects them. The agent writes
//! `<dir>/patroni.log` (and its rotated `.1`, `.2`...) instead of stderr, every line of every file
//! is one JSON object, and the agent's start and its HA decisions are there with their fields.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};

const FILE_SIZE: u64 = 1000;
const FILE_NUM: u32 = 20;

/// `patroni.log` and its rotated files, oldest first.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        (1..=FILE_NUM).rev().map(|i| dir.join(format!("patroni.log.{i}"))).filter(|p| p.exists()).collect();
    out.push(dir.join("patroni.log"));
    out
}

/// Every line of every file, parsed; panics naming the file and line that is not JSON.
fn json_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for file in log_files(dir) {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (i, line) in text.lines().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: not a JSON line ({e}): {line}", file.display(), i + 1));
            out.push(value);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_writes_rotated_json_lines_where_the_log_section_says() {
    let c = Cluster::start(
        1,
        ClusterOptions::default().tweak(|_, n| {
            let dir = n.node_dir.join("log");
            n.extra_yaml(&format!(
                "log:\n  type: json\n  dir: {}\n  file_size: {FILE_SIZE}\n  file_num: {FILE_NUM}\n  \
                 static_fields: {{service: rampart-test}}\n",
                dir.display()
            ))
        }),
    );
    let leader = c.wait_for_single_primary(Duration::from_secs(90)).await.expect("a primary");
    let dir = c.node(leader).config.node_dir.join("log");
    let me = c.name(leader).to_string();

    // The start line and a decision line, with their fields, are in the file.
    let mut lines = Vec::new();
    let found = support::wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        lines = json_lines(&dir);
        let started = lines.iter().any(|l| l["message"] == "agent starting" && l["member"] == me.as_str());
        let decided = lines.iter().any(|l| {
            l["message"].as_str().is_some_and(|m| m.contains(&format!("I am ({me}), the leader with the lock")))
        });
        started && decided
    });
    assert!(found, "no start line or no leader decision among {} lines:\n{lines:#?}", lines.len());
    for l in &lines {
        assert!(l["asctime"].is_string() && l["levelname"].is_string() && l["message"].is_string(), "{l}");
        assert_eq!(l["service"], "rampart-test", "static_fields in every line: {l}");
    }

    // Rotated by size, each file below file_size unless one line alone is longer.
    let files = log_files(&dir);
    println!("{} lines in {} files", lines.len(), files.len());
    assert!(files.len() > 1, "the start-up's lines ({} of them) filled more than {FILE_SIZE} bytes", lines.len());
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            (text.len() as u64) < FILE_SIZE || text.lines().count() == 1,
            "{} holds {} bytes, file_size is {FILE_SIZE}",
            f.display(),
            text.len()
        );
    }

    // Nothing went to stderr (the harness's agent.log): the file took its place.
    let stderr = std::fs::read_to_string(c.log_path(leader)).unwrap_or_default();
    assert!(!stderr.contains("agent starting"), "the log also went to stderr:\n{stderr}");
}
