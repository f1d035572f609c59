//! A pooled client's session parameters, kept while its transactions move between servers:
//! what it asked for at startup and what its `SET`s changed, as the servers report them
//! (ParameterStatus), and the `SET`s that bring another server in line before the client uses it.
//!
//! Tracked are the parameters PostgreSQL reports (`GUC_REPORT`) that a client can change and
//! that change results: PgBouncer's list (`client_encoding`, `DateStyle`, `TimeZone`,
//! `standard_conforming_strings`, `application_name`) plus its default extra, `IntervalStyle`.
//! A `SET` of anything else (`search_path`, `work_mem`...) cannot be seen this way: transaction
//! mode pins or refuses it elsewhere, never silently loses it.
//!
//! Invariant: the replayed SQL quotes every value as one string literal
//! ([`rampart_core::sql_quote::quote_literal`]), so a value a client chose can never become SQL.

use std::sync::atomic::{AtomicU64, Ordering};

use rampart_core::sql_quote::quote_literal;

use crate::startup::StartupMessage;

/// The parameters tracked, in PostgreSQL's spelling (names are compared case-insensitively).
pub const TRACKED: [&str; 6] =
    ["client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings", "application_name", "IntervalStyle"];

/// The position of `name` in [`TRACKED`], if it is tracked.
fn tracked(name: &str) -> Option<usize> {
    TRACKED.iter().position(|t| t.eq_ignore_ascii_case(name))
}

/// Stamps for values that changed: each change gets a number no other `Params` has.
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1);

/// Tracked parameter values, by their position in [`TRACKED`]: compared on every transaction
/// that takes a server, so a fixed array rather than a map.
///
/// Invariant: two `Params` with the same `stamp` hold the same values. A change takes a new
/// stamp; a copy keeps it; two found equal take the smaller of their stamps. So a client and the
/// servers it has used match by one comparison of numbers (see [`Params::replay_on`]).
#[derive(Clone, Debug, Default)]
pub struct Params {
    values: [Option<String>; TRACKED.len()],
    /// 0 for no values at all.
    stamp: u64,
}

impl PartialEq for Params {
    fn eq(&self, other: &Params) -> bool {
        self.stamp == other.stamp || self.values == other.values
    }
}

impl Eq for Params {}

impl Params {
    /// What a client asked for in its startup packet (the tracked ones; the rest are the
    /// server's business at login).
    pub fn from_startup(startup: &StartupMessage) -> Params {
        let mut p = Params::default();
        for (name, value) in startup.params() {
            if let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) {
                p.set(name, value);
            }
        }
        p
    }

    /// A ParameterStatus (from the server at login, or after a `SET`); untracked names are
    /// ignored.
    pub fn set(&mut self, name: &str, value: &str) {
        if let Some(i) = tracked(name) {
            match &mut self.values[i] {
                // Reported again unchanged (most ParameterStatus messages): nothing to allocate.
                Some(v) if v == value => {}
                slot => {
                    *slot = Some(value.to_string());
                    self.stamp = NEXT_STAMP.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The value of a tracked parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values[tracked(name)?].as_deref()
    }

    /// The SQL that makes a server whose parameters are `server` match these (the client's),
    /// or `None` when they match already. Parameters the client never set or saw are left as the
    /// server has them. Both take the smaller stamp when their values are equal, so that the
    /// next comparison of the two (or of either with a copy) is one of numbers.
    pub fn replay_on(&mut self, server: &mut Params) -> Option<String> {
        // The common case, checked first without building anything.
        if self.stamp == server.stamp {
            return None;
        }
        if self.values == server.values {
            let stamp = self.stamp.min(server.stamp);
            (self.stamp, server.stamp) = (stamp, stamp);
            return None;
        }
        let sets: Vec<String> = TRACKED
            .iter()
            .zip(self.values.iter().zip(&server.values))
            .filter_map(|(name, (mine, theirs))| match mine {
                Some(value) if theirs.as_ref() != Some(value) => Some(format!("SET {name} = {}", quote_literal(value))),
                _ => None,
            })
            .collect();
        (!sets.is_empty()).then(|| sets.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::startup::ProtocolVersion;

    #[test]
    fn startup_and_reported_values_are_kept_and_only_differences_replayed() {
        let startup = StartupMessage::new(ProtocolVersion::V3_0)
            .with("user", "alice")
            .unwrap()
            .with("application_name", "billing")
            .unwrap()
            .with("datestyle", "ISO, DMY")
            .unwrap()
            .with("work_mem", "64MB")
            .unwrap();
        let mut client = Params::from_startup(&startup);
        assert_eq!(client.get("DateStyle"), Some("ISO, DMY"), "names are case-insensitive");
        assert_eq!(client.get("work_mem"), None, "not tracked");
        // Its server reports a SET TimeZone.
        client.set("TimeZone", "Asia/Tokyo");
        let mut other = Params::default();
        other.set("application_name", "billing");
        other.set("DateStyle", "ISO, MDY");
        other.set("TimeZone", "UTC");
        assert_eq!(
            client.replay_on(&mut other).as_deref(),
            Some("SET DateStyle = 'ISO, DMY'; SET TimeZone = 'Asia/Tokyo'")
        );
        other.set("DateStyle", "ISO, DMY");
        other.set("TimeZone", "Asia/Tokyo");
        assert_eq!(client.replay_on(&mut other), None);
    }

    #[test]
    fn equal_values_are_found_equal_and_a_later_change_is_still_replayed() {
        let mut client = Params::default();
        client.set("TimeZone", "UTC");
        client.set("application_name", "app");
        let mut server = Params::default();
        server.set("application_name", "app");
        server.set("TimeZone", "UTC");
        assert_eq!(client.replay_on(&mut server), None, "same values, set in another order");
        let mut copy = server.clone();
        assert_eq!(client.replay_on(&mut copy), None);
        // The client's next SET (reported by the server it held then) must reach both.
        client.set("TimeZone", "Asia/Tokyo");
        assert_eq!(client.replay_on(&mut server).as_deref(), Some("SET TimeZone = 'Asia/Tokyo'"));
        assert_eq!(client.replay_on(&mut copy).as_deref(), Some("SET TimeZone = 'Asia/Tokyo'"));
        // And a server's own change (a SET the client ran on it) is seen by the other clients.
        server.set("TimeZone", "Asia/Tokyo");
        assert_eq!(client.replay_on(&mut server), None);
        server.set("application_name", "other");
        assert_eq!(client.replay_on(&mut server).as_deref(), Some("SET application_name = 'app'"));
    }

    #[test]
    fn a_value_never_becomes_sql() {
        let mut client = Params::default();
        client.set("application_name", "x'; DROP TABLE t; --");
        assert_eq!(
            client.replay_on(&mut Params::default()).as_deref(),
            Some("SET application_name = 'x''; DROP TABLE t; --'")
        );
        // A backslash cannot escape the closing quote, whatever standard_conforming_strings is.
        client.set("application_name", "x\\'; DROP TABLE t; --");
        assert_eq!(
            client.replay_on(&mut Params::default()).as_deref(),
            Some("SET application_name = E'x\\\\''; DROP TABLE t; --'")
        );
    }
}
