//! The answer of a write endpoint: a status code with Patroni's message text, or a JSON document.
//!
//! Invariant kept here: a 401 always carries `WWW-Authenticate: Basic realm="Patroni"`, so clients
//! (curl, patronictl) know to send credentials; status codes outside the valid range become 500
//! rather than a panic.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

/// Patroni's authentication challenge (the realm is Patroni's class name).
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"Patroni\"";

/// A write endpoint's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: ReplyBody,
    /// Patroni's `lsn` header (`POST /failsafe`: this member's received/replayed position).
    pub lsn: Option<u64>,
}

/// The body of a [`Reply`].
#[derive(Clone, Debug, PartialEq)]
pub enum ReplyBody {
    /// Plain text, as Patroni's `write_response`.
    Text(String),
    /// A JSON document.
    Json(Value),
}

impl Reply {
    /// A text answer.
    pub fn text(status: u16, message: impl Into<String>) -> Reply {
        Reply { status, body: ReplyBody::Text(message.into()), lsn: None }
    }

    /// A JSON answer.
    pub fn json(status: u16, value: Value) -> Reply {
        Reply { status, body: ReplyBody::Json(value), lsn: None }
    }

    /// The same answer with an `lsn` header.
    pub fn with_lsn(mut self, lsn: u64) -> Reply {
        self.lsn = Some(lsn);
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = match self.body {
            ReplyBody::Text(t) => (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], t).into_response(),
            ReplyBody::Json(v) => (status, Json(v)).into_response(),
        };
        if let Some(lsn) = self.lsn {
            resp.headers_mut().insert("lsn", HeaderValue::from(lsn));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(WWW_AUTHENTICATE));
        }
        resp
    }
}
