//! Story: someone types `rampart demo`, waits for the cluster to be healthy, looks at it with
//! `rampart list`, and presses Ctrl-C. Everything the demo started must be gone afterwards.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The demo process; if the test ends early (a failed assertion), Ctrl-C is sent so that the
/// demo stops its agents, PostgreSQL and etcd, and after a minute it is killed.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGINT);
            let stopped = support::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
                !matches!(self.0.try_wait(), Ok(None))
            });
            if !stopped {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
}

#[test]
fn demo_comes_up_healthy_and_ctrl_c_stops_everything() {
    let dir = support::TestDir::new("demo");
    let demo_dir = dir.join("cluster");
    let child = Command::new(support::rampart_bin())
        .args(["demo", "--dir"])
        .arg(&demo_dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rampart demo");
    let mut demo = Demo(child);
    let child = &mut demo.0;
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let mut seen = Vec::new();
    let healthy = loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                let done = line.starts_with("cluster healthy after");
                seen.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if !healthy {
        let _ = kill(pid, Signal::SIGINT);
        let _ = child.wait();
        panic!("the demo never reported a healthy cluster; it printed:\n{}", seen.join("\n"));
    }
    // The connection strings and the member table follow.
    while !seen.iter().any(|l| l.contains("| Leader ")) {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    seen.extend(rx.try_iter());
    let text = seen.join("\n");
    assert!(text.contains("target_session_attrs=read-write"), "{text}");
    assert!(text.contains("| Leader "), "{text}");

    let out = support::rampart(["list", "-c", demo_dir.join("node1.yml").to_str().unwrap(), "-f", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rampart list -f json");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().filter(|r| r["Role"] == "Leader").count(), 1);
    assert_eq!(rows.iter().filter(|r| r["State"] == "streaming").count(), 2);

    // Every PostgreSQL the demo started, by the PIDs in their postmaster.pid files.
    let postmasters: Vec<u32> = (1..=3)
        .filter_map(|i| support::process::read_postmaster_pid(&demo_dir.join(format!("node{i}/data"))))
        .collect();
    assert_eq!(postmasters.len(), 3);

    kill(pid, Signal::SIGINT).unwrap();
    let status = {
        let mut waited = None;
        support::wait_until(Duration::from_secs(120), Duration::from_millis(200), || {
            waited = child.try_wait().unwrap();
            waited.is_some()
        });
        waited
    };
    if status.is_none() {
        let _ = child.kill();
    }
    assert!(status.is_some_and(|s| s.success()), "demo exit status after Ctrl-C: {status:?}");
    for pm in postmasters {
        assert!(!support::process::is_alive(pm), "postmaster {pm} still runs after the demo stopped");
    }
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.starts_with("done;")), "{}", rest.join("\n"));
}
