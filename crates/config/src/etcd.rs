//! The `etcd3` section: how to reach the etcd v3 cluster that holds the DCS state.
//!
//! Invariant kept here: a validated [`Etcd3`] names at least one endpoint; a configuration that
//! only has another DCS section (`consul`, ...) is refused rather than run without a DCS.
//!
//! Patroni's `etcd` section (the v2 API) is read as the `etcd3` one when there is no `etcd3`
//! section, with a warning: Rampart speaks only the v3 API, which every etcd 3.x serves on the
//! same client port (v2 is an opt-in extra there, and gone in 3.6), so the same hosts work. The
//! cluster's keys are then v3 keys: a Patroni still using the v2 API does not see them, so
//! members of one cluster must not mix the two.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::addr::HostPort;
use crate::check::Checker;
use crate::error::Problem;
use crate::raw::{RawEtcd3, OTHER_DCS};
use crate::secret::Secret;

/// etcd's default client port, used when a host is given without one.
pub const DEFAULT_ETCD_PORT: u16 = 2379;

/// The scheme used to talk to etcd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        })
    }
}

/// The `etcd3` section, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Etcd3 {
    /// The cluster members to try, from `hosts` or else `host` (never empty).
    pub hosts: Vec<HostPort>,
    /// `http` (default) or `https`.
    pub protocol: Protocol,
    /// etcd user, when etcd authentication is on.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<Secret>,
    /// CA bundle to verify etcd's certificate.
    pub cacert: Option<PathBuf>,
    /// Client certificate.
    pub cert: Option<PathBuf>,
    /// Client key.
    pub key: Option<PathBuf>,
}

impl Etcd3 {
    /// Endpoint URLs, e.g. `http://127.0.0.1:2379`.
    pub fn endpoints(&self) -> Vec<String> {
        self.hosts.iter().map(|h| format!("{}://{h}", self.protocol)).collect()
    }

    pub(crate) fn build(raw: Option<RawEtcd3>, v2: Option<RawEtcd3>, c: &mut Checker<'_>) -> Result<Etcd3, Problem> {
        let mut present: Vec<&str> = OTHER_DCS.iter().copied().filter(|k| c.tree().get(k).is_some()).collect();
        let (raw, section) = match (raw, v2) {
            (Some(raw), _) => (Some(raw), "etcd3"),
            (None, Some(v2)) if present.first() == Some(&"etcd") => {
                present.remove(0);
                c.note(
                    &["etcd"],
                    "etcd: Rampart speaks only etcd's v3 API: these hosts are used as etcd3 endpoints \
                     (etcd 3.x serves v3 on its client port); the cluster state is kept as v3 keys, \
                     invisible to a Patroni using the v2 API. Rename the section to etcd3 to silence this",
                );
                (Some(v2), "etcd")
            }
            (None, _) => (None, "etcd3"),
        };
        let Some(raw) = raw else {
            return Err(match present.first() {
                Some(&"etcd") => c.problem_about(&["etcd"], "etcd: expected a mapping with host or hosts"),
                Some(other) => c.problem_about(
                    &[other],
                    format!(
                        "{other} is not supported; Rampart keeps the cluster state in etcd v3 (use an etcd3 section)"
                    ),
                ),
                None => c.problem(&["etcd3"], "missing required section (Rampart keeps the cluster state in etcd v3)"),
            });
        };
        for other in present {
            c.note(&[other], format!("{other} section ignored: Rampart uses the etcd3 section only"));
        }

        let mut hosts = Vec::new();
        let (texts, path) = match raw.hosts.filter(|h| !h.0.is_empty()) {
            Some(list) => (list.0, [section, "hosts"]),
            None => (raw.host.into_iter().filter(|h| !h.trim().is_empty()).collect(), [section, "host"]),
        };
        for text in texts {
            let hp = HostPort::parse_with_default(&text, DEFAULT_ETCD_PORT)
                .ok_or_else(|| c.problem(&path, format!("expected host[:port], got {text:?}")))?;
            hosts.push(hp);
        }
        if hosts.is_empty() {
            return Err(c.problem(&[section], format!("no {section} host(s): set {section}.hosts or {section}.host")));
        }

        match (&raw.username, &raw.password) {
            (Some(_), None) => {
                return Err(c.problem(&[section, "password"], format!("missing ({section}.username is set)")))
            }
            (None, Some(_)) => {
                return Err(c.problem(&[section, "username"], format!("missing ({section}.password is set)")))
            }
            _ => {}
        }
        let protocol = raw.protocol.unwrap_or_default();
        if protocol == Protocol::Http && (raw.cacert.is_some() || raw.cert.is_some()) {
            c.warn(
                &[section, "protocol"],
                format!("is http, so {section}.cacert and {section}.cert are not used; set protocol: https"),
            );
        }
        Ok(Etcd3 {
            hosts,
            protocol,
            username: raw.username,
            password: raw.password,
            cacert: raw.cacert,
            cert: raw.cert,
            key: raw.key,
        })
    }
}
