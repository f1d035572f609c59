//! User scripts Patroni-style: `callbacks` (`on_start`, `on_stop`, `on_restart`, `on_reload`,
//! `on_role_change`) run in the background with the arguments `ACTION ROLE SCOPE`; `pre_promote`
//! runs before a promotion and is waited for, and a non-zero exit cancels the promotion.
//!
//! The configured string is a command line: it runs as `/bin/sh -c '<command> "$@"'` with the
//! three arguments appended, so quoting inside the command works as in a shell and the arguments
//! need no quoting at all. Invariant: a callback never blocks the HA loop (only `pre_promote`
//! is waited for, inside the promotion job, with a time limit).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tracing::{info, warn};

/// How long `pre_promote` may run before it counts as failed.
pub const PRE_PROMOTE_LIMIT: Duration = Duration::from_secs(60);

fn command(cmd: &str, args: &[&str]) -> Command {
    shell(cmd, "rampart-callback", args)
}

/// A configured command line run as `/bin/sh -c '<cmd> "$@"'` with `args` appended (`$0` is
/// `name`), stdin closed, killed if dropped: callbacks, custom bootstrap and replica methods.
pub fn shell<I, A>(cmd: &str, name: &str, args: I) -> Command
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(format!("{cmd} \"$@\"")).arg(name).args(args);
    c.stdin(Stdio::null()).kill_on_drop(true);
    c
}

/// Fires the `action` callback if one is configured, without waiting for it.
pub fn fire(callbacks: &BTreeMap<String, String>, action: &str, role: &str, scope: &str) {
    let Some(cmd) = callbacks.get(action).filter(|c| !c.trim().is_empty()).cloned() else { return };
    let (action, role, scope) = (action.to_string(), role.to_string(), scope.to_string());
    tokio::spawn(async move {
        let mut c = command(&cmd, &[&action, &role, &scope]);
        c.kill_on_drop(false);
        match c.status().await {
            Ok(s) if s.success() => info!(%action, %role, "callback finished"),
            Ok(s) => warn!(%action, %role, status = %s, "callback failed"),
            Err(e) => warn!(%action, error = %e, "callback could not be started"),
        }
    });
}

/// Runs `pre_promote` and waits: `Ok` to promote, `Err(reason)` to refuse.
pub async fn pre_promote(cmd: &str, scope: &str) -> Result<(), String> {
    let c = command(cmd, &["pre_promote", "primary", scope]);
    match tokio::time::timeout(PRE_PROMOTE_LIMIT, rampart_pg::run_script(c)).await {
        Ok(Ok(end)) if end.success() => Ok(()),
        Ok(Ok(end)) => Err(format!("pre_promote exited with {}{}", end.status, end.saying())),
        Ok(Err(e)) => Err(format!("pre_promote could not be started: {e}")),
        Err(_) => Err(format!("pre_promote did not finish within {PRE_PROMOTE_LIMIT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pre_promote_exit_status_decides() {
        assert_eq!(pre_promote("true", "pg").await, Ok(()));
        assert!(pre_promote("exit 3;", "pg").await.unwrap_err().contains("3"));
        // The arguments arrive as $1 $2 $3.
        let check = r#"[ "$1 $2 $3" = "pre_promote primary pg" ] || exit 1; true"#;
        assert_eq!(pre_promote(check, "pg").await, Ok(()), "arguments");
    }

    #[tokio::test]
    async fn callbacks_run_in_the_background_with_action_role_scope() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut cb = BTreeMap::new();
        cb.insert("on_role_change".to_string(), format!("echo >> {}", out.display()));
        fire(&cb, "on_role_change", "primary", "pg");
        fire(&cb, "on_start", "primary", "pg"); // not configured: nothing happens
        for _ in 0..50 {
            if std::fs::read_to_string(&out).is_ok_and(|s| !s.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "on_role_change primary pg");
    }
}
