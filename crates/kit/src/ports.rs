//! Free loopback ports for local servers, and a random seed.
//!
//! Every server the kit's users start (the demo's, the e2e harness', the DCS tests', the
//! benches') gets its port here, picked below the kernel's ephemeral range, where an outgoing
//! connection cannot take a port between the moment it is picked and the moment the server
//! binds it.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port that is free on 127.0.0.1 right now and that this process has not handed out before.
///
/// Ports are drawn at random from 15000..32768, i.e. below Linux' default ephemeral range
/// (32768..60999), so that an outgoing connection cannot take a port between the moment we pick it
/// and the moment the server binds it, nor while a server is stopped and about to be restarted on
/// the same port. Each candidate is checked by binding it. Falls back to binding port 0.
pub fn free_port() -> u16 {
    let low = 15000u16;
    let high = ephemeral_low().clamp(low + 1000, 32768);
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    for _ in 0..200 {
        let port = low + (random_u64() % u64::from(high - low)) as u16;
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
    loop {
        let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if used.insert(port) {
            return port;
        }
    }
}

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|w| w.parse().ok()))
        .unwrap_or(32768)
}

/// A random number from the standard library's per-process random hash keys.
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}
