//! # rampart-proxy: the PostgreSQL-protocol router behind `rampart proxy`
//!
//! At the bottom is the wire codec, written sans-IO: every function here takes bytes that
//! were already read (a `BytesMut` read buffer or one frame) and returns values, or writes
//! bytes into a buffer the caller will send. There are no sockets, no tokio and no clock, so
//! every decoder can be fed arbitrary bytes split at arbitrary points in tests.
//!
//! In session mode (the default) the proxy gives each client a backend connection of its own and
//! relays authentication unchanged, so it interprets very little of the protocol; in transaction
//! mode (`proxy.pool_mode: transaction`) it authenticates clients itself and lends pooled server
//! connections per transaction, which the codecs marked "pooling" serve:
//! * [`startup`]: the first client packets, which have no type byte (SSLRequest,
//!   GSSENCRequest, CancelRequest, StartupMessage for protocol 3.0 and 3.2);
//! * [`frame`]: the `type byte + length` framing of every later message in both directions,
//!   split zero-copy so frames can be relayed as they arrived;
//! * [`backend`]: the handful of backend messages the proxy must read (BackendKeyData,
//!   ReadyForQuery, ErrorResponse/NoticeResponse, ParameterStatus, Authentication) and the
//!   ones it must write itself (a synthetic ErrorResponse and BackendKeyData);
//! * [`cancel`]: the map from the synthetic cancel keys the proxy hands to clients to the
//!   backend that really owns the query;
//! * [`auth_file`]: users' secrets (PgBouncer's `auth_file` format: passwords, MD5 secrets,
//!   SCRAM verifiers) and MD5 authentication (pooling);
//! * [`auth_query`]: users' secrets read from the server by `auth_query`, the user name always
//!   a bound parameter (pooling);
//! * [`hba`]: client authentication rules in `pg_hba.conf` format, for when the proxy
//!   authenticates clients itself (pooling);
//! * [`scram`]: SCRAM-SHA-256 at both ends: a client against a stored verifier, and logging in
//!   to PostgreSQL with the client's key (pass-through; pooling);
//! * [`client_auth`]: a client's whole authentication by the proxy (rules, secret, SCRAM, MD5,
//!   cleartext) with PostgreSQL's messages and error texts (pooling);
//! * [`server_auth`]: the proxy logging in to PostgreSQL as such a client, from what it proved
//!   and the user's secret (pooling);
//! * [`pipeline`]: what a pooled server still owes, so that the proxy can inject and answer
//!   messages and the client still gets exactly its answers, in order (pooling);
//! * [`pool`]: one pool of server connections, sans-IO: checkout, waiters in order, reserve,
//!   idle and lifetime limits, `min_pool_size` (pooling);
//! * [`prepared`]: named prepared statements across pooled servers, renamed to global names and
//!   prepared lazily on whichever server a client holds (pooling);
//! * [`session_params`]: a pooled client's tracked session parameters and the `SET`s that bring
//!   another server in line (pooling);
//! * [`session_features`]: the SQL that keeps state in the server session, which pins a pooled
//!   client to its server (pooling);
//! * [`split`]: which statements a replica may run (read/write splitting on one port), by
//!   PostgreSQL's own grammar, with a cache of classified texts;
//! * [`console`]: the admin console (`psql -p <proxy port> rampart`, or `pgbouncer`):
//!   PgBouncer's commands parsed, and their results and errors encoded.
//!
//! On top of the codec, with tokio:
//! * [`topology`] (pure): cluster snapshot and its age to [`topology::Routes`], failing closed;
//! * [`server`]: the listeners and the follower that keeps the routes current from the DCS;
//! * [`session`]: one client connection up to its backend's first answer: startup (TLS
//!   termination through [`tls`]) and backend choice (holding read-write clients while there is
//!   no primary, retrying a backend that cannot take the session yet);
//! * `relay` (private): both directions of an established session, cancel keys, and fencing
//!   on a leader change;
//! * [`workers`]: the single-threaded event loops sessions run on;
//! * [`stats`]: the counters behind the admin port and the least-connections policy;
//! * [`lifecycle`]: the graceful stop (drain, then close) and the count of open connections;
//!   `flow` (private): whether a session has anything in flight, so a stop ends it only when idle;
//! * [`access_log`]: one JSON line per client connection when it ends (`proxy.access_log`);
//! * [`pooling`]: the pooling settings in force; [`pools`]: every pool, shared by the workers;
//!   [`server_conn`]: one pooled server connection, idle on no event loop or leased to a client;
//!   [`clients`]: the pooled clients and each database's counters;
//! * `pooled_login` (private): a pooled client's identity and authentication; `txn` (private):
//!   a transaction-mode client's session; [`console_session`]: the admin console's session;
//! * [`pools_view`]: the pools with their clients and each database's counters, read at one
//!   moment for the admin console and the admin port alike;
//! * [`admin`]: the admin HTTP port (`/metrics`, `/stats.json`, `/stats`), whose renderers are
//!   pure functions of one statistics snapshot, one [`pools_view::PoolsView`] and the routes in
//!   force.
//!
//! Invariants kept by every decoder: it never panics on any input, it never consumes a partial
//! packet (a short buffer is "incomplete", reported as `Ok(None)`, and left untouched), and it
//! rejects a length prefix outside its limits before waiting for the body, so a client cannot
//! make the proxy buffer more than the caller's limit.

#![deny(missing_docs)]

pub mod access_log;
pub mod admin;
mod admin_html;
mod admin_json;
mod admin_metrics;
mod admin_view;
pub mod auth_file;
pub mod auth_query;
pub mod backend;
pub mod cancel;
pub mod client_auth;
pub mod clients;
pub mod console;
pub mod console_session;
mod flow;
pub mod frame;
pub mod hba;
pub mod lifecycle;
pub mod pipeline;
pub mod pool;
pub mod pool_key;
mod pooled_login;
pub mod pooling;
pub mod pools;
pub mod pools_view;
pub mod prepared;
mod relay;
pub mod scram;
pub mod server;
pub mod server_auth;
pub mod server_conn;
pub mod session;
pub mod session_features;
pub mod session_params;
pub mod split;
pub mod startup;
pub mod stats;
pub mod tls;
pub mod topology;
mod txn;
mod wire;
pub mod workers;

#[cfg(test)]
mod fuzz_tests;
