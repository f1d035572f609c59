//! Stories of the tools people point at `rampart proxy`: psql (in plain text and with TLS,
//! verifying the proxy's certificate) and pgbench through both ports, reads spread over the
//! replicas by the least-connections policy, and a barrage of malformed connections that each
//! close on their own while a real session carries on.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;
use support::proxy::Proxy;
use tokio_postgres::Client;

/// Runs `cmd` and fails the test when it fails, naming the program and its arguments (not its
/// environment, which holds PGPASSWORD).
fn run(cmd: &mut Command) -> Output {
    let shown = format!("{} {:?}", cmd.get_program().to_string_lossy(), cmd.get_args().collect::<Vec<_>>());
    let out = cmd.output().unwrap_or_else(|e| panic!("running {shown}: {e}"));
    if !out.status.success() {
        panic!(
            "{shown} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// psql with a libpq connection string; the password comes from the environment.
fn psql(conninfo: &str, sql: &str) -> String {
    let out = run(Command::new(support::pg_bin_dir().join("psql"))
        .args(["-X", "-At", "-d", conninfo, "-c", sql])
        .env("PGPASSWORD", support::SUPERUSER_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn conninfo(port: u16, extra: &str) -> String {
    format!("host=127.0.0.1 port={port} user={} dbname=postgres {extra}", support::SUPERUSER)
}

/// pgbench against `port`, returning its report; fails the test if pgbench does.
fn pgbench(port: u16, args: &[&str]) -> String {
    let out = run(Command::new(support::pg_bin_dir().join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", support::SUPERUSER])
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", support::SUPERUSER_PASSWORD));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The number after `label` in a pgbench report.
fn report_number(report: &str, label: &str) -> f64 {
    let line =
        report.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label}: {report}"));
    let value = line.split_once('=').or_else(|| line.split_once(':')).map(|(_, v)| v).unwrap_or_default();
    value.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{label}: {line}"))
}

/// A self-signed certificate for `localhost` and 127.0.0.1: `(cert.pem, key.pem)`.
fn self_signed(dir: &Path) -> (String, String) {
    let cert = dir.join("proxy-cert.pem");
    let key = dir.join("proxy-key.pem");
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]));
    (cert.to_str().unwrap().to_string(), key.to_str().unwrap().to_string())
}

async fn server_port(db: &Client) -> u16 {
    db.query_one("SELECT inet_server_port()", &[]).await.expect("inet_server_port").get::<_, i32>(0) as u16
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_pgbench_through_both_ports_with_tls_and_least_connections() {
    let c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let (cert, key) = self_signed(c.dir());
    let proxy = Proxy::start(&c, &format!("  certfile: {cert}\n  keyfile: {key}\n  ro_policy: least_connections\n"));
    let replicas: Vec<u16> = (0..3).filter(|&i| i != leader).map(|i| c.pg_port(i)).collect();

    // psql in plain text on the read-write port reaches the primary.
    let rw = conninfo(proxy.rw_port, "sslmode=disable");
    assert_eq!(
        psql(&rw, "SELECT pg_is_in_recovery()::text || ' ' || inet_server_port()"),
        format!("false {}", c.pg_port(leader))
    );

    // psql with TLS, checking the proxy's certificate against the name it connected to.
    let tls = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user={} dbname=postgres sslmode=verify-full sslrootcert={cert}",
        proxy.rw_port,
        support::SUPERUSER
    );
    let info = psql(&tls, "\\conninfo");
    assert!(info.contains("SSL connection (protocol: TLSv1.3"), "psql reports TLS: {info}");
    assert_eq!(psql(&tls, "SELECT pg_is_in_recovery()"), "f");
    // sslmode=require on the read-only port.
    let ro_tls = conninfo(proxy.ro_port, "sslmode=require");
    assert!(psql(&ro_tls, "\\conninfo").contains("SSL connection"), "TLS on the read-only port");

    // pgbench: initialize through the read-write port, then TPC-B-like writes there and
    // select-only reads on the read-only port, without a failed transaction.
    pgbench(proxy.rw_port, &["-i", "-s", "1", "-q"]);
    assert!(
        support::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            psql(&conninfo(proxy.ro_port, "sslmode=disable"), "SELECT count(*) FROM pgbench_branches") == "1"
        }),
        "pgbench's tables reach the replicas"
    );
    let writes = pgbench(proxy.rw_port, &["-c", "4", "-j", "2", "-T", "3", "-n"]);
    let reads = pgbench(proxy.ro_port, &["-S", "-c", "4", "-j", "2", "-T", "3", "-n"]);
    println!("pgbench through the proxy:\n{writes}\n{reads}");
    for report in [&writes, &reads] {
        assert!(report_number(report, "number of transactions actually processed") > 0.0, "{report}");
        assert_eq!(report_number(report, "number of failed transactions"), 0.0, "{report}");
    }
    let history = psql(&conninfo(c.pg_port(leader), "sslmode=disable"), "SELECT count(*) FROM pgbench_history");
    assert_ne!(history, "0", "TPC-B wrote history rows on the primary");

    // psql on the read-only port lands on a replica.
    let ro = psql(
        &conninfo(proxy.ro_port, "sslmode=disable"),
        "SELECT pg_is_in_recovery()::text || ' ' || inet_server_port()",
    );
    let (in_recovery, port) = ro.split_once(' ').unwrap();
    assert_eq!(in_recovery, "true");
    assert!(replicas.contains(&port.parse().unwrap()), "{ro}");

    // Least connections: four sessions spread two and two; with both sessions on one replica
    // closed, the next two both go to that replica (round robin would split them).
    let mut open = Vec::new();
    for _ in 0..4 {
        let db = support::connect_superuser(proxy.ro_port).await.expect("read-only session");
        let port = server_port(&db).await;
        open.push((port, db));
    }
    let on = |open: &[(u16, Client)], p: u16| open.iter().filter(|(q, _)| *q == p).count();
    assert_eq!((on(&open, replicas[0]), on(&open, replicas[1])), (2, 2), "four sessions spread evenly");
    open.retain(|(p, _)| *p != replicas[0]);
    // The proxy notices a session's end when PostgreSQL closes it after the client's Terminate.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..2 {
        let db = support::connect_superuser(proxy.ro_port).await.expect("read-only session");
        assert_eq!(server_port(&db).await, replicas[0], "the new session goes to the least-loaded replica");
        open.push((replicas[0], db));
    }
}

/// A small seeded generator (xorshift64*), so a failing barrage can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A valid StartupMessage for the superuser, protocol 3.0.
fn startup_message() -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", support::SUPERUSER), ("database", "postgres")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// One malformed conversation: what the client sends first.
fn malformed(rng: &mut Rng) -> Vec<u8> {
    let mut start = startup_message();
    match rng.below(7) {
        // Random bytes.
        0 => {
            let n = 1 + rng.below(300);
            rng.bytes(n)
        }
        // A startup length far beyond any limit.
        1 => vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0],
        // A plausible length with a random body.
        2 => {
            let n = 8 + rng.below(200);
            let mut m = (n as u32).to_be_bytes().to_vec();
            m.extend(rng.bytes(n - 4));
            m
        }
        // The real startup message with bytes flipped.
        3 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(start.len());
                start[i] ^= 1 << rng.below(8);
            }
            start
        }
        // A good startup, then a message with an impossible length.
        4 => {
            start.extend_from_slice(b"Q\x7f\xff\xff\xff");
            start
        }
        // A good startup, then random frames.
        5 => {
            let n = 5 + rng.below(100);
            start.extend(rng.bytes(n));
            start
        }
        // SSLRequest followed at once by garbage (no TLS handshake).
        _ => {
            let mut m = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
            let n = 1 + rng.below(60);
            m.extend(rng.bytes(n));
            m
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_connections_close_only_themselves() {
    let c = Cluster::start(1, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let mut proxy = Proxy::start(&c, "");
    let healthy = support::connect_superuser(proxy.rw_port).await.expect("a healthy session");
    assert_eq!(server_port(&healthy).await, c.pg_port(leader));
    healthy.batch_execute("CREATE TABLE barrage (n int)").await.unwrap();

    let seed = std::env::var("RAMPART_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(support::random_u64);
    println!("malformed-connection barrage, seed {seed} (RAMPART_FUZZ_SEED={seed} replays it)");
    let mut rng = Rng(seed | 1);
    let port = proxy.rw_port;
    let began = Instant::now();
    let rounds = 300;
    let mut refused = 0;
    for i in 0..rounds {
        let sent = malformed(&mut rng);
        // Each conversation ends: the client says all it has to say and half-closes, and the
        // proxy must close its side, whether it refused the bytes itself (08P01), passed them
        // to PostgreSQL, which refused them, or was still waiting for the rest of a message.
        let (closed, error) = tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(&sent);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut answer = Vec::new();
            let closed = match s.read_to_end(&mut answer) {
                Ok(_) => true,
                // A reset after the proxy closed with unread bytes is also a close.
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            };
            (closed, answer.windows(5).any(|w| w == b"08P01"))
        })
        .await
        .unwrap();
        assert!(closed, "seed {seed}: conversation {i} was left hanging");
        refused += usize::from(error);
        if i % 50 == 0 {
            healthy
                .batch_execute(&format!("INSERT INTO barrage VALUES ({i})"))
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: the healthy session broke during conversation {i}: {e}"));
        }
    }
    println!("{rounds} malformed conversations in {:?}, {refused} refused with 08P01", began.elapsed());
    assert!(refused > 0, "seed {seed}: the proxy's own protocol checks refused nothing");
    assert!(proxy.is_running(), "the proxy survived");
    let count: i64 = healthy.query_one("SELECT count(*) FROM barrage", &[]).await.unwrap().get(0);
    assert_eq!(count, (rounds / 50) as i64, "every write of the healthy session landed");
    let fresh = support::connect_superuser(proxy.rw_port).await.expect("new sessions still work");
    assert_eq!(server_port(&fresh).await, c.pg_port(leader));
}
