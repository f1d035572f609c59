//! Python clients from PyPI (psycopg 3, asyncpg, SQLAlchemy, in the venv `scripts/setup.sh`
//! installs) running the workloads under `tests/fixtures/`.

use std::path::Path;
use std::process::Command;

use super::proxy::{APP_PASSWORD, APP_USER};

/// The venv's Python, with psycopg 3, asyncpg and SQLAlchemy.
pub const PYTHON: &str = "/opt/rampart-venv/bin/python";

/// Runs the fixture `script` with `steps` (none: all of them) against `127.0.0.1:port` as the
/// app user: its output lines. Fails the test if it does not exit 0 within two minutes.
pub fn run_script(script: &str, port: u16, steps: &[&str]) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(script);
    assert!(Path::new(PYTHON).exists(), "{PYTHON} is missing: run scripts/setup.sh");
    // `timeout` (a child of the test, stopped with it) ends a client stuck on a proxy that
    // never answers.
    let out = Command::new("timeout")
        .args(["-k", "5", "120", PYTHON])
        .arg(&path)
        .args(steps)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", APP_USER)
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGDATABASE", "postgres")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {PYTHON} {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} {steps:?} on port {port} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}
