//! Values found in write-request bodies, parsed the way Patroni accepts them: schedules (ISO 8601
//! with a time zone), booleans (`true`, `"on"`, `1`, ...), durations in seconds (`30`, `"5min"`)
//! and PostgreSQL versions (`"15.2"`, `"9.6.3"`).
//!
//! Invariant kept here: a schedule is accepted only with an explicit offset and only in the
//! future; the answer codes are Patroni's (`parse_schedule`): 400 without a time zone, 422 when
//! unparsable or in the past.

use jiff::{civil, Timestamp};
use serde_json::Value;

/// A rejected schedule: the status code and Patroni's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError {
    /// 400 or 422.
    pub status: u16,
    /// Message for the client.
    pub message: String,
}

/// Parses `text` as the time at which `action` (`switchover`, `restart`) should run.
pub fn parse_schedule(text: &str, action: &str, now: Timestamp) -> Result<Timestamp, ScheduleError> {
    let text = text.trim();
    let at = match text.parse::<Timestamp>() {
        Ok(at) => at,
        Err(_) if text.parse::<civil::DateTime>().is_ok() => {
            return Err(ScheduleError {
                status: 400,
                message: format!("Timezone information is mandatory for the scheduled {action}"),
            })
        }
        Err(_) => {
            return Err(ScheduleError {
                status: 422,
                message: "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"
                    .into(),
            })
        }
    };
    if at < now {
        return Err(ScheduleError { status: 422, message: format!("Cannot schedule {action} in the past") });
    }
    Ok(at)
}

/// `at` as ISO 8601 in UTC with an explicit offset (`2030-01-01T00:00:00+00:00`), the form
/// Patroni writes into the `failover` key.
pub fn iso8601(at: Timestamp) -> String {
    at.to_zoned(jiff::tz::TimeZone::UTC).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Patroni's `parse_bool`: `on`/`true`/`yes`/`1` and `off`/`false`/`no`/`0`, any case.
pub fn parse_bool(v: &Value) -> Option<bool> {
    let text = match v {
        Value::Bool(b) => return Some(*b),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    match text.as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// A duration in whole seconds: a number, or a string with an optional unit (`ms`, `s`, `min`,
/// `h`, `d`); sub-second remainders are dropped.
pub fn parse_seconds(v: &Value) -> Option<u64> {
    let (number, unit) = match v {
        Value::Number(n) => (n.as_f64()?, "s".to_string()),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let unit = unit.trim();
            (num.parse::<f64>().ok()?, if unit.is_empty() { "s".to_string() } else { unit.to_string() })
        }
        _ => return None,
    };
    let factor = match unit.as_str() {
        "ms" => 0.001,
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    let secs = number * factor;
    (secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64).then_some(secs as u64)
}

/// Patroni's `postgres_version_to_int`: `X.Y` (X >= 10) or `X.Y.Z` to the `server_version_num`
/// form (`15.2` → 150002, `9.6.3` → 90603).
pub fn postgres_version_num(text: &str) -> Result<u32, String> {
    let parts: Result<Vec<u32>, _> = text.trim().split('.').map(str::parse::<u32>).collect();
    let mut parts = parts.map_err(|_| format!("Invalid PostgreSQL version: {text}"))?;
    if parts.len() < 2 || parts.len() > 3 || (parts.len() == 2 && parts[0] < 10) {
        return Err(format!("Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {text}"));
    }
    if parts.len() == 2 {
        parts.insert(1, 0);
    }
    if parts[1] > 99 || parts[2] > 99 {
        return Err(format!("Invalid PostgreSQL version: {text}"));
    }
    Ok(parts[0] * 10000 + parts[1] * 100 + parts[2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schedules() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = parse_schedule("2026-01-01T02:30:00+02:00", "switchover", now).unwrap();
        assert_eq!(iso8601(at), "2026-01-01T00:30:00+00:00");
        assert!(parse_schedule("2026-06-01T10:00Z", "restart", now).is_ok());
        let e = parse_schedule("2026-06-01T10:00:00", "switchover", now).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "Timezone information is mandatory for the scheduled switchover")
        );
        let e = parse_schedule("2025-12-31T23:59:59+00:00", "restart", now).unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (422, "Cannot schedule restart in the past"));
        assert_eq!(parse_schedule("tomorrow", "restart", now).unwrap_err().status, 422);
    }

    #[test]
    fn booleans_seconds_versions() {
        for (v, want) in [(json!(true), Some(true)), (json!("On"), Some(true)), (json!(0), Some(false))] {
            assert_eq!(parse_bool(&v), want, "{v}");
        }
        assert_eq!(parse_bool(&json!("maybe")), None);
        assert_eq!(parse_seconds(&json!(30)), Some(30));
        assert_eq!(parse_seconds(&json!("5min")), Some(300));
        assert_eq!(parse_seconds(&json!("90 s")), Some(90));
        assert_eq!(parse_seconds(&json!("1500ms")), Some(1));
        assert_eq!(parse_seconds(&json!("-1")), None);
        assert_eq!(parse_seconds(&json!("10 parsecs")), None);
        assert_eq!(postgres_version_num("15.2"), Ok(150002));
        assert_eq!(postgres_version_num("9.6.3"), Ok(90603));
        assert_eq!(postgres_version_num("10.1"), Ok(100001));
        assert!(postgres_version_num("9.6").unwrap_err().contains("X.Y or X.Y.Z"));
        assert!(postgres_version_num("a.b").unwrap_err().contains("Invalid PostgreSQL version"));
        assert!(postgres_version_num("10").is_err());
    }
}
