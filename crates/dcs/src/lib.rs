//! # rampart-dcs: the distributed configuration store
//!
//! The agent reaches etcd only through the [`Dcs`] trait, so the HA loop can be driven by a fake
//! store in tests and the etcd client (whose API changes with every 0.x release) stays contained
//! here. [`EtcdDcs`] implements it on etcd v3 with Patroni's key layout and value formats, so
//! Patroni tooling keeps working against a Rampart cluster.
//!
//! Rules kept throughout:
//! * every operation is bounded by a deadline, and a dead endpoint is skipped within it;
//! * the leader lock changes only through compare-and-swap transactions;
//! * a node's member key and leader key share one lease with TTL `ttl`; a proxy's report
//!   (`proxies/<id>`) has a lease of its own;
//! * the watch wakes the HA loop and feeds a copy of the cluster's keys (`view`); a cycle decides
//!   on that copy only when it is current as of the cycle's own keep-alive (see `view`) and the
//!   core allows it ([`rampart_core::cached_view`]); every decision that takes or gives up the
//!   lock is taken on a linearizable read;
//! * etcd is shared by many clusters: a quiet member costs it one keep-alive message per cycle,
//!   and keys are written only when their content changes.
//!
//! Module map:
//! * [`dcs`](mod@dcs): the trait;
//! * [`etcd`](mod@etcd): its etcd implementation;
//! * [`options`](mod@options): connection settings;
//! * [`error`](mod@error): errors;
//! * `conn`: one lazily authenticated client per endpoint, and the retry loop with failover;
//! * `lease`: a lease kept alive by its owner (the node's, a proxy's);
//! * [`proxies`](mod@proxies): a proxy's registration and report, for the switchover's drain;
//! * `leader`: the leader-lock transactions;
//! * `watch`: the watcher task;
//! * `view`: the watch-fed copy of the cluster's keys;
//! * `backoff`: retry delays.

#![deny(missing_docs)]

pub mod address_claim;
mod backoff;
mod conn;
pub mod dcs;
pub mod error;
pub mod etcd;
mod leader;
mod lease;
pub mod options;
pub mod proxies;
mod view;
mod watch;

pub use address_claim::AddressClaim;
pub use dcs::{Dcs, DcsResult};
pub use error::DcsError;
pub use etcd::EtcdDcs;
pub use lease::KeptAlive;
pub use options::EtcdOptions;
pub use proxies::ProxyRegistration;
pub use watch::WakeOn;
