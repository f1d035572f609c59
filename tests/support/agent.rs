//! A `rampart agent <config>` process, run as the `postgres` OS user when the test runs as root.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::process::{
    agent_user_can_execute, chown_to_agent_user, descendants, is_alive, pid_file_for, read_postmaster_pid, run_as,
    signal, stop_postmaster, wait_gone, write_pid_file, AmbientCaps,
};

/// How long the postmaster gets to exit after SIGQUIT before it is sent SIGKILL.
pub const POSTMASTER_GRACE: Duration = Duration::from_secs(5);

/// Handle on one agent process.
///
/// On drop it kills, by PID: the agent and the processes it had started (pg_ctl, initdb,
/// pg_basebackup, ... found by walking `/proc` from the agent's PID), then the postmaster named in
/// `<data_dir>/postmaster.pid` (SIGQUIT, then SIGKILL). PostgreSQL runs in its own process group,
/// so killing the agent alone would leave it running.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    config: PathBuf,
    log: PathBuf,
    data_dir: Option<PathBuf>,
    /// When false, drop leaves the postmaster alone (another handle is responsible for it).
    owns_postmaster: bool,
    /// Set once [`Agent::kill_all`] has run.
    cleaned_up: bool,
}

impl Agent {
    /// Spawns `<bin> agent <config>` with stdout and stderr appended to `log`.
    ///
    /// As root, the process runs as the `postgres` user (uid, gid, no supplementary groups, HOME,
    /// USER and LOGNAME set). The working directory is the config file's directory. `RUST_LOG` is
    /// `RAMPART_AGENT_RUST_LOG` or `info`; PG* variables of the test's environment are removed.
    /// The data directory (for the postmaster cleanup) is read from the config's `data_dir:` line.
    pub fn start(bin: &Path, config: &Path, log: &Path) -> Agent {
        Agent::start_with_env(bin, config, log, &[])
    }

    /// [`Agent::start`] with extra environment variables (applied last, so they can override).
    pub fn start_with_env(bin: &Path, config: &Path, log: &Path, env: &[(&str, &str)]) -> Agent {
        Agent::start_in_netns(bin, config, log, env, None, AmbientCaps::None)
    }

    /// [`Agent::start_with_env`] inside the network namespace `netns`, keeping `caps` (see
    /// [`super::process::start_in_netns`]); PostgreSQL and everything else the agent starts
    /// inherit both.
    pub fn start_in_netns(
        bin: &Path,
        config: &Path,
        log: &Path,
        env: &[(&str, &str)],
        netns: Option<&Path>,
        caps: AmbientCaps,
    ) -> Agent {
        let mut log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let _ = writeln!(log_file, "=== harness: starting {} agent {} ===", bin.display(), config.display());
        let workdir = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("/"));
        let exe = executable_for_agent(bin, workdir);
        let mut cmd = agent_user_command_in(&exe, workdir, env, netns, caps);
        cmd.arg("agent")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file);
        let child =
            cmd.spawn().unwrap_or_else(|e| panic!("spawning {} agent {}: {e}", exe.display(), config.display()));
        write_pid_file(&pid_file_for(log), child.id());
        Agent {
            child,
            config: config.to_path_buf(),
            log: log.to_path_buf(),
            data_dir: data_dir_from_config(config),
            owns_postmaster: true,
            cleaned_up: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// Overrides the data directory read from the config (used to find `postmaster.pid`).
    pub fn set_data_dir(&mut self, dir: &Path) {
        self.data_dir = Some(dir.to_path_buf());
    }

    /// Whether the agent process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Exit status if the agent has exited, without waiting.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM to the agent (a graceful stop; what it does with PostgreSQL is its business).
    pub fn sigterm(&self) {
        signal(self.pid(), Signal::SIGTERM);
    }

    /// Sends SIGINT to the agent.
    pub fn sigint(&self) {
        signal(self.pid(), Signal::SIGINT);
    }

    /// Kills the agent alone with SIGKILL and reaps it, leaving PostgreSQL and anything else it
    /// started running, as a crash of the agent would.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the agent to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// PID from the first line of `<data_dir>/postmaster.pid`, if the file exists.
    pub fn postmaster_pid(&self) -> Option<u32> {
        read_postmaster_pid(self.data_dir.as_deref()?)
    }

    /// Whether the postmaster recorded in `postmaster.pid` is running.
    pub fn postmaster_running(&self) -> bool {
        self.postmaster_pid().map(is_alive).unwrap_or(false)
    }

    /// Sends `sig` to the postmaster recorded in `postmaster.pid`; false without one.
    pub fn signal_postmaster(&self, sig: Signal) -> bool {
        match self.postmaster_pid() {
            Some(pid) if is_alive(pid) => signal(pid, sig),
            _ => false,
        }
    }

    /// Kills the postmaster with SIGKILL (a crash: its children notice and exit) and waits for it.
    pub fn kill_postmaster(&self) -> Option<u32> {
        let pid = self.postmaster_pid().filter(|p| is_alive(*p))?;
        signal(pid, Signal::SIGKILL);
        wait_gone(pid, Duration::from_secs(5));
        Some(pid)
    }

    /// SIGKILLs the postmaster and every process under it and waits until all are gone; returns
    /// the postmaster's PID. After [`Agent::kill_postmaster`] alone, its backends live on until they
    /// notice (on a loaded machine, long enough to answer one more query).
    pub fn kill_postmaster_tree(&self) -> Option<u32> {
        // Listed first: once the postmaster is gone they are no longer its descendants.
        let children = descendants(self.postmaster_pid()?);
        let pid = self.kill_postmaster();
        for c in &children {
            signal(*c, Signal::SIGKILL);
        }
        for c in children {
            wait_gone(c, Duration::from_secs(5));
        }
        pid
    }

    /// Drop will not touch the postmaster: use before replacing this handle by a new agent on the
    /// same data directory, which then becomes responsible for it.
    pub fn disown_postmaster(&mut self) {
        self.owns_postmaster = false;
    }

    /// Kills the agent and every process it had started, except PostgreSQL's postmaster and its
    /// children (see [`Agent::stop_postmaster`]). The agent is stopped (SIGSTOP) first so it cannot
    /// start anything new while its descendants are collected.
    pub fn kill_agent_tree(&mut self) {
        if self.is_running() {
            let pid = self.pid();
            signal(pid, Signal::SIGSTOP);
            let postmaster = self.postmaster_pid();
            let spared: Vec<u32> = match postmaster {
                Some(pm) => {
                    let mut v = descendants(pm);
                    v.push(pm);
                    v
                }
                None => Vec::new(),
            };
            let tree: Vec<u32> = descendants(pid).into_iter().filter(|p| !spared.contains(p)).collect();
            self.sigkill();
            for p in tree {
                signal(p, Signal::SIGKILL);
            }
        } else {
            let _ = self.child.wait();
        }
    }

    /// Stops the postmaster recorded in `postmaster.pid` (SIGQUIT, SIGKILL after a grace period).
    pub fn stop_postmaster(&self) -> Option<u32> {
        stop_postmaster(self.data_dir.as_deref()?, POSTMASTER_GRACE)
    }

    /// [`Agent::kill_agent_tree`] then, unless disowned, [`Agent::stop_postmaster`]. Runs once;
    /// later calls do nothing.
    pub fn kill_all(&mut self) {
        if std::mem::replace(&mut self.cleaned_up, true) {
            return;
        }
        self.kill_agent_tree();
        if self.owns_postmaster {
            // The agent may have been killed while PostgreSQL was starting up: give a
            // postmaster.pid that is about to appear a moment to do so.
            if self.postmaster_pid().is_none() {
                std::thread::sleep(Duration::from_millis(300));
            }
            self.stop_postmaster();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// `bin` itself when the agent's user may execute it; otherwise (e.g. a checkout under /root, which
/// is mode 0700) a hard link to it, or failing that a copy, in `<stage_parent>/.harness-bin/`.
pub fn executable_for_agent(bin: &Path, stage_parent: &Path) -> PathBuf {
    if agent_user_can_execute(bin) {
        return bin.to_path_buf();
    }
    let stage_dir = stage_parent.join(".harness-bin");
    std::fs::create_dir_all(&stage_dir).unwrap_or_else(|e| panic!("creating {}: {e}", stage_dir.display()));
    let _ = chown_to_agent_user(&stage_dir);
    let staged = stage_dir.join(bin.file_name().unwrap_or_else(|| "rampart".as_ref()));
    let _ = std::fs::remove_file(&staged);
    if std::fs::hard_link(bin, &staged).is_err() {
        std::fs::copy(bin, &staged)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", bin.display(), staged.display()));
    }
    let _ = std::fs::set_permissions(
        &staged,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    );
    assert!(
        agent_user_can_execute(&staged),
        "{} cannot be executed by the {} user, and neither can the staged {}",
        bin.display(),
        run_as().user,
        staged.display()
    );
    staged
}

/// The value of the first `data_dir:` key in a config file (quotes removed).
pub fn data_dir_from_config(config: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    text.lines().find_map(|l| {
        let v = l.trim_start().strip_prefix("data_dir:")?.trim();
        let v = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).map(|v| v.replace("''", "'"));
        let v = v.unwrap_or_else(|| l.trim_start()["data_dir:".len()..].trim().trim_matches('"').to_owned());
        (!v.is_empty()).then(|| PathBuf::from(v))
    })
}

/// A command for `exe` that runs as the agent's OS user (the `postgres` user when the test runs as
/// root) in `workdir`, with the environment [`Agent::start`] gives the agent: `RUST_LOG`
/// (`RAMPART_AGENT_RUST_LOG` or `info`), that user's HOME/USER/LOGNAME, a PATH led by the
/// PostgreSQL binaries, `NO_COLOR`, no PG* variables of the test's own environment, then `env`.
pub fn agent_user_command(exe: &Path, workdir: &Path, env: &[(&str, &str)]) -> Command {
    agent_user_command_in(exe, workdir, env, None, AmbientCaps::None)
}

/// [`agent_user_command`] in the network namespace `netns` when one is given, there keeping
/// `caps` after switching to the agent's user.
pub fn agent_user_command_in(
    exe: &Path,
    workdir: &Path,
    env: &[(&str, &str)],
    netns: Option<&Path>,
    caps: AmbientCaps,
) -> Command {
    let who = run_as();
    let rust_log = std::env::var("RAMPART_AGENT_RUST_LOG").ok().filter(|v| !v.is_empty());
    let path =
        format!("{}:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin", super::pg_bin_dir().display());
    let mut cmd = Command::new(exe);
    cmd.current_dir(workdir)
        .env("RUST_LOG", rust_log.as_deref().unwrap_or("info"))
        .env("HOME", &who.home)
        .env("USER", &who.user)
        .env("LOGNAME", &who.user)
        .env("PATH", path)
        // Plain text logs: they go to a file, and the harness prints them on failure.
        .env("NO_COLOR", "1");
    for var in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGDATABASE",
        "PGDATA",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGOPTIONS",
        "PGSSLMODE",
        "PGAPPNAME",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    match netns {
        Some(ns) => super::process::start_in_netns(&mut cmd, ns, run_as().switch_to, caps),
        None => {
            if let Some((uid, gid)) = run_as().switch_to {
                // std drops the supplementary groups when switching away from root.
                cmd.uid(uid).gid(gid);
            }
        }
    }
    cmd
}

/// Runs `<bin> <args>` to completion as the agent's OS user, in `workdir` and with the agent's
/// environment plus `env` (see [`agent_user_command`]), and returns what it printed.
///
/// For commands expected to end by themselves, such as an agent refusing its configuration. If it
/// is still running after `timeout`, it and everything it started are SIGKILLed by PID and the
/// test panics, with what it had printed so far.
pub fn run_to_exit(
    bin: &Path,
    args: &[&std::ffi::OsStr],
    workdir: &Path,
    env: &[(&str, &str)],
    timeout: Duration,
) -> std::process::Output {
    use std::io::Read;
    let exe = executable_for_agent(bin, workdir);
    let mut cmd = agent_user_command(&exe, workdir, env);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {} {args:?}: {e}", exe.display()));
    // Drain both pipes on threads so a chatty child can never block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let Some(status) = status else {
        let pid = child.id();
        signal(pid, Signal::SIGSTOP);
        let tree = descendants(pid);
        let _ = child.kill();
        let _ = child.wait();
        for p in tree {
            signal(p, Signal::SIGKILL);
        }
        let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
        panic!(
            "`{} {args:?}` was still running after {timeout:?} and was killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            exe.display()
        );
    };
    std::process::Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}
