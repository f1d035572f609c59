//! Patroni's DCS key layout: `/<namespace>/<scope>/{initialize, config, leader, members/<name>,
//! status, history, failover, sync, failsafe}`, plus Rampart's own `proxies/<id>` and `backup`.
//!
//! Keeping the exact layout is what lets `patronictl`, dashboards and HAProxy setups built for
//! Patroni keep working against Rampart. The additions, `proxies/<id>` (each running
//! `rampart proxy`'s report, see [`crate::drain`]) and `backup` (the last `rampart backup`, see
//! [`crate::backup`]), are invisible to Patroni: its etcd3 backend
//! reads the keys above by exact name and members only as `members/<name>`, and its Citus loader
//! takes only numeric first segments as groups, so any other key under the prefix is skipped.

/// Key names under a cluster's prefix.
pub const INITIALIZE: &str = "initialize";
/// Dynamic configuration (JSON).
pub const CONFIG: &str = "config";
/// Leader lock: the leader's member name, attached to its lease.
pub const LEADER: &str = "leader";
/// Directory of member keys.
pub const MEMBERS: &str = "members/";
/// Leader's WAL position and slots (JSON).
pub const STATUS: &str = "status";
/// Timeline history (JSON list).
pub const HISTORY: &str = "history";
/// Requested switchover or failover (JSON).
pub const FAILOVER: &str = "failover";
/// Synchronous replication state (JSON).
pub const SYNC: &str = "sync";
/// Failsafe topology: `{member name: api_url}` of all known members (JSON).
pub const FAILSAFE: &str = "failsafe";
/// The last backup `rampart backup` ran (Rampart's own; JSON).
pub const BACKUP: &str = "backup";
/// Directory of the running proxies' reports (Rampart's own; JSON, each on its proxy's lease).
pub const PROXIES: &str = "proxies/";
/// Directory of the proxies' virtual address claims (Rampart's own): `proxy_vip/<address>` holds
/// the id of the proxy that has the address, on that proxy's claim lease.
pub const PROXY_ADDRESSES: &str = "proxy_vip/";

/// The key prefix of one cluster, always ending in `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPrefix(String);

impl ClusterPrefix {
    /// Builds `/<namespace>/<scope>/`, tolerating slashes around the namespace
    /// (`/service`, `service`, `/db/` all work, as in Patroni).
    pub fn new(namespace: &str, scope: &str) -> Self {
        let ns = namespace.trim_matches('/');
        if ns.is_empty() {
            ClusterPrefix(format!("/{scope}/"))
        } else {
            ClusterPrefix(format!("/{ns}/{scope}/"))
        }
    }

    /// The prefix itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Full key for a name under the prefix, e.g. `key(LEADER)`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.0, name)
    }

    /// Full key of a member.
    pub fn member(&self, name: &str) -> String {
        format!("{}{}{}", self.0, MEMBERS, name)
    }

    /// Full key of a proxy's report.
    pub fn proxy(&self, id: &str) -> String {
        format!("{}{}{}", self.0, PROXIES, id)
    }

    /// Full key of the proxies' claim on the virtual address `address`.
    pub fn proxy_address(&self, address: &str) -> String {
        format!("{}{}{}", self.0, PROXY_ADDRESSES, address)
    }

    /// The part of `full` after the prefix, if `full` is under it.
    pub fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_slashes_are_normalised() {
        for ns in ["/service", "service", "/service/", "service/"] {
            assert_eq!(ClusterPrefix::new(ns, "pg").key(LEADER), "/service/pg/leader");
        }
        assert_eq!(ClusterPrefix::new("/db/", "postgres").member("n1"), "/db/postgres/members/n1");
        assert_eq!(ClusterPrefix::new("service", "pg").proxy("h-1"), "/service/pg/proxies/h-1");
        assert_eq!(ClusterPrefix::new("service", "pg").proxy_address("10.0.0.5"), "/service/pg/proxy_vip/10.0.0.5");
    }
}
