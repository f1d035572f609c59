//! Who a started process runs as, and where: PostgreSQL refuses to run as root, so when we are
//! root the agents run as the `postgres` OS user, in directories and with files that user owns;
//! processes of tests with several hosts start inside network namespaces, an agent that manages
//! a virtual IP with the network capabilities it would have under systemd.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::unistd::User;

/// The OS user the agent (and therefore PostgreSQL) runs as.
#[derive(Clone, Debug)]
pub struct RunAs {
    /// `Some(uid, gid)` when we are root and must switch to the `postgres` user.
    pub switch_to: Option<(u32, u32)>,
    pub user: String,
    pub home: PathBuf,
}

/// `postgres` when running as root (uid/gid looked up once), otherwise the current user.
/// Panics when we are root and there is no `postgres` user; [`try_run_as`] says so instead.
pub fn run_as() -> &'static RunAs {
    try_run_as().unwrap_or_else(|e| panic!("{e}; run scripts/setup.sh (it installs postgresql-15)"))
}

/// [`run_as`], or why the `postgres` user cannot be used when we are root.
pub fn try_run_as() -> Result<&'static RunAs, String> {
    static RUN_AS: OnceLock<RunAs> = OnceLock::new();
    if let Some(r) = RUN_AS.get() {
        return Ok(r);
    }
    let found = if nix::unistd::geteuid().is_root() {
        match User::from_name("postgres") {
            Ok(Some(u)) => RunAs { switch_to: Some((u.uid.as_raw(), u.gid.as_raw())), user: u.name, home: u.dir },
            Ok(None) => return Err("running as root, but there is no `postgres` user to run PostgreSQL as".into()),
            Err(e) => return Err(format!("looking up the postgres user: {e}")),
        }
    } else {
        let uid = nix::unistd::getuid();
        let u = User::from_uid(uid).ok().flatten();
        RunAs {
            switch_to: None,
            user: u.as_ref().map(|u| u.name.clone()).unwrap_or_else(|| uid.to_string()),
            home: u.map(|u| u.dir).unwrap_or_else(|| PathBuf::from("/tmp")),
        }
    };
    Ok(RUN_AS.get_or_init(|| found))
}

/// Gives `path` to the agent's user when we run as root; a no-op otherwise.
pub fn chown_to_agent_user(path: &Path) -> std::io::Result<()> {
    match run_as().switch_to {
        Some((uid, gid)) => chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// Whether the agent's user can execute `path` judging by permission bits (the file and the search
/// permission of every ancestor directory; ACLs are ignored). Always true when not switching user.
pub fn agent_user_can_execute(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((uid, gid)) = run_as().switch_to else { return true };
    let allows = |p: &Path, bits: u32| -> bool {
        let Ok(m) = std::fs::metadata(p) else { return false };
        let mode = m.mode();
        let granted = if m.uid() == uid {
            (mode >> 6) & 7
        } else if m.gid() == gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        granted & bits == bits
    };
    let Ok(path) = std::fs::canonicalize(path) else { return false };
    // r+x on the file itself (a script must also be readable), x on every directory above it.
    allows(&path, 0o5) && path.ancestors().skip(1).all(|dir| allows(dir, 0o1))
}

/// Capabilities a process started by [`start_in_netns`] keeps after switching user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmbientCaps {
    /// None: an ordinary unprivileged process.
    None,
    /// `CAP_NET_ADMIN` (addresses, links) and `CAP_NET_RAW` (packet sockets, for gratuitous
    /// ARP), as ambient capabilities: what systemd's `AmbientCapabilities=` gives the agent of a
    /// virtual IP in production. Ambient capabilities survive `execve` of ordinary programs, so
    /// the `ip` the agent runs has them too.
    Net,
}

impl AmbientCaps {
    fn list(self) -> &'static [u32] {
        // From linux/capability.h.
        const CAP_NET_ADMIN: u32 = 12;
        const CAP_NET_RAW: u32 = 13;
        match self {
            AmbientCaps::None => &[],
            AmbientCaps::Net => &[CAP_NET_ADMIN, CAP_NET_RAW],
        }
    }
}

/// `struct __user_cap_header_struct` of linux/capability.h (libc does not declare it).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`; version 3 takes two of them (capabilities 0-31, 32-63).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Makes `cmd` start inside the network namespace `netns` (a file such as
/// `/var/run/netns/<name>`), then, when `user` is given, switch to that uid/gid with no
/// supplementary groups, keeping `caps` as ambient capabilities. Needs root.
///
/// Both happen in the child between fork and exec, so the PID the caller gets is the program's
/// own (the harness signals it by that PID). `Command::uid` cannot be used together with this:
/// std switches user before `pre_exec` hooks run, and an unprivileged process may not enter a
/// namespace.
pub fn start_in_netns(cmd: &mut std::process::Command, netns: &Path, user: Option<(u32, u32)>, caps: AmbientCaps) {
    use std::os::unix::process::CommandExt;
    let ns =
        std::fs::File::open(netns).unwrap_or_else(|e| panic!("opening network namespace {}: {e}", netns.display()));
    let caps = caps.list();
    // Computed before the fork: the hook below must not allocate.
    let mask = caps.iter().fold(0u32, |m, c| m | 1 << c);
    let last_errno = || Err(std::io::Error::last_os_error());
    // SAFETY: the hook only makes system calls (setns, prctl, setgroups, setgid, setuid, capset)
    // on data prepared before the fork; it allocates nothing and takes no lock, as code between
    // fork and exec must.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            let Some((uid, gid)) = user else { return Ok(()) };
            // Without KEEPCAPS, setuid away from root empties the permitted set.
            if !caps.is_empty() && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
                return last_errno();
            }
            nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
            nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)).map_err(std::io::Error::from)?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).map_err(std::io::Error::from)?;
            if caps.is_empty() {
                return Ok(());
            }
            // Only `caps` stay permitted; raising an ambient capability needs it permitted and
            // inheritable.
            let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
            let data = [
                CapData { effective: mask, permitted: mask, inheritable: mask },
                CapData { effective: 0, permitted: 0, inheritable: 0 },
            ];
            if libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) != 0 {
                return last_errno();
            }
            for &cap in caps {
                if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap as libc::c_ulong, 0, 0) != 0 {
                    return last_errno();
                }
            }
            Ok(())
        });
    }
}
