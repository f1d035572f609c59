//! What a statement text is, as far as routing it between the primary and the replicas goes,
//! told by PostgreSQL's own grammar (`pg_query`, which is PostgreSQL's parser compiled as a
//! library), never by matching words. Sans-IO and without a clock.
//!
//! The answer ([`Facts`]) depends on the text alone, so it can be cached by text: whether a
//! function it calls writes is left to [`Facts::class_with`], which asks the catalog in force
//! at that moment.
//!
//! Invariant: anything not positively known to be a read is not a read. A text the parser
//! refuses, a statement kind not listed here, a multi-statement string with anything but reads:
//! all go to the primary, where the server has the last word.

use serde_json::Value;

/// Where a statement may run, before the functions it calls are looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Reads only (if the functions it calls only read): a replica may run it.
    Read,
    /// Must run on the primary, for the reason given.
    Write(Why),
    /// `BEGIN`/`START TRANSACTION`, with what it says of the transaction.
    Begin(TxnMode),
    /// `COMMIT`, `ROLLBACK`, `END`, `ABORT`: the transaction block ends.
    End,
    /// Belongs to the transaction under way wherever it runs: `SAVEPOINT`, `RELEASE`,
    /// `ROLLBACK TO`, `SET LOCAL`, `SET TRANSACTION`, `SET CONSTRAINTS`, cursors (`DECLARE`
    /// without `WITH HOLD`, `FETCH`, `MOVE`, `CLOSE`), `PREPARE TRANSACTION`, `COMMIT AND CHAIN`.
    InTransaction,
    /// Keeps state in the server session (`SET`, `RESET`, `DISCARD`, `LISTEN`, `UNLISTEN`,
    /// SQL-level `PREPARE`/`EXECUTE`/`DEALLOCATE`, `DECLARE ... WITH HOLD`, `LOAD`): runs on the
    /// primary, and the session's later statements cannot count on a replica having that state.
    Session,
}

/// Why a statement must run on the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// It changes data or schema (DML, DDL, `COPY FROM`, `SELECT INTO`, maintenance, ...).
    Modifies,
    /// A data-modifying statement inside a read (`WITH x AS (DELETE ...) SELECT`).
    ModifyingCte,
    /// `SELECT ... FOR UPDATE/SHARE` (row locks are writes on a hot standby).
    LocksRows,
    /// It calls a function that is neither IMMUTABLE nor STABLE, or one the catalog does not know.
    Function,
    /// `LOCK`, `DO`, `CALL`, `NOTIFY`, `COPY ... PROGRAM`, `COPY ... TO 'file'`, two-phase commit.
    Utility,
    /// A string of several statements that are not all reads.
    MultiStatement,
    /// The parser refused the text (the primary will say why).
    Unparsable,
    /// The text starts with the `/*NO LOAD BALANCE*/` hint.
    Hint,
}

/// What `BEGIN` says of its transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnMode {
    /// `READ ONLY` (`Some(true)`), `READ WRITE` (`Some(false)`), or neither.
    pub read_only: Option<bool>,
    /// `ISOLATION LEVEL SERIALIZABLE`: never balanced (a replica cannot run a serializable
    /// transaction that sees the primary's serialization order).
    pub serializable: bool,
    /// `ISOLATION LEVEL REPEATABLE READ`: a replica's part of the transaction is opened so too.
    pub repeatable_read: bool,
}

impl TxnMode {
    /// What opens the transaction's part on a replica: read-only, at the client's isolation
    /// level (a standby runs no read-write transaction).
    pub fn replica_begin(&self) -> &'static str {
        if self.repeatable_read {
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        } else {
            "BEGIN READ ONLY"
        }
    }
}

/// What a statement text says, independent of the catalog: kept in the cache by text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The class before functions are looked at.
    pub class: Class,
    /// The functions it calls, as written (schema-qualified when written so), each once.
    pub functions: Vec<String>,
    /// It creates a temporary object: the session's later statements that use it must run on
    /// the primary too.
    pub temp: bool,
    /// It may change the functions of the database (DDL, `DO`, `CALL`): its catalog is read again.
    pub ddl: bool,
}

/// Whether calling a function may write, as the catalog (or the configured lists) tell.
pub trait FunctionWrites {
    /// `Some(false)` when the function only reads (IMMUTABLE or STABLE, or listed as
    /// read-only), `Some(true)` when it may write, `None` when unknown (treated as a write).
    fn writes(&self, name: &str) -> Option<bool>;
}

impl Facts {
    /// The class in force given what the catalog says of the functions called: a read that
    /// calls a function that may write (or an unknown one) is a write.
    pub fn class_with(&self, functions: &dyn FunctionWrites) -> Class {
        match self.class {
            Class::Read if self.functions.iter().any(|f| functions.writes(f) != Some(false)) => {
                Class::Write(Why::Function)
            }
            c => c,
        }
    }
}

/// Pgpool-II's hint: a text starting with this comment runs on the primary.
pub const NO_LOAD_BALANCE: &str = "/*NO LOAD BALANCE*/";

/// Whether `text` starts (after blanks) with [`NO_LOAD_BALANCE`].
pub fn has_hint(text: &str) -> bool {
    text.trim_start().starts_with(NO_LOAD_BALANCE)
}

/// Classifies a statement text (one statement or several separated by `;`).
pub fn classify(text: &str) -> Facts {
    if has_hint(text) {
        return Facts { class: Class::Write(Why::Hint), functions: Vec::new(), temp: false, ddl: false };
    }
    let Ok(parsed) = pg_query::parse(text, 0) else {
        return Facts { class: Class::Write(Why::Unparsable), functions: Vec::new(), temp: false, ddl: false };
    };
    let mut facts = Facts { class: Class::Read, functions: Vec::new(), temp: false, ddl: false };
    let statements: Vec<&pg_query::NodeEnum> =
        parsed.protobuf.stmts.iter().filter_map(|s| s.stmt.as_ref().and_then(|n| n.node.as_ref())).collect();
    let mut classes = Vec::with_capacity(statements.len());
    for stmt in &statements {
        let mut walk = Walk::default();
        let class = statement(stmt, &mut walk);
        facts.temp |= walk.temp;
        facts.ddl |= changes_functions(stmt);
        for f in walk.functions {
            if !facts.functions.contains(&f) {
                facts.functions.push(f);
            }
        }
        classes.push(class);
    }
    facts.class = combine(&classes).unwrap_or(Class::Read);
    facts
}

/// The class of several statements sent together (a multi-statement string, or a pipeline up
/// to its Sync): reads stay reads, one statement keeps its class, anything else runs on the
/// primary. `None` for no statement.
pub fn combine(classes: &[Class]) -> Option<Class> {
    match classes {
        [] => None,
        [one] => Some(*one),
        many if many.iter().all(|c| *c == Class::Read) => Some(Class::Read),
        _ => Some(Class::Write(Why::MultiStatement)),
    }
}

/// What a walk over a statement's tree found.
#[derive(Default)]
struct Walk {
    functions: Vec<String>,
    modifies: bool,
    locks: bool,
    into: bool,
    temp: bool,
}

/// One statement's class; `walk` gathers the functions called (and the rest) on the way.
fn statement(stmt: &pg_query::NodeEnum, walk: &mut Walk) -> Class {
    use pg_query::protobuf::TransactionStmtKind as K;
    use pg_query::NodeEnum as N;
    match stmt {
        N::SelectStmt(_) => read_unless_found(stmt, walk),
        N::VariableShowStmt(_) => Class::Read,
        N::ExplainStmt(e) => {
            let analyze = e.options.iter().any(|o| match o.node.as_ref() {
                Some(N::DefElem(d)) => d.defname == "analyze" && def_bool(d.arg.as_deref()) != Some(false),
                _ => false,
            });
            match e.query.as_ref().and_then(|q| q.node.as_ref()) {
                // Only EXPLAIN ANALYZE runs the statement: a plain EXPLAIN of a write reads.
                Some(q) if analyze => statement(q, walk),
                Some(_) => Class::Read,
                None => Class::Write(Why::Unparsable),
            }
        }
        N::CopyStmt(c) => {
            if c.is_from {
                Class::Write(Why::Modifies)
            } else if c.is_program || !c.filename.is_empty() {
                // The server runs a program or writes a file: the primary's, as the operator
                // who wrote it expects.
                Class::Write(Why::Utility)
            } else {
                match c.query.as_ref().and_then(|q| q.node.as_ref()) {
                    Some(q) => statement(q, walk),
                    None => Class::Read,
                }
            }
        }
        N::TransactionStmt(t) => match K::try_from(t.kind) {
            Ok(K::TransStmtBegin | K::TransStmtStart) => Class::Begin(txn_mode(&t.options)),
            Ok(K::TransStmtCommit | K::TransStmtRollback) if t.chain => Class::InTransaction,
            Ok(K::TransStmtCommit | K::TransStmtRollback) => Class::End,
            Ok(K::TransStmtSavepoint | K::TransStmtRelease | K::TransStmtRollbackTo | K::TransStmtPrepare) => {
                Class::InTransaction
            }
            Ok(K::TransStmtCommitPrepared | K::TransStmtRollbackPrepared) => Class::Write(Why::Utility),
            _ => Class::Write(Why::Unparsable),
        },
        // `SET TRANSACTION ...` is a multi-set named TRANSACTION; `SET SESSION CHARACTERISTICS AS
        // TRANSACTION ...` is named otherwise and lasts the session.
        N::VariableSetStmt(v) if v.is_local || v.name == "TRANSACTION" => Class::InTransaction,
        N::VariableSetStmt(_) => Class::Session,
        N::ConstraintsSetStmt(_) | N::FetchStmt(_) | N::ClosePortalStmt(_) => Class::InTransaction,
        N::DeclareCursorStmt(d) => {
            // CURSOR_OPT_HOLD (parsenodes.h): the cursor outlives the transaction.
            const CURSOR_OPT_HOLD: i32 = 0x0020;
            let query = d.query.as_ref().and_then(|q| q.node.as_ref());
            match query.map(|q| statement(q, walk)) {
                Some(Class::Read) if d.options & CURSOR_OPT_HOLD == 0 => Class::InTransaction,
                Some(Class::Read) => Class::Session,
                Some(other @ Class::Write(_)) => other,
                _ => Class::Write(Why::Modifies),
            }
        }
        N::DiscardStmt(_)
        | N::ListenStmt(_)
        | N::UnlistenStmt(_)
        | N::PrepareStmt(_)
        | N::ExecuteStmt(_)
        | N::DeallocateStmt(_)
        | N::LoadStmt(_) => Class::Session,
        N::LockStmt(_) | N::DoStmt(_) | N::CallStmt(_) | N::NotifyStmt(_) | N::CheckPointStmt(_) => {
            Class::Write(Why::Utility)
        }
        // Everything else changes something: DML, DDL, GRANT, VACUUM, ANALYZE, CLUSTER, ...
        other => {
            let mut inner = Walk::default();
            gather(&to_json(other), &mut inner);
            walk.temp |= inner.temp;
            Class::Write(Why::Modifies)
        }
    }
}

/// Whether a statement may create, change or drop functions: anything but DML, reads,
/// transaction control, session settings and maintenance (a broad net: a miss would leave a
/// stale catalog for up to a minute, a catch only costs a read of it).
fn changes_functions(stmt: &pg_query::NodeEnum) -> bool {
    use pg_query::NodeEnum as N;
    !matches!(
        stmt,
        N::SelectStmt(_)
            | N::InsertStmt(_)
            | N::UpdateStmt(_)
            | N::DeleteStmt(_)
            | N::MergeStmt(_)
            | N::CopyStmt(_)
            | N::TruncateStmt(_)
            | N::VacuumStmt(_)
            | N::ExplainStmt(_)
            | N::TransactionStmt(_)
            | N::VariableSetStmt(_)
            | N::VariableShowStmt(_)
            | N::LockStmt(_)
            | N::NotifyStmt(_)
            | N::ListenStmt(_)
            | N::UnlistenStmt(_)
            | N::PrepareStmt(_)
            | N::ExecuteStmt(_)
            | N::DeallocateStmt(_)
            | N::DeclareCursorStmt(_)
            | N::FetchStmt(_)
            | N::ClosePortalStmt(_)
            | N::DiscardStmt(_)
            | N::CheckPointStmt(_)
            | N::ConstraintsSetStmt(_)
            | N::ClusterStmt(_)
            | N::ReindexStmt(_)
            | N::RefreshMatViewStmt(_)
    )
}

/// A read, unless the walk over its tree finds a write inside (a data-modifying CTE, row locks,
/// `SELECT INTO`); the functions it calls are gathered on the way.
fn read_unless_found(stmt: &pg_query::NodeEnum, walk: &mut Walk) -> Class {
    gather(&to_json(stmt), walk);
    if walk.into {
        Class::Write(Why::Modifies)
    } else if walk.modifies {
        Class::Write(Why::ModifyingCte)
    } else if walk.locks {
        Class::Write(Why::LocksRows)
    } else {
        Class::Read
    }
}

/// The tree as JSON: a walk over it reaches every node kind, present and future, where a typed
/// walk would have to name each of PostgreSQL's few hundred node types (and miss new ones).
fn to_json(stmt: &pg_query::NodeEnum) -> Value {
    serde_json::to_value(stmt).unwrap_or(Value::Null)
}

/// Gathers what the routing needs from a tree: function calls, data-modifying statements, row
/// locks, `INTO`, temporary relations.
fn gather(v: &Value, walk: &mut Walk) {
    match v {
        Value::Object(map) => {
            for (key, inner) in map {
                match key.as_str() {
                    "FuncCall" => {
                        if let Some(name) = function_name(inner) {
                            if !walk.functions.contains(&name) {
                                walk.functions.push(name);
                            }
                        }
                    }
                    "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => walk.modifies = true,
                    "SelectStmt" => {
                        if inner.get("locking_clause").and_then(Value::as_array).is_some_and(|l| !l.is_empty()) {
                            walk.locks = true;
                        }
                        if inner.get("into_clause").is_some_and(|i| !i.is_null()) {
                            walk.into = true;
                        }
                    }
                    "relpersistence" if inner.as_str() == Some("t") => walk.temp = true,
                    _ => {}
                }
                gather(inner, walk);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| gather(i, walk)),
        _ => {}
    }
}

/// `schema.name` or `name` of a FuncCall node, as written.
fn function_name(call: &Value) -> Option<String> {
    let parts = call.get("funcname")?.as_array()?;
    let names: Vec<&str> = parts.iter().filter_map(|p| p.get("node")?.get("String")?.get("sval")?.as_str()).collect();
    (!names.is_empty()).then(|| names.join("."))
}

/// The options of `BEGIN`/`START TRANSACTION`.
fn txn_mode(options: &[pg_query::protobuf::Node]) -> TxnMode {
    let mut mode = TxnMode::default();
    for o in options {
        let Some(pg_query::NodeEnum::DefElem(d)) = o.node.as_ref() else { continue };
        match d.defname.as_str() {
            "transaction_read_only" => mode.read_only = def_bool(d.arg.as_deref()),
            "transaction_isolation" => {
                let level = def_str(d.arg.as_deref()).unwrap_or_default();
                mode.serializable = level.eq_ignore_ascii_case("serializable");
                mode.repeatable_read = level.eq_ignore_ascii_case("repeatable read");
            }
            _ => {}
        }
    }
    mode
}

/// A DefElem's argument as a boolean (an integer constant 0/1, a boolean, or on/off/true/false).
fn def_bool(arg: Option<&pg_query::protobuf::Node>) -> Option<bool> {
    use pg_query::protobuf::a_const::Val;
    let Some(arg) = arg else { return Some(true) };
    match arg.node.as_ref()? {
        pg_query::NodeEnum::AConst(c) => match c.val.as_ref()? {
            Val::Ival(i) => Some(i.ival != 0),
            Val::Boolval(b) => Some(b.boolval),
            Val::Sval(s) => word_bool(&s.sval),
            _ => None,
        },
        pg_query::NodeEnum::Boolean(b) => Some(b.boolval),
        pg_query::NodeEnum::Integer(i) => Some(i.ival != 0),
        pg_query::NodeEnum::String(s) => word_bool(&s.sval),
        _ => None,
    }
}

fn word_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// A DefElem's argument as a string constant.
fn def_str(arg: Option<&pg_query::protobuf::Node>) -> Option<&str> {
    use pg_query::protobuf::a_const::Val;
    match arg?.node.as_ref()? {
        pg_query::NodeEnum::AConst(c) => match c.val.as_ref()? {
            Val::Sval(s) => Some(&s.sval),
            _ => None,
        },
        pg_query::NodeEnum::String(s) => Some(&s.sval),
        _ => None,
    }
}
