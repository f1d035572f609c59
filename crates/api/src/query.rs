//! Query parameters of the health endpoints (`?lag=`, `?replication_state=`, `?mode=`,
//! `?tag_<key>=<value>`), parsed the way Patroni's `parse_qs` + `parse_int(..., 'B')` do.
//!
//! Invariant kept here: parsing never fails a request. As in Patroni, only the first value of a
//! repeated key counts, empty values are ignored, and an unparsable `lag` means "no lag limit".

/// The health-check query parameters that matter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthQuery {
    /// `?lag=`: maximum replica lag in bytes; `None` when absent or unparsable.
    pub lag: Option<u64>,
    /// `?replication_state=`: required replication state.
    pub replication_state: Option<String>,
    /// `?mode=` of `/readiness`: `write` (received position) or `apply` (replayed, the default).
    pub mode: Option<String>,
    /// `?tag_<key>=<value>` filters, as `(key, value)` in query order.
    pub tags: Vec<(String, String)>,
}

impl HealthQuery {
    /// Parses a raw (still percent-encoded) query string.
    pub fn parse(raw: Option<&str>) -> HealthQuery {
        let mut q = HealthQuery::default();
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if value.is_empty() || seen.iter().any(|k| *k == key) {
                continue;
            }
            seen.push(key.to_string());
            match key.as_ref() {
                "lag" => q.lag = parse_bytes(&value),
                "replication_state" => q.replication_state = Some(value.into_owned()),
                "mode" => q.mode = Some(value.into_owned()),
                k => {
                    if let Some(tag) = k.strip_prefix("tag_") {
                        q.tags.push((tag.to_string(), value.into_owned()));
                    }
                }
            }
        }
        q
    }
}

/// Parses a byte count: a plain integer, or a number with a PostgreSQL memory unit
/// (`B`, `kB`, `MB`, `GB`, `TB`, multiples of 1024; units are accepted in any letter case).
/// Fractions are rounded to the nearest byte. Returns `None` for anything else.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let s = text.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return None,
    };
    if number.is_empty() || number.starts_with('.') {
        return None;
    }
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(multiplier);
    }
    let f: f64 = number.parse().ok()?;
    let bytes = (f * multiplier as f64).round();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_and_units() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("1048576", Some(1_048_576)),
            ("16kB", Some(16 * 1024)),
            ("64MB", Some(64 << 20)),
            ("1GB", Some(1 << 30)),
            ("2TB", Some(2 << 40)),
            ("100B", Some(100)),
            ("16kb", Some(16 * 1024)),
            (" 10 MB ", Some(10 << 20)),
            ("1.5MB", Some(1_572_864)),
            ("", None),
            ("MB", None),
            ("-1", None),
            ("10XB", None),
            ("abc", None),
            ("99999999999TB", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_bytes(text), *want, "{text:?}");
        }
    }

    #[test]
    fn query_parsing_follows_parse_qs() {
        let q = HealthQuery::parse(Some(
            "lag=64MB&lag=1&replication_state=in%20archive%20recovery&tag_zone=A&tag_x=&mode=write",
        ));
        assert_eq!(q.lag, Some(64 << 20));
        assert_eq!(q.replication_state.as_deref(), Some("in archive recovery"));
        assert_eq!(q.mode.as_deref(), Some("write"));
        assert_eq!(q.tags, vec![("zone".to_string(), "A".to_string())]);
        assert_eq!(HealthQuery::parse(None), HealthQuery::default());
        assert_eq!(HealthQuery::parse(Some("lag=lots")).lag, None);
        assert_eq!(HealthQuery::parse(Some("%zz=&&=")), HealthQuery::default());
    }
}
