//! An S3-compatible object store on 127.0.0.1 for the backup tests: moto's server (PyPI's `moto`,
//! in the venv `scripts/setup.sh` makes) over HTTPS with a self-signed certificate, because
//! pgBackRest 2.45 speaks only HTTPS to S3.
//!
//! moto runs through `tests/fixtures/moto_s3.py`, which closes each TLS connection properly (the
//! fixture says why pgBackRest needs that). The server keeps everything in memory: once stopped,
//! its buckets are gone. It is SIGKILLed by PID when the handle is dropped, and its log is
//! printed if the test is failing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::LoggedChild;
use super::python::PYTHON;

/// The region, access key and secret key clients use (moto accepts any).
pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "rampart-test";
pub const SECRET_KEY: &str = "rampart-test-secret";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/moto_s3.py")
}

/// One moto server, listening on `https://127.0.0.1:<port>`.
#[derive(Debug)]
pub struct S3Server {
    proc: LoggedChild,
    port: u16,
}

impl S3Server {
    /// Makes a certificate for 127.0.0.1 in `dir` with openssl, starts the server on a free port
    /// (its log `dir/moto.log`) and waits until it accepts connections.
    pub fn start(dir: &Path) -> S3Server {
        assert!(Path::new(PYTHON).exists(), "{PYTHON} is missing: run scripts/setup.sh");
        let (cert, key) = (dir.join("s3-cert.pem"), dir.join("s3-key.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("running openssl");
        assert!(out.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = super::free_port();
        let mut cmd = Command::new(PYTHON);
        cmd.arg(fixture()).args(["serve", "127.0.0.1", &port.to_string()]).arg(&cert).arg(&key);
        cmd.env("PYTHONDONTWRITEBYTECODE", "1").current_dir(dir);
        let mut proc = LoggedChild::spawn("moto S3 server", cmd, &dir.join("moto.log"));
        assert!(proc.wait_listening(port, Duration::from_secs(60)), "moto's server did not listen on {port}");
        S3Server { proc, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// Creates `bucket` with boto3 (retrying while the server starts up); panics if it cannot.
    pub fn create_bucket(&self, bucket: &str) {
        let out = Command::new("timeout")
            .args(["-k", "5", "90", PYTHON])
            .arg(fixture())
            .args(["create-bucket", &self.port.to_string(), bucket])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("running the bucket client");
        assert!(
            out.status.success(),
            "creating bucket {bucket} on {} failed:\n{}{}",
            self.endpoint(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Stops the server (SIGKILL by PID): the store is unreachable, and its contents are lost.
    pub fn stop(&mut self) {
        self.proc.stop();
    }
}
