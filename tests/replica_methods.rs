//! Story: the ways Patroni configurations make members, kept by Rampart.
//!
//! 1. The first member bootstraps and runs `bootstrap.post_bootstrap` with a connection string
//!    for the superuser: the script creates a table through it.
//! 2. The second member's `create_replica_methods` lists a broken method first and the operator's
//!    own copy script second (`postgresql.<method>.command`, with a key of its own passed as
//!    `--key=value`). The broken one fails and leaves nothing behind; the script gets Patroni's
//!    arguments (`--scope --role=replica --datadir --connstring`), copies the leader with
//!    pg_basebackup through that connection string and the password file, and the member then
//!    streams from the leader, with the table the post_bootstrap script made.
//! 3. A member's clone hangs (its first method never returns). The operator asks to reinitialize
//!    it: refused while the clone runs, until the request says `force`, which cancels the hanging
//!    clone (its process is gone) and starts over; the member then streams from the leader.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\nset -e\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Finds `--datadir=`, `--connstring=` and `--marker=` among the arguments.
const READ_ARGS: &str = "for a in \"$@\"; do\n  case \"$a\" in\n    --datadir=*) datadir=\"${a#--datadir=}\" ;;\n    \
                         --connstring=*) connstring=\"${a#--connstring=}\" ;;\n    --marker=*) marker=\"${a#--marker=}\" ;;\n  \
                         esac\ndone\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_bootstrap_and_a_custom_replica_method_make_the_members() {
    let bin = support::pg_bin_dir();
    let mut c = Cluster::start(2, ClusterOptions { start_agents: false, ..Default::default() });
    let dir = |i: usize| c.data_dir(i).parent().unwrap().to_path_buf();
    let (post, broken, copy) = (dir(0).join("post.sh"), dir(1).join("broken.sh"), dir(1).join("copy.sh"));
    let marker = dir(1).join("copy-args");
    write_script(&post, &format!("\"{}/psql\" \"$1\" -qc 'CREATE TABLE made_by_post_bootstrap ()'\n", bin.display()));
    write_script(&broken, &format!("{READ_ARGS}mkdir -p \"$datadir\"\necho half > \"$datadir/half-made\"\nexit 2\n"));
    write_script(
        &copy,
        &format!(
            "{READ_ARGS}echo \"$*\" > \"$marker\"\n\"{}/pg_basebackup\" -D \"$datadir\" -X stream -d \"$connstring\" -w\n",
            bin.display()
        ),
    );
    let mut first = c.node(0).config.clone();
    first.bootstrap_yaml = format!("  post_bootstrap: {}\n", post.display());
    first.write(c.config_path(0)).unwrap();
    let mut second = c.node(1).config.clone();
    second.pg_settings.push(("create_replica_methods".into(), "[broken, copy]".into()));
    second.pg_settings.push(("broken".into(), format!("{{command: {}}}", broken.display())));
    second.pg_settings.push(("copy".into(), format!("{{command: {}, marker: {}}}", copy.display(), marker.display())));
    second.write(c.config_path(1)).unwrap();

    c.start_agent(0);
    assert_eq!(c.wait_for_leader(Duration::from_secs(60)), Some(0), "the first member bootstraps and leads");
    c.start_agent(1);
    let leader = wait_healthy(&c, Duration::from_secs(120)).expect("the second member streams from the leader");
    assert_eq!(leader, 0);

    let args = std::fs::read_to_string(&marker).expect("the copy method ran");
    let port = c.pg_port(0).to_string();
    let want = [
        format!("--marker={}", marker.display()),
        "--scope=postgres".into(),
        "--role=replica".into(),
        format!("--datadir={}", c.data_dir(1).display()),
        format!("--connstring=dbname=postgres user={} host=127.0.0.1 port={port}", support::REPLICATION_USER),
    ];
    assert_eq!(args.split_whitespace().collect::<Vec<_>>().join(" "), want.join(" "), "Patroni's arguments");
    assert!(!c.data_dir(1).join("half-made").exists(), "the broken method's leftovers were removed");
    let log = std::fs::read_to_string(c.log_path(1)).unwrap();
    assert!(log.contains("Error creating replica using method broken"), "the failure is logged");
    assert!(log.contains("replica has been created using copy"), "and the method that worked");

    for i in [0, 1] {
        let db = support::connect_superuser(c.pg_port(i)).await.unwrap();
        let made = db.query_opt("SELECT 1 FROM pg_class WHERE relname = 'made_by_post_bootstrap'", &[]).await.unwrap();
        assert!(made.is_some(), "node{i} has the table post_bootstrap created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_reinitialize_cancels_a_clone_that_hangs() {
    let mut c = Cluster::start(2, ClusterOptions { start_agents: false, ..Default::default() });
    let dir = c.data_dir(1).parent().unwrap().to_path_buf();
    let (hang, pid_file) = (dir.join("hang.sh"), dir.join("hang.pid"));
    // The first run hangs (and says so by its PID file); later runs fail at once, so the next
    // method, basebackup, makes the copy.
    write_script(
        &hang,
        &format!(
            "p={}
if [ -e \"$p\" ]; then exit 1; fi
echo $$ > \"$p\"
exec sleep 600
",
            pid_file.display()
        ),
    );
    let mut second = c.node(1).config.clone();
    second.pg_settings.push(("create_replica_methods".into(), "[hang, basebackup]".into()));
    second.pg_settings.push(("hang".into(), format!("{{command: {}}}", hang.display())));
    second.write(c.config_path(1)).unwrap();

    c.start_agent(0);
    assert_eq!(c.wait_for_leader(Duration::from_secs(60)), Some(0), "the first member bootstraps and leads");
    c.start_agent(1);
    assert!(
        support::wait_until(Duration::from_secs(60), Duration::from_millis(200), || pid_file.exists()),
        "the clone started and hangs"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();

    let reinit = |body: &str| {
        support::client::http_request(c.api_port(1), "POST", "/reinitialize", Some(body)).expect("POST /reinitialize")
    };
    let r = reinit("{}");
    assert_eq!((r.status, r.body.contains("replica clone is in progress")), (503, true), "{}", r.body);
    let r = reinit(r#"{"force": true}"#);
    assert_eq!((r.status, r.body.as_str()), (200, "reinitialize started"));
    let gone = || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err();
    assert!(
        support::wait_until(Duration::from_secs(10), Duration::from_millis(100), gone),
        "the hanging clone's process was stopped with its job"
    );
    assert_eq!(wait_healthy(&c, Duration::from_secs(120)), Some(0), "the member was copied again and streams");
    let log = std::fs::read_to_string(c.log_path(1)).unwrap();
    assert!(log.contains("cancelling the replica clone"), "the log says what the force did");
}
