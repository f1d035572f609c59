//! `rampart`: highly available PostgreSQL in one binary.
//!
//! This is the binary's edge: argument parsing, logging set-up and error reporting (anyhow lives
//! only here and in the command modules). The subcommands:
//! * `agent CONFIG_FILE`: the HA agent beside one PostgreSQL ([`agent`]);
//! * `check-config FILE`: validate a configuration and exit;
//! * `list -c FILE`: the member table ([`cli::list`]);
//! * `demo`: a whole three-node cluster on this machine ([`demo`]);
//! * `version`.

mod agent;
mod cli;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Highly available PostgreSQL: a Patroni-compatible agent, its CLI and a demo cluster.
#[derive(Parser, Debug)]
#[command(name = "rampart", version, propagate_version = true, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output format of commands that print cluster state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people.
    Pretty,
    /// JSON for programs.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HA agent for the PostgreSQL described in CONFIG_FILE (Patroni's YAML format).
    Agent {
        /// Path of the node's configuration file.
        config_file: PathBuf,
    },
    /// Validate a configuration file (and PATRONI_*/RAMPART_* overrides) without touching anything.
    CheckConfig {
        /// Path of the configuration file.
        config_file: PathBuf,
    },
    /// Show the cluster's members, their roles, states, timelines and lag (like `patronictl list`).
    List {
        /// Configuration file to find the cluster in (its `scope`, `namespace` and `etcd3` section).
        #[arg(short = 'c', long = "config-file")]
        config_file: PathBuf,
        /// Output format.
        #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
        format: Format,
    },
    /// Start etcd and a three-node cluster on this machine and keep it running until Ctrl-C.
    Demo {
        /// Working directory for data, configs and logs (created; kept after exit for inspection).
        #[arg(long, default_value = "/tmp/rampart-demo")]
        dir: PathBuf,
        /// Number of PostgreSQL nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
        nodes: u8,
    },
    /// Print the version.
    Version,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only on a terminal: log files and journald get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            println!("rampart {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::CheckConfig { config_file } => cli::check_config::run(&config_file),
        Command::Agent { config_file } => {
            init_logging();
            agent::run(&config_file)
        }
        Command::List { config_file, format } => cli::list::run(&config_file, format),
        Command::Demo { dir, nodes } => {
            init_logging();
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
