//! Story: an operator hands Rampart a configuration that cannot work. Whether they ask
//! `rampart check-config` first or go straight to `rampart agent`, the answer is the same: a
//! non-zero exit and ONE line on stderr saying where to look (the file and line, or the
//! environment variable), which key, and what is wrong, without echoing any password. And
//! nothing has been touched: no data directory, no pgpass, not a single key in etcd.
//!
//! A configuration that is fine except for keys Rampart does not know only draws warnings. An etcd
//! that is not there yet is not a configuration error: the agent waits for it, says what it cannot
//! reach, and bootstraps as soon as it appears. Finally, `--version` and `--help` answer
//! everywhere an operator would try them.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::{Etcd, NodeConfig, TestDir};

/// Longest a refusing `rampart agent` may take to exit (generous: the machine is shared).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Passwords every harness configuration carries; no message may contain them.
const PASSWORDS: [&str; 2] = [support::SUPERUSER_PASSWORD, support::REPLICATION_PASSWORD];

/// Where the error line must point.
enum Place {
    /// The file, at one of these lines (empty: the file without a line, the key is absent).
    File(Vec<usize>),
    /// The environment variable that supplied the bad value.
    Env(&'static str),
}

/// One broken configuration and what its error line must say.
struct Case {
    what: &'static str,
    yaml: String,
    env: Vec<(&'static str, &'static str)>,
    place: Place,
    /// Dotted key path the error is about; `None` when there is none (invalid YAML).
    key: Option<&'static str>,
    /// Words the message after the key must contain (case-insensitive).
    says: Vec<&'static str>,
}

/// 1-based number of the first line of `text` that starts with `prefix` (indentation included).
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(prefix))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

/// `text` with the first line starting with `prefix` replaced by `with` (several lines allowed,
/// or none to delete it).
fn replace_line(text: &str, prefix: &str, with: &[&str]) -> String {
    let n = line_of(text, prefix);
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if i + 1 == n {
            out.extend(with.iter().map(|s| s.to_string()));
        } else {
            out.push(l.to_string());
        }
    }
    out.join("\n") + "\n"
}

fn cases(good: &str) -> Vec<Case> {
    let mut v = Vec::new();

    // An unclosed flow mapping, holding the superuser's password. The parser notices on the line
    // after the one that opened it; either line is a fair place to send the operator.
    let yaml = replace_line(
        good,
        "    superuser:",
        &[&format!("    superuser: {{username: {}, password: '{}'", support::SUPERUSER, support::SUPERUSER_PASSWORD)],
    );
    let yaml = replace_line(&yaml, "      username: postgres", &[]);
    let yaml = replace_line(&yaml, &format!("      password: '{}'", support::SUPERUSER_PASSWORD), &[]);
    let opened = line_of(&yaml, "    superuser:");
    v.push(Case {
        what: "malformed YAML (unclosed brace)",
        yaml,
        env: vec![],
        place: Place::File(vec![opened, opened + 1]),
        key: None,
        says: vec!["YAML"],
    });

    let yaml = replace_line(good, "    ttl:", &["    ttl: \"abc\""]);
    v.push(Case {
        what: "wrong type: ttl is a string",
        place: Place::File(vec![line_of(&yaml, "    ttl:")]),
        yaml,
        env: vec![],
        key: Some("bootstrap.dcs.ttl"),
        says: vec!["abc"],
    });

    let yaml = replace_line(good, "  listen: 127.0.0.1:", &["  listen: 8008"]);
    v.push(Case {
        what: "wrong type: restapi.listen is a bare port",
        place: Place::File(vec![line_of(&yaml, "  listen: 8008")]),
        yaml,
        env: vec![],
        key: Some("restapi.listen"),
        says: vec!["8008"],
    });

    // A bad value that happens to be a password must not be echoed back.
    let yaml = replace_line(good, "  listen: 127.0.0.1:", &[&format!("  listen: '{}'", support::SUPERUSER_PASSWORD)]);
    v.push(Case {
        what: "restapi.listen set to the superuser's password",
        place: Place::File(vec![line_of(&yaml, "  listen: '")]),
        yaml,
        env: vec![],
        key: Some("restapi.listen"),
        says: vec![],
    });

    let yaml = replace_line(good, "  data_dir:", &[]);
    v.push(Case {
        what: "missing postgresql.data_dir",
        // The key is absent, so the place is its section (or just the file).
        place: Place::File(vec![line_of(&yaml, "postgresql:")]),
        yaml,
        env: vec![],
        key: Some("postgresql.data_dir"),
        says: vec!["missing"],
    });

    let yaml = replace_line(good, "name:", &[]);
    v.push(Case {
        what: "missing name",
        yaml,
        env: vec![],
        place: Place::File(vec![]),
        key: Some("name"),
        says: vec!["missing"],
    });

    // ttl below the minimum (loop_wait + 2*retry_timeout above ttl is lowered as Patroni does).
    let yaml = replace_line(good, "    ttl:", &["    ttl: 4"]);
    v.push(Case {
        what: "ttl below the minimum",
        place: Place::File(vec![line_of(&yaml, "    ttl: 4")]),
        yaml,
        env: vec![],
        key: Some("bootstrap.dcs.ttl"),
        says: vec!["minimum"],
    });

    // A parameter value PostgreSQL itself would refuse at its next start.
    let yaml = replace_line(
        good,
        "    password_encryption:",
        &["    password_encryption: scram-sha-256", "    max_connections: lots"],
    );
    v.push(Case {
        what: "postgresql.parameters.max_connections: lots",
        yaml,
        env: vec![],
        place: Place::File(vec![]),
        key: Some("postgresql.parameters.max_connections"),
        says: vec!["invalid value \"lots\"", "not a number"],
    });

    // A good file, spoiled by the environment.
    v.push(Case {
        what: "PATRONI_RESTAPI_LISTEN=8008",
        yaml: good.to_string(),
        env: vec![("PATRONI_RESTAPI_LISTEN", "8008")],
        place: Place::Env("PATRONI_RESTAPI_LISTEN"),
        key: Some("restapi.listen"),
        says: vec!["8008"],
    });
    v
}

/// Checks that `stderr` is one line that points at `case`'s place and key, and leaks no password.
fn check_error_line(case: &Case, file: &Path, command: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = format!("[{}] `rampart {command}`", case.what);
    assert!(!out.status.success(), "{ctx} accepted the configuration; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{ctx}: wanted one error line on stderr, got:\n{stderr}");
    for pw in PASSWORDS {
        assert!(!stderr.contains(pw), "{ctx}: stderr shows a password:\n{stderr}");
    }
    let line = lines[0];
    let msg = line.strip_prefix("rampart: ").unwrap_or(line);

    // The place: `<file>[:<line>]: ` or `environment variable <VAR>: `.
    let rest = match &case.place {
        Place::Env(var) => msg
            .strip_prefix(&format!("environment variable {var}: "))
            .unwrap_or_else(|| panic!("{ctx}: error does not start by naming {var}: {line}")),
        Place::File(want_lines) => {
            let file = file.display().to_string();
            let after = msg.strip_prefix(&file).unwrap_or_else(|| panic!("{ctx}: error does not name {file}: {line}"));
            let (got_line, after) = match after.strip_prefix(':') {
                Some(a) if a.starts_with(|c: char| c.is_ascii_digit()) => {
                    let digits: String = a.chars().take_while(char::is_ascii_digit).collect();
                    (Some(digits.parse::<usize>().unwrap()), &a[digits.len()..])
                }
                _ => (None, after),
            };
            if want_lines.is_empty() {
                // The problem is an absent key: a line is not required (any would do).
            } else {
                assert!(
                    got_line.is_some_and(|l| want_lines.contains(&l)),
                    "{ctx}: error should name line {want_lines:?} of the file, names {got_line:?}: {line}"
                );
            }
            after.strip_prefix(": ").unwrap_or_else(|| panic!("{ctx}: no ': ' after the place: {line}"))
        }
    };
    let message = match case.key {
        Some(key) => rest
            .strip_prefix(&format!("{key}: "))
            .unwrap_or_else(|| panic!("{ctx}: error does not name the key {key} after the place: {line}")),
        None => rest,
    };
    for word in &case.says {
        assert!(
            message.to_lowercase().contains(&word.to_lowercase()),
            "{ctx}: message should mention {word:?}: {line}"
        );
    }
    println!("{ctx}: {line}");
}

/// `rampart check-config <file>` as the test's own user, with `env` added.
fn check_config(file: &Path, env: &[(&str, &str)]) -> Output {
    std::process::Command::new(support::rampart_bin())
        .arg("check-config")
        .arg(file)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running rampart check-config")
}

/// `rampart agent <file>` as the agent's user; it must exit by itself.
fn agent_to_exit(file: &Path, env: &[(&str, &str)]) -> Output {
    let workdir = file.parent().unwrap();
    support::agent::run_to_exit(
        &support::rampart_bin(),
        &[OsStr::new("agent"), file.as_os_str()],
        workdir,
        env,
        REFUSAL_TIMEOUT,
    )
}

/// Node directory contents other than what the harness wrote (the config, the socket directory).
fn created_in(node_dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(node_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            !matches!(name.as_str(), "rampart.yml" | "sock" | ".harness-bin")
        })
        .collect();
    found.sort();
    found
}

#[test]
fn bad_configurations_are_refused_with_one_line_before_anything_is_touched() {
    let dir = TestDir::new("bad-input");
    let etcd = Etcd::start_in(&dir.join("etcd"));
    assert_eq!(etcd.all_keys(), Vec::<String>::new(), "a fresh etcd is empty");

    let template = NodeConfig::new(0, &dir.join("template"), &etcd.host()).timing(10, 1, 3);
    let good = template.to_yaml();
    let all = cases(&good);
    for (i, case) in all.iter().enumerate() {
        let node_dir = dir.join(format!("case{i}"));
        let cfg = NodeConfig {
            node_dir: node_dir.clone(),
            data_dir: node_dir.join("data"),
            pgpass: node_dir.join("pgpass"),
            socket_dir: node_dir.join("sock"),
            ..template.clone()
        };
        let file = node_dir.join("rampart.yml");
        cfg.write(&file).unwrap();
        // Same paths as the template, but inside this case's directory.
        let yaml = case.yaml.replace(&template.node_dir.display().to_string(), &node_dir.display().to_string());
        std::fs::write(&file, &yaml).unwrap();
        support::process::chown_to_agent_user(&file).unwrap();

        let out = check_config(&file, &case.env);
        check_error_line(case, &file, "check-config", &out);
        let started = Instant::now();
        let out = agent_to_exit(&file, &case.env);
        check_error_line(case, &file, "agent", &out);
        assert!(
            String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "[{}] agent stdout: {:?}",
            case.what,
            out.stdout
        );
        println!("[{}] agent refused in {:?}", case.what, started.elapsed());

        assert!(!cfg.data_dir.exists(), "[{}] the data directory {} was created", case.what, cfg.data_dir.display());
        assert_eq!(
            created_in(&node_dir),
            Vec::<PathBuf>::new(),
            "[{}] files appeared in the node directory",
            case.what
        );
        assert_eq!(etcd.all_keys(), Vec::<String>::new(), "[{}] something was written to etcd", case.what);
    }
}

#[test]
fn unknown_keys_only_draw_a_warning_with_their_line() {
    let dir = TestDir::new("unknown-keys");
    let node_dir = dir.join("node0");
    // No etcd is needed: check-config does not talk to it.
    let cfg = NodeConfig::new(0, &node_dir, "127.0.0.1:2379").timing(10, 1, 3);
    let file = node_dir.join("rampart.yml");
    cfg.write(&file).unwrap();
    let good = cfg.to_yaml();
    let restapi_listen = good.lines().find(|l| l.starts_with("  listen: 127.0.0.1:")).unwrap().to_string();
    let yaml = replace_line(&good, &restapi_listen, &[&restapi_listen, "  rampart_no_such_option: 1"]);
    let yaml = yaml + "\nno_such_section:\n  something: else\n";
    std::fs::write(&file, &yaml).unwrap();
    let option_line = line_of(&yaml, "  rampart_no_such_option:");
    let section_line = line_of(&yaml, "no_such_section:");

    let out = check_config(&file, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("stdout: {stdout}stderr: {stderr}");
    assert!(out.status.success(), "unknown keys made check-config fail:\n{stderr}");
    assert!(stdout.contains("valid configuration"), "{stdout}");
    let f = file.display();
    for (line, key) in [(option_line, "restapi.rampart_no_such_option"), (section_line, "no_such_section")] {
        assert!(
            stderr.lines().any(|l| l.contains("warning") && l.contains(&format!("{f}:{line}:")) && l.contains(key)),
            "no warning naming {key} at {f}:{line}:\n{stderr}"
        );
    }
    assert!(!stderr.lines().any(|l| l.contains("error")), "{stderr}");
    for pw in PASSWORDS {
        assert!(!stderr.contains(pw) && !stdout.contains(pw), "a password was printed");
    }
    assert!(!cfg.data_dir.exists());
}

#[test]
fn an_unreachable_etcd_is_waited_for_and_the_agent_bootstraps_once_it_appears() {
    // A loopback port with nothing behind it; etcd will be started there later.
    let etcd_port = support::free_port();
    let endpoint = format!("127.0.0.1:{etcd_port}");
    let host = endpoint.clone();
    let mut c = Cluster::start(
        1,
        ClusterOptions::default().tweak(move |_, mut cfg| {
            cfg.etcd_host = host.clone();
            cfg
        }),
    );

    // The agent keeps running, says which endpoint it cannot reach, and touches nothing.
    let mut said = None;
    let waited = support::wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        let log = std::fs::read_to_string(c.log_path(0)).unwrap_or_default();
        // A sentence for people ("... unreachable ..."), not only an error value's debug form.
        said = log.lines().find(|l| l.contains("unreachable") && l.contains(&endpoint)).map(str::to_owned);
        said.is_some()
    });
    assert!(waited, "the agent log never says that {endpoint} is unreachable");
    println!("agent log: {}", said.unwrap());
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        c.agent_mut(0).is_running(),
        "the agent exited while etcd was unreachable: {:?}",
        c.agent_mut(0).try_exit_status()
    );
    let log = std::fs::read_to_string(c.log_path(0)).unwrap_or_default();
    assert!(!log.contains("panicked"), "the agent panicked:\n{log}");
    assert!(!c.data_dir(0).exists(), "the data directory was created before etcd could be reached");
    assert_ne!(support::http_status(c.api_port(0), "GET", "/primary"), 200, "/primary without a DCS");

    // etcd appears on exactly that port: the agent initializes the cluster and leads it.
    let etcd_dir = c.dir().join("etcd-late");
    *c.etcd_mut() = Etcd::start_in_on_port(&etcd_dir, etcd_port);
    let appeared = Instant::now();
    let leader = support::health::wait_healthy(&c, Duration::from_secs(90));
    println!("leader {:?} answering /primary {:?} after etcd appeared", leader, appeared.elapsed());
    assert_eq!(leader, Some(0), "the agent did not bootstrap and lead once etcd was reachable");
    assert!(c.agent_mut(0).is_running());
}

#[test]
fn version_and_help_answer_where_an_operator_would_ask() {
    let version = env!("CARGO_PKG_VERSION");
    for args in [
        &["--version"][..],
        &["-V"],
        &["version"],
        &["list", "--version"],
        &["agent", "--version"],
        &["check-config", "--version"],
    ] {
        let out = support::rampart(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "rampart {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        let line = stdout.trim();
        assert!(line.starts_with("rampart") && line.ends_with(version), "rampart {args:?} printed {stdout:?}");
    }
    assert_eq!(String::from_utf8_lossy(&support::rampart(["version"]).stdout).trim(), format!("rampart {version}"));

    let out = support::rampart(["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["agent", "check-config", "list", "demo", "version", "--help", "--version"] {
        assert!(help.contains(word), "`rampart --help` does not mention {word}:\n{help}");
    }

    let out = support::rampart(["list", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["-c, --config-file", "-f, --format", "pretty", "json", "scope", "etcd3"] {
        assert!(help.contains(word), "`rampart list --help` does not mention {word}:\n{help}");
    }
    // Each option comes with an explanation, not just its name.
    for opt in ["-c, --config-file <CONFIG_FILE>", "-f, --format <FORMAT>"] {
        let explained =
            help.lines().skip_while(|l| !l.trim_start().starts_with(opt)).nth(1).is_some_and(|l| l.trim().len() > 10);
        assert!(explained, "`rampart list --help` has no explanation under {opt}:\n{help}");
    }

    for (args, word) in [(["agent", "--help"], "CONFIG_FILE"), (["check-config", "--help"], "CONFIG_FILE")] {
        let out = support::rampart(args);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && help.contains(word), "rampart {args:?}:\n{help}");
    }
}
