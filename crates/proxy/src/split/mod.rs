//! Read/write splitting on one port (`proxy.load_balance`): which statements a replica may run,
//! decided with PostgreSQL's own grammar, sans-IO.
//! * [`classify`]: a statement text to its [`classify::Facts`] (read, write and why, transaction
//!   control, session state, functions called);
//! * [`shape`]: the cache key of a text, its constants masked;
//! * [`cache`]: classified texts by key, bounded, with hit and parse-time counts;
//! * [`functions`]: whether a called function may write (configured lists, then `pg_proc`);
//! * [`monitor`]: the task that reads every routed member's WAL position;
//! * [`positions`]: the members' WAL positions and what a session that wrote needs (read-your-writes);
//! * [`state`]: the splitting the whole proxy holds (settings, cache, catalogs, counts);
//! * [`route`]: where each statement of a session runs (transaction blocks, `disable_load_balance_on_write`).

pub mod cache;
pub mod classify;
pub mod functions;
pub mod monitor;
pub mod positions;
pub mod route;
pub mod shape;
pub mod state;

#[cfg(test)]
mod classify_tests;
