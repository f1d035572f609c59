//! Which pool a client's transaction goes to ([`PoolKey`]), and the handle a client keeps of it
//! ([`PoolRef`]) so that finding its pool, twice per transaction, neither hashes nor compares
//! strings.
//!
//! Invariants: a `PoolKey` and every `PoolRef` of an equal key hash to the same 64 bits (the
//! key's fingerprint, computed once per `PoolRef`), so the pools' map finds an entry by either,
//! and [`Passthrough`] hands those bits to the map unchanged; two handles with the same non-zero
//! pool number hold equal keys (a number is given once, to one pool).

use std::borrow::Borrow;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// Which pool: the servers in it are interchangeable for a client with this key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolKey {
    /// The database.
    pub database: String,
    /// The user.
    pub user: String,
    /// The backend's address.
    pub addr: String,
    /// Startup parameters other than the user, the database and the tracked ones, sorted.
    pub extra: Vec<(String, String)>,
}

impl PoolKey {
    /// The key's 64 bits for hashing (a fixed seed: every thread and every copy agree).
    fn fingerprint(&self) -> u64 {
        foldhash::fast::FixedState::with_seed(0x5241_4d50_4152_5400).hash_one((
            &self.database,
            &self.user,
            &self.addr,
            &self.extra,
        ))
    }
}

impl Hash for PoolKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.fingerprint());
    }
}

/// A pool's key with its fingerprint and, once its pool exists, the pool's number: what a client
/// keeps of the pool it uses. Two handles with the same number are equal without comparing
/// strings. Each client keeps its own copy of the key, so that taking and giving back a server
/// touches no reference count shared with other clients (another core's cache line).
#[derive(Clone, Debug)]
pub struct PoolRef {
    hash: u64,
    /// The pool's number ([`crate::pools::Pools::canonical`]); 0 before it is known.
    id: u64,
    key: Arc<PoolKey>,
}

impl PoolRef {
    /// A handle of `key`, its pool's number not known yet.
    pub fn new(key: PoolKey) -> PoolRef {
        PoolRef { hash: key.fingerprint(), id: 0, key: Arc::new(key) }
    }

    /// This handle with pool number `id` (numbers are unique among the pools of a process).
    pub(crate) fn numbered(&self, id: u64) -> PoolRef {
        PoolRef { id, ..self.clone() }
    }

    /// The pool's number, 0 while not known.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Deref for PoolRef {
    type Target = PoolKey;
    fn deref(&self) -> &PoolKey {
        &self.key
    }
}

impl Borrow<PoolKey> for PoolRef {
    fn borrow(&self) -> &PoolKey {
        &self.key
    }
}

impl Hash for PoolRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for PoolRef {
    fn eq(&self, other: &PoolRef) -> bool {
        (self.id != 0 && self.id == other.id) || (self.hash == other.hash && self.key == other.key)
    }
}

impl Eq for PoolRef {}

/// The hasher of maps keyed by [`PoolKey`]/[`PoolRef`]: their `Hash` writes one well-mixed
/// `u64`, which it keeps as it is. Anything else written (never, by these keys) is mixed in.
#[derive(Default)]
pub struct Passthrough(u64);

impl Hasher for Passthrough {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = foldhash::fast::FixedState::with_seed(self.0).hash_one(bytes);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The map from pool keys that [`Passthrough`] hashes.
pub type KeyMap<V> = std::collections::HashMap<PoolRef, V, BuildHasherDefault<Passthrough>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(db: &str) -> PoolKey {
        PoolKey { database: db.into(), user: "app".into(), addr: "127.0.0.1:5432".into(), extra: Vec::new() }
    }

    #[test]
    fn a_pool_is_found_by_its_key_or_by_any_handle_of_an_equal_key() {
        let mut map = KeyMap::default();
        map.insert(PoolRef::new(key("a")), 1);
        map.insert(PoolRef::new(key("b")), 2);
        assert_eq!(map.get(&key("a")), Some(&1), "by the key");
        assert_eq!(map.get(&PoolRef::new(key("b"))), Some(&2), "by a handle made apart");
        let numbered = PoolRef::new(key("a")).numbered(7);
        map.remove(&key("a"));
        map.insert(numbered.clone(), 1);
        assert_eq!(map.get(&PoolRef::new(key("a")).numbered(7)), Some(&1), "by number");
        assert_eq!(map.get(&PoolRef::new(key("a")).numbered(8)), Some(&1), "a stale number: by the key");
        assert_eq!(map.get(&key("c")), None);
        let other_user = PoolKey { user: "other".into(), ..key("a") };
        assert_eq!(map.get(&PoolRef::new(other_user)), None, "every field counts");
    }

    #[test]
    fn equal_keys_hash_alike_in_every_form() {
        let build = BuildHasherDefault::<Passthrough>::default();
        let k = key("a");
        assert_eq!(build.hash_one(&k), build.hash_one(PoolRef::new(k.clone())));
        assert_ne!(build.hash_one(&k), build.hash_one(key("b")));
    }
}
