//! Connections to another member's PostgreSQL (the leader), as the rewind user: reading its
//! logical slots for a copy, and checking it before pg_rewind uses it as the source.
//!
//! Every call is bounded by the query timeout, so a partitioned or frozen leader costs the job a
//! few seconds, never a hang.

use std::time::Duration;

use rampart_core::Upstream;
use tokio_postgres::Client;

use crate::error::{PgError, Result};
use crate::settings::PgSettings;

/// How long a connection attempt or a query may take: the query timeout, at least a second.
pub(crate) fn limit(settings: &PgSettings) -> Duration {
    settings.query_timeout.max(Duration::from_secs(1))
}

/// Connects to `upstream`'s `postgres` database with the rewind credentials.
pub(crate) async fn connect(settings: &PgSettings, upstream: &Upstream) -> Result<Client> {
    let creds = settings.rewind_credentials();
    let mut config = tokio_postgres::Config::new();
    config
        .host(&upstream.host)
        .port(upstream.port)
        .user(&creds.username)
        .dbname("postgres")
        .application_name("rampart")
        .connect_timeout(settings.query_timeout);
    if let Some(p) = &creds.password {
        config.password(p);
    }
    let target = format!("{}:{}", upstream.host, upstream.port);
    let tls = crate::tls::connector(&mut config, creds)
        .map_err(|detail| PgError::Connect { target: target.clone(), detail })?;
    let limit = limit(settings);
    let (client, connection) = match tokio::time::timeout(limit, config.connect(tls)).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(PgError::Connect { target, detail: e.to_string() }),
        Err(_) => return Err(PgError::Connect { target, detail: format!("no answer within {limit:?}") }),
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Whether `source` can serve as pg_rewind's source now: it answers, and as a primary (Patroni
/// checks the same before it rewinds). A source that is down or still in recovery is a reason to
/// wait, not a failed rewind.
pub async fn check_rewind_source(settings: &PgSettings, source: &Upstream) -> Result<()> {
    let client = connect(settings, source).await?;
    let row = tokio::time::timeout(limit(settings), client.query_one("SELECT pg_catalog.pg_is_in_recovery()", &[]))
        .await
        .map_err(|_| PgError::Query { what: "asking the rewind source", detail: "no answer in time".into() })?
        .map_err(|e| PgError::Query { what: "asking the rewind source", detail: e.to_string() })?;
    if row.get::<_, bool>(0) {
        return Err(PgError::Query {
            what: "checking the rewind source",
            detail: format!("{} is still in recovery", source.name),
        });
    }
    Ok(())
}
