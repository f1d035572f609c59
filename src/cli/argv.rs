//! patronictl's group options before the verb: `patronictl -c FILE list`, `--dcs-url URL`, `-k`.
//!
//! clap reads options per subcommand, and Rampart's verbs also take them after the verb (as it
//! always did). So before parsing, the options written between `rampart` and a cluster verb are
//! moved right after the verb, in their long spelling: after `query`, `-c` means `--command` and
//! `-d` means `--dbname`, as in patronictl, so the long forms are the only unambiguous ones.
//! Nothing else is touched: an unknown option before the verb is left for clap to refuse.

use std::ffi::OsString;

/// The verbs that take the cluster options ([`super::target::TargetArgs`]).
const CLUSTER_VERBS: &[&str] = &[
    "list",
    "topology",
    "switchover",
    "failover",
    "restart",
    "reload",
    "reinit",
    "pause",
    "resume",
    "edit-config",
    "show-config",
    "demote-cluster",
    "promote-cluster",
    "history",
    "dsn",
    "query",
    "flush",
    "remove",
    "version",
    "backup",
];

/// A group option: its spellings and its long form; `takes_value` for `-c FILE`, not for `-k`.
struct GroupOption {
    short: &'static str,
    longs: &'static [&'static str],
    long: &'static str,
    takes_value: bool,
}

const GROUP_OPTIONS: &[GroupOption] = &[
    GroupOption { short: "-c", longs: &["--config-file"], long: "--config-file", takes_value: true },
    GroupOption { short: "-d", longs: &["--dcs-url", "--dcs"], long: "--dcs", takes_value: true },
    GroupOption { short: "-k", longs: &["--insecure"], long: "--insecure", takes_value: false },
];

/// The command line with the group options written before a cluster verb moved after it.
/// `args[0]` is the program name.
pub fn hoist_group_options(args: Vec<OsString>) -> Vec<OsString> {
    let mut moved: Vec<OsString> = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let Some(word) = args[i].to_str() else { return args };
        let Some((option, inline)) = recognise(word) else { break };
        moved.push(option.long.into());
        if option.takes_value {
            match inline {
                Some(v) => moved.push(v.into()),
                None => match args.get(i + 1) {
                    Some(v) => {
                        moved.push(v.clone());
                        i += 1;
                    }
                    // `rampart -c` alone: let clap say what is missing.
                    None => return args,
                },
            }
        }
        i += 1;
    }
    if moved.is_empty() || !args.get(i).and_then(|v| v.to_str()).is_some_and(|v| CLUSTER_VERBS.contains(&v)) {
        return args;
    }
    let mut out: Vec<OsString> = Vec::with_capacity(args.len());
    out.push(args[0].clone());
    out.push(args[i].clone());
    out.extend(moved);
    out.extend(args[i + 1..].iter().cloned());
    out
}

/// A group option in `word` (`-c`, `-cFILE`, `--config-file`, `--config-file=FILE`, ...) and its
/// value when written in the same word.
fn recognise(word: &str) -> Option<(&'static GroupOption, Option<&str>)> {
    for o in GROUP_OPTIONS {
        if word == o.short || o.longs.contains(&word) {
            return Some((o, None));
        }
        if o.takes_value {
            if let Some(v) = word.strip_prefix(o.short).filter(|v| !v.is_empty() && !v.starts_with('-')) {
                return Some((o, Some(v.strip_prefix('=').unwrap_or(v))));
            }
            for l in o.longs {
                if let Some(v) = word.strip_prefix(l).and_then(|v| v.strip_prefix('=')) {
                    return Some((o, Some(v)));
                }
            }
        }
    }
    None
}

/// The words of `args` as text, for tests and messages.
#[cfg(test)]
fn words(args: &[OsString]) -> Vec<&str> {
    args.iter().map(|a| a.to_str().unwrap_or("?")).collect()
}

/// `OsString`s of literals, for tests.
#[cfg(test)]
fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_before_the_verb_move_after_it_in_long_form() {
        let out = hoist_group_options(os(&["rampart", "-c", "f.yml", "list", "batman", "-f", "json"]));
        assert_eq!(words(&out), ["rampart", "list", "--config-file", "f.yml", "batman", "-f", "json"]);
        let out =
            hoist_group_options(os(&["rampart", "--dcs-url=etcd3://h:1", "-k", "-cf.yml", "query", "-c", "SELECT 1"]));
        assert_eq!(
            words(&out),
            ["rampart", "query", "--dcs", "etcd3://h:1", "--insecure", "--config-file", "f.yml", "-c", "SELECT 1"],
            "after query, -c is the SQL command"
        );
        let out = hoist_group_options(os(&["rampart", "--config-file", "f.yml", "edit-config", "-p", "a=1"]));
        assert_eq!(words(&out), ["rampart", "edit-config", "--config-file", "f.yml", "-p", "a=1"]);
    }

    #[test]
    fn everything_else_is_left_to_clap() {
        for line in [
            &["rampart", "list", "-c", "f.yml"][..],
            &["rampart", "-c", "f.yml", "agent", "x.yml"],
            &["rampart", "-c"],
            &["rampart", "--scope", "pg", "list"],
            &["rampart", "agent", "f.yml"],
            &["rampart"],
        ] {
            assert_eq!(words(&hoist_group_options(os(line))), line, "{line:?}");
        }
    }
}
