//! Operator commands: thin wrappers that read the configuration, talk to the DCS and print.

pub mod check_config;
pub mod list;
