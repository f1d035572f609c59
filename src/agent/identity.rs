//! The start-up check that no live agent already runs under this member's name (the rule and
//! its reasons: [`rampart_core::identity`]).
//!
//! It runs after the DCS client is connected and before the REST API is bound or anything else is
//! touched: bound first, our own API would answer for the name; later, the loop could already
//! have acted on the other agent's lock or PostgreSQL. Like Patroni, the agent waits for the DCS
//! to answer rather than start blind: with the DCS unreachable a duplicate could not be told from
//! a restart, and the loop's first steps (a primary without a confirmed lock is stopped) would
//! act on the other agent's PostgreSQL.

use std::time::Duration;

use anyhow::{bail, Result};
use rampart_api::HttpProbe;
use rampart_core::identity::{already_running_message, name_in_use, ApiAnswer};
use rampart_dcs::{Dcs, EtcdDcs};
use tracing::warn;

use crate::logging::critical;

/// Patroni's timeout for asking the existing member (`ensure_unique_name`).
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between two attempts to read the cluster while the DCS does not answer.
const DCS_RETRY: Duration = Duration::from_secs(2);

/// Fails (after logging Patroni's CRITICAL line) when a live agent already runs as `name`.
pub async fn ensure_unique_name(dcs: &EtcdDcs, probe: &HttpProbe, name: &str, endpoints: &str) -> Result<()> {
    let cluster = loop {
        match dcs.read_cluster(dcs.op_deadline()).await {
            Ok(c) => break c,
            Err(e) => {
                warn!("cannot read the cluster to check that no other agent runs as '{name}': etcd {endpoints} unreachable ({e}); waiting");
                tokio::time::sleep(DCS_RETRY).await;
            }
        }
    };
    let Some(member) = cluster.member(name) else { return Ok(()) };
    let answer = match probe.get_any(&member.data.api_url, ASK_TIMEOUT).await {
        Ok(body) => ApiAnswer::Answered(body),
        Err(_) => ApiAnswer::Silent,
    };
    if name_in_use(name, true, &answer) {
        let message = already_running_message(name);
        critical!("{message}");
        bail!("{message} (its REST API answers at {})", member.data.api_url);
    }
    Ok(())
}
