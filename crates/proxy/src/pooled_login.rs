//! A pooled client's login, before any server is involved: who it is (its startup packet: user,
//! database, the parameters that choose its pool), its authentication by the proxy (the rules
//! decide the method; the secret comes from the `auth_file` or from `auth_query` run as
//! `auth_user` on the primary), with PostgreSQL's messages and errors. Shared by
//! transaction-mode clients ([`crate::txn`]) and the admin console.
//!
//! Invariants: a user's secret is looked up only through a bound parameter and never appears in a
//! message or a log; a refused client has used no pooled server connection.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::access_log::Outcome;
use crate::auth_file::Secret;
use crate::auth_query::{Answer, Lookup};
use crate::backend::SqlState;
use crate::client_auth::Credentials;
use crate::client_auth::{ClientAuth, Progress, Who};
use crate::frame::{put_frame, split_frame, Frame, DEFAULT_MAX_FRAME_LEN};
use crate::hba::{self, Method};
use crate::pooling::Pooling;
use crate::pools::{lease, Leased, Login, PoolKey, PoolRef};
use crate::server_auth::LoginError;
use crate::server_conn::OpenError;
use crate::session::{fatal, Refusal, SessionSettings, Shared};
use crate::session_params::TRACKED;
use crate::startup::{ProtocolVersion, StartupMessage};
use crate::wire;

/// Who the client is, from its startup packet.
pub(crate) struct Identity {
    pub(crate) user: String,
    pub(crate) database: String,
    /// Startup parameters other than user, database and the tracked ones (part of the pool key).
    pub(crate) extra: Vec<(String, String)>,
}

pub(crate) fn identity(startup: &StartupMessage) -> Result<Identity, Refusal> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let user = startup.user().map(text).filter(|u| !u.is_empty()).ok_or_else(|| {
        fatal(Outcome::ProtocolError, SqlState::new("28000"), "no PostgreSQL user name specified in startup packet")
    })?;
    let database = startup.database().map(text).filter(|d| !d.is_empty()).unwrap_or_else(|| user.clone());
    if startup.get("replication").is_some_and(|v| v != b"false" && v != b"0" && v != b"off") {
        return Err(fatal(
            Outcome::Refused,
            SqlState::PROTOCOL_VIOLATION,
            "replication connections cannot be pooled: connect to the member directly",
        ));
    }
    let mut extra: Vec<(String, String)> = startup
        .params()
        .map(|(n, v)| (text(n), text(v)))
        .filter(|(n, _)| {
            !matches!(n.as_str(), "user" | "database" | "replication")
                && !TRACKED.iter().any(|t| t.eq_ignore_ascii_case(n))
        })
        .collect();
    extra.sort();
    Ok(Identity { user, database, extra })
}

/// NegotiateProtocolVersion: the proxy speaks 3.0 and no protocol extension.
pub(crate) fn negotiate_protocol(startup: &StartupMessage, out: &mut BytesMut) {
    let options: Vec<&[u8]> = startup.protocol_options().map(|(n, _)| n).collect();
    put_frame(out, b'v', |d| {
        d.put_u32(ProtocolVersion::V3_0.code());
        d.put_u32(options.len() as u32);
        for o in options {
            wire::put_cstr(d, o);
        }
    });
}

/// Reads one whole client message during authentication.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> Result<Frame, Refusal> {
    loop {
        match split_frame(buf, 64 * 1024) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => {
                return Err(fatal(
                    Outcome::ProtocolError,
                    SqlState::PROTOCOL_VIOLATION,
                    format!("invalid message: {e}"),
                ))
            }
        }
        match r.read_buf(buf).await {
            Ok(0) | Err(_) => {
                return Err(fatal(
                    Outcome::ClientClosed,
                    SqlState::PROTOCOL_VIOLATION,
                    "the client left during authentication",
                ))
            }
            Ok(_) => {}
        }
    }
}

/// Authenticates the client by the rules and the user's secret, then greets it as PostgreSQL
/// does (parameters, cancel key, ReadyForQuery are sent by [`Txn::run`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn authenticate<R, W>(
    shared: &Shared,
    settings: &SessionSettings,
    pooling: &Pooling,
    id: &Identity,
    client_r: &mut R,
    client_w: &mut W,
    cbuf: &mut BytesMut,
    mut out: BytesMut,
    (addr, tls): (Option<IpAddr>, bool),
) -> Result<Login, Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let host = addr.map_or_else(|| "unknown".to_string(), |a| a.to_string());
    let decision = match addr {
        Some(a) => pooling.decide(&hba::Connection {
            addr: a,
            ssl: tls,
            database: &id.database,
            user: &id.user,
            replication: false,
        }),
        None => hba::Decision { method: Method::Reject, line: None },
    };
    let secret = match decision.method {
        Method::Trust | Method::Reject => pooling.auth_file.secret(&id.user).cloned(),
        _ => lookup_secret(shared, settings, pooling, id).await?,
    };
    let who = Who { user: id.user.clone(), database: id.database.clone(), host, ssl: tls };
    let deadline = tokio::time::Instant::now() + settings.startup_timeout;
    let (mut auth, mut progress) = ClientAuth::begin(who, decision, secret.clone());
    loop {
        match progress {
            Progress::Send(bytes) => {
                out.extend_from_slice(&bytes);
                let _ = client_w.write_all(&out).await;
                out.clear();
                let frame = tokio::time::timeout_at(deadline, read_frame(client_r, cbuf)).await.map_err(|_| {
                    fatal(Outcome::Timeout, SqlState::PROTOCOL_VIOLATION, "timeout during authentication")
                })??;
                progress = auth.on_message(&frame);
            }
            Progress::Done(bytes, Ok(credentials)) => {
                out.extend_from_slice(&bytes);
                if client_w.write_all(&out).await.is_err() {
                    return Err(fatal(Outcome::ClientClosed, SqlState::PROTOCOL_VIOLATION, "the client left"));
                }
                return Ok(Login { credentials, secret });
            }
            Progress::Done(_, Err(error)) => {
                tracing::info!(user = %id.user, database = %id.database, "client authentication failed: {}", error.message);
                return Err(Refusal { error, outcome: Outcome::Refused });
            }
        }
    }
}

/// The user's secret: from the `auth_file`, else by `auth_query` on the primary as `auth_user`.
async fn lookup_secret(
    shared: &Shared,
    settings: &SessionSettings,
    pooling: &Pooling,
    id: &Identity,
) -> Result<Option<Secret>, Refusal> {
    if let Some(s) = pooling.auth_file.secret(&id.user) {
        return Ok(Some(s.clone()));
    }
    let Some(auth_user) = &pooling.auth_user else { return Ok(None) };
    let failed = |why: String| {
        tracing::warn!(user = %id.user, "auth_query: {why}");
        fatal(Outcome::ConnectFailed, SqlState::CONNECTION_FAILURE, format!("could not look up the user: {why}"))
    };
    // Without a primary (the proxy just started, or a failover is under way) the login waits
    // for one, as a transaction would, up to hold_timeout.
    let mut routes = shared.routes.clone();
    let waited = tokio::time::timeout(settings.hold_timeout, routes.wait_for(|r| r.primary.is_some())).await;
    let primary = waited.ok().and_then(|r| r.ok().and_then(|r| r.primary.clone()));
    let Some(primary) = primary else { return Err(failed("no primary to run auth_query on".into())) };
    // Over the auth_user's own pool on the primary: a login costs no new server connection.
    let login = Login { credentials: Credentials::None, secret: pooling.auth_file.secret(auth_user).cloned() };
    // The admin console's database exists only in the proxy: look its users up in `postgres`.
    let database = if crate::console::is_console_database(&id.database) { "postgres" } else { id.database.as_str() };
    let key = PoolRef::new(PoolKey {
        database: database.to_string(),
        user: auth_user.clone(),
        addr: primary.addr(),
        extra: Vec::new(),
    });
    let limits = pooling.limits_for(database);
    let now = std::time::Instant::now();
    let mut conn = match lease(&shared.pools, &key, &primary.name, limits, &login, settings.connect_timeout, now).await
    {
        Ok(taken) => taken.conn,
        Err(Leased::Open(OpenError::Login(LoginError::Refused { code, message, .. })))
            if client_facing(&code).is_some() =>
        {
            let code = client_facing(&code).unwrap_or(SqlState::CONNECTION_FAILURE);
            return Err(fatal(Outcome::ServerError, code, message));
        }
        Err(Leased::Open(e)) => return Err(failed(e.to_string())),
        Err(Leased::TimedOut) => return Err(failed("no auth_user connection became free".into())),
    };
    let asked = conn.stream.write_all(&crate::auth_query::request(&pooling.auth_query, &id.user)).await;
    let mut answer = Answer::default();
    let lookup = async {
        asked.map_err(|e| e.to_string())?;
        loop {
            let frame = match split_frame(&mut conn.buf, DEFAULT_MAX_FRAME_LEN) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    match tokio::time::timeout(settings.connect_timeout, conn.stream.read_buf(&mut conn.buf)).await {
                        Ok(Ok(n)) if n > 0 => continue,
                        _ => return Err("the server did not answer auth_query".to_string()),
                    }
                }
                Err(e) => return Err(e.to_string()),
            };
            match answer.on_message(&frame)? {
                Lookup::Pending => {}
                done => return Ok(done),
            }
        }
    }
    .await;
    // Answered to its ReadyForQuery (idle): the connection goes back for the next login.
    let reusable = lookup.is_ok() && conn.buf.is_empty();
    shared.pools.checkin(&key, conn.idle(), reusable);
    Ok(match lookup.map_err(failed)? {
        Lookup::Found(s) => Some(s),
        _ => None,
    })
}

/// A server's login refusal that is about the client's own request, relayed with its code.
pub(crate) fn client_facing(code: &str) -> Option<SqlState> {
    const RELAYED: [&str; 4] = ["3D000", "42501", "53300", "28000"];
    RELAYED.iter().find(|c| **c == code).map(|c| SqlState::new(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untracked_startup_parameters_choose_the_pool_and_replication_is_refused() {
        let s = StartupMessage::new(ProtocolVersion::V3_0)
            .with("user", "app")
            .unwrap()
            .with("application_name", "pgbench")
            .unwrap()
            .with("options", "-c search_path=s1")
            .unwrap();
        let id = identity(&s).unwrap();
        assert_eq!((id.user.as_str(), id.database.as_str()), ("app", "app"));
        assert_eq!(id.extra, vec![("options".to_string(), "-c search_path=s1".to_string())]);
        let r = StartupMessage::new(ProtocolVersion::V3_0)
            .with("user", "app")
            .unwrap()
            .with("replication", "true")
            .unwrap();
        let e = identity(&r).err().expect("refused");
        assert!(e.error.message.contains("replication connections cannot be pooled"), "{}", e.error.message);
        let nobody = StartupMessage::new(ProtocolVersion::V3_0).with("database", "app").unwrap();
        assert_eq!(identity(&nobody).err().expect("refused").error.code.as_str(), "28000");
    }
}
