//! When the leader's watchdog is fed, left to run down, or disarmed: a pure rule, so its
//! safety argument is tested without a device.
//!
//! The watchdog resets the machine `timeout` after the last keepalive. It is armed while this
//! member holds the leader lock and runs (or is promoting) a primary, and disarmed, with the
//! magic close, as soon as it does not: a replica or a stopped PostgreSQL needs no reset. In
//! maintenance mode (pause) it is disarmed too, as in Patroni: a paused leader is not fenced, so
//! a reset would only take down a primary the operator asked to leave alone.
//!
//! **The safety rule kept here:** a keepalive is sent only while `now + timeout <= leader_until`,
//! where `leader_until` is the send time of the last successful lock renewal plus the lease's
//! ttl. Then, if the agent freezes at any moment, the machine resets no later than the lease
//! could expire, so no other member can have been promoted while this primary still takes
//! writes. While renewals fail (etcd unreachable) the keepalives stop by themselves; the agent's
//! own fencing stops PostgreSQL before the lease expires, and the next step disarms.

use crate::observe::Millis;

/// What to do with the watchdog after a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchdogStep {
    /// Arm it if it is not armed yet, then feed it.
    Keepalive,
    /// Leave it armed and unfed: it fires no later than the lease expires unless the agent
    /// stops PostgreSQL first.
    RunDown,
    /// Disarm it (magic close) if it is armed.
    Disarm,
}

/// The step for a member whose lock is held `leader_until` (if at all), at `now`, with a
/// watchdog of `timeout_secs`; `primary` when PostgreSQL runs, or is being promoted, as primary;
/// `paused` in maintenance mode.
pub fn step(leader_until: Option<Millis>, now: Millis, primary: bool, paused: bool, timeout_secs: u64) -> WatchdogStep {
    match leader_until {
        Some(until) if primary && !paused && now < until => {
            if now.plus_secs(timeout_secs) <= until {
                WatchdogStep::Keepalive
            } else {
                WatchdogStep::RunDown
            }
        }
        _ => WatchdogStep::Disarm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let t = Millis(100_000);
        let cases = [
            ("leader just renewed (ttl 10, timeout 5)", Some(t.plus_secs(10)), true, WatchdogStep::Keepalive),
            (
                "renewed 5 s ago: a keepalive now runs out exactly with the lease",
                Some(t.plus_secs(5)),
                true,
                WatchdogStep::Keepalive,
            ),
            ("renewed 5.001 s ago", Some(t.plus_ms(4_999)), true, WatchdogStep::RunDown),
            ("lock expired", Some(t), true, WatchdogStep::Disarm),
            ("no lock", None, true, WatchdogStep::Disarm),
            ("lock but PostgreSQL not primary", Some(t.plus_secs(10)), false, WatchdogStep::Disarm),
        ];
        assert_eq!(step(Some(t.plus_secs(10)), t, true, true, 5), WatchdogStep::Disarm, "paused");
        for (what, until, primary, want) in cases {
            assert_eq!(step(until, t, primary, false, 5), want, "{what}");
        }
    }

    proptest! {
        /// Whatever the history, a keepalive never lets the watchdog fire after the lease ends.
        #[test]
        fn a_fed_watchdog_fires_before_the_lease_expires(
            until in 0u64..1_000_000, now in 0u64..1_000_000, timeout in 1u64..60, primary: bool,
        ) {
            if step(Some(Millis(until)), Millis(now), primary, false, timeout) == WatchdogStep::Keepalive {
                prop_assert!(now + timeout * 1000 <= until);
                prop_assert!(primary);
            }
        }
    }
}
