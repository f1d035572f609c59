//! Copying logical slots to a replica, the way Patroni does on PostgreSQL 11 to 16: PostgreSQL 15
//! cannot create a logical slot in recovery, but it restores any slot it finds in `pg_replslot`
//! at start. So the state file of the slot is read from the leader
//! (`pg_read_binary_file('pg_replslot/<name>/state')`) and written into the stopped replica's
//! data directory; the replica then keeps the slot and the core advances it every cycle.
//!
//! Invariants:
//! * only names PostgreSQL accepts as slot names reach a path, so a name cannot escape
//!   `pg_replslot`;
//! * a copy is installed atomically (written as `state.tmp`, fsynced, renamed, directory
//!   fsynced): a crash leaves either no slot or a complete one, never a torn file;
//! * the copy starts at the position the leader had saved to disk, which is never ahead of what
//!   its consumer confirmed, so it can only repeat changes, never skip them. Its `catalog_xmin`
//!   stays protected once the replica runs with `hot_standby_feedback` (forced on by the agent
//!   while logical slots are configured), which holds the catalog rows it needs on the primary.

use std::io::Write;
use std::path::{Path, PathBuf};

use rampart_core::slots::is_valid_slot_name;
use rampart_core::Upstream;

use crate::error::{PgError, Result};
use crate::settings::PgSettings;

/// Largest state file we accept (PostgreSQL's is a few hundred bytes).
const MAX_STATE: i64 = 64 * 1024;

/// Reads the on-disk state of the logical slots `names` from `leader`, connecting with the
/// rewind credentials (superuser, or a role granted `pg_read_binary_file`, as for pg_rewind). A
/// slot the leader does not have (any more) is left out.
pub async fn read_slot_states(
    settings: &PgSettings,
    leader: &Upstream,
    names: &[String],
) -> Result<Vec<(String, Vec<u8>)>> {
    const READ: &str = "SELECT pg_catalog.pg_read_binary_file('pg_replslot/' || slot_name || '/state', 0, $2, false) \
        FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical' AND NOT temporary";
    let client = crate::remote::connect(settings, leader).await?;
    let limit = crate::remote::limit(settings);
    let mut out = Vec::new();
    for name in names {
        if !is_valid_slot_name(name) {
            return Err(PgError::Settings(format!("{name:?} is not a valid slot name")));
        }
        let rows = match tokio::time::timeout(limit, client.query(READ, &[name, &MAX_STATE])).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                return Err(PgError::Query {
                    what: "reading a logical slot's state on the leader",
                    detail: e.to_string(),
                })
            }
            Err(_) => {
                return Err(PgError::QueryTimeout {
                    what: "reading a logical slot's state on the leader",
                    timeout: limit,
                })
            }
        };
        if let Some(row) = rows.first() {
            out.push((name.clone(), row.get::<_, Vec<u8>>(0)));
        }
    }
    Ok(out)
}

/// Installs slot state files into the stopped server's `data_dir/pg_replslot/<name>/state`,
/// replacing whatever was there under that name.
pub fn install_slot_states(data_dir: &Path, states: &[(String, Vec<u8>)]) -> Result<()> {
    let base = data_dir.join("pg_replslot");
    for (name, state) in states {
        if !is_valid_slot_name(name) {
            return Err(PgError::Settings(format!("{name:?} is not a valid slot name")));
        }
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| PgError::io("creating", &dir, e))?;
        set_private(&dir, 0o700)?;
        let tmp = dir.join("state.tmp");
        let path = dir.join("state");
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| PgError::io("creating", &tmp, e))?;
            f.write_all(state).map_err(|e| PgError::io("writing", &tmp, e))?;
            f.sync_all().map_err(|e| PgError::io("syncing", &tmp, e))?;
        }
        set_private(&tmp, 0o600)?;
        std::fs::rename(&tmp, &path).map_err(|e| PgError::io("renaming", &tmp, e))?;
        sync_dir(&dir)?;
    }
    sync_dir(&base)
}

fn set_private(path: &PathBuf, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| PgError::io("chmod", path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| PgError::io("syncing", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_a_state_file_privately_and_replaces_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pg_replslot")).unwrap();
        install_slot_states(dir.path(), &[("cdc".into(), b"old".to_vec())]).unwrap();
        install_slot_states(dir.path(), &[("cdc".into(), b"new".to_vec())]).unwrap();
        let path = dir.path().join("pg_replslot/cdc/state");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!dir.path().join("pg_replslot/cdc/state.tmp").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_name_that_could_leave_pg_replslot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = install_slot_states(dir.path(), &[("../../etc".into(), vec![1])]).unwrap_err();
        assert!(e.to_string().contains("not a valid slot name"), "{e}");
    }
}
