//! One pool of server connections (one database, user and server), sans-IO: which idle
//! connection a client gets, when a new one may be opened, who waits, in which order, for how
//! long, and which connections are closed for age or idleness. The caller owns the sockets and
//! the clock; the pool holds connection values `S` and instants, and decides.
//!
//! PgBouncer's knobs, with its meanings: `default_pool_size` connections at most, plus
//! `reserve_pool_size` more once a client has waited `reserve_pool_timeout`; `min_pool_size`
//! kept open; a connection closed when idle for `server_idle_timeout` or older than
//! `server_lifetime` (when it is next idle); a client waiting longer than `query_wait_timeout`
//! is refused. Waiting clients are served first come, first served, and a released connection
//! goes straight to the longest waiter.
//!
//! Invariants: the pool never has more connections open or opening than its size (plus the
//! reserve while in use); a connection is given to one client at a time; a waiter is served or
//! timed out exactly once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The pool's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `default_pool_size`.
    pub size: usize,
    /// `min_pool_size`.
    pub min_size: usize,
    /// `reserve_pool_size`.
    pub reserve: usize,
    /// `reserve_pool_timeout`.
    pub reserve_after: Duration,
    /// `server_idle_timeout` (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// `server_lifetime` (`None`: unlimited).
    pub lifetime: Option<Duration>,
    /// `query_wait_timeout` (`None`: wait for ever).
    pub wait_timeout: Option<Duration>,
    /// `max_db_connections`: the most connections of every pool of this database on this server
    /// together (`None`: unlimited); kept by the caller, which sees all the pools.
    pub max_db: Option<usize>,
}

impl Default for Limits {
    /// PgBouncer's defaults.
    fn default() -> Limits {
        Limits {
            size: 20,
            min_size: 0,
            reserve: 0,
            reserve_after: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            lifetime: Some(Duration::from_secs(3600)),
            wait_timeout: Some(Duration::from_secs(120)),
            max_db: None,
        }
    }
}

/// A client waiting for a connection, as the caller names it.
pub type WaiterId = u64;

/// What a client asking for a connection gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Checkout<S> {
    /// This idle connection.
    Ready(S),
    /// Open a new connection for it (already counted; report with [`Pool::opened_for_client`]
    /// or [`Pool::open_failed`]).
    Open,
    /// Wait: it is queued and will be given a connection by [`Pool::checkin`] or
    /// [`Pool::opened`], or timed out by [`Pool::tick`].
    Wait,
}

struct Idle<S> {
    conn: S,
    since: Instant,
    born: Instant,
}

struct Waiter {
    id: WaiterId,
    since: Instant,
}

/// What [`Pool::tick`] found due.
#[derive(Debug, PartialEq, Eq)]
pub struct Due<S> {
    /// Connections to close (idle too long, too old).
    pub close: Vec<S>,
    /// Waiters that waited past `query_wait_timeout`: refuse them.
    pub timed_out: Vec<WaiterId>,
    /// How many new connections to open (for `min_pool_size`, or for waiters now allowed the
    /// reserve); each is counted as opening.
    pub open: usize,
}

/// One pool.
pub struct Pool<S> {
    limits: Limits,
    idle: VecDeque<Idle<S>>,
    /// Connections given to clients.
    in_use: usize,
    /// Connections being opened.
    opening: usize,
    waiters: VecDeque<Waiter>,
}

impl<S> Pool<S> {
    /// An empty pool.
    pub fn new(limits: Limits) -> Pool<S> {
        Pool { limits, idle: VecDeque::new(), in_use: 0, opening: 0, waiters: VecDeque::new() }
    }

    /// Connections open or opening.
    pub fn total(&self) -> usize {
        self.idle.len() + self.in_use + self.opening
    }

    /// Idle, in use, opening, waiting (for `SHOW POOLS`).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (self.idle.len(), self.in_use, self.opening, self.waiters.len())
    }

    /// The most connections allowed now: the size, plus the reserve once the longest waiter has
    /// waited `reserve_after`.
    fn allowed(&self, now: Instant) -> usize {
        let reserve = self.waiters.front().is_some_and(|w| now.duration_since(w.since) >= self.limits.reserve_after);
        self.limits.size + if reserve { self.limits.reserve } else { 0 }
    }

    /// The connection opened for a client told [`Checkout::Open`] is its own now.
    pub fn opened_for_client(&mut self) {
        self.opening = self.opening.saturating_sub(1);
        self.in_use += 1;
    }

    /// Client `id` asks for a connection at `now`, with no preference (tests).
    #[cfg(test)]
    pub fn checkout(&mut self, id: WaiterId, now: Instant) -> Checkout<S> {
        self.checkout_preferring(id, now, |_| false)
    }

    /// Client `id` asks for a connection at `now`, and gets an idle one that `prefer`s when there
    /// is one (the one idle the shortest: its server is the warmest), else the one idle the
    /// shortest.
    pub fn checkout_preferring(&mut self, id: WaiterId, now: Instant, prefer: impl Fn(&S) -> bool) -> Checkout<S> {
        if let Some(conn) = self.checkout_idle(prefer) {
            return Checkout::Ready(conn);
        }
        // Nobody jumps the queue: with waiters, a newcomer waits behind them.
        if self.waiters.is_empty() && self.total() < self.allowed(now) {
            self.opening += 1;
            return Checkout::Open;
        }
        self.waiters.push_back(Waiter { id, since: now });
        Checkout::Wait
    }

    /// An idle connection for a client when one can be had without waiting or opening (no one
    /// waits before it): one that `prefer`s, the one idle the shortest among them (its server is
    /// the warmest), else the one idle the shortest. `None` changes nothing.
    pub fn checkout_idle(&mut self, prefer: impl Fn(&S) -> bool) -> Option<S> {
        // Nobody jumps the queue: with waiters, a newcomer waits behind them.
        if !self.waiters.is_empty() {
            return None;
        }
        let taken = match self.idle.iter().rposition(|i| prefer(&i.conn)) {
            Some(at) => self.idle.remove(at),
            None => self.idle.pop_back(),
        }?;
        self.in_use += 1;
        Some(taken.conn)
    }

    /// A connection the pool asked for opened ([`Due::open`], [`Checkin::Close`]): the longest
    /// waiter, if any, gets it (`Some`); else it is idle.
    pub fn opened(&mut self, conn: S, now: Instant) -> Option<(WaiterId, S)> {
        self.opening = self.opening.saturating_sub(1);
        self.give(conn, now, now)
    }

    /// Opening a connection failed; the caller refuses the client it was for (if any).
    pub fn open_failed(&mut self) {
        self.opening = self.opening.saturating_sub(1);
    }

    /// A client gave its connection back (`reusable`: its session ended cleanly, at
    /// ReadyForQuery `I`, and the server is alive). The longest waiter gets it, or it is idle;
    /// a connection past its lifetime, or not reusable, is returned for closing instead.
    pub fn checkin(&mut self, conn: S, born: Instant, reusable: bool, now: Instant) -> Checkin<S> {
        self.in_use = self.in_use.saturating_sub(1);
        let too_old = self.limits.lifetime.is_some_and(|l| now.duration_since(born) >= l);
        // After a reload to a smaller size, what comes back above it is closed.
        if reusable && !too_old && self.total() + 1 > self.allowed(now) {
            return Checkin::Close { conn, open_for_waiter: false };
        }
        if !reusable || too_old {
            // Its place may go to a waiter, through a new connection.
            let open = !self.waiters.is_empty() && self.total() < self.allowed(now);
            if open {
                self.opening += 1;
            }
            return Checkin::Close { conn, open_for_waiter: open };
        }
        match self.give(conn, born, now) {
            Some((id, conn)) => Checkin::Handed(id, conn),
            None => Checkin::Idle,
        }
    }

    fn give(&mut self, conn: S, born: Instant, now: Instant) -> Option<(WaiterId, S)> {
        match self.waiters.pop_front() {
            Some(w) => {
                self.in_use += 1;
                Some((w.id, conn))
            }
            None => {
                self.idle.push_back(Idle { conn, since: now, born });
                None
            }
        }
    }

    /// New limits (a reload): they apply from the next checkout, checkin and tick; connections
    /// above a smaller size are closed as they come back.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The idle connections, oldest idle first.
    pub fn idle(&self) -> impl Iterator<Item = &S> {
        self.idle.iter().map(|i| &i.conn)
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Client `id`, just told [`Checkout::Open`], must wait instead (the database's connections
    /// are all taken elsewhere): the opening is taken back and the client queued.
    pub fn wait_instead(&mut self, id: WaiterId, now: Instant) {
        self.opening = self.opening.saturating_sub(1);
        self.waiters.push_back(Waiter { id, since: now });
    }

    /// Whether a waiter has no connection opening for it; if so one is counted as opening (open
    /// it and report with [`Pool::opened`] or [`Pool::open_failed`]).
    pub fn open_for_waiter(&mut self) -> bool {
        let short = self.waiters.len() > self.opening;
        if short {
            self.opening += 1;
        }
        short
    }

    /// Takes the connection idle the longest, to close it (for another pool of the database).
    pub fn take_one_idle(&mut self) -> Option<S> {
        self.idle.pop_front().map(|i| i.conn)
    }

    /// A connection in use disappeared without coming back.
    pub fn lost(&mut self) {
        self.in_use = self.in_use.saturating_sub(1);
    }

    /// Takes every idle connection, to close them (RECONNECT, a backend that left the routes).
    pub fn take_idle(&mut self) -> Vec<S> {
        self.idle.drain(..).map(|i| i.conn).collect()
    }

    /// Whether it holds nothing: no connection open, opening or in use, and nobody waiting.
    pub fn is_unused(&self) -> bool {
        self.total() == 0 && self.waiters.is_empty()
    }

    /// A waiting client went away (it disconnected): it leaves the queue.
    pub fn cancel_wait(&mut self, id: WaiterId) {
        self.waiters.retain(|w| w.id != id);
    }

    /// What is due at `now`: idle connections to close, waiters to refuse, connections to open.
    pub fn tick(&mut self, now: Instant) -> Due<S> {
        let mut close = Vec::new();
        let limits = self.limits;
        let mut keep = VecDeque::new();
        while let Some(i) = self.idle.pop_front() {
            let idle_long = limits.idle_timeout.is_some_and(|t| now.duration_since(i.since) >= t);
            let old = limits.lifetime.is_some_and(|l| now.duration_since(i.born) >= l);
            // Idle connections above min_pool_size go when idle too long; any goes when too old.
            if old || (idle_long && keep.len() + self.in_use + self.opening >= limits.min_size) {
                close.push(i.conn);
            } else {
                keep.push_back(i);
            }
        }
        self.idle = keep;
        let mut timed_out = Vec::new();
        if let Some(t) = limits.wait_timeout {
            while self.waiters.front().is_some_and(|w| now.duration_since(w.since) >= t) {
                timed_out.extend(self.waiters.pop_front().map(|w| w.id));
            }
        }
        // Open for the waiters (the reserve may be allowed now) and up to min_pool_size.
        let want = self.waiters.len().saturating_sub(self.opening).max(limits.min_size.saturating_sub(self.total()));
        let room = self.allowed(now).saturating_sub(self.total());
        let open = want.min(room);
        self.opening += open;
        Due { close, timed_out, open }
    }
}

/// What became of a connection given back.
#[derive(Debug, PartialEq, Eq)]
pub enum Checkin<S> {
    /// Given to this waiting client.
    Handed(WaiterId, S),
    /// Kept idle.
    Idle,
    /// To be closed; when `open_for_waiter`, a new connection is to be opened for the longest
    /// waiter (already counted as opening).
    Close {
        /// The connection.
        conn: S,
        /// Open a replacement for a waiter.
        open_for_waiter: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(size: usize) -> Limits {
        Limits { size, wait_timeout: Some(Duration::from_secs(10)), ..Limits::default() }
    }

    #[test]
    fn a_client_gets_the_idle_connection_it_prefers_else_the_warmest() {
        let t0 = Instant::now();
        let mut p: Pool<&str> = Pool::new(limits(3));
        for _ in 0..3 {
            assert_eq!(p.checkout(0, t0), Checkout::Open);
            p.opened_for_client();
        }
        for c in ["a1", "b1", "a2"] {
            assert_eq!(p.checkin(c, t0, true, t0), Checkin::Idle);
        }
        let on_b = |c: &&str| c.starts_with('b');
        assert_eq!(p.checkout_preferring(1, t0, on_b), Checkout::Ready("b1"), "the preferred one, not the last");
        assert_eq!(p.checkout_preferring(2, t0, on_b), Checkout::Ready("a2"), "none preferred: idle the shortest");
        assert_eq!(p.counts(), (1, 2, 0, 0));
    }

    #[test]
    fn clients_get_idle_connections_then_new_ones_then_wait_in_order() {
        let t0 = Instant::now();
        let mut p: Pool<&str> = Pool::new(limits(2));
        assert_eq!(p.checkout(1, t0), Checkout::Open);
        p.opened_for_client(); // client 1 holds "a"
        assert_eq!(p.checkout(2, t0), Checkout::Open);
        assert_eq!(p.checkout(3, t0), Checkout::Wait, "two open or opening: the size");
        assert_eq!(p.checkout(4, t0), Checkout::Wait);
        p.open_failed(); // client 2's connection could not be opened: it is refused
        assert_eq!(p.counts(), (0, 1, 0, 2));
        // The pool opens one for its waiters; the longest waiter gets it.
        assert_eq!(p.tick(t0).open, 1);
        assert_eq!(p.opened("b", t0), Some((3, "b")));
        // Client 1 is done: its connection goes to waiter 4, not to the idle list.
        assert_eq!(p.checkin("a", t0, true, t0), Checkin::Handed(4, "a"));
        assert_eq!(p.checkin("b", t0, true, t0), Checkin::Idle);
        assert_eq!(p.checkin("a", t0, true, t0), Checkin::Idle);
        assert_eq!(p.checkout(5, t0), Checkout::Ready("a"), "the most recently used first");
        assert_eq!(p.counts(), (1, 1, 0, 0));
    }

    #[test]
    fn an_idle_connection_is_had_at_once_and_a_miss_changes_nothing() {
        let t0 = Instant::now();
        let mut p: Pool<&str> = Pool::new(limits(2));
        let any = |_: &&str| false;
        assert_eq!(p.checkout_idle(any), None, "nothing idle: the caller opens or waits");
        assert_eq!(p.counts(), (0, 0, 0, 0), "and nothing was counted");
        for _ in 0..2 {
            assert_eq!(p.checkout(0, t0), Checkout::Open);
            p.opened_for_client();
        }
        for c in ["a", "b"] {
            assert_eq!(p.checkin(c, t0, true, t0), Checkin::Idle);
        }
        assert_eq!(p.checkout_idle(|c: &&str| *c == "a"), Some("a"), "the preferred one");
        assert_eq!(p.checkout_idle(any), Some("b"), "else the warmest");
        assert_eq!(p.counts(), (0, 2, 0, 0), "both counted in use");
        assert_eq!(p.checkout(1, t0), Checkout::Wait, "both in use: client 1 waits");
        assert_eq!(p.checkout_idle(any), None);
        assert_eq!(p.counts(), (0, 2, 0, 1), "the miss neither queued nor opened anything");
        assert_eq!(p.checkin("a", t0, true, t0), Checkin::Handed(1, "a"), "the waiter is served first");
    }

    #[test]
    fn a_newcomer_does_not_jump_the_queue() {
        let t0 = Instant::now();
        let mut p: Pool<&str> = Pool::new(limits(1));
        assert_eq!(p.checkout(1, t0), Checkout::Open);
        p.opened_for_client();
        assert_eq!(p.checkout(2, t0), Checkout::Wait);
        // Client 1's session ended uncleanly: the connection is closed and a new one opened for
        // the waiter, who is then first.
        assert_eq!(p.checkin("a", t0, false, t0), Checkin::Close { conn: "a", open_for_waiter: true });
        assert_eq!(p.checkout(3, t0), Checkout::Wait, "behind client 2");
        assert_eq!(p.opened("b", t0), Some((2, "b")));
    }

    #[test]
    fn waiters_time_out_and_the_reserve_opens_after_its_timeout() {
        let t0 = Instant::now();
        let mut p: Pool<&str> = Pool::new(Limits { reserve: 1, ..limits(1) });
        assert_eq!(p.checkout(1, t0), Checkout::Open);
        p.opened_for_client();
        assert_eq!(p.checkout(2, t0), Checkout::Wait);
        let due = p.tick(t0 + Duration::from_secs(1));
        assert_eq!(due, Due { close: vec![], timed_out: vec![], open: 0 }, "the reserve waits 5 s");
        let due = p.tick(t0 + Duration::from_secs(6));
        assert_eq!(due.open, 1, "waited past reserve_pool_timeout: one more connection");
        assert_eq!(p.opened("r", t0 + Duration::from_secs(6)), Some((2, "r")));
        assert_eq!(p.checkout(3, t0 + Duration::from_secs(6)), Checkout::Wait);
        let due = p.tick(t0 + Duration::from_secs(17));
        assert_eq!(due.timed_out, vec![3], "past query_wait_timeout");
        assert_eq!(p.counts(), (0, 2, 0, 0));
    }

    #[test]
    fn idle_and_old_connections_are_closed_and_min_pool_size_kept() {
        let t0 = Instant::now();
        let mut p: Pool<&str> = Pool::new(Limits {
            min_size: 1,
            idle_timeout: Some(Duration::from_secs(60)),
            lifetime: Some(Duration::from_secs(3600)),
            ..limits(3)
        });
        let due = p.tick(t0);
        assert_eq!(due.open, 1, "min_pool_size");
        assert_eq!(p.opened("m", t0), None);
        assert_eq!(p.checkout(1, t0), Checkout::Ready("m"));
        assert_eq!(p.checkout(2, t0), Checkout::Open);
        p.opened_for_client(); // client 2 holds "x"
        assert_eq!(p.checkin("m", t0, true, t0), Checkin::Idle);
        assert_eq!(p.checkin("x", t0, true, t0), Checkin::Idle);
        let due = p.tick(t0 + Duration::from_secs(61));
        assert_eq!(due.close.len(), 1, "idle too long, above min_pool_size: {due:?}");
        assert_eq!(p.counts().0, 1);
        // Past server_lifetime even the last one goes, and is replaced for min_pool_size.
        let due = p.tick(t0 + Duration::from_secs(3601));
        assert_eq!((due.close.len(), due.open), (1, 1));
        // A connection given back past its lifetime is closed rather than kept.
        assert_eq!(p.opened("n", t0), None);
        p.checkout(3, t0 + Duration::from_secs(3602));
        assert_eq!(
            p.checkin("n", t0, true, t0 + Duration::from_secs(3602)),
            Checkin::Close { conn: "n", open_for_waiter: false }
        );
    }

    #[test]
    fn a_client_that_leaves_the_queue_is_not_served() {
        let t0 = Instant::now();
        let mut p: Pool<&str> = Pool::new(limits(1));
        assert_eq!(p.checkout(1, t0), Checkout::Open);
        p.opened_for_client();
        p.checkout(2, t0);
        p.checkout(3, t0);
        p.cancel_wait(2);
        assert_eq!(p.checkin("a", t0, true, t0), Checkin::Handed(3, "a"));
    }

    proptest::proptest! {
        /// Whatever clients do, the pool never has more connections than its size plus reserve,
        /// and its counts never go negative or lose a connection.
        #[test]
        fn never_over_its_limits(ops in proptest::collection::vec((0u8..6, 0u64..8, 0u64..30), 0..60)) {
            let t0 = Instant::now();
            let lim = Limits { size: 3, reserve: 1, min_size: 1, ..limits(3) };
            let mut p: Pool<u32> = Pool::new(lim);
            let mut held: Vec<u32> = Vec::new();
            let mut next = 0u32;
            for (op, id, secs) in ops {
                let now = t0 + Duration::from_secs(secs);
                match op {
                    0 | 1 => match p.checkout(id, now) {
                        Checkout::Ready(c) => held.push(c),
                        Checkout::Open => { p.opened_for_client(); next += 1; held.push(next) }
                        Checkout::Wait => {}
                    },
                    2 => if p.counts().2 > 0 { next += 1; if let Some((_, c)) = p.opened(next, now) { held.push(c) } },
                    3 => if let Some(c) = held.pop() { if let Checkin::Handed(_, c) = p.checkin(c, t0, id % 2 == 0, now) { held.push(c) } },
                    4 => { let _ = p.tick(now); }
                    _ => p.cancel_wait(id),
                }
                proptest::prop_assert!(p.total() <= lim.size + lim.reserve, "{:?}", p.counts());
                proptest::prop_assert_eq!(p.counts().1, held.len());
            }
        }
    }
}
