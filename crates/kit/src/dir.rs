//! Temporary directories under /tmp that the agent's OS user owns, marked with the owning test
//! process (`.harness-owner`) so that `scripts/reap-test-procs.sh` only clears those whose test
//! is gone.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::pid::start_time;
use crate::user::chown_to_agent_user;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory `/tmp/rampart-test-<label>-<pid>-<n>`, owned by the `postgres` user when the test
/// runs as root, mode 0700. Removed on drop unless `RAMPART_KEEP_TEST_DIRS` is set (or
/// [`TestDir::keep`] was called). When dropped during a panic its path is printed.
///
/// It holds a `.harness-owner` file (`<test pid> <start time>`), which lets
/// `scripts/reap-test-procs.sh` tell the directories of running tests from leftovers; a kept
/// directory also gets a `.harness-keep` file so that the script leaves it in place.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
    keep: bool,
}

impl TestDir {
    /// Creates a fresh directory; `label` should say what it is for (`etcd`, `cluster`, ...).
    pub fn new(label: &str) -> TestDir {
        let label: String =
            label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
        let pid = std::process::id();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = PathBuf::from(format!("/tmp/rampart-test-{label}-{pid}-{n}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let owner = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
                    std::fs::write(path.join(".harness-owner"), owner)
                        .unwrap_or_else(|e| panic!("writing {}/.harness-owner: {e}", path.display()));
                    chown_to_agent_user(&path).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
                    return TestDir { path, keep: crate::keep_test_dirs() };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("creating {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(rel)` (nothing is created).
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Creates `rel` (and its parents) inside this directory, owned by the agent's user, mode 0700.
    pub fn subdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        make_agent_dir(&self.path.join(rel))
    }

    /// Never remove this directory (e.g. to look at it after the test).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

/// Creates `path` and any missing parents, each owned by the agent's user with mode 0700.
pub fn make_agent_dir(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut p = path;
    while !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    for dir in missing.iter().rev() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })
            .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
        chown_to_agent_user(dir).unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
    }
    path.to_path_buf()
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if self.keep {
            // Tells scripts/reap-test-procs.sh not to remove it either.
            let _ = std::fs::write(self.path.join(".harness-keep"), "");
            eprintln!("[harness] keeping test directory {}", self.path.display());
            return;
        }
        if panicking {
            eprintln!(
                "[harness] test failed; removing its directory {} (set RAMPART_KEEP_TEST_DIRS=1 to keep it)",
                self.path.display()
            );
        }
        // A process that was just killed may still be writing into the directory: retry a little.
        for attempt in 0..10 {
            match std::fs::remove_dir_all(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) if attempt == 9 => {
                    eprintln!("[harness] could not remove {}: {e}", self.path.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}
