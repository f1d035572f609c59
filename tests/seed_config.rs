//! Story: an operator follows the Patroni + HAProxy guide of seed 000 to the letter and hands
//! Rampart the configuration it builds (tests/fixtures/seed000.yml: the guide's YAML fragments,
//! verbatim, Japanese comments and tab-indented `users:` lines included). Only what cannot be
//! kept when three nodes and etcd share one machine's loopback is changed:
//! * 192.168.5.x addresses are 127.0.0.1;
//! * ports, `data_dir` and `pgpass` are placeholders ({{RESTAPI_PORT}}, {{ETCD_PORT}},
//!   {{PG_PORT}}, {{DATA_DIR}}, {{PGPASS}}) this test fills with free ports and test directories;
//! * `name: postgres01` becomes postgres02 and postgres03 on the other nodes, as the guide says.
//!
//! `unix_socket_directories: '.'` is kept as the guide has it, even though it puts the socket
//! inside the data directory, where pg_rewind cannot copy it (a former primary could not rejoin
//! after a failover): this story only bootstraps, and Rampart warns about it.
//!
//! With the guide's own timing (ttl 30, loop_wait 10, retry_timeout 10) the three agents must
//! elect one leader with two streaming replicas, create the guide's `admin` user, and look to
//! Patroni's `patronictl` like any Patroni cluster.
//!
//! The second story follows seed 002 (Patroni with pgBackRest on every member): see
//! [`seed_002_configuration_with_pgbackrest_replicas_on_loopback`] and the repairs listed at the
//! top of tests/fixtures/seed002.yml.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;
use support::pgbackrest::Repo;
use support::s3::S3Server;

const FIXTURE: &str = include_str!("fixtures/seed000.yml");

/// The seed's configuration for node `i` of `c`.
fn seed_config(c: &Cluster, i: usize) -> String {
    let cfg = &c.node(i).config;
    let text = FIXTURE
        .replace("name: postgres01", &format!("name: {}", cfg.name))
        .replace("{{RESTAPI_PORT}}", &cfg.api_port.to_string())
        .replace("{{ETCD_PORT}}", &c.etcd().client_port().to_string())
        .replace("{{PG_PORT}}", &cfg.pg_port.to_string())
        .replace("{{DATA_DIR}}", &cfg.data_dir.display().to_string())
        .replace("{{PGPASS}}", &cfg.pgpass.display().to_string());
    assert!(!text.contains("{{"), "a placeholder was left unfilled:\n{text}");
    text
}

fn write_owned(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    support::process::chown_to_agent_user(path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_configuration_on_loopback_bootstraps_a_three_node_cluster() {
    assert!(FIXTURE.contains("\t\tusers:"), "the fixture lost the seed's tab-indented `users:` line");
    let options = ClusterOptions { start_agents: false, ..ClusterOptions::default() }
        .tweak(|i, cfg| cfg.name(&format!("postgres{:02}", i + 1)));
    let mut c = Cluster::start(3, options);
    for i in 0..3 {
        write_owned(c.config_path(i), &seed_config(&c, i));
    }

    // Rampart accepts the file as it is, warning about what an operator should fix.
    let out = c.rampart([Path::new("check-config"), c.config_path(0)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("check-config: {}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "the seed's configuration is refused:\n{stderr}");
    let users_line = FIXTURE.lines().position(|l| l == "\t\tusers:").unwrap() + 1;
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains(&format!(":{users_line}:")) && l.contains("tab")),
        "no warning about the tab-indented line {users_line}:\n{stderr}"
    );
    assert!(stderr.contains("unix_socket_directories"), "no warning about the relative socket directory:\n{stderr}");

    let started = Instant::now();
    for i in 0..3 {
        c.start_agent(i);
    }
    let leader = wait_healthy(&c, Duration::from_secs(120)).expect("one leader and two streaming replicas");
    println!("healthy after {:?}: leader {}", started.elapsed(), c.name(leader));
    assert_eq!(c.nodes_answering("/primary", 200), vec![leader]);
    assert_eq!(c.primaries_by_sql().await, vec![leader], "only the leader is writable");

    // bootstrap.users: `admin` with password `admin`, CREATEROLE and CREATEDB, over TCP through
    // the seed's `host all all 0.0.0.0/0 scram-sha-256` rule.
    let admin = support::connect(c.pg_port(leader), "admin", "admin").await.expect("log in as admin/admin");
    let row = admin
        .query_one("SELECT rolcreaterole, rolcreatedb, rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .unwrap();
    let (createrole, createdb, superuser): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    assert!(createrole && createdb, "admin has CREATEROLE {createrole}, CREATEDB {createdb}");
    assert!(!superuser, "admin was not asked to be a superuser");
    assert!(support::connect(c.pg_port(leader), "admin", "wrong").await.is_err(), "admin's password is checked");
    // The role reached the replicas with the rest of the cluster.
    for r in (0..3).filter(|&i| i != leader) {
        let replica = support::connect(c.pg_port(r), "admin", "admin").await.expect("admin on a replica");
        assert!(support::query_one_bool(&replica, "SELECT pg_is_in_recovery()").await.unwrap());
    }

    // Patroni's patronictl sees postgres01..03 with one Leader. Patroni reads YAML with PyYAML,
    // which refuses the tab-indented lines the guide contains, so patronictl gets the same file
    // with those lines indented as Rampart reads them (4 spaces).
    let for_patroni = c.dir().join("patronictl.yml");
    let untabbed: String = seed_config(&c, 0).lines().map(|l| l.replacen("\t\t", "    ", 1) + "\n").collect::<String>();
    write_owned(&for_patroni, &untabbed);
    let ok = support::wait_until(Duration::from_secs(30), Duration::from_secs(1), || {
        let out = support::patronictl(&for_patroni, &["list"]);
        let text = String::from_utf8_lossy(&out.stdout);
        out.status.success()
            && (1..=3).all(|n| text.contains(&format!("postgres{n:02}")))
            && text.matches("| Leader ").count() == 1
            && text.matches("| Replica ").count() == 2
            && text.matches("streaming").count() == 2
    });
    let out = support::patronictl(&for_patroni, &["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("patronictl list:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(ok, "patronictl list does not show postgres01..03 with one Leader and two streaming Replicas");
    assert!(text.lines().any(|l| l.contains(c.name(leader)) && l.contains("| Leader ")), "{text}");
}

/// Seed 002's patroni.yml with the repairs listed at its top (tests/fixtures/seed002.yml).
const SEED_002: &str = include_str!("fixtures/seed002.yml");
/// Seed 002's patroni.yml exactly as published: not valid YAML.
const SEED_002_PUBLISHED: &str = include_str!("fixtures/seed002_published.yml");
/// The seed writes `<stanza-name>` for the reader to fill in; its bootstrap script names the
/// stanza after the cluster (`--stanza=$SCOPE`).
const SEED_002_STANZA: &str = "pg-ha-cluster";

/// Seed 002's configuration for node `i` of `c`: the seed's values for pg-db-01 replaced by the
/// node's name, loopback ports and test directories, as the seed says to do on every host
/// ("change the IP on every node"). `bootstrap.pg_hba` is appended to initdb's rules, whose
/// `local` lines let pgBackRest in through the socket as on the seed's hosts.
fn seed_002_config(c: &Cluster, i: usize) -> String {
    let cfg = &c.node(i).config;
    let text = SEED_002
        .replace("name: pg-db-01", &format!("name: {}", cfg.name))
        .replace("192.0.2.1:8008", &format!("127.0.0.1:{}", cfg.api_port))
        .replace("192.0.2.1:5432", &format!("127.0.0.1:{}", cfg.pg_port))
        // The seed's three etcd members are issue 20's; the kit runs one.
        .replace("192.0.2.4:2379,192.0.2.5:2379, 192.0.2.6:2379", &format!("127.0.0.1:{}", c.etcd().client_port()))
        // pg_hba's member addresses, and the client network the seed leaves as `x.x.x.0/0`.
        .replace("192.0.2.", "127.0.0.")
        .replace("x.x.x.0/0", "127.0.0.0/0")
        .replace("/opt/pgsql/data", &cfg.data_dir.display().to_string())
        .replace("/opt/pgsql/patroni/pgpass", &cfg.pgpass.display().to_string())
        .replace("<stanza-name>", SEED_002_STANZA);
    for seed_value in ["192.0.2.", "x.x.x", "<stanza-name>", "/opt/pgsql/data", "/opt/pgsql/patroni/pgpass"] {
        assert!(!text.contains(seed_value), "{seed_value} was left in node {i}'s configuration:\n{text}");
    }
    text
}

/// What pgBackRest reads on member `cfg`'s host: seed 002's `/etc/pgbackrest.conf` (here the
/// repository's own file, [`Repo::on_s3`]'s) and its `pg1-path` (each member's data directory
/// differs here). Of the seed's file, `repo1-type=s3`, `repo1-s3-uri-style=path` and
/// `repo1-retention-full=10` are kept; the endpoint, keys and bucket are the test's S3 server's;
/// the log levels and paths are the kit's; `pg1-user=Postgres` names no role (PostgreSQL's
/// names are case-sensitive), so pgBackRest connects as the OS user, postgres.
fn seed_002_pgbackrest_env(repo: &Repo, cfg: &support::NodeConfig) -> Vec<(String, String)> {
    vec![
        ("PGBACKREST_CONFIG".into(), repo.config_path().display().to_string()),
        ("PGBACKREST_PG1_PATH".into(), cfg.data_dir.display().to_string()),
    ]
}

/// The seed's pgBackRest command run by the operator on member `cfg` (as the agent's OS user).
fn seed_002_pgbackrest(repo: &Repo, cfg: &support::NodeConfig, args: &[&str]) -> String {
    let mut all = vec![
        format!("--pg1-path={}", cfg.data_dir.display()),
        format!("--pg1-port={}", cfg.pg_port),
        // The first of the seed's unix_socket_directories.
        "--pg1-socket-path=/var/run/postgresql".to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    repo.run_ok(None, &all)
}

/// Everything PostgreSQL wrote into `<data_dir>/log` (the seed's `logging_collector` files).
fn pg_collector_logs(data_dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(data_dir.join("log")) else { return String::new() };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect()
}

/// Story: an operator follows seed 002 (Oracle's tutorial: Patroni with pgBackRest on three
/// PostgreSQL hosts) with Rampart in Patroni's place, on one machine's loopback:
/// 1. The seed's YAML as published is refused, naming the line; repaired (the fixture's list),
///    `rampart check-config` accepts every member's file.
/// 2. As the seed's install script does, pg-db-01 has an initialized data directory (initdb with
///    the seed's `initdb` options; the seed's roles and passwords) and pg-db-02/03 none. Only
///    pg-db-01's agent starts: it takes the existing data directory over and leads (the seed's
///    `bootstrap.method: pgbackrest` is never run: there is nothing to bootstrap).
/// 3. The seed's step 7: `stanza-create`, then `--type=full --process-max=10 backup` (WAL reaches
///    the repository through the seed's `archive_command`).
/// 4. The seed's step 8: pg-db-02/03 start; each is made by the seed's `pgbackrest` replica method
///    (`/usr/bin/pgbackrest --stanza=... restore --delta --link-all`, keep_data, no_params) and
///    streams from pg-db-01, after restoring the backup's WAL through the seed's
///    `restore_command`. A row written on the leader is on every member, and `rampart list`
///    shows one Leader and two streaming Replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_configuration_with_pgbackrest_replicas_on_loopback() {
    let started = Instant::now();
    let options = ClusterOptions {
        scope: "pg-ha-cluster".into(),
        namespace: "/opt/pgsql/patroni/".into(),
        start_agents: false,
        ..ClusterOptions::default()
    }
    .tweak(|i, cfg| cfg.name(&format!("pg-db-{:02}", i + 1)));
    let mut c = Cluster::start(3, options);
    // The seed's object storage (Oracle's S3-compatible endpoint, path-style) is the test's S3
    // server; its bucket `pg_backup` is spelt `pg-backup` (S3 bucket names take no underscore).
    let s3 = S3Server::start(&support::dir::make_agent_dir(&c.dir().join("s3")));
    let repo = Repo::on_s3(&c.dir().join("pgbackrest"), SEED_002_STANZA, &s3, "pg-backup");

    // 1. The published file is refused where YAML gives up on it.
    let published = c.dir().join("patroni-as-published.yml");
    write_owned(&published, SEED_002_PUBLISHED);
    let out = c.rampart([Path::new("check-config"), &published]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("check-config of the published file: {stderr}");
    assert!(!out.status.success(), "the published file is accepted:\n{stderr}");
    assert!(
        stderr.contains(&format!("{}:5:", published.display())) && stderr.contains("invalid YAML"),
        "the refusal does not name line 5 (`restapi:`, after the keys without a space):\n{stderr}"
    );
    // Repair 6 left out, as Patroni reads it: create_replica_methods and its method's section
    // among the dynamic parameters are no settings; they are left out with a warning.
    let methods = "  create_replica_methods:\n    - pgbackrest\n  pgbackrest:\n    command: \"/usr/bin/pgbackrest \
                   --stanza=<stanza-name>  restore --delta --link-all\"\n    keep_data: True\n    no_params: True\n";
    assert!(SEED_002.contains(methods), "the fixture's replica method moved");
    let among_parameters: String = methods.lines().map(|l| format!("      {l}\n")).collect();
    let unmoved = seed_002_config(&c, 0).replace(&methods.replace("<stanza-name>", SEED_002_STANZA), "").replace(
        "superuser_reserved_connections: 200\n",
        &format!("superuser_reserved_connections: 200\n{}", among_parameters.replace("<stanza-name>", SEED_002_STANZA)),
    );
    let unmoved_path = c.dir().join("patroni-methods-among-parameters.yml");
    write_owned(&unmoved_path, &unmoved);
    let out = c.rampart([Path::new("check-config"), &unmoved_path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("check-config with create_replica_methods among the parameters: {stderr}");
    assert!(out.status.success(), "refused:\n{stderr}");
    for name in ["create_replica_methods", "pgbackrest"] {
        assert!(
            stderr.lines().any(|l| l.starts_with("warning:") && l.contains(&format!("{name} is not a parameter"))),
            "no warning about {name} among the parameters:\n{stderr}"
        );
    }

    for i in 0..3 {
        write_owned(c.config_path(i), &seed_002_config(&c, i));
        let out = c.rampart([Path::new("check-config"), c.config_path(i)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("check-config {}: {}{stderr}", c.name(i), String::from_utf8_lossy(&out.stdout));
        assert!(out.status.success(), "{}'s repaired configuration is refused:\n{stderr}", c.name(i));
        let env = seed_002_pgbackrest_env(&repo, &c.node(i).config);
        c.node_mut(i).agent_env = env;
    }

    // 2. The install script's data directory on pg-db-01: initdb, the seed's roles.
    let data = c.data_dir(0).display().to_string();
    let script = format!(
        "initdb -D '{data}' -U postgres --encoding=UTF8 --data-checksums >/dev/null && \
         printf '%s\\n' \"ALTER ROLE postgres PASSWORD 'password'\" \
         \"CREATE ROLE replicator LOGIN REPLICATION PASSWORD 'password'\" \
         | postgres --single -D '{data}' postgres >/dev/null"
    );
    let out = support::agent::run_to_exit(
        Path::new("/bin/sh"),
        &[std::ffi::OsStr::new("-c"), std::ffi::OsStr::new(&script)],
        c.dir(),
        &[],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "initdb: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    c.start_agent(0);
    let leads = support::wait_until(Duration::from_secs(90), Duration::from_millis(500), || {
        c.leader_index() == Some(0) && support::http_status(c.api_port(0), "GET", "/primary") == 200
    });
    assert!(leads, "pg-db-01 does not lead with its existing data directory");
    println!("pg-db-01 leads after {:?}", started.elapsed());

    // 3. Stanza and full backup, as the seed's step 7.
    seed_002_pgbackrest(&repo, &c.node(0).config, &["stanza-create"]);
    seed_002_pgbackrest(&repo, &c.node(0).config, &["--type=full", "--process-max=10", "backup"]);
    println!("pgbackrest info:\n{}", repo.run_ok(None, &["info"]));
    assert_eq!(repo.backup_labels().len(), 1, "one full backup in the repository");

    // 4. The replicas, made by pgBackRest.
    c.start_agent(1);
    c.start_agent(2);
    let leader = wait_healthy(&c, Duration::from_secs(120)).expect("pg-db-01 leading two streaming replicas");
    assert_eq!(leader, 0);
    println!("healthy after {:?}", started.elapsed());
    for i in 1..3 {
        let log = std::fs::read_to_string(c.log_path(i)).unwrap_or_default();
        assert!(
            log.contains("replica has been created using pgbackrest"),
            "{} was not made by the seed's pgbackrest method:\n{log}",
            c.name(i)
        );
    }
    assert!(
        repo.command_log("restore").contains("restore command end: completed successfully"),
        "{}",
        repo.command_log("restore")
    );
    // The seed's restore_command (with `%p`) served the replicas the WAL of the backup: their
    // PostgreSQL logs, in the seed's logging_collector files under <data_dir>/log.
    for i in 1..3 {
        let logs = pg_collector_logs(c.data_dir(i));
        assert!(
            logs.lines().any(|l| l.contains("restored log file") && l.contains("from archive")),
            "{} restored no WAL through the seed's restore_command:\n{logs}",
            c.name(i)
        );
    }

    let db = support::connect(c.pg_port(0), "postgres", "password").await.expect("the seed's superuser logs in");
    db.batch_execute("CREATE TABLE seed_002 (note text); INSERT INTO seed_002 VALUES ('written on pg-db-01')")
        .await
        .unwrap();
    for i in 0..3 {
        let port = c.pg_port(i);
        let seen = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(200), || async move {
            let Ok(db) = support::connect(port, "postgres", "password").await else { return false };
            db.query_opt("SELECT 1 FROM seed_002 WHERE note = 'written on pg-db-01'", &[])
                .await
                .is_ok_and(|r| r.is_some())
        })
        .await;
        assert!(seen, "the row is not on {}", c.name(i));
    }

    let out = c.rampart(["list", "-c", &c.config_path(0).display().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("rampart list:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(text.lines().any(|l| l.contains("pg-db-01") && l.contains("Leader")), "{text}");
    for name in ["pg-db-02", "pg-db-03"] {
        assert!(text.lines().any(|l| l.contains(name) && l.contains("Replica") && l.contains("streaming")), "{text}");
    }
    println!("done after {:?}", started.elapsed());
}
