//! `standby_cluster` (Patroni's standby clusters: the leader replicates from another cluster
//! instead of being a primary) is not supported yet, and must not be ignored meanwhile: an agent
//! that ignored it would take the lock and promote the intended standby leader into an
//! independent primary, a second writable copy of the other cluster's data.
//!
//! So the key is refused wherever it can be written through Rampart ([`DynamicConfig::validate`]
//! serves `check-config`'s `bootstrap.dcs`, `PATCH`/`PUT /config` and `edit-config`; the
//! configuration crate refuses it at the top of a member's file), and when it reaches the DCS
//! anyway (written by another tool), [`gate`] keeps this member from taking the leader lock,
//! bootstrapping or promoting: it stays a replica, or waits. A member that already holds the lock
//! keeps it and keeps its PostgreSQL as it is (no demotion, no failover): the key adds no primary.
//!
//! [`DynamicConfig::validate`]: crate::DynamicConfig::validate

use serde_json::Value;

use crate::action::{Action, Answer, Job};

/// The `standby_cluster` section, read as Patroni reads it (`host`, `port`, `primary_slot_name`,
/// `create_replica_methods`, `restore_command`, `archive_cleanup_command`,
/// `recovery_min_apply_delay`): where the standby leader replicates from, another cluster's
/// primary (`host`, several hosts comma-separated, and `port`) or the WAL archive alone
/// (`restore_command`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StandbyCluster {
    /// The other cluster's host(s).
    pub host: Option<String>,
    /// Its port (5432 when a host is given without one).
    pub port: u16,
    /// The replication slot to stream through on the other cluster's primary.
    pub primary_slot_name: Option<String>,
    /// How the standby leader's data directory is made (`basebackup` from `host` by default).
    pub create_replica_methods: Vec<String>,
    /// How WAL is fetched from the archive.
    pub restore_command: Option<String>,
    /// Run on restart points, to clean the archive.
    pub archive_cleanup_command: Option<String>,
    /// Delay applied to the WAL replayed (PostgreSQL's units, e.g. `5min`, or milliseconds).
    pub recovery_min_apply_delay: Option<String>,
}

/// The keys of the section.
const KEYS: &[&str] = &[
    "host",
    "port",
    "primary_slot_name",
    "create_replica_methods",
    "restore_command",
    "archive_cleanup_command",
    "recovery_min_apply_delay",
];

impl StandbyCluster {
    /// Reads the section: an error names the key and what is wrong with it. Unknown keys are
    /// errors too, since a misspelt `host` would leave a standby leader with nothing to follow.
    pub fn parse(v: &Value) -> Result<StandbyCluster, (String, String)> {
        let bad = |key: &str, why: &str| (format!("standby_cluster.{key}"), why.to_string());
        let Value::Object(m) = v else { return Err(("standby_cluster".into(), "expected a mapping".into())) };
        if let Some(k) = m.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(bad(k, &format!("unknown key (known: {})", KEYS.join(", "))));
        }
        let text = |key: &str| -> Result<Option<String>, (String, String)> {
            match m.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(bad(key, "expected a string")),
            }
        };
        let host = text("host")?;
        let port = match m.get("port") {
            None | Some(Value::Null) => 5432,
            Some(p) => {
                let n = match p {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
                match n {
                    Some(n @ 1..=65535) => n as u16,
                    _ => return Err(bad("port", "expected a port number (1-65535)")),
                }
            }
        };
        let primary_slot_name = text("primary_slot_name")?;
        if let Some(slot) = &primary_slot_name {
            if !crate::slots::is_valid_slot_name(slot) {
                return Err(bad("primary_slot_name", "not a valid slot name (lower-case letters, digits and _)"));
            }
        }
        let create_replica_methods = match m.get("create_replica_methods") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("create_replica_methods", "expected a list of method names"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("create_replica_methods", "expected a list of method names")),
        };
        let restore_command = text("restore_command")?;
        if host.is_none() && restore_command.is_none() {
            return Err(bad("host", "give the other cluster's host, or a restore_command to follow its WAL archive"));
        }
        Ok(StandbyCluster {
            host,
            port,
            primary_slot_name,
            create_replica_methods,
            restore_command,
            archive_cleanup_command: text("archive_cleanup_command")?,
            recovery_min_apply_delay: text("recovery_min_apply_delay")?,
        })
    }
}

/// The reason given wherever the key is refused (after the key's name).
pub const UNSUPPORTED: &str = "standby clusters are not supported yet (a standby leader would run as an independent \
                               primary): remove the key";

/// The actions of a cycle with `standby_cluster` set, or `None` to keep them: no leader lock is
/// taken (no race, no bootstrap, no manual failover to this member) and nothing is promoted.
pub fn gate(actions: &[Action]) -> Option<Vec<Action>> {
    let refused = |a: &Action| {
        matches!(a, Action::AcquireLeader | Action::TryInitialize | Action::StartJob(Job::Promote | Job::Bootstrap))
    };
    if !actions.iter().any(refused) {
        return None;
    }
    Some(actions.iter().filter(|a| !refused(a)).cloned().collect())
}

/// The answer to an operator's request whose actions [`gate`] removed.
pub fn refused_answer() -> Answer {
    Answer::Refused(format!("standby_cluster is set in the dynamic configuration: {UNSUPPORTED}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{StartRole, StopMode};
    use serde_json::json;

    #[test]
    fn the_section_is_read_as_patroni_writes_it_and_mistakes_are_named() {
        let full = json!({
            "host": "10.0.0.1,10.0.0.2", "port": "5433", "primary_slot_name": "standby_dc2",
            "create_replica_methods": ["pgbackrest", "basebackup"],
            "restore_command": "pgbackrest --stanza=main archive-get %f \"%p\"",
            "archive_cleanup_command": "", "recovery_min_apply_delay": 300000
        });
        let s = StandbyCluster::parse(&full).unwrap();
        assert_eq!((s.host.as_deref(), s.port), (Some("10.0.0.1,10.0.0.2"), 5433));
        assert_eq!(s.primary_slot_name.as_deref(), Some("standby_dc2"));
        assert_eq!(s.create_replica_methods, ["pgbackrest", "basebackup"]);
        assert_eq!(s.archive_cleanup_command, None, "empty means none");
        assert_eq!(s.recovery_min_apply_delay.as_deref(), Some("300000"));
        let archive_only = StandbyCluster::parse(&json!({"restore_command": "cp /a/%f %p"})).unwrap();
        assert_eq!((archive_only.host, archive_only.port), (None, 5432));
        let key = |v: Value| StandbyCluster::parse(&v).unwrap_err().0;
        assert_eq!(key(json!({"port": 5432})), "standby_cluster.host", "nothing to follow");
        assert_eq!(key(json!({"host": "h", "port": 0})), "standby_cluster.port");
        assert_eq!(key(json!({"host": "h", "primary_slot_name": "Bad-Name"})), "standby_cluster.primary_slot_name");
        assert_eq!(key(json!({"hots": "h"})), "standby_cluster.hots");
        assert_eq!(
            key(json!({"host": "h", "create_replica_methods": "basebackup"})),
            "standby_cluster.create_replica_methods"
        );
        assert_eq!(key(json!(["h"])), "standby_cluster");
    }

    #[test]
    fn no_lock_is_taken_and_nothing_is_promoted_or_bootstrapped() {
        assert_eq!(gate(&[Action::AcquireLeader, Action::StartJob(Job::Promote)]), Some(vec![]));
        assert_eq!(gate(&[Action::TryInitialize]), Some(vec![]));
        assert_eq!(gate(&[Action::RenewLeader, Action::StartJob(Job::Promote)]), Some(vec![Action::RenewLeader]));
        assert_eq!(gate(&[Action::StartJob(Job::Bootstrap)]), Some(vec![]));
    }

    #[test]
    fn what_a_replica_or_a_holder_does_otherwise_is_kept() {
        for actions in [
            vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))],
            vec![Action::RenewLeader, Action::WriteStatus(Default::default())],
            vec![Action::Stop(StopMode::Fast), Action::ReleaseLeader { last_position: None }],
        ] {
            assert_eq!(gate(&actions), None, "{actions:?}");
        }
    }
}
