//! Operator commands, patronictl's verbs: thin layers that read the configuration, talk to the
//! DCS (through the agent's own `Dcs` trait) and to the members' REST APIs, and print.
//!
//! Shared pieces: [`argv`] (patronictl's options before the verb), [`target`] (which cluster: `-c`, `--dcs`, `--scope`), [`session`] (the
//! connection), [`rest`] (REST calls), [`prompt`] (questions, safe defaults, no questions without
//! a terminal), [`members`] (choosing members), [`schedule`] (`--scheduled`), and the pure
//! formatting helpers [`table`], [`yaml`] and [`diff`]. One module per verb holds its flow; its
//! decisions and request bodies are pure functions with unit tests beside them.

pub mod argv;
pub mod backup;
pub mod check_config;
pub mod config_patch;
pub mod diff;
pub mod dsn;
pub mod edit_config;
pub mod flush;
pub mod generate;
pub mod history;
pub mod list;
pub mod members;
pub mod pause;
pub mod prompt;
pub mod query;
pub mod reinit;
pub mod reload;
pub mod remove;
pub mod rest;
pub mod restart;
pub mod schedule;
pub mod session;
pub mod standby;
pub mod switchover;
pub mod table;
pub mod target;
pub mod version;
pub mod yaml;

/// A random index below `n` (`restart --any`), from the standard library's per-process random
/// hash keys: no random-number crate for one pick.
pub fn random_index(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    if n == 0 {
        return 0;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
    );
    (h.finish() % n as u64) as usize
}
