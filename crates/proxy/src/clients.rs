//! The pooled clients connected now and each database's counters, for the admin console
//! (`SHOW CLIENTS`, `SHOW POOLS`, `SHOW STATS`) and `/metrics`.
//!
//! A client registers once, at login, and updates its own entry (its state and its own
//! counters) with atomic stores as it takes and gives back servers: the hot path takes no lock
//! and writes no memory another client's thread writes. The console reads a snapshot; a
//! database's counters are what its clients that left counted plus what those connected now
//! count.
//!
//! Invariants: an entry lives exactly as long as its client's session ([`Registered`] removes it
//! on drop), so the figures never count a client that left as connected; its counters move to
//! its database's totals under the same lock that removes it, so `SHOW STATS` never loses or
//! doubles them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::session_features::Feature;

/// What a client is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Between transactions, holding no server.
    Idle,
    /// Waiting for a server.
    Waiting,
    /// Holding a server.
    Active,
}

impl ClientState {
    /// PgBouncer's spelling in `SHOW CLIENTS`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }
}

/// One client, as the console shows it.
#[derive(Debug)]
pub struct ClientInfo {
    /// The user it logged in as.
    pub user: String,
    /// Its database.
    pub database: String,
    /// Its address and port.
    pub addr: String,
    /// When it connected.
    pub connect_time: jiff::Timestamp,
    /// Over TLS.
    pub tls: bool,
    state: AtomicU8,
    /// The pid of the server it holds (0: none).
    server_pid: AtomicU32,
    /// When it last changed state, in microseconds after [`epoch`].
    since_us: AtomicU64,
    /// What it counted.
    pub stats: DbStats,
}

/// The origin of the clients' state times: a monotonic clock, read by the hot path only where
/// it reads the time anyway.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn micros_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_micros() as u64
}

/// A moment on the clients' clock, in whole microseconds after [`epoch`]: read from an
/// `Instant` once, it serves both a client's state time and the durations counted from it,
/// which are then a subtraction of two integers (a pooled client takes and gives back a server
/// on every transaction, and each `Instant` difference costs a call into the clock's arithmetic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

impl Stamp {
    /// The moment `at`.
    pub fn of(at: Instant) -> Stamp {
        Stamp(micros_since_epoch(at))
    }

    /// Microseconds from `earlier` to this moment (0 if `earlier` is later).
    pub fn micros_since(self, earlier: Stamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl ClientInfo {
    /// Records what it is doing since `at` (and the server it holds, 0 for none).
    pub fn set(&self, state: ClientState, server_pid: u32, at: Stamp) {
        self.state.store(state as u8, Ordering::Relaxed);
        self.server_pid.store(server_pid, Ordering::Relaxed);
        self.since_us.store(at.0, Ordering::Relaxed);
    }

    /// What it is doing.
    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            x if x == ClientState::Waiting as u8 => ClientState::Waiting,
            x if x == ClientState::Active as u8 => ClientState::Active,
            _ => ClientState::Idle,
        }
    }

    /// The server it holds (0: none).
    pub fn server_pid(&self) -> u32 {
        self.server_pid.load(Ordering::Relaxed)
    }

    /// How long it has been in its state.
    pub fn in_state_for(&self) -> Duration {
        Duration::from_micros(micros_since_epoch(Instant::now()).saturating_sub(self.since_us.load(Ordering::Relaxed)))
    }
}

/// Counters of one client, or of a database's clients that left.
#[derive(Debug, Default)]
pub struct DbStats {
    /// Transactions (server leases that ended).
    pub xacts: AtomicU64,
    /// Queries (simple queries and extended-protocol Syncs).
    pub queries: AtomicU64,
    /// Bytes from clients.
    pub received: AtomicU64,
    /// Bytes to clients.
    pub sent: AtomicU64,
    /// Microseconds clients held servers.
    pub xact_us: AtomicU64,
    /// Microseconds clients waited for servers.
    pub wait_us: AtomicU64,
}

impl DbStats {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds every counter of `other`.
    fn absorb(&self, other: &DbStats) {
        for (mine, theirs) in self.counters().into_iter().zip(other.counters()) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    fn counters(&self) -> [&AtomicU64; 6] {
        [&self.xacts, &self.queries, &self.received, &self.sent, &self.xact_us, &self.wait_us]
    }

    /// Adds what it counted to `t`.
    fn add_to(&self, t: &mut DbTotals) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        t.xacts += load(&self.xacts);
        t.queries += load(&self.queries);
        t.received += load(&self.received);
        t.sent += load(&self.sent);
        t.xact_us += load(&self.xact_us);
        t.wait_us += load(&self.wait_us);
    }
}

/// One database's counters read at one moment (`SHOW STATS`, `/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbTotals {
    /// The database.
    pub database: String,
    /// Transactions (server leases that ended).
    pub xacts: u64,
    /// Queries.
    pub queries: u64,
    /// Bytes from clients.
    pub received: u64,
    /// Bytes to clients.
    pub sent: u64,
    /// Microseconds clients held servers.
    pub xact_us: u64,
    /// Microseconds clients waited for servers.
    pub wait_us: u64,
}

/// Every pooled client and every database's counters.
#[derive(Debug, Default)]
pub struct Clients {
    /// Clients pinned to their server, by feature ([`Feature::ALL`]'s order).
    pins: [AtomicU64; 6],
    next: AtomicU64,
    live: Mutex<Live>,
}

/// The clients connected now and what those that left counted.
#[derive(Debug, Default)]
struct Live {
    clients: HashMap<u64, Arc<ClientInfo>>,
    /// By database (every database a client logged in to has an entry).
    left: HashMap<String, DbStats>,
}

/// A client's registration; dropping it removes the client.
#[derive(Debug)]
pub struct Registered<'a> {
    clients: &'a Clients,
    id: u64,
    /// The entry to update (its counters included).
    pub info: Arc<ClientInfo>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut live = lock(&self.clients.live);
        live.clients.remove(&self.id);
        live.left.entry(self.info.database.clone()).or_default().absorb(&self.info.stats);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Clients {
    /// Registers a client that logged in.
    pub fn register(&self, user: &str, database: &str, addr: &str, tls: bool) -> Registered<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ClientInfo {
            user: user.to_string(),
            database: database.to_string(),
            addr: addr.to_string(),
            connect_time: jiff::Timestamp::now(),
            tls,
            state: AtomicU8::new(ClientState::Idle as u8),
            server_pid: AtomicU32::new(0),
            since_us: AtomicU64::new(micros_since_epoch(Instant::now())),
            stats: DbStats::default(),
        });
        let mut live = lock(&self.live);
        live.clients.insert(id, info.clone());
        live.left.entry(database.to_string()).or_default();
        Registered { clients: self, id, info }
    }

    /// Every client connected now, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<ClientInfo>> {
        let mut v: Vec<(u64, Arc<ClientInfo>)> =
            lock(&self.live).clients.iter().map(|(k, v)| (*k, v.clone())).collect();
        v.sort_by_key(|(k, _)| *k);
        v.into_iter().map(|(_, c)| c).collect()
    }

    /// A client got pinned to its server by `feature`.
    pub fn pinned(&self, feature: Feature) {
        if let Some(i) = Feature::ALL.iter().position(|f| *f == feature) {
            self.pins[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Clients pinned since the start, by feature.
    pub fn pins(&self) -> Vec<(Feature, u64)> {
        Feature::ALL.iter().zip(&self.pins).map(|(f, n)| (*f, n.load(Ordering::Relaxed))).collect()
    }

    /// Every database's counters, by name.
    pub fn totals(&self) -> Vec<DbTotals> {
        let live = lock(&self.live);
        let mut v: Vec<DbTotals> = live
            .left
            .iter()
            .map(|(database, left)| {
                let mut t = DbTotals { database: database.clone(), ..DbTotals::default() };
                left.add_to(&mut t);
                t
            })
            .collect();
        v.sort_by(|a, b| a.database.cmp(&b.database));
        for c in live.clients.values() {
            if let Ok(i) = v.binary_search_by(|t| t.database.as_str().cmp(&c.database)) {
                c.stats.add_to(&mut v[i]);
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_count_whole_microseconds_and_never_backwards() {
        // Later than the clock's origin, whenever this test made it.
        let t = Instant::now() + Duration::from_secs(1);
        let (a, b) = (Stamp::of(t), Stamp::of(t + Duration::from_micros(1_500)));
        assert_eq!(b.micros_since(a), 1_500);
        assert_eq!(a.micros_since(b), 0, "an earlier moment is no time at all, not a wrap");
        assert_eq!(a.micros_since(a), 0);
        let clients = Clients::default();
        let me = clients.register("app", "db", "127.0.0.1:5000", false);
        me.info.set(ClientState::Waiting, 0, Stamp::of(Instant::now()));
        assert!(me.info.in_state_for() < Duration::from_secs(60), "a state set now reads as just now");
    }

    #[test]
    fn a_client_counts_while_registered_and_keeps_its_state() {
        let clients = Clients::default();
        {
            let a = clients.register("app", "db", "127.0.0.1:5000", false);
            let _b = clients.register("app", "db", "127.0.0.1:5001", true);
            a.info.set(ClientState::Active, 4242, Stamp::of(Instant::now()));
            let seen = clients.snapshot();
            assert_eq!(seen.len(), 2);
            assert_eq!((seen[0].state(), seen[0].server_pid()), (ClientState::Active, 4242));
            assert_eq!(seen[1].state(), ClientState::Idle);
            DbStats::add(&a.info.stats.xacts, 3);
            assert_eq!(clients.totals()[0].xacts, 3, "a connected client's counts");
        }
        assert!(clients.snapshot().is_empty(), "gone with their sessions");
        let totals = clients.totals();
        assert_eq!((totals[0].database.as_str(), totals[0].xacts), ("db", 3), "counters stay");
    }
}
