//! Story: the pooling proxy authenticates clients itself, then logs in to PostgreSQL as them
//! with what they proved. Against a real PostgreSQL 15 (one Rampart node):
//! * a client proves its password by SCRAM to the proxy, which holds only the verifier read from
//!   `pg_authid`; the proxy then logs in as that user with the client's key, never having seen
//!   the password (PgBouncer's SCRAM pass-through);
//! * where the server's verifier is not the proxy's (another salt), the proxy says so instead
//!   of failing obscurely;
//! * a user with an MD5 password logs in through an `md5` rule with the MD5 secret only;
//! * a cleartext password sent by the client serves a `password` rule;
//! * the secrets come from the server by `auth_query` as well: the verifier `pg_authid` holds, and
//!   nothing for an unknown user or a password past its `VALID UNTIL`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rampart_proxy::auth_file::Secret;
use rampart_proxy::auth_query::{self, Answer, Lookup};
use rampart_proxy::client_auth::{ClientAuth, Credentials, Password, Progress, Who, PASSWORD_MESSAGE};
use rampart_proxy::frame::{split_frame, Frame};
use rampart_proxy::hba::{Decision, Method};
use rampart_proxy::server_auth::{LoginError, LoginStep, ServerLogin};
use rampart_proxy::startup::{ProtocolVersion, StartupMessage};
use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;

const HBA: &str = "[\"local all all trust\", \
    \"host replication replicator 127.0.0.1/32 scram-sha-256\", \
    \"host all md5_user 127.0.0.1/32 md5\", \
    \"host all clear_user 127.0.0.1/32 password\", \
    \"host all all 127.0.0.1/32 scram-sha-256\"]";

/// A raw protocol connection to PostgreSQL, logged in by the proxy's own code.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Logs in to PostgreSQL on `port` as `user` with `login`, up to ReadyForQuery.
    fn log_in(port: u16, user: &str, mut login: ServerLogin) -> Result<Raw, LoginError> {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Raw { s, buf: Default::default() };
        let startup = StartupMessage::new(ProtocolVersion::V3_0)
            .with("user", user.to_string())
            .unwrap()
            .with("database", "postgres")
            .unwrap();
        let mut out = Default::default();
        startup.encode(&mut out);
        raw.s.write_all(&out).unwrap();
        while let LoginStep::Send(bytes) = login.on_message(&raw.next())? {
            raw.s.write_all(&bytes).unwrap();
        }
        while raw.next().tag() != b'Z' {}
        Ok(raw)
    }

    fn next(&mut self) -> Frame {
        loop {
            if let Some(f) = split_frame(&mut self.buf, 1 << 20).unwrap() {
                return f;
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).unwrap();
            assert!(n > 0, "PostgreSQL closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// `SELECT current_user`.
    fn who_am_i(&mut self) -> String {
        let query = Frame::new(b'Q', b"SELECT current_user\0");
        self.s.write_all(query.as_bytes()).unwrap();
        loop {
            let f = self.next();
            if f.tag() == b'D' {
                // One column: count (2), length (4), text.
                let name = String::from_utf8(f.body()[6..].to_vec()).unwrap();
                while self.next().tag() != b'Z' {}
                return name;
            }
            assert_ne!(f.tag(), b'E', "the query failed");
        }
    }

    /// Runs the default `auth_query` for `user`.
    fn auth_query(&mut self, user: &str) -> Lookup {
        self.s.write_all(&auth_query::request(auth_query::DEFAULT, user)).unwrap();
        let mut answer = Answer::default();
        loop {
            match answer.on_message(&self.next()).unwrap() {
                Lookup::Pending => {}
                done => return done,
            }
        }
    }
}

/// Logs in to PostgreSQL on `port` as `user` with `login`, then asks who it is.
fn log_in_and_ask(port: u16, user: &str, login: ServerLogin) -> Result<String, LoginError> {
    Ok(Raw::log_in(port, user, login)?.who_am_i())
}

/// A client (postgres-protocol's, as tokio-postgres uses it) proving `password` by SCRAM to the
/// proxy, which holds `stored`: what the client proved.
fn client_proves(user: &str, stored: &Secret, password: &str) -> Credentials {
    let who = Who { user: user.into(), database: "postgres".into(), host: "127.0.0.1".into(), ssl: false };
    let (mut proxy, first) =
        ClientAuth::begin(who, Decision { method: Method::ScramSha256, line: Some(1) }, Some(stored.clone()));
    assert!(matches!(first, Progress::Send(_)));
    let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let mut initial = b"SCRAM-SHA-256\0".to_vec();
    initial.extend_from_slice(&(client.message().len() as u32).to_be_bytes());
    initial.extend_from_slice(client.message());
    let Progress::Send(cont) = proxy.on_message(&Frame::new(PASSWORD_MESSAGE, &initial)) else { panic!() };
    client.update(&cont[9..]).unwrap();
    match proxy.on_message(&Frame::new(PASSWORD_MESSAGE, client.message())) {
        Progress::Done(_, Ok(creds)) => creds,
        other => panic!("the client did not log in to the proxy: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_logs_in_to_postgresql_with_what_the_client_proved() {
    let options = ClusterOptions::default().tweak(|_, mut n| {
        n.pg_settings.push(("pg_hba".into(), HBA.into()));
        n
    });
    let c = Cluster::start(1, options);
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader");
    let port = c.pg_port(leader);
    let db = support::connect_superuser(port).await.unwrap();
    db.batch_execute(
        "CREATE ROLE scram_user LOGIN PASSWORD 'scram-secret';
         SET password_encryption = 'md5';
         CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret';
         RESET password_encryption;
         CREATE ROLE clear_user LOGIN PASSWORD 'clear-secret';
         CREATE ROLE expired_user LOGIN PASSWORD 'old-secret' VALID UNTIL '2000-01-01';",
    )
    .await
    .unwrap();
    let stored = |user: &str| {
        let db = &db;
        let user = user.to_string();
        async move {
            let row = db.query_one("SELECT rolpassword FROM pg_authid WHERE rolname = $1", &[&user]).await.unwrap();
            Secret::parse(&row.get::<_, String>(0)).unwrap()
        }
    };

    let scram = stored("scram_user").await;
    let scram_again = scram.clone();
    let md5 = stored("md5_user").await;
    let results = tokio::task::spawn_blocking(move || {
        // SCRAM pass-through: the proxy never sees the password.
        let proved = client_proves("scram_user", &scram, "scram-secret");
        assert!(matches!(proved, Credentials::ScramKey(_)), "{proved:?}");
        let as_scram = log_in_and_ask(port, "scram_user", ServerLogin::new("scram_user", proved.clone(), Some(scram)));
        // Another verifier for the same password (another salt): the key does not fit it.
        let elsewhere = Secret::Scram(rampart_proxy::scram::Verifier::for_password("scram-secret"));
        let proved_elsewhere = client_proves("scram_user", &elsewhere, "scram-secret");
        let mismatch =
            log_in_and_ask(port, "scram_user", ServerLogin::new("scram_user", proved_elsewhere, Some(elsewhere)));
        // MD5 with the stored secret only.
        let as_md5 = log_in_and_ask(port, "md5_user", ServerLogin::new("md5_user", Credentials::Md5, Some(md5)));
        // A cleartext password the client sent.
        let password = Credentials::Password(Password("clear-secret".into()));
        let as_clear = log_in_and_ask(port, "clear_user", ServerLogin::new("clear_user", password, None));
        // auth_query, run as the superuser (an auth_user), reads the same secrets.
        let superuser = Credentials::Password(Password(support::SUPERUSER_PASSWORD.into()));
        let mut admin =
            Raw::log_in(port, support::SUPERUSER, ServerLogin::new(support::SUPERUSER, superuser, None)).unwrap();
        let lookups = ["scram_user", "nobody", "expired_user", "x' OR 'a'='a"].map(|u| admin.auth_query(u));
        (as_scram, mismatch, as_md5, as_clear, lookups)
    })
    .await
    .unwrap();
    let (as_scram, mismatch, as_md5, as_clear, lookups) = results;
    assert_eq!(as_scram.unwrap(), "scram_user");
    let e = mismatch.unwrap_err().to_string();
    assert!(e.contains("differs from the proxy's"), "{e}");
    assert!(!e.contains("scram-secret"), "no secret in errors: {e}");
    assert_eq!(as_md5.unwrap(), "md5_user");
    assert_eq!(as_clear.unwrap(), "clear_user");
    let [scram_found, nobody, expired, injected] = lookups;
    assert_eq!(scram_found, Lookup::Found(scram_again), "the verifier pg_authid holds");
    assert_eq!(nobody, Lookup::NotFound);
    assert_eq!(expired, Lookup::NotFound, "past VALID UNTIL");
    assert_eq!(injected, Lookup::NotFound, "a name is a name, not SQL");
}
