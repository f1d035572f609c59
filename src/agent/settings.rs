//! Translating the validated configuration into what each adapter and the core take:
//! [`PgSettings`] for the PostgreSQL adapter, [`EtcdOptions`] for the DCS, [`NodeSettings`] for
//! the core. Pure functions, so the mapping is unit-tested without any server.
//!
//! Invariants:
//! * passwords move from [`rampart_config::Secret`] into the adapters' own redacting types and
//!   nowhere else;
//! * while `synchronous_mode` is on, `synchronous_standby_names` is the leader's alone: a value
//!   in `postgresql.parameters` is replaced (see [`with_managed_sync_names`]), so the rendering of
//!   postgresql.conf never undoes what the HA core decided.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rampart_config::Config;
use rampart_core::hot_standby::{raise_for_replica, Raise, Values};
use rampart_core::{DynamicConfig, NodeSettings, StartRole};
use rampart_dcs::EtcdOptions;
use rampart_pg::{Credentials, HbaFile, LocalConnect, PgSettings};
use serde_json::Value;

/// The version of Patroni whose key formats and REST API we reproduce; published in member keys
/// and `/patroni` so that `patronictl` treats us as a current Patroni.
pub const PATRONI_COMPAT_VERSION: &str = "4.1.4";

fn creds(c: &rampart_config::PgRole) -> Credentials {
    let mut out = match &c.password {
        Some(p) => Credentials::new(c.username.clone(), p.expose()),
        None => Credentials::without_password(c.username.clone()),
    };
    out.options = c.options.clone();
    if let Some(phrase) = &c.sslpassword {
        out.options.insert("sslpassword".into(), phrase.expose().to_string());
    }
    out
}

/// A `postgresql.conf` value from YAML: booleans as `on`/`off` (YAML reads `on` as true).
pub fn parameter_text(v: &Value) -> String {
    match v {
        Value::Bool(true) => "on".into(),
        Value::Bool(false) => "off".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parameters in force: the dynamic configuration's, overridden by the local file's (Patroni's
/// precedence).
pub fn parameters(cfg: &Config, dynamic: &DynamicConfig) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> =
        dynamic.postgresql.parameters.iter().map(|(k, v)| (k.clone(), parameter_text(v))).collect();
    for (k, v) in &cfg.postgresql.parameters {
        out.insert(k.clone(), parameter_text(v));
    }
    if dynamic.postgresql.use_slots && dynamic.has_logical_slots() {
        // As Patroni does: a replica's copies of logical slots need the catalog rows of their
        // catalog_xmin, which only the primary can keep; hot_standby_feedback reports that xmin
        // through the replica's physical slot there.
        out.insert("hot_standby_feedback".into(), "on".into());
    }
    if !out.keys().any(|k| k.eq_ignore_ascii_case("wal_receiver_timeout")) {
        // A replica that streams from the old leader does not race for the lock (its primary is
        // alive), but only while it has heard from it within half the ttl
        // (`rampart_core::election::stream_is_stale`). Behind a partition the stream goes silent;
        // an idle primary is silent too, unless its standbys ping it: they do after
        // `wal_receiver_timeout / 2` of silence. Half the ttl keeps a live primary's evidence
        // fresh (a ping every quarter ttl) and ends a dead stream by itself after half the ttl,
        // instead of PostgreSQL's minute. An operator's own value wins.
        out.insert("wal_receiver_timeout".into(), format!("{}ms", dynamic.ttl.max(2) * 500));
    }
    out
}

/// The name of the parameter the leader manages in synchronous mode.
pub const SYNC_NAMES: &str = "synchronous_standby_names";

/// Replaces `synchronous_standby_names` in `params` by the leader-managed value while
/// `synchronous_mode` is on (removing the user's value when no managed value is known yet); leaves
/// the user's parameters alone when it is off.
pub fn with_managed_sync_names(params: &mut BTreeMap<String, String>, dynamic: &DynamicConfig, managed: Option<&str>) {
    if !dynamic.sync_mode().is_active() {
        return;
    }
    params.retain(|k, _| !k.eq_ignore_ascii_case(SYNC_NAMES));
    if let Some(v) = managed {
        params.insert(SYNC_NAMES.to_string(), v.to_string());
    }
}

/// The settings to run PostgreSQL with in `role`: a replica's hot-standby-critical settings are
/// raised to the control file's `control` values (rule:
/// [`rampart_core::hot_standby::raise_for_replica`]); a primary's stay as configured. Returns what
/// was raised too.
pub fn for_role(mut s: PgSettings, role: &StartRole, control: &Values) -> (PgSettings, Vec<Raise>) {
    let raised = match role.in_recovery() {
        true => raise_for_replica(&mut s.parameters, control),
        false => Vec::new(),
    };
    (s, raised)
}

/// Patroni's log line for a value taken from `pg_controldata` (its wording, which Patroni's own
/// acceptance tests and operators' log searches know).
pub fn raise_message(r: &Raise) -> String {
    format!(
        "{} value in pg_controldata: {}, in the global configuration: {}. pg_controldata value will be used. \
         Setting 'Pending restart' flag",
        r.setting, r.to, r.configured
    )
}

/// The socket directory PostgreSQL will use, resolved against the data directory as the
/// server does for relative entries.
fn socket_dir(cfg: &Config, params: &BTreeMap<String, String>) -> PathBuf {
    let first = params
        .get("unix_socket_directories")
        .and_then(|v| v.split(',').map(str::trim).find(|s| !s.is_empty()).map(str::to_string));
    match first {
        Some(d) if d.starts_with('/') => PathBuf::from(d),
        Some(d) => cfg.postgresql.data_dir.join(d),
        None => PathBuf::from("/var/run/postgresql"),
    }
}

/// Settings for the PostgreSQL adapter under the given dynamic configuration.
pub fn pg_settings(cfg: &Config, dynamic: &DynamicConfig) -> PgSettings {
    let pg = &cfg.postgresql;
    let mut s = PgSettings::new(cfg.name.clone(), pg.data_dir.clone());
    if let Some(b) = &pg.bin_dir {
        s.bin_dir = b.clone();
    }
    s.listen_hosts = pg.listen_hosts().to_vec();
    s.port = pg.listen_port();
    let (host, port) = pg.connect_host_port();
    s.connect_host = host;
    s.connect_port = port;
    s.parameters = parameters(cfg, dynamic);
    s.local = if pg.use_unix_socket {
        LocalConnect::Socket(socket_dir(cfg, &s.parameters))
    } else {
        LocalConnect::Tcp(pg.local_host())
    };
    s.superuser = creds(&pg.authentication.superuser);
    s.replication = creds(&pg.authentication.replication);
    s.rewind = pg.authentication.rewind.as_ref().map(creds);
    s.pg_hba = hba_file(cfg, dynamic, &s.parameters);
    if let Some(p) = &pg.pgpass {
        s.pgpass = p.clone();
    }
    s.use_slots = dynamic.postgresql.use_slots;
    s.start_timeout = Duration::from_secs(pg.pg_ctl_timeout);
    s.basebackup_args = pg.replica_creation.basebackup_args.clone();
    s.recovery_conf = recovery_conf(cfg, dynamic, &s.parameters);
    s
}

/// Who writes pg_hba.conf, as Patroni decides it: nobody when the `hba_file` parameter names a
/// file; the agent from `postgresql.pg_hba` (the member's, else the dynamic configuration's) when
/// there is one; otherwise the file in the data directory is the operator's (`bootstrap.pg_hba`
/// is appended to it once, after the bootstrap).
pub fn hba_file(cfg: &Config, dynamic: &DynamicConfig, parameters: &BTreeMap<String, String>) -> HbaFile {
    if parameters.keys().any(|k| k.eq_ignore_ascii_case("hba_file")) {
        return HbaFile::Named;
    }
    if !cfg.postgresql.pg_hba.is_empty() {
        return HbaFile::Managed(cfg.postgresql.pg_hba.clone());
    }
    let shared: Vec<String> = match dynamic.postgresql.extra.get("pg_hba") {
        Some(serde_json::Value::Array(lines)) => lines.iter().filter_map(|l| l.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    match shared.is_empty() {
        true => HbaFile::InDataDir,
        false => HbaFile::Managed(shared),
    }
}

/// What replicas recover with besides streaming: the dynamic `postgresql.recovery_conf` with the
/// local one over it, or, as Patroni does (`_adjust_recovery_parameters`), the recovery settings
/// among the parameters when there are any (so a `restore_command` among the parameters works
/// as on PostgreSQL before 12).
pub fn recovery_conf(
    cfg: &Config,
    dynamic: &DynamicConfig,
    parameters: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let among_parameters: BTreeMap<String, String> = parameters
        .iter()
        .filter(|(k, _)| rampart_pg::recovery::is_recovery_parameter(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !among_parameters.is_empty() {
        return among_parameters;
    }
    let mut out: BTreeMap<String, String> = match dynamic.postgresql.extra.get("recovery_conf") {
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .filter(|(_, v)| !v.is_null() && !v.is_object() && !v.is_array())
            .map(|(k, v)| (k.clone(), parameter_text(v)))
            .collect(),
        _ => BTreeMap::new(),
    };
    for (k, v) in &cfg.postgresql.recovery_conf {
        out.insert(k.clone(), parameter_text(v));
    }
    out
}

/// The core's settings.
pub fn node_settings(cfg: &Config) -> NodeSettings {
    NodeSettings {
        name: cfg.name.clone(),
        tags: cfg.tags.clone(),
        use_pg_rewind: cfg.postgresql.use_pg_rewind,
        remove_data_directory_on_rewind_failure: cfg.postgresql.remove_data_directory_on_rewind_failure,
        bootstrap_dcs: cfg.bootstrap_dcs(),
        clone_without_leader: cfg.postgresql.replica_creation.works_without_leader(),
    }
}

/// The DCS connection options. Each request may take at most a third of `retry_timeout`, so a
/// dead endpoint still leaves time to try another one within the operation's deadline.
pub fn etcd_options(e: &rampart_config::Etcd3, retry_timeout_secs: u64) -> EtcdOptions {
    EtcdOptions {
        endpoints: e.endpoints(),
        username: e.username.clone(),
        password: e.password.as_ref().map(|p| p.expose().to_string()),
        ca_file: e.cacert.clone(),
        cert_file: e.cert.clone(),
        key_file: e.key.clone(),
        op_timeout: Duration::from_millis((retry_timeout_secs * 1000 / 3).max(500)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
scope: pg
name: n1
restapi: {listen: "127.0.0.1:8008", connect_address: "127.0.0.1:8008"}
etcd3: {hosts: "127.0.0.1:2379,127.0.0.1:2380", username: u, password: etcdpw}
bootstrap:
  dcs: {ttl: 30, loop_wait: 10, retry_timeout: 10, postgresql: {use_slots: false, parameters: {max_connections: 50, wal_compression: true}}}
  pg_hba: ["host all all 127.0.0.1/32 scram-sha-256"]
postgresql:
  listen: "127.0.0.1:5433"
  connect_address: "127.0.0.1:5433"
  data_dir: /tmp/x/data
  pgpass: /tmp/x/pgpass
  authentication:
    superuser: {username: postgres, password: supersecret}
    replication: {username: replicator, password: reppass}
  parameters: {max_connections: 100, unix_socket_directories: '.'}
  use_unix_socket: true
"#;

    fn cfg() -> Config {
        rampart_config::parse(YAML, "t.yml", std::iter::empty()).unwrap().config
    }

    #[test]
    fn pg_settings_follow_the_config() {
        let c = cfg();
        let d = c.bootstrap_dcs();
        let s = pg_settings(&c, &d);
        assert_eq!(s.port, 5433);
        assert_eq!((s.connect_host.as_str(), s.connect_port), ("127.0.0.1", 5433));
        assert_eq!(s.parameters["max_connections"], "100", "local parameters win over dynamic ones");
        assert_eq!(s.parameters["wal_compression"], "on", "YAML booleans become on/off");
        assert_eq!(
            s.local,
            LocalConnect::Socket(PathBuf::from("/tmp/x/data/.")),
            "relative socket dir is under data_dir"
        );
        assert_eq!(s.pg_hba, HbaFile::InDataDir, "bootstrap.pg_hba is appended after initdb, never written");
        assert!(!s.use_slots);
        assert_eq!(s.pgpass, PathBuf::from("/tmp/x/pgpass"));
        assert_eq!(s.superuser.password.as_deref(), Some("supersecret"));
        assert!(!format!("{s:?}").contains("supersecret"));
        assert_eq!(
            s.parameters["wal_receiver_timeout"],
            format!("{}ms", d.ttl * 500),
            "standbys ping an idle primary often enough to tell it is alive"
        );
        let mut mine = c.clone();
        mine.postgresql.parameters.insert("wal_receiver_timeout".into(), Value::String("1min".into()));
        assert_eq!(parameters(&mine, &d)["wal_receiver_timeout"], "1min", "an operator's value wins");
    }

    #[test]
    fn pg_hba_is_written_from_postgresql_pg_hba_left_to_the_operator_otherwise_as_in_patroni() {
        let mut c = cfg();
        let mut d = c.bootstrap_dcs();
        let hba = |c: &Config, d: &DynamicConfig| pg_settings(c, d).pg_hba;
        assert_eq!(hba(&c, &d), HbaFile::InDataDir);
        d.postgresql.extra.insert("pg_hba".into(), serde_json::json!(["host all all 10.0.0.0/8 md5"]));
        assert_eq!(hba(&c, &d), HbaFile::Managed(vec!["host all all 10.0.0.0/8 md5".into()]), "the dynamic lines");
        c.postgresql.pg_hba = vec!["local all all peer".into()];
        assert_eq!(hba(&c, &d), HbaFile::Managed(vec!["local all all peer".into()]), "the member's win");
        c.postgresql.parameters.insert("HBA_file".into(), Value::String("/etc/postgresql/pg_hba.conf".into()));
        assert_eq!(hba(&c, &d), HbaFile::Named, "a file the parameter names is never written");
    }

    #[test]
    fn replicas_recover_with_the_dynamic_recovery_conf_under_the_local_one_or_with_the_parameters() {
        let mut c = cfg();
        let mut d = c.bootstrap_dcs();
        d.postgresql.extra.insert(
            "recovery_conf".into(),
            serde_json::json!({"restore_command": "cp /dcs/%f %p", "recovery_min_apply_delay": 0, "x": null}),
        );
        c.postgresql.recovery_conf.insert("restore_command".into(), Value::String("cp /local/%f %p".into()));
        let s = pg_settings(&c, &d);
        let want: BTreeMap<String, String> = [
            ("recovery_min_apply_delay".to_string(), "0".to_string()),
            ("restore_command".into(), "cp /local/%f %p".into()),
        ]
        .into();
        assert_eq!(s.recovery_conf, want);
        // A recovery setting among the parameters replaces them all.
        c.postgresql.parameters.insert("restore_command".into(), Value::String("cp /param/%f %p".into()));
        let s = pg_settings(&c, &d);
        assert_eq!(s.recovery_conf, [("restore_command".to_string(), "cp /param/%f %p".to_string())].into());
    }

    #[test]
    fn the_leader_owns_synchronous_standby_names_in_synchronous_mode() {
        let user: BTreeMap<String, String> =
            [("Synchronous_Standby_Names".to_string(), "*".to_string()), ("work_mem".into(), "4MB".into())].into();
        let off = DynamicConfig::default();
        let on = DynamicConfig { synchronous_mode: Some(rampart_core::SyncMode::On), ..Default::default() };
        let mut p = user.clone();
        with_managed_sync_names(&mut p, &off, Some("FIRST 1 (\"a\")"));
        assert_eq!(p, user, "off: the user's value stands");
        let mut p = user.clone();
        with_managed_sync_names(&mut p, &on, Some("FIRST 1 (\"a\")"));
        assert_eq!(p.get(SYNC_NAMES).map(String::as_str), Some("FIRST 1 (\"a\")"));
        assert!(!p.contains_key("Synchronous_Standby_Names"), "the user's spelling is gone too");
        assert_eq!(p["work_mem"], "4MB");
        let mut p = user;
        with_managed_sync_names(&mut p, &on, None);
        assert!(!p.keys().any(|k| k.eq_ignore_ascii_case(SYNC_NAMES)), "nothing known yet: no value");
    }

    #[test]
    fn a_replica_is_started_with_at_least_the_control_file_values_a_primary_as_configured() {
        use rampart_core::hot_standby::Setting;
        let c = cfg();
        let s = pg_settings(&c, &c.bootstrap_dcs());
        let control = Values::from_pairs([(Setting::MaxConnections, 150), (Setting::MaxWorkerProcesses, 8)]);
        let (replica, raised) = for_role(s.clone(), &StartRole::Replica { upstream: None }, &control);
        assert_eq!(replica.parameters["max_connections"], "150");
        assert_eq!(
            raise_message(&raised[0]),
            "max_connections value in pg_controldata: 150, in the global configuration: 100. \
             pg_controldata value will be used. Setting 'Pending restart' flag"
        );
        let (primary, raised) = for_role(s, &StartRole::Primary, &control);
        assert_eq!(primary.parameters["max_connections"], "100");
        assert!(raised.is_empty());
    }

    #[test]
    fn etcd_options_carry_endpoints_and_credentials_without_printing_them() {
        let c = cfg();
        let o = etcd_options(&c.etcd3, 10);
        assert_eq!(o.endpoints.len(), 2);
        assert_eq!(o.password.as_deref(), Some("etcdpw"));
        assert!(!format!("{o:?}").contains("etcdpw"));
        assert!(o.op_timeout < Duration::from_secs(10));
    }
}
