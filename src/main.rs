//! `rampart`: highly available PostgreSQL in one binary.
//!
//! This is the binary's edge: argument parsing, logging set-up ([`logging`]) and error reporting
//! (anyhow lives only here and in the command modules). The subcommands:
//! * `agent CONFIG_FILE`: the HA agent beside one PostgreSQL ([`agent`]);
//! * `check-config [--proxy] FILE`: validate a configuration (a member's or a proxy's) and exit;
//! * the operator commands, patronictl's verbs ([`cli`]): `list`, `topology`, `switchover`,
//!   `failover`, `restart`, `reload`, `reinit`, `pause`, `resume`, `edit-config`, `show-config`,
//!   `history`, `dsn`, `query`, `flush`, `remove`, `version`;
//! * `completion bash|zsh|fish` and the hidden `generate-man DIR` ([`cli::generate`]);
//! * `proxy -c FILE`: the PostgreSQL-protocol router that follows the leader ([`proxy`]);
//! * `demo`: a whole three-node cluster on this machine ([`demo`]).

mod agent;
mod cli;
mod demo;
mod logging;
mod proxy;
mod proxy_vip;
mod vip;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Highly available PostgreSQL: a Patroni-compatible agent, its CLI and a demo cluster.
#[derive(Parser, Debug)]
#[command(name = "rampart", version, propagate_version = true, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HA agent for the PostgreSQL described in CONFIG_FILE (Patroni's YAML format).
    Agent {
        /// Path of the node's configuration file.
        config_file: PathBuf,
    },
    /// Validate a configuration file (and PATRONI_*/RAMPART_* overrides) without touching anything.
    CheckConfig(cli::check_config::CheckArgs),
    /// Show the cluster's members, their roles, states, timelines and lag (like `patronictl list`).
    List(cli::list::ListArgs),
    /// Show the members as a replication tree: the leader, then who streams from whom.
    Topology(cli::list::TopologyArgs),
    /// Hand the leader role to a replica, now or at a scheduled time (POST /switchover).
    Switchover(cli::switchover::SwitchoverArgs),
    /// Promote a named replica, with or without a leader (POST /failover).
    Failover(cli::switchover::FailoverArgs),
    /// Restart PostgreSQL on members, now or at a scheduled time (POST /restart).
    Restart(cli::restart::RestartArgs),
    /// Make members re-read their configuration and reload PostgreSQL (POST /reload).
    Reload(cli::reload::ReloadArgs),
    /// Wipe replicas and clone them again (POST /reinitialize).
    Reinit(cli::reinit::ReinitArgs),
    /// Put the cluster in maintenance mode: no automatic failover (PATCH /config pause).
    Pause(cli::pause::PauseArgs),
    /// Leave maintenance mode.
    Resume(cli::pause::PauseArgs),
    /// Make this cluster a standby cluster of another one: its leader stops taking writes and
    /// replicates from --host (and/or --restore-command), keeping the leader lock.
    DemoteCluster(cli::standby::DemoteArgs),
    /// Make a standby cluster run on its own: its standby leader is promoted to a writable primary.
    PromoteCluster(cli::standby::PromoteArgs),
    /// Change the cluster-wide configuration in the DCS (-s/-p, --apply, --replace or $EDITOR).
    EditConfig(cli::edit_config::EditArgs),
    /// Print the cluster-wide configuration from the DCS, as YAML.
    ShowConfig(cli::edit_config::ShowArgs),
    /// Show the timeline history: every failover and switchover (TL, LSN, reason, time, leader).
    History(cli::history::HistoryArgs),
    /// Print a connection string (host=... port=...) for the leader, a member or a role.
    Dsn(cli::dsn::DsnArgs),
    /// Run SQL on a member chosen by name or role and print the result (like `patronictl query`).
    Query(cli::query::QueryArgs),
    /// Discard scheduled restarts or a pending switchover: flush [MEMBER...] restart|switchover.
    Flush(cli::flush::FlushArgs),
    /// Delete every key of a cluster from the DCS (asks you to type the cluster name).
    Remove(cli::remove::RemoveArgs),
    /// Run a backup command on the leader, or on one replica, and only there (for cron on every
    /// member): backup [--role leader|replica] -- COMMAND [ARG...].
    Backup(cli::backup::BackupArgs),
    /// Start etcd and a three-node cluster on this machine and keep it running until Ctrl-C.
    Demo {
        /// Working directory for data, configs and logs (created; kept after exit for inspection).
        #[arg(long, default_value = "/tmp/rampart-demo")]
        dir: PathBuf,
        /// Number of PostgreSQL nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
        nodes: u8,
    },
    /// Route PostgreSQL clients to the leader (read-write port) or to replicas (read-only port).
    Proxy {
        /// Configuration file with `scope`, `etcd3` and a `proxy` section.
        #[arg(short = 'c', long = "config")]
        config_file: PathBuf,
    },
    /// Print the version; with a cluster (-c, --dcs, --scope) also each member's versions.
    Version(cli::version::VersionArgs),
    /// Print a shell completion script for bash, zsh or fish to stdout.
    Completion(cli::generate::CompletionArgs),
    /// Write the man pages (rampart.1, rampart-VERB.1) into a directory (used by `make deb`).
    #[command(hide = true)]
    GenerateMan(cli::generate::ManArgs),
}

fn main() -> ExitCode {
    // reqwest is built without a default TLS crypto provider: install ring (the provider
    // etcd-client already uses) before anything builds an HTTP client.
    cli::rest::install_crypto_provider();
    // `rampart -c FILE list` as `patronictl -c FILE list`: see cli::argv.
    let cli = Cli::parse_from(cli::argv::hoist_group_options(std::env::args_os().collect()));
    let result = match cli.command {
        Command::Version(args) => cli::version::run(args),
        Command::Completion(args) => cli::generate::run_completion(args),
        Command::GenerateMan(args) => cli::generate::run_man(args),
        Command::CheckConfig(args) => cli::check_config::run(args),
        // The agent and the proxy start logging once they have read their `log` section.
        Command::Agent { config_file } => agent::run(&config_file),
        Command::List(args) => cli::list::run(args),
        Command::Topology(args) => cli::list::run_topology(args),
        Command::Switchover(args) => cli::switchover::run_switchover(args),
        Command::Failover(args) => cli::switchover::run_failover(args),
        Command::Restart(args) => cli::restart::run(args),
        Command::Reload(args) => cli::reload::run(args),
        Command::Reinit(args) => cli::reinit::run(args),
        Command::Pause(args) => cli::pause::run(args, true),
        Command::Resume(args) => cli::pause::run(args, false),
        Command::DemoteCluster(args) => cli::standby::run_demote(args),
        Command::PromoteCluster(args) => cli::standby::run_promote(args),
        Command::EditConfig(args) => cli::edit_config::run_edit(args),
        Command::ShowConfig(args) => cli::edit_config::run_show(args),
        Command::History(args) => cli::history::run(args),
        Command::Dsn(args) => cli::dsn::run(args),
        Command::Query(args) => cli::query::run(args),
        Command::Flush(args) => cli::flush::run(args),
        Command::Remove(args) => cli::remove::run(args),
        Command::Backup(args) => cli::backup::run(args),
        Command::Proxy { config_file } => proxy::run(&config_file),
        Command::Demo { dir, nodes } => {
            logging::init_stderr();
            demo::run(&dir, nodes)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart: {e:#}");
            ExitCode::FAILURE
        }
    }
}
