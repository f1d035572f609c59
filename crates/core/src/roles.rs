//! A member's role, its PostgreSQL's state and a walsender's state, as Patroni spells them in
//! member keys and REST answers, and PostgreSQL in `pg_stat_replication`.
//!
//! Invariant: what is read round-trips. Input accepts the older spellings (Patroni 2's `master`
//! for `primary`); output is Patroni 4's. A word this version does not know (a newer Patroni's)
//! is kept as it was written ([`Role::Other`], ...), never turned into a known one.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a string-valued enum with its known spellings (the first one is written), an `Other`
/// variant for the rest, `as_str`, `Display` and serde as a plain string.
macro_rules! spelled {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => [$($text:literal),+]),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            /// Any other word, kept as written (empty when the field was absent).
            Other(String),
        }

        impl $name {
            /// Reads a spelling; unknown words become `Other`.
            pub fn parse(text: &str) -> $name {
                match text {
                    $($($text)|+ => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                }
            }

            /// The spelling written out.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => spelled!(@first $($text),+),)+
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> $name {
                $name::parse(text)
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> $name {
                $name::parse(&text)
            }
        }

        impl Default for $name {
            fn default() -> $name {
                $name::Other(String::new())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                Ok($name::parse(&String::deserialize(d)?))
            }
        }
    };
    (@first $first:literal $(, $rest:literal)*) => { $first };
}

spelled! {
    /// A member's role (`role` in its key and in `GET /patroni`).
    Role {
        /// Runs as the writable primary (`master` before Patroni 3).
        Primary => ["primary", "master"],
        /// Replicates from another member.
        Replica => ["replica"],
        /// Leads a standby cluster.
        StandbyLeader => ["standby_leader"],
        /// Has no data directory yet.
        Uninitialized => ["uninitialized"],
        /// Was demoted and has not started again.
        Demoted => ["demoted"],
    }
}

impl Role {
    /// Whether the member says it is the primary.
    pub fn is_primary(&self) -> bool {
        *self == Role::Primary
    }
}

spelled! {
    /// PostgreSQL's state as a member publishes it (`state`).
    PgState {
        /// Accepting connections.
        Running => ["running"],
        /// Started, not yet accepting connections.
        Starting => ["starting"],
        /// Stopped cleanly (or by the operator in maintenance mode).
        Stopped => ["stopped"],
        /// The postmaster went away unasked.
        Crashed => ["crashed"],
        /// Being stopped.
        Stopping => ["stopping"],
        /// Being restarted.
        Restarting => ["restarting"],
        /// A bootstrap runs (initdb or a custom method).
        InitializingNewCluster => ["initializing new cluster"],
        /// A clone runs.
        CreatingReplica => ["creating replica"],
        /// pg_rewind runs.
        Rewinding => ["rewinding"],
        /// A start failed.
        StartFailed => ["start failed"],
    }
}

spelled! {
    /// A walsender's `state` in `pg_stat_replication`.
    WalsenderState {
        /// Streaming WAL as it is written.
        Streaming => ["streaming"],
        /// Catching up with the primary.
        Catchup => ["catchup"],
        /// Starting.
        Startup => ["startup"],
        /// Sending a base backup.
        Backup => ["backup"],
        /// Stopping.
        Stopping => ["stopping"],
    }
}

spelled! {
    /// A walsender's `sync_state` in `pg_stat_replication`: how PostgreSQL counts its standby
    /// under `synchronous_standby_names`.
    WalsenderSync {
        /// Not synchronous.
        Async => ["async"],
        /// Would become synchronous if a synchronous one went away.
        Potential => ["potential"],
        /// Synchronous (`FIRST n`).
        Sync => ["sync"],
        /// A quorum member (`ANY n`).
        Quorum => ["quorum"],
    }
}

impl WalsenderSync {
    /// Whether a commit waits for this standby's acknowledgement (it is `sync` or `quorum`).
    pub fn acknowledges_commits(&self) -> bool {
        matches!(self, WalsenderSync::Sync | WalsenderSync::Quorum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patroni_spellings_are_read_and_patroni_4s_written() {
        assert_eq!(Role::parse("master"), Role::Primary);
        assert_eq!(Role::Primary.as_str(), "primary");
        let r: Role = serde_json::from_str("\"master\"").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"primary\"");
        assert_eq!(PgState::parse("creating replica"), PgState::CreatingReplica);
        assert_eq!(WalsenderState::parse("streaming"), WalsenderState::Streaming);
    }

    #[test]
    fn unknown_and_absent_words_round_trip_unchanged() {
        let r: Role = serde_json::from_str("\"leader-of-the-future\"").unwrap();
        assert_eq!(r, Role::Other("leader-of-the-future".into()));
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"leader-of-the-future\"");
        assert_eq!(Role::default().as_str(), "");
        assert_eq!(PgState::parse("running custom bootstrap script").to_string(), "running custom bootstrap script");
    }
}
