//! PostgreSQL's settings as the installed server describes them (`postgres --describe-config`),
//! and the check of a `postgresql.parameters` value against them.
//!
//! `--describe-config` prints, one tab-separated line per setting: name, context, group, type
//! (BOOLEAN, INTEGER, REAL, STRING, ENUM), default, min, max, short and long description. It
//! prints neither units nor enum values, and leaves out about fifty settings a `postgresql.conf`
//! may still hold (developer options such as `zero_damaged_pages`, `application_name`,
//! `transaction_isolation`) or must not hold (`internal` ones such as `block_size`). Those come
//! from [`PG15_SETTINGS`], PostgreSQL 15's `pg_settings` (checked against a live server by
//! `crates/pg/tests/real_postgres.rs`). On another major version a setting missing there has an
//! unknown unit (a number with a unit is then accepted unverified) and an enum's values are only
//! checked on 15 (elsewhere a value outside 15's list is accepted unverified), so nothing a newer
//! server accepts is refused.
//!
//! Unknown names are handled as Patroni does (`patroni/postgresql/validator.py`): a name with a
//! dot is an extension's (`pg_stat_statements.track`) and is passed through; any other name the
//! server does not list is not an error but a warning (Patroni removes it from postgresql.conf).
//!
//! Invariant kept here: a value is refused only when PostgreSQL itself would refuse it at start
//! ([`value`] reads numbers and booleans as the server does), and the message names the
//! parameter, the value and why.

pub mod value;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

pub use value::{BadValue, BaseUnit};

/// PostgreSQL 15's `pg_settings` (see the file's header).
pub const PG15_SETTINGS: &str = include_str!("pg15_settings.tsv");

/// Parameters Patroni and Rampart still accept under their old names and convert.
pub const WAL_KEEP_SEGMENTS: &str = "wal_keep_segments";

/// What a setting holds.
#[derive(Clone, Debug, PartialEq)]
pub enum GucKind {
    /// on/off.
    Bool,
    /// An integer in `min ..= max` base units.
    Integer {
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
        /// Its base unit, `None` for a plain number.
        unit: UnitInfo,
    },
    /// A floating-point number in `min ..= max` base units.
    Real {
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
        /// Its base unit.
        unit: UnitInfo,
    },
    /// Free text.
    String,
    /// One of a list of words; `None` when the list is not known for this version.
    Enum(Option<Vec<String>>),
}

/// What is known of a numeric setting's unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnitInfo {
    /// A plain number.
    None,
    /// Numbers are in this unit, and a value may carry any unit of its family.
    Base(BaseUnit),
    /// Not known for this version: a value with a unit cannot be checked.
    Unknown,
}

/// One setting.
#[derive(Clone, Debug, PartialEq)]
pub struct Guc {
    /// Its name as PostgreSQL spells it.
    pub name: String,
    /// When a change applies (`postmaster`, `sighup`, `user`, ...).
    pub context: String,
    /// Its group in the documentation, e.g. `Resource Usage / Memory`.
    pub group: String,
    /// Type, range, unit and allowed values.
    pub kind: GucKind,
    /// The one-line description.
    pub description: String,
}

/// How a parameter passed the check.
#[derive(Clone, Debug, PartialEq)]
pub enum Checked {
    /// A valid value of a setting of this server.
    Valid,
    /// Accepted, but with a remark for the operator (unknown name, unit or enum list not known
    /// for this version, a legacy name that is converted).
    Note(String),
}

/// A value PostgreSQL would refuse.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{name}: invalid value {value}: {reason}")]
pub struct InvalidParameter {
    /// The parameter.
    pub name: String,
    /// The value as given, JSON-quoted.
    pub value: String,
    /// Why, with what would be accepted.
    pub reason: String,
}

/// The settings of one PostgreSQL binary, by lower-cased name.
#[derive(Clone, Debug)]
pub struct GucTable {
    major: u32,
    settings: HashMap<String, Guc>,
}

impl GucTable {
    /// Reads `postgres --describe-config` output of PostgreSQL `major`.
    pub fn parse(describe: &str, major: u32) -> Result<GucTable, String> {
        let extras = pg15_settings();
        let mut settings = HashMap::new();
        for (n, line) in describe.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 8 {
                return Err(format!("line {}: expected at least 8 tab-separated fields: {line:?}", n + 1));
            }
            let key = f[0].to_ascii_lowercase();
            let (unit, values) = match extras.get(&key) {
                Some(x) => (x.unit, x.values.clone()),
                None => (UnitInfo::Unknown, None),
            };
            let number = |s: &str| s.trim().parse::<f64>().map_err(|_| format!("line {}: bad bound {s:?}", n + 1));
            let kind = match f[3] {
                "BOOLEAN" => GucKind::Bool,
                "INTEGER" => GucKind::Integer { min: number(f[5])?, max: number(f[6])?, unit },
                "REAL" => GucKind::Real { min: number(f[5])?, max: number(f[6])?, unit },
                "STRING" => GucKind::String,
                "ENUM" => GucKind::Enum(values),
                other => return Err(format!("line {}: unknown type {other:?}", n + 1)),
            };
            let guc = Guc {
                name: f[0].to_string(),
                context: f[1].to_string(),
                group: f[2].to_string(),
                kind,
                description: f[7].to_string(),
            };
            settings.insert(key, guc);
        }
        if settings.is_empty() {
            return Err("no settings listed".into());
        }
        // The settings --describe-config leaves out, as PostgreSQL 15 has them.
        for (key, x) in extras {
            settings.entry(key).or_insert(x.guc);
        }
        Ok(GucTable { major, settings })
    }

    /// The major version (15 for 15.x).
    pub fn major(&self) -> u32 {
        self.major
    }

    /// The setting called `name` (case-insensitive, as in PostgreSQL).
    pub fn get(&self, name: &str) -> Option<&Guc> {
        self.settings.get(&name.to_ascii_lowercase())
    }

    /// Whether PostgreSQL would accept `value` (as written in YAML/JSON) for `name`.
    pub fn check(&self, name: &str, value: &Json) -> Result<Checked, InvalidParameter> {
        let shown = value.to_string();
        let invalid = |reason: String| InvalidParameter { name: name.to_string(), value: shown.clone(), reason };
        let text = match value {
            Json::String(s) => s.clone(),
            Json::Number(n) => n.to_string(),
            Json::Bool(b) => if *b { "on" } else { "off" }.to_string(),
            Json::Null => return Ok(Checked::Note(format!("{name} has no value and is left out"))),
            // Not a setting at all, usually a key of Patroni's `postgresql` section put among the
            // parameters (seed 002's create_replica_methods and its method's section): Patroni
            // removes it with a warning ("Removing unexpected parameter"), so it is no reason to
            // refuse the file.
            _ if self.get(name).is_none() && !name.contains('.') => {
                return Ok(Checked::Note(format!(
                    "{name} is not a parameter of PostgreSQL {} (and its value is a list or a mapping): it is left \
                     out of postgresql.conf, as Patroni does; keys such as create_replica_methods or a replica \
                     method's section belong in the postgresql section, not among its parameters",
                    self.major
                )))
            }
            _ => return Err(invalid("expected a single value (string, number or boolean)".into())),
        };
        let Some(guc) = self.get(name) else {
            return self.unknown(name, &text).map_err(invalid);
        };
        let pg = self.major;
        if guc.context == "internal" {
            return Err(invalid(format!(
                "{} cannot be set: it is fixed when PostgreSQL is built or the cluster initialized",
                guc.name
            )));
        }
        match &guc.kind {
            GucKind::String => Ok(Checked::Valid),
            GucKind::Bool => match value::parse_bool(&text) {
                Some(_) => Ok(Checked::Valid),
                None => Err(invalid(BadValue::NotABool.to_string())),
            },
            GucKind::Integer { min, max, unit } | GucKind::Real { min, max, unit } => {
                let integer = matches!(guc.kind, GucKind::Integer { .. });
                let base = match unit {
                    UnitInfo::Base(b) => Some(*b),
                    UnitInfo::None => None,
                    UnitInfo::Unknown => {
                        // Plain numbers can still be range-checked; a unit cannot be converted.
                        let plain =
                            if integer { value::parse_int(&text, None) } else { value::parse_real(&text, None) };
                        return match plain {
                            Err(BadValue::NoUnitAllowed) => Ok(Checked::Note(format!(
                                "{name}: the unit of {text:?} is not checked (units of PostgreSQL {pg} not known)"
                            ))),
                            Err(e) => Err(invalid(e.to_string())),
                            Ok(v) => in_range(v, *min, *max, None, integer).map_err(invalid),
                        };
                    }
                };
                let parsed = if integer { value::parse_int(&text, base) } else { value::parse_real(&text, base) };
                let v = parsed.map_err(|e| invalid(format!("{e} ({})", describe_range(*min, *max, base, integer))))?;
                in_range(v, *min, *max, base, integer).map_err(invalid)
            }
            GucKind::Enum(None) => {
                Ok(Checked::Note(format!("{name}: {text:?} is not checked (values of PostgreSQL {pg} not known)")))
            }
            GucKind::Enum(Some(values)) => {
                if enum_accepts(values, &text) {
                    return Ok(Checked::Valid);
                }
                let list = values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ");
                if pg == 15 {
                    Err(invalid(format!("available values: {list}")))
                } else {
                    Ok(Checked::Note(format!(
                        "{name}: {text:?} is not among PostgreSQL 15's values ({list}); not checked for PostgreSQL {pg}"
                    )))
                }
            }
        }
    }

    /// Checks every parameter: the remarks for the operator (each naming its parameter), or the
    /// first value PostgreSQL would refuse.
    pub fn check_all<'a>(
        &self,
        parameters: impl IntoIterator<Item = (&'a String, &'a Json)>,
    ) -> Result<Vec<String>, InvalidParameter> {
        let mut notes = Vec::new();
        for (name, value) in parameters {
            if let Checked::Note(n) = self.check(name, value)? {
                notes.push(n);
            }
        }
        Ok(notes)
    }

    /// A name this server does not list: an extension's, a legacy one, or unknown.
    fn unknown(&self, name: &str, text: &str) -> Result<Checked, String> {
        if name.contains('.') {
            return Ok(Checked::Valid);
        }
        if name.eq_ignore_ascii_case(WAL_KEEP_SEGMENTS) && self.get("wal_keep_size").is_some() {
            let n = value::parse_int(text, None).map_err(|e| format!("{e} (a number of WAL segments is expected)"))?;
            if n < 0.0 {
                return Err("must be 0 or more".into());
            }
            return Ok(Checked::Note(format!(
                "{name} does not exist in PostgreSQL {}: it is written as wal_keep_size = {}MB \
                 ({n} segments of 16MB), as Patroni does, unless wal_keep_size is set",
                self.major,
                n * 16.0
            )));
        }
        Ok(Checked::Note(format!(
            "{name} is not a parameter of PostgreSQL {} (postgres --describe-config does not list it): \
             it is left out of postgresql.conf, as Patroni does",
            self.major
        )))
    }
}

/// PostgreSQL's enum lookup: case-insensitive, with the aliases `pg_settings` hides (every
/// on/off enum also takes true/false/yes/no/1/0, message levels take `debug`, `wal_level` takes
/// `archive` and `hot_standby`).
fn enum_accepts(values: &[String], text: &str) -> bool {
    let has = |w: &str| values.iter().any(|v| v.eq_ignore_ascii_case(w));
    if has(text) {
        return true;
    }
    let t = text.to_ascii_lowercase();
    (has("on") && has("off") && ["true", "false", "yes", "no", "1", "0"].contains(&t.as_str()))
        || (has("debug1") && t == "debug")
        || (has("logical") && has("replica") && (t == "archive" || t == "hot_standby"))
}

fn in_range(v: f64, min: f64, max: f64, unit: Option<BaseUnit>, integer: bool) -> Result<Checked, String> {
    if v < min || v > max {
        return Err(format!("outside the valid range ({})", describe_range(min, max, unit, integer)));
    }
    Ok(Checked::Valid)
}

fn describe_range(min: f64, max: f64, unit: Option<BaseUnit>, integer: bool) -> String {
    let kind = if integer { "an integer" } else { "a number" };
    match unit {
        Some(u) => format!(
            "{kind} from {min} to {max} in units of {}, i.e. {} .. {}, units {}",
            u.name(),
            u.render(min),
            u.render(max),
            u.accepted()
        ),
        None => format!("{kind} from {min} to {max}"),
    }
}

/// One row of [`PG15_SETTINGS`].
struct Pg15Setting {
    unit: UnitInfo,
    values: Option<Vec<String>>,
    guc: Guc,
}

/// [`PG15_SETTINGS`] by lower-cased name. Units are assumed unchanged on other major versions;
/// enum lists are checked on 15 only (see [`GucTable::check`]).
fn pg15_settings() -> HashMap<String, Pg15Setting> {
    let mut out = HashMap::new();
    for line in PG15_SETTINGS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let field = |i: usize| f.get(i).copied().unwrap_or("");
        let unit = match field(3) {
            "" => UnitInfo::None,
            u => BaseUnit::parse(u).map_or(UnitInfo::Unknown, UnitInfo::Base),
        };
        let values: Option<Vec<String>> =
            (field(1) == "enum").then(|| field(6).split('|').map(str::to_string).collect());
        let bound = |i: usize| field(i).parse::<f64>().unwrap_or(f64::NAN);
        let kind = match field(1) {
            "bool" => GucKind::Bool,
            "integer" => GucKind::Integer { min: bound(4), max: bound(5), unit },
            "real" => GucKind::Real { min: bound(4), max: bound(5), unit },
            "enum" => GucKind::Enum(values.clone()),
            _ => GucKind::String,
        };
        let guc = Guc {
            name: field(0).to_string(),
            context: field(2).to_string(),
            group: String::new(),
            kind,
            description: String::new(),
        };
        out.insert(field(0).to_ascii_lowercase(), Pg15Setting { unit, values, guc });
    }
    out
}

/// The major version from `postgres --version` output (`postgres (PostgreSQL) 15.14 (Debian ...)`).
pub fn parse_major(version: &str) -> Option<u32> {
    let number = version.split_whitespace().find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    number.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

/// Why the settings of a binary could not be read.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot read PostgreSQL's settings from {program}: {reason}")]
pub struct DescribeError {
    /// The `postgres` program run.
    pub program: String,
    /// What went wrong.
    pub reason: String,
}

/// How long `postgres --version` or `--describe-config` may take (they answer in milliseconds;
/// a program that hangs must not hang a configuration write).
const DESCRIBE_LIMIT: Duration = Duration::from_secs(5);

/// The settings of `<bin_dir>/postgres`, read once per binary and process (running
/// `postgres --version` and `postgres --describe-config`, a few milliseconds) and cached, as is
/// a failure to read them.
pub fn for_bin_dir(bin_dir: &Path) -> Result<Arc<GucTable>, DescribeError> {
    type Cache = Mutex<HashMap<PathBuf, Result<Arc<GucTable>, DescribeError>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let program = bin_dir.join("postgres");
    let cache = CACHE.get_or_init(Default::default);
    if let Some(known) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&program) {
        return known.clone();
    }
    let read = || -> Result<Arc<GucTable>, DescribeError> {
        let err = |reason: String| DescribeError { program: program.display().to_string(), reason };
        let version = run_bounded(&program, "--version").map_err(err)?;
        let major = parse_major(&version).ok_or_else(|| err(format!("unreadable version {:?}", version.trim())))?;
        Ok(Arc::new(GucTable::parse(&run_bounded(&program, "--describe-config").map_err(err)?, major).map_err(err)?))
    };
    let result = read();
    cache.lock().unwrap_or_else(|p| p.into_inner()).insert(program, result.clone());
    result
}

/// `program arg`'s standard output, or why not, within [`DESCRIBE_LIMIT`].
fn run_bounded(program: &Path, arg: &str) -> Result<String, String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdout = child.stdout.take().ok_or("no standard output")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + DESCRIBE_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{arg} did not answer within {} s", DESCRIBE_LIMIT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if !status.success() {
        return Err(format!("{arg} exited with {status}"));
    }
    reader.join().map_err(|_| "reading its output failed".to_string())?.map_err(|e| e.to_string())
}

/// Checks `parameters` against the settings of `<bin_dir>/postgres` (read once, then cached): the
/// remarks, or the first value PostgreSQL would refuse (its message names the parameter). When
/// the settings cannot be read (no PostgreSQL on this host), nothing is checked and the one
/// remark says so.
pub fn check_with<'a>(
    bin_dir: &Path,
    parameters: impl IntoIterator<Item = (&'a String, &'a Json)>,
) -> Result<Vec<String>, String> {
    match for_bin_dir(bin_dir) {
        Ok(table) => table.check_all(parameters).map_err(|e| e.to_string()),
        Err(e) => Ok(vec![format!("parameter values not checked: {e}")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Lines of PostgreSQL 15.14's `postgres --describe-config`, as printed.
    const DESCRIBE: &str = "\
max_connections\tpostmaster\tConnections and Authentication / Connection Settings\tINTEGER\t0\t1\t262143\tSets the maximum number of concurrent connections.\t
shared_buffers\tpostmaster\tResource Usage / Memory\tINTEGER\t0\t16\t1073741823\tSets the number of shared memory buffers used by the server.\t
work_mem\tuser\tResource Usage / Memory\tINTEGER\t0\t64\t2147483647\tSets the maximum memory to be used for query workspaces.\tThis much memory can be used by each internal sort operation and hash table before switching to temporary disk files.
checkpoint_timeout\tsighup\tWrite-Ahead Log / Checkpoints\tINTEGER\t0\t30\t86400\tSets the maximum time between automatic WAL checkpoints.\t
random_page_cost\tuser\tQuery Tuning / Planner Cost Constants\tREAL\t0\t0\t1.79769e+308\tSets the planner's estimate of the cost of a nonsequentially fetched disk page.\t
autovacuum_vacuum_cost_delay\tsighup\tAutovacuum\tREAL\t0\t-1\t100\tVacuum cost delay in milliseconds, for autovacuum.\t
hot_standby\tpostmaster\tReplication / Standby Servers\tBOOLEAN\tFALSE\t\t\tAllows connections and queries during recovery.\t
wal_level\tpostmaster\tWrite-Ahead Log / Settings\tENUM\treplica\t\t\tSets the level of information written to the WAL.\t
synchronous_commit\tuser\tWrite-Ahead Log / Settings\tENUM\ton\t\t\tSets the current transaction's synchronization level.\t
log_min_messages\tsuperuser\tReporting and Logging / When to Log\tENUM\twarning\t\t\tSets the message levels that are logged.\t
IntervalStyle\tuser\tClient Connection Defaults / Locale and Formatting\tENUM\tpostgres\t\t\tSets the display format for interval values.\t
wal_keep_size\tsighup\tReplication / Sending Servers\tINTEGER\t0\t0\t2147483647\tSets the size of WAL files held for standby servers.\t
search_path\tuser\tClient Connection Defaults / Statement Behavior\tSTRING\t\"$user\", public\t\t\tSets the schema search order for names that are not schema-qualified.\t
";

    fn table() -> GucTable {
        GucTable::parse(DESCRIBE, 15).unwrap()
    }

    fn refused(name: &str, v: Json) -> String {
        table().check(name, &v).unwrap_err().to_string()
    }

    #[test]
    fn describe_config_is_read_into_typed_settings() {
        let t = table();
        let mc = t.get("MAX_CONNECTIONS").unwrap();
        assert_eq!(
            (mc.context.as_str(), mc.group.as_str()),
            ("postmaster", "Connections and Authentication / Connection Settings")
        );
        assert_eq!(mc.kind, GucKind::Integer { min: 1.0, max: 262_143.0, unit: UnitInfo::None });
        let sb = &t.get("shared_buffers").unwrap().kind;
        assert_eq!(
            sb,
            &GucKind::Integer { min: 16.0, max: 1_073_741_823.0, unit: UnitInfo::Base(BaseUnit::Memory(8192)) }
        );
        assert!(
            matches!(&t.get("wal_level").unwrap().kind, GucKind::Enum(Some(v)) if v == &["minimal", "replica", "logical"])
        );
        assert_eq!(t.get("intervalstyle").unwrap().name, "IntervalStyle");
        assert!(GucTable::parse("garbage", 15).is_err());
        assert!(GucTable::parse("x\ty\tz\tWHAT\t\t\t\td\t", 15).unwrap_err().contains("unknown type"));
    }

    #[test]
    fn valid_values_pass() {
        let t = table();
        for (name, v) in [
            ("max_connections", json!(150)),
            ("max_connections", json!("150")),
            ("shared_buffers", json!("128MB")),
            ("shared_buffers", json!(16384)),
            ("shared_buffers", json!("8GB")),
            ("work_mem", json!("4MB")),
            ("checkpoint_timeout", json!("5min")),
            ("checkpoint_timeout", json!(300)),
            ("random_page_cost", json!(1.1)),
            ("autovacuum_vacuum_cost_delay", json!("2ms")),
            ("hot_standby", json!(true)),
            ("hot_standby", json!("on")),
            ("hot_standby", json!("yes")),
            ("wal_level", json!("LOGICAL")),
            ("wal_level", json!("hot_standby")),
            ("synchronous_commit", json!("remote_apply")),
            ("synchronous_commit", json!(false)),
            ("synchronous_commit", json!("true")),
            ("log_min_messages", json!("debug")),
            ("search_path", json!("app, public")),
            ("pg_stat_statements.track", json!("all")),
        ] {
            assert_eq!(t.check(name, &v), Ok(Checked::Valid), "{name} = {v}");
        }
    }

    #[test]
    fn values_postgresql_refuses_are_refused_with_the_reason() {
        let e = refused("max_connections", json!("lots"));
        assert_eq!(e, "max_connections: invalid value \"lots\": not a number (an integer from 1 to 262143)");
        let e = refused("shared_buffers", json!("999TB"));
        assert!(e.starts_with("shared_buffers: invalid value \"999TB\": value exceeds integer range"), "{e}");
        let e = refused("shared_buffers", json!("64kB"));
        assert!(
            e.contains("outside the valid range (an integer from 16 to 1073741823 in units of 8kB, i.e. 128kB .."),
            "{e}"
        );
        let e = refused("max_connections", json!(0));
        assert!(e.ends_with("outside the valid range (an integer from 1 to 262143)"), "{e}");
        assert!(
            refused("shared_buffers", json!("128mb")).contains("valid units for this parameter are TB, GB, MB, kB, B")
        );
        assert!(refused("checkpoint_timeout", json!("5 fortnights")).contains("d, h, min, s, ms, us"));
        assert!(refused("checkpoint_timeout", json!("10s")).contains("outside the valid range"));
        assert!(refused("max_connections", json!("100MB")).contains("this parameter takes no unit"));
        assert!(refused("max_connections", json!(true)).contains("not a number"));
        assert!(refused("random_page_cost", json!(-1)).contains("outside the valid range"));
        assert!(refused("hot_standby", json!("maybe")).contains("a boolean is expected"));
        let e = refused("wal_level", json!("archival"));
        assert!(e.ends_with("available values: \"minimal\", \"replica\", \"logical\""), "{e}");
        assert!(refused("synchronous_commit", json!("sometimes")).contains("\"remote_apply\""));
        assert!(refused("work_mem", json!([1])).contains("expected a single value"));
    }

    #[test]
    fn a_whole_parameters_section_is_checked() {
        let t = table();
        let params: std::collections::BTreeMap<String, Json> =
            serde_json::from_value(json!({"max_connections": 200, "wal_keep_segments": 8, "shared_buffers": "1GB"}))
                .unwrap();
        let notes = t.check_all(&params).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("wal_keep_segments"), "{notes:?}");
        let bad: std::collections::BTreeMap<String, Json> =
            serde_json::from_value(json!({"max_connections": "lots", "work_mem": "4MB"})).unwrap();
        assert_eq!(t.check_all(&bad).unwrap_err().name, "max_connections");
    }

    #[test]
    fn unknown_and_legacy_names_are_accepted_with_a_note_as_patroni_does() {
        let t = table();
        let note = |name: &str, v: Json| match t.check(name, &v) {
            Ok(Checked::Note(n)) => n,
            other => panic!("{name}: {other:?}"),
        };
        assert!(note("max_connectoins", json!(10)).contains("not a parameter of PostgreSQL 15"));
        assert!(note("wal_keep_segments", json!(8)).contains("wal_keep_size = 128MB"));
        assert!(t.check("wal_keep_segments", &json!("many")).is_err());
        assert!(t.check("wal_keep_segments", &json!(-1)).is_err());
        assert!(note("anything", json!(null)).contains("no value"));
    }

    #[test]
    fn a_list_or_mapping_under_a_name_postgresql_does_not_know_is_left_out_as_patroni_does() {
        // Seed 002 puts create_replica_methods and its method's section among the parameters.
        let t = table();
        for v in [json!(["pgbackrest"]), json!({"command": "pgbackrest restore", "keep_data": true})] {
            match t.check("create_replica_methods", &v) {
                Ok(Checked::Note(n)) => assert!(n.contains("left out") && n.contains("postgresql section"), "{n}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        // A setting PostgreSQL knows, or an extension's, still needs a single value.
        assert!(refused("work_mem", json!(["4MB"])).contains("expected a single value"));
        assert!(t.check("pg_stat_statements.max", &json!([1000])).is_err());
    }

    #[test]
    fn another_major_version_never_refuses_what_15_does_not_know() {
        let t16 = GucTable::parse(
            &format!(
                "{DESCRIBE}new_setting\tuser\tX\tINTEGER\t0\t0\t100\tnew\t\nnew_enum\tuser\tX\tENUM\ta\t\t\tnew\t\n"
            ),
            16,
        )
        .unwrap();
        assert!(matches!(t16.check("new_setting", &json!("10MB")), Ok(Checked::Note(_))));
        assert!(t16.check("new_setting", &json!(1000)).is_err(), "the range is still checked");
        assert!(matches!(t16.check("new_enum", &json!("b")), Ok(Checked::Note(_))));
        assert!(matches!(t16.check("wal_level", &json!("newlevel")), Ok(Checked::Note(_))));
    }

    #[test]
    fn major_version_from_postgres_version() {
        assert_eq!(parse_major("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n"), Some(15));
        assert_eq!(parse_major("postgres (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("nonsense"), None);
    }

    #[test]
    fn bundled_pg15_settings_parse() {
        let x = pg15_settings();
        assert_eq!(x["shared_buffers"].unit, UnitInfo::Base(BaseUnit::Memory(8192)));
        assert_eq!(x["max_wal_size"].unit, UnitInfo::Base(BaseUnit::Memory(1 << 20)));
        assert_eq!(x["max_connections"].unit, UnitInfo::None);
        assert!(x.values().all(|s| s.unit != UnitInfo::Unknown), "every unit of the file is understood");
        assert_eq!(x["ssl_max_protocol_version"].values.as_ref().unwrap()[0], "", "an empty value is allowed");
        assert_eq!(x["block_size"].guc.kind, GucKind::Integer { min: 8192.0, max: 8192.0, unit: UnitInfo::None });
    }

    #[test]
    fn settings_describe_config_leaves_out_are_known_and_internal_ones_refused() {
        let t = table();
        assert_eq!(t.check("zero_damaged_pages", &json!(true)), Ok(Checked::Valid));
        assert_eq!(t.check("application_name", &json!("app")), Ok(Checked::Valid));
        assert!(t.check("transaction_isolation", &json!("whenever")).is_err());
        let e = t.check("block_size", &json!(8192)).unwrap_err().to_string();
        assert!(e.contains("block_size cannot be set"), "{e}");
    }

    #[test]
    fn the_installed_postgres_is_described_and_the_bundled_table_covers_it() {
        let bin = crate::settings::default_bin_dir();
        let t = for_bin_dir(&bin).expect("postgres --describe-config of the installed PostgreSQL");
        assert!(Arc::ptr_eq(&t, &for_bin_dir(&bin).unwrap()), "read once per binary");
        assert!(t.check("max_connections", &json!("lots")).is_err());
        assert!(t.check("shared_buffers", &json!("999TB")).is_err());
        assert_eq!(t.check("shared_buffers", &json!("128MB")), Ok(Checked::Valid));
        if t.major() == 15 {
            for g in t.settings.values() {
                let unknown = match &g.kind {
                    GucKind::Integer { unit, .. } | GucKind::Real { unit, .. } => *unit == UnitInfo::Unknown,
                    GucKind::Enum(values) => values.is_none(),
                    _ => false,
                };
                assert!(!unknown, "{} has no unit or values in pg15_settings.tsv", g.name);
            }
        }
        let e = for_bin_dir(Path::new("/nonexistent")).unwrap_err().to_string();
        assert!(e.starts_with("cannot read PostgreSQL's settings from /nonexistent/postgres"), "{e}");
    }
}
