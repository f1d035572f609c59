//! Reloading the configuration file (SIGHUP or `POST /reload`): what takes effect at once, what
//! needs a restart of the agent, and the environment overrides read at start.
//!
//! Invariants kept here:
//! * a file that is not valid changes nothing: the agent goes on with the configuration in force
//!   and logs one line naming the problem;
//! * a setting the running agent was built around (its identity in the DCS, the etcd connection,
//!   the addresses it listens on or connects to, the data directory) is never half applied: it keeps its value in force, and one line names each such key as needing a restart
//!   ([`hold_back_restart_only`]);
//! * the REST API's authentication, allowlist and TLS files take effect at once, as a whole; a set
//!   that cannot be used (a bad certificate) is refused with an error line and the REST API keeps
//!   the settings it had; so does the `log` section (a log file that cannot be opened keeps the
//!   logging in force);
//! * `PATRONI_*`/`RAMPART_*` overrides read at start apply on every reload: they are kept in
//!   memory (the agent removes them from its environment so children never see the passwords)
//!   and never printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart_api::LocalReply;
use rampart_config::{Config, ConfigError, Loaded, RestApi};
use tracing::{error, info, warn};

use super::{callbacks, settings, Agent};
use crate::agent::ports::{Control, Ports};

/// How long a reload may spend preparing the REST API's new security settings (resolving the
/// allowlist's host names); the agent's loop waits meanwhile.
const SECURITY_PREPARE_LIMIT: Duration = Duration::from_secs(5);

/// Where the configuration comes from: the file, and the environment overrides as they were at
/// start.
#[derive(Clone)]
pub struct ConfigSource {
    path: PathBuf,
    overrides: Vec<(String, String)>,
}

// By hand: override values may be passwords.
impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.overrides.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ConfigSource").field("path", &self.path).field("overrides", &names).finish()
    }
}

impl ConfigSource {
    /// The file at `path`, with the override variables of the process environment as they are
    /// now (call before they are removed from it).
    pub fn capture(path: &Path) -> ConfigSource {
        let overrides = rampart_config::override_variables()
            .into_iter()
            .filter_map(|name| std::env::var(&name).ok().map(|value| (name, value)))
            .collect();
        ConfigSource { path: path.to_path_buf(), overrides }
    }

    /// `path` without overrides (tests, whose agents are never reloaded).
    #[cfg(test)]
    pub fn fixed(path: &str) -> ConfigSource {
        ConfigSource { path: path.into(), overrides: Vec::new() }
    }

    /// Reads and validates the file with the overrides.
    pub fn load(&self) -> Result<Loaded, ConfigError> {
        let file = self.path.display().to_string();
        let text =
            std::fs::read_to_string(&self.path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        rampart_config::parse(&text, &file, self.overrides.clone())
    }
}

/// The REST API's security settings in `restapi`.
pub fn security_settings(rest: &RestApi) -> rampart_api::SecuritySettings {
    rampart_api::SecuritySettings {
        authentication: rest
            .authentication
            .as_ref()
            .map(|c| rampart_api::BasicAuth::new(c.username.clone(), c.password.as_ref().map_or("", |p| p.expose()))),
        allowlist: rest.allowlist.clone(),
        tls: rest.certfile.clone().map(|certfile| rampart_api::TlsSettings {
            certfile,
            keyfile: rest.keyfile.clone(),
            cafile: rest.cafile.clone(),
            verify_client: match rest.verify_client {
                rampart_config::ClientCertMode::None => rampart_api::ClientCertMode::None,
                rampart_config::ClientCertMode::Optional => rampart_api::ClientCertMode::Optional,
                rampart_config::ClientCertMode::Required => rampart_api::ClientCertMode::Required,
            },
        }),
    }
}

/// Copies the REST API's security settings (those [`security_settings`] reads) from `from`.
fn keep_security(from: &RestApi, to: &mut RestApi) {
    to.authentication = from.authentication.clone();
    to.allowlist = from.allowlist.clone();
    to.certfile = from.certfile.clone();
    to.keyfile = from.keyfile.clone();
    to.cafile = from.cafile.clone();
    to.verify_client = from.verify_client;
}

/// Whether the REST API's security settings differ. Certificates are files: a reload re-reads
/// them whenever TLS is on, so that renewed certificates under the same names take effect.
fn security_to_reload(old: &RestApi, new: &RestApi) -> bool {
    let mut same = old.clone();
    keep_security(new, &mut same);
    same != *old || new.certfile.is_some()
}

/// Keys of `new` that only a restart of the agent can apply: each one that differs from `old` is
/// set back to `old`'s value (so nothing is half applied) and named in the result, in the
/// configuration file's terms.
pub fn hold_back_restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut held = Vec::new();
    macro_rules! hold {
        ($key:literal, $($field:ident).+) => {
            if new.$($field).+ != old.$($field).+ {
                new.$($field).+ = old.$($field).+.clone();
                held.push($key);
            }
        };
    }
    // The identity and connection of the DCS client, made once at start.
    hold!("name", name);
    hold!("scope", scope);
    hold!("namespace", namespace);
    hold!("etcd3.hosts", etcd3.hosts);
    hold!("etcd3.protocol", etcd3.protocol);
    hold!("etcd3.username", etcd3.username);
    hold!("etcd3.password", etcd3.password);
    hold!("etcd3.cacert", etcd3.cacert);
    hold!("etcd3.cert", etcd3.cert);
    hold!("etcd3.key", etcd3.key);
    // The REST API's socket, bound once at start.
    hold!("restapi.listen", restapi.listen);
    // The postmaster the agent tracks, and how the agent's own connection reaches it (changing
    // them would also need PostgreSQL restarted on the new address at the same moment).
    hold!("postgresql.data_dir", postgresql.data_dir);
    hold!("postgresql.listen", postgresql.listen);
    hold!("postgresql.use_unix_socket", postgresql.use_unix_socket);
    // The virtual address the agent holds: changing it while held would leave the old one behind.
    hold!("vip", vip);
    held
}

impl<P: Ports> Agent<P> {
    /// Re-reads the configuration file (`why`: what asked for it) and applies what it can: the
    /// PostgreSQL settings, pg_hba, tags, callbacks and watchdog at the next cycle, the REST API's
    /// security and the log settings at once; restart-only keys are named and held back. An invalid file (also one
    /// with a parameter value PostgreSQL would refuse) is refused (400) and nothing changes.
    ///
    /// Cancel-safe: the only wait (preparing the REST API's security) comes before any change.
    pub(in crate::agent) async fn reload(&mut self, why: &str) -> LocalReply {
        let loaded = match self.config_source.load() {
            Ok(l) => l,
            Err(e) => {
                error!("reload ({why}) refused, the configuration in force stays: {e}");
                return LocalReply { status: 400, message: format!("reload refused: {e}") };
            }
        };
        for w in &loaded.warnings {
            warn!("{w}");
        }
        // A parameter value PostgreSQL would refuse is refused like any other invalid file.
        match crate::cli::check_config::parameter_values(&self.config_source.path, &loaded.config) {
            Ok(notes) => notes.iter().for_each(|n| warn!("{n}")),
            Err(e) => {
                error!("reload ({why}) refused, the configuration in force stays: {e}");
                return LocalReply { status: 400, message: format!("reload refused: {e}") };
            }
        }
        let mut new = loaded.config;
        for key in hold_back_restart_only(&self.cfg, &mut new) {
            warn!("{key} changed: needs a restart of the agent");
        }
        let security = if security_to_reload(&self.cfg.restapi, &new.restapi) {
            let prepared = tokio::time::timeout(
                SECURITY_PREPARE_LIMIT,
                rampart_api::Security::prepare(&security_settings(&new.restapi)),
            )
            .await;
            match prepared {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    error!("reload: {e}; the REST API keeps its previous authentication, allowlist and TLS settings");
                    keep_security(&self.cfg.restapi, &mut new.restapi);
                    None
                }
                Err(_) => {
                    error!(
                        "reload: restapi.allowlist could not be resolved within {SECURITY_PREPARE_LIMIT:?}; the REST \
                         API keeps its previous authentication, allowlist and TLS settings"
                    );
                    keep_security(&self.cfg.restapi, &mut new.restapi);
                    None
                }
            }
        } else {
            None
        };
        // From here on nothing waits: the new configuration is applied as a whole.
        if new.log != self.cfg.log {
            match crate::logging::reconfigure(&new.log) {
                Ok(()) => info!("log settings reloaded"),
                Err(e) => {
                    error!("reload: log: {e:#}; the previous log settings stay in force");
                    new.log = self.cfg.log.clone();
                }
            }
        }
        if let Some(s) = security {
            self.api_security.replace(s);
            info!("REST API authentication, allowlist and TLS settings reloaded");
        }
        let old_pg = self.pg_settings();
        self.cfg = new;
        let new_pg = self.pg_settings();
        if sql_inputs(&old_pg) != sql_inputs(&new_pg) {
            // New superuser credentials: the next query connects with them.
            self.pg.reconnect(&new_pg);
            if let Some(live) = &self.live_sql {
                live.replace(&new_pg);
            }
        }
        let node = settings::node_settings(&self.cfg);
        self.watchdog.reconfigure(self.cfg.watchdog.clone(), self.core.config().ttl);
        self.core.update_settings(node);
        // Rewrite postgresql.conf and pg_hba.conf at the next cycle and reload PostgreSQL.
        self.params.force_rewrite();
        callbacks::fire(
            &self.cfg.postgresql.callbacks,
            "on_reload",
            self.core.callback_role().as_str(),
            &self.cfg.scope,
        );
        info!("configuration reloaded ({why})");
        LocalReply { status: 202, message: "reload scheduled".into() }
    }
}

/// What the agent's own connection to PostgreSQL is made from.
fn sql_inputs(s: &rampart_pg::PgSettings) -> (&rampart_pg::LocalConnect, u16, &rampart_pg::Credentials, Duration) {
    (&s.local, s.port, &s.superuser, s.query_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
scope: pg
name: n1
restapi:
  listen: 127.0.0.1:8008
etcd3:
  hosts: 127.0.0.1:2379
postgresql:
  listen: 127.0.0.1:5432
  data_dir: /var/lib/pg/data
  authentication:
    superuser: {username: postgres, password: su-secret}
    replication: {username: replicator, password: rep-secret}
  parameters:
    work_mem: 4MB
";

    fn parse(text: &str, env: &[(&str, &str)]) -> Config {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        rampart_config::parse(text, "test.yml", env).unwrap().config
    }

    #[test]
    fn restart_only_keys_are_named_and_held_back() {
        let old = parse(BASE, &[]);
        let text = BASE
            .replace("listen: 127.0.0.1:8008", "listen: 127.0.0.1:8009")
            .replace("hosts: 127.0.0.1:2379", "hosts: 127.0.0.1:2380")
            .replace("/var/lib/pg/data", "/srv/data")
            .replace("work_mem: 4MB", "work_mem: 8MB")
            .replace("scope: pg", "scope: pg\nnamespace: /other\nlog: {level: DEBUG}");
        let mut new = parse(&text, &[]);
        let held = hold_back_restart_only(&old, &mut new);
        // `log` is applied on reload (crate::logging::reconfigure), so it is not held back.
        assert_eq!(held, vec!["namespace", "etcd3.hosts", "restapi.listen", "postgresql.data_dir"]);
        assert_ne!(new.log, old.log);
        // Held back: the values in force stay.
        assert_eq!(new.restapi.listen, old.restapi.listen);
        assert_eq!(new.etcd3, old.etcd3);
        assert_eq!(new.postgresql.data_dir, old.postgresql.data_dir);
        assert_eq!(new.namespace, old.namespace);
        // Applied: everything else.
        assert_eq!(new.postgresql.parameters["work_mem"], "8MB");
        // Nothing left to hold back once held.
        assert!(hold_back_restart_only(&old, &mut new).is_empty());
    }

    #[test]
    fn an_unchanged_file_needs_no_restart_and_no_security_reload() {
        let old = parse(BASE, &[]);
        let mut new = parse(BASE, &[]);
        assert!(hold_back_restart_only(&old, &mut new).is_empty());
        assert!(!security_to_reload(&old.restapi, &new.restapi));
        let with_auth = BASE
            .replace("listen: 127.0.0.1:8008", "listen: 127.0.0.1:8008\n  authentication: {username: a, password: b}");
        assert!(security_to_reload(&old.restapi, &parse(&with_auth, &[]).restapi));
    }

    #[test]
    fn overrides_from_start_apply_on_reload_and_are_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.yml");
        // The file alone lacks etcd3 and the superuser password: only the overrides complete it.
        let text = BASE.replace("etcd3:\n  hosts: 127.0.0.1:2379\n", "").replace(", password: su-secret", "");
        std::fs::write(&path, &text).unwrap();
        let source = ConfigSource {
            path: path.clone(),
            overrides: vec![
                ("PATRONI_ETCD3_HOSTS".into(), "127.0.0.1:2379".into()),
                ("PATRONI_SUPERUSER_PASSWORD".into(), "env-secret-42".into()),
            ],
        };
        let cfg = source.load().unwrap().config;
        assert_eq!(cfg.etcd3.hosts.len(), 1);
        let su = cfg.postgresql.authentication.superuser.password.as_ref().unwrap();
        assert_eq!(su.expose(), "env-secret-42");
        let shown = format!("{source:?}");
        assert!(shown.contains("PATRONI_SUPERUSER_PASSWORD") && !shown.contains("env-secret-42"), "{shown}");
        // A file made invalid is refused with a line naming the problem.
        std::fs::write(&path, "scope: [unclosed\n").unwrap();
        let e = source.load().unwrap_err().to_string();
        assert!(e.contains("n1.yml") && e.contains("invalid YAML"), "{e}");
    }
}
