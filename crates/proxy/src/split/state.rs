//! Read/write splitting as the whole proxy holds it: the settings, the classified statements,
//! each database's function catalog, and the counts the admin port shows. Shared by every
//! session; no I/O here (a session that finds a catalog missing or stale loads it and hands it
//! back with [`Splitting::catalog_loaded`]).
//!
//! Invariant: at most one load of a database's catalog is under way at a time; until one
//! succeeds, that database's function calls count as writes (they run on the primary).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_config::proxy_split::LoadBalance;

use super::cache::StatementCache;
use super::classify::{Class, Facts};
use super::functions::{BadPattern, Catalog, Functions, Lists};
use super::positions::Positions;

/// How long a loaded catalog is trusted before it is read again (DDL through the proxy makes it
/// stale at once; this covers functions created or altered by others).
pub const CATALOG_MAX_AGE: Duration = Duration::from_secs(60);

/// After a failed load, how long before another is tried.
const CATALOG_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Slot {
    catalog: Option<Arc<Catalog>>,
    /// When the catalog was read, or a load last failed.
    at: Option<Instant>,
    loading: bool,
    stale: bool,
}

/// Statements sent by the splitter, by where they went.
#[derive(Debug, Default)]
pub struct SplitCounts {
    /// Statements (or pipeline segments) sent to a replica.
    pub to_replica: AtomicU64,
    /// Statements sent to the primary.
    pub to_primary: AtomicU64,
    /// Of those, reads sent to the primary because no replica had replayed the session's writes.
    pub reads_kept_on_primary: AtomicU64,
    /// Statements sent, by backend address: a counter each, which a session keeps while it
    /// sends to the same backend, so the map is locked once per change of backend, not per
    /// statement.
    per_backend: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

/// What the admin port shows of the splitting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitFigures {
    /// Statements (or pipeline segments) sent to a replica, and to the primary.
    pub to_replica: u64,
    /// Statements sent to the primary.
    pub to_primary: u64,
    /// Reads kept on the primary by read-your-writes.
    pub reads_kept_on_primary: u64,
    /// Statements sent, by backend address, sorted.
    pub per_backend: Vec<(String, u64)>,
    /// The statement cache's counts.
    pub cache: super::cache::CacheFigures,
}

/// The proxy's read/write splitting.
#[derive(Debug)]
pub struct Splitting {
    /// The settings in force.
    pub settings: LoadBalance,
    lists: Lists,
    /// Classified statement texts.
    pub cache: StatementCache,
    catalogs: Mutex<HashMap<String, Slot>>,
    /// Where statements went.
    pub counts: SplitCounts,
    /// The members' WAL positions, kept by [`super::monitor`].
    pub positions: Mutex<Positions>,
}

impl Splitting {
    /// The splitting `settings` ask for.
    pub fn new(settings: LoadBalance) -> Result<Splitting, BadPattern> {
        let lists = Lists::new(&settings.write_functions, &settings.read_only_functions)?;
        Ok(Splitting {
            settings,
            lists,
            cache: StatementCache::default(),
            catalogs: Mutex::new(HashMap::new()),
            counts: SplitCounts::default(),
            positions: Mutex::new(Positions::default()),
        })
    }

    /// The class of `text` in `database` now, and whether the caller should load that database's
    /// catalog (none yet, or stale, and no load under way).
    pub fn class_of(&self, database: &str, text: &str, now: Instant) -> (Arc<Facts>, Class, bool) {
        let facts = self.cache.facts(text);
        if facts.functions.is_empty() || facts.class != Class::Read {
            return (facts.clone(), facts.class, false);
        }
        let (catalog, load) = self.catalog(database, now);
        let class = facts.class_with(&Functions { lists: &self.lists, catalog: catalog.as_deref() });
        (facts, class, load)
    }

    /// `database`'s catalog if one was read, and whether a load should start now (claimed for
    /// the caller: it must end with [`Splitting::catalog_loaded`] or
    /// [`Splitting::catalog_failed`]).
    pub fn catalog(&self, database: &str, now: Instant) -> (Option<Arc<Catalog>>, bool) {
        let mut catalogs = self.catalogs.lock().unwrap_or_else(|e| e.into_inner());
        let slot = catalogs.entry(database.to_string()).or_default();
        let due = match (slot.catalog.is_some(), slot.at) {
            (_, None) => true,
            (true, Some(at)) => slot.stale || now.saturating_duration_since(at) >= CATALOG_MAX_AGE,
            (false, Some(at)) => now.saturating_duration_since(at) >= CATALOG_RETRY,
        };
        let load = due && !slot.loading;
        slot.loading |= load;
        (slot.catalog.clone(), load)
    }

    /// A load of `database`'s catalog finished.
    pub fn catalog_loaded(&self, database: &str, catalog: Catalog, now: Instant) {
        let mut catalogs = self.catalogs.lock().unwrap_or_else(|e| e.into_inner());
        let slot = catalogs.entry(database.to_string()).or_default();
        *slot = Slot { catalog: Some(Arc::new(catalog)), at: Some(now), loading: false, stale: false };
    }

    /// A load of `database`'s catalog failed: the old one (if any) stays, and another is tried
    /// later.
    pub fn catalog_failed(&self, database: &str, now: Instant) {
        let mut catalogs = self.catalogs.lock().unwrap_or_else(|e| e.into_inner());
        let slot = catalogs.entry(database.to_string()).or_default();
        slot.loading = false;
        if slot.catalog.is_none() {
            slot.at = Some(now);
        } else {
            slot.stale = true;
        }
    }

    /// DDL ran in `database` through the proxy: its catalog is read again before it is next
    /// trusted (a function may have been created or changed).
    pub fn catalog_changed(&self, database: &str) {
        if let Some(slot) = self.catalogs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(database) {
            slot.stale = true;
        }
    }

    /// The positions, locked.
    pub fn positions(&self) -> std::sync::MutexGuard<'_, Positions> {
        self.positions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counter of statements sent to the backend at `addr` (made at its first use).
    pub fn backend_counter(&self, addr: &str) -> Arc<AtomicU64> {
        let mut per = self.counts.per_backend.lock().unwrap_or_else(|e| e.into_inner());
        match per.get(addr) {
            Some(c) => c.clone(),
            None => per.entry(addr.to_string()).or_default().clone(),
        }
    }

    /// Counts a statement sent to a replica or the primary, on that backend's `counter`
    /// ([`Splitting::backend_counter`]).
    pub fn sent(&self, counter: &AtomicU64, replica: bool) {
        let c = if replica { &self.counts.to_replica } else { &self.counts.to_primary };
        c.fetch_add(1, Ordering::Relaxed);
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn figures(&self) -> SplitFigures {
        let mut per_backend: Vec<(String, u64)> = self
            .counts
            .per_backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(a, n)| (a.clone(), n.load(Ordering::Relaxed)))
            .collect();
        per_backend.sort();
        SplitFigures {
            to_replica: self.counts.to_replica.load(Ordering::Relaxed),
            to_primary: self.counts.to_primary.load(Ordering::Relaxed),
            reads_kept_on_primary: self.counts.reads_kept_on_primary.load(Ordering::Relaxed),
            per_backend,
            cache: self.cache.figures(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitting() -> Splitting {
        let settings = LoadBalance {
            on_write: Default::default(),
            read_your_writes: Default::default(),
            read_your_writes_timeout: Duration::ZERO,
            position_interval: Duration::from_millis(20),
            max_lag_time: None,
            write_functions: vec![],
            read_only_functions: vec!["report_.*".into()],
        };
        Splitting::new(settings).unwrap()
    }

    #[test]
    fn a_catalog_is_loaded_once_at_a_time_and_again_when_stale() {
        let s = splitting();
        let t0 = Instant::now();
        let (_, class, load) = s.class_of("app", "SELECT now()", t0);
        assert_eq!((class, load), (Class::Write(super::super::classify::Why::Function), true), "no catalog yet");
        assert!(!s.catalog("app", t0).1, "one load at a time");
        assert_eq!(s.class_of("app", "SELECT report_x()", t0).1, Class::Read, "the lists need no catalog");
        s.catalog_loaded("app", Catalog::from_rows([("pg_catalog", "now", "s")]), t0);
        assert_eq!(s.class_of("app", "SELECT now()", t0), (s.cache.facts("SELECT now()"), Class::Read, false));
        s.catalog_changed("app");
        let (catalog, load) = s.catalog("app", t0);
        assert!(catalog.is_some() && load, "the old catalog serves while the new one loads");
        s.catalog_failed("app", t0);
        assert!(s.catalog("app", t0).1, "still stale: tried again");
        s.catalog_loaded("app", Catalog::default(), t0);
        assert!(!s.catalog("app", t0 + Duration::from_secs(1)).1);
        assert!(s.catalog("app", t0 + CATALOG_MAX_AGE).1, "old: read again");
        assert!(s.catalog("other", t0).1, "each database has its own");
    }

    #[test]
    fn a_failed_first_load_is_retried_later() {
        let s = splitting();
        let t0 = Instant::now();
        assert!(s.catalog("app", t0).1);
        s.catalog_failed("app", t0);
        assert!(!s.catalog("app", t0 + Duration::from_secs(1)).1);
        assert!(s.catalog("app", t0 + CATALOG_RETRY).1);
    }
}
