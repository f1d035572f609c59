//! # rampart-config: Patroni-format YAML configuration
//!
//! Reads the same configuration file Patroni reads (with its `PATRONI_*` environment overrides),
//! and hands the agent a validated [`Config`] plus a list of warnings.
//!
//! The pipeline, one module per step:
//! 1. `yaml`: YAML text to a tree of nodes that remember their line;
//! 2. `env`: `RAMPART_*` / `PATRONI_*` overrides grafted onto that tree;
//! 3. `de`: the tree deserialized into the raw schema (`raw`), reporting unknown keys;
//! 4. [`config`] and the section modules ([`restapi`], [`etcd`], [`bootstrap`], [`postgresql`]):
//!    required keys, defaults, address parsing and the timing rule, via `check`.
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
mod de;
mod env;
pub mod error;
pub mod etcd;
pub mod postgresql;
mod raw;
pub mod restapi;
pub mod secret;
mod tree;
mod yaml;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use addr::{HostPort, ListenAddresses};
pub use bootstrap::{Bootstrap, BootstrapUser};
pub use config::{Config, OtherSections};
pub use error::{ConfigError, Place};
pub use etcd::{Etcd3, Protocol};
pub use postgresql::{PgAuthentication, Postgresql};
pub use restapi::{ClientCertMode, RestApi};
pub use secret::{Credentials, Secret};

use crate::check::Checker;
use crate::error::Problem;
use crate::raw::RawConfig;
use crate::tree::Origin;

/// A validated configuration and the warnings met while reading it.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// One line each, e.g. `node1.yml:7: unknown key restapi.foo (ignored)`.
    pub warnings: Vec<String>,
}

/// Reads and validates the configuration file at `path`, with overrides from the process
/// environment.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    let vars = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    parse(&text, &file, vars)
}

/// Parses and validates configuration `text`; `origin` names it in messages (usually the file
/// name) and `env` supplies the environment overrides.
pub fn parse(text: &str, origin: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
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
    let mut checker = Checker::new(&tree);
    let config = Config::build(raw, &mut checker).map_err(|p| p.into_error(origin, &secrets))?;

    let mut notes: Vec<(Option<Origin>, String)> = parsed.notes.into_iter().map(|(o, m)| (Some(o), m)).collect();
    notes.extend(unknown.into_iter().map(|u| (Some(u.origin), format!("unknown key {} (ignored)", u.path))));
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
