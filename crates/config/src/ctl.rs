//! The `ctl` section (how operator commands call the members' REST APIs) and [`CtlConfig`], the
//! reading of a configuration file for operator commands.
//!
//! Operator commands (`rampart list`, `switchover`, ...) read either a member's full configuration
//! or a small `patronictl.yaml` that holds nothing but `scope`, `etcd3` and `ctl`. So unlike
//! [`crate::Config`], a [`CtlConfig`] requires nothing: every missing piece is reported by the
//! command that needs it (which can also take it from the command line). What is present is
//! still checked, with the same located, password-free messages as the agent's configuration.
//!
//! Invariant kept here: REST credentials (from `ctl.authentication`, or else
//! `restapi.authentication`, as patronictl does) stay in [`Secret`]s.

use std::path::PathBuf;

use crate::check::Checker;
use crate::error::Problem;
use crate::etcd::Etcd3;
use crate::raw::{RawConfig, RawCredentials, RawCtl};
use crate::secret::{Credentials, Secret};

/// The `ctl` section, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ctl {
    /// Basic-auth credentials for the members' REST APIs (`ctl.authentication`).
    pub authentication: Option<Credentials>,
    /// Do not verify the REST APIs' TLS certificates.
    pub insecure: bool,
    /// CA bundle that signed the REST APIs' certificates.
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) presented to REST APIs that ask for one.
    pub certfile: Option<PathBuf>,
    /// Private key of `certfile`, when not in `certfile` itself.
    pub keyfile: Option<PathBuf>,
    /// Password of an encrypted `keyfile` (kept for compatibility; encrypted keys are refused).
    pub keyfile_password: Option<Secret>,
}

impl Ctl {
    pub(crate) fn build(raw: Option<RawCtl>, c: &mut Checker<'_>) -> Result<Ctl, Problem> {
        let raw = raw.unwrap_or_default();
        let authentication = credentials(raw.authentication, "ctl", c)?;
        if raw.keyfile.is_some() && raw.certfile.is_none() {
            return Err(c.problem(&["ctl", "keyfile"], "set without ctl.certfile"));
        }
        if raw.keyfile_password.is_some() {
            c.warn(
                &["ctl", "keyfile_password"],
                "encrypted private keys are not supported; give an unencrypted ctl.keyfile",
            );
        }
        Ok(Ctl {
            authentication,
            insecure: raw.insecure.unwrap_or(false),
            cacert: raw.cacert,
            certfile: raw.certfile,
            keyfile: raw.keyfile,
            keyfile_password: raw.keyfile_password,
        })
    }
}

/// `<section>.authentication`: both keys or neither.
pub(crate) fn credentials(
    raw: Option<RawCredentials>,
    section: &str,
    c: &Checker<'_>,
) -> Result<Option<Credentials>, Problem> {
    let Some(a) = raw else { return Ok(None) };
    Ok(Some(Credentials {
        username: c.require_text(a.username, &[section, "authentication", "username"])?,
        password: Some(c.require(a.password, &[section, "authentication", "password"])?),
    }))
}

/// What an operator command takes from a configuration file. Everything is optional: a member's
/// full configuration and a bare `patronictl.yaml` both qualify.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CtlConfig {
    /// `scope`, the cluster name.
    pub scope: Option<String>,
    /// `name`, when the file is a member's configuration (`rampart backup` runs as that member).
    pub name: Option<String>,
    /// `namespace`, defaulted as for the agent.
    pub namespace: String,
    /// The `etcd3` section, when present.
    pub etcd3: Option<Etcd3>,
    /// The `ctl` section.
    pub ctl: Ctl,
    /// `restapi.authentication`: used for REST calls when `ctl.authentication` is not set.
    pub restapi_authentication: Option<Credentials>,
    /// `restapi.cafile`: used to verify REST APIs when `ctl.cacert` is not set.
    pub restapi_cafile: Option<PathBuf>,
}

impl CtlConfig {
    /// The credentials for REST calls: `ctl.authentication`, else `restapi.authentication`.
    pub fn rest_credentials(&self) -> Option<&Credentials> {
        self.ctl.authentication.as_ref().or(self.restapi_authentication.as_ref())
    }

    /// The CA bundle for REST calls: `ctl.cacert`, else `restapi.cafile`.
    pub fn rest_cacert(&self) -> Option<&PathBuf> {
        self.ctl.cacert.as_ref().or(self.restapi_cafile.as_ref())
    }

    pub(crate) fn build(raw: RawConfig, c: &mut Checker<'_>) -> Result<CtlConfig, Problem> {
        let scope = match raw.scope {
            Some(s) if s.contains('/') => {
                return Err(
                    c.problem(&["scope"], format!("{s:?} must not contain '/' (it is one segment of a DCS key)"))
                )
            }
            Some(s) if s.trim().is_empty() => return Err(c.problem(&["scope"], "must not be empty")),
            other => other,
        };
        let namespace = raw.namespace.unwrap_or_else(|| crate::config::DEFAULT_NAMESPACE.to_string());
        let etcd3 = match (raw.etcd3, raw.etcd) {
            (None, None) => None,
            (etcd3, etcd) => Some(Etcd3::build(etcd3, etcd, c)?),
        };
        let (restapi_authentication, restapi_cafile) = match raw.restapi {
            Some(r) => (credentials(r.authentication, "restapi", c)?, r.cafile),
            None => (None, None),
        };
        let ctl = Ctl::build(raw.ctl, c)?;
        let name = raw.name.filter(|n| !n.trim().is_empty());
        Ok(CtlConfig { scope, name, namespace, etcd3, ctl, restapi_authentication, restapi_cafile })
    }
}
