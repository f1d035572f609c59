//! The loop's side of `failsafe_mode`: running the leader's `POST /failsafe` round when the DCS
//! could not be read, and reading the pings a replica accepted (rules:
//! [`rampart_core::failsafe`]; transport: [`crate::agent::failsafe`]).
//!
//! Invariant: a round runs only when the core names targets (it leads in failsafe mode) and
//! PostgreSQL runs as primary here, and it never runs past the fence deadline, so the fencing
//! decision that follows it is never late.

use std::time::Duration;

use rampart_core::failsafe::Round;
use rampart_core::observe::{LocalPg, PgProcess};
use rampart_core::Millis;
use serde_json::json;

use super::Agent;
use crate::agent::failsafe::{run_round, Announce};
use crate::agent::ports::{Control, Ports};

impl<P: Ports> Agent<P> {
    /// This cycle's round, if one is due: the DCS read failed and the core leads in failsafe mode.
    pub(super) async fn failsafe_round(&self, dcs_failed: bool, local: &LocalPg) -> Option<Round> {
        if !dcs_failed || !local.process.is_primary() {
            return None;
        }
        let targets = self.core.failsafe_targets()?.clone();
        let deadline = self.core.fence_deadline()?;
        let limit = Duration::from_millis(self.now().until(deadline));
        if limit.is_zero() {
            return None;
        }
        let announce = Announce { body: self.failsafe_body(local).await, authorization: self.rest_authorization() };
        Some(run_round(&self.probe, &self.cfg.name, &targets, &announce, limit, || self.now()).await)
    }

    /// Patroni's body: who we are, and our slots with their positions (replicas use them to
    /// advance permanent slots while the DCS is away). The positions are this cycle's, as
    /// Patroni reads them each cycle; which slots, and the fallback when they cannot be read, are the
    /// core's ([`rampart_core::HaNode::failsafe_slots`]).
    async fn failsafe_body(&self, local: &LocalPg) -> serde_json::Value {
        let (existing, flush) = match &local.process {
            // A primary's probe listed them this cycle; otherwise they are listed now.
            PgProcess::Running(r) => {
                let existing = match &r.slots {
                    Some(listed) => Some(listed.clone()),
                    None => self.pg.list_slots().await.ok(),
                };
                (existing, r.wal.flush.map_or(0, |l| l.0))
            }
            _ => (None, 0),
        };
        let slots = self.core.failsafe_slots(existing.as_deref(), flush);
        json!({
            "name": self.cfg.name,
            "conn_url": self.cfg.postgresql.conn_url(),
            "api_url": self.cfg.restapi.api_url(),
            "slots": slots,
        })
    }

    /// `Authorization` for the members' REST APIs: this agent's own `restapi.authentication`
    /// (the members of one cluster share it, as in Patroni).
    fn rest_authorization(&self) -> Option<String> {
        let a = self.cfg.restapi.authentication.as_ref()?;
        let password = a.password.as_ref().map_or("", |p| p.expose());
        Some(rampart_api::BasicAuth::new(a.username.clone(), password).header_value())
    }

    /// A `std` instant on the loop's monotonic clock.
    pub(super) fn millis_of(&self, t: std::time::Instant) -> Millis {
        let origin = self.origin.into_std();
        Millis(t.saturating_duration_since(origin).as_millis() as u64)
    }

    /// Patroni's `failsafe_mode_is_active`: the leader runs on its members' promises, or a
    /// primary's ping binds this replica.
    pub(super) fn failsafe_active(&self) -> bool {
        let now = self.now();
        if self.core.failsafe_active(now) {
            return true;
        }
        let ttl = self.core.config().ttl;
        self.core.config().failsafe_mode()
            && self
                .failsafe_inbox
                .last(|t| self.millis_of(t))
                .is_some_and(|p| rampart_core::failsafe::PingHold::binds(&p, now, ttl))
    }
}

impl<P: Ports> Agent<P> {
    /// Shares the REST API's record of accepted pings with the loop.
    pub fn with_failsafe_inbox(mut self, inbox: crate::agent::failsafe::Inbox) -> Agent<P> {
        self.failsafe_inbox = inbox;
        self
    }
}
