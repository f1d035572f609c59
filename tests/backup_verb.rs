//! Story: the same backup line in every member's crontab runs on one member only.
//!
//! 1. In a three-member cluster, `rampart backup -c <member's file> -- COMMAND` is run on every
//!    member, as cron would: the command runs on the leader only (it copies the leader's data
//!    with pg_basebackup here); the others say who runs it and exit 0.
//! 2. `rampart list` shows the last backup under the table, and every member's `/metrics` shows
//!    it succeeded.
//! 3. With `--role replica`, exactly one replica runs it.
//! 4. A failing command: `rampart backup` exits with the command's code, `list` and `/metrics`
//!    say it failed, and the time of the last success is still there.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};

/// A backup command that records which member ran it, then runs `body`.
fn script(c: &Cluster, name: &str, body: &str) -> String {
    let path = c.dir().join(name);
    std::fs::write(
        &path,
        format!("#!/bin/sh\nset -e\necho \"$RAMPART_TEST_MEMBER\" >> {}/ran-{name}\n{body}\n", c.dir().display()),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// `rampart backup` on member `i`, as its crontab would run it: (exit code, output).
fn backup_on(c: &Cluster, i: usize, role: &str, command: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(support::rampart_bin())
        .arg("backup")
        .arg("-c")
        .arg(c.config_path(i))
        .args(["--role", role, "--"])
        .args(command)
        .env("RAMPART_TEST_MEMBER", c.name(i))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("rampart backup runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn ran(c: &Cluster, name: &str) -> Vec<String> {
    std::fs::read_to_string(c.dir().join(format!("ran-{name}")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn list(c: &Cluster) -> String {
    let out = c.rampart(["list", "-c", &c.config_path(0).display().to_string()]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metric(c: &Cluster, i: usize, name: &str) -> Option<f64> {
    let r = support::http_request(c.api_port(i), "GET", "/metrics", None).ok()?;
    r.body.lines().find(|l| l.starts_with(&format!("{name}{{"))).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_line_on_every_member_runs_on_one_member_only() {
    let c = Cluster::start(3, ClusterOptions::default());
    let leader = support::health::wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let copy = c.dir().join("basebackup");
    let full = script(
        &c,
        "full",
        &format!(
            "PGPASSWORD={} {}/pg_basebackup -h 127.0.0.1 -p {} -U {} -D {} -X stream -c fast",
            support::REPLICATION_PASSWORD,
            support::pg_bin_dir().display(),
            c.pg_port(leader),
            support::REPLICATION_USER,
            copy.display()
        ),
    );

    // Cron fires on every member.
    let mut outputs = Vec::new();
    for i in 0..3 {
        let (code, text) = backup_on(&c, i, "leader", &[&full]);
        assert_eq!(code, 0, "member {i}: {text}");
        outputs.push(text);
    }
    assert_eq!(ran(&c, "full"), [c.name(leader)], "the leader alone ran it: {outputs:#?}");
    assert!(copy.join("PG_VERSION").is_file(), "the backup copied the leader's data");
    let other = (leader + 1) % 3;
    assert!(
        outputs[other].contains(&format!("not running it on {}", c.name(other)))
            && outputs[other].contains(&format!("{} runs it", c.name(leader))),
        "{}",
        outputs[other]
    );
    let shown = list(&c);
    assert!(shown.contains(&format!(" Last backup: succeeded on {} (leader, full)", c.name(leader))), "{shown}");
    let success_at = metric(&c, other, "rampart_backup_last_success_time");
    let seen = support::wait_until(Duration::from_secs(20), Duration::from_millis(250), || {
        (0..3).all(|i| metric(&c, i, "rampart_backup_last_succeeded") == Some(1.0))
    });
    assert!(seen, "every member's /metrics shows the success ({success_at:?})");

    // One replica, whichever every member agrees on.
    let plain = script(&c, "replica", "true");
    for i in 0..3 {
        let (code, text) = backup_on(&c, i, "replica", &[&plain]);
        assert_eq!(code, 0, "member {i}: {text}");
    }
    let runners = ran(&c, "replica");
    assert_eq!(runners.len(), 1, "exactly one member ran it: {runners:?}");
    assert_ne!(runners[0], c.name(leader), "a replica ran it");

    // A failing backup: its exit code, and the failure shown beside the last success.
    let failing = script(&c, "broken", "exit 3");
    let (code, text) = backup_on(&c, leader, "leader", &[&failing]);
    assert_eq!(code, 3, "the command's exit code: {text}");
    let shown = list(&c);
    assert!(shown.contains(" Last backup: failed on") && shown.contains("exit code 3"), "{shown}");
    let failed = support::wait_until(Duration::from_secs(20), Duration::from_millis(250), || {
        metric(&c, other, "rampart_backup_last_succeeded") == Some(0.0)
            && metric(&c, other, "rampart_backup_last_exit_code") == Some(3.0)
    });
    assert!(failed, "/metrics shows the failure");
    assert!(metric(&c, other, "rampart_backup_last_success_time").is_some_and(|t| t > 0.0), "the last success stays");
}
