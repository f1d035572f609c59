//! Carries out a decision on the virtual address, each time one is made: the agent's (`vip`:
//! the plan says whether this member holds it, [`rampart_core::Plan::holds_address`]; the loop
//! gives it up before the plan's actions and takes it after them, and at shutdown gives it up
//! before PostgreSQL stops) and the proxies' (`proxy.vip`: [`rampart_core::proxy_address`]).
//! [`VirtualAddress`] is the port: [`super::HostAddress`] in production, a flag in tests and the
//! simulation.
//!
//! What the host has is read again every time rather than remembered, so an address someone
//! removed by hand comes back at the next decision, and one left over from an earlier run goes
//! at the first.

use std::time::Duration;

use tracing::{info, warn};

use std::future::Future;

/// The virtual address on this host: what the host has, taking it, giving it up.
pub trait VirtualAddress: Send {
    /// Whether this host has the address now.
    fn held(&self) -> Result<bool, String>;

    /// Takes the address (and announces it).
    fn take(&mut self) -> impl Future<Output = Result<(), String>> + Send;

    /// Gives the address up within `limit`.
    fn give_up(&mut self, limit: Duration) -> impl Future<Output = Result<(), String>> + Send;
}

/// The address port with what the REST API shows of it.
pub struct AddressKeeper<A> {
    port: A,
    /// `ip/netmask` (and where), for the log and the REST API.
    describe: String,
    /// The address, as `/patroni` and `list` show it.
    address: String,
    /// Whether the host had it after the last change or check.
    held: bool,
    /// Times it was taken or given up since the process started.
    changes: u64,
    /// The last failure, so a failure that repeats every cycle is logged once.
    last_error: Option<String>,
}

impl<A: VirtualAddress> AddressKeeper<A> {
    pub fn new(port: A, vip: &rampart_config::Vip) -> Self {
        let describe = match &vip.interface {
            Some(i) => format!("{} on {i}", vip.cidr()),
            None => format!("{} (if_up_cmd/if_down_cmd)", vip.ip),
        };
        AddressKeeper { port, describe, address: vip.ip.to_string(), held: false, changes: 0, last_error: None }
    }

    /// Makes the host hold the address or not; giving up is bounded by `limit` (the time left
    /// before the lease ends).
    pub async fn apply(&mut self, hold: bool, limit: Duration) {
        let has = match self.port.held() {
            Ok(h) => h,
            Err(e) => {
                self.failed(format!("cannot tell whether this host has the virtual address {}: {e}", self.describe));
                // Giving up what may be there is always safe; taking waits for a clear answer.
                if hold {
                    return;
                }
                true
            }
        };
        self.held = has;
        if has == hold {
            self.last_error = None;
            return;
        }
        let result = match hold {
            true => self.port.take().await,
            false => self.port.give_up(limit).await,
        };
        // Read back: a failed removal may still have removed the address, a failed announcement
        // leaves it added.
        self.held = self.port.held().unwrap_or(hold);
        match result {
            Ok(()) => {
                self.changes += 1;
                self.last_error = None;
                match hold {
                    true => info!("took the virtual address {}", self.describe),
                    false => info!("gave up the virtual address {}", self.describe),
                }
            }
            Err(e) => {
                if self.held != has {
                    self.changes += 1;
                }
                let what = if hold { "take" } else { "give up" };
                self.failed(format!("could not {what} the virtual address {}: {e}", self.describe));
            }
        }
    }

    fn failed(&mut self, message: String) {
        if self.last_error.as_deref() != Some(message.as_str()) {
            warn!("{message}");
        }
        self.last_error = Some(message);
    }

    /// What the REST API shows (`/patroni`, `/metrics`) and the member key carries.
    pub fn state(&self) -> rampart_api::VipState {
        rampart_api::VipState { address: self.address.clone(), held: self.held, changes: self.changes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A host whose address is a flag; `fail` makes the next change fail after doing nothing.
    #[derive(Clone, Default)]
    struct Host {
        has: Arc<Mutex<bool>>,
        fail: Arc<Mutex<bool>>,
        limits: Arc<Mutex<Vec<Duration>>>,
    }

    impl VirtualAddress for Host {
        fn held(&self) -> Result<bool, String> {
            Ok(*self.has.lock().unwrap())
        }

        async fn take(&mut self) -> Result<(), String> {
            if std::mem::take(&mut *self.fail.lock().unwrap()) {
                return Err("RTNETLINK answers: Operation not permitted".into());
            }
            *self.has.lock().unwrap() = true;
            Ok(())
        }

        async fn give_up(&mut self, limit: Duration) -> Result<(), String> {
            self.limits.lock().unwrap().push(limit);
            *self.has.lock().unwrap() = false;
            Ok(())
        }
    }

    fn vip() -> rampart_config::Vip {
        rampart_config::Vip {
            ip: "10.0.0.100".parse().unwrap(),
            netmask: 24,
            interface: Some("eth0".into()),
            arp_count: 3,
            if_up_cmd: None,
            if_down_cmd: None,
            cmd_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn the_host_is_brought_to_what_the_plan_says_and_changes_are_counted() {
        let host = Host::default();
        *host.has.lock().unwrap() = true;
        let mut k = AddressKeeper::new(host.clone(), &vip());
        // A leftover from an earlier run goes at the first cycle that does not hold it.
        k.apply(false, Duration::from_secs(2)).await;
        assert!(!*host.has.lock().unwrap());
        assert_eq!(host.limits.lock().unwrap().as_slice(), [Duration::from_secs(2)], "bounded by the caller");
        k.apply(true, Duration::from_secs(2)).await;
        k.apply(true, Duration::from_secs(2)).await;
        let s = k.state();
        assert_eq!((s.address.as_str(), s.held, s.changes), ("10.0.0.100", true, 2));
        // Removed by hand: it comes back at the next cycle.
        *host.has.lock().unwrap() = false;
        k.apply(true, Duration::from_secs(2)).await;
        assert!(*host.has.lock().unwrap());
        assert_eq!(k.state().changes, 3);
    }

    #[tokio::test]
    async fn a_failed_take_is_reported_as_not_held_and_tried_again() {
        let host = Host::default();
        *host.fail.lock().unwrap() = true;
        let mut k = AddressKeeper::new(host.clone(), &vip());
        k.apply(true, Duration::from_secs(2)).await;
        assert!(!k.state().held && k.state().changes == 0);
        assert!(k
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("could not take the virtual address 10.0.0.100/24 on eth0")));
        k.apply(true, Duration::from_secs(2)).await;
        assert!(k.state().held && k.last_error.is_none());
    }
}
