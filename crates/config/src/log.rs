//! The `log` section: Patroni's logging settings, typed for the binary's logging (`src/logging.rs`).
//!
//! Patroni's keys and defaults: `type` (`plain` | `json`), `level` (`INFO`), `format`
//! (`%(asctime)s %(levelname)s: %(message)s`, a Python logging format string; for `json` also a
//! list of attribute names or `{attribute: key}` renames), `dateformat`, `static_fields` (json
//! only), `dir` (log to a file there instead of stderr), `file_size` (25000000 bytes) and
//! `file_num` (4 old files kept), `mode` (the file's permission bits), `loggers` (levels per
//! logger). `traceback_level`, `max_queue_size` and `deduplicate_heartbeat_logs: false` describe
//! Python machinery Rampart does not have: they are accepted with a warning naming the key.
//!
//! Invariant kept here: a `LogConfig` only holds what the logger can act on. A value that cannot
//! work (an unknown type or level, a negative size) is refused naming its key; a format
//! placeholder Rampart cannot fill is dropped from the template with a warning naming it, never
//! silently; a `dateformat` is one that formats.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value as Json};

use crate::check::Checker;
use crate::error::Problem;

/// Patroni's default `format`.
pub const DEFAULT_FORMAT: &str = "%(asctime)s %(levelname)s: %(message)s";
/// Patroni's default `file_size`, bytes.
pub const DEFAULT_FILE_SIZE: u64 = 25_000_000;
/// Patroni's default `file_num`.
pub const DEFAULT_FILE_NUM: u32 = 4;

/// `log.type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogType {
    /// One line of text per event, laid out by `format`.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// `log.level` (and the levels of `log.loggers`), Python's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    #[default]
    Info,
    /// `WARNING` (or `WARN`).
    Warning,
    /// `ERROR`.
    Error,
    /// `CRITICAL` (or `FATAL`): Rampart has no level above error, so only errors are logged.
    Critical,
}

impl LogLevel {
    /// Python's name of the level, as `%(levelname)s` prints it.
    pub fn python_name(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
            LogLevel::Critical => "CRITICAL",
        }
    }

    /// The `tracing` filter directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warn",
            LogLevel::Error | LogLevel::Critical => "error",
        }
    }

    fn parse(value: &Json) -> Option<LogLevel> {
        match value.as_str()?.to_ascii_uppercase().as_str() {
            "DEBUG" => Some(LogLevel::Debug),
            "INFO" => Some(LogLevel::Info),
            "WARN" | "WARNING" => Some(LogLevel::Warning),
            "ERROR" => Some(LogLevel::Error),
            "FATAL" | "CRITICAL" => Some(LogLevel::Critical),
            _ => None,
        }
    }
}

/// A Python `LogRecord` attribute a format placeholder can name, among those Rampart fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogAttr {
    /// `asctime`: the event's local time, `dateformat` or `2006-01-02 15:04:05,000`.
    AscTime,
    /// `created`: seconds since the epoch, as a float.
    Created,
    /// `msecs`: the millisecond part of the time.
    Msecs,
    /// `levelname`: `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`.
    LevelName,
    /// `levelno`: 10, 20, 30, 40, 50.
    LevelNo,
    /// `message`: the event's message (in plain text followed by its fields as `key=value`).
    Message,
    /// `name`: the logger, Rampart's module path (`rampart::agent::driver`).
    Name,
    /// `module`: the last part of the module path.
    Module,
    /// `filename`: the source file's name.
    FileName,
    /// `pathname`: the source file's path.
    PathName,
    /// `lineno`: the source line.
    LineNo,
    /// `process`: the process id.
    Process,
    /// `threadName`: the thread's name.
    ThreadName,
    /// `funcName`: approximated by the module's name (the last part of the module path), since
    /// Rust's log events do not record the function they come from.
    FuncName,
}

impl LogAttr {
    /// The attribute's Python name.
    pub fn name(self) -> &'static str {
        match self {
            LogAttr::AscTime => "asctime",
            LogAttr::Created => "created",
            LogAttr::Msecs => "msecs",
            LogAttr::LevelName => "levelname",
            LogAttr::LevelNo => "levelno",
            LogAttr::Message => "message",
            LogAttr::Name => "name",
            LogAttr::Module => "module",
            LogAttr::FileName => "filename",
            LogAttr::PathName => "pathname",
            LogAttr::LineNo => "lineno",
            LogAttr::Process => "process",
            LogAttr::ThreadName => "threadName",
            LogAttr::FuncName => "funcName",
        }
    }

    const ALL: [LogAttr; 14] = [
        LogAttr::AscTime,
        LogAttr::Created,
        LogAttr::Msecs,
        LogAttr::LevelName,
        LogAttr::LevelNo,
        LogAttr::Message,
        LogAttr::Name,
        LogAttr::Module,
        LogAttr::FileName,
        LogAttr::PathName,
        LogAttr::LineNo,
        LogAttr::Process,
        LogAttr::ThreadName,
        LogAttr::FuncName,
    ];

    fn from_name(name: &str) -> Option<LogAttr> {
        LogAttr::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// One placeholder of a format: `%(levelname)-8s` is `LevelName`, left-aligned, width 8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placeholder {
    /// What it prints.
    pub attr: LogAttr,
    /// Its key in a JSON line: the attribute's name, or what a `{attribute: key}` item renames it to.
    pub key: String,
    /// `-` flag: pad on the right.
    pub left_align: bool,
    /// `0` flag: pad numbers with zeros (`%(msecs)03d`).
    pub zero_pad: bool,
    /// Minimum width (0: none).
    pub width: usize,
    /// `.N`: at most N characters.
    pub precision: Option<usize>,
}

/// A piece of a parsed format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatPiece {
    /// Printed as is (`%%` already turned into `%`).
    Text(String),
    /// Filled from the event.
    Field(Placeholder),
}

/// The `log` section, validated (Patroni's defaults when absent).
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `type`.
    pub kind: LogType,
    /// `level`.
    pub level: LogLevel,
    /// `format`, parsed. For `json` the placeholders name the keys (the text between them is
    /// not printed).
    pub format: Vec<FormatPiece>,
    /// `dateformat` (strftime), for `asctime`.
    pub dateformat: Option<String>,
    /// `static_fields`, added to every JSON line.
    pub static_fields: Map<String, Json>,
    /// `dir`: write the log there instead of to stderr.
    pub dir: Option<PathBuf>,
    /// `file_size`: rotate before a line would take the file to this size (0: never).
    pub file_size: u64,
    /// `file_num`: how many rotated files to keep (0: never rotate, as Python's handler).
    pub file_num: u32,
    /// `mode`: permission bits of the log file (default: from the umask).
    pub mode: Option<u32>,
    /// `loggers`: levels per logger (Rampart's module paths, e.g. `rampart_dcs`).
    pub loggers: BTreeMap<String, LogLevel>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            kind: LogType::Plain,
            level: LogLevel::Info,
            format: parse_format(DEFAULT_FORMAT).0,
            dateformat: None,
            static_fields: Map::new(),
            dir: None,
            file_size: DEFAULT_FILE_SIZE,
            file_num: DEFAULT_FILE_NUM,
            mode: None,
            loggers: BTreeMap::new(),
        }
    }
}

impl LogConfig {
    pub(crate) fn build(raw: Option<Json>, c: &mut Checker<'_>) -> Result<LogConfig, Problem> {
        let mut log = LogConfig::default();
        let Some(raw) = raw else { return Ok(log) };
        let Json::Object(map) = raw else {
            return Err(c.problem(&["log"], "expected a mapping (type, level, format, dir, file_size, file_num, ...)"));
        };
        let mut format = None;
        for (key, value) in &map {
            let path = ["log", key.as_str()];
            match key.as_str() {
                "type" => {
                    log.kind = match value.as_str() {
                        Some("plain") => LogType::Plain,
                        Some("json") => LogType::Json,
                        _ => return Err(c.problem(&path, format!("expected plain or json, got {value}"))),
                    }
                }
                "level" => {
                    log.level = LogLevel::parse(value).ok_or_else(|| c.problem(&path, level_error(value)))?;
                }
                "format" => format = Some(value),
                "dateformat" => match value {
                    Json::Null => {}
                    Json::String(s) if s.is_empty() => {}
                    Json::String(s) => {
                        if let Err(e) = jiff::fmt::strtime::format(s.as_str(), &jiff::Zoned::now()) {
                            return Err(c.problem(&path, format!("{s:?} cannot be formatted: {e}")));
                        }
                        log.dateformat = Some(s.clone());
                    }
                    other => return Err(c.problem(&path, format!("expected a strftime format, got {other}"))),
                },
                "static_fields" => match value {
                    Json::Object(m) => log.static_fields = m.clone(),
                    Json::Null => {}
                    other => return Err(c.problem(&path, format!("expected a mapping, got {other}"))),
                },
                "dir" => match value {
                    Json::String(s) if !s.trim().is_empty() => log.dir = Some(PathBuf::from(s)),
                    other => return Err(c.problem(&path, format!("expected a directory, got {other}"))),
                },
                "file_size" => log.file_size = count(value).ok_or_else(|| c.problem(&path, bytes_error(value)))?,
                "file_num" => {
                    log.file_num = count(value)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| c.problem(&path, format!("expected a number of files, got {value}")))?
                }
                "mode" => {
                    log.mode = Some(mode(value).ok_or_else(|| {
                        c.problem(&path, format!("expected permission bits (0 to 0777), got {value}"))
                    })?)
                }
                "loggers" => log.loggers = loggers(value, c)?,
                "traceback_level" => {
                    c.warn(&path, "Rampart has no tracebacks: errors are always logged as one line (ignored)")
                }
                "max_queue_size" => {
                    c.warn(&path, "Rampart writes each line as it is logged, without a queue (ignored)")
                }
                "deduplicate_heartbeat_logs" => {
                    if value != &Json::Bool(true) {
                        c.warn(
                            &path,
                            "Rampart always logs a repeated steady-state decision at debug level only (ignored)",
                        )
                    }
                }
                other => c.note(&["log", other], format!("unknown key log.{other} (ignored)")),
            }
        }
        if let Some(value) = format {
            log.format = match (value, log.kind) {
                (Json::String(s), _) => {
                    let (pieces, unsupported) = parse_format(s);
                    for name in unsupported {
                        c.warn(&["log", "format"], format!("%({name}) is not supported by Rampart (left out)"));
                    }
                    pieces
                }
                (Json::Array(items), LogType::Json) => json_fields(items, c)?,
                (Json::Array(_), LogType::Plain) => {
                    c.warn(&["log", "format"], "a list is only used with type: json; the default format is used");
                    log.format
                }
                (other, _) => {
                    return Err(c.problem(&["log", "format"], format!("expected a string or a list, got {other}")))
                }
            };
        }
        if log.kind == LogType::Plain && !log.static_fields.is_empty() {
            c.warn(&["log", "static_fields"], "only used with type: json (ignored)");
        }
        Ok(log)
    }

    /// The placeholders of the format, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.format.iter().filter_map(|p| match p {
            FormatPiece::Field(f) => Some(f),
            FormatPiece::Text(_) => None,
        })
    }
}

fn level_error(value: &Json) -> String {
    format!("expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value}")
}

fn bytes_error(value: &Json) -> String {
    format!("expected a size in bytes, got {value}")
}

/// A non-negative integer, written as a number or a string of digits (environment overrides).
fn count(value: &Json) -> Option<u64> {
    match value {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Permission bits: a number (`416`, or `0640` read by YAML 1.1 as octal), or a string of octal
/// digits with a leading 0 (`"0640"`, how this reader keeps `0640`).
fn mode(value: &Json) -> Option<u32> {
    let n = match value {
        Json::Number(n) => n.as_u64()?,
        Json::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0o").or_else(|| s.strip_prefix('0')) {
                Some(octal) if !octal.is_empty() => u64::from_str_radix(octal, 8).ok()?,
                _ => s.parse().ok()?,
            }
        }
        _ => return None,
    };
    u32::try_from(n).ok().filter(|m| *m <= 0o777)
}

/// `loggers`: `{name: LEVEL}`. Names are `tracing` targets, Rampart's module paths; Patroni's
/// dotted Python names (`patroni.postmaster`, `urllib3.connectionpool`) match nothing here, so
/// they are reported rather than kept.
fn loggers(value: &Json, c: &mut Checker<'_>) -> Result<BTreeMap<String, LogLevel>, Problem> {
    let mut out = BTreeMap::new();
    let map = match value {
        Json::Null => return Ok(out),
        Json::Object(m) => m,
        other => {
            return Err(c.problem(&["log", "loggers"], format!("expected a mapping of logger: LEVEL, got {other}")))
        }
    };
    for (name, level) in map {
        let path = ["log", "loggers", name.as_str()];
        let level = LogLevel::parse(level).ok_or_else(|| c.problem(&path, level_error(level)))?;
        let rust_path = !name.is_empty()
            && name.split("::").all(|p| !p.is_empty() && p.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'));
        if rust_path {
            out.insert(name.clone(), level);
        } else {
            c.warn(
                &path,
                "not a Rampart logger: loggers are module paths such as rampart_dcs or rampart::agent::driver (ignored)",
            );
        }
    }
    Ok(out)
}

/// A `json` format given as a list: attribute names, or `{attribute: key}` to rename one.
fn json_fields(items: &[Json], c: &mut Checker<'_>) -> Result<Vec<FormatPiece>, Problem> {
    let mut out = Vec::new();
    let mut add = |name: &str, key: &str, c: &mut Checker<'_>| match LogAttr::from_name(name) {
        Some(attr) => out.push(FormatPiece::Field(Placeholder {
            attr,
            key: key.to_string(),
            left_align: false,
            zero_pad: false,
            width: 0,
            precision: None,
        })),
        None => c.warn(&["log", "format"], format!("{name} is not supported by Rampart (left out)")),
    };
    for item in items {
        match item {
            Json::String(name) => add(name, name, c),
            Json::Object(renames) => {
                for (name, key) in renames {
                    let Some(key) = key.as_str() else {
                        return Err(c.problem(
                            &["log", "format"],
                            format!("the new name of {name} must be a string, got {key}"),
                        ));
                    };
                    add(name, key, c);
                }
            }
            other => {
                return Err(
                    c.problem(&["log", "format"], format!("expected attribute names or {{name: key}}, got {other}"))
                )
            }
        }
    }
    Ok(out)
}

/// Parses a Python `%`-style logging format: `%(name)` with optional flags (`-` aligns left),
/// width, `.precision` and a conversion letter; `%%` is a percent sign. Returns the pieces and the
/// names of placeholders Rampart cannot fill (left out of the pieces).
pub fn parse_format(text: &str) -> (Vec<FormatPiece>, Vec<String>) {
    let mut pieces = Vec::new();
    let mut unsupported = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        literal.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            literal.push('%');
            rest = after;
            continue;
        }
        let Some(end) = rest.strip_prefix('(').and_then(|r| r.find(')')) else {
            literal.push('%');
            continue;
        };
        let name = &rest[1..end + 1];
        let mut spec = rest[end + 2..].char_indices();
        let (mut left_align, mut zero_pad, mut width, mut precision, mut digits_after_dot) =
            (false, false, 0usize, None, false);
        let mut consumed = rest.len() - (end + 2);
        for (j, ch) in spec.by_ref() {
            match ch {
                '-' => left_align = true,
                '0' if width == 0 && !digits_after_dot => zero_pad = true,
                '+' | ' ' | '#' => {}
                '.' => {
                    digits_after_dot = true;
                    precision = Some(0);
                }
                d if d.is_ascii_digit() => {
                    let d = d as usize - '0' as usize;
                    match precision.as_mut().filter(|_| digits_after_dot) {
                        Some(p) => *p = *p * 10 + d,
                        None => width = width * 10 + d,
                    }
                }
                _ => {
                    // The conversion letter (s, d, f, r...) ends the placeholder.
                    consumed = j + ch.len_utf8();
                    break;
                }
            }
        }
        rest = &rest[end + 2 + consumed..];
        match LogAttr::from_name(name) {
            Some(attr) => {
                if !literal.is_empty() {
                    pieces.push(FormatPiece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(FormatPiece::Field(Placeholder {
                    attr,
                    key: name.to_string(),
                    left_align,
                    zero_pad,
                    width,
                    precision,
                }));
            }
            None => unsupported.push(name.to_string()),
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(FormatPiece::Text(literal));
    }
    (pieces, unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, parse_proxy, ConfigError, Loaded};

    fn load(section: &str) -> Result<Loaded, ConfigError> {
        crate::tests::minimal_with(section, "l.yml")
    }

    fn field(attr: LogAttr) -> FormatPiece {
        FormatPiece::Field(Placeholder {
            attr,
            key: attr.name().into(),
            left_align: false,
            zero_pad: false,
            width: 0,
            precision: None,
        })
    }

    #[test]
    fn defaults_are_patronis() {
        let l = load("").unwrap();
        let log = l.config.log;
        assert_eq!(log, LogConfig::default());
        assert_eq!(
            (log.kind, log.level, log.dir, log.file_size, log.file_num),
            (LogType::Plain, LogLevel::Info, None, 25_000_000, 4)
        );
        assert_eq!(
            log.format,
            [
                field(LogAttr::AscTime),
                FormatPiece::Text(" ".into()),
                field(LogAttr::LevelName),
                FormatPiece::Text(": ".into()),
                field(LogAttr::Message)
            ]
        );
    }

    #[test]
    fn a_whole_section_is_read() {
        let l = load(
            "log:\n  type: json\n  level: DEBUG\n  dir: /var/log/rampart\n  file_size: 1000\n  file_num: 2\n  \
             mode: 0640\n  dateformat: '%H:%M:%S'\n  static_fields: {app: rampart, dc: 1}\n  \
             format: [asctime, {levelname: level}, message]\n  loggers: {rampart_dcs: WARNING}\n",
        )
        .unwrap();
        assert_eq!(l.warnings, Vec::<String>::new());
        let log = l.config.log;
        assert_eq!((log.kind, log.level), (LogType::Json, LogLevel::Debug));
        assert_eq!(log.dir, Some(PathBuf::from("/var/log/rampart")));
        assert_eq!((log.file_size, log.file_num, log.mode), (1000, 2, Some(0o640)));
        assert_eq!(log.dateformat.as_deref(), Some("%H:%M:%S"));
        assert_eq!(log.static_fields["app"], "rampart");
        let keys: Vec<_> = log.placeholders().map(|p| (p.attr, p.key.as_str())).collect();
        assert_eq!(keys, [(LogAttr::AscTime, "asctime"), (LogAttr::LevelName, "level"), (LogAttr::Message, "message")]);
        assert_eq!(log.loggers["rampart_dcs"], LogLevel::Warning);
    }

    #[test]
    fn the_proxy_reads_the_section_too() {
        let text = "scope: pg\netcd3: {host: h:2379}\nproxy: {listen: h:1}\nlog: {type: json, dir: /tmp/x}\n";
        let log = parse_proxy(text, "p.yml", Vec::new()).unwrap().config.log;
        assert_eq!((log.kind, log.dir), (LogType::Json, Some(PathBuf::from("/tmp/x"))));
    }

    #[test]
    fn environment_overrides_use_patronis_names() {
        let env = vec![
            ("PATRONI_LOG_LEVEL".to_string(), "WARNING".to_string()),
            ("PATRONI_LOG_DIR".to_string(), "/var/log/x".to_string()),
            ("PATRONI_LOG_FILE_NUM".to_string(), "7".to_string()),
            ("PATRONI_LOGLEVEL".to_string(), "DEBUG".to_string()),
            ("PATRONI_LOG_TYPE".to_string(), "json".to_string()),
        ];
        let log = parse(crate::tests::SECTION_BASE, "l.yml", env).unwrap().config.log;
        assert_eq!(log.level, LogLevel::Warning, "the new name wins over the old one");
        assert_eq!((log.dir, log.file_num, log.kind), (Some(PathBuf::from("/var/log/x")), 7, LogType::Json));
        let env = vec![("PATRONI_LOGLEVEL".to_string(), "ERROR".to_string())];
        assert_eq!(
            parse(crate::tests::SECTION_BASE, "l.yml", env).unwrap().config.log.level,
            LogLevel::Error,
            "the old name alone"
        );
    }

    #[test]
    fn what_is_not_acted_on_is_named() {
        let l = load(
            "log:\n  traceback_level: DEBUG\n  max_queue_size: 100\n  deduplicate_heartbeat_logs: false\n  \
             format: '%(asctime)s %(relativeCreated)d %(message)s'\n  static_fields: {a: 1}\n  \
             loggers: {patroni.postmaster: WARNING}\n  colour: true\n",
        )
        .unwrap();
        let w = l.warnings.join("\n");
        for (line, key) in [
            (12, "log.traceback_level: Rampart has no tracebacks"),
            (13, "log.max_queue_size: Rampart writes each line"),
            (14, "log.deduplicate_heartbeat_logs: Rampart always logs"),
            (15, "log.format: %(relativeCreated) is not supported"),
            (16, "log.static_fields: only used with type: json"),
            (17, "log.loggers.patroni.postmaster: not a Rampart logger"),
            (18, "unknown key log.colour"),
        ] {
            assert!(w.contains(&format!("l.yml:{line}: {key}")), "{key} at line {line} in:\n{w}");
        }
        let log = l.config.log;
        assert_eq!(log.placeholders().map(|p| p.attr).collect::<Vec<_>>(), [LogAttr::AscTime, LogAttr::Message]);
        assert!(log.loggers.is_empty());
        assert!(
            load("log:\n  deduplicate_heartbeat_logs: true\n").unwrap().warnings.is_empty(),
            "true is what Rampart does"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |s: &str| load(s).unwrap_err().to_string();
        assert_eq!(err("log:\n  type: xml\n"), "l.yml:12: log.type: expected plain or json, got \"xml\"");
        assert!(err("log:\n  level: LOUD\n").starts_with("l.yml:12: log.level: expected DEBUG, INFO"));
        assert!(err("log:\n  file_size: -1\n").starts_with("l.yml:12: log.file_size: expected a size in bytes"));
        assert!(err("log:\n  file_num: many\n").starts_with("l.yml:12: log.file_num: expected a number"));
        assert!(err("log:\n  mode: 0999\n").starts_with("l.yml:12: log.mode: expected permission bits"));
        assert!(err("log:\n  dir: ''\n").starts_with("l.yml:12: log.dir: expected a directory"));
        assert!(
            err("log:\n  dateformat: '%H:%'\n").starts_with("l.yml:12: log.dateformat: \"%H:%\" cannot be formatted")
        );
        assert!(
            err("log:\n  loggers: {rampart_dcs: LOUD}\n").starts_with("l.yml:12: log.loggers.rampart_dcs: expected")
        );
        assert!(err("log: loud\n").contains("log: expected a mapping"));
        assert!(err("log:\n  format: 3\n").contains("log.format: expected a string or a list"));
    }

    #[test]
    fn python_format_specs_are_parsed() {
        let (pieces, unsupported) =
            parse_format("%(asctime)s [%(levelname)-8s] %(name).5s 100%% %(lineno)d %(thread)d.%(msecs)03d");
        assert_eq!(unsupported, ["thread"]);
        let p = |attr, left_align, width, precision| {
            FormatPiece::Field(Placeholder {
                attr,
                key: LogAttr::name(attr).into(),
                left_align,
                zero_pad: false,
                width,
                precision,
            })
        };
        let msecs = FormatPiece::Field(Placeholder {
            attr: LogAttr::Msecs,
            key: "msecs".into(),
            left_align: false,
            zero_pad: true,
            width: 3,
            precision: None,
        });
        assert_eq!(
            pieces,
            [
                p(LogAttr::AscTime, false, 0, None),
                FormatPiece::Text(" [".into()),
                p(LogAttr::LevelName, true, 8, None),
                FormatPiece::Text("] ".into()),
                p(LogAttr::Name, false, 0, Some(5)),
                FormatPiece::Text(" 100% ".into()),
                p(LogAttr::LineNo, false, 0, None),
                FormatPiece::Text(" .".into()),
                msecs,
            ]
        );
        assert_eq!(parse_format("50% off").0, [FormatPiece::Text("50% off".into())], "a lone % is text");
    }
}
