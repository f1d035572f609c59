//! The `bootstrap` section: what the node that initializes a new cluster uses.
//!
//! Invariants kept here: `bootstrap.dcs` passes [`DynamicConfig::validate`] (so the first dynamic
//! configuration written to the DCS can never break the `loop_wait + 2*retry_timeout <= ttl`
//! rule: `loop_wait` and `retry_timeout` are lowered to fit `ttl` as Patroni does, with a warning), and `initdb` options are turned into command-line arguments that never touch what
//! Rampart controls itself (the data directory, the password file, ...).

use std::collections::BTreeMap;

use rampart_core::DynamicConfig;
use serde_json::Value as Json;

use crate::check::Checker;
use crate::error::Problem;
use crate::raw::{RawBootstrap, RawUser};
use crate::secret::Secret;
use crate::tool_args::{method_arg, scalar_text, tool_args, Tool};

/// `bootstrap.initdb`; the options Rampart sets itself are refused, as Patroni refuses them.
const INITDB: Tool = Tool {
    path: &["bootstrap", "initdb"],
    name: "initdb",
    example: "(data-checksums) or a single-key map (encoding: UTF8)",
    reserved: &["pgdata", "D", "nosync", "N", "pwfile", "sync-only", "S", "version", "V"],
};

/// A user created right after initdb (legacy `bootstrap.users`; Patroni removed it in 4.0 but old
/// configuration files still carry it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapUser {
    /// Its password, if any.
    pub password: Option<Secret>,
    /// Role options such as `createdb`, `createrole`.
    pub options: Vec<String>,
}

/// A custom bootstrap method (`bootstrap.method: NAME` with a `bootstrap.NAME.command`), run
/// instead of initdb, as Patroni does (`patroni/postgresql/bootstrap.py`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootstrapMethod {
    /// The method's name (its section's key).
    pub name: String,
    /// The command line (run through `/bin/sh -c`, like callbacks).
    pub command: String,
    /// Arguments appended: `--scope=SCOPE --datadir=DATA_DIR` unless `no_params`, then
    /// `--KEY=VALUE` for every other key of the section.
    pub args_without_params: Vec<String>,
    /// `no_params`: do not pass `--scope` and `--datadir`.
    pub no_params: bool,
    /// `keep_existing_recovery_conf`: leave `recovery.signal`/`standby.signal` the command wrote.
    pub keep_existing_recovery_conf: bool,
    /// `recovery_conf`: recovery settings for the first start (with `recovery.signal`), e.g.
    /// `restore_command` and a `recovery_target_*`; the server promotes when recovery ends.
    pub recovery_conf: BTreeMap<String, String>,
}

/// Keys of a method section that are not passed to its command (Patroni's reserved ones).
const RESERVED_METHOD_KEYS: &[&str] =
    &["command", "no_params", "keep_existing_recovery_conf", "recovery_conf", "scope", "datadir"];

/// The `bootstrap` section, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bootstrap {
    /// Seed of the cluster-wide dynamic configuration.
    pub dcs: DynamicConfig,
    /// initdb arguments, e.g. `--encoding=UTF8`, `--data-checksums`.
    pub initdb: Vec<String>,
    /// pg_hba.conf lines written after initdb.
    pub pg_hba: Vec<String>,
    /// Users to create after initdb, by name.
    pub users: BTreeMap<String, BootstrapUser>,
    /// The custom method run instead of initdb; `None` for initdb.
    pub method: Option<BootstrapMethod>,
    /// `post_bootstrap` (or its older name `post_init`): a command run once the new cluster is
    /// up and its roles exist, given a connection string for the superuser; its failure fails
    /// the bootstrap, as in Patroni.
    pub post_bootstrap: Option<String>,
}

impl Bootstrap {
    pub(crate) fn build(raw: Option<RawBootstrap>, c: &mut Checker<'_>) -> Result<Bootstrap, Problem> {
        let raw = raw.unwrap_or_default();
        let dcs = dcs(raw.dcs, c)?;
        let initdb = tool_args(raw.initdb.unwrap_or(Json::Null), &INITDB, c)?;
        let users = raw.users.unwrap_or_default().into_iter().map(|(name, u)| (name, user(u))).collect();
        let method = method(raw.method, &raw.other, c)?;
        for key in raw.other.keys().filter(|k| method.as_ref().is_none_or(|m| &m.name != *k)) {
            c.warn(&["bootstrap", key], "not used (not the bootstrap.method in force)");
        }
        let post_bootstrap = raw.post_bootstrap.or(raw.post_init).filter(|c| !c.trim().is_empty());
        Ok(Bootstrap { dcs, initdb, pg_hba: raw.pg_hba.unwrap_or_default(), users, method, post_bootstrap })
    }
}

/// `bootstrap.method` and its section. As in Patroni, a method other than `initdb` whose section
/// has no `command` means initdb (with a warning here, as it is surely not what was meant).
fn method(
    name: Option<String>,
    sections: &BTreeMap<String, Json>,
    c: &mut Checker<'_>,
) -> Result<Option<BootstrapMethod>, Problem> {
    let Some(name) = name.filter(|n| !n.trim().is_empty() && n != "initdb") else { return Ok(None) };
    let Some(Json::Object(section)) = sections.get(&name) else {
        c.warn(
            &["bootstrap", "method"],
            format!("{name:?} has no bootstrap.{name} section with a command: initdb is used, as Patroni does"),
        );
        return Ok(None);
    };
    let command = match section.get("command") {
        Some(Json::String(cmd)) if !cmd.trim().is_empty() => cmd.clone(),
        None | Some(Json::Null) => {
            c.warn(&["bootstrap", &name], "has no command: initdb is used, as Patroni does");
            return Ok(None);
        }
        Some(_) => return Err(c.problem(&["bootstrap", &name, "command"], "expected a command line")),
    };
    let flag = |key: &str| -> Result<bool, Problem> {
        match section.get(key) {
            None | Some(Json::Null) => Ok(false),
            Some(Json::Bool(b)) => Ok(*b),
            Some(_) => Err(c.problem(&["bootstrap", &name, key], "expected true or false")),
        }
    };
    let (no_params, keep_existing_recovery_conf) = (flag("no_params")?, flag("keep_existing_recovery_conf")?);
    let recovery_conf = match section.get("recovery_conf") {
        None | Some(Json::Null) => BTreeMap::new(),
        Some(Json::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let text = scalar_text(v)
                    .ok_or_else(|| c.problem(&["bootstrap", &name, "recovery_conf", k], "expected a single value"))?;
                out.insert(k.clone(), text);
            }
            out
        }
        Some(_) => return Err(c.problem(&["bootstrap", &name, "recovery_conf"], "expected a mapping of settings")),
    };
    let mut args = Vec::new();
    for (k, v) in section.iter().filter(|(k, _)| !RESERVED_METHOD_KEYS.contains(&k.as_str())) {
        args.push(method_arg(k, v, &["bootstrap", &name, k], c)?);
    }
    Ok(Some(BootstrapMethod {
        name,
        command,
        args_without_params: args,
        no_params,
        keep_existing_recovery_conf,
        recovery_conf,
    }))
}

impl BootstrapMethod {
    /// The arguments of the command for this cluster: `--scope` and `--datadir` (unless
    /// `no_params`), then the section's other keys.
    pub fn args(&self, scope: &str, data_dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        if !self.no_params {
            out.push(format!("--scope={scope}"));
            out.push(format!("--datadir={}", data_dir.display()));
        }
        out.extend(self.args_without_params.iter().cloned());
        out
    }
}

/// `bootstrap.dcs` (defaults when absent), checked against the timing rule.
pub(crate) fn dcs(raw: Option<DynamicConfig>, c: &mut Checker<'_>) -> Result<DynamicConfig, Problem> {
    let mut dcs = raw.unwrap_or_default();
    // Lowered as Patroni does rather than refused, so that a Patroni file keeps working.
    if let Some(warning) = dcs.adjust_timeouts() {
        c.warn(&["bootstrap", "dcs", "ttl"], warning);
    }
    if let Err(e) = dcs.validate() {
        return Err(c.problem(&["bootstrap", "dcs", e.key], e.reason));
    }
    // Keys of the `postgresql` section written one level too high (seed 002 does so with
    // `parameters` and `recovery_conf`): Patroni ignores them there, silently; say so.
    for key in MISPLACED_POSTGRESQL_KEYS.iter().filter(|k| dcs.extra.contains_key(**k)) {
        c.warn(
            &["bootstrap", "dcs", key],
            format!("not read here (ignored, as Patroni ignores it): did you mean bootstrap.dcs.postgresql.{key}?"),
        );
    }
    Ok(dcs)
}

/// Keys of the dynamic `postgresql` section, which mean nothing directly under `bootstrap.dcs`.
const MISPLACED_POSTGRESQL_KEYS: &[&str] =
    &["parameters", "recovery_conf", "use_pg_rewind", "use_slots", "pg_hba", "pg_ident"];

fn user(raw: RawUser) -> BootstrapUser {
    BootstrapUser { password: raw.password, options: raw.options }
}
