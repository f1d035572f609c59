//! Story: an operator installs the Debian package and starts from the example configurations it
//! ships (packaging/examples/, installed under /usr/share/doc/rampart/examples/). Each must be
//! accepted as it is, without a warning, by what reads it on a real host: the member's file by
//! `rampart check-config` (which rampart@.service runs before the agent), the application host's
//! file by the proxy's configuration reader. And the two must describe the same cluster, or the
//! proxy would follow a cluster nobody runs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/examples").join(name)
}

/// No PATRONI_*/RAMPART_* override from the environment running the tests.
fn clean_env() -> Vec<(String, String)> {
    Vec::new()
}

/// `rampart check-config [EXTRA] FILE` with no override in its environment.
fn check_config(extra: &[&str], file: &Path) -> std::process::Output {
    Command::new(support::rampart_bin())
        .arg("check-config")
        .args(extra)
        .arg(file)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("running rampart check-config")
}

#[test]
fn the_member_example_passes_check_config_without_a_warning() {
    let out = check_config(&[], &example("member.yml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check-config refused the example:\n{stdout}{stderr}");
    assert!(stderr.trim().is_empty(), "check-config warned about the example:\n{stderr}");
    assert!(stdout.contains("member 'node1' of cluster 'pg'"), "{stdout}");
    assert!(stdout.contains("http://10.0.0.11:2379,http://10.0.0.12:2379,http://10.0.0.13:2379"), "{stdout}");
}

#[test]
fn the_proxy_example_passes_check_config_proxy_without_a_warning() {
    // What rampart-proxy@.service runs before the proxy.
    let out = check_config(&["--proxy"], &example("proxy.yml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check-config --proxy refused the example:\n{stdout}{stderr}");
    assert!(stderr.trim().is_empty(), "check-config --proxy warned about the example:\n{stderr}");
    assert!(stdout.contains("valid proxy configuration for cluster 'pg'"), "{stdout}");
}

#[test]
fn the_proxy_example_is_a_valid_proxy_only_file_for_the_members_cluster() {
    let text = std::fs::read_to_string(example("proxy.yml")).unwrap();
    let proxy = rampart_config::parse_proxy(&text, "proxy.yml", clean_env()).expect("the proxy example is valid");
    assert!(proxy.warnings.is_empty(), "warnings: {:?}", proxy.warnings);
    let p = &proxy.config;
    assert_eq!(p.proxy.listen.to_string(), "0.0.0.0:5432");
    assert_eq!(p.proxy.listen_ro.as_ref().map(ToString::to_string).as_deref(), Some("0.0.0.0:5433"));
    assert_eq!(p.proxy.listen_admin.as_ref().map(ToString::to_string).as_deref(), Some("127.0.0.1:8404"));

    // It is not a member's file: without `name`, `postgresql`, ... the agent would refuse it.
    assert!(rampart_config::parse(&text, "proxy.yml", clean_env()).is_err());

    let member_text = std::fs::read_to_string(example("member.yml")).unwrap();
    let member = rampart_config::parse(&member_text, "member.yml", clean_env()).expect("the member example is valid");
    let m = &member.config;
    assert_eq!((p.scope.as_str(), p.namespace.as_str()), (m.scope.as_str(), m.namespace.as_str()));
    assert_eq!(p.etcd3.endpoints(), m.etcd_endpoints(), "the proxy follows the members' etcd");
    assert_eq!(p.prefix(), m.prefix(), "the same etcd keys");
}
