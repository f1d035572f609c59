//! Story: an operator secures the REST API as with Patroni — HTTPS with certificates from their
//! own CA, Basic auth on every write — and hooks a script on role changes. Health checks stay
//! open, writes without the right credentials are refused, a switchover with them works (the
//! agents ask each other over HTTPS), the script sees the new roles, and no log shows the
//! password.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};

const REST_PASSWORD: &str = "rest-secret-4711";

/// A CA and a server certificate for 127.0.0.1, made with openssl in `dir`.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rampart test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    for f in ["ca.pem", "server.pem", "server.key"] {
        support::process::chown_to_agent_user(&dir.join(f)).unwrap();
    }
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// `curl` over HTTPS trusting `ca`; returns (status, body). Status 0: no HTTP answer.
fn curl(ca: &Path, method: &str, url: &str, body: Option<&str>, user: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "60", "--cacert"]).arg(ca).args(["-X", method, "-w", "\n%{http_code}"]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    if let Some(u) = user {
        cmd.args(["-u", u]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secured_rest_api_refuses_anonymous_writes_and_switches_over_with_credentials() {
    let certs_dir = support::TestDir::new("certs");
    let (ca, cert, key) = make_certificates(certs_dir.path());
    let (ca2, cert2, key2) = (ca.clone(), cert.clone(), key.clone());
    let opts = ClusterOptions::default().tweak(move |_, cfg| {
        let roles = cfg.node_dir.join("roles.log");
        cfg.restapi_setting("authentication", &format!("{{username: admin, password: '{REST_PASSWORD}'}}"))
            .restapi_setting("certfile", &format!("'{}'", cert2.display()))
            .restapi_setting("keyfile", &format!("'{}'", key2.display()))
            .restapi_setting("cafile", &format!("'{}'", ca2.display()))
            .pg_setting("callbacks", &format!("{{on_role_change: 'echo >> {}'}}", roles.display()))
    });
    let c = Cluster::start(3, opts);
    let url = |i: usize, path: &str| format!("https://127.0.0.1:{}{path}", c.api_port(i));
    let leader = c.wait_for_leader(Duration::from_secs(90)).expect("a leader");
    assert!(
        support::wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
            (0..3).filter(|&i| i != leader).all(|i| curl(&ca, "GET", &url(i, "/replica"), None, None).0 == 200)
        }),
        "replicas report healthy over HTTPS"
    );
    assert_eq!(curl(&ca, "GET", &url(leader, "/primary"), None, None).0, 200, "health checks need no credentials");
    assert_eq!(support::http_status(c.api_port(leader), "GET", "/primary"), 0, "plain HTTP gets no answer");

    let cand = (0..3).find(|&i| i != leader).unwrap();
    let body = format!(r#"{{"leader": "{}", "candidate": "{}"}}"#, c.name(leader), c.name(cand));
    let anonymous = curl(&ca, "POST", &url(leader, "/switchover"), Some(&body), None);
    assert_eq!(anonymous.0, 401, "{anonymous:?}");
    let wrong = curl(&ca, "POST", &url(leader, "/switchover"), Some(&body), Some("admin:guess"));
    assert_eq!(wrong.0, 401, "{wrong:?}");
    assert_eq!(c.leader_index(), Some(leader), "refused requests changed nothing");

    let ok = curl(&ca, "POST", &url(leader, "/switchover"), Some(&body), Some(&format!("admin:{REST_PASSWORD}")));
    assert_eq!(ok.0, 200, "{ok:?}");
    assert_eq!(c.leader_index(), Some(cand));

    // The role-change script ran on both sides with Patroni's arguments.
    let roles = |i: usize| std::fs::read_to_string(c.node(i).config.node_dir.join("roles.log")).unwrap_or_default();
    assert!(
        support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            roles(cand).contains("on_role_change primary postgres")
                && roles(leader).contains("on_role_change replica postgres")
        }),
        "callbacks: new leader {:?}, old leader {:?}",
        roles(cand),
        roles(leader)
    );

    for i in 0..3 {
        let log = std::fs::read_to_string(c.log_path(i)).unwrap();
        assert!(!log.contains(REST_PASSWORD), "{} shows the REST password", c.log_path(i).display());
    }
}
