//! `etcdctl` against a running [`Etcd`]: what a test reads or writes in etcd without going
//! through Rampart's own client (so that a bug there cannot hide itself).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::Etcd;

/// The etcdctl binary: `/usr/bin/etcdctl`, or `RAMPART_ETCDCTL_BIN`.
pub fn etcdctl_bin() -> PathBuf {
    std::env::var_os("RAMPART_ETCDCTL_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/etcdctl".into())
}

impl Etcd {
    /// Runs `etcdctl --endpoints=<endpoint> <args>` (API v3) and returns its output. With TLS
    /// it presents the client certificate: once etcd's authentication is on, etcd takes the
    /// certificate's name (`rampart-client`) for the user.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(etcdctl_bin());
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--dial-timeout=3s")
            .arg("--command-timeout=5s");
        if let Some(tls) = self.tls() {
            cmd.arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.client_cert.display()))
                .arg(format!("--key={}", tls.client_key.display()));
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", etcdctl_bin().display()))
    }

    /// The value of `key`, or `None` when absent or etcd does not answer.
    pub fn get(&self, key: &str) -> Option<String> {
        self.try_get(key).ok().flatten()
    }

    /// The value of `key` (`None`: absent), or why this member did not answer.
    pub fn try_get(&self, key: &str) -> Result<Option<String>, String> {
        let out = self.etcdctl(&["get", "--print-value-only", key]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let value = text.strip_suffix('\n').unwrap_or(&text);
        Ok((!out.stdout.is_empty()).then(|| value.to_owned()))
    }

    /// Sets `key` to `value`; panics when etcdctl fails.
    pub fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl(&["put", key, value]);
        assert!(out.status.success(), "etcdctl put {key} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Every key in etcd, sorted; panics when etcdctl fails (so that "no keys" really means none).
    pub fn all_keys(&self) -> Vec<String> {
        let out = self.etcdctl(&["get", "--from-key", "", "--keys-only"]);
        assert!(out.status.success(), "etcdctl get --from-key '' failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut keys: Vec<String> =
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
        keys.sort();
        keys
    }

    /// All keys under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.etcdctl(&["get", "--prefix", "--keys-only", prefix]);
        let mut keys: Vec<String> =
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
        keys.sort();
        keys
    }
}
