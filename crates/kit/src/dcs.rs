//! Reading a cluster's DCS keys (leader, members, ...) the way the agents write them: through
//! `rampart_dcs`, so that a reader never decodes etcd's wire format by hand and always agrees
//! with the agents about the key layout.
//!
//! [`Reader`] is for async callers (the demo); [`BlockingReader`] for the benches' polling loops,
//! which are plain threads. A reader only reads: it holds no lease and writes no key.

use std::time::Duration;

use rampart_core::keys::ClusterPrefix;
use rampart_core::Cluster;
use rampart_dcs::{Dcs, DcsError, EtcdDcs, EtcdOptions};

/// How long one read may take before it counts as "no answer".
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// A read-only view of one cluster's keys in etcd.
pub struct Reader {
    dcs: EtcdDcs,
}

impl Reader {
    /// A reader of cluster `scope` under `namespace` (Patroni's, e.g. `/service/`) in the etcd at
    /// `endpoint` (`http://host:port`). Contacts etcd only on the first read.
    pub async fn connect(endpoint: &str, namespace: &str, scope: &str) -> Result<Reader, DcsError> {
        let options = EtcdOptions {
            endpoints: vec![endpoint.to_string()],
            op_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let prefix = ClusterPrefix::new(namespace, scope);
        // The member name and ttl are only used for writes, which a reader never makes.
        let dcs = EtcdDcs::connect(options, prefix, "rampart-kit-reader".into(), 30).await?;
        Ok(Reader { dcs })
    }

    /// Every key of the cluster, or `None` when etcd does not answer within [`READ_TIMEOUT`].
    pub async fn cluster(&self) -> Option<Cluster> {
        self.dcs.read_cluster(tokio::time::Instant::now() + READ_TIMEOUT).await.ok()
    }

    /// The name in the leader key, if one is held (and etcd answers).
    pub async fn leader(&self) -> Option<String> {
        self.cluster().await?.leader.map(|l| l.name).filter(|n| !n.is_empty())
    }
}

/// A [`Reader`] for synchronous code, with a runtime of its own. Each read runs on a short-lived
/// thread of its own, so it may be called from inside another runtime too.
pub struct BlockingReader {
    rt: tokio::runtime::Runtime,
    reader: Reader,
}

impl BlockingReader {
    /// [`Reader::connect`], blocking.
    pub fn connect(endpoint: &str, namespace: &str, scope: &str) -> Result<BlockingReader, DcsError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| DcsError::Config {
            endpoints: endpoint.to_string(),
            detail: format!("starting the reader's runtime: {e}"),
        })?;
        let reader = std::thread::scope(|s| {
            s.spawn(|| rt.block_on(Reader::connect(endpoint, namespace, scope))).join().expect("the reader's thread")
        })?;
        Ok(BlockingReader { rt, reader })
    }

    /// [`Reader::cluster`], blocking.
    pub fn cluster(&self) -> Option<Cluster> {
        std::thread::scope(|s| s.spawn(|| self.rt.block_on(self.reader.cluster())).join().ok().flatten())
    }

    /// [`Reader::leader`], blocking.
    pub fn leader(&self) -> Option<String> {
        std::thread::scope(|s| s.spawn(|| self.rt.block_on(self.reader.leader())).join().ok().flatten())
    }
}
