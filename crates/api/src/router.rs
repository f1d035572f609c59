//! HTTP routing: Patroni's dispatch (first path segment names an endpoint, anything else is a
//! health check picked by substring) turned into one axum fallback handler.
//!
//! Invariants kept here:
//! * `HEAD` and `OPTIONS` answer with exactly the status `GET` would give and an empty body
//!   (HAProxy's `option httpchk` sends `OPTIONS /`);
//! * a request reads the agent's state once, as a copy, and never waits for the HA loop;
//! * unknown `GET` paths answer 503 with the status body (as Patroni does), so a typo in a load
//!   balancer check fails closed;
//! * POST/PUT/PATCH/DELETE go to [`crate::writes`] (access control, then the operation); any other
//!   method answers 501.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::Value;

use crate::cluster_json::{cluster_json, config_json, history_json};
use crate::context::ApiContext;
use crate::health::{check_status, liveness_status, readiness_status, Check};
use crate::metrics::{metrics_text, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::query::HealthQuery;
use crate::status_json::patroni_status;

/// Largest request body any handler will read, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What a path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/patroni`: the status body, always 200.
    Patroni,
    /// `/cluster`: all members as the DCS shows them.
    Cluster,
    /// `/history`: the timeline history.
    History,
    /// `/config`: the dynamic configuration.
    Config,
    /// `/liveness`: the HA loop is not stuck (status only).
    Liveness,
    /// `/readiness`: ready for traffic (status only).
    Readiness,
    /// `/metrics`: Prometheus metrics.
    Metrics,
    /// `/failsafe`: the `failsafe` topology (member name → REST API URL).
    Failsafe,
    /// Any other path: a health check.
    Health(Check),
}

impl Endpoint {
    /// Like Patroni's `parse_request`: the first path segment selects a named endpoint
    /// (`/patroni/anything` is `/patroni`); otherwise the whole path selects a health check.
    pub fn from_path(path: &str) -> Endpoint {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match first {
            "patroni" => Endpoint::Patroni,
            "cluster" => Endpoint::Cluster,
            "history" => Endpoint::History,
            "config" => Endpoint::Config,
            "liveness" => Endpoint::Liveness,
            "readiness" => Endpoint::Readiness,
            "metrics" => Endpoint::Metrics,
            "failsafe" => Endpoint::Failsafe,
            _ => Endpoint::Health(Check::from_path(path)),
        }
    }
}

/// The REST API as an axum router. More routes can be merged in; they take precedence over the
/// catch-all dispatch.
pub fn router(ctx: ApiContext) -> Router {
    Router::new().fallback(dispatch).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(ctx)
}

/// A response body before the status-only rule is applied.
enum Body {
    Json(Value),
    Text(&'static str),
    Metrics(String),
    Empty,
}

async fn dispatch(State(ctx): State<ApiContext>, req: Request) -> Response {
    let method = req.method().clone();
    let status_only = if method == Method::GET {
        false
    } else if method == Method::HEAD || method == Method::OPTIONS {
        true
    } else if matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        return crate::writes::handle(ctx, req).await;
    } else {
        let text = format!("Unsupported method ({:?})\n", method.as_str());
        return (StatusCode::NOT_IMPLEMENTED, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text)
            .into_response();
    };
    let uri = req.uri();
    let (snap, alive) = ctx.current();
    let endpoint = Endpoint::from_path(uri.path());
    let snap = match endpoint {
        Endpoint::Patroni | Endpoint::Health(_) => crate::live::refreshed(snap, alive, ctx.live_wal.as_deref()).await,
        _ => snap,
    };
    let now = Instant::now();
    let query = HealthQuery::parse(uri.query());
    let no_dcs = "no DCS view\n";
    let (code, body) = match endpoint {
        Endpoint::Patroni => (200, Body::Json(patroni_status(&snap, alive))),
        Endpoint::Cluster => match snap.cluster.as_deref() {
            Some(c) => (200, Body::Json(cluster_json(c, &snap.scope))),
            None => (502, Body::Text(no_dcs)),
        },
        Endpoint::History => match snap.cluster.as_deref() {
            Some(c) => (200, Body::Json(history_json(c))),
            None => (502, Body::Text(no_dcs)),
        },
        Endpoint::Config => match snap.cluster.as_deref().map(config_json) {
            Some(Some(cfg)) => (200, Body::Json(cfg)),
            Some(None) => (502, Body::Text("no configuration in the DCS\n")),
            None => (502, Body::Text(no_dcs)),
        },
        Endpoint::Liveness => (liveness_status(&snap, alive, now), Body::Empty),
        Endpoint::Readiness => (readiness_status(&query, &snap, alive, now), Body::Empty),
        Endpoint::Metrics => (200, Body::Metrics(metrics_text(&snap, alive))),
        // Patroni's do_GET_failsafe: the key as last read, whatever the mode; 502 without one.
        Endpoint::Failsafe => match &snap.failsafe_topology {
            Some(t) => (200, Body::Json(serde_json::to_value(t).unwrap_or_default())),
            None => (502, Body::Text("no failsafe topology in the DCS (failsafe_mode is not enabled)\n")),
        },
        Endpoint::Health(check) => {
            (check_status(check, &query, &snap, alive, now), Body::Json(patroni_status(&snap, alive)))
        }
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match body {
        _ if status_only => status.into_response(),
        Body::Empty => status.into_response(),
        Body::Json(v) => (status, Json(v)).into_response(),
        Body::Text(t) => (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], t).into_response(),
        Body::Metrics(t) => (status, [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], t).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_json::tests::three_members;
    use crate::health::tests::{primary, replica};
    use crate::snapshot::NodeSnapshot;
    use axum::body::{to_bytes, Body as AxBody};
    use axum::http::Request;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::sync::watch;
    use tower::ServiceExt;

    struct Harness {
        tx: watch::Sender<NodeSnapshot>,
        alive: Arc<AtomicBool>,
        app: Router,
    }

    fn harness(snap: NodeSnapshot) -> Harness {
        let (tx, rx) = watch::channel(snap);
        let alive = Arc::new(AtomicBool::new(true));
        let probe = alive.clone();
        let app = router(ApiContext::new(rx, move || probe.load(Ordering::SeqCst)));
        Harness { tx, alive, app }
    }

    impl Harness {
        async fn call(&self, method: &str, target: &str) -> (u16, Option<String>, Vec<u8>) {
            let req = Request::builder().method(method).uri(target).body(AxBody::empty()).unwrap();
            let resp = self.app.clone().oneshot(req).await.unwrap();
            let code = resp.status().as_u16();
            let ctype = resp.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string());
            let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
            (code, ctype, body)
        }

        async fn get(&self, target: &str) -> (u16, Value) {
            let (code, ctype, body) = self.call("GET", target).await;
            assert_eq!(ctype.as_deref(), Some("application/json"), "{target}");
            (code, serde_json::from_slice(&body).unwrap())
        }

        async fn status(&self, target: &str) -> u16 {
            self.call("GET", target).await.0
        }
    }

    #[tokio::test]
    async fn primary_status_codes_and_bodies() {
        let h = harness(primary(Instant::now()));
        for path in ["/", "/primary", "/master", "/read-write", "/leader", "/read-only", "/health"] {
            let (code, body) = h.get(path).await;
            assert_eq!(code, 200, "{path}");
            assert_eq!(body["role"], "primary", "{path}");
        }
        for path in ["/replica", "/standby-leader", "/sync", "/async", "/nonsense", "/switchover"] {
            let (code, body) = h.get(path).await;
            assert_eq!(code, 503, "{path}");
            assert_eq!(body["patroni"]["scope"], "demo", "{path}: the status body comes with a 503 too");
        }
    }

    #[tokio::test]
    async fn head_and_options_are_status_only() {
        let h = harness(primary(Instant::now()));
        for method in ["HEAD", "OPTIONS"] {
            for (path, want) in [
                ("/", 200),
                ("/primary", 200),
                ("/replica", 503),
                ("/nonsense", 503),
                ("/patroni", 200),
                ("/liveness", 200),
            ] {
                let (code, _, body) = h.call(method, path).await;
                assert_eq!(code, want, "{method} {path}");
                assert!(body.is_empty(), "{method} {path} has a body");
            }
        }
    }

    #[tokio::test]
    async fn dead_postmaster_fails_primary_at_once() {
        let h = harness(primary(Instant::now()));
        assert_eq!(h.status("/primary").await, 200);
        h.alive.store(false, Ordering::SeqCst);
        assert_eq!(h.status("/primary").await, 503);
        assert_eq!(h.status("/leader").await, 503);
        assert_eq!(h.status("/health").await, 503);
        let (_, body) = h.get("/patroni").await;
        assert_eq!(body["state"], "unknown");
        // Liveness is about the agent, not PostgreSQL.
        assert_eq!(h.status("/liveness").await, 200);
    }

    #[tokio::test]
    async fn failsafe_shows_the_topology_as_patroni_does() {
        let now = Instant::now();
        let h = harness(primary(now));
        assert_eq!(h.status("/failsafe").await, 502, "no failsafe key: Patroni's 502");
        let topology: rampart_core::failsafe::Topology =
            [("postgres-0".to_string(), "http://127.0.0.1:8008/patroni".to_string())].into();
        h.tx.send_replace(NodeSnapshot { failsafe_topology: Some(topology), ..primary(now) });
        let (code, body) = h.get("/failsafe").await;
        assert_eq!((code, body), (200, serde_json::json!({"postgres-0": "http://127.0.0.1:8008/patroni"})));
    }

    #[tokio::test]
    async fn new_snapshots_are_seen_by_the_next_request() {
        let now = Instant::now();
        let h = harness(primary(now));
        assert_eq!(h.status("/primary").await, 200);
        h.tx.send_replace(NodeSnapshot { leader_until: None, ..primary(now) });
        assert_eq!(h.status("/primary").await, 503);
    }

    #[tokio::test]
    async fn replica_lag_units_and_tags() {
        let now = Instant::now();
        let mut s = replica("r1", now);
        s.xlog_received = s.cluster_optime;
        s.xlog_replayed = s.cluster_optime - 100 * 1024; // 100 kB behind
        s.tags.other.insert("zone".into(), Value::from("Eu-1"));
        let h = harness(s);
        let cases = [
            ("/replica", 200),
            ("/replica?lag=1MB", 200),
            ("/replica?lag=100kB", 200),
            ("/replica?lag=99kB", 503),
            ("/replica?lag=102400", 200),
            ("/replica?lag=102399", 503),
            ("/replica?lag=junk", 200),
            ("/async?lag=64MB", 200),
            ("/read-only?lag=16kB", 503),
            ("/replica?tag_zone=eu-1", 200),
            ("/replica?tag_zone=eu-2", 503),
            ("/replica?tag_rack=1", 503),
            ("/replica?lag=1GB&tag_zone=EU-1&replication_state=streaming", 200),
            ("/replica?replication_state=in%20archive%20recovery", 503),
            ("/primary", 503),
        ];
        for (target, want) in cases {
            assert_eq!(h.status(target).await, want, "{target}");
        }
    }

    #[tokio::test]
    async fn patroni_endpoint_field_names() {
        let h = harness(replica("r1", Instant::now()));
        let (code, body) = h.get("/patroni").await;
        assert_eq!(code, 200);
        for key in
            ["state", "role", "server_version", "xlog", "timeline", "replication_state", "dcs_last_seen", "patroni"]
        {
            assert!(body.get(key).is_some(), "missing {key}: {body}");
        }
        let xlog = body["xlog"].as_object().unwrap();
        let mut keys: Vec<&str> = xlog.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["paused", "received_location", "replayed_location", "replayed_timestamp"]);
        // `/patroni` is 200 whatever the node's state, and so is anything under it.
        let h = harness(NodeSnapshot::default());
        assert_eq!(h.status("/patroni").await, 200);
        assert_eq!(h.status("/patroni/replica").await, 200);
    }

    #[tokio::test]
    async fn cluster_history_config() {
        let mut s = primary(Instant::now());
        s.cluster = Some(Arc::new(three_members()));
        let h = harness(s);
        let (code, body) = h.get("/cluster").await;
        assert_eq!(code, 200);
        assert_eq!(body["scope"], "demo");
        let m = &body["members"][0];
        for key in
            ["name", "role", "state", "api_url", "host", "port", "timeline", "tags", "lag", "receive_lsn", "replay_lsn"]
        {
            assert!(m.get(key).is_some(), "missing {key}: {m}");
        }
        assert_eq!(body["members"][1]["role"], "leader");
        let (code, body) = h.get("/history").await;
        assert_eq!((code, body[0][0].as_u64()), (200, Some(1)));
        let (code, body) = h.get("/config").await;
        assert_eq!((code, &body["loop_wait"]), (200, &Value::from(10)));

        // No config key: 502. No DCS view at all: 502 for all three.
        let mut s = primary(Instant::now());
        s.cluster = Some(Arc::new(rampart_core::Cluster::default()));
        let h = harness(s);
        assert_eq!(h.status("/config").await, 502);
        assert_eq!(h.status("/cluster").await, 200);
        let h = harness(NodeSnapshot::default());
        for path in ["/config", "/cluster", "/history"] {
            assert_eq!(h.status(path).await, 502, "{path}");
        }
    }

    #[tokio::test]
    async fn liveness_and_readiness_are_status_only() {
        let h = harness(replica("r1", Instant::now()));
        for path in ["/liveness", "/readiness", "/readiness?lag=1kB&mode=write"] {
            let (code, ctype, body) = h.call("GET", path).await;
            assert_eq!(code, 200, "{path}");
            assert!(body.is_empty() && ctype.is_none(), "{path}");
        }
        let h = harness(NodeSnapshot::default());
        assert_eq!(h.status("/liveness").await, 503);
        assert_eq!(h.status("/readiness").await, 503);
    }

    #[tokio::test]
    async fn unsafe_methods_on_unknown_paths_and_other_methods() {
        let h = harness(primary(Instant::now()));
        for (method, path, want) in [
            ("POST", "/primary", 404),
            ("PUT", "/nonsense", 404),
            ("DELETE", "/patroni", 405),
            ("POST", "/metrics", 405),
            ("POST", "/config", 405),
            ("GET", "/metrics", 200),
            ("TRACE", "/", 501),
        ] {
            let (code, ctype, _) = h.call(method, path).await;
            assert_eq!(code, want, "{method} {path}");
            assert!(ctype.unwrap().starts_with("text/plain"), "{method} {path}");
        }
        // Known write endpoints answer 503 while the agent has not attached its backend.
        let (code, _, body) = h.call("POST", "/reload").await;
        assert_eq!(code, 503);
        assert!(String::from_utf8(body).unwrap().contains("not accept operations yet"));
        let (code, _, body) = h.call("HEAD", "/metrics").await;
        assert_eq!((code, body.len()), (200, 0));
    }

    #[test]
    fn endpoint_routing() {
        assert_eq!(Endpoint::from_path("/patroni"), Endpoint::Patroni);
        assert_eq!(Endpoint::from_path("//cluster/x"), Endpoint::Cluster);
        assert_eq!(Endpoint::from_path("/readiness"), Endpoint::Readiness);
        assert_eq!(Endpoint::from_path("/"), Endpoint::Health(Check::Primary));
        assert_eq!(Endpoint::from_path("/x/patroni"), Endpoint::Health(Check::Unknown));
        assert_eq!(Endpoint::from_path("/historyx"), Endpoint::Health(Check::Unknown));
        assert_eq!(Endpoint::from_path("/metrics"), Endpoint::Metrics);
        assert_eq!(Endpoint::from_path("/failsafe"), Endpoint::Failsafe);
    }
}
