//! The `watchdog` section: whether the agent arms a hardware (or softdog) watchdog while it
//! leads, so that a frozen agent cannot leave a writable primary behind once its lease is gone.
//!
//! Patroni's spellings are accepted (`mode: off | automatic | required`, with `false`, `auto`,
//! `require`, `disable(d)` as synonyms; `device`; `safety_margin`, where -1 means half the ttl).
//! Unlike Patroni, an unrecognised mode is an error rather than a silent "off": a typo must not
//! quietly remove a safety net the operator asked for.
//!
//! Invariant kept here: the watchdog timeout derived by [`Watchdog::timeout_secs`] is always
//! shorter than the ttl, so the machine resets before the leader lease could expire.

use std::path::PathBuf;

use serde_json::Value as Json;

use crate::check::Checker;
use crate::error::Problem;

/// Patroni's default device.
pub const DEFAULT_DEVICE: &str = "/dev/watchdog";
/// Patroni's default safety margin, seconds.
pub const DEFAULT_SAFETY_MARGIN: i64 = 5;

/// `watchdog.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchdogMode {
    /// Never armed.
    Off,
    /// Armed when the device can be used; otherwise the agent leads without one (with a warning).
    #[default]
    Automatic,
    /// The agent does not lead without an armed watchdog.
    Required,
}

impl WatchdogMode {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchdogMode::Off => "off",
            WatchdogMode::Automatic => "automatic",
            WatchdogMode::Required => "required",
        }
    }
}

/// The `watchdog` section, validated (Patroni's defaults when absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watchdog {
    /// Whether and how strictly to use the watchdog.
    pub mode: WatchdogMode,
    /// The watchdog device.
    pub device: PathBuf,
    /// Seconds between the watchdog firing and the lease expiring; -1: half the ttl.
    pub safety_margin: i64,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            mode: WatchdogMode::default(),
            device: PathBuf::from(DEFAULT_DEVICE),
            safety_margin: DEFAULT_SAFETY_MARGIN,
        }
    }
}

impl Watchdog {
    /// The watchdog timeout for a cluster with this ttl: `ttl - safety_margin` (`ttl / 2` with a
    /// margin of -1), at least one second, always below the ttl.
    pub fn timeout_secs(&self, ttl: u64) -> u64 {
        let t = if self.safety_margin < 0 { ttl / 2 } else { ttl.saturating_sub(self.safety_margin as u64) };
        t.clamp(1, ttl.saturating_sub(1).max(1))
    }

    pub(crate) fn build(raw: Option<Json>, c: &mut Checker<'_>) -> Result<Watchdog, Problem> {
        let mut w = Watchdog::default();
        let Some(raw) = raw else { return Ok(w) };
        let Json::Object(map) = raw else {
            return Err(c.problem(&["watchdog"], "expected a mapping (mode, device, safety_margin)"));
        };
        for (key, value) in map {
            match key.as_str() {
                "mode" => {
                    w.mode = parse_mode(&value).ok_or_else(|| {
                        c.problem(&["watchdog", "mode"], format!("expected off, automatic or required, got {value}"))
                    })?
                }
                "device" => match value {
                    Json::String(s) if !s.is_empty() => w.device = PathBuf::from(s),
                    other => return Err(c.problem(&["watchdog", "device"], format!("expected a path, got {other}"))),
                },
                "safety_margin" => match value.as_i64() {
                    Some(n) if n >= -1 => w.safety_margin = n,
                    _ => {
                        return Err(c.problem(
                            &["watchdog", "safety_margin"],
                            format!("expected seconds (or -1 for half the ttl), got {value}"),
                        ))
                    }
                },
                other => c.warn(&["watchdog", other], "unknown key (ignored)"),
            }
        }
        Ok(w)
    }
}

fn parse_mode(value: &Json) -> Option<WatchdogMode> {
    match value {
        Json::Bool(false) => Some(WatchdogMode::Off),
        Json::Bool(true) => Some(WatchdogMode::Automatic),
        Json::String(s) => match s.to_ascii_lowercase().as_str() {
            "off" | "disable" | "disabled" | "false" => Some(WatchdogMode::Off),
            "auto" | "automatic" | "on" | "true" => Some(WatchdogMode::Automatic),
            "require" | "required" => Some(WatchdogMode::Required),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigError, Loaded};

    fn load(section: &str) -> Result<Loaded, ConfigError> {
        crate::tests::minimal_with(section, "w.yml")
    }

    #[test]
    fn defaults_are_patronis() {
        let w = load("").unwrap().config.watchdog;
        assert_eq!(w, Watchdog::default());
        assert_eq!((w.mode, w.device.to_str(), w.safety_margin), (WatchdogMode::Automatic, Some("/dev/watchdog"), 5));
    }

    #[test]
    fn spellings_and_values() {
        for (text, mode) in [
            ("off", WatchdogMode::Off),
            ("false", WatchdogMode::Off),
            ("disabled", WatchdogMode::Off),
            ("auto", WatchdogMode::Automatic),
            ("automatic", WatchdogMode::Automatic),
            ("required", WatchdogMode::Required),
            ("require", WatchdogMode::Required),
        ] {
            let w = load(&format!("watchdog:\n  mode: {text}\n")).unwrap().config.watchdog;
            assert_eq!(w.mode, mode, "{text}");
        }
        let w = load("watchdog:\n  mode: required\n  device: /dev/watchdog1\n  safety_margin: -1\n").unwrap();
        let w = w.config.watchdog;
        assert_eq!((w.device.to_str(), w.safety_margin), (Some("/dev/watchdog1"), -1));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load("watchdog:\n  mode: sometimes\n").unwrap_err().to_string();
        assert_eq!(e, "w.yml:12: watchdog.mode: expected off, automatic or required, got \"sometimes\"");
        let e = load("watchdog:\n  safety_margin: -5\n").unwrap_err().to_string();
        assert!(e.starts_with("w.yml:12: watchdog.safety_margin: expected seconds"), "{e}");
        let e = load("watchdog: yes please\n").unwrap_err().to_string();
        assert!(e.contains("watchdog: expected a mapping"), "{e}");
    }

    #[test]
    fn timeout_stays_below_the_ttl() {
        let w = |m| Watchdog { safety_margin: m, ..Watchdog::default() };
        assert_eq!(w(5).timeout_secs(30), 25);
        assert_eq!(w(-1).timeout_secs(30), 15);
        assert_eq!(w(5).timeout_secs(10), 5);
        assert_eq!(w(0).timeout_secs(10), 9, "never the whole ttl");
        assert_eq!(w(20).timeout_secs(10), 1, "at least a second");
    }
}
