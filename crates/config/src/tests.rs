//! End-to-end tests of [`crate::parse`]: the seed configuration, each refusal with its line,
//! warnings, environment overrides and secrecy.

use rampart_core::DynamicConfig;
use serde_json::json;

use crate::{parse, ConfigError, Loaded, Place, Protocol};

/// The Patroni configuration from seed 000 (a tutorial), assembled from the pieces its prose
/// splits it into, with the 192.168.5.x addresses moved to 127.0.0.1 on distinct ports. The
/// tab-indented comment and `users:` lines and the legacy `bootstrap.users` section are as in the
/// seed.
const SEED_000: &str = r#"
# PostgreSQLの範囲
scope: postgres
# PostgreSQLデータベースの名前空間
namespace: /db/
# PostgreSQLインスタンスの名前
name: postgres01

# Patroni REST APIの設定
restapi:
    # REST APIがリッスンするIPアドレスとポート
    listen: 127.0.0.1:18008

    # クライアントが接続するIPアドレスとポート
    connect_address: 127.0.0.1:18008
# Patroni Etcdの設定
etcd3:
    # Etcdサーバーのホストアドレスとポート
    host: 127.0.0.1:12379

# Patroniブートストラップ構成
bootstrap:
    # 分散構成ストア(DCS)の構成パラメータ
    dcs:
        ttl: 30
        loop_wait: 10
        retry_timeout: 10
        maximum_lag_on_failover: 1048576
        postgresql:
            # ブートストラップ時にpg_rewindを使用
            use_pg_rewind: true

    # Initdb構成
    initdb:
        - auth: scram-sha-256
        - encoding: UTF8
        - data-checksums

    # レプリケーションおよび一般的なアクセス用のpg_hba.confエントリ
    pg_hba:
        - host replication replicator 127.0.0.1/32 scram-sha-256
        - host replication replicator 127.0.0.1/0 scram-sha-256
        - host replication replicator 127.0.0.1/0 scram-sha-256
        - host replication replicator 127.0.0.1/0 scram-sha-256
        - host all all 0.0.0.0/0 scram-sha-256

		# デフォルトのユーザーadminをパスワードadminで追加
		users:
        admin:
            password: admin
            options:
                - createrole
                - createdb

# Patroni PostgreSQL Configuration
postgresql:
    # PostgreSQL サーバのリスニングアドレスとポート
    listen: 127.0.0.1:15432
    # PostgreSQL クライアントの接続アドレス
    connect_address: 127.0.0.1:15432
    # PostgreSQL のデータディレクトリ
    data_dir: /var/lib/patroni
    # pgpass ファイルへのパス
    pgpass: /tmp/pgpass

    # 認証の設定
    authentication:
        # ユーザー資格情報のレプリケーション
        replication:
            username: replicator
            password: rep-pass
        # スーパーユーザーの資格情報
        superuser:
            username: postgres
            password: secretpassword

    # その他の PostgreSQL パラメータ
    parameters:
        # Unix ソケットのディレクトリ
        unix_socket_directories: '.'
        # パスワードの暗号化メソッド
        password_encryption: 'scram-sha-256'

# Patroni タグの設定
tags:
    # ノードが障害時に昇格しないように防止
    nofailover: false
    # ロードバランサがこのノードを考慮しないように防止
    noloadbalance: false
    # クローンによるレプリカの作成を防止
    clonefrom: false
    # 同期レプリケーションの強制を防止
    nosync: false

"#;

const MINIMAL: &str = "\
scope: pg
name: n1
restapi:
  listen: 127.0.0.1:8008
etcd3:
  host: 127.0.0.1:2379
postgresql:
  listen: 127.0.0.1:5432
  data_dir: /data
  authentication:
    replication:
      username: rep
";

/// The smallest member file in 10 lines (so a section appended to it starts on line 11): what
/// the unit tests of one section start from. ([`MINIMAL`] spells the authentication out in block
/// style, which the tests of this file rely on.)
pub(crate) const SECTION_BASE: &str = "\
scope: pg
name: n1
restapi:
  listen: 127.0.0.1:8008
etcd3:
  host: 127.0.0.1:2379
postgresql:
  listen: 127.0.0.1:5432
  data_dir: /data
  authentication: {replication: {username: rep}}
";

/// [`SECTION_BASE`] with `section` appended, parsed as file `name` without overrides.
pub(crate) fn minimal_with(section: &str, name: &str) -> Result<Loaded, ConfigError> {
    parse(&format!("{SECTION_BASE}{section}"), name, no_env())
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn ok(text: &str) -> Loaded {
    parse(text, "node1.yml", no_env()).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    err_env(text, no_env())
}

fn err_env(text: &str, vars: Vec<(String, String)>) -> String {
    match parse(text, "node1.yml", vars) {
        Ok(l) => panic!("accepted: {:?}", l.config),
        Err(e) => e.to_string(),
    }
}

/// MINIMAL with `line` (1-based) replaced by `new` (which may hold several lines).
fn edit(line: usize, new: &str) -> String {
    let mut lines: Vec<&str> = MINIMAL.lines().collect();
    lines[line - 1] = new;
    lines.join("\n") + "\n"
}

#[test]
fn seed_000_parses_with_the_right_values() {
    let loaded = parse(SEED_000, "seed.yml", no_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert_eq!(
        loaded.warnings[0],
        "seed.yml:48: tab characters used for indentation (not valid YAML); read as 4 spaces"
    );
    // The seed puts the socket in the data directory ('.'), which breaks pg_rewind later.
    assert!(loaded.warnings[1].contains("postgresql.parameters.unix_socket_directories"), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!((c.scope.as_str(), c.namespace.as_str(), c.name.as_str()), ("postgres", "/db/", "postgres01"));
    assert_eq!(c.prefix().as_str(), "/db/postgres/");

    assert_eq!(c.restapi.listen.to_string(), "127.0.0.1:18008");
    assert_eq!(c.restapi.api_url(), "http://127.0.0.1:18008/patroni");
    assert!(c.restapi.authentication.is_none());

    assert_eq!(c.etcd_endpoints(), ["http://127.0.0.1:12379"]);
    assert_eq!(c.etcd3.protocol, Protocol::Http);

    let dcs = c.bootstrap_dcs();
    assert_eq!((dcs.ttl, dcs.loop_wait, dcs.retry_timeout), (30, 10, 10));
    assert_eq!(dcs.maximum_lag_on_failover, 1_048_576);
    assert!(dcs.postgresql.use_pg_rewind);
    assert_eq!(c.bootstrap.initdb, ["--auth=scram-sha-256", "--encoding=UTF8", "--data-checksums"]);
    assert_eq!(c.bootstrap.pg_hba.len(), 5);
    assert_eq!(c.bootstrap.pg_hba[4], "host all all 0.0.0.0/0 scram-sha-256");
    let admin = &c.bootstrap.users["admin"];
    assert_eq!(admin.password.as_ref().map(|p| p.expose()), Some("admin"));
    assert_eq!(admin.options, ["createrole", "createdb"]);
    assert_eq!(c.bootstrap.users.len(), 1);

    let pg = &c.postgresql;
    assert_eq!(pg.listen_hosts(), ["127.0.0.1"]);
    assert_eq!(pg.listen_port(), 15432);
    assert_eq!(pg.local_host(), "127.0.0.1");
    assert_eq!(pg.connect_host_port(), ("127.0.0.1".to_string(), 15432));
    assert_eq!(pg.conn_url(), "postgres://127.0.0.1:15432/postgres");
    assert_eq!(pg.data_dir.to_str(), Some("/var/lib/patroni"));
    assert_eq!(pg.pgpass.as_ref().and_then(|p| p.to_str()), Some("/tmp/pgpass"));
    assert_eq!(pg.bin_dir, None);
    assert_eq!(pg.authentication.superuser.username, "postgres");
    assert_eq!(pg.authentication.superuser.password.as_ref().unwrap().expose(), "secretpassword");
    assert_eq!(pg.authentication.replication.username, "replicator");
    assert_eq!(pg.authentication.replication.password.as_ref().unwrap().expose(), "rep-pass");
    assert!(pg.authentication.rewind.is_none());
    assert_eq!(pg.parameters["unix_socket_directories"], json!("."));
    assert_eq!(pg.parameters["password_encryption"], json!("scram-sha-256"));
    assert_eq!(pg.pg_ctl_timeout, 60);
    assert!(!pg.remove_data_directory_on_rewind_failure);
    assert_eq!(pg.use_pg_rewind, None);
    assert!(c.use_pg_rewind(&dcs));

    assert!(!c.tags.nofailover() && !c.tags.noloadbalance && !c.tags.clonefrom && !c.tags.nosync());
    assert!(c.tags.can_fail_over());
}

#[test]
fn debug_output_holds_no_password() {
    let c = parse(
        SEED_000,
        "seed.yml",
        env(&[("PATRONI_RESTAPI_PASSWORD", "api-pass-1"), ("PATRONI_RESTAPI_USERNAME", "u")]),
    )
    .unwrap()
    .config;
    let dump = format!("{c:?}");
    for secret in ["secretpassword", "rep-pass", "api-pass-1", "password: \"admin\""] {
        assert!(!dump.contains(secret), "{secret} in {dump}");
    }
    assert!(dump.contains("***"));
}

#[test]
fn minimal_config_and_defaults() {
    let l = ok(MINIMAL);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = l.config;
    assert_eq!(c.namespace, "/service");
    assert_eq!(c.prefix().as_str(), "/service/pg/");
    assert_eq!(c.restapi.connect_address, c.restapi.listen);
    assert_eq!(c.postgresql.connect_address.to_string(), "127.0.0.1:5432");
    assert_eq!(c.postgresql.authentication.superuser.username, "postgres");
    assert_eq!(c.bootstrap_dcs(), DynamicConfig::default());
    assert!(c.bootstrap.initdb.is_empty());
    assert!(!c.use_pg_rewind(&DynamicConfig::default()));
}

#[test]
fn malformed_yaml_is_refused_with_its_line() {
    let e = err(&edit(6, "  host: [127.0.0.1:2379"));
    assert!(e.starts_with("node1.yml:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
    let e = err(&edit(8, "  listen: 127.0.0.1:5432\n    data_dir: /x"));
    assert!(e.starts_with("node1.yml:9: invalid YAML"), "{e}");
}

#[test]
fn wrong_types_name_line_and_key() {
    let e = err(&edit(9, "  data_dir: /data\n  pg_ctl_timeout: soon"));
    assert_eq!(
        e,
        "node1.yml:10: postgresql.pg_ctl_timeout: invalid type: string \"soon\", expected a whole number of at least 0"
    );
    let e = err(&edit(4, "  listen: [127.0.0.1, 8008]"));
    assert_eq!(e, "node1.yml:4: restapi.listen: expected a string, got a list");
    let e = err(&edit(5, "etcd3:\n  protocol: ftp"));
    assert!(e.starts_with("node1.yml:6: etcd3.protocol: unknown variant `ftp`"), "{e}");
    let e = err(&MINIMAL.replace("restapi:\n  listen: 127.0.0.1:8008\n", "restapi: 8008\n"));
    assert_eq!(e, "node1.yml:3: restapi: expected a mapping, got a single value");
}

#[test]
fn missing_required_keys() {
    let e = err(&edit(9, "  bin_dir: /usr/bin"));
    assert_eq!(e, "node1.yml:7: postgresql.data_dir: missing required key");
    let e = err(&edit(2, "# no name"));
    assert_eq!(e, "node1.yml: name: missing required key");
    let e = err(&edit(12, "      password: x"));
    assert_eq!(e, "node1.yml:11: postgresql.authentication.replication.username: missing required key");
    let e = err(&edit(4, "  connect_address: 127.0.0.1:8008"));
    assert_eq!(e, "node1.yml:3: restapi.listen: missing required key");
}

#[test]
fn bad_host_port() {
    let e = err(&edit(4, "  listen: 8008"));
    assert_eq!(e, "node1.yml:4: restapi.listen: expected host:port, got \"8008\"");
    let e = err(&edit(8, "  listen: localhost"));
    assert_eq!(e, "node1.yml:8: postgresql.listen: expected host[,host]:port, got \"localhost\"");
    let e = err(&edit(4, "  listen: 0.0.0.0:8008\n  connect_address: 0.0.0.0:8008"));
    assert!(e.starts_with("node1.yml:5: restapi.connect_address: 0.0.0.0 means every interface"), "{e}");
    let e = err(&edit(6, "  hosts: [127.0.0.1:2379, 'http://h:2379']"));
    assert_eq!(e, "node1.yml:6: etcd3.hosts: expected host[:port], got \"http://h:2379\"");
}

#[test]
fn timing_rule_is_checked_on_bootstrap_dcs() {
    // Lowered as Patroni does, with its warning.
    let text = format!("{MINIMAL}bootstrap:\n  dcs:\n    loop_wait: 10\n    ttl: 20\n");
    let l = ok(&text);
    assert_eq!((l.config.bootstrap.dcs.loop_wait, l.config.bootstrap.dcs.retry_timeout), (1, 9));
    assert_eq!(
        l.warnings,
        ["node1.yml:16: bootstrap.dcs.ttl: Violated the rule \"loop_wait + 2*retry_timeout <= ttl\", where ttl=20. \
          Adjusting loop_wait from 10 to 1 and retry_timeout from 10 to 9"]
    );
    let text = format!("{MINIMAL}bootstrap:\n  dcs:\n    loop_wait: 0\n");
    let e = err(&text);
    assert!(e.starts_with("node1.yml:15: bootstrap.dcs.loop_wait: 0 is below the minimum"), "{e}");
    // Where the offending key is a default, the section is named.
    let text = format!("{MINIMAL}bootstrap:\n  dcs:\n    ttl: 2\n");
    let e = err(&text);
    assert!(e.starts_with("node1.yml:15: bootstrap.dcs.ttl: 2 is below the minimum"), "{e}");
    let text = format!("{MINIMAL}bootstrap:\n  dcs:\n    ttl: thirty\n");
    let e = err(&text);
    assert_eq!(
        e,
        "node1.yml:15: bootstrap.dcs.ttl: invalid type: string \"thirty\", expected a whole number of at least 0"
    );
}

#[test]
fn etcd_sections() {
    let e = err(&edit(6, "  protocol: http"));
    assert_eq!(e, "node1.yml:5: etcd3: no etcd3 host(s): set etcd3.hosts or etcd3.host");
    let v2_section = |body: &str| MINIMAL.replace("etcd3:\n  host: 127.0.0.1:2379\n", &format!("etcd:\n{body}\n"));
    let e = err(&v2_section("# nothing"));
    assert_eq!(e, "node1.yml:5: etcd: expected a mapping with host or hosts");
    let e = err(&v2_section("  protocol: http"));
    assert_eq!(e, "node1.yml:5: etcd: no etcd host(s): set etcd.hosts or etcd.host");
    // Patroni's etcd (v2) section alone (seed 002): its hosts are used with the v3 API, with a warning.
    let v2 = ok(&v2_section("  hosts: \"127.0.0.1:2379,127.0.0.2:2379, 127.0.0.3:2379\""));
    assert_eq!(v2.config.etcd_endpoints(), ["http://127.0.0.1:2379", "http://127.0.0.2:2379", "http://127.0.0.3:2379"]);
    assert!(v2.warnings[0].starts_with("node1.yml:5: etcd: Rampart speaks only etcd's v3 API"), "{:?}", v2.warnings);
    let e = err(&v2_section("  hosts: http://h:2379"));
    assert_eq!(e, "node1.yml:6: etcd.hosts: expected host[:port], got \"http://h:2379\"");
    let e = err(&edit(5, "consul:"));
    assert!(e.starts_with("node1.yml:5: consul is not supported"), "{e}");
    let e = err(&edit(5, "# none"));
    assert!(e.starts_with("node1.yml: etcd3: missing required section"), "{e}");

    let l = ok(&format!("{MINIMAL}etcd:\n  host: 127.0.0.1:2379\n"));
    assert_eq!(l.warnings, ["node1.yml:13: etcd section ignored: Rampart uses the etcd3 section only"]);
}

#[test]
fn hosts_as_list_or_csv() {
    let list = ok(&edit(6, "  hosts:\n    - 10.0.0.1:2379\n    - 10.0.0.2\n  protocol: https")).config;
    assert_eq!(list.etcd_endpoints(), ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]);
    let csv = ok(&edit(6, "  hosts: 10.0.0.1:2379, 10.0.0.2:2380")).config;
    assert_eq!(csv.etcd_endpoints(), ["http://10.0.0.1:2379", "http://10.0.0.2:2380"]);
    let flow = ok(&edit(6, "  hosts: [10.0.0.1:2379, '[::1]:2379']")).config;
    assert_eq!(flow.etcd_endpoints(), ["http://10.0.0.1:2379", "http://[::1]:2379"]);
    // hosts wins over host, as in Patroni.
    let both = ok(&edit(6, "  host: 10.0.0.9:1\n  hosts: 10.0.0.1:2379")).config;
    assert_eq!(both.etcd_endpoints(), ["http://10.0.0.1:2379"]);
}

#[test]
fn unknown_keys_warn_with_their_line() {
    let text = "\
scope: pg
name: n1
thread_pool_size: 4
restapi:
  listen: 127.0.0.1:8008
  foo: 1
etcd3:
  host: 127.0.0.1:2379
bootstrap:
  dcs:
    synchronous_mode: true
    postgresql:
      parameters:
        max_connections: 100
  users:
    admin:
      password: x
      anything: 1
postgresql:
  listen: 127.0.0.1:5432
  data_dir: /data
  use_unix_socket_repl: true
  authentication:
    replication:
      username: rep
      sslmode: require
  parameters:
    whatever_param: 1
  callbacks:
    on_start: /bin/true
tags:
  zone: a
log:
  level: INFO
watchdog:
  mode: off
";
    let l = ok(text);
    assert_eq!(
        l.warnings,
        [
            "node1.yml:3: unknown key thread_pool_size (ignored)",
            "node1.yml:6: unknown key restapi.foo (ignored)",
            "node1.yml:22: unknown key postgresql.use_unix_socket_repl (ignored)",
        ]
    );
    let c = l.config;
    assert_eq!(c.postgresql.authentication.replication.options["sslmode"], "require");
    assert_eq!(c.bootstrap.dcs.synchronous_mode, Some(rampart_core::SyncMode::On));
    assert_eq!(c.bootstrap.dcs.postgresql.parameters["max_connections"], json!(100));
    assert_eq!(c.tags.other["zone"], json!("a"));
    assert_eq!(c.postgresql.callbacks["on_start"], "/bin/true");
    assert_eq!(c.log.level, crate::LogLevel::Info);
    assert_eq!(c.watchdog.mode, crate::WatchdogMode::Off);
}

#[test]
fn conflicting_tags_are_warned_about_in_patronis_words() {
    let l = ok(&format!("{MINIMAL}tags:\n  failover_priority: '1'\n  nofailover: true\n"));
    assert_eq!(
        l.warnings,
        ["node1.yml:13: Conflicting configuration between nofailover: True and failover_priority: 1. Defaulting to nofailover: True"]
    );
    assert!(!l.config.tags.can_fail_over());
}

#[test]
fn role_libpq_parameters_are_kept_and_checked() {
    let text = MINIMAL.replace(
        "      username: rep\n",
        "      username: rep\n      sslmode: verify-ca\n      sslrootcert: /etc/ssl/root.crt\n      \
         sslcert: /etc/ssl/rep.crt\n      sslkey: /etc/ssl/rep.key\n      sslpassword: phrase\n    \
         rewind:\n      username: rw\n      channel_binding: require\n",
    );
    let l = ok(&text);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let auth = &l.config.postgresql.authentication;
    let o = &auth.replication.options;
    assert_eq!((o["sslmode"].as_str(), o["sslrootcert"].as_str()), ("verify-ca", "/etc/ssl/root.crt"));
    assert_eq!((o["sslcert"].as_str(), o["sslkey"].as_str()), ("/etc/ssl/rep.crt", "/etc/ssl/rep.key"));
    assert!(!o.contains_key("sslpassword"), "the pass phrase is kept as a secret, not an option");
    assert_eq!(auth.replication.sslpassword.as_ref().unwrap().expose(), "phrase");
    assert!(!format!("{:?}", l.config).contains("phrase\""), "the pass phrase never prints");
    assert_eq!(auth.rewind.as_ref().unwrap().options["channel_binding"], "require");

    let e = err(&MINIMAL.replace("      username: rep\n", "      username: rep\n      sslmode: sometimes\n"));
    assert!(e.contains("postgresql.authentication.replication.sslmode") && e.contains("verify-full"), "{e}");
}

#[test]
fn env_overrides_patroni_names() {
    let vars = env(&[
        ("PATRONI_NAME", "from-env"),
        ("PATRONI_SCOPE", "other"),
        ("PATRONI_NAMESPACE", "/ns"),
        ("PATRONI_RESTAPI_CONNECT_ADDRESS", "10.0.0.5:8008"),
        ("PATRONI_RESTAPI_USERNAME", "admin"),
        ("PATRONI_RESTAPI_PASSWORD", "api-secret"),
        ("PATRONI_POSTGRESQL_DATA_DIR", "/env/data"),
        ("PATRONI_POSTGRESQL_BIN_DIR", "/usr/lib/postgresql/17/bin"),
        ("PATRONI_SUPERUSER_PASSWORD", "su-secret"),
        ("PATRONI_REWIND_USERNAME", "rewinder"),
        ("PATRONI_ETCD3_HOSTS", "10.0.0.1:2379,10.0.0.2:2379"),
        ("PATRONI_ETCD3_PROTOCOL", "https"),
        ("PATRONI_ETCD3_USERNAME", "root"),
        ("PATRONI_ETCD3_PASSWORD", "etcd-secret"),
    ]);
    let c = &parse(MINIMAL, "node1.yml", vars).unwrap().config;
    assert_eq!((c.name.as_str(), c.scope.as_str(), c.namespace.as_str()), ("from-env", "other", "/ns"));
    assert_eq!(c.restapi.api_url(), "http://10.0.0.5:8008/patroni");
    let auth = c.restapi.authentication.as_ref().unwrap();
    assert_eq!((auth.username.as_str(), auth.password.as_ref().unwrap().expose()), ("admin", "api-secret"));
    assert_eq!(c.postgresql.data_dir.to_str(), Some("/env/data"));
    assert_eq!(c.postgresql.bin_dir.as_ref().unwrap().to_str(), Some("/usr/lib/postgresql/17/bin"));
    assert_eq!(c.postgresql.authentication.superuser.password.as_ref().unwrap().expose(), "su-secret");
    assert_eq!(c.postgresql.authentication.rewind.as_ref().unwrap().username, "rewinder");
    assert_eq!(c.etcd3.password.as_ref().unwrap().expose(), "etcd-secret");
    assert_eq!(c.etcd_endpoints(), ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]);
}

#[test]
fn env_sets_the_rest_apis_client_certificates_and_allowlist() {
    let vars = env(&[
        ("PATRONI_RESTAPI_CERTFILE", "/etc/patroni/api.crt"),
        ("PATRONI_RESTAPI_KEYFILE", "/etc/patroni/api.key"),
        ("PATRONI_RESTAPI_CAFILE", "/etc/patroni/ca.crt"),
        ("PATRONI_RESTAPI_VERIFY_CLIENT", "required"),
        ("PATRONI_RESTAPI_ALLOWLIST", "10.0.0.0/8, 127.0.0.1"),
    ]);
    let c = &parse(MINIMAL, "node1.yml", vars).unwrap().config;
    assert_eq!(c.restapi.verify_client, crate::ClientCertMode::Required);
    assert_eq!(c.restapi.allowlist, ["10.0.0.0/8", "127.0.0.1"]);
    let listed = env(&[("PATRONI_RESTAPI_ALLOWLIST", "['192.168.0.0/16']")]);
    assert_eq!(parse(MINIMAL, "node1.yml", listed).unwrap().config.restapi.allowlist, ["192.168.0.0/16"]);
}

#[test]
fn rampart_prefix_takes_precedence() {
    let vars = env(&[("PATRONI_NAME", "patroni-name"), ("RAMPART_NAME", "rampart-name"), ("PATRONI_SCOPE", "s2")]);
    let c = parse(MINIMAL, "node1.yml", vars).unwrap().config;
    assert_eq!(c.name, "rampart-name");
    assert_eq!(c.scope, "s2");
}

#[test]
fn env_can_create_missing_sections() {
    let text =
        "scope: pg\nname: n1\npostgresql:\n  data_dir: /d\n  authentication:\n    replication:\n      username: r\n";
    let vars = env(&[
        ("RAMPART_RESTAPI_LISTEN", "0.0.0.0:8008"),
        ("PATRONI_ETCD3_HOST", "127.0.0.1:2379"),
        ("PATRONI_POSTGRESQL_LISTEN", "*:5432"),
    ]);
    let l = parse(text, "node1.yml", vars).unwrap();
    let c = &l.config;
    assert_eq!(c.restapi.listen.to_string(), "0.0.0.0:8008");
    assert_eq!(c.restapi.api_url(), "http://127.0.0.1:8008/patroni");
    assert_eq!(c.postgresql.listen_hosts(), ["*"]);
    assert_eq!(c.postgresql.local_host(), "127.0.0.1");
    assert_eq!(c.postgresql.conn_url(), "postgres://127.0.0.1:5432/postgres");
    assert_eq!(
        l.warnings,
        [
            "environment variable RAMPART_RESTAPI_LISTEN: restapi.connect_address: not set and restapi.listen is a wildcard; publishing 127.0.0.1:8008, which other hosts cannot reach",
            "environment variable PATRONI_POSTGRESQL_LISTEN: postgresql.connect_address: not set and postgresql.listen is a wildcard; publishing 127.0.0.1:5432, which other hosts cannot reach",
        ]
    );
}

#[test]
fn env_problems_name_the_variable() {
    let e = err_env(MINIMAL, env(&[("PATRONI_RESTAPI_LISTEN", "8008")]));
    assert_eq!(e, "environment variable PATRONI_RESTAPI_LISTEN: restapi.listen: expected host:port, got \"8008\"");
    let e = err_env(MINIMAL, env(&[("PATRONI_ETCD3_PROTOCOL", "gopher")]));
    assert!(e.starts_with("environment variable PATRONI_ETCD3_PROTOCOL: etcd3.protocol: unknown variant"), "{e}");
    let e = err_env(MINIMAL, env(&[("RAMPART_NAME", "a/b")]));
    assert!(e.starts_with("environment variable RAMPART_NAME: name: "), "{e}");
}

#[test]
fn errors_never_show_passwords() {
    // A password pasted where a boolean belongs is echoed by the type error, then scrubbed.
    let text = edit(12, "      username: rep\n    superuser:\n      password: s3cret-pw\n  use_unix_socket: s3cret-pw");
    let e = err(&text);
    assert!(!e.contains("s3cret-pw"), "{e}");
    assert!(e.starts_with("node1.yml:15: postgresql.use_unix_socket: invalid type: string \"***\""), "{e}");

    let e = err_env(
        &edit(9, "  data_dir: /d\n  use_pg_rewind: env-pw-1"),
        env(&[("PATRONI_REPLICATION_PASSWORD", "env-pw-1")]),
    );
    assert!(!e.contains("env-pw-1"), "{e}");

    let e = err("scope: x\npassword: {a: 'bad-yaml-pw\n");
    assert!(e.contains("invalid YAML") && !e.contains("bad-yaml-pw"), "{e}");
}

#[test]
fn local_use_pg_rewind_overrides_dynamic() {
    let on = DynamicConfig {
        postgresql: rampart_core::dynamic::DynamicPostgresql { use_pg_rewind: true, ..Default::default() },
        ..Default::default()
    };
    let c = ok(&edit(9, "  data_dir: /d\n  use_pg_rewind: false")).config;
    assert!(!c.use_pg_rewind(&on));
    let c = ok(MINIMAL).config;
    assert!(c.use_pg_rewind(&on));
    let c = ok(&edit(9, "  data_dir: /d\n  use_pg_rewind: yes")).config;
    assert!(c.use_pg_rewind(&DynamicConfig::default()));
}

#[test]
fn replica_creation_methods_as_patroni_reads_them() {
    use crate::{ReplicaCreation, ReplicaMethod};
    // Default: pg_basebackup only.
    assert_eq!(ok(MINIMAL).config.postgresql.replica_creation, ReplicaCreation::default());
    let text = format!(
        "{MINIMAL}  create_replica_methods: [pgbackrest, basebackup, restore]
  pgbackrest:
    command: /usr/bin/pgbackrest --stanza=main --delta restore
    keep_data: true
    no_params: true
  restore:
    command: /opt/restore.py --sourcedir=/backups
    no_leader: '1'
    test-argument: test-value
  basebackup:
    - checkpoint: fast
    - verbose
"
    );
    let l = ok(&text);
    assert!(l.warnings.is_empty(), "the method sections are not unknown keys: {:?}", l.warnings);
    let r = l.config.postgresql.replica_creation;
    assert_eq!(r.basebackup_args, ["--checkpoint=fast", "--verbose"]);
    let [ReplicaMethod::Custom(pgbr), ReplicaMethod::Basebackup, ReplicaMethod::Custom(restore)] = &r.methods[..]
    else {
        panic!("{:?}", r.methods)
    };
    assert_eq!(pgbr.command, "/usr/bin/pgbackrest --stanza=main --delta restore");
    assert!(pgbr.keep_data && pgbr.no_params && !pgbr.no_leader);
    assert!(pgbr.own_args.is_empty(), "no_params passes only the section's own keys: {:?}", pgbr.own_args);
    assert!(restore.no_leader && r.works_without_leader());
    let dir = std::path::Path::new("/data");
    assert_eq!(
        restore.args("pg", dir, ""),
        [
            "--no_leader=1",
            "--test-argument=test-value",
            "--scope=pg",
            "--role=replica",
            "--datadir=/data",
            "--connstring="
        ]
    );
    assert_eq!(r.to_try(false).len(), 1, "without a leader only the no_leader method");
    // A method without a section runs its name; the legacy singular key is read too.
    let r = ok(&format!("{MINIMAL}  create_replica_method: [wal_e_restore]\n")).config.postgresql.replica_creation;
    assert!(matches!(&r.methods[..], [ReplicaMethod::Custom(m)] if m.command == "wal_e_restore"));
    // What Rampart sets itself, or what would not make a data directory, is refused.
    let e = err(&format!("{MINIMAL}  basebackup:\n    - pgdata: /elsewhere\n"));
    assert!(e.contains("postgresql.basebackup[0]: basebackup option pgdata is set by Rampart"), "{e}");
    let e = err(&format!("{MINIMAL}  basebackup: {{compress: gzip}}\n"));
    assert!(e.contains("only server-side compression"), "{e}");
    let e = err(&format!("{MINIMAL}  create_replica_methods: [restore]\n  restore:\n    command: [a, b]\n"));
    assert!(e.contains("postgresql.restore.command: expected a command line"), "{e}");
    let e = err(&format!("{MINIMAL}  create_replica_methods: 5\n"));
    assert!(e.contains("postgresql.create_replica_methods: expected a list of method names"), "{e}");
}

#[test]
fn post_bootstrap_or_its_older_name() {
    let l = ok(&format!("{MINIMAL}bootstrap:\n  post_bootstrap: /usr/local/bin/setup.sh\n"));
    assert_eq!(l.config.bootstrap.post_bootstrap.as_deref(), Some("/usr/local/bin/setup.sh"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let l = ok(&format!("{MINIMAL}bootstrap:\n  post_init: /usr/local/bin/setup.sh\n"));
    assert_eq!(l.config.bootstrap.post_bootstrap.as_deref(), Some("/usr/local/bin/setup.sh"));
    assert_eq!(ok(MINIMAL).config.bootstrap.post_bootstrap, None);
}

#[test]
fn initdb_forms() {
    let c = ok(&format!("{MINIMAL}bootstrap:\n  initdb: {{encoding: UTF8, locale: C}}\n")).config;
    assert_eq!(c.bootstrap.initdb, ["--encoding=UTF8", "--locale=C"]);
    let e = err(&format!("{MINIMAL}bootstrap:\n  initdb:\n    - data-checksums\n    - {{a: 1, b: 2}}\n"));
    assert!(e.starts_with("node1.yml:16: bootstrap.initdb[1]: expected a flag"), "{e}");
    let e = err(&format!("{MINIMAL}bootstrap:\n  initdb:\n    - pgdata: /x\n"));
    assert!(e.starts_with("node1.yml:15: bootstrap.initdb[0]: initdb option pgdata is set by Rampart"), "{e}");
}

#[test]
fn postgresql_listen_forms() {
    let c = ok(&edit(8, "  listen: 127.0.0.1,10.0.0.7:5433")).config;
    assert_eq!(c.postgresql.listen_hosts(), ["127.0.0.1", "10.0.0.7"]);
    assert_eq!(c.postgresql.listen_port(), 5433);
    assert_eq!(c.postgresql.connect_host_port(), ("127.0.0.1".to_string(), 5433));
    let c = ok(&edit(8, "  listen: '[::]:5433'\n  connect_address: '[fd00::7]:5433'")).config;
    assert_eq!(c.postgresql.local_host(), "::1");
    assert_eq!(c.postgresql.conn_url(), "postgres://[fd00::7]:5433/postgres");
}

#[test]
fn restapi_tls_url_and_checks() {
    let c = ok(&edit(4, "  listen: 127.0.0.1:8008\n  certfile: /etc/ssl/api.pem")).config;
    assert_eq!(c.restapi.api_url(), "https://127.0.0.1:8008/patroni");
    let e = err(&edit(4, "  listen: 127.0.0.1:8008\n  authentication:\n    username: u"));
    assert_eq!(e, "node1.yml:5: restapi.authentication.password: missing required key");
}

#[test]
fn error_accessors() {
    match parse(&edit(4, "  listen: 8008"), "node1.yml", no_env()) {
        Err(e @ ConfigError::Invalid { .. }) => {
            assert_eq!(e.line(), Some(4));
            assert_eq!(e.key(), Some("restapi.listen"));
            assert!(matches!(e, ConfigError::Invalid { place: Place::File { .. }, .. }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn load_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("rampart-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node1.yml");
    std::fs::write(&path, MINIMAL).unwrap();
    let l = crate::load(&path).unwrap();
    assert_eq!(l.config.postgresql.data_dir.to_str(), Some("/data"));
    let e = crate::load(&dir.join("missing.yml")).unwrap_err();
    assert!(e.to_string().contains("missing.yml: cannot read the configuration file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn relative_socket_directory_warns_about_pg_rewind() {
    let text = r#"
scope: pg
name: n1
restapi: {listen: "127.0.0.1:8008"}
etcd3: {host: "127.0.0.1:2379"}
postgresql:
  listen: "127.0.0.1:5432"
  data_dir: /tmp/d
  authentication: {replication: {username: r, password: p}}
  parameters: {unix_socket_directories: '.'}
"#;
    let loaded = crate::parse(text, "n1.yml", std::iter::empty()).unwrap();
    let w = loaded.warnings.iter().find(|w| w.contains("unix_socket_directories")).expect("a warning");
    assert!(w.starts_with("n1.yml:10: "), "{w}");
    assert!(w.contains("pg_rewind"), "{w}");
}

#[test]
fn an_hba_file_parameter_beside_pg_hba_makes_pg_hba_reported_as_ignored() {
    let named = format!("{MINIMAL}  parameters: {{hba_file: /etc/postgresql/pg_hba.conf}}\n");
    let loaded = crate::parse(&named, "n1.yml", std::iter::empty()).unwrap();
    assert!(
        !loaded.warnings.iter().any(|w| w.contains("hba_file")),
        "a file of its own is fine: {:?}",
        loaded.warnings
    );
    let both = format!("{named}  pg_hba: [\"local all all peer\"]\n");
    let loaded = crate::parse(&both, "n1.yml", std::iter::empty()).unwrap();
    let w = loaded.warnings.iter().find(|w| w.contains("hba_file")).expect("a warning");
    assert!(w.starts_with("n1.yml:") && w.contains("postgresql.pg_hba: is ignored"), "{w}");
}

#[test]
fn ctl_section_is_typed_and_checked() {
    let text = format!(
        "{MINIMAL}ctl:\n  authentication:\n    username: admin\n    password: ctl-secret\n  insecure: yes\n  \
         cacert: /ca.pem\n  certfile: /c.pem\n  colour: blue\n"
    );
    let l = ok(&text);
    assert_eq!(l.warnings, ["node1.yml:20: unknown key ctl.colour (ignored)"]);
    let ctl = &l.config.ctl;
    assert_eq!(ctl.authentication.as_ref().map(|a| a.username.as_str()), Some("admin"));
    assert_eq!(ctl.authentication.as_ref().and_then(|a| a.password.as_ref()).map(|p| p.expose()), Some("ctl-secret"));
    assert!(ctl.insecure);
    assert_eq!(ctl.cacert.as_deref(), Some(std::path::Path::new("/ca.pem")));
    assert!(!format!("{ctl:?}").contains("ctl-secret"));
    assert_eq!(ok(MINIMAL).config.ctl, crate::Ctl::default());

    let e = err(&format!("{MINIMAL}ctl:\n  keyfile: /k.pem\n"));
    assert_eq!(e, "node1.yml:14: ctl.keyfile: set without ctl.certfile");
    let e = err(&format!("{MINIMAL}ctl:\n  authentication:\n    username: admin\n"));
    assert_eq!(e, "node1.yml:14: ctl.authentication.password: missing required key");
    let e = err(&format!("{MINIMAL}ctl:\n  insecure: maybe\n"));
    assert!(e.starts_with("node1.yml:14: ctl.insecure: "), "{e}");
}

#[test]
fn ctl_config_needs_nothing_and_takes_what_is_there() {
    let bare = crate::parse_ctl("", "ctl.yml", no_env()).unwrap().config;
    assert_eq!((bare.scope, bare.etcd3, bare.namespace.as_str()), (None, None, "/service"));

    let text = "scope: pg\nnamespace: /db/\netcd3:\n  hosts: a:1,b:2\nctl:\n  insecure: true\n";
    let c = crate::parse_ctl(text, "ctl.yml", no_env()).unwrap().config;
    assert_eq!(c.scope.as_deref(), Some("pg"));
    assert_eq!(c.etcd3.as_ref().unwrap().endpoints(), ["http://a:1", "http://b:2"]);
    assert!(c.ctl.insecure);
    assert!(c.rest_credentials().is_none());

    // A member's full configuration works too; its REST credentials are the fallback.
    let full =
        format!("{MINIMAL}restapi:\n  listen: 127.0.0.1:8008\n  authentication: {{username: u, password: p1}}\n");
    let c = crate::parse_ctl(&full, "n.yml", no_env()).unwrap().config;
    assert_eq!(c.rest_credentials().map(|a| a.username.as_str()), Some("u"));
    let with_ctl = format!("{full}ctl:\n  authentication: {{username: ctl, password: p2}}\n");
    let c = crate::parse_ctl(&with_ctl, "n.yml", no_env()).unwrap().config;
    assert_eq!(c.rest_credentials().map(|a| a.username.as_str()), Some("ctl"), "ctl wins over restapi");

    let e = crate::parse_ctl("scope: a/b\n", "ctl.yml", no_env()).unwrap_err().to_string();
    assert!(e.starts_with("ctl.yml:1: scope: "), "{e}");
    let e = crate::parse_ctl("etcd3:\n  host: ''\n", "ctl.yml", no_env()).unwrap_err().to_string();
    assert!(e.contains("etcd3"), "{e}");
}

#[test]
fn ctl_env_overrides_and_secrecy() {
    let vars = env(&[
        ("PATRONI_CTL_USERNAME", "envuser"),
        ("PATRONI_CTL_PASSWORD", "env-ctl-pw"),
        ("PATRONI_CTL_INSECURE", "true"),
        ("PATRONI_CTL_CACERT", "/env/ca.pem"),
    ]);
    let c = crate::parse_ctl("scope: pg\n", "ctl.yml", vars).unwrap().config;
    let auth = c.ctl.authentication.unwrap();
    assert_eq!((auth.username.as_str(), auth.password.unwrap().expose()), ("envuser", "env-ctl-pw"));
    assert!(c.ctl.insecure);
    assert_eq!(c.ctl.cacert.as_deref(), Some(std::path::Path::new("/env/ca.pem")));

    let e = crate::parse_ctl("ctl:\n  keyfile_password: kf-secret-1\n  insecure: kf-secret-1\n", "ctl.yml", no_env())
        .unwrap_err()
        .to_string();
    assert!(!e.contains("kf-secret-1"), "{e}");
}

#[test]
fn operator_yaml_reads_with_patroni_typing() {
    let v = crate::yaml_to_json("ttl: 20\npostgresql:\n  parameters: {a: on, b: '10', c: 010, d: 1.5}\nx: ~\n", "edit")
        .unwrap();
    assert_eq!(
        v,
        json!({"ttl": 20, "postgresql": {"parameters": {"a": true, "b": "10", "c": "010", "d": 1.5}}, "x": null})
    );
    assert_eq!(crate::yaml_to_json("# nothing\n", "edit").unwrap(), json!(null));
    assert_eq!(crate::yaml_to_json("[1, two]", "edit").unwrap(), json!([1, "two"]));
    assert_eq!(crate::yaml_to_json("200", "-s").unwrap(), json!(200));
    let e = crate::yaml_to_json("a: 1\n b: [\n", "edit").unwrap_err().to_string();
    assert!(e.starts_with("edit:") && e.contains("invalid YAML"), "{e}");

    assert_eq!(crate::yaml_scalar("off"), json!(false));
    assert_eq!(crate::yaml_scalar("null"), json!(null));
    assert_eq!(crate::yaml_scalar("-3"), json!(-3));
    assert_eq!(crate::yaml_scalar("1e5x"), json!("1e5x"));
}

#[test]
fn the_strict_sync_placeholder_is_no_member_name() {
    let text = MINIMAL.replace("name: n1", "name: __patroni_strict_sync_replica_placeholder__");
    let e = err(&text);
    assert!(e.starts_with("node1.yml:2: name: \"__patroni_strict_sync_replica_placeholder__\" is reserved"), "{e}");
}

#[test]
fn bootstrap_method_is_read_as_patroni_does() {
    let text = format!(
        "{MINIMAL}bootstrap:
  method: restore
  restore:
    command: /usr/local/bin/restore.sh --from backup
    keep_existing_recovery_conf: true
    recovery_conf:
      restore_command: cp /archive/%f %p
      recovery_target_timeline: latest
    target: last
    verbose: true
  other_method:
    command: x
"
    );
    let l = ok(&text);
    let m = l.config.bootstrap.method.expect("a custom method");
    assert_eq!((m.name.as_str(), m.command.as_str()), ("restore", "/usr/local/bin/restore.sh --from backup"));
    assert!(m.keep_existing_recovery_conf && !m.no_params);
    assert_eq!(m.recovery_conf["restore_command"], "cp /archive/%f %p");
    assert_eq!(
        m.args("pg", std::path::Path::new("/data")),
        ["--scope=pg", "--datadir=/data", "--target=last", "--verbose=True"]
    );
    assert_eq!(l.warnings, ["node1.yml:23: bootstrap.other_method: not used (not the bootstrap.method in force)"]);

    // no_params; initdb by name; a method without its section falls back to initdb with a warning.
    let text = format!("{MINIMAL}bootstrap:\n  method: b\n  b:\n    command: run\n    no_params: true\n");
    assert_eq!(ok(&text).config.bootstrap.method.unwrap().args("pg", std::path::Path::new("/d")), Vec::<String>::new());
    assert!(ok(&format!("{MINIMAL}bootstrap:\n  method: initdb\n")).config.bootstrap.method.is_none());
    let l = ok(&format!("{MINIMAL}bootstrap:\n  method: missing\n"));
    assert!(l.config.bootstrap.method.is_none());
    assert!(
        l.warnings[0].contains("bootstrap.method: \"missing\" has no bootstrap.missing section"),
        "{:?}",
        l.warnings
    );
    let e = err(&format!("{MINIMAL}bootstrap:\n  method: b\n  b:\n    command: [1]\n"));
    assert!(e.contains("bootstrap.b.command: expected a command line"), "{e}");
}

#[test]
fn standby_cluster_is_read_from_bootstrap_dcs_and_refused_at_the_top_naming_where_it_belongs() {
    let top = minimal_with("standby_cluster:\n  host: 10.0.0.1\n  port: 5432\n", "n.yml").unwrap_err().to_string();
    assert!(top.contains("n.yml:11") && top.contains("standby_cluster"), "{top}");
    assert!(top.contains("put it under bootstrap.dcs"), "{top}");
    let ok =
        minimal_with("bootstrap:\n  dcs:\n    standby_cluster:\n      host: 10.0.0.1\n      port: 5433\n", "n.yml")
            .unwrap();
    let standby = ok.config.bootstrap.dcs.standby().unwrap().unwrap();
    assert_eq!((standby.host.as_deref(), standby.port), (Some("10.0.0.1"), 5433));
    let bad =
        minimal_with("bootstrap:\n  dcs:\n    standby_cluster:\n      port: 5432\n", "n.yml").unwrap_err().to_string();
    assert!(bad.contains("bootstrap.dcs.standby_cluster") && bad.contains("standby_cluster.host"), "{bad}");
}

#[test]
fn postgresql_keys_one_level_too_high_in_bootstrap_dcs_are_named_as_ignored() {
    // Seed 002 writes them so; Patroni ignores them there without a word.
    let l = minimal_with(
        "bootstrap:\n  dcs:\n    parameters:\n      archive_mode: 'on'\n    recovery_conf:\n      restore_command: x\n",
        "n.yml",
    )
    .unwrap();
    for key in ["parameters", "recovery_conf"] {
        let w = l.warnings.iter().find(|w| w.contains(&format!("bootstrap.dcs.{key}:")));
        let w = w.unwrap_or_else(|| panic!("no warning for {key}: {:?}", l.warnings));
        assert!(w.contains(&format!("did you mean bootstrap.dcs.postgresql.{key}?")), "{w}");
    }
    assert!(l.config.bootstrap.dcs.postgresql.parameters.is_empty(), "nothing is read from there");
}

#[test]
fn postgresql_recovery_conf_is_read_and_what_the_role_decides_is_named() {
    let text = format!(
        "{MINIMAL}  recovery_conf:
    restore_command: pgbackrest --stanza=main archive-get %f \"%p\"
    recovery_min_apply_delay: 0
    recovery_target_timeline: latest
    primary_conninfo: host=elsewhere
    recovery_target_time: '2026-01-01'
"
    );
    let l = ok(&text);
    let r = &l.config.postgresql.recovery_conf;
    assert_eq!(r["restore_command"], "pgbackrest --stanza=main archive-get %f \"%p\"");
    assert_eq!(r["recovery_min_apply_delay"], 0);
    assert_eq!(
        l.warnings,
        [
            "node1.yml:17: postgresql.recovery_conf.primary_conninfo: ignored: a replica streams from the member \
             its role names",
            "node1.yml:18: postgresql.recovery_conf.recovery_target_time: ignored: a replica recovers to the latest \
             timeline without a target (a bootstrap method's recovery_conf can set one)",
        ]
    );
    let e = err(&format!("{MINIMAL}  recovery_conf:\n    restore_command: [a, b]\n"));
    assert!(e.contains("postgresql.recovery_conf.restore_command: expected a single value"), "{e}");
}
