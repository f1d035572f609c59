//! `rampart demo` (being written).
use std::path::Path;
/// Placeholder.
pub fn run(_dir: &Path, _nodes: u8) -> anyhow::Result<()> {
    anyhow::bail!("demo is not implemented yet")
}
