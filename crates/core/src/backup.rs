//! Backups from the cluster (`rampart backup --role leader|replica -- COMMAND`): the same line in
//! the crontab of every member runs the backup command on exactly one of them, so that cron
//! needs no "am I the leader" check of its own (seed 002's `pgbackrest backup` lines), and the
//! last result is kept in the cluster's `backup` key for `list` and `/metrics`.
//!
//! Rules ([`decide`]):
//! * `leader`: the member holding the leader lock, while its PostgreSQL runs;
//! * `replica`: one replica, chosen alike by every member from the same DCS view: among the
//!   running replicas (whatever their tags), the one least behind the leader's last position,
//!   then the first by name. A backup from a replica (pgBackRest's `backup-standby`) takes the
//!   read load off the primary.
//!
//! Invariant: with one DCS view, at most one member decides to run; a member that is not sure
//! (no leader, not running, not listed) does not run.

use serde::{Deserialize, Serialize};

use crate::model::Cluster;
use crate::roles::{PgState, Role};

/// Which member runs the backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupRole {
    /// The leader.
    Leader,
    /// One replica (see [`decide`]).
    Replica,
}

impl BackupRole {
    /// The word in the key and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupRole::Leader => "leader",
            BackupRole::Replica => "replica",
        }
    }
}

/// Why this member does not run the backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Another member is the one.
    NotChosen {
        /// The member that is.
        chosen: String,
    },
    /// Nobody qualifies right now.
    NoneQualifies(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NotChosen { chosen } => write!(f, "{chosen} runs it"),
            Skip::NoneQualifies(why) => f.write_str(why),
        }
    }
}

/// Whether member `me` runs a backup for `role` now: `Ok` to run it, else why not.
pub fn decide(cluster: &Cluster, me: &str, role: BackupRole) -> Result<(), Skip> {
    let chosen = match role {
        BackupRole::Leader => {
            let Some(leader) = cluster.leader_member() else {
                return Err(Skip::NoneQualifies("the cluster has no leader".into()));
            };
            if leader.data.state != PgState::Running {
                return Err(Skip::NoneQualifies(format!(
                    "the leader {}'s PostgreSQL is {}, not running",
                    leader.name, leader.data.state
                )));
            }
            leader.name.clone()
        }
        BackupRole::Replica => {
            let top = cluster
                .status
                .optime
                .max(cluster.members.iter().filter_map(|m| m.data.xlog_location).max().unwrap_or(0));
            let best = cluster
                .members
                .iter()
                .filter(|m| !cluster.is_leader(&m.name))
                .filter(|m| m.data.role == Role::Replica && m.data.state == PgState::Running)
                .min_by_key(|m| (top.saturating_sub(m.data.xlog_location.unwrap_or(0)), m.name.clone()));
            match best {
                Some(m) => m.name.clone(),
                None => return Err(Skip::NoneQualifies("no replica is running".into())),
            }
        }
    };
    if chosen == me {
        Ok(())
    } else {
        Err(Skip::NotChosen { chosen })
    }
}

/// How the last backup went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupState {
    /// It runs (or its member died while it ran).
    Running,
    /// The command exited 0.
    Succeeded,
    /// It exited otherwise, or could not start.
    Failed,
}

impl BackupState {
    /// The word in the key and in `list`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::Running => "running",
            BackupState::Succeeded => "succeeded",
            BackupState::Failed => "failed",
        }
    }
}

/// The `backup` key (Rampart's own, JSON): the last backup `rampart backup` ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupReport {
    /// The member that ran it.
    pub member: String,
    /// The role it ran for.
    pub role: BackupRole,
    /// The program it ran (its first word only: the arguments may hold secrets).
    pub program: String,
    /// Running, succeeded or failed.
    pub state: BackupState,
    /// When it started (seconds since the Unix epoch).
    pub started_at: f64,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    /// Its exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the last successful backup ended (this one's, else carried over from the report
    /// before), so that an alert on an old success survives a running or failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<f64>,
}

impl BackupReport {
    /// How long it took, when it ended.
    pub fn duration_secs(&self) -> Option<f64> {
        self.finished_at.map(|f| (f - self.started_at).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Leader, Member, MemberData};

    fn member(name: &str, role: Role, state: PgState, lsn: u64) -> Member {
        Member {
            name: name.into(),
            data: MemberData { role, state, xlog_location: Some(lsn), ..Default::default() },
            lease: 1,
        }
    }

    fn cluster(members: Vec<Member>, leader: Option<&str>) -> Cluster {
        Cluster {
            leader: leader.map(|l| Leader { name: l.into(), lease: 1, mod_revision: 1 }),
            members,
            ..Default::default()
        }
    }

    #[test]
    fn leader_backups_run_on_the_running_leader_only() {
        let c = cluster(
            vec![member("a", Role::Primary, PgState::Running, 100), member("b", Role::Replica, PgState::Running, 90)],
            Some("a"),
        );
        assert_eq!(decide(&c, "a", BackupRole::Leader), Ok(()));
        assert_eq!(decide(&c, "b", BackupRole::Leader), Err(Skip::NotChosen { chosen: "a".into() }));
        let headless = cluster(c.members.clone(), None);
        assert!(matches!(decide(&headless, "a", BackupRole::Leader), Err(Skip::NoneQualifies(_))));
        let restarting = cluster(
            vec![
                member("a", Role::Primary, PgState::Restarting, 100),
                member("b", Role::Replica, PgState::Running, 90),
            ],
            Some("a"),
        );
        assert!(matches!(decide(&restarting, "a", BackupRole::Leader), Err(Skip::NoneQualifies(_))));
    }

    #[test]
    fn replica_backups_run_on_the_least_behind_running_replica_then_by_name() {
        let c = cluster(
            vec![
                member("a", Role::Primary, PgState::Running, 100),
                member("b", Role::Replica, PgState::Running, 80),
                member("c", Role::Replica, PgState::Running, 95),
                member("d", Role::Replica, PgState::Running, 95),
                member("e", Role::Replica, PgState::Stopped, 100),
            ],
            Some("a"),
        );
        let runs: Vec<&str> =
            ["a", "b", "c", "d", "e"].into_iter().filter(|m| decide(&c, m, BackupRole::Replica).is_ok()).collect();
        assert_eq!(runs, ["c"], "exactly one runs: the least behind, the first by name among equals");
        assert_eq!(decide(&c, "a", BackupRole::Replica), Err(Skip::NotChosen { chosen: "c".into() }));
        let alone = cluster(vec![member("a", Role::Primary, PgState::Running, 100)], Some("a"));
        assert!(matches!(decide(&alone, "a", BackupRole::Replica), Err(Skip::NoneQualifies(_))));
    }

    #[test]
    fn the_report_keeps_the_program_and_not_its_arguments() {
        let r = BackupReport {
            member: "a".into(),
            role: BackupRole::Leader,
            program: "pgbackrest".into(),
            state: BackupState::Succeeded,
            started_at: 10.0,
            finished_at: Some(12.5),
            exit_code: Some(0),
            last_success_at: Some(12.5),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"member":"a","role":"leader","program":"pgbackrest","state":"succeeded","started_at":10.0,"finished_at":12.5,"exit_code":0,"last_success_at":12.5}"#
        );
        assert_eq!(serde_json::from_str::<BackupReport>(&json).unwrap(), r);
        assert_eq!(r.duration_secs(), Some(2.5));
    }
}
