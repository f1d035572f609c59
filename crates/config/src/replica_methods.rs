//! How a replica's data directory is made: `postgresql.create_replica_methods` (tried in order),
//! the sections they name (`postgresql.<method>`), and `postgresql.basebackup`'s options, read
//! as Patroni reads them (`patroni/postgresql/bootstrap.py`, `create_replica`).
//!
//! `basebackup` is the built-in pg_basebackup; any other name is a command (the section's
//! `command`, else the name itself) run with `--scope`, `--role=replica`, `--datadir` and
//! `--connstring` plus the section's other keys as `--key=value` (only those with `no_params`).
//! A method with `no_leader` can make a replica with no leader to copy from (say, from a backup);
//! `keep_data` leaves the data directory as it is before and after the command.
//! Invariant: the list is never empty (Patroni's default is `[basebackup]`), and every custom
//! method has a command.

use serde_json::Value as Json;

use crate::check::Checker;
use crate::error::Problem;
use crate::tool_args::{method_arg, tool_args, Tool};

/// One way to make a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaMethod {
    /// pg_basebackup from the leader (or a `clonefrom` member).
    Basebackup,
    /// A command of the operator's (a backup tool's restore, say).
    Custom(CustomReplicaMethod),
}

/// A custom replica creation method.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomReplicaMethod {
    /// The method's name (its entry in `create_replica_methods`).
    pub name: String,
    /// The command line (run through `/bin/sh -c`, like callbacks and custom bootstrap).
    pub command: String,
    /// `no_leader`: works without a member to copy from.
    pub no_leader: bool,
    /// `keep_data`: do not empty the data directory before the command or after its failure.
    pub keep_data: bool,
    /// `no_params`: pass only the section's own keys, not `--scope`, `--role`, ... .
    pub no_params: bool,
    /// The section's other keys as `--key=value`, by name (with `no_params` off,
    /// `no_leader` and `keep_data` are among them, as Patroni passes them).
    pub own_args: Vec<String>,
}

impl CustomReplicaMethod {
    /// The command's arguments for a replica of `scope` in `data_dir`, copying from
    /// `connstring` (empty without a source), in Patroni's order.
    pub fn args(&self, scope: &str, data_dir: &std::path::Path, connstring: &str) -> Vec<String> {
        let mut out = self.own_args.clone();
        if !self.no_params {
            out.push(format!("--scope={scope}"));
            out.push("--role=replica".to_string());
            out.push(format!("--datadir={}", data_dir.display()));
            out.push(format!("--connstring={connstring}"));
        }
        out
    }
}

/// `create_replica_methods` and `basebackup`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaCreation {
    /// The methods, in the order they are tried; never empty.
    pub methods: Vec<ReplicaMethod>,
    /// `postgresql.basebackup` as pg_basebackup arguments (e.g. `--max-rate=100M`).
    pub basebackup_args: Vec<String>,
}

impl Default for ReplicaCreation {
    fn default() -> Self {
        ReplicaCreation { methods: vec![ReplicaMethod::Basebackup], basebackup_args: Vec::new() }
    }
}

impl ReplicaCreation {
    /// Whether some method can make a replica with no member to copy from (Patroni's
    /// `can_create_replica_without_replication_connection`).
    pub fn works_without_leader(&self) -> bool {
        self.methods.iter().any(|m| matches!(m, ReplicaMethod::Custom(c) if c.no_leader))
    }

    /// The methods to try: all of them with a member to copy from, else those with `no_leader`.
    pub fn to_try(&self, have_source: bool) -> Vec<&ReplicaMethod> {
        self.methods.iter().filter(|m| have_source || matches!(m, ReplicaMethod::Custom(c) if c.no_leader)).collect()
    }
}

/// pg_basebackup's options that Rampart sets itself (Patroni refuses the same).
const BASEBACKUP: Tool = Tool {
    path: &["postgresql", "basebackup"],
    name: "basebackup",
    example: "(verbose) or a single-key map (max-rate: 100M)",
    reserved: &[
        "pgdata",
        "D",
        "format",
        "F",
        "wal-method",
        "X",
        "xlog-method",
        "gzip",
        "z",
        "version",
        "V",
        "dbname",
        "d",
        "host",
        "h",
        "port",
        "p",
        "username",
        "U",
        "password",
        "W",
        "no-password",
        "w",
    ],
};

/// Keys of a method section that are not passed with `no_params`.
const NO_PARAMS_RESERVED: &[&str] = &["no_params", "no_leader", "keep_data"];

/// Reads `create_replica_methods` (or the older `create_replica_method`), the sections they
/// name, and `basebackup`. Returns the names of the sections read, which are not unknown keys.
pub(crate) fn build(
    names: Option<Json>,
    legacy_names: Option<Json>,
    basebackup: Option<Json>,
    c: &mut Checker<'_>,
) -> Result<(ReplicaCreation, Vec<String>), Problem> {
    let basebackup_args = tool_args(basebackup.unwrap_or(Json::Null), &BASEBACKUP, c)?;
    for arg in &basebackup_args {
        // Client-side compression would make pg_basebackup write a tar file, not a data directory.
        if let Some(how) = arg.strip_prefix("--compress=").filter(|h| !h.starts_with("server")) {
            return Err(c.problem(
                &["postgresql", "basebackup"],
                format!(
                    "compress={how}: only server-side compression (server-gzip, server-zstd, ...) can be \
                     used, as the replica needs a plain data directory"
                ),
            ));
        }
    }
    let (key, names) = match (names, legacy_names) {
        (Some(n), _) if !n.is_null() => ("create_replica_methods", n),
        (_, Some(n)) if !n.is_null() => ("create_replica_method", n),
        _ => return Ok((ReplicaCreation { basebackup_args, ..Default::default() }, Vec::new())),
    };
    let names: Vec<String> = match names {
        Json::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Json::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                _ => Err(c.problem(&["postgresql", key], "expected a list of method names")),
            })
            .collect::<Result<_, _>>()?,
        Json::String(s) if !s.trim().is_empty() => vec![s.trim().to_string()],
        _ => return Err(c.problem(&["postgresql", key], "expected a list of method names")),
    };
    if names.is_empty() {
        return Ok((ReplicaCreation { basebackup_args, ..Default::default() }, Vec::new()));
    }
    let mut methods = Vec::new();
    let mut sections = Vec::new();
    for name in names {
        if name == "basebackup" {
            methods.push(ReplicaMethod::Basebackup);
            continue;
        }
        let section = section(&name, c)?;
        if section.is_some() {
            sections.push(name.clone());
        }
        methods.push(ReplicaMethod::Custom(custom(name, section, c)?));
    }
    Ok((ReplicaCreation { methods, basebackup_args }, sections))
}

/// `postgresql.<name>` as written, if present.
fn section(name: &str, c: &Checker<'_>) -> Result<Option<serde_json::Map<String, Json>>, Problem> {
    let Some(node) = c.tree().get("postgresql").and_then(|p| p.get(name)) else { return Ok(None) };
    let (value, _): (Json, _) = crate::de::from_node(node).map_err(|e| Problem {
        origin: e.origin,
        key: e.path.map(|p| format!("postgresql.{name}.{p}")),
        message: e.message,
    })?;
    match value {
        Json::Null => Ok(None),
        Json::Object(m) => Ok(Some(m)),
        _ => Err(c.problem(&["postgresql", name], "expected a mapping (command, no_leader, keep_data, ...)")),
    }
}

fn custom(
    name: String,
    section: Option<serde_json::Map<String, Json>>,
    c: &Checker<'_>,
) -> Result<CustomReplicaMethod, Problem> {
    let section = section.unwrap_or_default();
    // Without a command, Patroni runs the method's name.
    let command = match section.get("command") {
        None | Some(Json::Null) => name.clone(),
        Some(Json::String(cmd)) if !cmd.trim().is_empty() => cmd.clone(),
        Some(_) => return Err(c.problem(&["postgresql", &name, "command"], "expected a command line")),
    };
    let flag = |key: &str| -> Result<bool, Problem> {
        match section.get(key) {
            None | Some(Json::Null) => Ok(false),
            Some(Json::Bool(b)) => Ok(*b),
            // Patroni tests these for truth: `no_leader: '1'` is common.
            Some(Json::String(s)) => Ok(!s.is_empty()),
            Some(Json::Number(n)) => Ok(n.as_f64() != Some(0.0)),
            Some(_) => Err(c.problem(&["postgresql", &name, key], "expected true or false")),
        }
    };
    let (no_leader, keep_data, no_params) = (flag("no_leader")?, flag("keep_data")?, flag("no_params")?);
    let mut own_args = Vec::new();
    for (k, v) in section.iter().filter(|(k, _)| k.as_str() != "command") {
        if no_params && NO_PARAMS_RESERVED.contains(&k.as_str()) {
            continue;
        }
        own_args.push(method_arg(k, v, &["postgresql", &name, k], c)?);
    }
    Ok(CustomReplicaMethod { name, command, no_leader, keep_data, no_params, own_args })
}
