//! PostgreSQL's own reading of a setting's text (PostgreSQL 15's `parse_bool`, `parse_int`,
//! `parse_real` and `convert_to_base_unit` in `guc.c`), so that a value is refused here exactly
//! when the server would refuse it at its next start.
//!
//! Invariant kept here: nothing PostgreSQL accepts is refused. Integers may be decimal, octal
//! (`010`) or hexadecimal (`0x10`), or fractional (rounded to the nearest integer); a unit may
//! follow after optional spaces, case-sensitive, from the setting's family only (memory: `B`,
//! `kB`, `MB`, `GB`, `TB`; time: `us`, `ms`, `s`, `min`, `h`, `d`); a fractional value with a unit
//! is first rounded to the next smaller unit, as the server does.

/// The base unit of a numeric setting (pg_settings.unit): its size in bytes or in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseUnit {
    /// A memory unit of this many bytes (`B` = 1, `kB` = 1024, `8kB` = 8192, `MB`).
    Memory(u64),
    /// A time unit of this many microseconds (`ms` = 1000, `s`, `min`).
    Time(u64),
}

const MEMORY_UNITS: &[(&str, u64)] = &[("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10), ("B", 1)];
const TIME_UNITS: &[(&str, u64)] =
    &[("d", 86_400_000_000), ("h", 3_600_000_000), ("min", 60_000_000), ("s", 1_000_000), ("ms", 1_000), ("us", 1)];

impl BaseUnit {
    /// Reads pg_settings' unit text (`8kB`, `kB`, `MB`, `B`, `ms`, `s`, `min`).
    pub fn parse(text: &str) -> Option<BaseUnit> {
        let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
        let factor: u64 = if digits.is_empty() { 1 } else { digits.parse().ok()? };
        if let Some((_, b)) = MEMORY_UNITS.iter().find(|(u, _)| *u == unit) {
            return Some(BaseUnit::Memory(factor * b));
        }
        TIME_UNITS.iter().find(|(u, _)| *u == unit).map(|(_, us)| BaseUnit::Time(factor * us))
    }

    fn table(self) -> (&'static [(&'static str, u64)], u64) {
        match self {
            BaseUnit::Memory(b) => (MEMORY_UNITS, b),
            BaseUnit::Time(us) => (TIME_UNITS, us),
        }
    }

    /// The units a value of this setting may carry, for messages.
    pub fn accepted(self) -> String {
        let (table, _) = self.table();
        table.iter().map(|(u, _)| *u).collect::<Vec<_>>().join(", ")
    }

    /// `n` base units as the largest whole unit, e.g. 16 × 8kB = `128kB`.
    pub fn render(self, n: f64) -> String {
        let (table, size) = self.table();
        let total = n * size as f64;
        if total.fract() == 0.0 && total != 0.0 {
            for (name, s) in table {
                if (total / *s as f64).fract() == 0.0 {
                    return format!("{}{name}", total / *s as f64);
                }
            }
        }
        format!("{n} × {}", self.name())
    }

    /// pg_settings' spelling of the base unit.
    pub fn name(self) -> String {
        let (table, size) = self.table();
        match table.iter().find(|(_, s)| *s == size) {
            Some((u, _)) => (*u).to_string(),
            None => match self {
                BaseUnit::Memory(b) => format!("{}kB", b / 1024),
                BaseUnit::Time(us) => format!("{}ms", us / 1000),
            },
        }
    }
}

/// Why PostgreSQL would refuse a value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BadValue {
    /// Not a number at all.
    #[error("not a number")]
    NotANumber,
    /// A unit on a setting that takes none.
    #[error("this parameter takes no unit")]
    NoUnitAllowed,
    /// An unknown unit, or one of the wrong family.
    #[error("valid units for this parameter are {0}")]
    BadUnit(String),
    /// Outside the integer range of the server.
    #[error("value exceeds integer range")]
    IntegerOverflow,
    /// Not one of PostgreSQL's spellings of a boolean.
    #[error("a boolean is expected (on, off, true, false, yes, no, 1, 0)")]
    NotABool,
}

/// PostgreSQL's `parse_bool`: a case-insensitive prefix of `true`, `false`, `yes`, `no`, at least
/// two letters of `on`/`off`, or `1`/`0`.
pub fn parse_bool(text: &str) -> Option<bool> {
    let t = text.to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| t.len() >= min && word.starts_with(t.as_str());
    match t.chars().next()? {
        't' if prefix_of("true", 1) => Some(true),
        'f' if prefix_of("false", 1) => Some(false),
        'y' if prefix_of("yes", 1) => Some(true),
        'n' if prefix_of("no", 1) => Some(false),
        'o' if prefix_of("on", 2) => Some(true),
        'o' if prefix_of("off", 2) => Some(false),
        '1' if t.len() == 1 => Some(true),
        '0' if t.len() == 1 => Some(false),
        _ => None,
    }
}

/// PostgreSQL's `parse_int`: the value in base units, rounded.
pub fn parse_int(text: &str, unit: Option<BaseUnit>) -> Result<f64, BadValue> {
    let (mut value, rest) = leading_integer(text)
        .filter(|(_, rest)| !rest.starts_with(['.', 'e', 'E']))
        .or_else(|| leading_float(text))
        .ok_or(BadValue::NotANumber)?;
    value = apply_unit(value, rest, unit)?.round();
    if value > f64::from(i32::MAX) || value < f64::from(i32::MIN) {
        return Err(BadValue::IntegerOverflow);
    }
    Ok(value)
}

/// PostgreSQL's `parse_real`: the value in base units.
pub fn parse_real(text: &str, unit: Option<BaseUnit>) -> Result<f64, BadValue> {
    let (value, rest) = leading_float(text).ok_or(BadValue::NotANumber)?;
    apply_unit(value, rest, unit)
}

/// The unit part of a number (`rest`, after the digits) applied to `value`.
fn apply_unit(value: f64, rest: &str, unit: Option<BaseUnit>) -> Result<f64, BadValue> {
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Ok(value);
    }
    let unit = unit.ok_or(BadValue::NoUnitAllowed)?;
    let (table, base) = unit.table();
    let bad = || BadValue::BadUnit(unit.accepted());
    let name = rest.trim_end();
    if name.contains(char::is_whitespace) {
        return Err(bad());
    }
    let i = table.iter().position(|(u, _)| *u == name).ok_or_else(bad)?;
    let mut converted = value * table[i].1 as f64 / base as f64;
    // "30.1GB": rounded to a whole number of the next smaller unit first.
    if let Some((_, smaller)) = table.get(i + 1) {
        let step = *smaller as f64 / base as f64;
        converted = (converted / step).round() * step;
    }
    Ok(converted)
}

/// `strtol(text, &end, 0)`: leading spaces, a sign, then hexadecimal (`0x`), octal (leading `0`)
/// or decimal digits. `None` when no digit was read or the number overflows a long.
fn leading_integer(text: &str) -> Option<(f64, &str)> {
    let t = text.trim_start();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) =
        if (t.starts_with("0x") || t.starts_with("0X")) && t[2..].starts_with(|c: char| c.is_ascii_hexdigit()) {
            (16, &t[2..])
        } else if t.starts_with('0') {
            (8, t)
        } else {
            (10, t)
        };
    let end = digits.find(|c: char| !c.is_digit(radix)).unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let n = i64::from_str_radix(&digits[..end], radix).ok()?;
    Some((if negative { -n } else { n } as f64, &digits[end..]))
}

/// `strtod`: the longest leading decimal floating-point number (spaces, sign, digits, `.`,
/// exponent), or `inf`/`infinity`. NaN is refused, as PostgreSQL does.
fn leading_float(text: &str) -> Option<(f64, &str)> {
    let t = text.trim_start();
    let b = t.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let lower = t[i..].to_ascii_lowercase();
    for word in ["infinity", "inf"] {
        if lower.starts_with(word) {
            let v = if b.first() == Some(&b'-') { f64::NEG_INFINITY } else { f64::INFINITY };
            return Some((v, &t[i + word.len()..]));
        }
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut seen = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        seen += digits(&mut i);
    }
    if seen == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1 + usize::from(matches!(b.get(i + 1), Some(b'-' | b'+')));
        if digits(&mut j) > 0 {
            i = j;
        }
    }
    t[..i].parse::<f64>().ok().filter(|v| !v.is_nan()).map(|v| (v, &t[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCKS: Option<BaseUnit> = Some(BaseUnit::Memory(8192));
    const KB: Option<BaseUnit> = Some(BaseUnit::Memory(1024));
    const MS: Option<BaseUnit> = Some(BaseUnit::Time(1000));
    const S: Option<BaseUnit> = Some(BaseUnit::Time(1_000_000));

    #[test]
    fn booleans_as_postgresql_spells_them() {
        for t in ["on", "ON", "true", "t", "tr", "yes", "y", "1", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for t in ["off", "of", "false", "f", "no", "n", "0", "FALSE"] {
            assert_eq!(parse_bool(t), Some(false), "{t}");
        }
        for t in ["o", "", "maybe", "truee", "2", "01", " on", "yess"] {
            assert_eq!(parse_bool(t), None, "{t:?}");
        }
    }

    #[test]
    fn base_units_of_pg_settings() {
        assert_eq!(BaseUnit::parse("8kB"), BLOCKS);
        assert_eq!(BaseUnit::parse("kB"), KB);
        assert_eq!(BaseUnit::parse("B"), Some(BaseUnit::Memory(1)));
        assert_eq!(BaseUnit::parse("MB"), Some(BaseUnit::Memory(1 << 20)));
        assert_eq!(BaseUnit::parse("min"), Some(BaseUnit::Time(60_000_000)));
        assert_eq!(BaseUnit::parse("parsecs"), None);
        assert_eq!(BaseUnit::Memory(8192).render(16.0), "128kB");
        assert_eq!(BaseUnit::Memory(8192).render(1_073_741_823.0), "8589934584kB");
        assert_eq!(BaseUnit::Memory(8192).name(), "8kB");
        assert_eq!(BaseUnit::Time(1000).render(60_000.0), "1min");
    }

    #[test]
    fn integers_with_and_without_units() {
        assert_eq!(parse_int("100", None), Ok(100.0));
        assert_eq!(parse_int(" -1", None), Ok(-1.0));
        assert_eq!(parse_int("0x10", None), Ok(16.0));
        assert_eq!(parse_int("010", None), Ok(8.0));
        assert_eq!(parse_int("1.5", None), Ok(2.0), "fractions are rounded");
        assert_eq!(parse_int("1e3", None), Ok(1000.0));
        assert_eq!(parse_int("128MB", BLOCKS), Ok(16384.0));
        assert_eq!(parse_int("128 MB ", BLOCKS), Ok(16384.0), "spaces around the unit");
        assert_eq!(parse_int("1GB", KB), Ok(1_048_576.0));
        assert_eq!(parse_int("999TB", BLOCKS), Err(BadValue::IntegerOverflow));
        assert_eq!(parse_int("1.5GB", BLOCKS), Ok(196_608.0));
        assert_eq!(parse_int("5min", MS), Ok(300_000.0));
        assert_eq!(parse_int("1500ms", S), Ok(2.0), "rounded to the base unit");
        assert_eq!(parse_int("1d", S), Ok(86_400.0));
        assert_eq!(parse_int("lots", None), Err(BadValue::NotANumber));
        assert_eq!(parse_int("", None), Err(BadValue::NotANumber));
        assert_eq!(parse_int("100 connections", None), Err(BadValue::NoUnitAllowed));
        assert!(matches!(parse_int("128mb", BLOCKS), Err(BadValue::BadUnit(u)) if u.starts_with("TB, GB, MB")));
        assert!(matches!(parse_int("10s", BLOCKS), Err(BadValue::BadUnit(_))), "a time unit on a memory setting");
        assert!(matches!(parse_int("10MB", MS), Err(BadValue::BadUnit(_))));
        assert!(matches!(parse_int("10 MB x", BLOCKS), Err(BadValue::BadUnit(_))));
        assert_eq!(parse_int("2147483648", None), Err(BadValue::IntegerOverflow));
    }

    #[test]
    fn reals() {
        assert_eq!(parse_real("1.1", None), Ok(1.1));
        assert_eq!(parse_real("4", None), Ok(4.0));
        assert_eq!(parse_real(".5", None), Ok(0.5));
        assert_eq!(parse_real("2e-3", None), Ok(0.002));
        assert_eq!(parse_real("20ms", MS), Ok(20.0));
        assert_eq!(parse_real("1s", MS), Ok(1000.0));
        assert_eq!(parse_real("cheap", None), Err(BadValue::NotANumber));
        assert_eq!(parse_real("nan", None), Err(BadValue::NotANumber));
        assert_eq!(parse_real("1.5x", None), Err(BadValue::NoUnitAllowed));
    }
}
