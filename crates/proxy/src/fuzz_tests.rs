//! Robustness of every decoder: property tests (arbitrary bytes, arbitrary split points) and a
//! seeded "quick fuzz" of 100 000 inputs per decoder, run with the ordinary test suite.
//!
//! What they check: no decoder panics on any input; an incomplete result consumes nothing; a
//! valid stream decodes to the same messages however it is split across reads.

use bytes::BytesMut;
use proptest::prelude::*;

use crate::backend::{BackendKeyData, BackendMessage, ErrorResponse, Severity, SqlState, TransactionStatus};
use crate::cancel::{BackendTarget, CancelKey, CancelMap};
use crate::frame::{split_frame, Frame, FrameError, HEADER_LEN};
use crate::startup::{decode_startup, CancelRequest, ProtocolVersion, StartupError, StartupMessage, StartupPacket};

/// Limits small enough that random lengths often land on both sides of them.
const STARTUP_MAX: usize = 10_000;
const FRAME_MAX: usize = 4096;

/// Feeds `chunks` one read at a time and decodes startup packets as they become whole, the way
/// the proxy's read loop will. Checks the no-partial-consumption invariant on the way.
fn feed_startup(chunks: &[&[u8]]) -> Result<Vec<StartupPacket>, StartupError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.clone();
            match decode_startup(&mut buf, STARTUP_MAX)? {
                Some(p) => out.push(p),
                None => {
                    assert_eq!(buf, before, "an incomplete packet must not be consumed");
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// As [`feed_startup`], for frames; every frame is also offered to the backend parser.
fn feed_frames(chunks: &[&[u8]]) -> Result<Vec<Frame>, FrameError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match split_frame(&mut buf, FRAME_MAX)? {
                Some(f) => {
                    assert_eq!(before - buf.len(), f.len(), "exactly one frame consumed");
                    assert!(f.len() >= HEADER_LEN);
                    let _ = BackendMessage::parse(&f);
                    out.push(f);
                }
                None => {
                    assert_eq!(buf.len(), before, "an incomplete frame must not be consumed");
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Cuts `bytes` at the given points (taken modulo its length, sorted, duplicates allowed).
fn chunks<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points {
        out.push(&bytes[start..p]);
        start = p;
    }
    out.push(&bytes[start..]);
    out
}

fn key_strategy() -> impl Strategy<Value = CancelKey> {
    prop::collection::vec(any::<u8>(), 4..=256).prop_map(|k| CancelKey::new(k).unwrap())
}

fn nul_free(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, 0..max)
}

fn startup_strategy() -> impl Strategy<Value = StartupPacket> {
    let params =
        prop::collection::vec((nul_free(12).prop_filter("names are non-empty", |n| !n.is_empty()), nul_free(24)), 0..6);
    prop_oneof![
        Just(StartupPacket::SslRequest),
        Just(StartupPacket::GssEncRequest),
        (any::<u32>(), key_strategy()).prop_map(|(pid, key)| StartupPacket::Cancel(CancelRequest { pid, key })),
        (any::<bool>(), params).prop_map(|(v32, params)| {
            let mut m = StartupMessage::new(if v32 { ProtocolVersion::V3_2 } else { ProtocolVersion::V3_0 });
            for (n, v) in params {
                m.push(n, v).unwrap();
            }
            StartupPacket::Startup(m)
        }),
    ]
}

proptest! {
    #[test]
    fn startup_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), cuts in prop::collection::vec(any::<usize>(), 0..5)) {
        let _ = feed_startup(&chunks(&bytes, &cuts));
    }

    #[test]
    fn frame_splitter_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), cuts in prop::collection::vec(any::<usize>(), 0..5)) {
        let _ = feed_frames(&chunks(&bytes, &cuts));
    }

    #[test]
    fn backend_parser_never_panics(tag in prop::sample::select(&b"RKZSENDC"[..]), body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = BackendMessage::parse(&Frame::new(tag, &body));
    }

    #[test]
    fn any_split_of_a_startup_sequence_decodes_the_same(
        packets in prop::collection::vec(startup_strategy(), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut stream = BytesMut::new();
        for p in &packets {
            p.encode(&mut stream);
        }
        prop_assert_eq!(feed_startup(&chunks(&stream, &cuts)).unwrap(), packets);
    }

    #[test]
    fn any_split_of_a_frame_stream_yields_the_same_frames(
        frames in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..64)), 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let frames: Vec<Frame> = frames.iter().map(|(t, b)| Frame::new(*t, b)).collect();
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.as_bytes().to_vec()).collect();
        let whole = feed_frames(&[&stream]).unwrap();
        prop_assert_eq!(&whole, &frames);
        prop_assert_eq!(feed_frames(&chunks(&stream, &cuts)).unwrap(), frames);
    }

    #[test]
    fn written_backend_messages_parse_back(
        pid in any::<u32>(),
        key in key_strategy(),
        message in ".{0,60}",
        fatal in any::<bool>(),
    ) {
        let mut dst = BytesMut::new();
        BackendKeyData { pid, key: key.clone() }.encode(&mut dst);
        let severity = if fatal { Severity::Fatal } else { Severity::Error };
        ErrorResponse::new(severity, SqlState::ADMIN_SHUTDOWN, message.clone()).encode(&mut dst);
        let frames = feed_frames(&[&dst]).unwrap();
        prop_assert_eq!(BackendMessage::parse(&frames[0]).unwrap(), BackendMessage::BackendKeyData(BackendKeyData { pid, key }));
        let BackendMessage::ErrorResponse(f) = BackendMessage::parse(&frames[1]).unwrap() else {
            panic!("not an ErrorResponse");
        };
        prop_assert_eq!(f.message().unwrap(), message.replace('\0', ""));
        prop_assert_eq!(f.severity().unwrap(), severity.as_str());
    }
}

/// Marsaglia's xorshift64: deterministic, dependency-free, plenty for generating inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

const QUICK_FUZZ_RUNS: usize = 100_000;

/// A mutated copy of a valid input: random bytes flipped, cut short, extended, or its length
/// word rewritten, so the decoders get past their first checks far more often than with pure
/// noise.
fn mutate(rng: &mut XorShift, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(8) == 0 {
        let len = rng.below(64);
        return rng.bytes(len);
    }
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(3) {
        match rng.below(4) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.truncate(rng.below(v.len() + 1)),
            2 => {
                let extra = rng.below(16);
                v.extend(rng.bytes(extra));
            }
            _ if v.len() >= 5 => {
                // Rewrite a length word to something near the real one.
                let at = rng.below(2);
                let len = (v.len() as u32).wrapping_add(rng.below(9) as u32).wrapping_sub(4);
                v[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            _ => {}
        }
    }
    v
}

#[test]
fn quick_fuzz_startup() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut seeds = Vec::new();
    for p in [
        StartupPacket::SslRequest,
        StartupPacket::GssEncRequest,
        StartupPacket::Cancel(CancelRequest { pid: 7, key: CancelKey::new(&b"abcd"[..]).unwrap() }),
        StartupPacket::Cancel(CancelRequest { pid: 7, key: CancelKey::new(vec![3; 32]).unwrap() }),
        StartupPacket::Startup(StartupMessage::new(ProtocolVersion::V3_2).with("user", "u").unwrap()),
        StartupPacket::Startup(
            StartupMessage::new(ProtocolVersion::V3_0).with("user", "u").and_then(|m| m.with("database", "d")).unwrap(),
        ),
    ] {
        let mut b = BytesMut::new();
        p.encode(&mut b);
        seeds.push(b.to_vec());
    }
    let (mut ok, mut err) = (0, 0);
    for _ in 0..QUICK_FUZZ_RUNS {
        let input = mutate(&mut rng, &seeds);
        let cut = rng.below(input.len() + 1);
        match feed_startup(&[&input[..cut], &input[cut..]]) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    // Both outcomes must be common, or the mutations are not reaching the parser.
    assert!(ok > QUICK_FUZZ_RUNS / 10 && err > QUICK_FUZZ_RUNS / 10, "ok {ok}, err {err}");
}

#[test]
fn quick_fuzz_frames_and_backend_messages() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut seeds = Vec::new();
    let mut b = BytesMut::new();
    ErrorResponse::new(Severity::Fatal, SqlState::CONNECTION_FAILURE, "x").encode(&mut b);
    seeds.push(b.split().to_vec());
    BackendKeyData { pid: 1, key: CancelKey::new(vec![1; 32]).unwrap() }.encode(&mut b);
    seeds.push(b.split().to_vec());
    TransactionStatus::InTransaction.encode_ready_for_query(&mut b);
    seeds.push(b.split().to_vec());
    for (tag, body) in
        [(b'S', &b"TimeZone\0UTC\0"[..]), (b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0"), (b'N', b"SNOTICE\0Mhi\0\0")]
    {
        seeds.push(Frame::new(tag, body).into_bytes().to_vec());
    }
    let mut parsed = 0;
    for _ in 0..QUICK_FUZZ_RUNS {
        let input = mutate(&mut rng, &seeds);
        let cut = rng.below(input.len() + 1);
        if let Ok(frames) = feed_frames(&[&input[..cut], &input[cut..]]) {
            parsed += frames.iter().filter(|f| BackendMessage::parse(*f).is_ok()).count();
        }
        // Bodies straight into the parser too, whatever framing would have said.
        let tag = b"RKZSEN"[rng.below(6)];
        let _ = BackendMessage::parse(&Frame::new(tag, &input));
    }
    assert!(parsed > QUICK_FUZZ_RUNS / 10, "only {parsed} frames parsed");
}

#[test]
fn quick_fuzz_cancel_lookups() {
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    let mut map = CancelMap::new();
    let mut issued = Vec::new();
    for i in 0..64u32 {
        let key_len = if i % 2 == 0 { 4 } else { 32 };
        let target = BackendTarget { addr: i, pid: i, key: CancelKey::new(vec![i as u8; key_len]).unwrap() };
        let mut fill = |buf: &mut [u8]| buf.iter_mut().for_each(|b| *b = rng.next() as u8);
        issued.push(map.issue(target, &mut fill).unwrap());
    }
    for _ in 0..QUICK_FUZZ_RUNS {
        let (pid, key) = &issued[rng.below(issued.len())];
        let mut guess = key.as_bytes().to_vec();
        let real = rng.below(4) == 0;
        if !real {
            let i = rng.below(guess.len());
            guess[i] ^= 1 << rng.below(8);
        }
        let request = CancelRequest { pid: *pid, key: CancelKey::new(guess).unwrap() };
        assert_eq!(map.lookup(&request).is_some(), real);
        let len = 4 + rng.below(29);
        let random = CancelRequest { pid: rng.next() as u32, key: CancelKey::new(rng.bytes(len)).unwrap() };
        assert!(map.lookup(&random).is_none(), "a random guess never matches");
    }
}
