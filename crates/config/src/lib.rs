//! # rampart-config: Patroni-format YAML configuration
//!
//! Reads the same configuration file Patroni reads (with its `PATRONI_*` environment overrides),
//! and hands the agent a validated [`Config`] plus a list of warnings.
//!
//! The pipeline, one module per step:
//! 1. `yaml`: YAML text to a tree of nodes that remember their line;
//! 2. `env`: `RAMPART_*` / `PATRONI_*` overrides grafted onto that tree;
//! 3. `de`: the tree deserialized into the raw schema (`raw`), reporting unknown keys;
//! 4. [`config`] and the section modules ([`restapi`], [`etcd`], [`bootstrap`], [`postgresql`],
//!    [`ctl`], [`log`]): required keys, defaults, address parsing and the timing rule, via `check`.
//!
//! [`load_ctl`] runs the same pipeline for operator commands, which need far less of the file
//! (see [`CtlConfig`]), and [`load_proxy`] for `rampart proxy` (see [`ProxyConfig`]);
//! [`yaml_to_json`] and [`yaml_scalar`] read YAML an operator types or edits with the same
//! typing rules.
//!
//! Invariants kept by the crate as a whole:
//! * a [`Config`] is only produced once it is valid: anything that cannot work is refused with one line that
//!   names the file and line (or the environment variable), the key path and the problem;
//! * no password is ever printed: passwords live in [`Secret`], and error messages are scrubbed of
//!   every password value the file or the environment contained;
//! * nothing is silently dropped: unknown keys are reported as warnings with their line.
//!
//! Other modules: `tree` (the located node tree), [`addr`] (host:port forms), [`secret`]
//! (passwords), [`error`] (the error type).

#![deny(missing_docs)]

pub mod addr;
pub mod bootstrap;
mod check;
pub mod config;
pub mod ctl;
mod de;
mod env;
pub mod error;
pub mod etcd;
pub mod log;
pub mod postgresql;
pub mod proxy;
pub mod proxy_config;
pub mod proxy_pool;
pub mod proxy_reload;
pub mod proxy_split;
mod raw;
pub mod replica_methods;
pub mod restapi;
pub mod secret;
mod tool_args;
mod tree;
pub mod vip;
pub mod watchdog;
mod yaml;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use addr::{HostPort, ListenAddresses};
pub use bootstrap::{Bootstrap, BootstrapMethod, BootstrapUser};
pub use config::{Config, OtherSections};
pub use ctl::{Ctl, CtlConfig};
pub use error::{ConfigError, Place};
pub use etcd::{Etcd3, Protocol};
pub use log::{LogConfig, LogLevel, LogType};
pub use postgresql::{PgAuthentication, PgRole, Postgresql};
pub use proxy::{Proxy, RoPolicy};
pub use proxy_config::ProxyConfig;
pub use proxy_pool::{AuthType, DatabasePool, PoolMode, PoolSettings, Pooling};
pub use proxy_reload::ReloadPlan;
pub use replica_methods::{CustomReplicaMethod, ReplicaCreation, ReplicaMethod};
pub use restapi::{ClientCertMode, RestApi};
pub use secret::{Credentials, Secret};
pub use vip::Vip;
pub use watchdog::{Watchdog, WatchdogMode};

use crate::check::Checker;
use crate::error::Problem;
use crate::raw::RawConfig;
use crate::tree::Origin;

/// A validated configuration (by default a member's, [`Config`]) and the warnings met while
/// reading it.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded<T = Config> {
    /// The configuration.
    pub config: T,
    /// One line each, e.g. `node1.yml:7: unknown key restapi.foo (ignored)`.
    pub warnings: Vec<String>,
}

/// A configuration read for operator commands, and the warnings met while reading it.
pub type LoadedCtl = Loaded<CtlConfig>;

/// A configuration read for `rampart proxy`, and the warnings met while reading it.
pub type LoadedProxy = Loaded<ProxyConfig>;

/// Reads and validates the configuration file at `path`, with overrides from the process
/// environment.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let (text, file) = file_text(path)?;
    parse(&text, &file, process_env())
}

/// Parses and validates configuration `text`; `origin` names it in messages (usually the file
/// name) and `env` supplies the environment overrides.
pub fn parse(text: &str, origin: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
    read(text, origin, env, Config::build)
}

/// Reads the configuration file at `path` for an operator command (with overrides from the
/// process environment). Unlike [`load`] it requires no key at all; see [`CtlConfig`].
pub fn load_ctl(path: &Path) -> Result<LoadedCtl, ConfigError> {
    let (text, file) = file_text(path)?;
    parse_ctl(&text, &file, process_env())
}

/// [`load_ctl`] on configuration `text`.
pub fn parse_ctl(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<LoadedCtl, ConfigError> {
    read(text, origin, env, CtlConfig::build)
}

/// Reads the configuration file at `path` for `rampart proxy` (with overrides from the process
/// environment): `scope`, `etcd3` and `proxy` are required, a member's sections are not; see
/// [`ProxyConfig`].
pub fn load_proxy(path: &Path) -> Result<LoadedProxy, ConfigError> {
    let (text, file) = file_text(path)?;
    parse_proxy(&text, &file, process_env())
}

/// [`load_proxy`] on configuration `text`.
pub fn parse_proxy(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<LoadedProxy, ConfigError> {
    read(text, origin, env, ProxyConfig::build)
}

/// Reads YAML an operator wrote (an edited configuration, a `--set` value) into JSON, typing
/// plain scalars as Patroni does (`on` is true, `010` stays a string, see [`yaml_scalar`]).
/// An empty document is null. `origin` names the text in the error.
pub fn yaml_to_json(text: &str, origin: &str) -> Result<serde_json::Value, ConfigError> {
    let invalid = |line: Option<usize>, message: String| {
        Problem { origin: line.map(Origin::Line), key: None, message: format!("invalid YAML: {message}") }
            .into_error(origin, &passwords_in_text(text))
    };
    let Some(node) = yaml::parse_value(text).map_err(|e| invalid(e.line, e.message))? else {
        return Ok(serde_json::Value::Null);
    };
    let (value, _) = de::from_node::<serde_json::Value>(&node).map_err(|e| invalid(None, e.to_string()))?;
    Ok(value)
}

/// How an unquoted YAML scalar is typed: null (`~`, `null`, nothing), YAML 1.1 booleans (`on`,
/// `yes`, ...), integers, floats, otherwise the text itself. Lets a YAML writer tell which
/// strings must be quoted to read back as strings.
pub fn yaml_scalar(text: &str) -> serde_json::Value {
    use serde_json::Value as J;
    match yaml::resolve(text) {
        yaml::Resolved::Null => J::Null,
        yaml::Resolved::Bool(b) => J::Bool(b),
        yaml::Resolved::Int(n) => J::from(n),
        yaml::Resolved::UInt(n) => J::from(n),
        yaml::Resolved::Float(f) => serde_json::Number::from_f64(f).map(J::Number).unwrap_or(J::String(text.into())),
        yaml::Resolved::Str(s) => J::String(s.to_string()),
    }
}

/// The text of the configuration file at `path`, and its name for messages.
fn file_text(path: &Path) -> Result<(String, String), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    Ok((text, file))
}

/// The process environment, for overrides (variables that are not UTF-8 cannot be overrides).
fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// The shared pipeline: YAML, environment overrides, the raw schema, then `build`.
fn read<T>(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
    build: impl FnOnce(RawConfig, &mut Checker<'_>) -> Result<T, Problem>,
) -> Result<Loaded<T>, ConfigError> {
    let overrides = env::Overrides::collect(env);
    let mut secrets = overrides.secrets();
    let parsed = match yaml::parse(text) {
        Ok(p) => p,
        Err(e) => {
            secrets.extend(passwords_in_text(text));
            let problem = Problem {
                origin: e.line.map(Origin::Line),
                key: None,
                message: format!("invalid YAML: {}", e.message),
            };
            return Err(problem.into_error(origin, &secrets));
        }
    };
    let mut tree = parsed.root;
    overrides.apply(&mut tree);
    tree.passwords(&mut secrets);

    let (raw, unknown): (RawConfig, _) = de::from_node(&tree)
        .map_err(|e| Problem { origin: e.origin, key: e.path, message: e.message }.into_error(origin, &secrets))?;
    // Dynamic configuration, read from bootstrap.dcs and the DCS only (as Patroni reads it);
    // ignored here it would turn the intended standby leader into an independent primary.
    if let Some(u) = unknown.iter().find(|u| u.path == "standby_cluster") {
        let message = "standby_cluster is dynamic configuration: put it under bootstrap.dcs for a new cluster, or \
                       write it into a running one with `rampart demote-cluster` or `edit-config`"
            .to_string();
        let problem = Problem { origin: Some(u.origin.clone()), key: Some(u.path.clone()), message };
        return Err(problem.into_error(origin, &secrets));
    }
    let mut checker = Checker::new(&tree);
    let config = build(raw, &mut checker).map_err(|p| p.into_error(origin, &secrets))?;

    let mut notes: Vec<(Option<Origin>, String)> = parsed.notes.into_iter().map(|(o, m)| (Some(o), m)).collect();
    let unknown = unknown.into_iter().filter(|u| !checker.claimed.contains(&u.path));
    notes.extend(unknown.map(|u| (Some(u.origin), format!("unknown key {} (ignored)", u.path))));
    notes.extend(checker.warnings);
    notes.sort_by_key(|(o, _)| match o {
        Some(Origin::Line(l)) => (0, *l),
        _ => (1, 0),
    });
    let warnings = notes
        .into_iter()
        .map(|(o, m)| format!("{}: {}", Place::new(origin, o.as_ref()), error::redact(&m, &secrets)))
        .collect();
    Ok(Loaded { config, warnings })
}

/// Names of every environment variable this crate reads (`PATRONI_*` and `RAMPART_*`), so the
/// agent can keep them out of the environment of the processes it starts, as Patroni does.
pub fn override_variables() -> Vec<String> {
    env::variable_names()
}

/// Values written after `password:` in `text`, for scrubbing messages when the YAML cannot be
/// parsed into a tree.
fn passwords_in_text(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        // Also catches `keyfile_password:`.
        let Some(i) = line.find("password:") else { continue };
        let rest = line[i + "password:".len()..].trim();
        let rest = rest.split(" #").next().unwrap_or_default();
        let rest = if line.contains('{') { rest.split([',', '}']).next().unwrap_or_default() } else { rest };
        let rest = rest.trim().trim_matches(['\'', '"']);
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}
