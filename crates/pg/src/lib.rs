//! # rampart-pg: the PostgreSQL adapter
//!
//! Mechanisms only: this crate starts, stops, probes, configures, clones and rewinds PostgreSQL
//! when told to, and reports what it sees. Whether to do any of it is the core's decision
//! ([`rampart_core::HaNode`]).
//!
//! Module map:
//! * [`settings`]: [`PgSettings`], what the agent tells this crate about the instance;
//! * [`conf`]: text of `postgresql.conf`, `pg_hba.conf`, the password file, conninfo strings (pure);
//! * [`configure`]: writes those files into the data directory, atomically;
//! * [`guc`]: PostgreSQL's settings from `postgres --describe-config`, and the check of a value;
//! * [`controldata`](mod@controldata): `pg_controldata` parser and data directory classification (pure);
//! * [`history`]: timeline history file parser;
//! * [`pidfile`]: `postmaster.pid` parser (pure);
//! * [`process`]: [`Postmaster`], the server process (start, adopt, watch, stop);
//! * [`tools`]: initdb, pg_basebackup, pg_rewind, pg_controldata, wiping a data directory;
//! * [`sql`]: [`Sql`], the control connection (probe, promote, reload, checkpoint, slots, roles);
//! * [`slot_copy`]: copying a logical slot's on-disk state from the leader into a stopped replica;
//! * [`observe`]: one cycle's [`rampart_core::LocalPg`];
//! * [`error`]: the error type, [`PgError`].
//!
//! PostgreSQL refuses to run as root: the agent runs as the `postgres` OS user.

#![deny(missing_docs)]

pub mod archive;
pub mod conf;
pub mod configure;
pub mod controldata;
pub mod error;
pub mod guc;
pub mod history;
pub mod observe;
pub mod pidfile;
pub mod process;
pub mod recovery;
pub mod remote;
pub mod settings;
pub mod slot_copy;
pub mod sql;
mod tls;
pub mod tools;

pub use configure::{append_hba, restore_hba, set_hba_aside, write_config, write_pgpass};
pub use error::{PgError, Result};
pub use history::read_history;
pub use observe::observe_local;
pub use process::{LastExit, Postmaster, PostmasterState, StopOutcome};
pub use recovery::RecoveryFiles;
pub use remote::check_rewind_source;
pub use settings::{Credentials, HbaFile, LocalConnect, PgSettings};
pub use slot_copy::{install_slot_states, read_slot_states};
pub use sql::{ExtraUser, PendingRestart, Probe, ReplicationPeer, SlotReport, Sql};
pub use tools::{
    basebackup, controldata, initdb, move_data_dir_aside, rewind, run_script, wipe_data_dir, RewindOutcome, ScriptEnd,
};
