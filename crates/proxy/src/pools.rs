//! Every pool of server connections of a transaction-mode proxy, shared by all worker threads:
//! one [`Pool`] per database, user, backend address and set of startup parameters the server
//! does not report (clients that started with different ones get servers started with theirs),
//! with the clients waiting for it and what it logs in with. One statement registry serves
//! every pool, so a client's statements keep their global names on any server (a switchover
//! moves it to another pool).
//!
//! A pool is created by its first client, which also leaves the login the pool opens further
//! connections with (the client's SCRAM key or password and the user's stored secret, as
//! PgBouncer keeps them). Waiting clients get their connection through a one-shot channel; a
//! waiter that went away gives it straight back.
//!
//! `max_db_connections` bounds the pools of one database on one server together: at the bound a
//! connection idle in a sibling pool is closed to make room, else the client waits, and a
//! connection given back or closed in one pool lets a sibling's capped waiter have one opened.
//!
//! Invariants: a connection leaves a pool to one client at a time and comes back once (or is
//! closed); a pool whose backend left the routes ([`Pools::retire_except`]) closes what it has
//! idle and everything that comes back, so no new transaction starts on a server that stopped
//! being a route.

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::auth_file::Secret;
use crate::client_auth::Credentials;
use crate::pool::{Checkin, Checkout, Limits, Pool, WaiterId};
use crate::pool_key::KeyMap;
use crate::prepared::Registry;
use crate::server_auth::ServerLogin;
use crate::server_conn::{Idle, OpenError, ServerConn};

pub use crate::pool_key::{PoolKey, PoolRef};

/// What a pool logs in with: a client's proof and the user's secret.
#[derive(Clone, Debug)]
pub struct Login {
    /// What the client proved.
    pub credentials: Credentials,
    /// The user's stored secret.
    pub secret: Option<Secret>,
}

/// What a client asking for a connection gets.
#[derive(Debug)]
// Not boxed: a lease is moved once, and a box would cost an allocation per transaction.
#[allow(clippy::large_enum_variant)]
pub enum Lease {
    /// An idle connection (check it with [`Idle::drain`] first).
    Ready(Idle),
    /// Open one yourself, then report [`Pools::opened_for_client`] or [`Pools::open_failed`];
    /// first close the idle connection of a sibling pool that makes room for it
    /// (`max_db_connections`), if any, and wait until it is gone ([`Idle::close_and_wait`]).
    Open(Option<Idle>),
    /// Wait for one on this channel; a closed channel means the wait timed out
    /// (`query_wait_timeout`). Leave with [`Pools::cancel_wait`] if you stop waiting.
    Wait(WaiterId, oneshot::Receiver<Idle>),
}

/// The figures of one pool (`SHOW POOLS`, `/metrics`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolFigures {
    /// Which pool.
    pub key: PoolKey,
    /// The backend's member name.
    pub backend: String,
    /// Servers idle.
    pub idle: usize,
    /// Servers in use by clients.
    pub in_use: usize,
    /// Servers being opened.
    pub opening: usize,
    /// Clients waiting for a server.
    pub waiting: usize,
    /// The longest current wait.
    pub max_wait: Duration,
    /// The backend left the routes: its servers close as they come back.
    pub retired: bool,
}

struct Entry {
    pool: Pool<Idle>,
    backend: String,
    waiters: HashMap<WaiterId, (oneshot::Sender<Idle>, Instant)>,
    /// RECONNECT: connections opened before this close when they come back.
    reconnect_before: Option<Instant>,
    login: Option<Login>,
    welcome: Option<Vec<(String, String)>>,
    retired: bool,
}

/// How long opening a server connection for a pool (not for a client) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection closed to make room for a new one may take to go away before the new
/// one is opened anyway (a backend exits in milliseconds).
const ROOM_TIMEOUT: Duration = Duration::from_secs(2);

/// All pools.
pub struct Pools {
    entries: Mutex<KeyMap<Entry>>,
    next_waiter: AtomicU64,
    /// The next pool's number (see [`PoolRef`]).
    next_pool: AtomicU64,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("pools", &self.lock().len()).finish()
    }
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            entries: Mutex::new(KeyMap::default()),
            next_waiter: AtomicU64::new(1),
            next_pool: AtomicU64::new(1),
            registry: Arc::default(),
        }
    }
}

/// Closes connections outside the lock (a `Vec` of them, or an `Option` of one).
fn close_all(conns: impl IntoIterator<Item = Idle>) {
    for c in conns {
        c.close();
    }
}

impl Pools {
    fn lock(&self) -> MutexGuard<'_, KeyMap<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection of `key`'s pool when one can be had at once, without waiting, opening
    /// or creating the pool (no one waits before the client; the pool is routed): a client's
    /// common case, which [`Pools::checkout`] serves too, with none of its other cases. `None`
    /// changes nothing.
    pub fn checkout_idle(&self, key: &PoolRef) -> Option<Idle> {
        let mut entries = self.lock();
        let e = entries.get_mut(key).filter(|e| !e.retired)?;
        // A connection at home on this thread's event loop costs no system call to take.
        e.pool.checkout_idle(Idle::at_home)
    }

    /// A live idle connection of `key`'s pool, taken at once ([`Pools::checkout_idle`], then
    /// [`Pools::take_handed`]), closing dead ones on the way; `None` when there is none to take
    /// at once, or the one taken was lost (the waiting path, [`lease`], goes on from there).
    pub fn take_idle(self: &Arc<Self>, key: &PoolRef) -> Option<ServerConn> {
        while let Some(idle) = self.checkout_idle(key) {
            match self.take_handed(key, idle) {
                Handed::Live(conn) => return Some(conn),
                Handed::Dead => {}
                Handed::Lost(_) => return None,
            }
        }
        None
    }

    /// Makes `idle`, just handed out of `key`'s pool, the caller's: what its server said while
    /// idle is read first (a dead connection goes back to be closed), and it joins the calling
    /// thread's event loop (one that cannot is counted as lost). Every way a client takes an
    /// idle connection goes through here.
    pub fn take_handed(self: &Arc<Self>, key: &PoolRef, mut idle: Idle) -> Handed {
        if !idle.drain() {
            self.checkin(key, idle, false);
            return Handed::Dead;
        }
        match idle.lease() {
            Ok(conn) => Handed::Live(conn),
            Err(e) => {
                self.lost(key);
                Handed::Lost(e)
            }
        }
    }

    /// Asks `key`'s pool for a connection at `now` (creating the pool with `limits` for
    /// `backend`); `login` is kept for the connections the pool opens on its own.
    pub fn checkout(&self, key: &PoolRef, backend: &str, limits: Limits, login: &Login, now: Instant) -> Lease {
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        // max_db_connections: at the cap, a connection idle in another pool of the database makes
        // room (it is closed); without one, the client waits.
        let at_cap = limits.max_db.is_some_and(|max| db_total(&entries, key) >= max);
        let victim = at_cap
            .then(|| entries.iter().find(|(k, e)| *k != key && same_db(k, key) && e.pool.counts().0 > 0))
            .flatten()
            .map(|(k, _)| k.clone());
        // One lookup for a known pool (by its number, when the client has it); a new one is
        // numbered.
        let e = match entries.get_mut(key) {
            Some(e) => e,
            None => {
                entries.entry(key.numbered(self.next_pool.fetch_add(1, Ordering::Relaxed))).or_insert_with(|| Entry {
                    pool: Pool::new(limits),
                    backend: backend.to_string(),
                    waiters: HashMap::default(),
                    login: None,
                    welcome: None,
                    retired: false,
                    reconnect_before: None,
                })
            }
        };
        e.retired = false;
        // The first client's login serves the pool's own opens (kept, not cloned per checkout).
        if e.login.is_none() {
            e.login = Some(login.clone());
        }
        // A connection at home on this thread's event loop costs no system call to take.
        let mut checkout = e.pool.checkout_preferring(id, now, Idle::at_home);
        if matches!(checkout, Checkout::Open) && at_cap && victim.is_none() {
            e.pool.wait_instead(id, now);
            checkout = Checkout::Wait;
        }
        let lease = match checkout {
            Checkout::Ready(c) => Lease::Ready(c),
            Checkout::Open => Lease::Open(victim.and_then(|v| entries.get_mut(&v)?.pool.take_one_idle())),
            Checkout::Wait => {
                let (tx, rx) = oneshot::channel();
                e.waiters.insert(id, (tx, now));
                Lease::Wait(id, rx)
            }
        };
        drop(entries);
        lease
    }

    /// A pool's key and the login its first client gave, if any pool has one: what the
    /// read/write splitter's position reader logs in with (it has no credentials of its own).
    pub fn any_login(&self) -> Option<(PoolKey, Login)> {
        self.lock().iter().find_map(|(k, e)| e.login.clone().map(|l| (PoolKey::clone(k), l)))
    }

    /// `key` with its pool's number when the pool exists (else as it is): a client that keeps it
    /// finds its pool without comparing the key's strings.
    pub fn canonical(&self, key: PoolRef) -> PoolRef {
        match self.lock().get_key_value(&key) {
            Some((k, _)) => key.numbered(k.id()),
            None => key,
        }
    }

    /// The statement registry of every pool.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// What the first server of `key`'s pool reported at login, if one has logged in.
    pub fn welcome(&self, key: &PoolKey) -> Option<Vec<(String, String)>> {
        self.lock().get(key).and_then(|e| e.welcome.clone())
    }

    /// A connection in use was lost without coming back (it could not be deregistered).
    pub fn lost(&self, key: &PoolKey) {
        if let Some(e) = self.lock().get_mut(key) {
            e.pool.lost();
        }
    }

    /// The connection a client was told to open is its own now.
    pub fn opened_for_client(&self, key: &PoolKey, conn: &ServerConn) {
        if let Some(e) = self.lock().get_mut(key) {
            e.pool.opened_for_client();
            if e.welcome.is_none() {
                e.welcome = Some(conn.session.welcome.clone());
            }
        }
    }

    /// Opening a connection (for a client or the pool) failed.
    pub fn open_failed(&self, key: &PoolKey) {
        if let Some(e) = self.lock().get_mut(key) {
            e.pool.open_failed();
        }
    }

    /// A waiting client stopped waiting (it left, or its own bound passed).
    pub fn cancel_wait(&self, key: &PoolKey, id: WaiterId) {
        if let Some(e) = self.lock().get_mut(key) {
            e.pool.cancel_wait(id);
            e.waiters.remove(&id);
        }
    }

    /// A client gives a connection back: `reusable` when it ended at ReadyForQuery `I` and is
    /// alive. It goes to the longest waiter, or waits idle, or is closed.
    pub fn checkin(self: &Arc<Self>, key: &PoolRef, conn: Idle, reusable: bool) {
        self.checkin_at(key, conn, reusable, Instant::now());
    }

    /// [`Pools::checkin`] at `now` (the caller read the clock already).
    pub fn checkin_at(self: &Arc<Self>, key: &PoolRef, conn: Idle, reusable: bool, now: Instant) {
        let born = conn.born();
        let mut to_close = Vec::new();
        let mut open = None;
        let mut room = None;
        let capped;
        {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(key) else {
                drop(entries);
                conn.close();
                return;
            };
            capped = e.pool.limits().max_db.is_some();
            let reusable = reusable && !e.retired && e.reconnect_before.is_none_or(|t| born >= t);
            let first = e.pool.checkin(conn, born, reusable, now);
            match first {
                Checkin::Idle => {}
                // The connection opened for a waiter replaces this one: it goes first.
                Checkin::Close { conn, open_for_waiter: true } => {
                    open = e.login.clone();
                    room = Some(conn);
                }
                Checkin::Close { conn, open_for_waiter: false } => to_close.push(conn),
                Checkin::Handed(id, conn) => hand(e, id, conn, born),
            }
        }
        close_all(to_close);
        match open {
            Some(login) => self.spawn_open(key.clone(), login, room),
            None => close_all(room),
        }
        // Only a database with max_db_connections can have clients waiting for another pool.
        if capped {
            self.serve_capped_waiters(key);
        }
    }

    /// After a connection of `key`'s pool was given back or closed: a client of another pool of
    /// the database waiting only because of `max_db_connections` gets a connection opened for it,
    /// an idle one of this pool closed to make room when needed.
    fn serve_capped_waiters(self: &Arc<Self>, key: &PoolRef) {
        let mut entries = self.lock();
        let Some(max) = entries.get(key).and_then(|e| e.pool.limits().max_db) else { return };
        let Some(waiting) = entries
            .iter()
            .find(|(k, e)| {
                let (_, _, opening, waiting) = e.pool.counts();
                *k != key && same_db(k, key) && waiting > opening && e.pool.total() < e.pool.limits().size
            })
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let mut closed = None;
        if db_total(&entries, key) >= max {
            closed = entries.get_mut(key).and_then(|e| e.pool.take_one_idle());
            if closed.is_none() {
                return;
            }
        }
        let open = entries.get_mut(&waiting).and_then(|e| e.pool.open_for_waiter().then(|| e.login.clone()).flatten());
        drop(entries);
        match open {
            Some(login) => self.spawn_open(waiting, login, closed),
            None => close_all(closed),
        }
    }

    /// A connection the pool opened on its own: the longest waiter gets it, or it waits idle.
    fn opened(&self, key: &PoolKey, conn: Idle) {
        let born = conn.born();
        let mut entries = self.lock();
        let Some(e) = entries.get_mut(key) else {
            drop(entries);
            conn.close();
            return;
        };
        if e.welcome.is_none() {
            e.welcome = Some(conn.welcome().to_vec());
        }
        if let Some((id, conn)) = e.pool.opened(conn, Instant::now()) {
            hand(e, id, conn, born);
        }
    }

    /// Opens a connection for the pool (its waiters, `min_pool_size`) in the background, once
    /// `room` (a connection it replaces) is gone; it is already counted as opening.
    fn spawn_open(self: &Arc<Self>, key: PoolRef, login: Login, room: Option<Idle>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            close_all(room);
            self.open_failed(&key);
            return;
        };
        let pools = self.clone();
        handle.spawn(async move {
            if let Some(r) = room {
                r.close_and_wait(ROOM_TIMEOUT).await;
            }
            let login_as = ServerLogin::new(&key.user, login.credentials, login.secret);
            let opened = ServerConn::open(&key.addr, &key.database, &key.user, &key.extra, login_as, OPEN_TIMEOUT).await;
            match opened {
                Ok(conn) => pools.opened(&key, conn.idle()),
                Err(why) => {
                    tracing::warn!(database = %key.database, user = %key.user, backend = %key.addr, "opening a pooled server connection: {why}");
                    pools.open_failed(&key);
                }
            }
        });
    }

    /// What is due now in every pool: idle and old connections closed, waiters past
    /// `query_wait_timeout` refused (their channel closes), connections opened for waiters and
    /// `min_pool_size`; unused pools of backends that left are forgotten.
    pub fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let mut to_close = Vec::new();
        let mut to_open = Vec::new();
        {
            let mut entries = self.lock();
            for (key, e) in entries.iter_mut() {
                let due = e.pool.tick(now);
                to_close.extend(due.close);
                for id in due.timed_out {
                    e.waiters.remove(&id);
                }
                match &e.login {
                    Some(login) => to_open.extend((0..due.open).map(|_| (key.clone(), login.clone()))),
                    None => (0..due.open).for_each(|_| e.pool.open_failed()),
                }
            }
            // max_db_connections: what the pools asked for on their own must fit under the cap.
            to_open.retain(|(key, _)| {
                let over = entries
                    .get(key)
                    .and_then(|e| e.pool.limits().max_db)
                    .is_some_and(|max| db_total(&entries, key) > max);
                if over {
                    if let Some(e) = entries.get_mut(key) {
                        e.pool.open_failed();
                    }
                }
                !over
            });
            entries.retain(|_, e| !(e.retired && e.pool.is_unused()));
        }
        close_all(to_close);
        for (key, login) in to_open {
            self.spawn_open(key, login, None);
        }
    }

    /// Backends at `addrs` are the routes now: pools of any other backend close their idle
    /// connections, and close the others as they come back.
    pub fn retire_except(&self, addrs: &[String]) {
        let mut to_close = Vec::new();
        for (key, e) in self.lock().iter_mut() {
            if !addrs.contains(&key.addr) {
                if !e.retired {
                    tracing::info!(database = %key.database, user = %key.user, backend = %e.backend, "pool retired: its backend is no longer a route");
                }
                e.retired = true;
                to_close.extend(e.pool.take_idle());
            }
        }
        close_all(to_close);
    }

    /// RECONNECT (admin console), for `database` or every pool: idle connections close now,
    /// the others when they come back; new ones are opened as clients need them.
    pub fn reconnect(&self, database: Option<&str>) {
        let now = Instant::now();
        let mut to_close = Vec::new();
        for (key, e) in self.lock().iter_mut() {
            if database.is_none_or(|d| d == key.database) {
                e.reconnect_before = Some(now);
                to_close.extend(e.pool.take_idle());
            }
        }
        close_all(to_close);
    }

    /// Closes the idle connections of `database`'s pools (or every pool's): PAUSE.
    pub fn close_idle(&self, database: Option<&str>) {
        let mut to_close = Vec::new();
        for (key, e) in self.lock().iter_mut() {
            if database.is_none_or(|d| d == key.database) {
                to_close.extend(e.pool.take_idle());
            }
        }
        close_all(to_close);
    }

    /// The idle connections: pool, backend member, server pid, age.
    pub fn idle_servers(&self) -> Vec<(PoolKey, String, u32, Instant)> {
        let mut out = Vec::new();
        for (key, e) in self.lock().iter() {
            out.extend(e.pool.idle().map(|c| (PoolKey::clone(key), e.backend.clone(), c.pid(), c.born())));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// New limits for every pool, by database (a reload).
    pub fn set_limits(&self, limits: impl Fn(&str) -> Limits) {
        for (key, e) in self.lock().iter_mut() {
            e.pool.set_limits(limits(&key.database));
        }
    }

    /// Every pool's figures, sorted by key.
    pub fn figures(&self) -> Vec<PoolFigures> {
        let now = Instant::now();
        let mut out: Vec<PoolFigures> = self
            .lock()
            .iter()
            .map(|(key, e)| {
                let (idle, in_use, opening, waiting) = e.pool.counts();
                let max_wait =
                    e.waiters.values().map(|(_, since)| now.duration_since(*since)).max().unwrap_or_default();
                PoolFigures {
                    key: PoolKey::clone(key),
                    backend: e.backend.clone(),
                    idle,
                    in_use,
                    opening,
                    waiting,
                    max_wait,
                    retired: e.retired,
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// Whether two pools hold connections of the same database on the same server.
fn same_db(a: &PoolKey, b: &PoolKey) -> bool {
    a.database == b.database && a.addr == b.addr
}

/// Connections open or opening in every pool of `key`'s database on its server.
fn db_total(entries: &KeyMap<Entry>, key: &PoolKey) -> usize {
    entries.iter().filter(|(k, _)| same_db(k, key)).map(|(_, e)| e.pool.total()).sum()
}

/// Gives `conn` to waiter `id`; a waiter that left gives it straight back to the pool.
fn hand(e: &mut Entry, id: WaiterId, conn: Idle, born: Instant) {
    let mut next = Some((id, conn));
    while let Some((id, conn)) = next.take() {
        let back = match e.waiters.remove(&id) {
            Some((tx, _)) => tx.send(conn).err(),
            None => Some(conn),
        };
        if let Some(conn) = back {
            match e.pool.checkin(conn, born, true, Instant::now()) {
                Checkin::Handed(id, conn) => next = Some((id, conn)),
                Checkin::Close { conn, .. } => conn.close(),
                Checkin::Idle => {}
            }
        }
    }
}

/// Why no connection could be leased.
#[derive(Debug)]
pub enum Leased {
    /// `query_wait_timeout` passed.
    TimedOut,
    /// Opening one failed.
    Open(OpenError),
}

/// A leased connection.
#[derive(Debug)]
pub struct Taken {
    /// The connection, registered with the calling task's event loop.
    pub conn: ServerConn,
    /// It was idle in the pool when asked for at `now`: the client did not wait.
    pub at_once: bool,
}

/// A connection from `key`'s pool (created with `limits` for the member `backend`) for a client
/// asking at `now`, registered with the calling task's event loop: an idle one whose server said
/// nothing while idle, a new one opened with `login`, or the next one given back. A dead idle
/// connection is closed and the next one tried.
pub async fn lease(
    pools: &Arc<Pools>,
    key: &PoolRef,
    backend: &str,
    limits: Limits,
    login: &Login,
    connect_timeout: Duration,
    mut now: Instant,
) -> Result<Taken, Leased> {
    let mut at_once = true;
    loop {
        let lease = pools.checkout(key, backend, limits, login, now);
        let idle = match lease {
            Lease::Ready(idle) => idle,
            Lease::Open(room) => {
                if let Some(r) = room {
                    r.close_and_wait(ROOM_TIMEOUT).await;
                }
                let login_as = ServerLogin::new(&key.user, login.credentials.clone(), login.secret.clone());
                let opened =
                    ServerConn::open(&key.addr, &key.database, &key.user, &key.extra, login_as, connect_timeout).await;
                return match opened {
                    Ok(conn) => {
                        pools.opened_for_client(key, &conn);
                        Ok(Taken { conn, at_once: false })
                    }
                    Err(e) => {
                        pools.open_failed(key);
                        Err(Leased::Open(e))
                    }
                };
            }
            Lease::Wait(id, rx) => match Waiting::new(pools, key, id, rx).wait().await {
                Some(idle) => {
                    at_once = false;
                    idle
                }
                None => return Err(Leased::TimedOut),
            },
        };
        match pools.take_handed(key, idle) {
            Handed::Live(conn) => return Ok(Taken { conn, at_once }),
            Handed::Dead => now = Instant::now(),
            Handed::Lost(e) => {
                return Err(Leased::Open(OpenError::Server(format!("taking a pooled connection: {e}"))));
            }
        }
    }
}

/// What an idle connection handed out of its pool turned out to be.
#[derive(Debug)]
pub enum Handed {
    /// Alive, and the caller's, on the calling task's event loop.
    Live(ServerConn),
    /// Its server closed it or spoke out of turn while idle: closed; ask the pool again.
    Dead,
    /// It could not join the calling thread's event loop: counted as lost.
    Lost(std::io::Error),
}

/// A client waiting in a pool's queue; dropped before it got its connection, it leaves the
/// queue, and a connection handed to it meanwhile goes back to the pool.
pub struct Waiting<'a> {
    pools: &'a Arc<Pools>,
    key: &'a PoolRef,
    id: WaiterId,
    rx: Option<oneshot::Receiver<Idle>>,
}

impl<'a> Waiting<'a> {
    /// Waiter `id` of `key`'s pool, to be served on `rx`.
    pub fn new(pools: &'a Arc<Pools>, key: &'a PoolRef, id: WaiterId, rx: oneshot::Receiver<Idle>) -> Waiting<'a> {
        Waiting { pools, key, id, rx: Some(rx) }
    }

    /// The connection, or `None` when the wait timed out (`query_wait_timeout`).
    pub async fn wait(&mut self) -> Option<Idle> {
        let got = self.rx.as_mut()?.await;
        self.rx = None;
        got.ok()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            // Out of the queue first: after this nobody hands it anything.
            self.pools.cancel_wait(self.key, self.id);
            if let Ok(conn) = rx.try_recv() {
                self.pools.checkin(self.key, conn, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_key(db: &str) -> PoolKey {
        PoolKey { database: db.into(), user: "app".into(), addr: "127.0.0.1:5432".into(), extra: Vec::new() }
    }

    fn key(db: &str) -> PoolRef {
        PoolRef::new(raw_key(db))
    }

    fn login() -> Login {
        Login { credentials: Credentials::None, secret: None }
    }

    fn limits(size: usize) -> Limits {
        Limits { size, ..Limits::default() }
    }

    /// An idle connection over a fresh socket pair (the server end is kept open).
    fn conn(pid: u32, ends: &mut Vec<std::net::TcpStream>) -> Idle {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        ends.push(l.accept().unwrap().0);
        Idle::for_test(a, pid)
    }

    fn pid(lease: Lease) -> Option<u32> {
        match lease {
            Lease::Ready(c) => Some(c.pid()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_connection_given_back_goes_to_the_longest_waiter_then_to_the_idle_list() {
        let pools = Arc::new(Pools::default());
        let mut ends = Vec::new();
        let k = key("db");
        assert!(
            matches!(pools.checkout(&k, "pg1", limits(1), &login(), Instant::now()), Lease::Open(_)),
            "empty pool: open one"
        );
        pools.lock().get_mut(&k).unwrap().pool.opened_for_client();
        // The pool is full: the next two clients wait, in order.
        let Lease::Wait(first, mut first_rx) = pools.checkout(&k, "pg1", limits(1), &login(), Instant::now()) else {
            panic!()
        };
        let Lease::Wait(_, mut second_rx) = pools.checkout(&k, "pg1", limits(1), &login(), Instant::now()) else {
            panic!()
        };
        pools.checkin(&k, conn(7, &mut ends), true);
        assert_eq!(first_rx.try_recv().map(|c| c.pid()).ok(), Some(7), "the first waiter gets it");
        assert!(second_rx.try_recv().is_err());
        let _ = first;
        // The first gives it back: the second gets it; it gives it back: idle.
        pools.checkin(&k, conn(8, &mut ends), true);
        assert_eq!(second_rx.try_recv().map(|c| c.pid()).ok(), Some(8));
        pools.checkin(&k, conn(9, &mut ends), true);
        assert_eq!(
            pid(pools.checkout(&k, "pg1", limits(1), &login(), Instant::now())),
            Some(9),
            "idle, then handed out"
        );
    }

    #[tokio::test]
    async fn a_waiter_that_left_gives_its_connection_back() {
        let pools = Arc::new(Pools::default());
        let mut ends = Vec::new();
        let k = key("db");
        let _ = pools.checkout(&k, "pg1", limits(1), &login(), Instant::now());
        pools.lock().get_mut(&k).unwrap().pool.opened_for_client();
        let Lease::Wait(id, rx) = pools.checkout(&k, "pg1", limits(1), &login(), Instant::now()) else { panic!() };
        drop(Waiting::new(&pools, &k, id, rx));
        pools.checkin(&k, conn(5, &mut ends), true);
        assert_eq!(
            pid(pools.checkout(&k, "pg1", limits(1), &login(), Instant::now())),
            Some(5),
            "idle again, not lost"
        );
    }

    fn user(db: &str, user: &str) -> PoolRef {
        PoolRef::new(PoolKey { user: user.into(), ..raw_key(db) })
    }

    #[tokio::test]
    async fn max_db_connections_bounds_the_pools_of_a_database_together() {
        let pools = Arc::new(Pools::default());
        let mut ends = Vec::new();
        let capped = Limits { max_db: Some(1), ..limits(5) };
        let (alice, bob) = (user("db", "alice"), user("db", "bob"));
        // Alice's pool holds the database's only connection, idle.
        assert!(matches!(pools.checkout(&alice, "pg1", capped, &login(), Instant::now()), Lease::Open(_)));
        pools.lock().get_mut(&alice).unwrap().pool.opened_for_client();
        pools.checkin(&alice, conn(1, &mut ends), true);
        // Bob may open one once alice's idle connection, handed to him to close, is gone.
        let Lease::Open(Some(room)) = pools.checkout(&bob, "pg1", capped, &login(), Instant::now()) else {
            panic!("bob opens one in place of alice's")
        };
        assert_eq!(room.pid(), 1);
        drop(room);
        pools.lock().get_mut(&bob).unwrap().pool.opened_for_client();
        let counts = |k: &PoolKey| {
            pools.figures().into_iter().find(|f| f.key == *k).map(|f| (f.idle, f.in_use, f.opening, f.waiting))
        };
        assert_eq!(counts(&alice), Some((0, 0, 0, 0)), "evicted");
        // Alice now waits: bob's connection is the database's one.
        let Lease::Wait(_, _rx) = pools.checkout(&alice, "pg1", capped, &login(), Instant::now()) else {
            panic!("alice waits")
        };
        assert_eq!(counts(&alice), Some((0, 0, 0, 1)));
        // Bob gives his back: it is closed, and one opened for alice.
        pools.checkin(&bob, conn(2, &mut ends), true);
        assert_eq!(counts(&bob), Some((0, 0, 0, 0)));
        assert_eq!(counts(&alice), Some((0, 0, 1, 1)), "opening for the waiter");
        // Other databases are not bound by it.
        assert!(matches!(pools.checkout(&key("other"), "pg1", capped, &login(), Instant::now()), Lease::Open(_)));
    }

    #[tokio::test]
    async fn a_client_s_own_handle_takes_its_pool_s_number_and_finds_that_pool() {
        let pools = Arc::new(Pools::default());
        assert_eq!(pools.canonical(key("db")).id(), 0, "no pool yet: no number");
        let _ = pools.checkout(&key("db"), "pg1", limits(2), &login(), Instant::now());
        let mine = pools.canonical(key("db"));
        assert_ne!(mine.id(), 0);
        assert_eq!(pools.canonical(key("db")).id(), mine.id(), "one number per pool");
        let _ = pools.checkout(&key("other"), "pg1", limits(2), &login(), Instant::now());
        assert_ne!(pools.canonical(key("other")).id(), mine.id());
        let _ = pools.checkout(&mine, "pg1", limits(2), &login(), Instant::now());
        let opening: Vec<_> = pools.figures().iter().map(|f| (f.key.database.clone(), f.opening)).collect();
        assert_eq!(opening, [("db".to_string(), 2), ("other".to_string(), 1)], "the same pool, by its number");
    }

    #[tokio::test]
    async fn a_retired_or_reconnected_pool_closes_what_comes_back() {
        let mut ends = Vec::new();
        let in_use = |k: &PoolRef| {
            let pools = Arc::new(Pools::default());
            let _ = pools.checkout(k, "pg1", limits(2), &login(), Instant::now());
            pools.lock().get_mut(k).unwrap().pool.opened_for_client();
            pools
        };
        let k = key("db");
        // The backend left the routes: its servers close as they come back.
        let pools = in_use(&k);
        pools.retire_except(&["10.0.0.9:5432".to_string()]);
        pools.checkin(&k, conn(1, &mut ends), true);
        assert_eq!(pools.figures().first().map(|f| (f.idle, f.in_use, f.retired)), Some((0, 0, true)));
        // Still a route: it stays.
        let pools = in_use(&k);
        pools.retire_except(std::slice::from_ref(&k.addr));
        pools.checkin(&k, conn(2, &mut ends), true);
        assert_eq!(pools.figures().first().map(|f| (f.idle, f.retired)), Some((1, false)));
        // RECONNECT: a connection opened before it is closed when it comes back; a newer one stays.
        let pools = in_use(&k);
        let old = conn(3, &mut ends);
        pools.reconnect(Some("db"));
        pools.checkin(&k, old, true);
        assert_eq!(pools.figures().first().map(|f| f.idle), Some(0));
        let _ = pools.checkout(&k, "pg1", limits(2), &login(), Instant::now());
        pools.lock().get_mut(&k).unwrap().pool.opened_for_client();
        pools.checkin(&k, conn(4, &mut ends), true);
        assert_eq!(pools.figures().first().map(|f| f.idle), Some(1));
    }
}
