//! One command's connection to its cluster: the etcd handle (through the same [`Dcs`] trait the
//! agent uses, so keys and values are written exactly as the agent writes them) and, on first
//! use, the REST client.

use anyhow::{Context, Result};
use rampart_core::Cluster;
use rampart_dcs::{Dcs, EtcdDcs};
use tokio::time::Instant;

use super::rest::Rest;
use super::target::{Target, OP_DEADLINE};

/// Runs a command's async body on a single-threaded runtime.
pub fn block_on<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(f)
}

/// The name the command uses as its DCS "member": it never writes a member key, but the DCS
/// handle needs a name.
const CTL_NAME: &str = "rampart-ctl";

/// A connected command.
pub struct Session {
    /// Where and what.
    pub target: Target,
    /// The DCS.
    pub dcs: EtcdDcs,
    rest: Option<Rest>,
}

impl Session {
    /// Prepares the etcd client (no request is sent yet).
    pub async fn open(target: Target) -> Result<Session> {
        let dcs = EtcdDcs::connect(target.etcd.clone(), target.prefix(), CTL_NAME.into(), 30)
            .await
            .with_context(|| format!("connecting to etcd ({})", target.endpoints()))?;
        Ok(Session { target, dcs, rest: None })
    }

    /// The cluster name.
    pub fn scope(&self) -> &str {
        &self.target.scope
    }

    /// A deadline for one DCS operation.
    pub fn deadline(&self) -> Instant {
        Instant::now() + OP_DEADLINE
    }

    /// One consistent read of the cluster. Keys that do not parse are reported on stderr.
    pub async fn cluster(&self) -> Result<Cluster> {
        let c = self.dcs.read_cluster(self.deadline()).await.with_context(|| {
            format!("reading cluster '{}' from etcd ({})", self.target.scope, self.target.endpoints())
        })?;
        for p in &c.problems {
            eprintln!("warning: {p}");
        }
        Ok(c)
    }

    /// The REST client, built on first use (so that commands which never call a member are not
    /// affected by a wrong `ctl.certfile`).
    pub fn rest(&mut self) -> Result<&Rest> {
        if self.rest.is_none() {
            self.rest = Some(Rest::new(&self.target.rest)?);
        }
        Ok(self.rest.as_ref().expect("just set"))
    }
}

/// The local time as patronictl prints it before an action's result: `2024-05-01 10:00:00.123456`.
pub fn timestamp() -> String {
    jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S%.6f").to_string()
}
