//! Headless Chromium (Debian's `chromium` package, found as `chromium` on PATH), for tests that
//! check what a person sees on an HTML page: [`dump_dom`] loads a URL and returns the DOM
//! Chromium built from it.
//!
//! Chromium starts helper processes (zygote, renderer, ...). It runs in a process group of its
//! own, and the harness stops that group by its id (the PID it started, before reaping it), never
//! by name: at the timeout, and after a normal exit in case a helper outlived the browser. Each
//! call gets a fresh profile directory, so runs never share state.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// `chromium` from PATH; panics, saying how to install it, when there is none.
pub fn chromium_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("chromium")).find(|p| is_executable(p)).unwrap_or_else(|| {
        panic!(
            "this test renders a page with headless Chromium, but `chromium` is not on PATH: \
             run scripts/setup.sh (it installs Debian's chromium package)"
        )
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Loads `url` in headless Chromium and returns the serialized DOM (`--dump-dom`). Profile and
/// log go to a new directory under `work_dir`. Panics, with the end of Chromium's log, when it
/// fails or takes longer than `timeout`.
pub fn dump_dom(url: &str, work_dir: &Path, timeout: Duration) -> String {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let bin = chromium_bin();
    let dir = work_dir.join(format!("chromium-{}", CALLS.fetch_add(1, Ordering::Relaxed)));
    let profile = dir.join("profile");
    std::fs::create_dir_all(&profile).unwrap_or_else(|e| panic!("creating {}: {e}", profile.display()));
    let dom_path = dir.join("dom.html");
    let log_path = dir.join("chromium.log");
    let create = |p: &Path| std::fs::File::create(p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
    let mut child = Command::new(&bin)
        // The tests run as root, where Chromium refuses to start with its sandbox.
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .args(["--no-first-run", "--no-default-browser-check", "--disable-extensions"])
        // No traffic of its own: the machine's network is closed, and refused background
        // connections (updates, sync, QUIC probes) only slow the start and fill the log.
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(create(&dom_path))
        .stderr(create(&log_path))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    super::process::write_pid_file(&super::process::pid_file_for(&log_path), child.id());
    let leader = Pid::from_raw(i32::try_from(child.id()).expect("a PID fits in i32"));
    // Look without reaping (WNOWAIT): until it is reaped, the leader's PID, which is the group's
    // id, cannot be handed to another process, so the group signal below reaches only Chromium.
    let deadline = Instant::now() + timeout;
    let exited = loop {
        match waitid(Id::Pid(leader), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(WaitStatus::StillAlive) => break false,
            Ok(_) => break true,
            Err(e) => panic!("waiting for chromium: {e}"),
        }
    };
    // Helpers that outlived the browser, or the whole browser at the timeout.
    let _ = killpg(leader, Signal::SIGKILL);
    let status = child.wait().unwrap_or_else(|e| panic!("reaping chromium: {e}"));
    assert!(exited, "chromium did not render {url} within {timeout:?}; log:\n{}", super::tail_file(&log_path, 30));
    let dom = std::fs::read_to_string(&dom_path).unwrap_or_default();
    assert!(
        status.success() && !dom.trim().is_empty(),
        "chromium failed to render {url} ({status}); log:\n{}",
        super::tail_file(&log_path, 30)
    );
    dom
}
