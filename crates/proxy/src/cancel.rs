//! Cancel keys and the map that routes a client's CancelRequest to the backend that owns it.
//!
//! The proxy never shows a client the server's BackendKeyData (checklist §8.4): it issues its own
//! pid and random secret per session and remembers which backend (address, pid, secret) stands
//! behind it. A CancelRequest arrives on a fresh connection with only that (pid, secret); the
//! proxy looks it up here and forwards a CancelRequest carrying the *backend's* key to the
//! *backend's* address.
//!
//! Invariants:
//! * secrets are compared in constant time ([`CancelKey`]'s `PartialEq`), so a client cannot
//!   guess a secret byte by byte from response timing; a mismatch is simply "not found";
//! * synthetic pids are unique among live entries, so a lookup never reaches another session;
//! * an entry lives exactly as long as its client session: the caller removes it when the
//!   session ends (a session stays on one backend), so a late cancel can never hit a query of a
//!   different client;
//! * a pooled client points its key at the server it holds through its [`Binding`], shared with
//!   the map: every transaction does so twice, without the map's lock (which every worker
//!   thread's clients share) or a lookup.
//!
//! The map itself is pure: randomness comes from the caller (`fill`), which in the proxy is the
//! operating system's generator.

use foldhash::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::startup::CancelRequest;

/// Shortest secret key: protocol 3.0's fixed four bytes, still allowed under 3.2.
pub const MIN_KEY_LEN: usize = 4;
/// Longest secret key protocol 3.2 allows (PostgreSQL 18 itself sends 32 bytes).
pub const MAX_KEY_LEN: usize = 256;

/// How many random draws [`CancelMap::issue`] tries before giving up: a collision among 31-bit
/// pids is rare, so repeated failures mean the random source is broken (for example all zeros).
const ISSUE_ATTEMPTS: usize = 64;

/// A cancel secret of 4..=256 bytes (protocol 3.0 always uses 4).
///
/// Equality is constant-time in the key's contents, and `Debug` prints only the length: the
/// key is a secret and must not end up in logs.
#[derive(Clone)]
pub struct CancelKey(Bytes);

/// The key had a length outside 4..=256.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cancel key of {0} bytes (must be {MIN_KEY_LEN} to {MAX_KEY_LEN})")]
pub struct KeyLengthError(pub usize);

impl CancelKey {
    /// Wraps a key, checking its length.
    pub fn new(key: impl Into<Bytes>) -> Result<Self, KeyLengthError> {
        let key = key.into();
        if (MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            Ok(CancelKey(key))
        } else {
            Err(KeyLengthError(key.len()))
        }
    }

    /// The key's bytes, exactly as sent on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false (a key has at least four bytes); present because clippy expects it
    /// beside `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for CancelKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for CancelKey {}

impl fmt::Debug for CancelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CancelKey(<{} bytes>)", self.0.len())
    }
}

/// Compares two byte strings in time that depends only on their lengths, never on where they
/// first differ. Lengths are not secret (they follow from the protocol version).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// A server's address as the cancel map keeps it: shared, so that pointing a pooled client's key
/// at the server it takes (every transaction) copies no string.
pub type Addr = std::sync::Arc<str>;

/// The backend that really runs a client's queries: where to send a cancel and with which key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTarget<A> {
    /// The backend's address (a socket address, a member name: whatever the proxy dials).
    pub addr: A,
    /// The pid from the backend's own BackendKeyData.
    pub pid: u32,
    /// The secret from the backend's own BackendKeyData.
    pub key: CancelKey,
}

impl<A> BackendTarget<A> {
    /// The CancelRequest to send to [`Self::addr`] on a fresh connection.
    pub fn cancel_request(&self) -> CancelRequest {
        CancelRequest { pid: self.pid, key: self.key.clone() }
    }
}

/// The random source failed to produce an unused pid within 64 draws.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not issue a unique cancel key: the random source keeps repeating")]
pub struct IssueError;

/// Synthetic cancel keys in use, each bound to the backend currently serving that session.
#[derive(Debug)]
pub struct CancelMap<A> {
    entries: HashMap<u32, Entry<A>>,
}

#[derive(Debug)]
struct Entry<A> {
    key: CancelKey,
    target: Binding<A>,
}

/// Where one session's key points: `None` while a pooled client holds no server (a cancel then
/// has nothing to stop). Shared by the map and the session. The target is shared with the server
/// connection it describes, so pointing the key at a server (twice per pooled transaction)
/// copies a pointer, not the address and the key.
#[derive(Debug)]
pub struct Binding<A>(Arc<Mutex<Option<Arc<BackendTarget<A>>>>>);

impl<A> Clone for Binding<A> {
    fn clone(&self) -> Self {
        Binding(self.0.clone())
    }
}

impl<A> Binding<A> {
    fn new(target: Option<Arc<BackendTarget<A>>>) -> Binding<A> {
        Binding(Arc::new(Mutex::new(target)))
    }

    /// Points the key at the server the client holds now, or at nothing between its
    /// transactions. Returns where it pointed before.
    pub fn set(&self, target: Option<Arc<BackendTarget<A>>>) -> Option<Arc<BackendTarget<A>>> {
        std::mem::replace(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()), target)
    }

    fn get(&self) -> Option<BackendTarget<A>>
    where
        A: Clone,
    {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).as_deref().cloned()
    }
}

impl<A> Default for CancelMap<A> {
    fn default() -> Self {
        CancelMap { entries: HashMap::default() }
    }
}

impl<A> CancelMap<A> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a synthetic (pid, key) for a new session served by `target` and records it.
    /// Returns what to send the client in place of the backend's BackendKeyData.
    ///
    /// The synthetic key has the same length as the backend's: the client accepted the
    /// backend's key under the protocol version the two negotiated (a 3.0 client rejects
    /// anything but four bytes), so that length is always one the client accepts. `fill` must
    /// fill its argument with cryptographically random bytes.
    pub fn issue(
        &mut self,
        target: BackendTarget<A>,
        fill: impl FnMut(&mut [u8]),
    ) -> Result<(u32, CancelKey), IssueError> {
        let len = target.key.len();
        self.issue_for(Binding::new(Some(Arc::new(target))), len, fill)
    }

    /// Issues a synthetic (pid, key) of `key_len` bytes for a pooled client that holds no server
    /// yet, with the [`Binding`] the client points it with.
    pub fn issue_unbound(
        &mut self,
        key_len: usize,
        fill: impl FnMut(&mut [u8]),
    ) -> Result<(u32, CancelKey, Binding<A>), IssueError> {
        let binding = Binding::new(None);
        let (pid, key) = self.issue_for(binding.clone(), key_len, fill)?;
        Ok((pid, key, binding))
    }

    fn issue_for(
        &mut self,
        target: Binding<A>,
        key_len: usize,
        mut fill: impl FnMut(&mut [u8]),
    ) -> Result<(u32, CancelKey), IssueError> {
        for _ in 0..ISSUE_ATTEMPTS {
            let mut pid = [0u8; 4];
            fill(&mut pid);
            // Positive Int32 like a real pid: drivers read it signed and some print it.
            let pid = u32::from_be_bytes(pid) & 0x7fff_ffff;
            if pid == 0 || self.entries.contains_key(&pid) {
                continue;
            }
            let mut key = vec![0u8; key_len];
            fill(&mut key);
            let key = CancelKey(Bytes::from(key));
            self.entries.insert(pid, Entry { key: key.clone(), target });
            return Ok((pid, key));
        }
        Err(IssueError)
    }

    /// The backend to cancel for a client's CancelRequest, or `None` when the pid is unknown or
    /// the secret does not match (drop the request silently, as PostgreSQL does).
    pub fn lookup(&self, request: &CancelRequest) -> Option<BackendTarget<A>>
    where
        A: Clone,
    {
        let entry = self.entries.get(&request.pid)?;
        if entry.key != request.key {
            return None;
        }
        entry.target.get()
    }

    /// Points a live session's key at a new backend (the session reconnected between
    /// transactions). Returns the previous target, or `None` when `pid` is not live.
    pub fn retarget(&mut self, pid: u32, target: BackendTarget<A>) -> Option<Arc<BackendTarget<A>>> {
        self.entries.get(&pid)?.target.set(Some(Arc::new(target)))
    }

    /// Forgets a session's key when the session ends; later cancels with it find nothing
    /// (its [`Binding`], if the session still has it, points nowhere the map knows).
    pub fn remove(&mut self, pid: u32) -> Option<Arc<BackendTarget<A>>> {
        self.entries.remove(&pid).and_then(|e| e.target.set(None))
    }

    /// Number of live sessions with a key.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no session holds a key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stand-in for the OS generator: counts upwards byte by byte.
    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |buf: &mut [u8]| {
            for b in buf {
                n = n.wrapping_add(1);
                *b = n;
            }
        }
    }

    fn target(addr: &'static str, pid: u32, key: &'static [u8]) -> BackendTarget<&'static str> {
        BackendTarget { addr, pid, key: CancelKey::new(key).unwrap() }
    }

    fn request(pid: u32, key: &CancelKey) -> CancelRequest {
        CancelRequest { pid, key: key.clone() }
    }

    #[test]
    fn key_lengths_are_checked() {
        assert_eq!(CancelKey::new(&b"abc"[..]), Err(KeyLengthError(3)));
        assert!(CancelKey::new(&b"abcd"[..]).is_ok());
        assert!(CancelKey::new(vec![7u8; 256]).is_ok());
        assert_eq!(CancelKey::new(vec![7u8; 257]), Err(KeyLengthError(257)));
    }

    #[test]
    fn keys_compare_by_content_and_length_and_never_print() {
        let a = CancelKey::new(&b"abcd"[..]).unwrap();
        assert_eq!(a, CancelKey::new(b"abcd".to_vec()).unwrap());
        assert_ne!(a, CancelKey::new(&b"abce"[..]).unwrap());
        assert_ne!(a, CancelKey::new(&b"abcde"[..]).unwrap());
        assert_eq!(format!("{a:?}"), "CancelKey(<4 bytes>)");
    }

    #[test]
    fn issued_key_routes_to_its_backend_only() {
        let mut map = CancelMap::new();
        let mut rng = counter();
        let (pid1, key1) = map.issue(target("pg1:5432", 101, b"k101"), &mut rng).unwrap();
        static LONG: [u8; 32] = [9; 32];
        let (pid2, key2) = map.issue(target("pg2:5432", 202, &LONG), &mut rng).unwrap();
        assert_ne!(pid1, pid2);
        assert_eq!(key1.len(), 4, "a 3.0 backend key gets a 3.0-sized synthetic key");
        assert_eq!(key2.len(), 32);
        assert_ne!(key1.as_bytes(), b"k101", "the backend's secret is never handed out");

        let hit = map.lookup(&request(pid1, &key1)).unwrap();
        assert_eq!((hit.addr, hit.pid), ("pg1:5432", 101));
        assert_eq!(hit.cancel_request(), CancelRequest { pid: 101, key: CancelKey::new(&b"k101"[..]).unwrap() });
        assert_eq!(map.lookup(&request(pid2, &key2)).unwrap().addr, "pg2:5432");

        // Right pid with someone else's key, unknown pid, wrong length: all silently nothing.
        assert!(map.lookup(&request(pid1, &key2)).is_none());
        assert!(map.lookup(&request(pid2 ^ 1, &key2)).is_none());
        let mut wrong = key1.as_bytes().to_vec();
        wrong[3] ^= 1;
        assert!(map.lookup(&request(pid1, &CancelKey::new(wrong).unwrap())).is_none());
    }

    #[test]
    fn retarget_and_remove_follow_the_session() {
        let mut map = CancelMap::new();
        let (pid, key) = map.issue(target("old", 1, b"aaaa"), counter()).unwrap();
        let old = map.retarget(pid, target("new", 2, b"bbbb")).unwrap();
        assert_eq!(old.addr, "old");
        assert_eq!(map.lookup(&request(pid, &key)).unwrap().addr, "new");
        assert_eq!(map.remove(pid).unwrap().addr, "new");
        assert!(map.lookup(&request(pid, &key)).is_none());
        assert!(map.is_empty());
        assert!(map.retarget(pid, target("x", 3, b"cccc")).is_none());
        assert!(map.remove(pid).is_none());
    }

    #[test]
    fn a_pooled_clients_key_follows_its_binding() {
        let mut map = CancelMap::new();
        let (pid, key, binding) = map.issue_unbound(4, counter()).unwrap();
        assert_eq!(key.len(), 4);
        assert!(map.lookup(&request(pid, &key)).is_none(), "no server held: nothing to cancel");
        assert!(binding.set(Some(Arc::new(target("pg1", 11, b"aaaa")))).is_none());
        assert_eq!(map.lookup(&request(pid, &key)).unwrap().pid, 11);
        assert_eq!(binding.set(Some(Arc::new(target("pg2", 22, b"bbbb")))).unwrap().pid, 11);
        assert_eq!(map.lookup(&request(pid, &key)).unwrap().addr, "pg2");
        binding.set(None);
        assert!(map.lookup(&request(pid, &key)).is_none(), "between transactions: nothing to cancel");
        binding.set(Some(Arc::new(target("pg1", 33, b"cccc"))));
        assert_eq!(map.remove(pid).unwrap().pid, 33);
        assert!(map.is_empty());
        binding.set(Some(Arc::new(target("pg1", 44, b"dddd"))));
        assert!(map.lookup(&request(pid, &key)).is_none(), "a removed key stays gone");
    }

    #[test]
    fn pids_are_positive_nonzero_and_unique_even_with_a_repetitive_source() {
        let mut map = CancelMap::new();
        // Draws in order: pid 0 (skipped), pid 5 and its key; then 0x80000005, which masks to
        // the taken pid 5 (skipped), pid 6 and its key.
        let mut draws =
            [[0, 0, 0, 0], [0, 0, 0, 5], [1, 1, 1, 1], [0x80, 0, 0, 5], [0, 0, 0, 6], [2, 2, 2, 2]].into_iter();
        let mut fill = |buf: &mut [u8]| buf.copy_from_slice(&draws.next().unwrap());
        let (a, _) = map.issue(target("x", 1, b"zzzz"), &mut fill).unwrap();
        let (b, _) = map.issue(target("x", 1, b"zzzz"), &mut fill).unwrap();
        assert_eq!((a, b), (5, 6));
    }

    #[test]
    fn a_broken_random_source_is_an_error_not_a_hang() {
        let mut map: CancelMap<&str> = CancelMap::new();
        assert_eq!(map.issue(target("x", 1, b"zzzz"), |b: &mut [u8]| b.fill(0)), Err(IssueError));
        assert!(map.is_empty());
    }
}
