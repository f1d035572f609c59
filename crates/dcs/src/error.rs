//! Errors of the DCS layer, and the mapping from etcd client failures to them.
//!
//! Invariant: every message names the operation and the etcd endpoints it was sent to, so an
//! operator can tell *which* etcd is in trouble, and never contains a password (endpoints are
//! shown with any `user:password@` part removed; credentials are never formatted).

use std::error::Error as StdError;
use std::time::Duration;

use etcd_client::Error as EtcdError;
use thiserror::Error;
use tonic::{Code, Status};

/// Why a DCS operation failed.
#[derive(Debug, Error)]
pub enum DcsError {
    /// No etcd endpoint accepted the request (connection refused, reset, no leader, ...).
    #[error("{op}: etcd unreachable at {endpoints}; last error: {detail}")]
    Unreachable {
        /// Operation that failed.
        op: &'static str,
        /// Endpoints tried, comma-separated.
        endpoints: String,
        /// What the transport reported.
        detail: String,
    },
    /// etcd did not answer before the deadline.
    #[error("{op}: etcd at {endpoints} did not answer within {} ms", .after.as_millis())]
    Timeout {
        /// Operation that failed.
        op: &'static str,
        /// Endpoints tried, comma-separated.
        endpoints: String,
        /// Time spent before giving up.
        after: Duration,
    },
    /// etcd refused the credentials or the user lacks permission.
    #[error("{op}: etcd at {endpoints} rejected authentication or authorization: {detail}")]
    Auth {
        /// Operation that failed.
        op: &'static str,
        /// Endpoints tried, comma-separated.
        endpoints: String,
        /// What etcd said.
        detail: String,
    },
    /// The connection settings are unusable (bad URL, unreadable certificate, ...).
    #[error("invalid etcd settings for {endpoints}: {detail}")]
    Config {
        /// Endpoints configured, comma-separated.
        endpoints: String,
        /// What is wrong.
        detail: String,
    },
    /// Any other failure reported by etcd.
    #[error("{op}: etcd at {endpoints} failed: {detail}")]
    Other {
        /// Operation that failed.
        op: &'static str,
        /// Endpoints tried, comma-separated.
        endpoints: String,
        /// What etcd said.
        detail: String,
    },
}

impl DcsError {
    /// Whether trying again later may succeed without changing any setting.
    pub fn is_transient(&self) -> bool {
        matches!(self, DcsError::Unreachable { .. } | DcsError::Timeout { .. })
    }
}

/// A classified failure of one attempt, before it is given its operation name and endpoints.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Transport-level failure: another attempt (maybe on another endpoint) may work.
    Unreachable(String),
    /// The attempt ran out of time.
    Timeout,
    /// Credentials or permissions.
    Auth(String),
    /// The lease we used no longer exists on the server (expired or revoked).
    LeaseNotFound,
    /// Anything else; retrying would give the same answer.
    Other(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Unreachable(d) => write!(f, "unreachable: {d}"),
            Fault::Timeout => f.write_str("no answer in time"),
            Fault::Auth(d) => write!(f, "authentication failed: {d}"),
            Fault::LeaseNotFound => f.write_str("lease not found"),
            Fault::Other(d) => f.write_str(d),
        }
    }
}

impl Fault {
    /// Whether the retry loop should try again within the deadline.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, Fault::Unreachable(_) | Fault::Timeout)
    }

    /// Says which endpoint the failure came from.
    pub(crate) fn at(self, endpoint: &str) -> Fault {
        match self {
            Fault::Unreachable(d) => Fault::Unreachable(format!("{endpoint}: {d}")),
            Fault::Auth(d) => Fault::Auth(format!("{endpoint}: {d}")),
            Fault::Other(d) => Fault::Other(format!("{endpoint}: {d}")),
            other => other,
        }
    }

    /// Attaches the context that makes the error readable.
    pub(crate) fn into_error(self, op: &'static str, endpoints: &str, spent: Duration) -> DcsError {
        let endpoints = endpoints.to_string();
        match self {
            Fault::Unreachable(detail) => DcsError::Unreachable { op, endpoints, detail },
            Fault::Timeout => DcsError::Timeout { op, endpoints, after: spent },
            Fault::Auth(detail) => DcsError::Auth { op, endpoints, detail },
            Fault::LeaseNotFound => {
                DcsError::Other { op, endpoints, detail: "lease not found (expired or revoked)".into() }
            }
            Fault::Other(detail) => DcsError::Other { op, endpoints, detail },
        }
    }
}

impl From<EtcdError> for Fault {
    fn from(e: EtcdError) -> Self {
        match e {
            EtcdError::GRpcStatus(status) => classify_status(&status),
            // The client turns a keep-alive answer with TTL <= 0 into this exact message.
            EtcdError::LeaseKeepAliveError(msg) if msg.contains("not found") => Fault::LeaseNotFound,
            // Other keep-alive and watch errors are closed streams: a transport problem.
            EtcdError::LeaseKeepAliveError(msg) | EtcdError::WatchError(msg) => Fault::Unreachable(msg),
            EtcdError::TransportError(t) => Fault::Unreachable(chain(&t)),
            EtcdError::IoError(io) => Fault::Unreachable(chain(&io)),
            other => Fault::Other(chain(&other)),
        }
    }
}

/// Maps a gRPC status from etcd (or synthesized by tonic for transport failures).
fn classify_status(status: &Status) -> Fault {
    let msg = status.message();
    let detail = describe_status(status);
    match status.code() {
        // etcd answers a put/txn with an expired lease with NotFound "requested lease not found".
        Code::NotFound if msg.contains("lease not found") => Fault::LeaseNotFound,
        Code::Unauthenticated | Code::PermissionDenied => Fault::Auth(detail),
        // Wrong user or password comes back as InvalidArgument "authentication failed".
        Code::InvalidArgument if msg.contains("authentication failed") || msg.contains("user name") => {
            Fault::Auth(detail)
        }
        // Unavailable: refused/reset connections, "no leader", "leader changed".
        // Unknown and Cancelled: tonic's wrapping of broken HTTP/2 connections.
        // DeadlineExceeded and ResourceExhausted: etcd's "request timed out" / "too many requests".
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::ResourceExhausted => {
            Fault::Unreachable(detail)
        }
        _ => Fault::Other(detail),
    }
}

/// The status message followed by its source chain, which is where tonic keeps the useful part
/// ("tcp connect error: Connection refused").
fn describe_status(status: &Status) -> String {
    let text = if status.message().is_empty() { format!("{:?}", status.code()) } else { status.message().to_string() };
    with_sources(text, StdError::source(status))
}

/// An error and its sources on one line, skipping repeats.
fn chain(e: &dyn StdError) -> String {
    with_sources(e.to_string(), e.source())
}

/// Appends each source's text after `text`, skipping those it already contains (tonic and hyper
/// often repeat their cause in their own message).
fn with_sources(mut text: String, mut source: Option<&(dyn StdError + 'static)>) -> String {
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Endpoints joined for messages, without any `user:password@` part.
pub(crate) fn display_endpoints(endpoints: &[String]) -> String {
    endpoints.iter().map(|e| display_endpoint(e)).collect::<Vec<_>>().join(",")
}

/// One endpoint for messages, without any `user:password@` part.
pub(crate) fn display_endpoint(endpoint: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", strip_userinfo(rest)),
        None => strip_userinfo(endpoint).to_string(),
    }
}

fn strip_userinfo(authority_and_path: &str) -> &str {
    let authority_end = authority_and_path.find('/').unwrap_or(authority_and_path.len());
    match authority_and_path[..authority_end].rfind('@') {
        Some(at) => &authority_and_path[at + 1..],
        None => authority_and_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(code: Code, msg: &str) -> Fault {
        Fault::from(EtcdError::GRpcStatus(Status::new(code, msg)))
    }

    #[test]
    fn statuses_are_classified() {
        assert!(matches!(fault(Code::NotFound, "etcdserver: requested lease not found"), Fault::LeaseNotFound));
        assert!(matches!(
            fault(Code::InvalidArgument, "etcdserver: authentication failed, invalid user ID or password"),
            Fault::Auth(_)
        ));
        assert!(matches!(fault(Code::PermissionDenied, "etcdserver: permission denied"), Fault::Auth(_)));
        assert!(fault(Code::Unavailable, "etcdserver: no leader").is_retryable());
        assert!(fault(Code::Unknown, "transport error").is_retryable());
        assert!(!fault(Code::InvalidArgument, "etcdserver: key is not provided").is_retryable());
        assert!(matches!(Fault::from(EtcdError::LeaseKeepAliveError("lease not found".into())), Fault::LeaseNotFound));
    }

    #[test]
    fn messages_name_endpoints_without_credentials() {
        let shown = display_endpoints(&["http://user:pw@h1:2379".into(), "h2:2379".into(), "u@h3:1/x".into()]);
        assert_eq!(shown, "http://h1:2379,h2:2379,h3:1/x");
        let e = Fault::Unreachable("refused".into()).at("http://h1:2379").into_error(
            "read_cluster",
            &shown,
            Duration::ZERO,
        );
        assert_eq!(
            e.to_string(),
            "read_cluster: etcd unreachable at http://h1:2379,h2:2379,h3:1/x; last error: http://h1:2379: refused"
        );
        assert!(e.is_transient());
    }
}
