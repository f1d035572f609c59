//! Which `rampart proxy` holds the proxies' virtual address (`proxy.vip`), and when each proxy
//! asks etcd for it: the Pgpool-II watchdog's job (seed 001's `delegate_IP`), decided by an etcd
//! lease instead of a vote among the proxies.
//!
//! Every proxy that shares the address claims the key `proxy_vip/<address>` on a lease of its own
//! (the leader lock's create-if-absent-or-mine transaction); the one whose claim etcd confirmed
//! holds the address, the others stand by and claim when they see the key gone.
//!
//! Invariants (rules: [`may_hold`], [`claim_due`], tested by name below):
//! * **Confirmed claim first.** A proxy holds the address only after etcd confirmed its claim,
//!   and only until [`Timing::hold_until`]: the moment its lease could end, counted from when the
//!   confirming request was *sent* (etcd extends the lease when it receives it, later), less the
//!   time giving the address up may take. A holder cut off from etcd has therefore given the
//!   address up before its lease could expire and another proxy could claim the key.
//! * **One claimant at a time.** etcd lets a claim through only when the key is absent or already
//!   the proxy's own, so a second proxy gets it only after the first one's lease ended or it
//!   released the key.
//! * **Renewed well ahead.** The holder claims again every third of the time its claim lets it
//!   hold, so two lost renewals in a row still leave it holding; a standby claims as soon as its
//!   view of the cluster shows no holder, and otherwise stays quiet (etcd is shared by many
//!   clusters).

use crate::observe::Millis;

/// The timing of one address's claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The claim lease's TTL (the cluster's `ttl`).
    pub ttl_ms: u64,
    /// The longest giving the address up may take (removing it, and running `if_down_cmd`).
    pub give_up_ms: u64,
}

/// Time allowed to remove the address from an interface (`ip addr del`), and the slack for a
/// process that was not scheduled at once.
pub const REMOVE_MS: u64 = 1_000;

impl Timing {
    /// The timing for a lease of `ttl_s` seconds and a down command that may run for
    /// `down_cmd_ms` (0 without one). The command gets at most a third of the lease: the holder
    /// must still renew in time, and the command is stopped at its limit anyway.
    pub fn new(ttl_s: u64, down_cmd_ms: u64) -> Timing {
        let ttl_ms = ttl_s.saturating_mul(1000);
        Timing { ttl_ms, give_up_ms: REMOVE_MS + down_cmd_ms.min(ttl_ms / 3) }
    }

    /// Until when a claim confirmed by a request sent at `sent` lets the proxy hold the address.
    pub fn hold_until(&self, sent: Millis) -> Millis {
        sent.plus_ms(self.ttl_ms.saturating_sub(self.give_up_ms))
    }

    /// When the lease of a claim sent at `sent` could end at the earliest.
    pub fn lease_end(&self, sent: Millis) -> Millis {
        sent.plus_ms(self.ttl_ms)
    }

    /// How often the holder renews its claim.
    pub fn renew_every_ms(&self) -> u64 {
        (self.ttl_ms.saturating_sub(self.give_up_ms) / 3).max(100)
    }
}

/// What the proxy knows of its claim and of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimView {
    /// When the request that etcd last confirmed as this proxy's claim was sent; `None` when
    /// the proxy has no confirmed claim (never had, or etcd said the key is another's).
    pub confirmed: Option<Millis>,
    /// Whether the proxy's latest read of the cluster shows another proxy's claim on the key.
    pub other_holder_seen: bool,
}

/// Whether the proxy may have the address on its host at `now`.
pub fn may_hold(view: ClaimView, now: Millis, timing: Timing) -> bool {
    view.confirmed.is_some_and(|sent| now < timing.hold_until(sent))
}

/// Whether the proxy should send a claim at `now`: the holder when its renewal is due, a standby
/// when the key looks free.
pub fn claim_due(view: ClaimView, now: Millis, timing: Timing) -> bool {
    match view.confirmed {
        Some(sent) => now >= sent.plus_ms(timing.renew_every_ms()),
        None => !view.other_holder_seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL10: Timing = Timing { ttl_ms: 10_000, give_up_ms: REMOVE_MS };

    fn view(confirmed: Option<u64>, other: bool) -> ClaimView {
        ClaimView { confirmed: confirmed.map(Millis), other_holder_seen: other }
    }

    #[test]
    fn a_confirmed_claim_holds_until_the_lease_could_end_less_the_time_to_give_up() {
        let cases = [
            ("no claim", view(None, false), 5_000, false),
            ("just confirmed", view(Some(5_000), false), 5_000, true),
            ("one renewal missed", view(Some(5_000), false), 11_000, true),
            ("give-up time reached", view(Some(5_000), false), 14_000, false),
            ("past the lease", view(Some(5_000), false), 16_000, false),
        ];
        for (rule, v, now, want) in cases {
            assert_eq!(may_hold(v, Millis(now), TTL10), want, "{rule}");
        }
    }

    #[test]
    fn the_holder_renews_every_third_of_its_hold_and_a_standby_claims_only_a_free_key() {
        assert_eq!(TTL10.renew_every_ms(), 3_000);
        let cases = [
            ("holder, renewal not due", view(Some(5_000), false), 7_999, false),
            ("holder, renewal due", view(Some(5_000), false), 8_000, true),
            ("standby, key held by another", view(None, true), 9_000, false),
            ("standby, key free", view(None, false), 9_000, true),
        ];
        for (rule, v, now, want) in cases {
            assert_eq!(claim_due(v, Millis(now), TTL10), want, "{rule}");
        }
    }

    #[test]
    fn a_down_command_shortens_the_hold_but_never_below_two_thirds_of_the_lease() {
        let t = Timing::new(10, 5_000);
        assert_eq!(t.give_up_ms, 1_000 + 3_333, "the command gets a third of the lease at most");
        assert_eq!(t.hold_until(Millis(0)), Millis(10_000 - 4_333));
        assert_eq!(t.lease_end(Millis(0)), Millis(10_000));
        assert_eq!(Timing::new(30, 5_000).give_up_ms, 6_000, "a short command is waited for in full");
        // Two renewals may fail and the third still comes before the holder must give up.
        for t in [Timing::new(5, 0), Timing::new(10, 5_000), Timing::new(30, 0)] {
            assert!(3 * t.renew_every_ms() <= t.ttl_ms - t.give_up_ms, "{t:?}");
        }
    }

    /// Whatever the clock and the claims, a proxy never has the address at a moment when its
    /// lease could have ended (so another proxy's claim could have been confirmed).
    #[test]
    fn never_held_once_the_lease_could_have_ended() {
        for ttl in [1, 5, 10, 30] {
            for down in [0, 1_000, 5_000, 60_000] {
                let t = Timing::new(ttl, down);
                for sent in [0, 1, 12_345] {
                    for now in (sent..sent + 2 * t.ttl_ms).step_by(97) {
                        let v = view(Some(sent), false);
                        if may_hold(v, Millis(now), t) {
                            assert!(
                                now + t.give_up_ms <= t.lease_end(Millis(sent)).0,
                                "ttl {ttl} down {down} sent {sent} now {now}"
                            );
                        }
                    }
                }
            }
        }
    }
}
