//! Logging for `rampart agent` and `rampart proxy`, as Patroni's `log` section describes it
//! ([`rampart_config::LogConfig`]): plain lines laid out by a Python logging format or JSON lines,
//! to stderr or to a file in `log.dir` rotated by size like Python's `RotatingFileHandler`.
//!
//! The agent writes `<dir>/patroni.log`, the name Patroni's handler gives its file (it is named
//! after Patroni's `patroni.log` module): log shippers, logrotate rules and runbooks written for
//! a Patroni host keep finding the file when Rampart replaces Patroni. The proxy, which Patroni
//! does not have, writes `<dir>/rampart-proxy.log`, so an agent and a proxy reading the same
//! member file never rotate one file from two processes.
//!
//! Invariants kept here:
//! * the configuration is read before logging starts, so a configuration error still reaches
//!   stderr; once started, a failing write (a full disk, a closed stderr) loses the line and
//!   nothing else: logging never stops the agent;
//! * `RUST_LOG`, when set, decides the levels instead of `log.level` and `log.loggers`;
//! * [`reconfigure`] swaps level, layout and destination at once (for a reload); a destination
//!   that cannot be opened leaves the previous settings in force.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context as _, Result};
use rampart_config::log::{FormatPiece, LogAttr, Placeholder};
use rampart_config::{LogConfig, LogType};
use serde_json::{Map, Value as Json};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// The agent's log file in `log.dir` (Patroni's name, see the module header).
pub const AGENT_LOG_FILE: &str = "patroni.log";
/// The proxy's log file in `log.dir`.
pub const PROXY_LOG_FILE: &str = "rampart-proxy.log";

/// The field that raises an ERROR event to Python's CRITICAL (tracing has no such level);
/// [`critical!`] sets it. It is not printed as a field.
const CRITICAL_FIELD: &str = "critical";

/// Logs at Python's `CRITICAL` level (`levelname` CRITICAL, `levelno` 50): an ERROR event that
/// carries the marker field, so filters treat it as ERROR. Used for the lines Patroni logs as
/// CRITICAL (`logger.fatal`) and that its tools look for, e.g. "Can't start; there is already a
/// node named ... running".
macro_rules! critical {
    ($($arg:tt)+) => { tracing::error!(critical = true, $($arg)+) };
}
pub(crate) use critical;

/// What [`reconfigure`] changes.
struct Handle {
    filter: reload::Handle<EnvFilter, Registry>,
    output: Arc<Mutex<Output>>,
    file_name: &'static str,
}

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Starts logging as `cfg` says; `file_name` is the file used in `log.dir`. Fails when the log
/// file cannot be opened (the caller reports it on stderr).
pub fn init(cfg: &LogConfig, file_name: &'static str) -> Result<()> {
    let output = Arc::new(Mutex::new(Output::open(cfg, file_name)?));
    let (filter, handle) = reload::Layer::new(filter_for(cfg));
    tracing_subscriber::registry()
        .with(filter)
        .with(PatroniLayer { output: output.clone() })
        .try_init()
        .context("logging was already set up")?;
    let _ = HANDLE.set(Handle { filter: handle, output, file_name });
    Ok(())
}

/// Starts logging to stderr with Patroni's defaults (commands without a configuration file).
pub fn init_stderr() {
    // Stderr cannot fail to open, and this runs once.
    let _ = init(&LogConfig::default(), AGENT_LOG_FILE);
}

/// Applies a changed `log` section (on reload): level, layout and destination. On error the
/// previous settings stay in force.
// Called by the reloads of the agent (src/agent/driver/reload.rs) and of the proxy (src/proxy.rs).
pub fn reconfigure(cfg: &LogConfig) -> Result<()> {
    let handle = HANDLE.get().context("logging was not set up")?;
    let output = Output::open(cfg, handle.file_name)?;
    handle.filter.reload(filter_for(cfg)).context("changing the log level")?;
    *handle.output.lock().unwrap_or_else(|e| e.into_inner()) = output;
    Ok(())
}

/// `RUST_LOG` when set (and valid), otherwise `log.level` with `log.loggers` as per-target levels.
fn filter_for(cfg: &LogConfig) -> EnvFilter {
    if let Some(filter) = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()) {
        if let Ok(f) = EnvFilter::try_new(filter) {
            return f;
        }
    }
    let mut directives = cfg.level.directive().to_string();
    for (target, level) in &cfg.loggers {
        let _ = write!(directives, ",{target}={}", level.directive());
    }
    // The config crate admits only module paths as targets, so this parses.
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(cfg.level.directive()))
}

/// How lines are laid out and where they go.
struct Output {
    layout: Layout,
    sink: Sink,
}

impl Output {
    fn open(cfg: &LogConfig, file_name: &str) -> Result<Output> {
        let sink = match &cfg.dir {
            None => Sink::Stderr,
            Some(dir) => {
                fs::create_dir_all(dir).with_context(|| format!("cannot create log.dir {}", dir.display()))?;
                let path = dir.join(file_name);
                let file = RotatingFile::open(&path, cfg.file_size, cfg.file_num, cfg.mode)
                    .with_context(|| format!("cannot open the log file {}", path.display()))?;
                Sink::File(file)
            }
        };
        Ok(Output { layout: Layout::from(cfg), sink })
    }
}

/// Where lines go.
enum Sink {
    Stderr,
    File(RotatingFile),
    #[cfg(test)]
    Buffer(Arc<Mutex<Vec<u8>>>),
}

impl Sink {
    /// Writes one whole line; errors lose the line (see the module's invariants).
    fn write_line(&mut self, line: &[u8]) {
        let _ = match self {
            // One write of the whole line: lines from two threads never interleave.
            Sink::Stderr => io::stderr().lock().write_all(line),
            Sink::File(f) => f.write_line(line),
            #[cfg(test)]
            Sink::Buffer(b) => {
                b.lock().unwrap().extend_from_slice(line);
                Ok(())
            }
        };
    }
}

/// The line layout: Patroni's `type`, `format`, `dateformat` and `static_fields`.
struct Layout {
    kind: LogType,
    format: Vec<FormatPiece>,
    dateformat: Option<String>,
    static_fields: Map<String, Json>,
}

impl From<&LogConfig> for Layout {
    fn from(cfg: &LogConfig) -> Layout {
        Layout {
            kind: cfg.kind,
            format: cfg.format.clone(),
            dateformat: cfg.dateformat.clone(),
            static_fields: cfg.static_fields.clone(),
        }
    }
}

/// A Python level: tracing's five, and CRITICAL (see [`critical!`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PyLevel {
    Tracing(Level),
    Critical,
}

/// One event, as the layout sees it.
struct Record<'a> {
    time: jiff::Zoned,
    level: PyLevel,
    meta: &'static tracing::Metadata<'static>,
    fields: &'a Fields,
}

impl Layout {
    /// The line for `r`, newline included.
    fn render(&self, r: &Record<'_>) -> String {
        let mut line = match self.kind {
            LogType::Plain => self.plain(r),
            LogType::Json => self.json(r),
        };
        line.push('\n');
        line
    }

    fn plain(&self, r: &Record<'_>) -> String {
        let mut out = String::new();
        for piece in &self.format {
            match piece {
                FormatPiece::Text(t) => out.push_str(t),
                FormatPiece::Field(p) => pad(&mut out, p, &self.text(p.attr, r, true)),
            }
        }
        out
    }

    /// One JSON object: the format's attributes in its order (as python-json-logger writes
    /// them), then `static_fields`, then the event's fields; a key already written is not repeated.
    fn json(&self, r: &Record<'_>) -> String {
        let mut entries: Vec<(&str, Json)> = Vec::new();
        for p in self.format.iter().filter_map(|piece| match piece {
            FormatPiece::Field(p) => Some(p),
            FormatPiece::Text(_) => None,
        }) {
            let value = match p.attr {
                LogAttr::LevelNo => Json::from(level_no(r.level)),
                LogAttr::LineNo => Json::from(r.meta.line().unwrap_or(0)),
                LogAttr::Process => Json::from(std::process::id()),
                LogAttr::Created => Json::from(r.time.timestamp().as_millisecond() as f64 / 1000.0),
                attr => Json::from(self.text(attr, r, false)),
            };
            push_new(&mut entries, &p.key, value);
        }
        for (k, v) in &self.static_fields {
            push_new(&mut entries, k, v.clone());
        }
        for (k, v, _) in &r.fields.fields {
            push_new(&mut entries, k, v.clone());
        }
        let mut line = String::from("{");
        for (i, (k, v)) in entries.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(line, "{}:{v}", Json::from(*k));
        }
        line.push('}');
        line
    }

    /// The text of `attr`; in plain lines the message is followed by the event's fields.
    fn text(&self, attr: LogAttr, r: &Record<'_>, plain: bool) -> String {
        match attr {
            LogAttr::AscTime => self.asctime(&r.time),
            LogAttr::Created => format!("{:.3}", r.time.timestamp().as_millisecond() as f64 / 1000.0),
            LogAttr::Msecs => r.time.millisecond().to_string(),
            LogAttr::LevelName => level_name(r.level).to_string(),
            LogAttr::LevelNo => level_no(r.level).to_string(),
            LogAttr::Message if plain => {
                let mut m = r.fields.message.clone();
                for (k, _, text) in &r.fields.fields {
                    let _ = write!(m, " {k}={text}");
                }
                m
            }
            LogAttr::Message => r.fields.message.clone(),
            LogAttr::Name => r.meta.target().to_string(),
            LogAttr::FileName => r
                .meta
                .file()
                .map(|f| Path::new(f).file_name().unwrap_or_default().to_string_lossy().into_owned())
                .unwrap_or_default(),
            LogAttr::PathName => r.meta.file().unwrap_or("").to_string(),
            LogAttr::LineNo => r.meta.line().unwrap_or(0).to_string(),
            LogAttr::Process => std::process::id().to_string(),
            LogAttr::ThreadName => std::thread::current().name().unwrap_or("unnamed").to_string(),
            // Rust's events carry no function name: the module's stands in (see LogAttr::FuncName).
            LogAttr::Module | LogAttr::FuncName => module_name(r.meta),
        }
    }

    /// Python's `asctime`: `dateformat` when given, else `2026-01-02 15:04:05,123` (local time).
    fn asctime(&self, t: &jiff::Zoned) -> String {
        if let Some(f) = &self.dateformat {
            if let Ok(s) = jiff::fmt::strtime::format(f.as_str(), t) {
                return s;
            }
        }
        format!("{},{:03}", t.strftime("%Y-%m-%d %H:%M:%S"), t.millisecond())
    }
}

/// The last part of the event's module path.
fn module_name(meta: &tracing::Metadata<'_>) -> String {
    meta.module_path().unwrap_or("").rsplit("::").next().unwrap_or("").to_string()
}

/// Adds `key` unless it is there already.
fn push_new<'a>(entries: &mut Vec<(&'a str, Json)>, key: &'a str, value: Json) {
    if !entries.iter().any(|(k, _)| *k == key) {
        entries.push((key, value));
    }
}

/// Applies a placeholder's width, alignment and precision to `text`.
fn pad(out: &mut String, p: &Placeholder, text: &str) {
    let text: String = match p.precision {
        Some(n) => text.chars().take(n).collect(),
        None => text.to_string(),
    };
    let fill = p.width.saturating_sub(text.chars().count());
    if p.left_align {
        out.push_str(&text);
        out.extend(std::iter::repeat_n(' ', fill));
    } else {
        out.extend(std::iter::repeat_n(if p.zero_pad { '0' } else { ' ' }, fill));
        out.push_str(&text);
    }
}

/// Python's level names (no TRACE in Python: it is printed as DEBUG).
fn level_name(level: PyLevel) -> &'static str {
    match level {
        PyLevel::Tracing(Level::TRACE | Level::DEBUG) => "DEBUG",
        PyLevel::Tracing(Level::INFO) => "INFO",
        PyLevel::Tracing(Level::WARN) => "WARNING",
        PyLevel::Tracing(_) => "ERROR",
        PyLevel::Critical => "CRITICAL",
    }
}

fn level_no(level: PyLevel) -> u8 {
    match level {
        PyLevel::Tracing(Level::TRACE) => 5,
        PyLevel::Tracing(Level::DEBUG) => 10,
        PyLevel::Tracing(Level::INFO) => 20,
        PyLevel::Tracing(Level::WARN) => 30,
        PyLevel::Tracing(_) => 40,
        PyLevel::Critical => 50,
    }
}

/// An event's message and fields: the JSON value and the text a plain line prints.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, Json, String)>,
    /// The event carries [`CRITICAL_FIELD`].
    critical: bool,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%x` fields arrive here too, printed with Display.
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push((field.name(), Json::String(text.clone()), text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push((field.name(), Json::String(value.into()), format!("{value:?}")));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), Json::from(value), value.to_string()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), Json::from(value), value.to_string()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), Json::from(value), value.to_string()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == CRITICAL_FIELD {
            self.critical = value;
            return;
        }
        self.fields.push((field.name(), Json::from(value), value.to_string()));
    }
}

/// The layer that formats and writes every event that passed the filter.
struct PatroniLayer {
    output: Arc<Mutex<Output>>,
}

impl<S: Subscriber> Layer<S> for PatroniLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let level = match (fields.critical, *meta.level()) {
            (true, Level::ERROR) => PyLevel::Critical,
            (_, level) => PyLevel::Tracing(level),
        };
        let record = Record { time: jiff::Zoned::now(), level, meta, fields: &fields };
        // A panic elsewhere while holding the lock must not silence the log.
        let mut out = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let line = out.layout.render(&record);
        out.sink.write_line(line.as_bytes());
    }
}

/// A log file rotated by size as Python's `RotatingFileHandler` does: before a line would take
/// the file to `max_bytes`, `file` becomes `file.1`, `file.1` becomes `file.2`, ... and the
/// oldest beyond `backups` is removed. `max_bytes` or `backups` 0: never rotated.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    backups: u32,
    mode: Option<u32>,
}

impl RotatingFile {
    /// Opens (appends to) `path`, with permission bits `mode` when given.
    pub fn open(path: &Path, max_bytes: u64, backups: u32, mode: Option<u32>) -> io::Result<RotatingFile> {
        let file = open_append(path, mode)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile { path: path.to_path_buf(), file, size, max_bytes, backups, mode })
    }

    /// Appends `line`, rotating first when it would reach `max_bytes`. When rotating fails (a
    /// file renamed away by hand, a read-only directory), the line still goes to the current file.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.max_bytes > 0 && self.backups > 0 && self.size > 0 && self.size + len >= self.max_bytes {
            let _ = self.rotate();
        }
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        for i in (1..self.backups).rev() {
            let from = numbered(i);
            if from.exists() {
                fs::rename(&from, numbered(i + 1))?;
            }
        }
        fs::rename(&self.path, numbered(1))?;
        self.file = open_append(&self.path, self.mode)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path, mode: Option<u32>) -> io::Result<File> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    if let Some(mode) = mode {
        // Exactly these bits, as Patroni's handler sets them, whatever the umask.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> LogConfig {
        let text = format!("scope: s\netcd3: {{host: h:2379}}\nproxy: {{listen: h:1}}\n{yaml}");
        rampart_config::parse_proxy(&text, "t.yml", Vec::new()).unwrap().config.log
    }

    /// The lines `emit` logs through a layer set up from `yaml` (a `log` section).
    fn lines(yaml: &str, emit: impl FnOnce()) -> Vec<String> {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let cfg = config(yaml);
        let output = Output { layout: Layout::from(&cfg), sink: Sink::Buffer(buf.clone()) };
        let subscriber = tracing_subscriber::registry()
            .with(filter_for(&LogConfig { ..cfg }))
            .with(PatroniLayer { output: Arc::new(Mutex::new(output)) });
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        text.lines().map(String::from).collect()
    }

    #[test]
    fn json_lines_hold_the_time_level_message_fields_and_static_fields() {
        let got = lines("log: {type: json, static_fields: {app: rampart, dc: 2}}\n", || {
            tracing::info!(member = "node1", lag = 42u64, healthy = true, addr = %"127.0.0.1:5432", "agent starting");
            tracing::warn!("etcd is \"slow\"\nsecond line");
        });
        assert_eq!(got.len(), 2, "{got:?}");
        let at = |key: &str| got[0].find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {}", got[0]));
        assert!(at("asctime") < at("levelname") && at("levelname") < at("message"), "the format's order: {}", got[0]);
        assert!(at("message") < at("app") && at("app") < at("member"), "then static_fields, then fields: {}", got[0]);
        let first: Json = serde_json::from_str(&got[0]).unwrap();
        assert_eq!(first["levelname"], "INFO");
        assert_eq!(first["message"], "agent starting");
        assert_eq!(first["member"], "node1");
        assert_eq!(first["lag"], 42);
        assert_eq!(first["healthy"], true);
        assert_eq!(first["addr"], "127.0.0.1:5432");
        assert_eq!((first["app"].as_str(), first["dc"].as_i64()), (Some("rampart"), Some(2)));
        let time = first["asctime"].as_str().unwrap();
        assert!(jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S,%f", time).is_ok(), "asctime {time}");
        let second: Json = serde_json::from_str(&got[1]).unwrap();
        assert_eq!(
            (second["levelname"].as_str(), second["message"].as_str()),
            (Some("WARNING"), Some("etcd is \"slow\"\nsecond line"))
        );
    }

    #[test]
    fn json_keys_follow_the_format_list_and_its_renames() {
        let got = lines(
            "log: {type: json, format: [{asctime: time}, {levelname: level}, message, levelno, lineno]}\n",
            || tracing::error!(code = -3i64, "failed"),
        );
        let line: Json = serde_json::from_str(&got[0]).unwrap();
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        for key in ["time", "level", "message", "levelno", "lineno", "code"] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        assert!(!keys.contains(&"levelname") && !keys.contains(&"asctime"), "renamed: {keys:?}");
        assert_eq!(
            (line["level"].as_str(), line["levelno"].as_i64(), line["code"].as_i64()),
            (Some("ERROR"), Some(40), Some(-3))
        );
    }

    #[test]
    fn plain_lines_follow_the_python_format() {
        let got = lines(
            "log: {format: '[%(levelname)-7s] %(name)s: %(message)s (%(msecs)03d)', dateformat: '%H:%M'}\n",
            || tracing::info!(listen = %"127.0.0.1:8008", n = 3, "REST API listening"),
        );
        let line = &got[0];
        assert!(
            line.starts_with("[INFO   ] rampart::logging::tests: REST API listening listen=127.0.0.1:8008 n=3 ("),
            "{line}"
        );
        assert!(line.ends_with(')') && line.len() == line.find(" (").unwrap() + 6, "three-digit msecs: {line}");
        let default = lines("", || tracing::warn!("lost the lock"));
        let (time, rest) = default[0].split_at(23);
        assert!(jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S,%f", time).is_ok(), "Patroni's asctime: {time}");
        assert_eq!(rest, " WARNING: lost the lock");
    }

    #[test]
    fn critical_lines_put_their_level_where_patronis_acceptance_suite_reads_it() {
        // The suite's format; it finds the level at column 24 (`line[24:24+len(level)]`).
        let format = "'%(asctime)s %(levelname)s [%(pathname)s:%(lineno)d - %(funcName)s]: %(message)s'";
        let got = lines(&format!("log: {{format: {format}}}\n"), || {
            critical!("Can't start; there is already a node named '{}' running", "postgres-0");
            tracing::error!("an ordinary error");
        });
        assert_eq!(&got[0][24..24 + "CRITICAL".len()], "CRITICAL", "{}", got[0]);
        assert!(
            got[0].ends_with(" - tests]: Can't start; there is already a node named 'postgres-0' running"),
            "{}",
            got[0]
        );
        assert!(got[0].contains(" CRITICAL [src/logging.rs:"), "{}", got[0]);
        assert_eq!(&got[1][24..29], "ERROR", "{}", got[1]);
        let json = lines("log: {type: json, format: [levelname, levelno, message]}\n", || critical!("x"));
        let line: Json = serde_json::from_str(&json[0]).unwrap();
        assert_eq!((line["levelname"].as_str(), line["levelno"].as_i64()), (Some("CRITICAL"), Some(50)));
        assert!(line.get("critical").is_none(), "the marker is not a field: {line}");
    }

    #[test]
    fn the_level_filters_unless_rust_log_says_otherwise() {
        if std::env::var_os("RUST_LOG").is_some() {
            return; // The environment decides; nothing to check about log.level.
        }
        let got = lines("log: {level: WARNING}\n", || {
            tracing::info!("hidden");
            tracing::warn!("shown");
        });
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].ends_with("WARNING: shown"));
    }

    /// The only test that sets the process-wide logger (the others use a thread-local one).
    #[test]
    fn a_reload_moves_the_log_and_changes_its_layout() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        init(&config(&format!("log: {{dir: {}}}\n", a.display())), AGENT_LOG_FILE).unwrap();
        tracing::warn!("to the first file");
        reconfigure(&config(&format!("log: {{type: json, dir: {}}}\n", b.display()))).unwrap();
        tracing::warn!(n = 1, "to the second file");
        let bad = config("log: {dir: /proc/self/no-such-dir}\n");
        assert!(reconfigure(&bad).is_err(), "a log directory that cannot be made is refused");
        tracing::warn!("still to the second file");

        // The logger is process-wide: lines of tests running beside this one (the simulated
        // agents log too) may land in these files, so only this test's own lines are compared.
        let first = fs::read_to_string(a.join(AGENT_LOG_FILE)).unwrap();
        assert!(first.contains(" WARNING: to the first file\n"), "{first}");
        assert!(!first.contains("second file"), "{first}");
        let second = fs::read_to_string(b.join(AGENT_LOG_FILE)).unwrap();
        let lines: Vec<Json> = second.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let ours: Vec<&Json> =
            lines.iter().filter(|l| l["message"].as_str().is_some_and(|m| m.ends_with("file"))).collect();
        let messages: Vec<&str> = ours.iter().filter_map(|l| l["message"].as_str()).collect();
        assert_eq!(messages, ["to the second file", "still to the second file"]);
        assert_eq!(ours[0]["n"], 1);
    }

    #[test]
    fn files_rotate_by_size_keeping_file_num_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("patroni.log");
        let mut f = RotatingFile::open(&path, 100, 2, Some(0o640)).unwrap();
        // 30 lines of 10 bytes: each file takes 9 (a 10th would reach 100 bytes).
        for i in 0..30 {
            f.write_line(format!("line {i:04}\n").as_bytes()).unwrap();
        }
        let read = |p: &Path| fs::read_to_string(p).unwrap();
        let (cur, one, two) =
            (read(&path), read(&dir.path().join("patroni.log.1")), read(&dir.path().join("patroni.log.2")));
        assert!(!dir.path().join("patroni.log.3").exists(), "only file_num old files are kept");
        for text in [&cur, &one, &two] {
            assert!(text.len() < 100, "each file stays below file_size: {}", text.len());
        }
        assert_eq!((two.lines().count(), one.lines().count(), cur.lines().count()), (9, 9, 3));
        let kept: Vec<String> = [two, one, cur].concat().lines().map(String::from).collect();
        let expected: Vec<String> = (9..30).map(|i| format!("line {i:04}")).collect();
        assert_eq!(kept, expected, "oldest in .2, newest in the file itself, nothing lost in between");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);

        // A reopened file continues from its size.
        let mut f = RotatingFile::open(&path, 100, 2, None).unwrap();
        for i in 30..37 {
            f.write_line(format!("line {i:04}\n").as_bytes()).unwrap();
        }
        assert_eq!(read(&path).lines().count(), 1, "3 + 6 lines filled it; the 7th started a new file");
    }

    #[test]
    fn file_num_zero_never_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("patroni.log");
        let mut f = RotatingFile::open(&path, 10, 0, None).unwrap();
        for _ in 0..5 {
            f.write_line(b"0123456789\n").unwrap();
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), 55);
        assert!(!dir.path().join("patroni.log.1").exists());
    }
}
