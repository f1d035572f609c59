//! Running `rampart`'s operator verbs (patronictl's: `list`, `switchover`, `restart`, ...) the way
//! an operator does, against a configuration file, and reading what they print.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

/// `rampart <verb> -c <config> <rest...>` with stdin closed (not a terminal: nothing is asked).
pub fn ctl(config: &Path, args: &[&str]) -> Output {
    let (verb, rest) = args.split_first().expect("a verb");
    let mut all: Vec<std::ffi::OsString> = vec![verb.into(), "-c".into(), config.into()];
    all.extend(rest.iter().map(Into::into));
    super::rampart(all)
}

/// stdout of a command, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of a command, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Panics with the exit status and both streams unless the command succeeded; returns stdout.
/// Both streams are also printed (shown with the test's output when it fails).
pub fn expect_ok(what: &str, o: &Output) -> String {
    println!("--- {what}:\n{}{}", stdout(o), stderr(o));
    assert!(o.status.success(), "`{what}` failed ({})", o.status);
    stdout(o)
}

/// The rows of `rampart list -c <config> -f json`; `None` when the command failed or printed
/// something else than a JSON array.
pub fn list_rows(config: &Path) -> Option<Vec<Value>> {
    let o = ctl(config, &["list", "-f", "json"]);
    if !o.status.success() {
        return None;
    }
    match serde_json::from_slice::<Value>(&o.stdout) {
        Ok(Value::Array(rows)) => Some(rows),
        _ => None,
    }
}

/// The row of member `name` in [`list_rows`]' output.
pub fn row<'r>(rows: &'r [Value], name: &str) -> Option<&'r Value> {
    rows.iter().find(|r| r["Member"] == name)
}

/// Whether a row shows a pending restart (the column holds `*`; it is left out when empty).
pub fn pending_restart(row: &Value) -> bool {
    row.get("Pending restart").is_some_and(|p| p == "*")
}
