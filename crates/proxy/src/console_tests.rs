//! Tests of the admin console's codec: the parse table, every result decoded back with the
//! crate's own frame decoder, and a property test that no string makes the parser panic.

use proptest::prelude::*;

use super::*;
use crate::backend::{BackendMessage, ErrorFields};
use crate::frame::{split_frame, Frame, DEFAULT_MAX_FRAME_LEN};

fn show(s: Show) -> Result<Command, ConsoleError> {
    Ok(Command::Show(s))
}

fn action(a: Action) -> Result<Command, ConsoleError> {
    Ok(Command::Action(a))
}

fn db(name: &str) -> Option<String> {
    Some(name.to_owned())
}

fn unknown(query: &str) -> Result<Command, ConsoleError> {
    Err(ConsoleError::UnknownCommand(query.to_owned()))
}

fn bad(query: &str, usage: &'static str) -> Result<Command, ConsoleError> {
    Err(ConsoleError::BadArguments { query: query.to_owned(), usage })
}

#[test]
fn parse_table() {
    let cases: Vec<(&str, Result<Command, ConsoleError>)> = vec![
        // Every command.
        ("SHOW HELP", show(Show::Help)),
        ("SHOW POOLS", show(Show::Pools)),
        ("SHOW CLIENTS", show(Show::Clients)),
        ("SHOW SERVERS", show(Show::Servers)),
        ("SHOW STATS", show(Show::Stats)),
        ("SHOW DATABASES", show(Show::Databases)),
        ("SHOW CONFIG", show(Show::Config)),
        ("SHOW LISTS", show(Show::Lists)),
        ("SHOW VERSION", show(Show::Version)),
        ("SHOW", show(Show::Help)),
        ("PAUSE", action(Action::Pause(None))),
        ("RESUME", action(Action::Resume(None))),
        ("RECONNECT", action(Action::Reconnect(None))),
        ("RELOAD", action(Action::Reload)),
        ("SHUTDOWN", action(Action::Shutdown)),
        // Case, whitespace, one trailing semicolon.
        ("show pools", show(Show::Pools)),
        ("Show PoOlS;", show(Show::Pools)),
        ("  \tSHOW\n\r  stats  ;  ", show(Show::Stats)),
        ("show\u{3000}lists", show(Show::Lists)),
        ("show;", show(Show::Help)),
        ("reload ;", action(Action::Reload)),
        ("", Ok(Command::Empty)),
        (" \n\t", Ok(Command::Empty)),
        (";", Ok(Command::Empty)),
        ("  ;  ", Ok(Command::Empty)),
        // Database arguments: identifiers fold to lower case, quoted names are kept.
        ("pause app", action(Action::Pause(db("app")))),
        ("PAUSE App_2$", action(Action::Pause(db("app_2$")))),
        ("resume Ünïcode", action(Action::Resume(db("Ünïcode")))),
        ("PAUSE \"App\"", action(Action::Pause(db("App")))),
        ("reconnect   \"my db\" ;", action(Action::Reconnect(db("my db")))),
        ("RESUME \"a\"\"b\"", action(Action::Resume(db("a\"b")))),
        ("RESUME \"\"\"\"", action(Action::Resume(db("\"")))),
        ("PAUSE \"semi;\";", action(Action::Pause(db("semi;")))),
        ("PAUSE \"SHOW\"", action(Action::Pause(db("SHOW")))),
        // Not commands.
        ("SELECT 1", unknown("SELECT 1")),
        ("show   foo", unknown("show foo")),
        ("SHOW POOLS;;", unknown("SHOW POOLS;")),
        ("SHOW \"POOLS\"", unknown("SHOW \"POOLS\"")),
        ("\"SHOW\" POOLS", unknown("\"SHOW\" POOLS")),
        ("SHOWPOOLS", unknown("SHOWPOOLS")),
        ("SHOW FDS", unknown("SHOW FDS")),
        ("SUSPEND", unknown("SUSPEND")),
        ("SET x = 1", unknown("SET x = 1")),
        ("\"", unknown("\"")),
        // Known commands, wrong arguments.
        ("SHOW POOLS now", bad("SHOW POOLS now", USAGE[0])),
        ("PAUSE a b", bad("PAUSE a b", USAGE[1])),
        ("PAUSE my-db", bad("PAUSE my-db", USAGE[1])),
        ("PAUSE \"unterminated", bad("PAUSE \"unterminated", USAGE[1])),
        ("PAUSE \"\"", bad("PAUSE \"\"", USAGE[1])),
        ("PAUSE \"a\"b", bad("PAUSE \"a\"b", USAGE[1])),
        ("PAUSE a\"b\"", bad("PAUSE a\"b\"", USAGE[1])),
        ("RESUME \"a\" \"b\"", bad("RESUME \"a\" \"b\"", USAGE[2])),
        ("RECONNECT 'app'", bad("RECONNECT 'app'", USAGE[3])),
        ("RELOAD now", bad("RELOAD now", USAGE[4])),
        ("SHUTDOWN WAIT_FOR_CLIENTS", bad("SHUTDOWN WAIT_FOR_CLIENTS", USAGE[5])),
    ];
    for (sql, want) in cases {
        assert_eq!(Command::parse(sql), want, "{sql:?}");
    }
}

#[test]
fn error_messages() {
    assert_eq!(
        Command::parse("select  1;").unwrap_err().to_string(),
        "unknown command: select 1; the console supports SHOW HELP|POOLS|CLIENTS|SERVERS|STATS|DATABASES|CONFIG|\
         LISTS|VERSION|POOL_NODES, PAUSE [db], RESUME [db], RECONNECT [db], RELOAD, SHUTDOWN"
    );
    assert_eq!(Command::parse("pause a b").unwrap_err().to_string(), "invalid arguments: pause a b; usage: PAUSE [db]");
    assert_eq!(ConsoleError::AdminAccessNeeded("PAUSE").to_string(), "admin access needed for PAUSE");
    // A long query is shortened, on a character boundary.
    let long = format!("SELECT '{}'", "é".repeat(100));
    let ConsoleError::UnknownCommand(shown) = Command::parse(&long).unwrap_err() else { panic!("not unknown") };
    assert_eq!(shown, format!("SELECT '{}...", "é".repeat(56)));
}

#[test]
fn the_usage_line_lists_every_show() {
    let words: Vec<&str> = Show::ALL.iter().map(|s| s.keyword()).collect();
    assert_eq!(USAGE[0], format!("SHOW {}", words.join("|")));
    for s in Show::ALL {
        assert_eq!(Command::parse(&format!("show {}", s.keyword().to_lowercase())), Ok(Command::Show(s)));
    }
}

#[test]
fn only_actions_need_admin() {
    assert!(!Command::Empty.needs_admin());
    for s in Show::ALL {
        assert!(!Command::Show(s).needs_admin(), "{s:?}");
    }
    for a in [Action::Pause(None), Action::Resume(db("x")), Action::Reconnect(None), Action::Reload, Action::Shutdown] {
        assert!(Command::Action(a.clone()).needs_admin(), "{a:?}");
    }
}

#[test]
fn console_databases() {
    assert!(is_console_database("rampart"));
    assert!(is_console_database("pgbouncer"));
    assert!(!is_console_database("Rampart"));
    assert!(!is_console_database("postgres"));
}

/// A result decoded back: columns (name, type OID, type size), rows, and the tag.
#[derive(Debug, PartialEq)]
struct Decoded {
    columns: Vec<(String, u32, i16)>,
    rows: Vec<Vec<Option<String>>>,
    tag: String,
}

fn frames(mut buf: BytesMut) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(f) = split_frame(&mut buf, DEFAULT_MAX_FRAME_LEN).unwrap() {
        out.push(f);
    }
    assert!(buf.is_empty(), "trailing partial frame");
    out
}

fn take<const N: usize>(b: &mut &[u8]) -> [u8; N] {
    let (head, rest) = b.split_at(N);
    *b = rest;
    head.try_into().unwrap()
}

fn i16_at(b: &mut &[u8]) -> i16 {
    i16::from_be_bytes(take(b))
}

fn cstr(b: &mut &[u8]) -> String {
    let (s, rest) = wire::split_cstr(b).unwrap();
    *b = rest;
    String::from_utf8(s.to_vec()).unwrap()
}

/// Decodes RowDescription, DataRows and CommandComplete, and checks that nothing follows (in
/// particular no ReadyForQuery).
fn decode(buf: BytesMut) -> Decoded {
    let frames = frames(buf);
    let (first, rest) = frames.split_first().unwrap();
    let (last, data) = rest.split_last().unwrap();
    assert_eq!(first.tag(), b'T');
    let mut b = first.body();
    let n = i16_at(&mut b);
    let mut columns = Vec::new();
    for _ in 0..n {
        let name = cstr(&mut b);
        assert_eq!(take::<6>(&mut b), [0; 6], "no table, no attribute");
        let oid = u32::from_be_bytes(take(&mut b));
        let size = i16_at(&mut b);
        assert_eq!(i32::from_be_bytes(take(&mut b)), -1, "no type modifier");
        assert_eq!(i16_at(&mut b), 0, "text format");
        columns.push((name, oid, size));
    }
    assert!(b.is_empty());
    let mut rows = Vec::new();
    for f in data {
        assert_eq!(f.tag(), b'D');
        let mut b = f.body();
        let n = i16_at(&mut b);
        assert_eq!(n as usize, columns.len(), "one cell per column");
        let mut row = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes(take(&mut b));
            row.push(usize::try_from(len).ok().map(|len| {
                let (cell, rest) = b.split_at(len);
                b = rest;
                String::from_utf8(cell.to_vec()).unwrap()
            }));
        }
        assert!(b.is_empty());
        rows.push(row);
    }
    assert_eq!(last.tag(), b'C');
    let mut b = last.body();
    let tag = cstr(&mut b);
    assert!(b.is_empty());
    Decoded { columns, rows, tag }
}

fn encoded<R: Row>(rows: &[R]) -> Decoded {
    let mut buf = BytesMut::new();
    encode_rows(&mut buf, rows);
    decode(buf)
}

fn names(d: &Decoded) -> Vec<&str> {
    d.columns.iter().map(|(n, _, _)| n.as_str()).collect()
}

fn cells(list: &[&str]) -> Vec<Option<String>> {
    list.iter().map(|c| Some(c.to_string())).collect()
}

fn pool_row() -> PoolRow {
    PoolRow {
        database: "app".into(),
        user: "alice".into(),
        cl_active: 3,
        cl_waiting: 1,
        cl_active_cancel_req: 0,
        cl_waiting_cancel_req: 0,
        sv_active: 3,
        sv_active_cancel: 0,
        sv_being_canceled: 0,
        sv_idle: 2,
        sv_used: 1,
        sv_tested: 0,
        sv_login: 1,
        maxwait: Duration::from_micros(2_500_123),
        pool_mode: "transaction".into(),
        backend: "pg1".into(),
    }
}

#[test]
fn show_pools_has_pgbouncers_columns_then_backend() {
    let d = encoded(&[pool_row(), PoolRow { cl_active: u32::MAX, backend: "pg2".into(), ..pool_row() }]);
    assert_eq!(
        names(&d),
        [
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active",
            "sv_active_cancel",
            "sv_being_canceled",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode",
            "backend",
        ]
    );
    let types: Vec<(u32, i16)> = d.columns.iter().map(|(_, oid, size)| (*oid, *size)).collect();
    let mut want = vec![(25, -1); 2];
    want.extend([(23, 4); 13]);
    want.extend([(25, -1); 2]);
    assert_eq!(types, want, "text names, int4 counts, as PgBouncer");
    assert_eq!(
        d.rows[0],
        cells(&[
            "app",
            "alice",
            "3",
            "1",
            "0",
            "0",
            "3",
            "0",
            "0",
            "2",
            "1",
            "0",
            "1",
            "2",
            "500123",
            "transaction",
            "pg1"
        ])
    );
    assert_eq!(d.rows[1][2].as_deref(), Some("2147483647"), "an int4 stays an int4");
    assert_eq!(d.rows[1][16].as_deref(), Some("pg2"));
    assert_eq!(d.tag, "SHOW");
}

#[test]
fn show_clients_and_servers() {
    let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    let client = ClientRow {
        side: Side::Client,
        user: "alice".into(),
        database: "app".into(),
        state: "waiting".into(),
        addr: "10.0.0.7".into(),
        port: 51234,
        local_addr: "10.0.0.1".into(),
        local_port: 6432,
        connect_time: t("2026-12-05T09:00:00.75Z"),
        request_time: t("2026-12-05T09:01:02Z"),
        wait: Duration::from_millis(1500),
        close_needed: false,
        ptr: "c17".into(),
        link: String::new(),
        remote_pid: 0,
        tls: "TLSv1.3/TLS_AES_256_GCM_SHA384".into(),
        application_name: "psql".into(),
        prepared_statements: 2,
    };
    let server = ServerRow {
        side: Side::Server,
        state: "active".into(),
        addr: "10.0.0.11".into(),
        port: 5432,
        wait: Duration::ZERO,
        close_needed: true,
        ptr: "s4".into(),
        link: "c17".into(),
        remote_pid: 4242,
        tls: String::new(),
        ..client.clone()
    };
    let d = encoded(&[client, server]);
    assert_eq!(
        names(&d),
        [
            "type",
            "user",
            "database",
            "state",
            "addr",
            "port",
            "local_addr",
            "local_port",
            "connect_time",
            "request_time",
            "wait",
            "wait_us",
            "close_needed",
            "ptr",
            "link",
            "remote_pid",
            "tls",
            "application_name",
            "prepared_statements",
        ]
    );
    let oids: Vec<u32> = d.columns.iter().map(|c| c.1).collect();
    assert_eq!(oids, [25, 25, 25, 25, 25, 23, 25, 23, 25, 25, 23, 23, 23, 25, 25, 23, 25, 25, 23]);
    assert_eq!(
        d.rows[0],
        cells(&[
            "C",
            "alice",
            "app",
            "waiting",
            "10.0.0.7",
            "51234",
            "10.0.0.1",
            "6432",
            "2026-12-05 09:00:00 UTC",
            "2026-12-05 09:01:02 UTC",
            "1",
            "500000",
            "0",
            "c17",
            "",
            "0",
            "TLSv1.3/TLS_AES_256_GCM_SHA384",
            "psql",
            "2",
        ])
    );
    let server = &d.rows[1];
    assert_eq!((server[0].as_deref(), server[3].as_deref()), (Some("S"), Some("active")));
    assert_eq!(
        (server[10].as_deref(), server[11].as_deref(), server[12].as_deref()),
        (Some("0"), Some("0"), Some("1"))
    );
    assert_eq!((server[14].as_deref(), server[15].as_deref()), (Some("c17"), Some("4242")));
}

#[test]
fn show_stats_is_numeric_like_pgbouncers() {
    let row = StatsRow {
        database: "app".into(),
        total_xact_count: 10,
        total_query_count: 20,
        total_received: 3000,
        total_sent: u64::MAX,
        total_xact_time: 5,
        total_query_time: 6,
        total_wait_time: 7,
        avg_xact_count: 1,
        avg_query_count: 2,
        avg_recv: 30,
        avg_sent: 40,
        avg_xact_time: 50,
        avg_query_time: 60,
        avg_wait_time: 70,
    };
    let d = encoded(&[row]);
    assert_eq!(
        names(&d),
        [
            "database",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "avg_xact_count",
            "avg_query_count",
            "avg_recv",
            "avg_sent",
            "avg_xact_time",
            "avg_query_time",
            "avg_wait_time",
        ]
    );
    assert_eq!(d.columns[0].1, 25);
    assert!(d.columns[1..].iter().all(|c| (c.1, c.2) == (1700, -1)), "numeric");
    assert_eq!(
        d.rows[0],
        cells(&[
            "app",
            "10",
            "20",
            "3000",
            "18446744073709551615",
            "5",
            "6",
            "7",
            "1",
            "2",
            "30",
            "40",
            "50",
            "60",
            "70"
        ])
    );
}

#[test]
fn show_databases_sends_null_where_pgbouncer_does() {
    let row = DatabaseRow {
        name: "app".into(),
        host: Some("10.0.0.11".into()),
        port: 5432,
        database: "app_prod".into(),
        force_user: None,
        pool_size: 20,
        min_pool_size: 0,
        reserve_pool_size: 5,
        server_lifetime: 3600,
        pool_mode: None,
        max_connections: 0,
        current_connections: 7,
        paused: true,
        disabled: false,
    };
    let forced = DatabaseRow {
        host: None,
        force_user: Some("svc".into()),
        pool_mode: Some("session".into()),
        paused: false,
        disabled: true,
        ..row.clone()
    };
    let d = encoded(&[row, forced]);
    assert_eq!(
        names(&d),
        [
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "min_pool_size",
            "reserve_pool_size",
            "server_lifetime",
            "pool_mode",
            "max_connections",
            "current_connections",
            "paused",
            "disabled",
        ]
    );
    let oids: Vec<u32> = d.columns.iter().map(|c| c.1).collect();
    assert_eq!(oids, [25, 25, 23, 25, 25, 23, 23, 23, 23, 25, 23, 23, 23, 23]);
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        d.rows[0],
        [
            s("app"),
            s("10.0.0.11"),
            s("5432"),
            s("app_prod"),
            None,
            s("20"),
            s("0"),
            s("5"),
            s("3600"),
            None,
            s("0"),
            s("7"),
            s("1"),
            s("0")
        ]
    );
    assert_eq!((d.rows[1][1].clone(), d.rows[1][4].clone(), d.rows[1][9].clone()), (None, s("svc"), s("session")));
    assert_eq!((d.rows[1][12].clone(), d.rows[1][13].clone()), (s("0"), s("1")));
}

#[test]
fn show_config_lists_and_version() {
    let d = encoded(&[
        ConfigRow { key: "listen_port".into(), value: "6432".into(), default: "6432".into(), changeable: false },
        ConfigRow { key: "pool_mode".into(), value: "transaction".into(), default: "session".into(), changeable: true },
    ]);
    assert_eq!(names(&d), ["key", "value", "default", "changeable"]);
    assert!(d.columns.iter().all(|c| c.1 == 25));
    assert_eq!(
        d.rows,
        [cells(&["listen_port", "6432", "6432", "no"]), cells(&["pool_mode", "transaction", "session", "yes"])]
    );

    let d = encoded(&[ListRow { list: "pools".into(), items: 4 }]);
    assert_eq!(d.columns, [("list".to_owned(), 25, -1), ("items".to_owned(), 23, 4)]);
    assert_eq!(d.rows, [cells(&["pools", "4"])]);

    let d = encoded(&[VersionRow { version: "Rampart 0.1.0".into() }]);
    assert_eq!(
        d,
        Decoded {
            columns: vec![("version".into(), 25, -1)],
            rows: vec![cells(&["Rampart 0.1.0"])],
            tag: "SHOW".into()
        }
    );
}

#[test]
fn an_empty_result_still_describes_its_columns() {
    let d = encoded::<PoolRow>(&[]);
    assert_eq!(d.columns.len(), PoolRow::COLUMNS.len());
    assert!(d.rows.is_empty());
    assert_eq!(d.tag, "SHOW");
}

#[test]
fn every_row_type_has_one_cell_per_column() {
    fn check<R: Row>(row: R) {
        assert_eq!(row.cells().len(), R::COLUMNS.len());
        let mut names: Vec<&str> = R::COLUMNS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), R::COLUMNS.len(), "column names are unique");
    }
    check(pool_row());
    check(StatsRow::default());
    check(ConfigRow { key: String::new(), value: String::new(), default: String::new(), changeable: false });
    check(ListRow { list: String::new(), items: 0 });
    check(VersionRow { version: String::new() });
}

#[test]
fn a_generic_table_with_null_cells() {
    let mut table = Table::new(vec![Column::new("name", Type::Text), Column::new("n", Type::Int8)]);
    table.push(vec![Some("a".into()), None]);
    table.push(vec![None, Some("9223372036854775807".into())]);
    assert_eq!(table.columns().len(), 2);
    assert_eq!(table.rows().len(), 2);
    let mut buf = BytesMut::new();
    table.encode(&mut buf);
    let d = decode(buf);
    assert_eq!(d.columns, [("name".to_owned(), 25, -1), ("n".to_owned(), 20, 8)]);
    assert_eq!(d.rows, [vec![Some("a".into()), None], vec![None, Some("9223372036854775807".into())]]);
}

#[test]
#[should_panic(expected = "one cell per column")]
fn a_row_of_the_wrong_width_is_a_bug() {
    Table::new(vec![Column::new("a", Type::Text)]).push(vec![None, None]);
}

#[test]
fn an_empty_query_gets_empty_query_response() {
    let mut buf = BytesMut::new();
    encode_empty_query(&mut buf);
    assert_eq!(&buf[..], b"I\0\0\0\x04");
}

#[test]
fn actions_complete_with_their_command_word() {
    for (a, tag) in [
        (Action::Pause(db("app")), "PAUSE"),
        (Action::Resume(None), "RESUME"),
        (Action::Reconnect(None), "RECONNECT"),
        (Action::Reload, "RELOAD"),
        (Action::Shutdown, "SHUTDOWN"),
    ] {
        assert_eq!(a.tag(), tag);
        let mut buf = BytesMut::new();
        a.encode_complete(&mut buf);
        let f = frames(buf);
        assert_eq!(f.len(), 1, "CommandComplete only, no ReadyForQuery");
        assert_eq!((f[0].tag(), f[0].body()), (b'C', format!("{tag}\0").as_bytes()));
    }
}

fn error_fields(frame: &Frame) -> ErrorFields {
    match BackendMessage::parse(frame).unwrap() {
        BackendMessage::ErrorResponse(f) | BackendMessage::NoticeResponse(f) => f,
        other => panic!("not an error or notice: {other:?}"),
    }
}

#[test]
fn errors_are_encoded_with_their_sqlstate() {
    let mut buf = BytesMut::new();
    Command::parse("SHOW FOO").unwrap_err().encode(&mut buf);
    ConsoleError::AdminAccessNeeded("RELOAD").encode(&mut buf);
    encode_error(&mut buf, SqlState::new("08P01"), "no such database: nope");
    let f = frames(buf);
    assert_eq!(f.len(), 3, "no ReadyForQuery");
    let first = error_fields(&f[0]);
    assert_eq!(f[0].tag(), b'E');
    assert_eq!((first.severity(), first.code()), (Some("ERROR"), Some("42601")));
    assert!(first.message().unwrap().starts_with("unknown command: SHOW FOO; the console supports SHOW HELP|"));
    let second = error_fields(&f[1]);
    assert_eq!(
        (second.severity(), second.code(), second.message()),
        (Some("ERROR"), Some("42501"), Some("admin access needed for RELOAD"))
    );
    let third = error_fields(&f[2]);
    assert_eq!((third.code(), third.message()), (Some("08P01"), Some("no such database: nope")));
    assert_eq!(ConsoleError::UnknownCommand("x".into()).to_response().severity, Severity::Error);
}

#[test]
fn help_is_a_notice_then_show() {
    let mut buf = BytesMut::new();
    encode_help(&mut buf);
    let f = frames(buf);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].tag(), b'N');
    let notice = error_fields(&f[0]);
    assert_eq!(
        (notice.severity(), notice.code(), notice.message()),
        (Some("NOTICE"), Some("00000"), Some("Console usage"))
    );
    assert_eq!(
        notice.get(b'D'),
        Some(
            "\n\tSHOW HELP|POOLS|CLIENTS|SERVERS|STATS|DATABASES|CONFIG|LISTS|VERSION|POOL_NODES\n\tPAUSE [db]\n\tRESUME [db]\
             \n\tRECONNECT [db]\n\tRELOAD\n\tSHUTDOWN"
        )
    );
    assert_eq!((f[1].tag(), f[1].body()), (b'C', &b"SHOW\0"[..]));
}

/// A keyword in random case.
fn any_case(word: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), word.len()).prop_map(move |upper| {
        word.chars().zip(upper).map(|(c, u)| if u { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }).collect()
    })
}

/// One or more whitespace characters of several kinds.
fn space() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just(' '), Just('\t'), Just('\n'), Just('\r'), Just('\u{a0}')], 1..4)
        .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn parse_never_panics(sql in any::<String>()) {
        let _ = Command::parse(&sql);
    }

    #[test]
    fn parse_never_panics_on_console_like_text(sql in "[ \t\"';a-zA-Z_]{0,24}") {
        let _ = Command::parse(&sql);
    }

    #[test]
    fn show_parses_in_any_case_and_spacing(
        i in 0..Show::ALL.len(),
        (show_word, what) in (any_case("show"), any_case("version")),
        (lead, mid, tail) in (space(), space(), space()),
        semicolon in any::<bool>(),
    ) {
        let s = Show::ALL[i];
        let what = if s == Show::Version { what } else { s.keyword().to_lowercase() };
        let sql = format!("{lead}{show_word}{mid}{what}{}{tail}", if semicolon { ";" } else { "" });
        prop_assert_eq!(Command::parse(&sql), Ok(Command::Show(s)));
    }

    #[test]
    fn any_quoted_name_round_trips(name in any::<String>().prop_filter("a name", |n| !n.is_empty())) {
        let sql = format!("PAUSE \"{}\";", name.replace('"', "\"\""));
        prop_assert_eq!(Command::parse(&sql), Ok(Command::Action(Action::Pause(Some(name)))));
    }
}
