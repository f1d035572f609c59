//! The one error type of this crate, and how a problem is located.
//!
//! Invariant kept here: a refused configuration is described in ONE line that names where to look
//! (`file:line`, just `file` when the line is unknown, or the environment variable that supplied
//! the value), the key path, and what is wrong; and that line never contains a password (messages
//! pass through `redact` before they leave the crate).

use std::fmt;

use crate::tree::Origin;

/// Where a problem is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// In the configuration file; at `line` (1-based) when known.
    File {
        /// The file as it was named to [`crate::load`] or [`crate::parse`].
        file: String,
        /// The line, when known.
        line: Option<usize>,
    },
    /// In an environment variable (`PATRONI_*` or `RAMPART_*`).
    Env {
        /// The variable's name.
        var: String,
    },
}

impl Place {
    pub(crate) fn new(file: &str, origin: Option<&Origin>) -> Place {
        match origin {
            Some(Origin::Line(l)) => Place::File { file: file.to_string(), line: Some(*l) },
            Some(Origin::Env(var)) => Place::Env { var: var.clone() },
            None => Place::File { file: file.to_string(), line: None },
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::File { file, line: Some(l) } => write!(f, "{file}:{l}"),
            Place::File { file, line: None } => f.write_str(file),
            Place::Env { var } => write!(f, "environment variable {var}"),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration file: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML, or the configuration cannot work.
    #[error("{place}: {}{message}", key_prefix(.key))]
    Invalid {
        /// Where to look.
        place: Place,
        /// Dotted key path (`postgresql.data_dir`), when the problem is about one key.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default()
}

impl ConfigError {
    /// The line of the file the problem is on, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { place: Place::File { line, .. }, .. } => *line,
            _ => None,
        }
    }

    /// The key path the problem is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => key.as_deref(),
            ConfigError::Read { .. } => None,
        }
    }
}

/// A problem found before the file name is attached.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Problem {
    pub origin: Option<Origin>,
    pub key: Option<String>,
    pub message: String,
}

impl Problem {
    pub(crate) fn into_error(self, file: &str, secrets: &[String]) -> ConfigError {
        ConfigError::Invalid {
            place: Place::new(file, self.origin.as_ref()),
            key: self.key,
            message: redact(&self.message, secrets),
        }
    }
}

/// Replaces every occurrence of a known password in `text` with `***`. Passwords shorter than
/// three characters are not searched for (they would match all over the text; they are also never
/// echoed by this crate's own messages).
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    let mut by_length: Vec<&String> = secrets.iter().filter(|s| s.chars().count() >= 3).collect();
    by_length.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in by_length {
        out = out.replace(s.as_str(), "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_place_key_and_message() {
        let e = Problem {
            origin: Some(Origin::Line(12)),
            key: Some("postgresql.data_dir".into()),
            message: "missing required key".into(),
        }
        .into_error("node1.yml", &[]);
        assert_eq!(e.to_string(), "node1.yml:12: postgresql.data_dir: missing required key");
        assert_eq!(e.line(), Some(12));
        assert_eq!(e.key(), Some("postgresql.data_dir"));

        let e = Problem { origin: Some(Origin::Env("PATRONI_NAME".into())), key: None, message: "bad".into() }
            .into_error("node1.yml", &[]);
        assert_eq!(e.to_string(), "environment variable PATRONI_NAME: bad");
        assert_eq!(e.line(), None);

        let e = Problem { origin: None, key: Some("name".into()), message: "missing required key".into() }
            .into_error("n.yml", &[]);
        assert_eq!(e.to_string(), "n.yml: name: missing required key");
    }

    #[test]
    fn passwords_are_redacted() {
        let secrets = vec!["hunter2".to_string(), "ab".to_string()];
        assert_eq!(redact("got \"hunter2\" about ab", &secrets), "got \"***\" about ab");
    }
}
