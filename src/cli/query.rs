//! `rampart query [CLUSTER] (-c SQL | -f FILE) [-m MEMBER | -r ROLE]`: runs SQL on one member
//! and prints the result, as `patronictl query` does.
//!
//! The member is chosen like `dsn` chooses it (the leader by default). For a role other than
//! `leader` or `any` the server itself is asked (`pg_is_in_recovery()`), so a member whose key
//! is stale is not queried as something it no longer is. Connection settings follow libpq's
//! defaults as patronictl's do: `-U` else `$PGUSER` else the OS user, `-d` else `$PGDATABASE`
//! else the user name, `--password` (asked without echo) else `$PGPASSWORD`.
//!
//! Output: the result table in `--format` (default `tsv`, `--delimiter` between cells), the
//! values as PostgreSQL writes them as text (the simple query protocol; NULL is `None` in the
//! text formats and null in json/yaml). When no member fits or the SQL fails, patronictl's line
//! (`TIME<TAB>ERROR, SQLSTATE: 42P01`) is printed; unlike patronictl the command then exits 1.
//! Patronictl's group options are long-only here (`--config-file`, `--dcs`), since `-c` and `-d`
//! are `--command` and `--dbname` after `query` (`rampart -c FILE query ...` works too).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rampart_core::{Cluster, Member};
use serde_json::Value;
use tokio_postgres::SimpleQueryMessage;

use super::list::WatchArgs;
use super::members::Role;
use super::session::{block_on, Session};
use super::table::{Format, Table};
use super::target::{self, TargetArgs};

/// Options of `rampart query`.
#[derive(clap::Args, Debug, Clone)]
pub struct QueryArgs {
    /// The cluster (default: the configuration's `scope`).
    pub cluster: Option<String>,
    /// The SQL to run.
    #[arg(short = 'c', long, conflicts_with = "file", required_unless_present = "file")]
    pub command: Option<String>,
    /// Run the SQL in FILE (- for stdin).
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The member to query (default: the leader).
    #[arg(short = 'm', long, conflicts_with = "role")]
    pub member: Option<String>,
    /// The first member with this role instead.
    #[arg(short = 'r', long, value_enum)]
    pub role: Option<Role>,
    /// Database user (default: $PGUSER, else the OS user).
    #[arg(short = 'U', long)]
    pub username: Option<String>,
    /// Database (default: $PGDATABASE, else the user name).
    #[arg(short = 'd', long)]
    pub dbname: Option<String>,
    /// Ask for the password (else $PGPASSWORD is used, if set).
    #[arg(long)]
    pub password: bool,
    /// Output format.
    #[arg(long = "format", value_enum, default_value = "tsv")]
    pub format: Format,
    /// Cell separator in the tsv format.
    #[arg(long, default_value = "\t")]
    pub delimiter: String,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Configuration file (as -c elsewhere; -c is --command here).
    #[arg(long = "config-file", env = "PATRONICTL_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// etcd to use instead of the file's etcd3 section: etcd3://host:port[/namespace].
    #[arg(long = "dcs", visible_alias = "dcs-url", env = "DCS_URL", value_name = "URL")]
    pub dcs: Option<String>,
    /// Cluster name, instead of the file's `scope`.
    #[arg(long, value_name = "NAME")]
    pub scope: Option<String>,
    /// Do not verify the TLS certificates of the members' REST APIs.
    #[arg(short = 'k', long)]
    pub insecure: bool,
}

impl QueryArgs {
    fn target(&self) -> TargetArgs {
        TargetArgs {
            config_file: self.config_file.clone(),
            dcs: self.dcs.clone(),
            scope: self.scope.clone(),
            insecure: self.insecure,
        }
    }
}

/// How to log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// Database user.
    pub user: String,
    /// Database.
    pub dbname: String,
    /// Password, if any.
    pub password: Option<String>,
}

/// The login from the options, then libpq's environment variables, then the OS user.
pub fn login(args: &QueryArgs, env: impl Fn(&str) -> Option<String>, os_user: &str) -> Login {
    let user = args.username.clone().or_else(|| env("PGUSER")).unwrap_or_else(|| os_user.to_string());
    let dbname = args.dbname.clone().or_else(|| env("PGDATABASE")).unwrap_or_else(|| user.clone());
    Login { user, dbname, password: env("PGPASSWORD") }
}

/// What one run printed: a result table, or patronictl's one-line failure.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Column names and rows (NULL as `None`).
    Rows(Vec<String>, Vec<Vec<Option<String>>>),
    /// `No connection to member X is available`, `ERROR, SQLSTATE: 42P01`, ...
    Failed(String),
}

/// The result as printed in `format`.
pub fn render(outcome: &Outcome, format: Format, delimiter: &str, now: &str) -> String {
    match outcome {
        Outcome::Failed(message) => format!("{now}{delimiter}{message}\n"),
        Outcome::Rows(columns, rows) => {
            let text = matches!(format, Format::Pretty | Format::Tsv);
            let mut t = Table::new(columns.clone());
            t.rows = rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| match v {
                            Some(s) => Value::String(s.clone()),
                            // Python prints None for NULL.
                            None if text => Value::String("None".into()),
                            None => Value::Null,
                        })
                        .collect()
                })
                .collect();
            match format {
                Format::Tsv => {
                    let mut out = String::new();
                    for line in std::iter::once(columns.clone())
                        .chain(t.rows.iter().map(|r| r.iter().map(super::table::cell_text_flow).collect::<Vec<_>>()))
                    {
                        out.push_str(&line.join(delimiter));
                        out.push('\n');
                    }
                    out
                }
                other => t.render(other),
            }
        }
    }
}

/// The message when no member fits, in patronictl's words.
fn nobody(member: Option<&str>, role: Option<Role>) -> String {
    match (member, role) {
        (Some(m), _) => format!("No connection to member {m} is available"),
        (None, Some(r)) => format!("No connection to role {} is available", r.name()),
        (None, None) => "No connection is available".into(),
    }
}

/// The member to query, if one fits (patronictl answers with a line, not an error, when none does).
fn choose<'c>(cluster: &'c Cluster, scope: &str, args: &QueryArgs) -> Option<&'c Member> {
    super::dsn::pick(cluster, scope, args.member.as_deref(), args.role).ok()
}

/// Whether the server's own answer fits the role asked for.
fn role_fits(role: Option<Role>, in_recovery: bool) -> bool {
    match role {
        None | Some(Role::Any) | Some(Role::Leader) => true,
        Some(Role::Replica) | Some(Role::Standby) | Some(Role::StandbyLeader) => in_recovery,
        Some(Role::Primary) => !in_recovery,
    }
}

/// Connects to `m` and runs `sql`.
async fn run_on(m: &Member, login: &Login, role: Option<Role>, sql: &str) -> Outcome {
    let Some((host, port)) = m.data.conn_host_port() else {
        return Outcome::Failed(format!("member {} published no usable conn_url", m.name));
    };
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host)
        .port(port)
        .user(&login.user)
        .dbname(&login.dbname)
        .application_name("rampart query")
        .connect_timeout(Duration::from_secs(5));
    if let Some(p) = &login.password {
        cfg.password(p);
    }
    let failed = |e: tokio_postgres::Error| {
        Outcome::Failed(match e.code() {
            Some(code) => format!("ERROR, SQLSTATE: {}", code.code()),
            None => format!("ERROR, SQLSTATE: {}", e.to_string().replace('\n', " ")),
        })
    };
    let (client, connection) = match cfg.connect(tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let driver = tokio::spawn(connection);
    let outcome = async {
        if !matches!(role, None | Some(Role::Any) | Some(Role::Leader)) {
            let r = client.query_one("SELECT pg_catalog.pg_is_in_recovery()", &[]).await?;
            if !role_fits(role, r.get(0)) {
                return Ok(Outcome::Failed(nobody(None, role)));
            }
        }
        Ok(result_of(client.simple_query(sql).await?))
    }
    .await
    .unwrap_or_else(failed);
    drop(client);
    let _ = driver.await;
    outcome
}

/// The last result set of the messages (several statements: the last one's, as psycopg gives).
pub fn result_of(messages: Vec<SimpleQueryMessage>) -> Outcome {
    let mut columns: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    for msg in messages {
        match msg {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_string()).collect();
                rows.clear();
            }
            SimpleQueryMessage::Row(r) => {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            _ => {}
        }
    }
    Outcome::Rows(columns, rows)
}

/// `rampart query`.
pub fn run(args: QueryArgs) -> Result<()> {
    let sql = match (&args.command, &args.file) {
        (Some(c), _) => c.clone(),
        (None, Some(f)) if f.as_os_str() == "-" => {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")?
        }
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        (None, None) => bail!("query: give the SQL with -c/--command or -f/--file"),
    };
    let os_user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name).unwrap_or_default();
    let mut login = login(&args, |k| std::env::var(k).ok(), &os_user);
    if args.password {
        login.password = Some(rpassword::prompt_password("Password: ").context("reading the password")?);
    }
    let target = target::resolve(&args.target(), args.cluster.as_deref())?;
    block_on(async move {
        let session = Session::open(target).await?;
        let every = args.watch.interval();
        let mut cluster: Option<Cluster> = None;
        loop {
            if cluster.is_none() {
                cluster = Some(session.cluster().await?);
            }
            let c = cluster.as_ref().expect("just read");
            let outcome = match choose(c, session.scope(), &args) {
                Some(m) => run_on(m, &login, args.role, &sql).await,
                None => Outcome::Failed(nobody(args.member.as_deref(), args.role)),
            };
            let now = jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S").to_string();
            print!("{}", render(&outcome, args.format, &args.delimiter, &now));
            match (every, &outcome) {
                (Some(every), _) => tokio::time::sleep(every).await,
                (None, Outcome::Rows(..)) => return Ok(()),
                (None, Outcome::Failed(m)) => bail!("query: {m}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        q: QueryArgs,
    }

    fn parse(words: &[&str]) -> Result<QueryArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("query").chain(words.iter().copied())).map(|c| c.q)
    }

    #[test]
    fn patronictl_spelling_of_the_options() {
        let a = parse(&["batman", "-c", "SELECT 1", "-m", "n1", "-U", "u", "-d", "db", "--format", "json"]).unwrap();
        assert_eq!(a.cluster.as_deref(), Some("batman"));
        assert_eq!((a.command.as_deref(), a.member.as_deref()), (Some("SELECT 1"), Some("n1")));
        assert_eq!((a.username.as_deref(), a.dbname.as_deref(), a.format), (Some("u"), Some("db"), Format::Json));
        let a = parse(&["-f", "x.sql", "-r", "replica", "--config-file", "c.yml"]).unwrap();
        assert_eq!((a.file.as_deref(), a.role), (Some(std::path::Path::new("x.sql")), Some(Role::Replica)));
        assert!(parse(&["-c", "x", "-f", "y"]).is_err(), "--command and --file exclude each other");
        assert!(parse(&["-c", "x", "-m", "a", "-r", "any"]).is_err(), "--member and --role exclude each other");
        assert!(parse(&[]).is_err(), "SQL is required");
    }

    #[test]
    fn login_follows_libpq_defaults() {
        let a = parse(&["-c", "x"]).unwrap();
        let none = |_: &str| None;
        assert_eq!(
            login(&a, none, "postgres"),
            Login { user: "postgres".into(), dbname: "postgres".into(), password: None }
        );
        let env = |k: &str| match k {
            "PGUSER" => Some("app".into()),
            "PGPASSWORD" => Some("s".into()),
            _ => None,
        };
        assert_eq!(
            login(&a, env, "root"),
            Login { user: "app".into(), dbname: "app".into(), password: Some("s".into()) }
        );
        let a = parse(&["-c", "x", "-U", "u", "-d", "d"]).unwrap();
        assert_eq!(login(&a, env, "root").user, "u");
        assert_eq!(login(&a, env, "root").dbname, "d");
    }

    #[test]
    fn output_like_patronictl() {
        let rows = Outcome::Rows(
            vec!["a".into(), "b".into()],
            vec![vec![Some("1".into()), None], vec![Some("x y".into()), Some("2".into())]],
        );
        assert_eq!(render(&rows, Format::Tsv, "\t", "T"), "a\tb\n1\tNone\nx y\t2\n");
        assert_eq!(render(&rows, Format::Tsv, ";", "T"), "a;b\n1;None\nx y;2\n");
        assert_eq!(
            render(&rows, Format::Json, "\t", "T"),
            "[{\"a\": \"1\", \"b\": null}, {\"a\": \"x y\", \"b\": \"2\"}]\n"
        );
        assert!(render(&rows, Format::Pretty, "\t", "T").starts_with("+-----+------+\n| a   | b    |\n"));
        let failed = Outcome::Failed("ERROR, SQLSTATE: 42P01".into());
        assert_eq!(
            render(&failed, Format::Tsv, "\t", "2026-01-01 00:00:00"),
            "2026-01-01 00:00:00\tERROR, SQLSTATE: 42P01\n"
        );
        assert_eq!(nobody(Some("n9"), None), "No connection to member n9 is available");
        assert_eq!(nobody(None, Some(Role::Replica)), "No connection to role replica is available");
    }

    #[test]
    fn a_role_is_checked_against_the_server() {
        assert!(role_fits(Some(Role::Replica), true) && !role_fits(Some(Role::Replica), false));
        assert!(role_fits(Some(Role::Primary), false) && !role_fits(Some(Role::Primary), true));
        assert!(role_fits(None, true) && role_fits(Some(Role::Any), false));
    }
}
