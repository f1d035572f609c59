//! The admin console's codec, sans-IO: what a user reaches with `psql -p <proxy port> rampart`
//! (database `rampart`, or `pgbouncer` so that PgBouncer's tooling and exporters work
//! unchanged). A query string goes in, a [`Command`] comes out; result rows go in, protocol
//! bytes come out. Nothing here looks at pools or sockets: the caller runs the command.
//!
//! The commands are PgBouncer's, with its column names, column order, type OIDs and command
//! tags, so that `SHOW POOLS`, `SHOW STATS` and friends read the same from Rampart as from
//! PgBouncer. Each result type declares its columns once ([`Row::COLUMNS`]) and what it omits
//! of PgBouncer's. Rampart adds one column, `backend` at the end of `SHOW POOLS`, because its
//! pools are per database, user *and* backend (the member a pool connects to).
//!
//! Invariants: [`Command::parse`] never panics, whatever the string; every encoder writes one
//! whole answer to one query but never ReadyForQuery, which the caller adds once it has
//! written the answer, as after any simple query; a cell is NULL exactly where PgBouncer sends
//! NULL (an `Option` that is `None`), so clients that handle PgBouncer's results handle these.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use crate::backend::{ErrorResponse, Severity, SqlState};
use crate::frame::put_frame;
use crate::wire;

/// The databases a client names to reach the console rather than PostgreSQL: Rampart's own
/// name, and PgBouncer's so that its tooling works unchanged.
pub const CONSOLE_DATABASES: [&str; 2] = ["rampart", "pgbouncer"];

/// Whether a startup packet's database is the console. Exact match, as PostgreSQL compares
/// database names.
pub fn is_console_database(database: &str) -> bool {
    CONSOLE_DATABASES.contains(&database)
}

/// Type byte of RowDescription.
const ROW_DESCRIPTION: u8 = b'T';
/// Type byte of DataRow.
const DATA_ROW: u8 = b'D';
/// Type byte of CommandComplete.
const COMMAND_COMPLETE: u8 = b'C';
/// Type byte of EmptyQueryResponse.
const EMPTY_QUERY_RESPONSE: u8 = b'I';

/// `42601` syntax_error: not a console command, or wrong arguments.
const SYNTAX_ERROR: SqlState = SqlState::new("42601");
/// `42501` insufficient_privilege: a command for admin users only.
const INSUFFICIENT_PRIVILEGE: SqlState = SqlState::new("42501");
/// `00000` successful_completion: the code of the usage notice.
const SUCCESSFUL_COMPLETION: SqlState = SqlState::new("00000");

/// Every command, one usage line each: the source of both the usage notice ([`encode_help`])
/// and the list in the "unknown command" error, so the two cannot disagree.
const USAGE: [&str; 6] = [
    "SHOW HELP|POOLS|CLIENTS|SERVERS|STATS|DATABASES|CONFIG|LISTS|VERSION|POOL_NODES",
    "PAUSE [db]",
    "RESUME [db]",
    "RECONNECT [db]",
    "RELOAD",
    "SHUTDOWN",
];

/// How much of an unknown query an error message repeats (in characters): enough to recognise
/// it, not a megabyte echoed back and logged.
const SHOWN_QUERY_CHARS: usize = 64;

/// One console command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// An empty query string (or only `;`): answered with EmptyQueryResponse, as PostgreSQL
    /// does ([`encode_empty_query`]).
    Empty,
    /// `SHOW <what>`; `SHOW` alone is `SHOW HELP`.
    Show(Show),
    /// A command that changes something; admin users only.
    Action(Action),
}

/// What `SHOW` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Show {
    /// `SHOW HELP`: the usage notice ([`encode_help`]).
    Help,
    /// `SHOW POOLS`: [`PoolRow`]s.
    Pools,
    /// `SHOW CLIENTS`: [`ClientRow`]s.
    Clients,
    /// `SHOW SERVERS`: [`ServerRow`]s.
    Servers,
    /// `SHOW STATS`: [`StatsRow`]s.
    Stats,
    /// `SHOW DATABASES`: [`DatabaseRow`]s.
    Databases,
    /// `SHOW CONFIG`: [`ConfigRow`]s.
    Config,
    /// `SHOW LISTS`: [`ListRow`]s.
    Lists,
    /// `SHOW VERSION`: one [`VersionRow`].
    Version,
    /// `SHOW POOL_NODES` (Pgpool-II's name): [`NodeRow`]s, the members the read-write port's
    /// splitter sends statements to.
    PoolNodes,
}

impl Show {
    /// Every variant, in the usage line's order.
    pub const ALL: [Show; 10] = [
        Show::Help,
        Show::Pools,
        Show::Clients,
        Show::Servers,
        Show::Stats,
        Show::Databases,
        Show::Config,
        Show::Lists,
        Show::Version,
        Show::PoolNodes,
    ];

    /// The word after `SHOW`, upper case.
    pub fn keyword(self) -> &'static str {
        match self {
            Show::Help => "HELP",
            Show::Pools => "POOLS",
            Show::Clients => "CLIENTS",
            Show::Servers => "SERVERS",
            Show::Stats => "STATS",
            Show::Databases => "DATABASES",
            Show::Config => "CONFIG",
            Show::Lists => "LISTS",
            Show::Version => "VERSION",
            Show::PoolNodes => "POOL_NODES",
        }
    }
}

/// A command that changes something. A database argument is `None` for "every database".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `PAUSE [db]`: stop handing out server connections, and answer once those in use are
    /// released.
    Pause(Option<String>),
    /// `RESUME [db]`: undo `PAUSE`.
    Resume(Option<String>),
    /// `RECONNECT [db]`: close each server connection once it is released.
    Reconnect(Option<String>),
    /// `RELOAD`: read the configuration again.
    Reload,
    /// `SHUTDOWN`: stop the proxy.
    Shutdown,
}

impl Action {
    /// The CommandComplete tag PgBouncer sends once the command is done: `PAUSE`, `RESUME`,
    /// `RECONNECT`, `RELOAD` or `SHUTDOWN`.
    pub fn tag(&self) -> &'static str {
        match self {
            Action::Pause(_) => "PAUSE",
            Action::Resume(_) => "RESUME",
            Action::Reconnect(_) => "RECONNECT",
            Action::Reload => "RELOAD",
            Action::Shutdown => "SHUTDOWN",
        }
    }

    /// Appends the CommandComplete that says the command is done (not ReadyForQuery).
    pub fn encode_complete(&self, dst: &mut BytesMut) {
        encode_command_complete(dst, self.tag());
    }
}

/// A query the console refuses, or a command the user may not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleError {
    /// Not a console command. Holds the query as typed (whitespace collapsed, shortened).
    #[error("unknown command: {0}; the console supports {supported}", supported = USAGE.join(", "))]
    UnknownCommand(String),
    /// A console command with arguments it does not take, or a malformed database name.
    #[error("invalid arguments: {query}; usage: {usage}")]
    BadArguments {
        /// The query as typed (whitespace collapsed, shortened).
        query: String,
        /// The command's usage line.
        usage: &'static str,
    },
    /// The command needs an admin user ([`Command::needs_admin`]); the caller checks, since
    /// only it knows who is logged in. Holds the command's tag.
    #[error("admin access needed for {0}")]
    AdminAccessNeeded(&'static str),
}

impl ConsoleError {
    /// The SQLSTATE: `42601` syntax_error, or `42501` insufficient_privilege.
    pub fn code(&self) -> SqlState {
        match self {
            ConsoleError::UnknownCommand(_) | ConsoleError::BadArguments { .. } => SYNTAX_ERROR,
            ConsoleError::AdminAccessNeeded(_) => INSUFFICIENT_PRIVILEGE,
        }
    }

    /// The ErrorResponse (severity ERROR: the console session goes on).
    pub fn to_response(&self) -> ErrorResponse {
        ErrorResponse::new(Severity::Error, self.code(), self.to_string())
    }

    /// Appends the ErrorResponse to `dst` (not ReadyForQuery).
    pub fn encode(&self, dst: &mut BytesMut) {
        self.to_response().encode(dst);
    }
}

/// Appends an ErrorResponse with severity ERROR (the console session goes on), for errors the
/// caller finds while running a command, such as PgBouncer's `no such database: x` or
/// `pooler is not paused/suspended`. Not ReadyForQuery.
pub fn encode_error(dst: &mut BytesMut, code: SqlState, message: impl Into<String>) {
    ErrorResponse::new(Severity::Error, code, message).encode(dst);
}

/// Appends EmptyQueryResponse, PostgreSQL's answer to an empty query string ([`Command::Empty`]).
pub fn encode_empty_query(dst: &mut BytesMut) {
    put_frame(dst, EMPTY_QUERY_RESPONSE, |_| {});
}

/// Appends the answer to `SHOW HELP`, as PgBouncer gives it: a NoticeResponse `Console usage`
/// whose detail lists the commands, then CommandComplete `SHOW`. Not ReadyForQuery.
pub fn encode_help(dst: &mut BytesMut) {
    let mut notice = ErrorResponse::new(Severity::Notice, SUCCESSFUL_COMPLETION, "Console usage");
    let detail: String = USAGE.iter().map(|line| format!("\n\t{line}")).collect();
    notice.detail = Some(detail);
    notice.encode(dst);
    encode_command_complete(dst, "SHOW");
}

fn encode_command_complete(dst: &mut BytesMut, tag: &'static str) {
    put_frame(dst, COMMAND_COMPLETE, |d| wire::put_cstr(d, tag.as_bytes()));
}

impl Command {
    /// Reads one query string of the simple query protocol.
    ///
    /// Keywords are case-insensitive; surrounding whitespace and one trailing `;` are allowed;
    /// words are separated by any whitespace. A database argument is an identifier, folded to
    /// lower case as PostgreSQL folds unquoted names (PgBouncer keeps the case), or a
    /// double-quoted name taken as written, `""` standing for one `"`.
    pub fn parse(sql: &str) -> Result<Command, ConsoleError> {
        let trimmed = sql.trim();
        let body = trimmed.strip_suffix(';').unwrap_or(trimmed).trim_end();
        if body.is_empty() {
            return Ok(Command::Empty);
        }
        let tokens = tokenize(body);
        let unknown = || ConsoleError::UnknownCommand(shown(body));
        let bad = |usage| ConsoleError::BadArguments { query: shown(body), usage };
        let Some(first) = tokens.first().and_then(Token::keyword) else {
            return Err(unknown());
        };
        let optional_db = |usage| match &tokens[1..] {
            [] => Ok(None),
            [arg] => arg.database().map(Some).ok_or_else(|| bad(usage)),
            _ => Err(bad(usage)),
        };
        let no_argument = |usage, command| if tokens.len() == 1 { Ok(command) } else { Err(bad(usage)) };
        let action = match first.to_ascii_uppercase().as_str() {
            "SHOW" => return show(&tokens[1..]).ok_or_else(unknown)?.map_err(bad).map(Command::Show),
            "PAUSE" => Action::Pause(optional_db(USAGE[1])?),
            "RESUME" => Action::Resume(optional_db(USAGE[2])?),
            "RECONNECT" => Action::Reconnect(optional_db(USAGE[3])?),
            "RELOAD" => no_argument(USAGE[4], Action::Reload)?,
            "SHUTDOWN" => no_argument(USAGE[5], Action::Shutdown)?,
            _ => return Err(unknown()),
        };
        Ok(Command::Action(action))
    }

    /// Whether only admin users may run it: `SHOW` is allowed to stats users too (as in
    /// PgBouncer, `stats_users`), every action is admin only.
    pub fn needs_admin(&self) -> bool {
        matches!(self, Command::Action(_))
    }
}

/// `SHOW`'s arguments: `None` when the word is not one of [`Show`] (an unknown command),
/// `Some(Err(usage))` when a known word has arguments after it.
fn show(args: &[Token<'_>]) -> Option<Result<Show, &'static str>> {
    let Some(what) = args.first() else {
        return Some(Ok(Show::Help));
    };
    let word = what.keyword()?;
    let show = Show::ALL.into_iter().find(|s| s.keyword().eq_ignore_ascii_case(word))?;
    Some(if args.len() == 1 { Ok(show) } else { Err(USAGE[0]) })
}

/// One word of a query.
#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    /// Unquoted, as typed.
    Word(&'a str),
    /// Double-quoted, with the quotes removed and `""` turned into `"`.
    Quoted(String),
    /// A quote left open, quotes inside a word, text glued to a closing quote, or `""`.
    Malformed,
}

impl Token<'_> {
    /// The word, when it can be a keyword (unquoted).
    fn keyword(&self) -> Option<&str> {
        match self {
            Token::Word(w) => Some(w),
            Token::Quoted(_) | Token::Malformed => None,
        }
    }

    /// The word as a database name: an unquoted identifier folded to lower case, or a quoted
    /// name as written.
    fn database(&self) -> Option<String> {
        match self {
            Token::Word(w) if w.chars().all(is_identifier_char) => Some(w.to_ascii_lowercase()),
            Token::Quoted(name) => Some(name.clone()),
            Token::Word(_) | Token::Malformed => None,
        }
    }
}

/// PostgreSQL's identifier characters: ASCII letters, digits, `_` and `$`, and any non-ASCII
/// character (PgBouncer is stricter: `[0-9a-z_]`).
fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

/// Splits a query into words at whitespace, keeping a double-quoted name (which may contain
/// whitespace) as one word.
fn tokenize(query: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = query.trim_start();
    while !rest.is_empty() {
        let (token, after) = match rest.strip_prefix('"') {
            Some(quoted) => quoted_name(quoted),
            None => {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let word = &rest[..end];
                (if word.contains('"') { Token::Malformed } else { Token::Word(word) }, &rest[end..])
            }
        };
        tokens.push(token);
        rest = after.trim_start();
    }
    tokens
}

/// Reads a quoted name whose opening quote is already consumed; returns it and the text after
/// it (after the whole malformed word, when it is one).
fn quoted_name(s: &str) -> (Token<'_>, &str) {
    let mut name = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            name.push(c);
            continue;
        }
        // Quotes are one byte, so `i + 1` is a character boundary.
        let after = &s[i + 1..];
        if after.starts_with('"') {
            name.push('"');
            chars.next();
            continue;
        }
        let glued = after.find(char::is_whitespace).unwrap_or(after.len());
        return match (glued, name.is_empty()) {
            (0, false) => (Token::Quoted(name), after),
            _ => (Token::Malformed, &after[glued..]),
        };
    }
    (Token::Malformed, "")
}

/// The query for an error message: whitespace collapsed, at most [`SHOWN_QUERY_CHARS`]
/// characters.
fn shown(query: &str) -> String {
    let collapsed = query.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(SHOWN_QUERY_CHARS) {
        Some((cut, _)) => format!("{}...", &collapsed[..cut]),
        None => collapsed,
    }
}

/// A column's type, as PgBouncer declares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// `int4`: PgBouncer's counts of connections, ports, seconds, flags (0 or 1).
    Int4,
    /// `int8`.
    Int8,
    /// `numeric`: PgBouncer's `SHOW STATS` counters (unsigned 64-bit).
    Numeric,
    /// `text`: names, addresses, times, modes.
    Text,
}

impl Type {
    /// The type's OID in RowDescription.
    pub fn oid(self) -> u32 {
        match self {
            Type::Int4 => 23,
            Type::Int8 => 20,
            Type::Numeric => 1700,
            Type::Text => 25,
        }
    }

    /// `pg_type.typlen` in RowDescription: the width of a fixed-size type, -1 for a varlena.
    pub fn size(self) -> i16 {
        match self {
            Type::Int4 => 4,
            Type::Int8 => 8,
            Type::Numeric | Type::Text => -1,
        }
    }
}

/// One column of a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Column {
    /// Its name, PgBouncer's.
    pub name: &'static str,
    /// Its type.
    pub ty: Type,
}

impl Column {
    /// A column of this name and type.
    pub const fn new(name: &'static str, ty: Type) -> Column {
        Column { name, ty }
    }
}

/// One cell in text format; `None` is SQL NULL.
pub type Cell = Option<String>;

/// A result row type: its columns, declared once, and its cells in the same order.
pub trait Row {
    /// The columns, in PgBouncer's order.
    const COLUMNS: &'static [Column];

    /// The cells, one per column of [`Row::COLUMNS`].
    fn cells(&self) -> Vec<Cell>;
}

/// A whole `SHOW` result: columns, and rows of as many cells.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these columns and no rows.
    pub fn new(columns: Vec<Column>) -> Table {
        Table { columns, rows: Vec::new() }
    }

    /// Adds a row.
    ///
    /// # Panics
    /// When the row has not one cell per column: a bug in the caller, which would otherwise
    /// send every client a result it cannot read.
    pub fn push(&mut self, row: Vec<Cell>) {
        assert_eq!(row.len(), self.columns.len(), "a row needs one cell per column");
        self.rows.push(row);
    }

    /// The columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The rows.
    pub fn rows(&self) -> &[Vec<Cell>] {
        &self.rows
    }

    /// Appends the whole result: RowDescription, one DataRow per row, CommandComplete `SHOW`
    /// (PgBouncer's tag). Not ReadyForQuery.
    pub fn encode(&self, dst: &mut BytesMut) {
        put_row_description(dst, &self.columns);
        for row in &self.rows {
            put_data_row(dst, row);
        }
        encode_command_complete(dst, "SHOW");
    }
}

impl<R: Row> From<&[R]> for Table {
    fn from(rows: &[R]) -> Table {
        let mut table = Table::new(R::COLUMNS.to_vec());
        for row in rows {
            table.push(row.cells());
        }
        table
    }
}

/// Appends a whole `SHOW` result of these rows (see [`Table::encode`]).
pub fn encode_rows<R: Row>(dst: &mut BytesMut, rows: &[R]) {
    Table::from(rows).encode(dst);
}

fn put_row_description(dst: &mut BytesMut, columns: &[Column]) {
    put_frame(dst, ROW_DESCRIPTION, |d| {
        d.put_i16(count(columns.len()));
        for column in columns {
            wire::put_cstr(d, column.name.as_bytes());
            d.put_u32(0); // not a table's column
            d.put_u16(0); // so no attribute number
            d.put_u32(column.ty.oid());
            d.put_i16(column.ty.size());
            d.put_i32(-1); // no type modifier
            d.put_u16(0); // text format
        }
    });
}

fn put_data_row(dst: &mut BytesMut, cells: &[Cell]) {
    put_frame(dst, DATA_ROW, |d| {
        d.put_i16(count(cells.len()));
        for cell in cells {
            match cell {
                None => d.put_i32(-1),
                Some(text) => {
                    d.put_i32(i32::try_from(text.len()).expect("a cell longer than 2 GiB"));
                    d.put_slice(text.as_bytes());
                }
            }
        }
    });
}

/// A column or cell count as the protocol's Int16.
fn count(n: usize) -> i16 {
    i16::try_from(n).expect("more than 32767 columns")
}

fn text(s: &str) -> Cell {
    Some(s.to_owned())
}

/// An `int4` cell. Clamped to `i32::MAX`, so that the text stays a valid `int4` for clients
/// that parse it by the declared type (no count here comes near it).
fn int4(n: u32) -> Cell {
    Some(i32::try_from(n).unwrap_or(i32::MAX).to_string())
}

/// An `int4` cell of 1 or 0, PgBouncer's booleans.
fn flag(b: bool) -> Cell {
    int4(u32::from(b))
}

fn numeric(n: u64) -> Cell {
    Some(n.to_string())
}

/// PgBouncer's pair of `int4` columns for a duration: whole seconds, then the microseconds
/// beyond them.
fn seconds_and_micros(d: Duration) -> [Cell; 2] {
    [int4(u32::try_from(d.as_secs()).unwrap_or(u32::MAX)), int4(d.subsec_micros())]
}

/// A time as PgBouncer prints one (`2024-05-01 12:00:00 UTC`), always in UTC.
fn timestamp(t: jiff::Timestamp) -> Cell {
    Some(t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// A row of `SHOW POOLS`: one pool, that is one database, user and backend.
///
/// PgBouncer's columns in its order, all filled, except `load_balance_hosts` (Rampart chooses
/// the backend, a pool has one); then Rampart's `backend`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRow {
    /// `database`.
    pub database: String,
    /// `user`.
    pub user: String,
    /// `cl_active`: clients linked to a server connection, or idle with nothing to send.
    pub cl_active: u32,
    /// `cl_waiting`: clients that sent a query and wait for a server connection.
    pub cl_waiting: u32,
    /// `cl_active_cancel_req`: clients whose cancel request was forwarded and awaits the answer.
    pub cl_active_cancel_req: u32,
    /// `cl_waiting_cancel_req`: clients whose cancel request is not forwarded yet.
    pub cl_waiting_cancel_req: u32,
    /// `sv_active`: server connections linked to a client.
    pub sv_active: u32,
    /// `sv_active_cancel`: server connections forwarding a cancel request.
    pub sv_active_cancel: u32,
    /// `sv_being_canceled`: server connections that wait for in-flight cancel requests before
    /// they may become idle.
    pub sv_being_canceled: u32,
    /// `sv_idle`: server connections ready for a client.
    pub sv_idle: u32,
    /// `sv_used`: idle server connections that need their check query first.
    pub sv_used: u32,
    /// `sv_tested`: server connections running the reset or check query.
    pub sv_tested: u32,
    /// `sv_login`: server connections logging in.
    pub sv_login: u32,
    /// How long the oldest waiting client has waited: columns `maxwait` (seconds) and
    /// `maxwait_us` (the microseconds beyond them).
    pub maxwait: Duration,
    /// `pool_mode`: `session`, `transaction` or `statement`.
    pub pool_mode: String,
    /// `backend` (Rampart's): the member the pool connects to, e.g. `pg1`.
    pub backend: String,
}

impl Row for PoolRow {
    const COLUMNS: &'static [Column] = &[
        Column::new("database", Type::Text),
        Column::new("user", Type::Text),
        Column::new("cl_active", Type::Int4),
        Column::new("cl_waiting", Type::Int4),
        Column::new("cl_active_cancel_req", Type::Int4),
        Column::new("cl_waiting_cancel_req", Type::Int4),
        Column::new("sv_active", Type::Int4),
        Column::new("sv_active_cancel", Type::Int4),
        Column::new("sv_being_canceled", Type::Int4),
        Column::new("sv_idle", Type::Int4),
        Column::new("sv_used", Type::Int4),
        Column::new("sv_tested", Type::Int4),
        Column::new("sv_login", Type::Int4),
        Column::new("maxwait", Type::Int4),
        Column::new("maxwait_us", Type::Int4),
        Column::new("pool_mode", Type::Text),
        Column::new("backend", Type::Text),
    ];

    fn cells(&self) -> Vec<Cell> {
        let [maxwait, maxwait_us] = seconds_and_micros(self.maxwait);
        vec![
            text(&self.database),
            text(&self.user),
            int4(self.cl_active),
            int4(self.cl_waiting),
            int4(self.cl_active_cancel_req),
            int4(self.cl_waiting_cancel_req),
            int4(self.sv_active),
            int4(self.sv_active_cancel),
            int4(self.sv_being_canceled),
            int4(self.sv_idle),
            int4(self.sv_used),
            int4(self.sv_tested),
            int4(self.sv_login),
            maxwait,
            maxwait_us,
            text(&self.pool_mode),
            text(&self.backend),
        ]
    }
}

/// Which end of the proxy a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// A client connected to the proxy (`SHOW CLIENTS`, type `C`).
    Client,
    /// A connection from the proxy to PostgreSQL (`SHOW SERVERS`, type `S`).
    Server,
}

/// A row of `SHOW CLIENTS` or `SHOW SERVERS` (PgBouncer gives both the same columns).
///
/// PgBouncer's columns in its order, without `replication` (Rampart does not report
/// replication connections here) and `id` (the handle of PgBouncer's `KILL_CLIENT`, which the
/// console does not have; `ptr` names the connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRow {
    /// `type`: `C` or `S`.
    pub side: Side,
    /// `user`: the client's user, or the one the proxy logs in as.
    pub user: String,
    /// `database`.
    pub database: String,
    /// `state`: for clients `active`, `idle`, `waiting`, `active_cancel_req` or
    /// `waiting_cancel_req`; for servers `active`, `idle`, `used`, `tested`, `new`,
    /// `active_cancel` or `being_canceled`.
    pub state: String,
    /// `addr`: the client's address, or the server's.
    pub addr: String,
    /// `port`: the client's source port, or the server's port.
    pub port: u16,
    /// `local_addr`: the proxy's end.
    pub local_addr: String,
    /// `local_port`: the proxy's end.
    pub local_port: u16,
    /// `connect_time`: when the connection was made.
    pub connect_time: jiff::Timestamp,
    /// `request_time`: when the last request was issued.
    pub request_time: jiff::Timestamp,
    /// How long a client has waited for a server connection: columns `wait` (seconds) and
    /// `wait_us` (the microseconds beyond them); zero for servers.
    pub wait: Duration,
    /// `close_needed`: the server connection closes once released (`RECONNECT`, a changed
    /// backend); false for clients.
    pub close_needed: bool,
    /// `ptr`: the connection's name in Rampart.
    pub ptr: String,
    /// `link`: `ptr` of the connection it is paired with, empty when none (as in PgBouncer).
    pub link: String,
    /// `remote_pid`: the backend's process id for a server (from BackendKeyData), the client's
    /// over a Unix socket when known; 0 otherwise.
    pub remote_pid: u32,
    /// `tls`: TLS version and cipher, empty without TLS.
    pub tls: String,
    /// `application_name`: the client's (the linked client's, for a server), empty when unset.
    pub application_name: String,
    /// `prepared_statements`: prepared statements the client made, or that are prepared on the
    /// server.
    pub prepared_statements: u32,
}

/// A row of `SHOW CLIENTS`.
pub type ClientRow = ConnectionRow;
/// A row of `SHOW SERVERS`.
pub type ServerRow = ConnectionRow;

impl Row for ConnectionRow {
    const COLUMNS: &'static [Column] = &[
        Column::new("type", Type::Text),
        Column::new("user", Type::Text),
        Column::new("database", Type::Text),
        Column::new("state", Type::Text),
        Column::new("addr", Type::Text),
        Column::new("port", Type::Int4),
        Column::new("local_addr", Type::Text),
        Column::new("local_port", Type::Int4),
        Column::new("connect_time", Type::Text),
        Column::new("request_time", Type::Text),
        Column::new("wait", Type::Int4),
        Column::new("wait_us", Type::Int4),
        Column::new("close_needed", Type::Int4),
        Column::new("ptr", Type::Text),
        Column::new("link", Type::Text),
        Column::new("remote_pid", Type::Int4),
        Column::new("tls", Type::Text),
        Column::new("application_name", Type::Text),
        Column::new("prepared_statements", Type::Int4),
    ];

    fn cells(&self) -> Vec<Cell> {
        let [wait, wait_us] = seconds_and_micros(self.wait);
        vec![
            text(match self.side {
                Side::Client => "C",
                Side::Server => "S",
            }),
            text(&self.user),
            text(&self.database),
            text(&self.state),
            text(&self.addr),
            int4(self.port.into()),
            text(&self.local_addr),
            int4(self.local_port.into()),
            timestamp(self.connect_time),
            timestamp(self.request_time),
            wait,
            wait_us,
            flag(self.close_needed),
            text(&self.ptr),
            text(&self.link),
            int4(self.remote_pid),
            text(&self.tls),
            text(&self.application_name),
            int4(self.prepared_statements),
        ]
    }
}

/// A row of `SHOW STATS`: one database's traffic, all pools of it together. Byte counts are
/// the clients' side; times are in microseconds; `avg_*` are per second (counts and bytes) or
/// per transaction or query (times) over the last statistics period.
///
/// PgBouncer's columns in its order, typed `numeric` as in PgBouncer, without the counters of
/// features Rampart does not have (`*_server_assignment_count`, `*_client_parse_count`,
/// `*_server_parse_count`, `*_bind_count`, `*_client_connect_count`, `*_server_lifetime`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsRow {
    /// `database`.
    pub database: String,
    /// `total_xact_count`: transactions run.
    pub total_xact_count: u64,
    /// `total_query_count`: queries run.
    pub total_query_count: u64,
    /// `total_received`: bytes received from clients.
    pub total_received: u64,
    /// `total_sent`: bytes sent to clients.
    pub total_sent: u64,
    /// `total_xact_time`: time connected to PostgreSQL inside transactions.
    pub total_xact_time: u64,
    /// `total_query_time`: time running queries.
    pub total_query_time: u64,
    /// `total_wait_time`: time clients waited for a server connection.
    pub total_wait_time: u64,
    /// `avg_xact_count`: transactions per second.
    pub avg_xact_count: u64,
    /// `avg_query_count`: queries per second.
    pub avg_query_count: u64,
    /// `avg_recv`: bytes received per second.
    pub avg_recv: u64,
    /// `avg_sent`: bytes sent per second.
    pub avg_sent: u64,
    /// `avg_xact_time`: average transaction duration.
    pub avg_xact_time: u64,
    /// `avg_query_time`: average query duration.
    pub avg_query_time: u64,
    /// `avg_wait_time`: average wait of the clients that got a server connection.
    pub avg_wait_time: u64,
}

impl Row for StatsRow {
    const COLUMNS: &'static [Column] = &[
        Column::new("database", Type::Text),
        Column::new("total_xact_count", Type::Numeric),
        Column::new("total_query_count", Type::Numeric),
        Column::new("total_received", Type::Numeric),
        Column::new("total_sent", Type::Numeric),
        Column::new("total_xact_time", Type::Numeric),
        Column::new("total_query_time", Type::Numeric),
        Column::new("total_wait_time", Type::Numeric),
        Column::new("avg_xact_count", Type::Numeric),
        Column::new("avg_query_count", Type::Numeric),
        Column::new("avg_recv", Type::Numeric),
        Column::new("avg_sent", Type::Numeric),
        Column::new("avg_xact_time", Type::Numeric),
        Column::new("avg_query_time", Type::Numeric),
        Column::new("avg_wait_time", Type::Numeric),
    ];

    fn cells(&self) -> Vec<Cell> {
        let counters = [
            self.total_xact_count,
            self.total_query_count,
            self.total_received,
            self.total_sent,
            self.total_xact_time,
            self.total_query_time,
            self.total_wait_time,
            self.avg_xact_count,
            self.avg_query_count,
            self.avg_recv,
            self.avg_sent,
            self.avg_xact_time,
            self.avg_query_time,
            self.avg_wait_time,
        ];
        std::iter::once(text(&self.database)).chain(counters.into_iter().map(numeric)).collect()
    }
}

/// A row of `SHOW DATABASES`: one database clients may name.
///
/// PgBouncer's columns in its order, without `load_balance_hosts` (Rampart chooses the
/// backend), `max_client_connections` and `current_client_connections` (not counted per
/// database).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseRow {
    /// `name`: the name clients use.
    pub name: String,
    /// `host` the proxy connects to; NULL when none is set.
    pub host: Option<String>,
    /// `port` the proxy connects to.
    pub port: u16,
    /// `database`: the name on the server.
    pub database: String,
    /// `force_user`: the user every connection logs in as; NULL when the client's own.
    pub force_user: Option<String>,
    /// `pool_size`: server connections at most.
    pub pool_size: u32,
    /// `min_pool_size`: server connections kept open.
    pub min_pool_size: u32,
    /// `reserve_pool_size` (PgBouncer's current name; older releases said `reserve_pool`):
    /// additional connections once a client has waited long enough.
    pub reserve_pool_size: u32,
    /// `server_lifetime`, in seconds: age at which a released server connection is closed.
    pub server_lifetime: u32,
    /// `pool_mode`: the database's own mode; NULL when it uses the default.
    pub pool_mode: Option<String>,
    /// `max_connections`: server connections allowed for the database.
    pub max_connections: u32,
    /// `current_connections`: server connections open for the database.
    pub current_connections: u32,
    /// `paused`: `PAUSE` is in force for it.
    pub paused: bool,
    /// `disabled`: it refuses new clients.
    pub disabled: bool,
}

impl Row for DatabaseRow {
    const COLUMNS: &'static [Column] = &[
        Column::new("name", Type::Text),
        Column::new("host", Type::Text),
        Column::new("port", Type::Int4),
        Column::new("database", Type::Text),
        Column::new("force_user", Type::Text),
        Column::new("pool_size", Type::Int4),
        Column::new("min_pool_size", Type::Int4),
        Column::new("reserve_pool_size", Type::Int4),
        Column::new("server_lifetime", Type::Int4),
        Column::new("pool_mode", Type::Text),
        Column::new("max_connections", Type::Int4),
        Column::new("current_connections", Type::Int4),
        Column::new("paused", Type::Int4),
        Column::new("disabled", Type::Int4),
    ];

    fn cells(&self) -> Vec<Cell> {
        vec![
            text(&self.name),
            self.host.clone(),
            int4(self.port.into()),
            text(&self.database),
            self.force_user.clone(),
            int4(self.pool_size),
            int4(self.min_pool_size),
            int4(self.reserve_pool_size),
            int4(self.server_lifetime),
            self.pool_mode.clone(),
            int4(self.max_connections),
            int4(self.current_connections),
            flag(self.paused),
            flag(self.disabled),
        ]
    }
}

/// A row of `SHOW CONFIG`: one setting (PgBouncer's columns, all text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRow {
    /// `key`: the setting's name.
    pub key: String,
    /// `value` in force.
    pub value: String,
    /// `default`.
    pub default: String,
    /// `changeable`: `yes` when `RELOAD` applies a change, `no` when it takes a restart.
    pub changeable: bool,
}

impl Row for ConfigRow {
    const COLUMNS: &'static [Column] = &[
        Column::new("key", Type::Text),
        Column::new("value", Type::Text),
        Column::new("default", Type::Text),
        Column::new("changeable", Type::Text),
    ];

    fn cells(&self) -> Vec<Cell> {
        let changeable = if self.changeable { "yes" } else { "no" };
        vec![text(&self.key), text(&self.value), text(&self.default), text(changeable)]
    }
}

/// A row of `SHOW POOL_NODES`: one member, with Pgpool-II's column names where they mean the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// `node_id`: its place in the list (the primary first).
    pub node_id: u32,
    /// `node_name`: the member's name.
    pub name: String,
    /// `hostname`.
    pub hostname: String,
    /// `port`.
    pub port: u32,
    /// `status`: `up` (every member listed is routed).
    pub status: String,
    /// `lb_weight`: its share of the balanced reads (0 for the primary).
    pub lb_weight: String,
    /// `role`: `primary` or `standby`.
    pub role: String,
    /// `select_cnt`: statements the splitter sent it.
    pub select_cnt: u64,
    /// `replication_delay`: bytes of WAL behind the primary's last position read (empty when
    /// not read).
    pub replication_delay: String,
}

impl Row for NodeRow {
    const COLUMNS: &'static [Column] = &[
        Column::new("node_id", Type::Int4),
        Column::new("node_name", Type::Text),
        Column::new("hostname", Type::Text),
        Column::new("port", Type::Int4),
        Column::new("status", Type::Text),
        Column::new("lb_weight", Type::Text),
        Column::new("role", Type::Text),
        Column::new("select_cnt", Type::Numeric),
        Column::new("replication_delay", Type::Text),
    ];

    fn cells(&self) -> Vec<Cell> {
        vec![
            int4(self.node_id),
            text(&self.name),
            text(&self.hostname),
            int4(self.port),
            text(&self.status),
            text(&self.lb_weight),
            text(&self.role),
            numeric(self.select_cnt),
            text(&self.replication_delay),
        ]
    }
}

/// A row of `SHOW LISTS`: one internal list and its length (PgBouncer's columns), e.g.
/// `databases`, `users`, `pools`, `used_clients`, `used_servers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRow {
    /// `list`.
    pub list: String,
    /// `items`.
    pub items: u32,
}

impl Row for ListRow {
    const COLUMNS: &'static [Column] = &[Column::new("list", Type::Text), Column::new("items", Type::Int4)];

    fn cells(&self) -> Vec<Cell> {
        vec![text(&self.list), int4(self.items)]
    }
}

/// The one row of `SHOW VERSION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRow {
    /// `version`: the program and its version.
    pub version: String,
}

impl Row for VersionRow {
    const COLUMNS: &'static [Column] = &[Column::new("version", Type::Text)];

    fn cells(&self) -> Vec<Cell> {
        vec![text(&self.version)]
    }
}

#[cfg(test)]
#[path = "console_tests.rs"]
mod tests;
