//! The agent's side of the REST API's write endpoints ([`rampart_api::Backend`]).
//!
//! DCS writes (the `failover` and `config` keys) go straight to etcd: the HA loops of all
//! members pick them up, which is also how `patronictl`'s own writes work. Local operations
//! (restart, reinitialize, reload, scheduled restarts) are queued to this agent's loop, which
//! answers when it has decided (and, for a restart, when the restart has finished).
//! Invariant: the REST handlers never touch PostgreSQL or make HA decisions themselves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rampart_api::{Backend, BoxFuture, FailsafePing, LocalReply, LocalRequest};
use rampart_core::model::Failover;
use rampart_core::Cluster;
use rampart_dcs::{Dcs, EtcdDcs};
use tokio::sync::{mpsc, oneshot};

/// A local request and where to send its answer.
pub type Queued = (LocalRequest, oneshot::Sender<LocalReply>);

/// How long a request may wait for the loop (a restart of a big database can take a while).
const LOCAL_REPLY_LIMIT: Duration = Duration::from_secs(600);

/// The agent's [`Backend`].
pub struct AgentBackend {
    /// DCS handle (cloned from the agent's).
    pub dcs: EtcdDcs,
    /// The loop's request queue.
    pub queue: mpsc::Sender<Queued>,
    /// Where accepted failsafe pings go (read by the loop; never waits for it).
    pub failsafe: super::failsafe::Inbox,
    /// The PostgreSQL programs whose settings configuration writes are checked against.
    pub bin_dir: PathBuf,
}

impl Backend for AgentBackend {
    fn read_cluster(&self) -> BoxFuture<'_, Result<Cluster, String>> {
        Box::pin(async move { self.dcs.read_cluster(self.dcs.op_deadline()).await.map_err(|e| e.to_string()) })
    }

    fn set_failover(&self, failover: Failover) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(
            async move { self.dcs.set_failover(&failover, self.dcs.op_deadline()).await.map_err(|e| e.to_string()) },
        )
    }

    fn clear_failover(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.dcs.clear_failover(self.dcs.op_deadline()).await.map_err(|e| e.to_string()) })
    }

    fn write_config(&self, json: String, expected_revision: Option<i64>) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move {
            self.dcs.set_config(&json, expected_revision, self.dcs.op_deadline()).await.map_err(|e| e.to_string())
        })
    }

    fn check_parameters(&self, parameters: &BTreeMap<String, serde_json::Value>) -> Result<Vec<String>, String> {
        rampart_pg::guc::check_with(&self.bin_dir, parameters)
    }

    fn local(&self, request: LocalRequest) -> BoxFuture<'_, LocalReply> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            if self.queue.send((request, tx)).await.is_err() {
                return LocalReply { status: 503, message: "the agent is shutting down".into() };
            }
            match tokio::time::timeout(LOCAL_REPLY_LIMIT, rx).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => LocalReply { status: 503, message: "the agent dropped the request".into() },
                Err(_) => LocalReply { status: 503, message: "no answer from the agent in time".into() },
            }
        })
    }

    fn failsafe_ping(&self, ping: FailsafePing) -> BoxFuture<'_, ()> {
        self.failsafe.record(ping);
        Box::pin(async {})
    }
}
