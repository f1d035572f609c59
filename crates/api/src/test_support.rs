//! Test doubles for the write endpoints: a [`FakeBackend`] that records every call and answers
//! `read_cluster` from a script of cluster states, and a [`FakeProbe`] with canned member answers.
//!
//! Invariant kept here: the script's last state repeats forever, so a test describes only the
//! transitions it cares about ("before", "while it happens", "after").

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{HeaderMap, Request};
use axum::Router;
use rampart_core::model::{Failover, Leader};
use rampart_core::{Cluster, Member, MemberData};
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::access::PeerInfo;
use crate::backend::{Backend, BoxFuture, FailsafePing, LocalReply, LocalRequest};
use crate::context::{ApiContext, WriteTiming};
use crate::probe::MemberProbe;
use crate::router::router;
use crate::security::Security;
use crate::snapshot::NodeSnapshot;

/// One call the API made to the backend.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Call {
    ReadCluster,
    SetFailover(Failover),
    ClearFailover,
    WriteConfig(String, Option<i64>),
    CheckParameters(BTreeMap<String, Value>),
    Local(LocalRequest),
    FailsafePing(FailsafePing),
}

pub(crate) struct FakeBackend {
    script: Mutex<VecDeque<Cluster>>,
    calls: Mutex<Vec<Call>>,
    pub(crate) set_failover_result: Mutex<Result<(), String>>,
    pub(crate) clear_failover_result: Mutex<Result<(), String>>,
    pub(crate) write_config_result: Mutex<Result<bool, String>>,
    /// What `check_parameters` answers for a parameter called `refused` (else the notes).
    pub(crate) parameter_check: Mutex<(Option<String>, Vec<String>)>,
    pub(crate) local_reply: Mutex<LocalReply>,
}

impl FakeBackend {
    /// A backend whose `read_cluster` answers `states` in order, repeating the last one.
    pub(crate) fn new(states: Vec<Cluster>) -> Arc<FakeBackend> {
        assert!(!states.is_empty());
        Arc::new(FakeBackend {
            script: Mutex::new(states.into()),
            calls: Mutex::new(Vec::new()),
            set_failover_result: Mutex::new(Ok(())),
            clear_failover_result: Mutex::new(Ok(())),
            write_config_result: Mutex::new(Ok(true)),
            parameter_check: Mutex::new((None, Vec::new())),
            local_reply: Mutex::new(LocalReply { status: 200, message: "ok".into() }),
        })
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls other than reads and checks.
    pub(crate) fn writes(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| !matches!(c, Call::ReadCluster | Call::CheckParameters(_))).collect()
    }

    pub(crate) fn reads(&self) -> usize {
        self.calls().iter().filter(|c| **c == Call::ReadCluster).count()
    }

    pub(crate) fn reply_with(&self, status: u16, message: &str) {
        *self.local_reply.lock().unwrap() = LocalReply { status, message: message.into() };
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl Backend for FakeBackend {
    fn read_cluster(&self) -> BoxFuture<'_, Result<Cluster, String>> {
        self.record(Call::ReadCluster);
        let mut script = self.script.lock().unwrap();
        let state = if script.len() > 1 { script.pop_front().unwrap() } else { script[0].clone() };
        Box::pin(async move { Ok(state) })
    }

    fn set_failover(&self, failover: Failover) -> BoxFuture<'_, Result<(), String>> {
        self.record(Call::SetFailover(failover));
        let r = self.set_failover_result.lock().unwrap().clone();
        Box::pin(async move { r })
    }

    fn clear_failover(&self) -> BoxFuture<'_, Result<(), String>> {
        self.record(Call::ClearFailover);
        let r = self.clear_failover_result.lock().unwrap().clone();
        Box::pin(async move { r })
    }

    fn write_config(&self, json: String, expected_revision: Option<i64>) -> BoxFuture<'_, Result<bool, String>> {
        self.record(Call::WriteConfig(json, expected_revision));
        let r = self.write_config_result.lock().unwrap().clone();
        Box::pin(async move { r })
    }

    fn check_parameters(&self, parameters: &BTreeMap<String, Value>) -> Result<Vec<String>, String> {
        self.record(Call::CheckParameters(parameters.clone()));
        let (refused, notes) = self.parameter_check.lock().unwrap().clone();
        match refused.filter(|name| parameters.contains_key(name)) {
            Some(name) => Err(format!("{name}: invalid value {}: not a number", parameters[&name])),
            None => Ok(notes),
        }
    }

    fn local(&self, request: LocalRequest) -> BoxFuture<'_, LocalReply> {
        self.record(Call::Local(request));
        let r = self.local_reply.lock().unwrap().clone();
        Box::pin(async move { r })
    }

    fn failsafe_ping(&self, ping: FailsafePing) -> BoxFuture<'_, ()> {
        self.record(Call::FailsafePing(ping));
        Box::pin(async {})
    }
}

/// Canned `/patroni` answers by URL; unknown URLs do not answer.
#[derive(Default)]
pub(crate) struct FakeProbe {
    pub(crate) answers: BTreeMap<String, Value>,
}

impl FakeProbe {
    pub(crate) fn with(answers: &[(&str, Value)]) -> Arc<FakeProbe> {
        Arc::new(FakeProbe { answers: answers.iter().map(|(n, v)| (api_url(n), v.clone())).collect() })
    }
}

impl MemberProbe for FakeProbe {
    fn fetch(&self, url: &str, _timeout: Duration) -> BoxFuture<'_, Result<Value, String>> {
        let r = self.answers.get(url).cloned().ok_or_else(|| "connection refused".to_string());
        Box::pin(async move { r })
    }
}

pub(crate) fn api_url(name: &str) -> String {
    format!("http://{name}.test:8008/patroni")
}

/// A healthy streaming replica's `/patroni` answer.
pub(crate) fn healthy_replica() -> Value {
    json!({"state": "running", "role": "replica", "xlog": {"received_location": 10, "replayed_location": 10}})
}

/// A cluster led by `leader` (if any) with `members`, the dynamic configuration `config` at
/// revision 7, and no pending failover.
pub(crate) fn cluster(leader: Option<&str>, members: &[&str], config: Value) -> Cluster {
    Cluster {
        config: Some(serde_json::from_value(config).unwrap()),
        config_revision: 7,
        leader: leader.map(|name| Leader { name: name.into(), lease: 1, mod_revision: 3 }),
        members: members
            .iter()
            .map(|name| Member {
                name: name.to_string(),
                data: MemberData {
                    api_url: api_url(name),
                    state: "running".into(),
                    role: if Some(*name) == leader { "primary".into() } else { "replica".into() },
                    ..Default::default()
                },
                lease: 1,
            })
            .collect(),
        revision: 10,
        ..Default::default()
    }
}

/// `c` with a pending failover request.
pub(crate) fn with_failover(mut c: Cluster, leader: Option<&str>, member: Option<&str>, at: Option<&str>) -> Cluster {
    c.failover = Some(Failover {
        leader: leader.map(Into::into),
        member: member.map(Into::into),
        scheduled_at: at.map(Into::into),
        force: false,
    });
    c
}

/// `c` led by `leader`, without a failover request: it holds the lock and its member key shows
/// it running as primary (the others as replicas).
pub(crate) fn led_by(c: Cluster, leader: &str) -> Cluster {
    let mut c = locked_by(c, leader);
    for m in &mut c.members {
        m.data.role = if m.name == leader { "primary".into() } else { "replica".into() };
    }
    c
}

/// `c` with `leader` holding the lock, without a failover request, member keys unchanged (a
/// candidate that has not finished its promotion).
pub(crate) fn locked_by(mut c: Cluster, leader: &str) -> Cluster {
    c.leader = Some(Leader { name: leader.into(), lease: 2, mod_revision: 20 });
    c.failover = None;
    c
}

/// An app with a backend, a probe and a security policy, polling every 5 ms.
pub(crate) struct WriteHarness {
    pub(crate) app: Router,
    pub(crate) backend: Arc<FakeBackend>,
    _tx: watch::Sender<NodeSnapshot>,
}

/// What came back.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

impl WriteHarness {
    pub(crate) fn new(
        snap: NodeSnapshot,
        backend: Arc<FakeBackend>,
        probe: Arc<FakeProbe>,
        security: Security,
    ) -> WriteHarness {
        let (tx, rx) = watch::channel(snap);
        let ctx = ApiContext::new(rx, || true)
            .with_backend(backend.clone())
            .with_security(security)
            .with_probe(probe)
            .with_timing(WriteTiming {
                poll_interval: Duration::from_millis(5),
                probe_timeout: Duration::from_millis(200),
                wait_unit: Duration::from_millis(5),
            });
        WriteHarness { app: router(ctx), backend, _tx: tx }
    }

    /// Sends a request from 127.0.0.1 (without a client certificate).
    pub(crate) async fn send(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let peer = PeerInfo { addr: "127.0.0.1:50000".parse().unwrap(), client_cert: false };
        self.send_full(method, path, body, &[], Some(peer)).await
    }

    pub(crate) async fn send_full(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
        peer: Option<PeerInfo>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-length", b.len().to_string());
        }
        let mut req = req.body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty)).unwrap();
        if let Some(p) = peer {
            req.extensions_mut().insert(p);
        }
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        Answer { status, headers, text: String::from_utf8(bytes.to_vec()).unwrap() }
    }
}
