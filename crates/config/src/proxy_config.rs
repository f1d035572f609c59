//! [`ProxyConfig`]: the reading of a configuration file for `rampart proxy`.
//!
//! The proxy runs on application hosts as well as beside the members, so it needs only what it
//! uses: `scope` (and `namespace`), the `etcd3` section, the `proxy` section, and
//! `bootstrap.dcs`, whose `ttl` and `retry_timeout` apply until the cluster's own dynamic
//! configuration has been read. A member's whole file works too; its member-only sections
//! (`name`, `restapi`, `postgresql`, ...) are neither required nor checked here, since the agent
//! that reads the same file checks them.
//!
//! Invariant kept here: a `ProxyConfig` exists only with a valid scope, at least one etcd
//! endpoint, a `proxy` section with its read-write listen address, and a `bootstrap.dcs` that
//! obeys the timing rule.

use rampart_core::keys::ClusterPrefix;
use rampart_core::DynamicConfig;

use crate::check::Checker;
use crate::config::{key_part, DEFAULT_NAMESPACE};
use crate::error::Problem;
use crate::etcd::Etcd3;
use crate::log::LogConfig;
use crate::proxy::Proxy;
use crate::raw::RawConfig;

/// What `rampart proxy` reads from a configuration file, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// Cluster name.
    pub scope: String,
    /// DCS namespace the cluster lives under.
    pub namespace: String,
    /// The DCS.
    pub etcd3: Etcd3,
    /// `bootstrap.dcs` (defaults when absent): timings used until the cluster's are known.
    pub dcs: DynamicConfig,
    /// The `proxy` section.
    pub proxy: Proxy,
    /// Where and how the proxy logs (`log`).
    pub log: LogConfig,
}

impl ProxyConfig {
    /// The cluster's key prefix, `/<namespace>/<scope>/`.
    pub fn prefix(&self) -> ClusterPrefix {
        ClusterPrefix::new(&self.namespace, &self.scope)
    }

    pub(crate) fn build(raw: RawConfig, c: &mut Checker<'_>) -> Result<ProxyConfig, Problem> {
        let scope = key_part(c.require_text(raw.scope, &["scope"])?, "scope", c)?;
        let namespace = raw.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let etcd3 = Etcd3::build(raw.etcd3, raw.etcd, c)?;
        let dcs = crate::bootstrap::dcs(raw.bootstrap.and_then(|b| b.dcs), c)?;
        let Some(proxy) = Proxy::build(raw.proxy, c)? else {
            return Err(c.problem(&["proxy"], "missing required section (at least `proxy: {listen: HOST:PORT}`)"));
        };
        let log = LogConfig::build(raw.log, c)?;
        Ok(ProxyConfig { scope, namespace, etcd3, dcs, proxy, log })
    }
}

#[cfg(test)]
mod tests {
    use crate::parse_proxy;

    #[test]
    fn an_application_host_needs_scope_etcd_and_proxy_only() {
        let text = "scope: pg\netcd3:\n  hosts: 10.0.0.1:2379,10.0.0.2:2379\nproxy:\n  listen: 0.0.0.0:6432\n";
        let c = parse_proxy(text, "p.yml", Vec::new()).unwrap().config;
        assert_eq!(c.scope, "pg");
        assert_eq!(c.prefix().as_str(), "/service/pg/");
        assert_eq!(c.etcd3.endpoints(), ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
        assert_eq!(c.proxy.listen.port, 6432);
        assert_eq!((c.dcs.ttl, c.dcs.retry_timeout), (30, 10), "Patroni's defaults until the cluster's are read");
    }

    #[test]
    fn a_members_file_with_a_proxy_section_works_too() {
        let text = "\
scope: pg
namespace: /db
name: n1
restapi: {listen: 127.0.0.1:8008}
etcd3: {host: 127.0.0.1:2379}
bootstrap: {dcs: {ttl: 20, loop_wait: 5, retry_timeout: 5}}
postgresql: {listen: 127.0.0.1:5432, data_dir: /data}
proxy: {listen: 127.0.0.1:6432}
";
        let c = parse_proxy(text, "p.yml", Vec::new()).unwrap().config;
        assert_eq!(c.prefix().as_str(), "/db/pg/");
        assert_eq!((c.dcs.ttl, c.dcs.retry_timeout), (20, 5));
    }

    #[test]
    fn what_is_missing_or_wrong_is_named() {
        let err = |text: &str| parse_proxy(text, "p.yml", Vec::new()).unwrap_err().to_string();
        assert_eq!(err("etcd3: {host: h:2379}\nproxy: {listen: h:1}\n"), "p.yml: scope: missing required key");
        assert_eq!(err("scope: a/b\netcd3: {host: h:2379}\nproxy: {listen: h:1}\n").split(": ").nth(1), Some("scope"));
        assert!(err("scope: pg\nproxy: {listen: h:1}\n").contains("etcd3: missing required section"));
        assert!(err("scope: pg\netcd3: {host: h:2379}\n").contains("proxy: missing required section"));
        let e = err("scope: pg\netcd3: {host: h:2379}\nbootstrap: {dcs: {ttl: 4}}\nproxy: {listen: h:1}\n");
        assert!(e.starts_with("p.yml:3: bootstrap.dcs.ttl"), "{e}");
    }
}
