//! What the etcd tests of this crate share: a member's published data.

#![allow(dead_code)]

use rampart_core::MemberData;

/// The member key of a replica named `name` at WAL position `xlog`.
pub fn member(name: &str, xlog: u64) -> MemberData {
    MemberData {
        conn_url: format!("postgres://127.0.0.1:5432/{name}"),
        api_url: "http://127.0.0.1:8008/patroni".into(),
        state: "running".into(),
        role: "replica".into(),
        xlog_location: Some(xlog),
        timeline: Some(1),
        ..Default::default()
    }
}
