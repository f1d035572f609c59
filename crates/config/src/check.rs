//! The validation context: turns "this key is wrong" into a located [`Problem`] or warning.
//!
//! Invariant kept here: every problem and warning raised while validating is located through the
//! tree the values came from, so it names the line (or environment variable) of the key itself,
//! or of the nearest enclosing key that exists when the key is missing.

use crate::addr::HostPort;
use crate::error::Problem;
use crate::tree::{keys, Node, Origin, PathDisplay, Seg};

/// Validation context over the tree the raw configuration was read from.
pub(crate) struct Checker<'a> {
    tree: &'a Node,
    /// Warnings so far: where, and the full message.
    pub warnings: Vec<(Option<Origin>, String)>,
    /// Dotted paths of sections read straight from the tree (say, `postgresql.<method>`),
    /// which the schema does not know but which are not unknown keys either.
    pub claimed: Vec<String>,
}

impl<'a> Checker<'a> {
    pub fn new(tree: &'a Node) -> Self {
        Checker { tree, warnings: Vec::new(), claimed: Vec::new() }
    }

    /// The tree being checked.
    pub fn tree(&self) -> &'a Node {
        self.tree
    }

    /// A problem about the key at `path`.
    pub fn problem(&self, path: &[&str], message: impl Into<String>) -> Problem {
        self.problem_at(&keys(path), message)
    }

    /// A problem about the key or list item at `path`.
    pub fn problem_at(&self, path: &[Seg<'_>], message: impl Into<String>) -> Problem {
        Problem { origin: self.tree.locate(path), key: Some(PathDisplay(path).to_string()), message: message.into() }
    }

    /// A problem not about one key (located at `path` when given).
    pub fn problem_about(&self, path: &[&str], message: impl Into<String>) -> Problem {
        Problem { origin: self.tree.locate(&keys(path)), key: None, message: message.into() }
    }

    /// `value`, or "missing required key" at `path`.
    pub fn require<T>(&self, value: Option<T>, path: &[&str]) -> Result<T, Problem> {
        value.ok_or_else(|| self.problem(path, "missing required key"))
    }

    /// A required string that must not be empty.
    pub fn require_text(&self, value: Option<String>, path: &[&str]) -> Result<String, Problem> {
        let v = self.require(value, path)?;
        if v.trim().is_empty() {
            return Err(self.problem(path, "must not be empty"));
        }
        Ok(v)
    }

    /// Parses `host:port` for the key at `path`.
    pub fn host_port(&self, text: &str, path: &[&str]) -> Result<HostPort, Problem> {
        HostPort::parse(text).ok_or_else(|| self.problem(path, format!("expected host:port, got {text:?}")))
    }

    /// Records a warning about the key at `path`.
    pub fn warn(&mut self, path: &[&str], message: impl AsRef<str>) {
        let origin = self.tree.locate(&keys(path));
        self.warnings.push((origin, format!("{}: {}", path.join("."), message.as_ref())));
    }

    /// Records a warning not about one key (located at `path`).
    pub fn note(&mut self, path: &[&str], message: impl Into<String>) {
        let origin = self.tree.locate(&keys(path));
        self.warnings.push((origin, message.into()));
    }
}
