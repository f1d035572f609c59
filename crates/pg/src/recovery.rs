//! Recovery settings: what a replica recovers with besides streaming (`postgresql.recovery_conf`:
//! `restore_command`, `archive_cleanup_command`, `recovery_min_apply_delay`, ...), and the recovery
//! settings and signal files other tools leave in a data directory (pgBackRest's `restore` writes
//! its `restore_command`, and with `--type` a recovery target, into `postgresql.auto.conf` and
//! creates `recovery.signal`). Pure functions, no I/O; [`crate::configure`] writes.
//!
//! Invariants, as Patroni keeps them (`patroni/postgresql/config.py`):
//! * a replica never runs with a recovery target: the `recovery_target*` settings are written
//!   empty for it (an included file cannot pause, promote or stop it), and its timeline is always
//!   `latest`; its upstream (`primary_conninfo`, `primary_slot_name`) comes from its role only;
//! * `postgresql.auto.conf`, which PostgreSQL reads after `postgresql.conf`, holds no recovery
//!   setting once Rampart has configured the server (unless a custom bootstrap asked to keep what
//!   its command left), so what the agent's configuration says is what the server does.

use std::collections::BTreeMap;

/// PostgreSQL's recovery settings (12 and later), and the ones of `recovery.conf` before 12 that
/// restore tools may still write: none of them may stay in `postgresql.auto.conf`.
pub const RECOVERY_PARAMETERS: &[&str] = &[
    "archive_cleanup_command",
    "pause_at_recovery_target",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
    "recovery_end_command",
    "recovery_min_apply_delay",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restore_command",
    "standby_mode",
    "trigger_file",
];

/// The recovery targets, written empty for replicas.
pub const RECOVERY_TARGETS: &[&str] =
    &["recovery_target", "recovery_target_lsn", "recovery_target_name", "recovery_target_time", "recovery_target_xid"];

/// Whether `name` is one of [`RECOVERY_PARAMETERS`] (case-insensitive).
pub fn is_recovery_parameter(name: &str) -> bool {
    RECOVERY_PARAMETERS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// What `write_config` does with the recovery files other tools left in the data directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryFiles {
    /// The normal case: recovery settings are removed from `postgresql.auto.conf`; a primary
    /// starts without `standby.signal` and `recovery.signal`, a replica with `standby.signal`.
    #[default]
    Managed,
    /// A custom bootstrap with `recovery_conf`: the first start recovers (archive recovery,
    /// `recovery.signal`, with the method's settings among the parameters) and then promotes;
    /// `postgresql.auto.conf` is cleaned as in `Managed`.
    RecoverThenPromote,
    /// A custom bootstrap with `keep_existing_recovery_conf`: the signal files and
    /// `postgresql.auto.conf` stay as its command left them.
    AsLeft,
}

/// The recovery settings a replica gets from `recovery_conf` (lower-cased names, in name order),
/// followed by the empty recovery targets. Left out: what the role decides (`primary_conninfo`,
/// `primary_slot_name`, `recovery_target_timeline`), the targets, and `standby_mode` (PostgreSQL
/// 12 and later read `standby.signal`, which replicas get).
pub fn replica_settings(recovery_conf: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let decided = |n: &str| {
        n.starts_with("recovery_target") || matches!(n, "primary_conninfo" | "primary_slot_name" | "standby_mode")
    };
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in recovery_conf {
        let name = name.to_ascii_lowercase();
        if !decided(&name) {
            out.insert(name, value.clone());
        }
    }
    let mut out: Vec<(String, String)> = out.into_iter().collect();
    out.extend(RECOVERY_TARGETS.iter().map(|t| (t.to_string(), String::new())));
    out
}

/// What a standby cluster's leader recovers with: a replica's [`replica_settings`], with the
/// section's own `restore_command`, `archive_cleanup_command` and `recovery_min_apply_delay` in
/// place of `recovery_conf`'s (as Patroni builds a remote member's recovery parameters): the
/// other cluster's archive, not this one's.
pub fn standby_leader_settings(
    recovery_conf: &BTreeMap<String, String>,
    standby: &rampart_core::standby_cluster::StandbyCluster,
) -> Vec<(String, String)> {
    let mut out = replica_settings(recovery_conf);
    for (name, value) in standby.recovery_overrides() {
        out.retain(|(n, _)| n != name);
        out.push((name.to_string(), value.to_string()));
    }
    out
}

/// The parameter a line of a PostgreSQL configuration file sets (`name = value` or `name value`),
/// if it sets one.
fn parameter_of(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(line.len());
    let name = &line[..end];
    let first = name.chars().next()?;
    (first.is_ascii_alphabetic() || first == '_').then_some(name)
}

/// `postgresql.auto.conf`'s text without the lines that set a recovery setting, or `None` when it
/// has none (nothing to rewrite).
pub fn auto_conf_without_recovery(text: &str) -> Option<String> {
    let mut removed = false;
    let mut kept = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if parameter_of(line).is_some_and(is_recovery_parameter) {
            removed = true;
        } else {
            kept.push_str(line);
        }
    }
    removed.then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_recovers_with_its_recovery_conf_and_never_with_a_target() {
        let conf = BTreeMap::from([
            ("restore_command".to_string(), "pgbackrest --stanza=main archive-get %f \"%p\"".to_string()),
            ("Recovery_Min_Apply_Delay".to_string(), "5min".to_string()),
            ("recovery_target_time".to_string(), "2026-01-01 00:00:00".to_string()),
            ("recovery_target_timeline".to_string(), "3".to_string()),
            ("primary_conninfo".to_string(), "host=elsewhere".to_string()),
            ("primary_slot_name".to_string(), "other".to_string()),
            ("standby_mode".to_string(), "on".to_string()),
        ]);
        let got = replica_settings(&conf);
        let want: Vec<(String, String)> = [
            ("recovery_min_apply_delay", "5min"),
            ("restore_command", "pgbackrest --stanza=main archive-get %f \"%p\""),
            ("recovery_target", ""),
            ("recovery_target_lsn", ""),
            ("recovery_target_name", ""),
            ("recovery_target_time", ""),
            ("recovery_target_xid", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn recovery_lines_left_by_a_restore_are_removed_from_auto_conf_and_the_rest_kept() {
        // What pgBackRest 2.45's `restore --type=time` leaves, after an operator's ALTER SYSTEM.
        let text = "# Do not edit this file manually!\n\
                    # It will be overwritten by the ALTER SYSTEM command.\n\
                    work_mem = '64MB'\n\
                    \n\
                    # Recovery settings generated by pgBackRest restore on 2026-12-05 10:00:00\n\
                    restore_command = 'pgbackrest --stanza=main archive-get %f \"%p\"'\n\
                    recovery_target_time = '2026-12-05 09:00:00'\n\
                    Recovery_Target_Action='promote'\n\
                    \tprimary_conninfo 'host=x'\n\
                    restore_command_extra.x = 1\n";
        let got = auto_conf_without_recovery(text).expect("recovery lines found");
        assert_eq!(
            got,
            "# Do not edit this file manually!\n\
             # It will be overwritten by the ALTER SYSTEM command.\n\
             work_mem = '64MB'\n\
             \n\
             # Recovery settings generated by pgBackRest restore on 2026-12-05 10:00:00\n\
             restore_command_extra.x = 1\n"
        );
        assert_eq!(auto_conf_without_recovery("work_mem = '64MB'\n# restore_command = 'x'\n"), None);
        assert_eq!(auto_conf_without_recovery(""), None);
    }
}
