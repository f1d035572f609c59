//! The kit's DCS reader against a real etcd: it reads the leader key as the agents write it.

use rampart_kit::dcs::BlockingReader;
use rampart_kit::etcd::Etcd;

/// The reader sees the leader key as the agents write it (here put by etcdctl, not by
/// `rampart_dcs`), and no leader when there is none, from plain and async code alike.
#[test]
fn the_reader_names_the_leader_the_key_holds() {
    let etcd = Etcd::start();
    let reader = BlockingReader::connect(&etcd.endpoint(), "/service/", "demo").expect("connect");
    assert_eq!(reader.leader(), None);
    etcd.put("/service/demo/leader", "node2");
    etcd.put("/service/other/leader", "node9");
    assert_eq!(reader.leader().as_deref(), Some("node2"));
    // From inside a runtime, where a plain `block_on` would panic.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(async { reader.leader() }).as_deref(), Some("node2"));
}

/// A stopped etcd is "no answer", within the read timeout, not a hang or a panic.
#[test]
fn a_stopped_etcd_reads_as_none() {
    let mut etcd = Etcd::start();
    let reader = BlockingReader::connect(&etcd.endpoint(), "/service/", "demo").expect("connect");
    etcd.put("/service/demo/leader", "node1");
    assert_eq!(reader.leader().as_deref(), Some("node1"));
    etcd.stop();
    assert_eq!(reader.cluster().map(|c| c.leader.is_some()), None);
}
