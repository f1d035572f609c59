//! `--scheduled TIME`: when a switchover or restart should happen, as ISO 8601 with a time zone
//! offset (what the REST API and the `failover` key carry). A time without an offset is local
//! time, as in patronictl; `now` (or nothing) means at once.

use anyhow::{bail, Result};
use jiff::tz::TimeZone;
use jiff::{civil, Timestamp};

/// `--scheduled`'s value as an ISO 8601 time with offset, in the local time zone; `None` for now.
pub fn parse(text: &str) -> Result<Option<String>> {
    parse_at(text, Timestamp::now(), &TimeZone::system())
}

/// [`parse`] with the clock and time zone given (tests).
pub fn parse_at(text: &str, now: Timestamp, tz: &TimeZone) -> Result<Option<String>> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("now") {
        return Ok(None);
    }
    let instant = match t.parse::<Timestamp>() {
        Ok(ts) => ts,
        Err(_) => match t.parse::<civil::DateTime>() {
            Ok(dt) => match dt.to_zoned(tz.clone()) {
                Ok(z) => z.timestamp(),
                Err(e) => bail!("--scheduled {t}: {e}"),
            },
            Err(_) => bail!(
                "--scheduled {t}: expected an ISO 8601 time such as 2030-01-31T22:00 (local time) or \
                 2030-01-31T22:00+02:00, or now"
            ),
        },
    };
    if instant < now {
        bail!("--scheduled {t}: that time has passed; give a future time or now");
    }
    Ok(Some(instant.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()))
}

/// An example for prompts: the next full hour, local time (`2030-01-31T22:00`).
pub fn example() -> String {
    let next = Timestamp::now() + jiff::SignedDuration::from_hours(1);
    next.to_zoned(TimeZone::system()).strftime("%Y-%m-%dT%H:00").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let tz = TimeZone::fixed(jiff::tz::offset(2));
        assert_eq!(parse_at("now", now, &tz).unwrap(), None);
        assert_eq!(parse_at("", now, &tz).unwrap(), None);
        assert_eq!(parse_at("2030-01-02T10:00", now, &tz).unwrap().as_deref(), Some("2030-01-02T10:00:00+02:00"));
        assert_eq!(parse_at("2030-01-02 10:00:30", now, &tz).unwrap().as_deref(), Some("2030-01-02T10:00:30+02:00"));
        assert_eq!(parse_at("2030-01-02T10:00:00Z", now, &tz).unwrap().as_deref(), Some("2030-01-02T12:00:00+02:00"));
        let e = parse_at("tomorrow", now, &tz).unwrap_err().to_string();
        assert!(e.starts_with("--scheduled tomorrow: expected an ISO 8601 time"), "{e}");
        let e = parse_at("2029-12-31T00:00:00Z", now, &tz).unwrap_err().to_string();
        assert!(e.contains("has passed"), "{e}");
    }
}
