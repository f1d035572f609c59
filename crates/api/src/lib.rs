//! # rampart-api: Rampart's Patroni-compatible REST API
//!
//! The agent publishes an immutable [`NodeSnapshot`] through a `tokio::sync::watch` channel after
//! every HA cycle; this crate only reads it. Requests never wait for the HA loop, and the one
//! live fact they gather themselves is whether the postmaster still exists
//! ([`ApiContext::postmaster_alive`]), so a crashed PostgreSQL stops being advertised as primary
//! at once.
//!
//! Compatibility target: Patroni's REST API (`patroni/api.py`): the health checks load balancers
//! use (`/primary`, `/replica?lag=64MB`, `/read-only`, `/sync`, ... with substring routing and
//! status-only `HEAD`/`OPTIONS`), `/patroni` with Patroni's field names (other members read it
//! during a leader race), and `/cluster`, `/history`, `/config`, `/liveness`, `/readiness`.
//!
//! Module map:
//! * [`snapshot`]: the input state and the shared context;
//! * [`query`]: health-check query parameters (`?lag=` with units, `?tag_...`);
//! * [`health`]: the pure 200/503 decision of every health check;
//! * [`status_json`]: the `/patroni` body;
//! * [`cluster_json`]: the `/cluster`, `/history` and `/config` bodies;
//! * [`router`]: dispatch of paths and methods to the above;
//! * [`server`]: hyper serving with timeouts and connection limits.

#![deny(missing_docs)]

pub mod backend;
pub mod cluster_json;
pub mod health;
pub mod query;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod status_json;

pub use backend::{Backend, BoxFuture, LocalReply, LocalRequest, RestartRequest, ScheduledRestart};
pub use health::Check;
pub use query::HealthQuery;
pub use router::{router, Endpoint};
pub use server::{serve, serve_with_limits, ServeLimits};
pub use snapshot::{ApiContext, NodeSnapshot, ReplicationConn};
