//! Table tests of the backend messages the proxy reads and writes.

use super::*;
use crate::frame::{split_frame, Frame, DEFAULT_MAX_FRAME_LEN};

fn parse(tag: u8, body: &[u8]) -> Result<BackendMessage, BackendError> {
    BackendMessage::parse(&Frame::new(tag, body))
}

fn key(bytes: &[u8]) -> CancelKey {
    CancelKey::new(bytes.to_vec()).unwrap()
}

fn fields(list: &[(u8, &str)]) -> ErrorFields {
    ErrorFields(list.iter().map(|(c, t)| (*c, t.to_string())).collect())
}

#[test]
fn parses_every_understood_message() {
    let mut key32 = 99u32.to_be_bytes().to_vec();
    key32.extend_from_slice(&[7; 32]);
    let cases: Vec<(&str, u8, Vec<u8>, BackendMessage)> = vec![
        ("AuthenticationOk", b'R', vec![0, 0, 0, 0], BackendMessage::Authentication(AuthCode::OK)),
        ("MD5 with its salt", b'R', b"\0\0\0\x05salt".to_vec(), BackendMessage::Authentication(AuthCode::MD5_PASSWORD)),
        (
            "SASL with its mechanisms",
            b'R',
            b"\0\0\0\x0aSCRAM-SHA-256\0\0".to_vec(),
            BackendMessage::Authentication(AuthCode::SASL),
        ),
        (
            "BackendKeyData 3.0",
            b'K',
            b"\0\0\x30\x39abcd".to_vec(),
            BackendMessage::BackendKeyData(BackendKeyData { pid: 12345, key: key(b"abcd") }),
        ),
        (
            "BackendKeyData 3.2",
            b'K',
            key32,
            BackendMessage::BackendKeyData(BackendKeyData { pid: 99, key: key(&[7; 32]) }),
        ),
        ("idle", b'Z', b"I".to_vec(), BackendMessage::ReadyForQuery(TransactionStatus::Idle)),
        ("in transaction", b'Z', b"T".to_vec(), BackendMessage::ReadyForQuery(TransactionStatus::InTransaction)),
        ("failed transaction", b'Z', b"E".to_vec(), BackendMessage::ReadyForQuery(TransactionStatus::Failed)),
        (
            "ParameterStatus",
            b'S',
            b"in_hot_standby\0off\0".to_vec(),
            BackendMessage::ParameterStatus(ParameterStatus { name: "in_hot_standby".into(), value: "off".into() }),
        ),
        (
            "ParameterStatus with an empty value",
            b'S',
            b"application_name\0\0".to_vec(),
            BackendMessage::ParameterStatus(ParameterStatus { name: "application_name".into(), value: String::new() }),
        ),
        (
            "ErrorResponse",
            b'E',
            b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0".to_vec(),
            BackendMessage::ErrorResponse(fields(&[
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', "57P01"),
                (b'M', "terminating connection due to administrator command"),
            ])),
        ),
        ("ErrorResponse without fields", b'E', b"\0".to_vec(), BackendMessage::ErrorResponse(fields(&[]))),
        (
            "NoticeResponse, Latin-1 text",
            b'N',
            b"SNOTICE\0Mcaf\xe9\0\0".to_vec(),
            BackendMessage::NoticeResponse(fields(&[(b'S', "NOTICE"), (b'M', "caf\u{fffd}")])),
        ),
        ("DataRow is relayed", b'D', b"\0\x01\0\0\0\x011".to_vec(), BackendMessage::Other(b'D')),
        ("garbage type is relayed", 0xff, vec![1, 2, 3], BackendMessage::Other(0xff)),
    ];
    for (name, tag, body, want) in cases {
        assert_eq!(parse(tag, &body), Ok(want), "{name}");
    }
}

#[test]
fn rejects_every_malformed_body() {
    let cases: Vec<(&str, u8, Vec<u8>, BackendError)> = vec![
        ("Authentication without code", b'R', vec![0, 0, 0], BackendError::Truncated("Authentication")),
        ("BackendKeyData without pid", b'K', vec![0, 0], BackendError::Truncated("BackendKeyData")),
        ("BackendKeyData without key", b'K', vec![0, 0, 0, 1], BackendError::KeyLength(0)),
        ("BackendKeyData, 3-byte key", b'K', vec![0, 0, 0, 1, 1, 2, 3], BackendError::KeyLength(3)),
        ("BackendKeyData, 257-byte key", b'K', [vec![0; 4], vec![1; 257]].concat(), BackendError::KeyLength(257)),
        ("ReadyForQuery empty", b'Z', vec![], BackendError::Truncated("ReadyForQuery")),
        ("ReadyForQuery long", b'Z', b"IT".to_vec(), BackendError::Trailing("ReadyForQuery", 1)),
        ("ReadyForQuery unknown status", b'Z', b"X".to_vec(), BackendError::UnknownStatus(b'X')),
        ("ParameterStatus empty", b'S', vec![], BackendError::Truncated("ParameterStatus")),
        ("ParameterStatus without value", b'S', b"TimeZone\0".to_vec(), BackendError::Truncated("ParameterStatus")),
        (
            "ParameterStatus value unterminated",
            b'S',
            b"TimeZone\0UTC".to_vec(),
            BackendError::Truncated("ParameterStatus"),
        ),
        ("ParameterStatus trailing", b'S', b"a\0b\0c".to_vec(), BackendError::Trailing("ParameterStatus", 1)),
        ("ErrorResponse empty", b'E', vec![], BackendError::Truncated("ErrorResponse")),
        ("ErrorResponse without terminator", b'E', b"SERROR\0".to_vec(), BackendError::Truncated("ErrorResponse")),
        ("ErrorResponse field unterminated", b'E', b"SERROR".to_vec(), BackendError::Truncated("ErrorResponse")),
        ("ErrorResponse trailing", b'E', b"SERROR\0\0xx".to_vec(), BackendError::Trailing("ErrorResponse", 2)),
        ("NoticeResponse empty", b'N', vec![], BackendError::Truncated("NoticeResponse")),
    ];
    for (name, tag, body, want) in cases {
        assert_eq!(parse(tag, &body), Err(want), "{name}");
    }
}

#[test]
fn error_fields_accessors_prefer_the_untranslated_severity() {
    let f = fields(&[(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "28P01"), (b'M', "password authentication failed")]);
    assert_eq!(
        (f.severity(), f.code(), f.message()),
        (Some("FATAL"), Some("28P01"), Some("password authentication failed"))
    );
    assert_eq!(f.to_string(), "FATAL 28P01: password authentication failed");
    let german = fields(&[(b'S', "FEHLER"), (b'V', "ERROR"), (b'M', "x")]);
    assert_eq!(german.severity(), Some("ERROR"));
    assert_eq!(german.get(b'D'), None);
    assert_eq!(german.fields().count(), 3);
    let old = fields(&[(b'S', "FEHLER")]);
    assert_eq!(old.severity(), Some("FEHLER"), "servers before 9.6 send no V");
    assert_eq!(fields(&[]).to_string(), "? ?????: ");
}

#[test]
fn auth_codes() {
    assert!(AuthCode::OK.is_ok());
    assert!(!AuthCode::SASL_FINAL.is_ok(), "SASLFinal still awaits AuthenticationOk");
    assert!(!AuthCode::CLEARTEXT_PASSWORD.is_ok());
}

#[test]
fn encodes_a_leader_change_error_byte_for_byte() {
    let mut dst = BytesMut::new();
    ErrorResponse::new(Severity::Fatal, SqlState::ADMIN_SHUTDOWN, "terminating connection: the leader changed")
        .encode(&mut dst);
    let want: &[u8] = b"E\0\0\0\x46SFATAL\0VFATAL\0C57P01\0Mterminating connection: the leader changed\0\0";
    assert_eq!(&dst[..], want);
}

#[test]
fn a_notice_severity_writes_a_notice_response() {
    let mut dst = BytesMut::new();
    ErrorResponse::new(Severity::Notice, SqlState::new("00000"), "Console usage").encode(&mut dst);
    let f = split_frame(&mut dst, DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
    assert_eq!(
        BackendMessage::parse(&f),
        Ok(BackendMessage::NoticeResponse(fields(&[
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', "00000"),
            (b'M', "Console usage"),
        ])))
    );
}

#[test]
fn written_messages_round_trip() {
    let mut stream = BytesMut::new();
    let mut err = ErrorResponse::new(Severity::Error, SqlState::CONNECTION_FAILURE, "backend connection lost");
    err.detail = Some("server closed the connection".into());
    err.encode(&mut stream);
    ErrorResponse::new(Severity::Fatal, SqlState::CANNOT_CONNECT_NOW, "no leader within 30s: nul\0dropped")
        .encode(&mut stream);
    let synthetic = BackendKeyData { pid: 0x7fff_ffff, key: key(&[0xee; 32]) };
    synthetic.encode(&mut stream);
    BackendKeyData { pid: 1, key: key(b"wxyz") }.encode(&mut stream);
    for s in [TransactionStatus::Idle, TransactionStatus::InTransaction, TransactionStatus::Failed] {
        s.encode_ready_for_query(&mut stream);
    }

    let mut next =
        || BackendMessage::parse(&split_frame(&mut stream, DEFAULT_MAX_FRAME_LEN).unwrap().unwrap()).unwrap();
    assert_eq!(
        next(),
        BackendMessage::ErrorResponse(fields(&[
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', "08006"),
            (b'M', "backend connection lost"),
            (b'D', "server closed the connection"),
        ]))
    );
    let BackendMessage::ErrorResponse(f) = next() else { panic!("not an error") };
    assert_eq!(f.to_string(), "FATAL 57P03: no leader within 30s: nuldropped");
    assert_eq!(next(), BackendMessage::BackendKeyData(synthetic));
    assert_eq!(next(), BackendMessage::BackendKeyData(BackendKeyData { pid: 1, key: key(b"wxyz") }));
    assert_eq!(next(), BackendMessage::ReadyForQuery(TransactionStatus::Idle));
    assert_eq!(next(), BackendMessage::ReadyForQuery(TransactionStatus::InTransaction));
    assert_eq!(next(), BackendMessage::ReadyForQuery(TransactionStatus::Failed));
    assert!(stream.is_empty());
}

#[test]
fn sqlstates_and_severities_print() {
    assert_eq!(SqlState::ADMIN_SHUTDOWN.to_string(), "57P01");
    assert_eq!(SqlState::new("08P01"), SqlState::PROTOCOL_VIOLATION);
    assert_eq!(Severity::Error.as_str(), "ERROR");
    assert_eq!(BackendError::UnknownStatus(0).to_string(), "ReadyForQuery has unknown transaction status 0x00");
}

#[test]
#[should_panic(expected = "five characters")]
fn sqlstate_length_is_checked() {
    let _ = SqlState::new(std::hint::black_box("5701"));
}

#[test]
#[should_panic(expected = "0-9A-Z")]
fn sqlstate_alphabet_is_checked() {
    let _ = SqlState::new(std::hint::black_box("57p01"));
}

#[test]
fn the_shutdown_error_is_postgresql_s_own() {
    // What PostgreSQL 15 sends to a session on a fast shutdown (S, V, C, M, then the terminator;
    // the server adds file/line/routine fields, which clients do not need).
    let mut out = BytesMut::new();
    ErrorResponse::admin_shutdown().encode(&mut out);
    let body = b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0";
    assert_eq!(&out[..], &Frame::new(b'E', body).as_bytes()[..]);
    let frame = split_frame(&mut out, DEFAULT_MAX_FRAME_LEN).unwrap().unwrap();
    let BackendMessage::ErrorResponse(f) = BackendMessage::parse(&frame).unwrap() else { panic!("an ErrorResponse") };
    assert_eq!(f.to_string(), "FATAL 57P01: terminating connection due to administrator command");
}

#[test]
fn a_ready_for_query_status_is_read_in_place() {
    assert_eq!(TransactionStatus::of_ready_body(b"I"), Some(TransactionStatus::Idle));
    assert_eq!(TransactionStatus::of_ready_body(b"T"), Some(TransactionStatus::InTransaction));
    assert_eq!(TransactionStatus::of_ready_body(b"E"), Some(TransactionStatus::Failed));
    assert_eq!(TransactionStatus::of_ready_body(b"?"), None, "an unknown status");
    assert_eq!(TransactionStatus::of_ready_body(b"II"), None, "more than the status byte");
    assert_eq!(TransactionStatus::of_ready_body(b""), None, "no status byte");
}
