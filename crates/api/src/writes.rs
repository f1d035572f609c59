//! Dispatch of the unsafe methods (POST, PUT, PATCH, DELETE): path and method to a write
//! operation, then access control, then the body, then the operation.
//!
//! Invariants kept here:
//! * access is checked before the body is read or anything is asked of the backend, so a refused
//!   client learns nothing about the cluster and costs nothing but the check;
//! * unknown paths answer 404, known paths with a method they do not take answer 405 with an
//!   `Allow` header; neither reads the body or needs credentials, since neither does anything;
//! * bodies are JSON objects, read up to [`MAX_BODY_BYTES`]; malformed ones are refused with 400
//!   before any operation starts (411 when a body is required and none was announced).

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::access::PeerInfo;
use crate::backend::Backend;
use crate::config_edit;
use crate::context::ApiContext;
use crate::local_ops;
use crate::reply::Reply;
use crate::router::MAX_BODY_BYTES;
use crate::switchover;
use rampart_core::admission::Kind;

/// A write operation, as selected by path and method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// `POST /switchover`.
    Switchover,
    /// `POST /failover`.
    Failover,
    /// `DELETE /switchover`.
    CancelSwitchover,
    /// `POST /restart`.
    Restart,
    /// `DELETE /restart`.
    CancelRestart,
    /// `POST /reinitialize`.
    Reinitialize,
    /// `POST /reload`.
    Reload,
    /// `PATCH /config`.
    PatchConfig,
    /// `PUT /config`.
    PutConfig,
    /// `POST /failsafe` (a primary's proof of life in failsafe mode).
    Failsafe,
}

/// Why no operation matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No endpoint at this path takes unsafe methods (404).
    NotFound,
    /// The endpoint exists but not with this method (405); the methods it takes.
    MethodNotAllowed(&'static str),
}

/// How an operation reads its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyRule {
    /// A non-empty JSON object is required.
    Required,
    /// A JSON object or nothing.
    Optional,
    /// Not read.
    Ignored,
}

impl WriteOp {
    /// Like Patroni, the first path segment names the endpoint (`/restart/x` is `/restart`).
    pub fn route(method: &Method, path: &str) -> Result<WriteOp, RouteError> {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let m = method.as_str();
        let (op, allow) = match first {
            "switchover" => (
                match m {
                    "POST" => Some(WriteOp::Switchover),
                    "DELETE" => Some(WriteOp::CancelSwitchover),
                    _ => None,
                },
                "POST, DELETE",
            ),
            "failover" => ((m == "POST").then_some(WriteOp::Failover), "POST"),
            "restart" => (
                match m {
                    "POST" => Some(WriteOp::Restart),
                    "DELETE" => Some(WriteOp::CancelRestart),
                    _ => None,
                },
                "POST, DELETE",
            ),
            "reinitialize" => ((m == "POST").then_some(WriteOp::Reinitialize), "POST"),
            "reload" => ((m == "POST").then_some(WriteOp::Reload), "POST"),
            "failsafe" => ((m == "POST").then_some(WriteOp::Failsafe), "POST"),
            "config" => (
                match m {
                    "PATCH" => Some(WriteOp::PatchConfig),
                    "PUT" => Some(WriteOp::PutConfig),
                    _ => None,
                },
                "GET, HEAD, OPTIONS, PATCH, PUT",
            ),
            // Read-only endpoints exist, they just do not take writes.
            "patroni" | "cluster" | "history" | "liveness" | "readiness" | "metrics" => (None, "GET, HEAD, OPTIONS"),
            _ => return Err(RouteError::NotFound),
        };
        op.ok_or(RouteError::MethodNotAllowed(allow))
    }

    fn body_rule(self) -> BodyRule {
        match self {
            WriteOp::Switchover | WriteOp::Failover | WriteOp::PatchConfig | WriteOp::PutConfig | WriteOp::Failsafe => {
                BodyRule::Required
            }
            WriteOp::Restart | WriteOp::Reinitialize => BodyRule::Optional,
            WriteOp::CancelSwitchover | WriteOp::CancelRestart | WriteOp::Reload => BodyRule::Ignored,
        }
    }
}

/// Reads the body as Patroni's `_read_json_content` does.
fn json_object(bytes: &[u8], headers: &HeaderMap, rule: BodyRule) -> Result<Map<String, Value>, Reply> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return match rule {
            BodyRule::Required if !headers.contains_key(header::CONTENT_LENGTH) => {
                Err(Reply::text(411, "a JSON body with a Content-Length is required"))
            }
            BodyRule::Required => Err(Reply::text(400, "a JSON object body is required")),
            _ => Ok(Map::new()),
        };
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) if !map.is_empty() || rule != BodyRule::Required => Ok(map),
        Ok(Value::Object(_)) => Err(Reply::text(400, "a non-empty JSON object body is required")),
        Ok(_) => Err(Reply::text(400, "the body must be a JSON object")),
        Err(e) => Err(Reply::text(400, format!("the body is not valid JSON: {e}"))),
    }
}

/// Handles one request with an unsafe method.
pub async fn handle(ctx: ApiContext, req: Request<Body>) -> Response {
    let op = match WriteOp::route(req.method(), req.uri().path()) {
        Ok(op) => op,
        Err(RouteError::NotFound) => return Reply::text(404, "Not Found").into_response(),
        Err(RouteError::MethodNotAllowed(allow)) => {
            let mut resp = Reply::text(405, "Method Not Allowed").into_response();
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            return resp;
        }
    };
    let peer = req.extensions().get::<PeerInfo>().copied();
    if let Err(denied) = ctx.security.current().access.check(peer.as_ref(), req.headers().get(header::AUTHORIZATION)) {
        // The reason only: never the Authorization header.
        let from = peer.map(|p| p.addr.to_string()).unwrap_or_else(|| "unknown address".into());
        tracing::info!("REST API: {} {} from {from} refused: {}", req.method(), req.uri().path(), denied.message());
        return Reply::text(denied.status(), denied.message()).into_response();
    }
    let Some(backend) = ctx.backend.clone() else {
        return Reply::text(503, "the agent does not accept operations yet").into_response();
    };
    let (parts, body) = req.into_parts();
    let rule = op.body_rule();
    let body = if rule == BodyRule::Ignored {
        Map::new()
    } else {
        let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(_) => return Reply::text(413, "request body too large or unreadable").into_response(),
        };
        match json_object(&bytes, &parts.headers, rule) {
            Ok(map) => map,
            Err(reply) => return reply.into_response(),
        }
    };
    run(&ctx, &backend, op, &body).await.into_response()
}

async fn run(ctx: &ApiContext, backend: &Arc<dyn Backend>, op: WriteOp, body: &Map<String, Value>) -> Reply {
    match op {
        WriteOp::Switchover => switchover::post(ctx, backend, body, Kind::Switchover).await,
        WriteOp::Failover => switchover::post(ctx, backend, body, Kind::Failover).await,
        WriteOp::CancelSwitchover => switchover::delete(backend).await,
        WriteOp::Restart => local_ops::restart(backend, &ctx.current().0, body).await,
        WriteOp::CancelRestart => local_ops::cancel_restart(backend).await,
        WriteOp::Reinitialize => local_ops::reinitialize(backend, body).await,
        WriteOp::Reload => local_ops::reload(backend).await,
        WriteOp::PatchConfig => config_edit::patch(backend, body).await,
        WriteOp::PutConfig => config_edit::put(backend, body).await,
        // Answered from the snapshot, never through the HA loop: the primary waits 2 s at most.
        WriteOp::Failsafe => crate::failsafe::post(&ctx.current().0, backend, body).await,
    }
}
