//! The classifier against a table of statements and the route each must take, without
//! PostgreSQL: the function catalog is a fixture with the volatility PostgreSQL 15 gives these
//! built-ins, plus an application's own functions.

use super::classify::{classify, Class, TxnMode, Why};
use super::functions::{Catalog, Functions, Lists};

/// How a table row reads: the route, or what the statement is to the transaction.
fn route(text: &str) -> String {
    let catalog = Catalog::from_rows([
        ("pg_catalog", "now", "s"),
        ("pg_catalog", "count", "i"),
        ("pg_catalog", "sum", "i"),
        ("pg_catalog", "lower", "i"),
        ("pg_catalog", "upper", "i"),
        ("pg_catalog", "coalesce", "i"),
        ("pg_catalog", "length", "i"),
        ("pg_catalog", "to_char", "s"),
        ("pg_catalog", "current_setting", "s"),
        ("pg_catalog", "jsonb_build_object", "s"),
        ("pg_catalog", "generate_series", "i"),
        ("pg_catalog", "array_agg", "i"),
        ("pg_catalog", "row_number", "i"),
        ("pg_catalog", "pg_is_in_recovery", "v"),
        ("pg_catalog", "pg_last_wal_replay_lsn", "v"),
        ("pg_catalog", "random", "v"),
        ("pg_catalog", "clock_timestamp", "v"),
        ("pg_catalog", "nextval", "v"),
        ("pg_catalog", "setval", "v"),
        ("pg_catalog", "currval", "v"),
        ("pg_catalog", "lastval", "v"),
        ("pg_catalog", "pg_advisory_lock", "v"),
        ("pg_catalog", "pg_advisory_xact_lock", "v"),
        ("pg_catalog", "pg_try_advisory_lock", "v"),
        ("pg_catalog", "pg_advisory_unlock", "v"),
        ("pg_catalog", "set_config", "v"),
        ("pg_catalog", "txid_current", "v"),
        ("pg_catalog", "pg_sleep", "v"),
        ("pg_catalog", "pg_notify", "v"),
        ("pg_catalog", "lo_create", "v"),
        ("app", "price_of", "s"),
        ("app", "slugify", "i"),
        ("app", "my_volatile_fn", "v"),
        ("public", "my_volatile_fn", "v"),
        ("public", "audit_log", "v"),
        ("public", "tax", "i"),
    ]);
    let lists = Lists::new(&["sneaky_.*".into()], &["report_.*".into(), "app\\.cached_total".into()]).unwrap();
    let functions = Functions { lists: &lists, catalog: Some(&catalog) };
    let facts = classify(text);
    let temp = if facts.temp { " +temp" } else { "" };
    let class = match facts.class_with(&functions) {
        Class::Read => "replica".to_string(),
        Class::Write(why) => format!("primary ({why:?})"),
        Class::Begin(TxnMode { read_only: Some(true), .. }) => "begin read only".into(),
        Class::Begin(TxnMode { serializable: true, .. }) => "begin serializable".into(),
        Class::Begin(_) => "begin".into(),
        Class::End => "end".into(),
        Class::InTransaction => "in transaction".into(),
        Class::Session => "session".into(),
    };
    format!("{class}{temp}")
}

/// (statement, expected route). `replica` means a replica may run it; `primary (Why)` that it
/// must run on the primary and why.
const TABLE: &[(&str, &str)] = &[
    // Plain reads.
    ("SELECT 1", "replica"),
    ("select abalance from pgbench_accounts where aid = 42;", "replica"),
    ("SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1", "replica"),
    ("SELECT count(*) FROM orders", "replica"),
    ("SELECT lower(name), upper(name), length(name) FROM users", "replica"),
    ("SELECT now()", "replica"),
    ("SELECT id FROM t ORDER BY id LIMIT 10 OFFSET 20", "replica"),
    ("SELECT DISTINCT ON (a) a, b FROM t", "replica"),
    ("SELECT a, sum(b) FROM t GROUP BY a HAVING sum(b) > 10", "replica"),
    ("SELECT * FROM generate_series(1, 10)", "replica"),
    ("SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t", "replica"),
    ("SELECT * FROM a UNION ALL SELECT * FROM b", "replica"),
    ("SELECT * FROM a INTERSECT SELECT * FROM b EXCEPT SELECT * FROM c", "replica"),
    ("VALUES (1, 'a'), (2, 'b')", "replica"),
    ("TABLE orders", "replica"),
    ("(SELECT 1)", "replica"),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE u.flag)", "replica"),
    ("SELECT EXISTS (SELECT 1 FROM t WHERE x = 1)", "replica"),
    (
        "WITH recent AS (SELECT * FROM orders WHERE ts > now() - interval '1 day') SELECT count(*) FROM recent",
        "replica",
    ),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", "replica"),
    ("SELECT coalesce(a, b), CASE WHEN x THEN 1 ELSE 2 END FROM t", "replica"),
    ("SELECT jsonb_build_object('a', 1)", "replica"),
    ("SELECT current_setting('TimeZone')", "replica"),
    ("SELECT app.price_of(42)", "replica"),
    ("SELECT slugify(title) FROM posts", "replica"),
    ("SELECT pg_catalog.now()", "replica"),
    ("SELECT tax(total) FROM invoices", "replica"),
    ("SELECT report_daily(1)", "replica"),
    ("SELECT app.cached_total()", "replica"),
    ("SELECT array_agg(x ORDER BY x) FROM t", "replica"),
    ("SELECT * FROM t WHERE name LIKE 'a%' AND id BETWEEN 1 AND 9", "replica"),
    ("SELECT 1; SELECT 2;", "replica"),
    ("SELECT 'it''s; DELETE FROM t'", "replica"),
    ("SELECT 1 -- ; DELETE FROM t", "replica"),
    ("/* nextval('x') */ SELECT 1", "replica"),
    ("SHOW TimeZone", "replica"),
    ("SHOW ALL", "replica"),
    ("EXPLAIN SELECT * FROM t", "replica"),
    ("EXPLAIN (COSTS OFF) SELECT * FROM t", "replica"),
    ("EXPLAIN DELETE FROM t", "replica"),
    ("EXPLAIN ANALYZE SELECT * FROM t", "replica"),
    ("EXPLAIN (ANALYZE false) UPDATE t SET a = 1", "replica"),
    ("COPY t TO STDOUT", "replica"),
    ("COPY (SELECT * FROM t WHERE a > 1) TO STDOUT WITH (FORMAT csv)", "replica"),
    ("", "replica"),
    // Functions that may write, or are unknown.
    ("SELECT my_volatile_fn()", "primary (Function)"),
    ("SELECT app.my_volatile_fn()", "primary (Function)"),
    ("SELECT nextval('orders_id_seq')", "primary (Function)"),
    ("SELECT setval('s', 10)", "primary (Function)"),
    ("SELECT currval('s')", "primary (Function)"),
    ("SELECT lastval()", "primary (Function)"),
    ("SELECT pg_advisory_lock(1)", "primary (Function)"),
    ("SELECT pg_try_advisory_lock(1)", "primary (Function)"),
    ("SELECT pg_advisory_xact_lock(7)", "primary (Function)"),
    ("SELECT set_config('search_path', 'app', false)", "primary (Function)"),
    ("SELECT txid_current()", "primary (Function)"),
    ("SELECT random()", "primary (Function)"),
    ("SELECT pg_sleep(1)", "primary (Function)"),
    ("SELECT pg_notify('ch', 'x')", "primary (Function)"),
    ("SELECT lo_create(0)", "primary (Function)"),
    ("SELECT unknown_function(1)", "primary (Function)"),
    ("SELECT sneaky_cleanup()", "primary (Function)"),
    ("SELECT * FROM t WHERE id = (SELECT nextval('s'))", "primary (Function)"),
    ("SELECT ARRAY[nextval('s')]", "primary (Function)"),
    ("SELECT (audit_log(1)).ok", "primary (Function)"),
    ("SELECT id FROM t WHERE lower(name) = lower(my_volatile_fn())", "primary (Function)"),
    ("SELECT count(*) FILTER (WHERE random() > 0.5) FROM t", "primary (Function)"),
    ("SELECT * FROM t ORDER BY random() LIMIT 1", "primary (Function)"),
    ("WITH x AS (SELECT nextval('s') AS id) SELECT * FROM x", "primary (Function)"),
    ("SELECT 1; SELECT nextval('s')", "primary (Function)"),
    ("COPY (SELECT my_volatile_fn()) TO STDOUT", "primary (Function)"),
    ("EXPLAIN ANALYZE SELECT my_volatile_fn()", "primary (Function)"),
    // Locks, INTO, data-modifying CTEs.
    ("SELECT * FROM t WHERE id = 1 FOR UPDATE", "primary (LocksRows)"),
    ("SELECT * FROM t FOR SHARE SKIP LOCKED", "primary (LocksRows)"),
    ("SELECT * FROM t FOR NO KEY UPDATE NOWAIT", "primary (LocksRows)"),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", "primary (LocksRows)"),
    ("SELECT * INTO copy_of_t FROM t", "primary (Modifies)"),
    ("SELECT * INTO TEMP tmp_t FROM t", "primary (Modifies) +temp"),
    ("WITH gone AS (DELETE FROM t WHERE old RETURNING *) SELECT count(*) FROM gone", "primary (ModifyingCte)"),
    ("WITH n AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM n", "primary (ModifyingCte)"),
    ("WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM u", "primary (ModifyingCte)"),
    ("SELECT 1; DELETE FROM t", "primary (MultiStatement)"),
    ("/*NO LOAD BALANCE*/ SELECT * FROM t", "primary (Hint)"),
    ("  /*NO LOAD BALANCE*/SELECT 1", "primary (Hint)"),
    // Writes and DDL.
    ("INSERT INTO t (a) VALUES (1)", "primary (Modifies)"),
    ("INSERT INTO t SELECT * FROM u ON CONFLICT (id) DO NOTHING", "primary (Modifies)"),
    ("UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 1", "primary (Modifies)"),
    ("DELETE FROM t WHERE id = 1 RETURNING *", "primary (Modifies)"),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET a = u.a", "primary (Modifies)"),
    ("TRUNCATE t", "primary (Modifies)"),
    ("COPY t FROM STDIN", "primary (Modifies)"),
    ("COPY t TO '/tmp/t.csv'", "primary (Utility)"),
    ("COPY t TO PROGRAM 'gzip > /tmp/t.gz'", "primary (Utility)"),
    ("CREATE TABLE t (id int primary key)", "primary (Modifies)"),
    ("CREATE TEMP TABLE scratch (id int)", "primary (Modifies) +temp"),
    ("CREATE TEMPORARY TABLE scratch2 AS SELECT 1", "primary (Modifies) +temp"),
    ("CREATE TEMP VIEW v AS SELECT 1", "primary (Modifies) +temp"),
    ("CREATE UNLOGGED TABLE u (id int)", "primary (Modifies)"),
    ("CREATE INDEX CONCURRENTLY i ON t (a)", "primary (Modifies)"),
    ("ALTER TABLE t ADD COLUMN b text", "primary (Modifies)"),
    ("DROP TABLE IF EXISTS t", "primary (Modifies)"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "primary (Modifies)"),
    ("GRANT SELECT ON t TO app", "primary (Modifies)"),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1", "primary (Modifies)"),
    ("REFRESH MATERIALIZED VIEW mv", "primary (Modifies)"),
    ("VACUUM ANALYZE t", "primary (Modifies)"),
    ("ANALYZE t", "primary (Modifies)"),
    ("COMMENT ON TABLE t IS 'x'", "primary (Modifies)"),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "primary (Utility)"),
    ("DO $$ BEGIN PERFORM 1; END $$", "primary (Utility)"),
    ("CALL do_things(1)", "primary (Utility)"),
    ("NOTIFY ch, 'x'", "primary (Utility)"),
    ("CHECKPOINT", "primary (Utility)"),
    ("COMMIT PREPARED 'gid'", "primary (Utility)"),
    ("EXPLAIN ANALYZE DELETE FROM t", "primary (Modifies)"),
    ("EXPLAIN (ANALYZE) INSERT INTO t VALUES (1)", "primary (Modifies)"),
    ("SELEC 1", "primary (Unparsable)"),
    ("SELECT * FROM", "primary (Unparsable)"),
    // Transaction control.
    ("BEGIN", "begin"),
    ("begin transaction", "begin"),
    ("START TRANSACTION", "begin"),
    ("BEGIN READ ONLY", "begin read only"),
    ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", "begin read only"),
    ("BEGIN READ WRITE", "begin"),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE", "begin serializable"),
    ("COMMIT", "end"),
    ("END", "end"),
    ("ROLLBACK", "end"),
    ("ABORT", "end"),
    ("COMMIT AND CHAIN", "in transaction"),
    ("SAVEPOINT s1", "in transaction"),
    ("RELEASE SAVEPOINT s1", "in transaction"),
    ("ROLLBACK TO SAVEPOINT s1", "in transaction"),
    ("PREPARE TRANSACTION 'gid'", "in transaction"),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "in transaction"),
    ("SET TRANSACTION READ ONLY", "in transaction"),
    ("SET LOCAL work_mem = '64MB'", "in transaction"),
    ("SET CONSTRAINTS ALL DEFERRED", "in transaction"),
    ("DECLARE c CURSOR FOR SELECT * FROM t", "in transaction"),
    ("FETCH 10 FROM c", "in transaction"),
    ("MOVE NEXT IN c", "in transaction"),
    ("CLOSE c", "in transaction"),
    ("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", "primary (LocksRows)"),
    ("BEGIN; SELECT 1; COMMIT", "primary (MultiStatement)"),
    // Session state.
    ("SET search_path TO app, public", "session"),
    ("SET statement_timeout = 0", "session"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "session"),
    ("SET ROLE reporting", "session"),
    ("RESET ALL", "session"),
    ("DISCARD ALL", "session"),
    ("LISTEN ch", "session"),
    ("UNLISTEN *", "session"),
    ("PREPARE q (int) AS SELECT * FROM t WHERE id = $1", "session"),
    ("EXECUTE q (1)", "session"),
    ("DEALLOCATE q", "session"),
    ("DECLARE h CURSOR WITH HOLD FOR SELECT * FROM t", "session"),
    ("LOAD 'auto_explain'", "session"),
];

#[test]
fn every_statement_of_the_table_takes_its_route() {
    assert!(TABLE.len() >= 100, "the table has {} statements", TABLE.len());
    let wrong: Vec<String> = TABLE
        .iter()
        .filter_map(|(sql, want)| {
            let got = route(sql);
            (got != *want).then(|| format!("{sql:?}: want {want}, got {got}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), TABLE.len(), wrong.join("\n"));
}

#[test]
fn without_a_catalog_every_function_call_goes_to_the_primary() {
    let lists = Lists::default();
    let none = Functions { lists: &lists, catalog: None };
    assert_eq!(classify("SELECT now()").class_with(&none), Class::Write(Why::Function));
    assert_eq!(classify("SELECT a FROM t").class_with(&none), Class::Read);
}

#[test]
fn functions_are_listed_once_as_written() {
    let f = classify("SELECT lower(a), lower(b), app.price_of(1), \"Quoted\"() FROM t");
    assert_eq!(f.functions, vec!["lower", "app.price_of", "Quoted"]);
}

#[test]
fn the_classifier_never_panics_on_garbage() {
    for text in ["\u{1}\u{2}", ";;;", "SELECT '", "$$", "/*", "SELECT 1 FROM t WHERE x = E'\\x00'"] {
        let _ = classify(text);
    }
}
