//! `rampart check-config [--proxy] FILE`: validate a configuration (with its environment
//! overrides) and report every warning, without touching PostgreSQL or the DCS.
//!
//! Without `--proxy` the file is read as a member's (what `rampart agent` reads); with it, as
//! `rampart proxy` reads it (`scope`, `etcd3` and a `proxy` section; an application host's file),
//! and the files the proxy would open are checked too: its TLS certificate and key are read, the
//! access log's directory must exist. Nothing is written. A member check that fails only for a
//! missing key of a file that is a valid proxy configuration says so, so the operator tries
//! `--proxy`. PostgreSQL parameter values (`postgresql.parameters` and
//! `bootstrap.dcs.postgresql.parameters`) are checked against the settings of the PostgreSQL in
//! `postgresql.bin_dir` (as the agent finds it), as that server would read them.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

/// `rampart check-config` arguments.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Read the file as `rampart proxy` does (an application host's file with `scope`, `etcd3`
    /// and a `proxy` section) instead of as a member's.
    #[arg(long)]
    pub proxy: bool,
    /// Path of the configuration file.
    pub config_file: PathBuf,
}

/// Loads and validates; prints warnings to stderr and a one-line verdict to stdout.
pub fn run(args: CheckArgs) -> Result<()> {
    if args.proxy {
        return run_proxy(&args.config_file);
    }
    let path = &args.config_file;
    let loaded = match rampart_config::load(path) {
        Ok(l) => l,
        Err(e) => return Err(with_proxy_hint(e, path)),
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let c = &loaded.config;
    for note in parameter_values(path, c)? {
        eprintln!("warning: {note}");
    }
    println!(
        "{}: valid configuration for member '{}' of cluster '{}' (DCS {})",
        path.display(),
        c.name,
        c.scope,
        c.etcd_endpoints().join(",")
    );
    Ok(())
}

/// Checks the PostgreSQL parameter values of a member's file (`postgresql.parameters` and
/// `bootstrap.dcs.postgresql.parameters`) as the PostgreSQL in its `bin_dir` (found as the agent
/// finds it) would read them: the remarks, or an error naming the file, the parameter and why.
/// `rampart agent` runs the same check before touching anything.
pub fn parameter_values(path: &Path, c: &rampart_config::Config) -> Result<Vec<String>> {
    let bin_dir = c.postgresql.bin_dir.clone().unwrap_or_else(rampart_pg::settings::default_bin_dir);
    let mut notes = Vec::new();
    for (section, params) in
        [("postgresql", &c.postgresql.parameters), ("bootstrap.dcs.postgresql", &c.bootstrap.dcs.postgresql.parameters)]
    {
        let found = rampart_pg::guc::check_with(&bin_dir, params)
            .map_err(|e| anyhow!("{}: {section}.parameters.{e}", path.display()))?;
        notes.extend(found.into_iter().map(|n| format!("{}: {section}.parameters: {n}", path.display())));
    }
    Ok(notes)
}

/// A member check's error, with a hint when the file is a valid proxy configuration that lacks
/// only member keys.
fn with_proxy_hint(e: rampart_config::ConfigError, path: &Path) -> anyhow::Error {
    let missing =
        matches!(&e, rampart_config::ConfigError::Invalid { message, .. } if message.starts_with("missing required"));
    if missing && rampart_config::load_proxy(path).is_ok() {
        return anyhow!(
            "{e} (the file is a valid `rampart proxy` configuration: check it with `rampart check-config --proxy {}`)",
            path.display()
        );
    }
    e.into()
}

fn run_proxy(path: &Path) -> Result<()> {
    let loaded = rampart_config::load_proxy(path)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let c = &loaded.config;
    let p = &c.proxy;
    if let Some(cert) = &p.certfile {
        rampart_proxy::tls::server_config(cert, p.keyfile.as_deref())?;
    }
    if let Some(log) = &p.access_log {
        let dir = log.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            bail!("{}: proxy.access_log: directory {} does not exist", path.display(), dir.display());
        }
    }
    let opt = |a: &Option<rampart_config::HostPort>| a.as_ref().map_or("-".to_string(), ToString::to_string);
    println!(
        "{}: valid proxy configuration for cluster '{}' (DCS {}; read-write {}, read-only {}, admin {})",
        path.display(),
        c.scope,
        c.etcd3.endpoints().join(","),
        p.listen,
        opt(&p.listen_ro),
        opt(&p.listen_admin)
    );
    Ok(())
}
