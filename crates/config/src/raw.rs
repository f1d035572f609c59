//! The YAML schema as written, before validation: every key optional, Patroni's spellings.
//!
//! These types only describe what may appear in the file (any key they do not declare is
//! reported as unknown by [`crate::de`]); deciding what is required, filling defaults and checking
//! that the values can work is [`crate::config`]'s job.
//!
//! Invariant kept here: the free-form parts of Patroni's schema (`parameters`, `tags`,
//! `bootstrap.dcs`, `callbacks`, `bootstrap.users`, and the pass-through sections `log`,
//! `watchdog`, `citus`) are read as maps, so their keys are never reported as unknown.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use rampart_core::{DynamicConfig, Tags};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::etcd::Protocol;
use crate::restapi::ClientCertMode;
use crate::secret::Secret;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawConfig {
    pub scope: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub restapi: Option<RawRestApi>,
    pub etcd3: Option<RawEtcd3>,
    pub bootstrap: Option<RawBootstrap>,
    pub postgresql: Option<RawPostgresql>,
    pub tags: Option<Tags>,
    pub log: Option<Json>,
    pub watchdog: Option<Json>,
    pub vip: Option<Json>,
    pub ctl: Option<RawCtl>,
    pub citus: Option<Json>,
    pub proxy: Option<RawProxy>,
    // Patroni's other DCS sections: recognised so that a precise message can be given about them.
    /// Patroni's etcd v2 section: read as the etcd3 one when there is none (see [`crate::etcd`]).
    pub etcd: Option<RawEtcd3>,
    pub consul: Option<IgnoredAny>,
    pub zookeeper: Option<IgnoredAny>,
    pub exhibitor: Option<IgnoredAny>,
    pub kubernetes: Option<IgnoredAny>,
    pub raft: Option<IgnoredAny>,
}

/// The other DCS sections Patroni knows, in the order they are reported.
pub(crate) const OTHER_DCS: &[&str] = &["etcd", "consul", "zookeeper", "exhibitor", "kubernetes", "raft"];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawCredentials {
    pub username: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawRestApi {
    pub listen: Option<String>,
    pub connect_address: Option<String>,
    pub authentication: Option<RawCredentials>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub cafile: Option<PathBuf>,
    pub verify_client: Option<ClientCertMode>,
    pub allowlist: Option<StrList>,
}

/// `rampart proxy`'s section.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawProxy {
    pub listen: Option<String>,
    pub listen_ro: Option<String>,
    pub hold_timeout: Option<u64>,
    pub max_lag: Option<u64>,
    pub fallback_to_primary: Option<bool>,
    pub listen_admin: Option<String>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub ro_policy: Option<String>,
    pub workers: Option<u64>,
    pub shutdown_timeout: Option<u64>,
    pub access_log: Option<PathBuf>,
    pub vip: Option<Json>,
    // Connection pooling (see [`crate::proxy_pool`]): PgBouncer's names, directly under `proxy`.
    pub pool_mode: Option<String>,
    pub default_pool_size: Option<u64>,
    pub min_pool_size: Option<u64>,
    pub reserve_pool_size: Option<u64>,
    pub reserve_pool_timeout: Option<u64>,
    pub max_client_conn: Option<u64>,
    pub max_db_connections: Option<u64>,
    pub server_idle_timeout: Option<u64>,
    pub server_lifetime: Option<u64>,
    pub query_wait_timeout: Option<u64>,
    pub idle_transaction_timeout: Option<u64>,
    pub server_reset_query: Option<String>,
    pub databases: Option<BTreeMap<String, RawPoolDatabase>>,
    pub auth_type: Option<String>,
    pub auth_hba_file: Option<PathBuf>,
    pub auth_file: Option<PathBuf>,
    pub auth_user: Option<String>,
    pub auth_query: Option<String>,
    pub admin_users: Option<StrList>,
    pub stats_users: Option<StrList>,
    pub switchover_drain_timeout: Option<u64>,
    // Read/write splitting (see [`crate::proxy_split`]).
    pub load_balance: Option<bool>,
    pub disable_load_balance_on_write: Option<String>,
    pub read_your_writes: Option<String>,
    pub read_your_writes_timeout: Option<u64>,
    pub replica_position_interval: Option<u64>,
    pub max_lag_time: Option<u64>,
    pub write_functions: Option<StrList>,
    pub read_only_functions: Option<StrList>,
}

/// `proxy.databases.<name>`: one database's pool settings over the proxy-wide ones. A struct, not
/// a map, so that a mistyped key inside is reported as unknown.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawPoolDatabase {
    pub pool_size: Option<u64>,
    pub min_pool_size: Option<u64>,
    pub reserve_pool_size: Option<u64>,
    pub max_db_connections: Option<u64>,
    pub pool_mode: Option<String>,
}

/// patronictl's section: REST credentials and TLS settings for operator commands.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawCtl {
    pub authentication: Option<RawCredentials>,
    pub insecure: Option<bool>,
    pub cacert: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub keyfile_password: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawEtcd3 {
    pub host: Option<String>,
    pub hosts: Option<StrList>,
    pub protocol: Option<Protocol>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawBootstrap {
    pub dcs: Option<DynamicConfig>,
    /// A list of flags and single-key maps (or, as Patroni also accepts, one map).
    pub initdb: Option<Json>,
    pub pg_hba: Option<Vec<String>>,
    pub users: Option<BTreeMap<String, RawUser>>,
    /// `initdb` (default) or the name of a custom method section (`bootstrap.<method>`).
    pub method: Option<String>,
    /// Script run once the new cluster is up (`post_init` is its older name).
    pub post_bootstrap: Option<String>,
    pub post_init: Option<String>,
    /// The other keys: custom bootstrap method sections (see [`crate::bootstrap`]).
    #[serde(flatten)]
    pub other: BTreeMap<String, Json>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawPgAuthentication {
    pub superuser: Option<RawPgRole>,
    pub replication: Option<RawPgRole>,
    pub rewind: Option<RawPgRole>,
}

/// `postgresql.authentication.<role>`: the user, its password and the libpq connection parameters
/// Patroni passes through for that role.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawPgRole {
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub sslmode: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    pub sslpassword: Option<Secret>,
    pub sslrootcert: Option<String>,
    pub sslcrl: Option<String>,
    pub sslcrldir: Option<String>,
    pub sslnegotiation: Option<String>,
    pub gssencmode: Option<String>,
    pub channel_binding: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawPostgresql {
    pub listen: Option<String>,
    pub connect_address: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    pub pgpass: Option<PathBuf>,
    pub authentication: Option<RawPgAuthentication>,
    pub parameters: Option<BTreeMap<String, Json>>,
    pub pg_hba: Option<Vec<String>>,
    pub use_pg_rewind: Option<bool>,
    pub remove_data_directory_on_rewind_failure: Option<bool>,
    pub use_unix_socket: Option<bool>,
    pub callbacks: Option<BTreeMap<String, String>>,
    pub pre_promote: Option<String>,
    pub before_stop: Option<String>,
    pub pg_ctl_timeout: Option<u64>,
    pub create_replica_methods: Option<Json>,
    pub create_replica_method: Option<Json>,
    pub basebackup: Option<Json>,
    pub recovery_conf: Option<BTreeMap<String, Json>>,
}

/// One legacy `bootstrap.users` entry. Read as a map so that keys inside it are not reported.
#[derive(Debug, Default)]
pub(crate) struct RawUser {
    pub password: Option<Secret>,
    pub options: Vec<String>,
}

impl<'de> Deserialize<'de> for RawUser {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct UserVisitor;
        impl<'de> Visitor<'de> for UserVisitor {
            type Value = RawUser;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping with password and options")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawUser, A::Error> {
                let mut user = RawUser::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "password" => user.password = map.next_value()?,
                        "options" => user.options = map.next_value::<Option<Vec<String>>>()?.unwrap_or_default(),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(user)
            }
        }
        d.deserialize_map(UserVisitor)
    }
}

/// A list of strings written either as a YAML list or as one comma-separated string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StrList(pub Vec<String>);

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = StrList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list or a comma-separated string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrList, E> {
                Ok(StrList(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    out.push(item.trim().to_string());
                }
                Ok(StrList(out))
            }
        }
        d.deserialize_any(ListVisitor)
    }
}
