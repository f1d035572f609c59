//! # rampart-core: the pure HA core
//!
//! Everything Rampart decides about a node's role lives here, and nothing here does I/O or reads
//! a clock. The agent's driver loop (in the `rampart` binary) works like raft-rs's Ready loop:
//!
//! 1. it reads the DCS once (a consistent [`model::Cluster`] snapshot) and probes local
//!    PostgreSQL ([`observe::LocalPg`]); while there is no leader it also asks the other members
//!    for their WAL positions ([`observe::PeerReport`]);
//! 2. it hands those facts, with the current monotonic time, to [`HaNode::decide`], which returns
//!    a [`action::Plan`]: ordered actions plus a one-line reason;
//! 3. it executes the actions and reports results that matter back through [`HaNode::advance`]
//!    (for example when a lock renewal was sent, which moves the fencing deadline).
//!
//! Safety rules kept here, each tested without PostgreSQL:
//! * a primary stops taking writes before its leader lease can expire ([`HaNode::fence_deadline`]);
//! * only the healthiest eligible member races for the lock ([`election`]);
//! * a node never runs as primary without holding the lock, or, in `failsafe_mode` during a DCS
//!   outage, without every listed member's fresh promise not to race ([`failsafe`]);
//! * a former primary rejoins only through pg_rewind (or a fresh clone when allowed);
//! * in synchronous mode, the `sync` key names only standbys PostgreSQL waits for, and at most
//!   its `quorum` voters can lack an acknowledged commit ([`sync`]); only members that provably
//!   hold every acknowledged commit race for the lock ([`sync_election`]).
//!
//! Module map:
//! * [`lsn`]: WAL positions and timelines;
//! * [`keys`]: Patroni's DCS key layout;
//! * [`model`]: the cluster snapshot and Patroni's value formats;
//! * [`roles`]: member roles, PostgreSQL and walsender states, as Patroni and PostgreSQL spell them;
//! * [`dynamic`]: the dynamic configuration and its timing rule;
//! * [`observe`]: what the driver observed;
//! * [`cached_view`]: when a cycle may decide on the watch-fed copy of the cluster, and when it
//!   must read etcd linearizably first;
//! * [`action`]: what the core asks for;
//! * [`election`]: who may take the lock;
//! * [`eligibility`]: whether a member may take over (Patroni's `failover_limitation`);
//! * [`sync_mode`]: the synchronous replication settings;
//! * [`standby_cluster`]: standby clusters, whose leader follows another cluster and is never promoted;
//! * [`standby_names`]: reading and writing `synchronous_standby_names`;
//! * [`sync`]: the leader's management of synchronous standbys and the `sync` key;
//! * [`sync_election`]: who may take the lock in synchronous mode;
//! * [`admission`]: whether a switchover or failover request is admitted (API, CLI, leader);
//! * [`manual`]: switchover and failover requests (the `failover` key);
//! * [`backup`]: which member runs `rampart backup`, and the `backup` key;
//! * [`drain`]: a switchover waits (boundedly) for the proxies to finish their transactions on
//!   the old primary (the `proxies/<id>` keys);
//! * [`restart`]: operators' restart filters and when a scheduled restart is due;
//! * [`slots`]: member and permanent replication slots, on the leader and on replicas;
//! * [`hot_standby`]: the settings a standby must not run below the primary (start floor,
//!   replay paused for insufficient settings);
//! * [`failsafe`]: `failsafe_mode`, a primary kept alive through a DCS outage by its members;
//! * [`identity`]: one agent per member name (a duplicate name is refused at start);
//! * [`clock`]: wall-clock times operators write;
//! * [`node`]: the decision itself.

#![deny(missing_docs)]

pub mod action;
pub mod address;
pub mod admission;
pub mod backup;
pub mod cached_view;
pub mod clock;
pub mod drain;
pub mod dynamic;
pub mod election;
pub mod eligibility;
pub mod failsafe;
pub mod hot_standby;
pub mod identity;
pub mod keys;
pub mod lsn;
pub mod manual;
pub mod model;
pub mod node;
pub mod observe;
pub mod proxy_address;
pub mod restart;
pub mod roles;
pub mod slots;
pub mod sql_quote;
pub mod standby_cluster;
pub mod standby_names;
pub mod sync;
pub mod sync_election;
pub mod sync_mode;
pub mod watchdog;

pub use action::{Action, ActionResult, Answer, Job, Plan, StartRole, StopMode, Upstream};
pub use dynamic::DynamicConfig;
pub use lsn::{Lsn, Timeline};
pub use model::{Cluster, Member, MemberData, ProxyReport, Tags};
pub use node::{HaNode, NodeSettings};
pub use observe::{DataDir, LocalPg, Millis, Observation, PgProcess, Request};
pub use roles::{PgState, Role, WalsenderState, WalsenderSync};
pub use sync_mode::SyncMode;
