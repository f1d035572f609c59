//! Choosing the members a command acts on: by name, by role, or both, with errors that name
//! what is wrong and list what exists.

use anyhow::{bail, Result};
use rampart_core::{Cluster, Member};

/// A role filter (`-r/--role`), with patronictl's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The member holding the leader lock (primary or standby leader).
    Leader,
    /// The leader of a cluster that is not a standby cluster.
    Primary,
    /// The leader of a standby cluster.
    StandbyLeader,
    /// Every member but the leader.
    Replica,
    /// Same as replica.
    Standby,
    /// Every member.
    Any,
}

impl Role {
    /// Whether `m` has this role in `cluster`.
    pub fn matches(self, cluster: &Cluster, m: &Member) -> bool {
        let leads = cluster.is_leader(&m.name);
        match self {
            Role::Any => true,
            Role::Leader => leads,
            Role::Primary => leads && m.data.role != rampart_core::Role::StandbyLeader,
            Role::StandbyLeader => leads && m.data.role == rampart_core::Role::StandbyLeader,
            Role::Replica | Role::Standby => !leads,
        }
    }

    /// The name used in messages and in `POST /restart`'s `role`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Primary => "primary",
            Role::StandbyLeader => "standby-leader",
            Role::Replica => "replica",
            Role::Standby => "standby",
            Role::Any => "any",
        }
    }
}

/// `a, b, c`, or `none` for an empty cluster.
pub fn names(members: &[Member]) -> String {
    if members.is_empty() {
        return "none".into();
    }
    members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// The members named in `wanted` (every member when empty) that have `role`. Unknown names are
/// an error, as is a named member without the role, and an empty result.
pub fn select<'c>(
    cluster: &'c Cluster,
    scope: &str,
    verb: &str,
    wanted: &[String],
    role: Role,
) -> Result<Vec<&'c Member>> {
    for name in wanted {
        if cluster.member(name).is_none() {
            bail!("{verb}: {name} is not a member of cluster {scope} (members: {})", names(&cluster.members));
        }
    }
    if cluster.members.is_empty() {
        bail!("{verb}: cluster {scope} has no members (no agent has published its member key)");
    }
    let mut out = Vec::new();
    for m in &cluster.members {
        if !wanted.is_empty() && !wanted.contains(&m.name) {
            continue;
        }
        if role.matches(cluster, m) {
            out.push(m);
        } else if !wanted.is_empty() {
            bail!("{verb}: {} is not a {} in cluster {scope} (--role {})", m.name, role.name(), role.name());
        }
    }
    if out.is_empty() {
        bail!("{verb}: no member of cluster {scope} has role {} (members: {})", role.name(), names(&cluster.members));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rampart_core::keys::ClusterPrefix;
    use rampart_core::model::RawKv;

    /// A cluster from `(key, value)` pairs under `/service/pg/`.
    pub(crate) fn cluster(keys: &[(&str, &str)]) -> Cluster {
        let p = ClusterPrefix::new("/service", "pg");
        let kvs: Vec<RawKv> = keys
            .iter()
            .map(|(k, v)| RawKv { key: format!("/service/pg/{k}"), value: v.to_string(), lease: 1, mod_revision: 7 })
            .collect();
        Cluster::from_kvs(&p, &kvs, 9)
    }

    /// Leader a, replicas b and c (c tagged nofailover), with API URLs.
    pub(crate) fn three() -> Cluster {
        cluster(&[
            ("initialize", "7301"),
            ("config", r#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#),
            ("leader", "a"),
            (
                "members/a",
                r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"primary","timeline":1}"#,
            ),
            (
                "members/b",
                r#"{"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni","state":"running","role":"replica","replication_state":"streaming","timeline":1}"#,
            ),
            (
                "members/c",
                r#"{"conn_url":"postgres://10.0.0.3:5432/postgres","api_url":"http://10.0.0.3:8008/patroni","state":"running","role":"replica","timeline":1,"tags":{"nofailover":true}}"#,
            ),
            // A proxy's report (Rampart's own key): not a member, listed nowhere.
            ("proxies/app-1", r#"{"drain_timeout":5,"drained":null}"#),
        ])
    }

    fn picked(r: Result<Vec<&Member>>) -> Vec<String> {
        r.unwrap().iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn by_role_and_name() {
        let c = three();
        assert_eq!(picked(select(&c, "pg", "restart", &[], Role::Any)), ["a", "b", "c"]);
        assert_eq!(picked(select(&c, "pg", "restart", &[], Role::Leader)), ["a"]);
        assert_eq!(picked(select(&c, "pg", "restart", &[], Role::Primary)), ["a"]);
        assert_eq!(picked(select(&c, "pg", "restart", &[], Role::Replica)), ["b", "c"]);
        assert_eq!(picked(select(&c, "pg", "restart", &["c".into()], Role::Any)), ["c"]);
    }

    #[test]
    fn errors_name_the_member_and_list_the_cluster() {
        let c = three();
        let e = select(&c, "pg", "restart", &["z".into()], Role::Any).unwrap_err().to_string();
        assert_eq!(e, "restart: z is not a member of cluster pg (members: a, b, c)");
        let e = select(&c, "pg", "reinit", &["a".into()], Role::Replica).unwrap_err().to_string();
        assert_eq!(e, "reinit: a is not a replica in cluster pg (--role replica)");
        let e = select(&c, "pg", "restart", &[], Role::StandbyLeader).unwrap_err().to_string();
        assert_eq!(e, "restart: no member of cluster pg has role standby-leader (members: a, b, c)");
        let e = select(&cluster(&[]), "pg", "reload", &[], Role::Any).unwrap_err().to_string();
        assert!(e.starts_with("reload: cluster pg has no members"), "{e}");
    }
}
