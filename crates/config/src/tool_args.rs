//! Options for PostgreSQL's command-line tools written in the configuration (`bootstrap.initdb`,
//! `postgresql.basebackup`), turned into long-form arguments as Patroni does it: a list of flags
//! and single-key maps (`[data-checksums, {encoding: UTF8}]`), or one map.
//!
//! Invariant: an option that would fight with what Rampart passes to the tool itself (the data
//! directory, the connection, ...) is refused with the key's line, never silently dropped.

use serde_json::Value as Json;

use crate::check::Checker;
use crate::error::Problem;
use crate::tree::Seg;

/// One tool's options section.
pub(crate) struct Tool {
    /// Where the options are written, e.g. `["bootstrap", "initdb"]`.
    pub path: &'static [&'static str],
    /// The tool, for messages.
    pub name: &'static str,
    /// What an item looks like, for the message about a malformed one.
    pub example: &'static str,
    /// Options Rampart sets itself (long and short names, without dashes).
    pub reserved: &'static [&'static str],
}

/// Turns `[{encoding: UTF8}, data-checksums]` (or `{encoding: UTF8}`) into
/// `["--encoding=UTF8", "--data-checksums"]`.
pub(crate) fn tool_args(value: Json, tool: &Tool, c: &Checker<'_>) -> Result<Vec<String>, Problem> {
    let base: Vec<Seg<'_>> = tool.path.iter().map(|k| Seg::Key(k)).collect();
    let mut args = Vec::new();
    match value {
        Json::Null => {}
        Json::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                let path: Vec<Seg<'_>> = base.iter().copied().chain([Seg::Index(i)]).collect();
                let arg = match item {
                    Json::String(flag) => flag_arg(&flag),
                    Json::Object(map) if map.len() == 1 => {
                        let (k, v) = map.into_iter().next().expect("one entry");
                        scalar_text(&v).map(|v| option_arg(&k, &v))
                    }
                    _ => None,
                };
                let arg = arg.ok_or_else(|| c.problem_at(&path, format!("expected a flag {}", tool.example)))?;
                args.push(checked(arg, &path, tool, c)?);
            }
        }
        Json::Object(map) => {
            for (k, v) in map {
                let path: Vec<Seg<'_>> = base.iter().copied().chain([Seg::Key(&k)]).collect();
                let text = scalar_text(&v).ok_or_else(|| c.problem_at(&path, "expected a single value"))?;
                args.push(checked(option_arg(&k, &text), &path, tool, c)?);
            }
        }
        _ => return Err(c.problem_at(&base, format!("expected a list of {} options", tool.name))),
    }
    Ok(args)
}

fn flag_arg(flag: &str) -> Option<String> {
    let f = flag.trim().trim_start_matches('-');
    (!f.is_empty() && !f.contains(char::is_whitespace)).then(|| format!("--{f}"))
}

fn option_arg(key: &str, value: &str) -> String {
    format!("--{}={}", key.trim().trim_start_matches('-'), unquote(value))
}

/// Patroni strips one level of quotes, so `"bar baz"` reaches the tool as `bar baz`.
fn unquote(v: &str) -> &str {
    let t = v.trim();
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return &t[1..t.len() - 1];
        }
    }
    v
}

/// A scalar's text: strings as they are, numbers and booleans as written.
pub(crate) fn scalar_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A script method's `--key=value` argument for one key of its section (custom bootstrap and
/// replica methods): the value as Python's `str()` prints it, as Patroni formats it; a list or
/// a mapping is refused at `path`.
pub(crate) fn method_arg(key: &str, value: &Json, path: &[&str], c: &Checker<'_>) -> Result<String, Problem> {
    let text = match value {
        Json::Bool(true) => "True".to_string(),
        Json::Bool(false) => "False".to_string(),
        Json::Null => "None".to_string(),
        other => {
            scalar_text(other).ok_or_else(|| c.problem(path, "expected a single value (passed as --key=value)"))?
        }
    };
    Ok(format!("--{key}={text}"))
}

/// Refuses options that would fight with what Rampart passes to the tool itself.
fn checked(arg: String, path: &[Seg<'_>], tool: &Tool, c: &Checker<'_>) -> Result<String, Problem> {
    let name = arg.trim_start_matches('-').split('=').next().unwrap_or_default();
    if tool.reserved.contains(&name) {
        return Err(
            c.problem_at(path, format!("{} option {name} is set by Rampart and cannot be given here", tool.name))
        );
    }
    Ok(arg)
}
