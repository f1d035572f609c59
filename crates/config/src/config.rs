//! [`Config`]: the validated local configuration of one member, and the values derived from it.
//!
//! Invariant kept here: a `Config` only exists once every section has been validated, so the
//! agent can use its fields without re-checking them (names are non-empty and usable in DCS keys,
//! addresses are parsed, at least one etcd endpoint exists, `bootstrap.dcs` obeys the timing rule).

use rampart_core::keys::ClusterPrefix;
use rampart_core::{DynamicConfig, Tags};
use serde_json::Value as Json;

use crate::bootstrap::Bootstrap;
use crate::check::Checker;
use crate::ctl::Ctl;
use crate::error::Problem;
use crate::etcd::Etcd3;
use crate::log::LogConfig;
use crate::postgresql::Postgresql;
use crate::proxy::Proxy;
use crate::raw::RawConfig;
use crate::restapi::RestApi;
use crate::vip::Vip;
use crate::watchdog::Watchdog;

/// Default `namespace`, as in Patroni.
pub const DEFAULT_NAMESPACE: &str = "/service";

/// Patroni sections Rampart accepts without using them, kept as read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OtherSections {
    /// `citus`.
    pub citus: Option<Json>,
}

/// The local configuration of one member, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Cluster name.
    pub scope: String,
    /// DCS namespace the cluster lives under.
    pub namespace: String,
    /// This member's name, unique in the cluster.
    pub name: String,
    /// The agent's HTTP API.
    pub restapi: RestApi,
    /// The DCS.
    pub etcd3: Etcd3,
    /// What the initializing node uses.
    pub bootstrap: Bootstrap,
    /// The local PostgreSQL instance.
    pub postgresql: Postgresql,
    /// Member tags.
    pub tags: Tags,
    /// How operator commands run on this host call the REST APIs (`ctl`).
    pub ctl: Ctl,
    /// The watchdog armed while this member leads.
    pub watchdog: Watchdog,
    /// The virtual address this member holds while it runs the writable primary (`vip`).
    pub vip: Option<Vip>,
    /// Where and how the agent logs (`log`).
    pub log: LogConfig,
    /// Accepted Patroni sections Rampart does not use.
    pub other: OtherSections,
    /// `rampart proxy`'s settings, when the file has a `proxy` section.
    pub proxy: Option<Proxy>,
}

impl Config {
    /// etcd endpoint URLs, e.g. `http://127.0.0.1:2379`.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.etcd3.endpoints()
    }

    /// The cluster's key prefix, `/<namespace>/<scope>/`.
    pub fn prefix(&self) -> ClusterPrefix {
        ClusterPrefix::new(&self.namespace, &self.scope)
    }

    /// Whether to use pg_rewind: the local `postgresql.use_pg_rewind` when set, otherwise the
    /// dynamic configuration's.
    pub fn use_pg_rewind(&self, dynamic: &DynamicConfig) -> bool {
        self.postgresql.use_pg_rewind.unwrap_or(dynamic.postgresql.use_pg_rewind)
    }

    /// The dynamic configuration to write when this node initializes the cluster.
    pub fn bootstrap_dcs(&self) -> DynamicConfig {
        self.bootstrap.dcs.clone()
    }

    pub(crate) fn build(raw: RawConfig, c: &mut Checker<'_>) -> Result<Config, Problem> {
        let name = key_part(c.require_text(raw.name, &["name"])?, "name", c)?;
        if name == rampart_core::standby_names::STRICT_PLACEHOLDER {
            // Strict synchronous mode waits for a standby of this name precisely because none exists.
            return Err(c.problem(&["name"], format!("{name:?} is reserved (the strict synchronous mode placeholder)")));
        }
        let scope = key_part(c.require_text(raw.scope, &["scope"])?, "scope", c)?;
        let namespace = raw.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let restapi = RestApi::build(raw.restapi, c)?;
        let etcd3 = Etcd3::build(raw.etcd3, raw.etcd, c)?;
        let postgresql = Postgresql::build(raw.postgresql, c)?;
        let bootstrap = Bootstrap::build(raw.bootstrap, c)?;
        let ctl = Ctl::build(raw.ctl, c)?;
        let proxy = Proxy::build(raw.proxy, c)?;
        let watchdog = Watchdog::build(raw.watchdog, c)?;
        let vip = Vip::build(raw.vip, &["vip"], c)?;
        let tags = raw.tags.unwrap_or_default().normalized();
        for conflict in tags.conflicts() {
            c.note(&["tags"], conflict);
        }
        let log = LogConfig::build(raw.log, c)?;
        Ok(Config {
            scope,
            namespace,
            name,
            restapi,
            etcd3,
            bootstrap,
            postgresql,
            tags,
            ctl,
            watchdog,
            vip,
            log,
            other: OtherSections { citus: raw.citus },
            proxy,
        })
    }
}

/// `name` and `scope` become single DCS key segments, so they cannot contain `/`.
pub(crate) fn key_part(value: String, key: &str, c: &Checker<'_>) -> Result<String, Problem> {
    if value.contains('/') {
        return Err(c.problem(&[key], format!("{value:?} must not contain '/' (it is one segment of a DCS key)")));
    }
    Ok(value)
}
