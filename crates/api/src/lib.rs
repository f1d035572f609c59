//! # rampart-api: Rampart's Patroni-compatible REST API
//!
//! The agent publishes an immutable [`NodeSnapshot`] through a `tokio::sync::watch` channel after
//! every HA cycle; this crate only reads it. Requests never wait for the HA loop, and the one
//! live fact they gather themselves is whether the postmaster still exists
//! ([`ApiContext::postmaster_alive`]), so a crashed PostgreSQL stops being advertised as primary
//! at once.
//!
//! Write requests (switchover, restart, configuration, ...) are validated here and handed to the
//! agent through the [`Backend`] trait: the DCS `failover` and `config` keys for cluster-wide
//! operations, the agent's loop for operations on this node. The API never decides about HA.
//!
//! Compatibility target: Patroni's REST API (`patroni/api.py`): the health checks load balancers
//! use (`/primary`, `/replica?lag=64MB`, `/read-only`, `/sync`, ... with substring routing and
//! status-only `HEAD`/`OPTIONS`), `/patroni` with Patroni's field names (other members read it
//! during a leader race), `/cluster`, `/history`, `/config`, `/liveness`, `/readiness`,
//! `/metrics`, and the write endpoints patronictl calls, behind Patroni's access checks
//! (allowlist, client certificates, Basic auth) and optionally HTTPS.
//!
//! Module map:
//! * [`snapshot`]: the input state; [`context`]: what handlers share;
//! * [`query`]: health-check query parameters (`?lag=` with units, `?tag_...`);
//! * [`health`]: the pure 200/503 decision of every health check;
//! * [`status_json`]: the `/patroni` body;
//! * [`cluster_json`]: the `/cluster`, `/history` and `/config` bodies;
//! * [`metrics`]: the `/metrics` body;
//! * [`backend`]: what the write endpoints ask of the agent;
//! * [`writes`]: dispatch and access control of write requests; [`switchover`],
//!   [`local_ops`], [`config_edit`]: the operations; [`request_values`]: body values;
//!   [`reply`]: their answers; [`probe`]: asking other members for their status;
//! * [`access`], [`tls`], [`security`]: who may write, and HTTPS;
//! * [`mod@router`]: dispatch of paths and methods;
//! * [`server`]: hyper serving (plain or TLS) with timeouts and connection limits.

#![deny(missing_docs)]

pub mod access;
pub mod backend;
pub mod cluster_json;
pub mod config_edit;
pub mod context;
pub mod failsafe;
pub mod health;
pub mod live;
pub mod local_ops;
pub mod metrics;
pub mod probe;
pub mod query;
pub mod reply;
pub mod request_values;
pub mod router;
pub mod security;
pub mod server;
pub mod snapshot;
pub mod status_json;
pub mod switchover;
pub mod tls;
pub mod writes;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod write_tests;

pub use access::{AccessPolicy, BasicAuth, PeerInfo};
pub use backend::{Backend, BoxFuture, FailsafePing, LocalReply, LocalRequest, RestartRequest, ScheduledRestart};
pub use context::{ApiContext, WriteTiming};
pub use health::Check;
pub use live::{LiveWal, WalNow};
pub use probe::{HttpProbe, MemberProbe, PostAnswer};
pub use query::HealthQuery;
pub use router::{router, Endpoint};
pub use security::{Security, SecurityError, SecurityHandle, SecuritySettings};
pub use server::{serve, serve_with_limits, ServeLimits};
pub use snapshot::{NodeSnapshot, ReplicationConn, VipState};
pub use tls::{ClientCertMode, TlsSettings};
