//! `rampart check-config FILE`: validate a configuration (with its environment overrides) and
//! report every warning, without touching PostgreSQL or the DCS.

use std::path::Path;

use anyhow::Result;

/// Loads and validates; prints warnings to stderr and a one-line verdict to stdout.
pub fn run(path: &Path) -> Result<()> {
    let loaded = rampart_config::load(path)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let c = &loaded.config;
    println!(
        "{}: valid configuration for member '{}' of cluster '{}' (DCS {})",
        path.display(),
        c.name,
        c.scope,
        c.etcd_endpoints().join(",")
    );
    Ok(())
}
