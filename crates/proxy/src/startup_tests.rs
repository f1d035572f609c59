//! Table tests of the startup decoder: every packet kind, every error, incomplete input and
//! encode → decode round trips.

use super::*;

/// A packet built by hand: length prefix computed, then the given body words and bytes.
fn packet(code: u32, body: &[u8]) -> Vec<u8> {
    let len = (8 + body.len()) as u32;
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn decode(bytes: &[u8]) -> Result<Option<StartupPacket>, StartupError> {
    decode_startup(&mut BytesMut::from(bytes), DEFAULT_MAX_STARTUP_LEN)
}

fn cancel_body(pid: u32, key: &[u8]) -> Vec<u8> {
    let mut v = pid.to_be_bytes().to_vec();
    v.extend_from_slice(key);
    v
}

fn key(bytes: &[u8]) -> CancelKey {
    CancelKey::new(bytes.to_vec()).unwrap()
}

#[test]
fn decodes_every_packet_kind() {
    let psql = b"user\0alice\0database\0app\0application_name\0psql\0options\0-c geqo=off\0\0";
    let repl = b"user\0rep\0replication\0database\0_pq_.test\0x\0\0";
    let cases: Vec<(&str, Vec<u8>, StartupPacket)> = vec![
        ("ssl", packet(SSL_REQUEST_CODE, b""), StartupPacket::SslRequest),
        ("gssenc", packet(GSSENC_REQUEST_CODE, b""), StartupPacket::GssEncRequest),
        (
            "cancel 3.0",
            packet(CANCEL_REQUEST_CODE, &cancel_body(4242, b"\x01\x02\x03\x04")),
            StartupPacket::Cancel(CancelRequest { pid: 4242, key: key(b"\x01\x02\x03\x04") }),
        ),
        (
            "cancel 3.2, PostgreSQL 18's 32-byte key",
            packet(CANCEL_REQUEST_CODE, &cancel_body(7, &[0xab; 32])),
            StartupPacket::Cancel(CancelRequest { pid: 7, key: key(&[0xab; 32]) }),
        ),
        (
            "cancel 3.2, longest key",
            packet(CANCEL_REQUEST_CODE, &cancel_body(7, &[1; 256])),
            StartupPacket::Cancel(CancelRequest { pid: 7, key: key(&[1; 256]) }),
        ),
        (
            "startup 3.0",
            packet(196_608, psql),
            StartupPacket::Startup(
                StartupMessage::new(ProtocolVersion::V3_0)
                    .with("user", "alice")
                    .and_then(|m| m.with("database", "app"))
                    .and_then(|m| m.with("application_name", "psql"))
                    .and_then(|m| m.with("options", "-c geqo=off"))
                    .unwrap(),
            ),
        ),
        (
            "startup 3.2 with replication and a protocol option",
            packet(196_610, repl),
            StartupPacket::Startup(
                StartupMessage::new(ProtocolVersion::V3_2)
                    .with("user", "rep")
                    .and_then(|m| m.with("replication", "database"))
                    .and_then(|m| m.with("_pq_.test", "x"))
                    .unwrap(),
            ),
        ),
        (
            "startup without parameters",
            packet(196_608, b"\0"),
            StartupPacket::Startup(StartupMessage::new(ProtocolVersion::V3_0)),
        ),
    ];
    for (name, bytes, want) in cases {
        let mut buf = BytesMut::from(&bytes[..]);
        buf.extend_from_slice(b"next");
        assert_eq!(decode_startup(&mut buf, DEFAULT_MAX_STARTUP_LEN), Ok(Some(want)), "{name}");
        assert_eq!(&buf[..], b"next", "{name}: exactly one packet consumed");
    }
}

#[test]
fn rejects_every_malformed_packet() {
    let long_len = ((DEFAULT_MAX_STARTUP_LEN + 1) as u32).to_be_bytes();
    let cases: Vec<(&str, Vec<u8>, StartupError)> = vec![
        ("length 0", vec![0, 0, 0, 0], StartupError::TooShort(0)),
        ("length 7", vec![0, 0, 0, 7, 1, 2, 3], StartupError::TooShort(7)),
        ("over the limit", long_len.to_vec(), StartupError::TooLong { len: 10_001, max: 10_000 }),
        ("negative Int32 length", vec![0xff, 0xff, 0xff, 0xff], StartupError::TooLong { len: u32::MAX, max: 10_000 }),
        ("direct TLS ClientHello", vec![0x16, 0x03, 0x01], StartupError::DirectTls),
        ("unknown code", packet(1234, b"\0"), StartupError::UnknownCode { code: 1234 }),
        ("protocol 2.0", packet(2 << 16, b"\0"), StartupError::UnknownCode { code: 2 << 16 }),
        ("protocol 3.1", packet(196_609, b"\0"), StartupError::UnknownCode { code: 196_609 }),
        ("protocol 3.3", packet(196_611, b"\0"), StartupError::UnknownCode { code: 196_611 }),
        (
            "SSLRequest with a body",
            packet(SSL_REQUEST_CODE, b"x"),
            StartupError::BadLength { kind: "SSLRequest", len: 9, expected: "8" },
        ),
        (
            "GSSENCRequest with a body",
            packet(GSSENC_REQUEST_CODE, b"xy"),
            StartupError::BadLength { kind: "GSSENCRequest", len: 10, expected: "8" },
        ),
        (
            "cancel without pid",
            packet(CANCEL_REQUEST_CODE, b""),
            StartupError::BadLength { kind: "CancelRequest", len: 8, expected: "16 to 268: a key of 4 to 256 bytes" },
        ),
        (
            "cancel with a 3-byte key",
            packet(CANCEL_REQUEST_CODE, &cancel_body(1, b"abc")),
            StartupError::BadLength { kind: "CancelRequest", len: 15, expected: "16 to 268: a key of 4 to 256 bytes" },
        ),
        (
            "cancel with a 257-byte key",
            packet(CANCEL_REQUEST_CODE, &cancel_body(1, &[0; 257])),
            StartupError::BadLength { kind: "CancelRequest", len: 269, expected: "16 to 268: a key of 4 to 256 bytes" },
        ),
        ("empty parameter list", packet(196_608, b""), StartupError::MissingTerminator),
        ("no final terminator", packet(196_608, b"user\0bob\0"), StartupError::MissingTerminator),
        ("name without NUL", packet(196_608, b"user"), StartupError::MissingTerminator),
        ("name without value", packet(196_608, b"user\0"), StartupError::MissingValue("user".into())),
        ("value without NUL", packet(196_608, b"user\0bob"), StartupError::MissingValue("user".into())),
        ("bytes after the terminator", packet(196_610, b"user\0bob\0\0junk"), StartupError::TrailingBytes(4)),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(decode(&bytes), Err(want), "{name}");
    }
}

#[test]
fn waits_for_a_whole_packet_without_consuming() {
    let whole = packet(196_608, b"user\0bob\0\0");
    for cut in 0..whole.len() {
        let mut buf = BytesMut::from(&whole[..cut]);
        assert_eq!(decode_startup(&mut buf, DEFAULT_MAX_STARTUP_LEN), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed at cut {cut}");
    }
}

#[test]
fn fixed_length_requests_fail_before_their_body_arrives() {
    // An SSLRequest claiming 5000 bytes is wrong as soon as the code is visible.
    let mut head = 5000u32.to_be_bytes().to_vec();
    head.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    assert!(matches!(decode(&head), Err(StartupError::BadLength { .. })));
    // A too-long length fails with only the four length bytes buffered.
    assert!(matches!(
        decode_startup(&mut BytesMut::from(&20_000u32.to_be_bytes()[..]), DEFAULT_MAX_STARTUP_LEN),
        Err(StartupError::TooLong { .. })
    ));
}

#[test]
fn the_caller_chooses_the_limit() {
    let whole = packet(196_608, b"user\0bob\0\0");
    let len = whole.len();
    assert!(decode_startup(&mut BytesMut::from(&whole[..]), len).unwrap().is_some());
    assert_eq!(
        decode_startup(&mut BytesMut::from(&whole[..]), len - 1),
        Err(StartupError::TooLong { len: len as u32, max: len - 1 })
    );
}

#[test]
fn parameter_access_follows_postgres() {
    let bytes = packet(196_610, b"user\0a\0user\0b\0_pq_.x\0\xff\0latin1\0\xe9t\xe9\0\0");
    let Some(StartupPacket::Startup(mut m)) = decode(&bytes).unwrap() else { panic!("not a startup") };
    assert_eq!(m.version(), ProtocolVersion::V3_2);
    assert_eq!(m.user(), Some(&b"b"[..]), "the last duplicate wins");
    assert_eq!(m.database(), None);
    assert_eq!(m.get("latin1"), Some(&b"\xe9t\xe9"[..]), "non-UTF-8 bytes kept as sent");
    assert_eq!(m.protocol_options().collect::<Vec<_>>(), vec![(&b"_pq_.x"[..], &b"\xff"[..])]);
    assert_eq!(m.params().count(), 4);
    assert_eq!(m.remove("user"), 2);
    assert_eq!(m.user(), None);
}

#[test]
fn encoders_refuse_parameters_that_would_corrupt_the_list() {
    let m = StartupMessage::new(ProtocolVersion::V3_0);
    assert!(m.clone().with("", "x").is_err());
    assert!(m.clone().with("us\0er", "x").is_err());
    assert_eq!(m.clone().with("user", "a\0b"), Err(StartupError::InvalidParam("user".into())));
    assert!(m.with("user", "").is_ok(), "an empty value is legal");
}

#[test]
fn round_trips() {
    let packets = vec![
        StartupPacket::SslRequest,
        StartupPacket::GssEncRequest,
        StartupPacket::Cancel(CancelRequest { pid: 0, key: key(b"\0\0\0\0") }),
        StartupPacket::Cancel(CancelRequest { pid: u32::MAX, key: key(&[0x5a; 256]) }),
        StartupPacket::Startup(StartupMessage::new(ProtocolVersion::V3_2)),
        StartupPacket::Startup(
            StartupMessage::new(ProtocolVersion::V3_0)
                .with("user", "postgres")
                .and_then(|m| m.with("database", ""))
                .and_then(|m| m.with(&b"\xc3\xa9"[..], &b"\xff\xfe"[..]))
                .unwrap(),
        ),
    ];
    let mut stream = BytesMut::new();
    for p in &packets {
        p.encode(&mut stream);
    }
    for p in packets {
        assert_eq!(decode_startup(&mut stream, DEFAULT_MAX_STARTUP_LEN), Ok(Some(p)));
    }
    assert!(stream.is_empty());
}

#[test]
fn encodes_exact_bytes() {
    let mut dst = BytesMut::new();
    StartupPacket::SslRequest.encode(&mut dst);
    assert_eq!(&dst[..], &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    dst.clear();
    StartupMessage::new(ProtocolVersion::V3_0).with("user", "u").unwrap().encode(&mut dst);
    assert_eq!(&dst[..], b"\0\0\0\x10\0\x03\0\0user\0u\0\0");
    dst.clear();
    CancelRequest { pid: 1, key: key(b"abcd") }.encode(&mut dst);
    assert_eq!(&dst[..], b"\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x01abcd");
}

#[test]
fn versions_and_errors_print_readably() {
    assert_eq!(ProtocolVersion::V3_0.to_string(), "3.0");
    assert_eq!(ProtocolVersion::V3_2.to_string(), "3.2");
    assert_eq!(ProtocolVersion::from_code(196_610), Some(ProtocolVersion::V3_2));
    assert_eq!(ProtocolVersion::from_code(196_609), None);
    assert_eq!(
        StartupError::UnknownCode { code: 196_611 }.to_string(),
        "unsupported startup code 196611 (read as a protocol version: 3.3)"
    );
}
