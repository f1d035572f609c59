//! Story: someone types `rampart demo`, waits for the cluster to be healthy, connects through the
//! proxy addresses it prints, looks at the cluster with `rampart list`, and stops it: with Ctrl-C,
//! by closing the terminal (SIGHUP), with SIGTERM after the pipe its output went to is gone, or by
//! killing it outright (SIGKILL). Whatever the way, nothing the demo started may be left running:
//! no agent, proxy, etcd or postmaster.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::process::{is_alive, read_postmaster_pid, start_time};

const PASSWORD: &str = "demo-superuser";

/// What to do with the demo's stdout once the cluster is healthy.
#[derive(PartialEq)]
enum Stdout {
    Keep,
    /// Close the pipe, as when `rampart demo | tee` loses its `tee` to the same Ctrl-C.
    Close,
}

/// A running `rampart demo` and what it printed. If the test ends early (a failed assertion), the
/// demo gets SIGINT (it then stops its children), and after a minute SIGKILL; any process it
/// started that is still alive after that is killed by its recorded PID.
struct Demo {
    child: std::process::Child,
    dir: PathBuf,
    nodes: u8,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// (what, pid, start time) of everything the demo started, once known.
    started: Vec<(String, u32, Option<u64>)>,
}

impl Demo {
    fn start(dir: &Path, nodes: u8, stdout: Stdout) -> Demo {
        let mut cmd = Command::new(support::rampart_bin());
        cmd.args(["demo", "--nodes", &nodes.to_string(), "--dir"])
            .arg(dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // If the test process is killed (a timeout), the demo gets SIGTERM and stops what it
        // started. The test's thread outlives the demo: Drop stops it before the test returns.
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| Ok(nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?));
        }
        let mut child = cmd.spawn().expect("start rampart demo");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let last = line.starts_with("Press Ctrl-C");
                let _ = tx.send(line);
                if last && stdout == Stdout::Close {
                    // Returning drops the read end: the demo's next write fails with EPIPE.
                    return;
                }
            }
        });
        Demo { child, dir: dir.to_path_buf(), nodes, lines: rx, seen: Vec::new(), started: Vec::new() }
    }

    /// A demo of `nodes` nodes in a new test directory named after `name`, once it is healthy.
    /// The directory is returned too: the demo's files live as long as it.
    fn healthy(name: &str, nodes: u8, stdout: Stdout) -> (support::TestDir, Demo) {
        let dir = support::TestDir::new(name);
        let mut demo = Demo::start(&dir.join("cluster"), nodes, stdout);
        demo.wait_healthy();
        (dir, demo)
    }

    /// Asserts that a line printed since the last look starts with `prefix`.
    fn assert_printed(&self, prefix: &str) {
        let rest: Vec<String> = self.lines.try_iter().collect();
        assert!(rest.iter().any(|l| l.starts_with(prefix)), "no {prefix:?} in:\n{}", rest.join("\n"));
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Waits for the healthy report and what follows it (up to "Press Ctrl-C"), then records the
    /// PIDs of everything the demo started: its `demo.pids` and each node's `postmaster.pid`.
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !self.seen.iter().any(|l| l.starts_with("Press Ctrl-C")) {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("the demo never reported a healthy cluster; it printed:\n{}", self.text()),
            }
        }
        let pids = std::fs::read_to_string(self.dir.join("demo.pids")).expect("demo.pids");
        for line in pids.lines() {
            let (name, pid) = line.split_once(' ').expect("name pid");
            let pid: u32 = pid.parse().expect("a pid");
            self.started.push((name.to_string(), pid, start_time(pid)));
        }
        for i in 1..=self.nodes {
            let pm = read_postmaster_pid(&self.dir.join(format!("node{i}/data")))
                .unwrap_or_else(|| panic!("node{i} has no postmaster.pid although the cluster is healthy"));
            self.started.push((format!("node{i}'s postmaster"), pm, start_time(pm)));
        }
        let names: Vec<&str> = self.started.iter().map(|(n, ..)| n.as_str()).collect();
        for expected in ["etcd", "node1", "proxy", "node1's postmaster"] {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }
    }

    fn text(&self) -> String {
        self.seen.join("\n")
    }

    /// The port of the printed connection string on the line containing `what`.
    fn printed_port(&self, what: &str) -> u16 {
        let line =
            self.seen.iter().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what:?} in:\n{}", self.text()));
        let after = line.rsplit_once("127.0.0.1:").expect("an address").1;
        after.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().expect("a port")
    }

    /// What the demo started that is still running (the same process: PID and start time).
    fn still_running(&self) -> Vec<String> {
        self.started
            .iter()
            .filter(|(_, pid, start)| is_alive(*pid) && start_time(*pid) == *start)
            .map(|(name, pid, _)| format!("{name} (pid {pid})"))
            .collect()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        support::wait_until(timeout, Duration::from_millis(100), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    /// Sends `sig` and expects a clean stop: exit status 0 and nothing left running.
    fn stop_with(&mut self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
        let t = Instant::now();
        let status = self.wait_exit(Duration::from_secs(180));
        println!("the demo stopped {:.1}s after {sig}", t.elapsed().as_secs_f64());
        assert!(status.is_some_and(|s| s.success()), "demo exit status after {sig}: {status:?}");
        // The agents waited for their postmasters; give a postmaster's last children a moment.
        support::wait_until(Duration::from_secs(10), Duration::from_millis(100), || self.still_running().is_empty());
        let left = self.still_running();
        assert!(left.is_empty(), "still running after the demo stopped on {sig}: {left:?}");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(self.pid(), Signal::SIGINT);
            if self.wait_exit(Duration::from_secs(60)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        for (name, pid, start) in &self.started {
            if is_alive(*pid) && start_time(*pid) == *start {
                if name.ends_with("postmaster") {
                    let data = self.dir.join(name.split('\'').next().unwrap()).join("data");
                    support::process::stop_postmaster(&data, Duration::from_secs(5));
                } else {
                    support::process::signal(*pid, Signal::SIGKILL);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_comes_up_healthy_serves_through_its_proxy_and_ctrl_c_stops_everything() {
    let (_dir, mut demo) = Demo::healthy("demo", 3, Stdout::Keep);
    let text = demo.text();
    assert!(text.contains("target_session_attrs=read-write"), "{text}");
    assert!(text.contains("| Leader "), "{text}");

    // The proxy's addresses, as printed, work: the read-write port reaches the primary, the
    // read-only port a replica, and the statistics page answers.
    let rw = demo.printed_port("through rampart proxy, read-write");
    let ro = demo.printed_port("through rampart proxy, read-only");
    let admin = demo.printed_port("/stats");
    assert!(text.contains(&format!("http://127.0.0.1:{admin}/stats")), "{text}");
    for (port, in_recovery) in [(rw, false), (ro, true)] {
        let ask = || async move {
            let db = support::connect(port, "postgres", PASSWORD).await.ok()?;
            support::query_one_bool(&db, "SELECT pg_is_in_recovery()").await.ok()
        };
        // The proxy routes replicas once it has read them streaming: give it a few reads.
        support::wait_until_async(Duration::from_secs(30), Duration::from_millis(500), || async {
            ask().await.is_some()
        })
        .await;
        assert_eq!(ask().await, Some(in_recovery), "pg_is_in_recovery() through the proxy's port {port}");
    }
    let stats = support::client::http_request(admin, "GET", "/stats", None).expect("GET /stats");
    assert_eq!(stats.status, 200, "{}", stats.body);

    // The node configurations hold passwords: only their owner may read them.
    for i in 1..=3 {
        let file = demo.dir.join(format!("node{i}.yml"));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }

    let out = support::rampart(["list", "-c", demo.dir.join("node1.yml").to_str().unwrap(), "-f", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rampart list -f json");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().filter(|r| r["Role"] == "Leader").count(), 1);
    assert_eq!(rows.iter().filter(|r| r["State"] == "streaming").count(), 2);

    demo.stop_with(Signal::SIGINT);
    demo.assert_printed("done;");
}

#[test]
fn a_hangup_stops_the_demo_cleanly() {
    let (_dir, mut demo) = Demo::healthy("demo-hup", 1, Stdout::Keep);
    demo.stop_with(Signal::SIGHUP);
    demo.assert_printed("SIGHUP received");
}

#[test]
fn sigterm_stops_the_demo_cleanly_even_when_its_stdout_is_gone() {
    let (_dir, mut demo) = Demo::healthy("demo-term", 1, Stdout::Close);
    // The reader is gone: every line the demo prints from now on fails with EPIPE.
    demo.stop_with(Signal::SIGTERM);
}

#[test]
fn a_killed_demo_leaves_nothing_running() {
    let (_dir, mut demo) = Demo::healthy("demo-kill", 3, Stdout::Keep);
    kill(demo.pid(), Signal::SIGKILL).unwrap();
    assert!(demo.wait_exit(Duration::from_secs(10)).is_some(), "SIGKILL did not end the demo");
    // The kernel now sends each child SIGTERM (its parent-death signal): the agents stop their
    // PostgreSQL, the proxy and etcd exit. Bound: well beyond an agent's stop without etcd.
    let t = Instant::now();
    support::wait_until(Duration::from_secs(240), Duration::from_millis(200), || demo.still_running().is_empty());
    let left = demo.still_running();
    println!("everything the killed demo started was gone after {:.1}s", t.elapsed().as_secs_f64());
    assert!(left.is_empty(), "still running {:.0}s after the demo was killed: {left:?}", t.elapsed().as_secs_f64());
}
