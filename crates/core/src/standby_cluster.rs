//! Standby clusters (Patroni's `standby_cluster`): the whole cluster replicates from another
//! one, a second data centre kept ready. Its leader lock holder is the *standby leader*: it stays
//! in recovery, streaming from the other cluster's primary (`host`, `port`, through
//! `primary_slot_name`) and/or restoring its archive (`restore_command`); the other members
//! cascade from it, and failover and switchover move the standby leader's role inside the
//! cluster as they move a primary's in a normal one.
//!
//! Invariant: **a standby cluster never has a writable primary.** The rules that would make one
//! (promote the lock holder, bootstrap with initdb, start or restart the holder as a primary)
//! are replaced where they are decided (`crate::node`): the holder follows the remote instead, a
//! running primary that finds the section (`demote-cluster`) is restarted as the standby leader
//! keeping the lock, and a new cluster is bootstrapped by copying the remote
//! ([`crate::action::Job::BootstrapStandby`]). [`net`] then drops any such step that a rule
//! still produced, and says so. A section with a mistake (written by another tool: Rampart's own
//! writers refuse it, see [`DynamicConfig::validate`]) is not followed at all: no lock is taken,
//! nothing is promoted ([`gate`]), since whether the cluster was meant to be a standby is
//! unknown.
//!
//! Removing the section (`promote-cluster`, or `edit-config`) makes it a normal cluster: the
//! standby leader is promoted as any lock holder in recovery is. Synchronous replication is off
//! in a standby cluster ([`DynamicConfig::sync_mode`]), as in Patroni.
//!
//! [`DynamicConfig::validate`]: crate::DynamicConfig::validate
//! [`DynamicConfig::sync_mode`]: crate::DynamicConfig::sync_mode

use serde_json::Value;

use crate::action::{Action, Answer, Job, StartRole};

/// The `standby_cluster` section, read as Patroni reads it (`host`, `port`, `primary_slot_name`,
/// `create_replica_methods`, `restore_command`, `archive_cleanup_command`,
/// `recovery_min_apply_delay`): where the standby leader replicates from, another cluster's
/// primary (`host`, several hosts comma-separated, and `port`) or the WAL archive alone
/// (`restore_command`).
#[derive(Clone, Default, PartialEq, Eq)]
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

/// Shown without the commands, which may carry credentials (an object store's keys in a
/// `restore_command`), since plans and actions are logged with `Debug`.
impl std::fmt::Debug for StandbyCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |c: &Option<String>| if c.is_some() { "<set>" } else { "<none>" };
        f.debug_struct("StandbyCluster")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("primary_slot_name", &self.primary_slot_name)
            .field("create_replica_methods", &self.create_replica_methods)
            .field("restore_command", &set(&self.restore_command))
            .field("archive_cleanup_command", &set(&self.archive_cleanup_command))
            .field("recovery_min_apply_delay", &self.recovery_min_apply_delay)
            .finish()
    }
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

impl StandbyCluster {
    /// What the standby leader follows, for messages: `host:port` (and the archive, when a
    /// `restore_command` is given too), or the archive alone.
    pub fn describe(&self) -> String {
        match (&self.host, &self.restore_command) {
            (Some(h), None) => format!("{h}:{}", self.port),
            (Some(h), Some(_)) => format!("{h}:{} and its archive", self.port),
            (None, _) => "the other cluster's archive (restore_command)".to_string(),
        }
    }

    /// The recovery settings the section overrides in `postgresql.recovery_conf` (Patroni's
    /// `build_recovery_params` for a remote member): `restore_command`,
    /// `archive_cleanup_command` and `recovery_min_apply_delay`, those that are set.
    pub fn recovery_overrides(&self) -> Vec<(&'static str, &str)> {
        [
            ("restore_command", &self.restore_command),
            ("archive_cleanup_command", &self.archive_cleanup_command),
            ("recovery_min_apply_delay", &self.recovery_min_apply_delay),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_deref()?)))
        .collect()
    }
}

/// Whether an action would make this member a writable primary (the node's table tests check
/// with it too that a standby cluster's actions never do).
pub(crate) fn makes_a_primary(a: &Action) -> bool {
    matches!(
        a,
        Action::StartJob(
            Job::Promote | Job::Bootstrap | Job::Start(StartRole::Primary) | Job::Restart(StartRole::Primary)
        )
    )
}

/// The actions of a standby cluster's cycle without those that would make a writable primary,
/// or `None` when there was none (the rules of `crate::node` should never produce one; this is
/// the last line of the invariant).
pub fn net(actions: &[Action]) -> Option<Vec<Action>> {
    if !actions.iter().any(makes_a_primary) {
        return None;
    }
    Some(actions.iter().filter(|a| !makes_a_primary(a)).cloned().collect())
}

/// The actions of a cycle with a `standby_cluster` section that cannot be read, or `None` to
/// keep them: no leader lock is taken (no race, no bootstrap, no manual failover to this member)
/// and nothing is promoted or started as a primary.
pub fn gate(actions: &[Action]) -> Option<Vec<Action>> {
    let refused = |a: &Action| makes_a_primary(a) || matches!(a, Action::AcquireLeader | Action::TryInitialize);
    if !actions.iter().any(refused) {
        return None;
    }
    Some(actions.iter().filter(|a| !refused(a)).cloned().collect())
}

/// The answer to an operator's request whose actions [`gate`] or [`net`] removed.
pub fn refused_answer(why: &str) -> Answer {
    Answer::Refused(format!("this is a standby cluster ({why}): no member may become a writable primary"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::StopMode;
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
        assert_eq!(s.describe(), "10.0.0.1,10.0.0.2:5433 and its archive");
        let shown = format!("{s:?}");
        assert!(!shown.contains("archive-get") && shown.contains("restore_command: \"<set>\""), "{shown}");
        assert_eq!(
            s.recovery_overrides(),
            [
                ("restore_command", "pgbackrest --stanza=main archive-get %f \"%p\""),
                ("recovery_min_apply_delay", "300000")
            ]
        );
        let archive_only = StandbyCluster::parse(&json!({"restore_command": "cp /a/%f %p"})).unwrap();
        assert_eq!(archive_only.describe(), "the other cluster's archive (restore_command)");
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
    fn an_unreadable_section_takes_no_lock_and_makes_no_primary() {
        assert_eq!(gate(&[Action::AcquireLeader, Action::StartJob(Job::Promote)]), Some(vec![]));
        assert_eq!(gate(&[Action::TryInitialize]), Some(vec![]));
        assert_eq!(gate(&[Action::RenewLeader, Action::StartJob(Job::Promote)]), Some(vec![Action::RenewLeader]));
        assert_eq!(gate(&[Action::StartJob(Job::Bootstrap)]), Some(vec![]));
    }

    #[test]
    fn the_net_drops_every_step_to_a_writable_primary_and_nothing_else() {
        let sc = StandbyCluster { host: Some("h".into()), port: 5432, ..Default::default() };
        for primary in [Job::Promote, Job::Bootstrap, Job::Start(StartRole::Primary), Job::Restart(StartRole::Primary)]
        {
            assert_eq!(net(&[Action::RenewLeader, Action::StartJob(primary)]), Some(vec![Action::RenewLeader]));
        }
        for actions in [
            vec![Action::AcquireLeader],
            vec![Action::TryInitialize],
            vec![Action::RenewLeader, Action::StartJob(Job::Start(StartRole::StandbyLeader(sc.clone())))],
            vec![Action::StartJob(Job::BootstrapStandby(sc.clone()))],
            vec![Action::FollowRemote(sc)],
        ] {
            assert_eq!(net(&actions), None, "{actions:?}");
        }
    }

    #[test]
    fn what_a_replica_or_a_holder_does_otherwise_is_kept() {
        for actions in [
            vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))],
            vec![Action::RenewLeader, Action::WriteStatus(Default::default())],
            vec![Action::Stop(StopMode::Fast), Action::ReleaseLeader { last_position: None }],
        ] {
            assert_eq!(gate(&actions), None, "{actions:?}");
            assert_eq!(net(&actions), None, "{actions:?}");
        }
    }
}
