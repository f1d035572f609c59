//! Environment overrides with Patroni's variable names (`PATRONI_NAME`,
//! `PATRONI_RESTAPI_LISTEN`, `PATRONI_ETCD3_HOSTS`, ...), plus the same names with the `RAMPART_`
//! prefix.
//!
//! Overrides are grafted onto the YAML tree before anything is checked, so they go through exactly
//! the same validation as file values and can create a section the file lacks.
//!
//! Invariants kept here: `RAMPART_X` wins over `PATRONI_X`; an empty variable is ignored (as in
//! Patroni); every value set this way remembers its variable, so a problem with it names the
//! variable instead of a line.

use std::collections::HashMap;

use crate::tree::{Node, Origin, Value};

/// Variable suffixes (after `PATRONI_` / `RAMPART_`) and the key paths they set.
const OVERRIDES: &[(&str, &[&str])] = &[
    ("NAME", &["name"]),
    ("SCOPE", &["scope"]),
    ("NAMESPACE", &["namespace"]),
    ("RESTAPI_LISTEN", &["restapi", "listen"]),
    ("RESTAPI_CONNECT_ADDRESS", &["restapi", "connect_address"]),
    ("RESTAPI_USERNAME", &["restapi", "authentication", "username"]),
    ("RESTAPI_PASSWORD", &["restapi", "authentication", "password"]),
    ("RESTAPI_CERTFILE", &["restapi", "certfile"]),
    ("RESTAPI_KEYFILE", &["restapi", "keyfile"]),
    ("RESTAPI_CAFILE", &["restapi", "cafile"]),
    ("RESTAPI_VERIFY_CLIENT", &["restapi", "verify_client"]),
    ("RESTAPI_ALLOWLIST", &["restapi", "allowlist"]),
    ("POSTGRESQL_LISTEN", &["postgresql", "listen"]),
    ("POSTGRESQL_CONNECT_ADDRESS", &["postgresql", "connect_address"]),
    ("POSTGRESQL_DATA_DIR", &["postgresql", "data_dir"]),
    ("POSTGRESQL_BIN_DIR", &["postgresql", "bin_dir"]),
    ("POSTGRESQL_PGPASS", &["postgresql", "pgpass"]),
    ("SUPERUSER_USERNAME", &["postgresql", "authentication", "superuser", "username"]),
    ("SUPERUSER_PASSWORD", &["postgresql", "authentication", "superuser", "password"]),
    ("REPLICATION_USERNAME", &["postgresql", "authentication", "replication", "username"]),
    ("REPLICATION_PASSWORD", &["postgresql", "authentication", "replication", "password"]),
    ("REWIND_USERNAME", &["postgresql", "authentication", "rewind", "username"]),
    ("REWIND_PASSWORD", &["postgresql", "authentication", "rewind", "password"]),
    ("ETCD3_HOST", &["etcd3", "host"]),
    ("ETCD3_HOSTS", &["etcd3", "hosts"]),
    ("ETCD3_PROTOCOL", &["etcd3", "protocol"]),
    ("ETCD3_USERNAME", &["etcd3", "username"]),
    ("ETCD3_PASSWORD", &["etcd3", "password"]),
    ("ETCD3_CACERT", &["etcd3", "cacert"]),
    ("ETCD3_CERT", &["etcd3", "cert"]),
    ("ETCD3_KEY", &["etcd3", "key"]),
    ("CTL_USERNAME", &["ctl", "authentication", "username"]),
    ("CTL_PASSWORD", &["ctl", "authentication", "password"]),
    ("CTL_INSECURE", &["ctl", "insecure"]),
    ("CTL_CACERT", &["ctl", "cacert"]),
    ("CTL_CERTFILE", &["ctl", "certfile"]),
    ("CTL_KEYFILE", &["ctl", "keyfile"]),
    ("CTL_KEYFILE_PASSWORD", &["ctl", "keyfile_password"]),
    // Patroni's older names first: when both are set the newer one, applied later, wins.
    ("LOGLEVEL", &["log", "level"]),
    ("LOGFORMAT", &["log", "format"]),
    ("LOG_DATEFMT", &["log", "dateformat"]),
    ("LOG_TYPE", &["log", "type"]),
    ("LOG_LEVEL", &["log", "level"]),
    ("LOG_TRACEBACK_LEVEL", &["log", "traceback_level"]),
    ("LOG_FORMAT", &["log", "format"]),
    ("LOG_DATEFORMAT", &["log", "dateformat"]),
    ("LOG_MAX_QUEUE_SIZE", &["log", "max_queue_size"]),
    ("LOG_DIR", &["log", "dir"]),
    ("LOG_MODE", &["log", "mode"]),
    ("LOG_FILE_SIZE", &["log", "file_size"]),
    ("LOG_FILE_NUM", &["log", "file_num"]),
    ("LOG_DEDUPLICATE_HEARTBEAT_LOGS", &["log", "deduplicate_heartbeat_logs"]),
];

/// Prefixes in order of precedence.
const PREFIXES: &[&str] = &["RAMPART_", "PATRONI_"];

/// Every variable name read from the environment.
pub(crate) fn variable_names() -> Vec<String> {
    PREFIXES.iter().flat_map(|p| OVERRIDES.iter().map(move |(suffix, _)| format!("{p}{suffix}"))).collect()
}

/// One override found in the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Override {
    pub var: String,
    pub path: &'static [&'static str],
    pub value: String,
}

/// The overrides found in an environment, at most one per key path.
#[derive(Clone, Debug, Default)]
pub(crate) struct Overrides(pub Vec<Override>);

impl Overrides {
    /// Picks the known variables out of `vars`.
    pub fn collect(vars: impl IntoIterator<Item = (String, String)>) -> Overrides {
        let vars: HashMap<String, String> =
            vars.into_iter().filter(|(k, _)| PREFIXES.iter().any(|p| k.starts_with(p))).collect();
        let mut found = Vec::new();
        for (suffix, path) in OVERRIDES {
            let hit = PREFIXES.iter().find_map(|prefix| {
                let var = format!("{prefix}{suffix}");
                vars.get(&var).filter(|v| !v.is_empty()).map(|v| (var, v.clone()))
            });
            if let Some((var, value)) = hit {
                found.push(Override { var, path, value });
            }
        }
        Overrides(found)
    }

    /// The password values among the overrides (for redaction).
    pub fn secrets(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|o| o.path.last().is_some_and(|k| k.ends_with("password")))
            .map(|o| o.value.clone())
            .collect()
    }

    /// Writes the overrides into `tree`.
    pub fn apply(&self, tree: &mut Node) {
        for o in &self.0 {
            let origin = Origin::Env(o.var.clone());
            let node = if matches!(o.path.last(), Some(&"hosts") | Some(&"allowlist")) {
                hosts_node(&o.value, origin)
            } else {
                Node::scalar(o.value.clone(), false, origin)
            };
            // When a section is not a mapping the file's type error is reported instead.
            tree.set(o.path, node);
        }
    }
}

/// `PATRONI_ETCD3_HOSTS` (and `PATRONI_RESTAPI_ALLOWLIST`) may be a comma-separated string or a
/// YAML-style list `['a:1','b:2']`.
fn hosts_node(value: &str, origin: Origin) -> Node {
    let trimmed = value.trim();
    match trimmed.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        Some(inner) => {
            let items = inner
                .split(',')
                .map(|s| s.trim().trim_matches(['\'', '"']).trim())
                .filter(|s| !s.is_empty())
                .map(|s| Node::scalar(s, false, origin.clone()))
                .collect();
            Node { origin, value: Value::Seq(items) }
        }
        None => Node::scalar(trimmed, false, origin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn rampart_wins_and_empty_is_ignored() {
        let o = Overrides::collect(vars(&[
            ("PATRONI_NAME", "p"),
            ("RAMPART_NAME", "r"),
            ("PATRONI_SCOPE", "s"),
            ("RAMPART_SCOPE", ""),
            ("PATRONI_UNKNOWN", "x"),
            ("HOME", "/root"),
        ]));
        let got: Vec<_> = o.0.iter().map(|o| (o.var.as_str(), o.value.as_str())).collect();
        assert_eq!(got, [("RAMPART_NAME", "r"), ("PATRONI_SCOPE", "s")]);
    }

    #[test]
    fn hosts_list_form() {
        let n = hosts_node("['a:1', \"b:2\"]", Origin::Env("V".into()));
        let Value::Seq(items) = n.value else { panic!() };
        assert_eq!(items.len(), 2);
        assert_eq!(items[1], Node::scalar("b:2", false, Origin::Env("V".into())));
    }
}
