//! A base backup of a running server taken the way an operator takes one (`pg_basebackup` as the
//! replication role, without WAL: the archive has it), into a directory the `postgres` user owns,
//! for the stories that restore a backup (point-in-time bootstrap, standby clusters).

use std::path::Path;
use std::time::Duration;

/// Copies the server at 127.0.0.1:`port` into `dest` (removed first). The replication role is
/// created right after a cluster's first start, so a refusal is tried again for up to 30 s.
/// Returns whether the copy was made.
pub fn take(port: u16, dest: &Path) -> bool {
    let copied = super::wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        let _ = std::fs::remove_dir_all(dest);
        let out = std::process::Command::new(super::pg_bin_dir().join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                super::REPLICATION_USER,
                "-X",
                "none",
                "-c",
                "fast",
            ])
            .arg("-D")
            .arg(dest)
            .env("PGPASSWORD", super::REPLICATION_PASSWORD)
            .output()
            .expect("pg_basebackup runs");
        if !out.status.success() {
            println!("pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    });
    copied
        && std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dest)
            .status()
            .is_ok_and(|s| s.success())
}

/// A replica creation or bootstrap method's command (`postgresql.<method>.command`): a script in
/// `dir` that copies `backup` into the `--datadir` it is given.
pub fn restore_script(dir: &Path, backup: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("restore.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nset -e\nfor a in \"$@\"; do case \"$a\" in --datadir=*) d=\"${{a#--datadir=}}\" ;; esac; done\n\
             mkdir -p \"$d\"\ncp -a {}/. \"$d\"/\nchmod 700 \"$d\"\n",
            backup.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}
