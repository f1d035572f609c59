//! Whether a function a statement calls may write: the configured lists first
//! (`write_functions`, `read_only_functions`, regular expressions over the name as written, as
//! Pgpool-II's `write_function_list`/`read_only_function_list`), then the volatility PostgreSQL
//! records in `pg_proc` (IMMUTABLE and STABLE functions only read; VOLATILE ones may write).
//!
//! Invariant: a name neither list matches and the catalog does not know (a function created
//! since the catalog was read, or no catalog read yet) may write.

use std::collections::HashMap;

use regex::Regex;

use super::classify::FunctionWrites;

/// What the proxy reads from `pg_proc` on the primary, one row per function: schema, name and
/// `provolatile` (`i`, `s` or `v`).
pub const CATALOG_QUERY: &str = "SELECT n.nspname::text, p.proname::text, p.provolatile::text \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace";

/// The volatility of every function of one database, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Function name to the schemas that have one by that name, each with whether any of its
    /// overloads there is VOLATILE.
    by_name: HashMap<String, Vec<(String, bool)>>,
}

impl Catalog {
    /// The catalog from [`CATALOG_QUERY`]'s rows.
    pub fn from_rows<I, S>(rows: I) -> Catalog
    where
        I: IntoIterator<Item = (S, S, S)>,
        S: AsRef<str>,
    {
        let mut by_name: HashMap<String, Vec<(String, bool)>> = HashMap::new();
        for (schema, name, volatility) in rows {
            let volatile = !matches!(volatility.as_ref(), "i" | "s");
            let schemas = by_name.entry(name.as_ref().to_string()).or_default();
            match schemas.iter_mut().find(|(s, _)| s == schema.as_ref()) {
                Some((_, v)) => *v |= volatile,
                None => schemas.push((schema.as_ref().to_string(), volatile)),
            }
        }
        Catalog { by_name }
    }

    /// How many function names it knows.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether it knows no function.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether `name` (`f`, `schema.f` or `db.schema.f`) may write: `None` when unknown. An
    /// unqualified name may write when any schema's function by that name may (the session's
    /// `search_path` is not known here).
    pub fn writes(&self, name: &str) -> Option<bool> {
        let mut parts = name.rsplit('.');
        let function = parts.next()?;
        let schema = parts.next();
        let schemas = self.by_name.get(function)?;
        let mut found = schemas.iter().filter(|(s, _)| schema.is_none_or(|want| want == s)).peekable();
        found.peek()?;
        Some(found.any(|(_, volatile)| *volatile))
    }
}

/// `write_functions` and `read_only_functions`, compiled.
#[derive(Clone, Debug, Default)]
pub struct Lists {
    write: Option<Regex>,
    read_only: Option<Regex>,
}

/// A pattern of a list that is not a regular expression.
#[derive(Debug, thiserror::Error)]
#[error("{list}: {pattern:?} is not a regular expression: {error}")]
pub struct BadPattern {
    /// Which list.
    pub list: &'static str,
    /// The pattern as given.
    pub pattern: String,
    /// What the regex compiler said.
    pub error: String,
}

impl Lists {
    /// Compiles the lists; each pattern must match a whole name.
    pub fn new(write: &[String], read_only: &[String]) -> Result<Lists, BadPattern> {
        Ok(Lists { write: compile("write_functions", write)?, read_only: compile("read_only_functions", read_only)? })
    }
}

fn compile(list: &'static str, patterns: &[String]) -> Result<Option<Regex>, BadPattern> {
    for p in patterns {
        Regex::new(p).map_err(|e| BadPattern { list, pattern: p.clone(), error: e.to_string() })?;
    }
    if patterns.is_empty() {
        return Ok(None);
    }
    let joined = patterns.iter().map(|p| format!("(?:{p})")).collect::<Vec<_>>().join("|");
    Regex::new(&format!("^(?:{joined})$")).map(Some).map_err(|e| BadPattern {
        list,
        pattern: joined,
        error: e.to_string(),
    })
}

/// The lists, then the catalog (if one was read): what [`super::classify::Facts::class_with`]
/// asks.
pub struct Functions<'a> {
    /// The configured lists.
    pub lists: &'a Lists,
    /// The database's catalog, once read.
    pub catalog: Option<&'a Catalog>,
}

impl FunctionWrites for Functions<'_> {
    fn writes(&self, name: &str) -> Option<bool> {
        if self.lists.write.as_ref().is_some_and(|r| r.is_match(name)) {
            return Some(true);
        }
        if self.lists.read_only.as_ref().is_some_and(|r| r.is_match(name)) {
            return Some(false);
        }
        self.catalog?.writes(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::from_rows([
            ("pg_catalog", "now", "s"),
            ("pg_catalog", "lower", "i"),
            ("pg_catalog", "nextval", "v"),
            ("public", "lower", "v"),
            ("app", "price", "s"),
            ("app", "touch", "s"),
            ("app", "touch", "v"),
        ])
    }

    #[test]
    fn the_catalog_answers_by_volatility_and_schema() {
        let c = catalog();
        assert_eq!(c.writes("now"), Some(false));
        assert_eq!(c.writes("pg_catalog.now"), Some(false));
        assert_eq!(c.writes("nextval"), Some(true));
        assert_eq!(c.writes("pg_catalog.lower"), Some(false));
        assert_eq!(c.writes("lower"), Some(true), "some schema's lower may write");
        assert_eq!(c.writes("app.touch"), Some(true), "an overload is volatile");
        assert_eq!(c.writes("mydb.app.price"), Some(false));
        assert_eq!(c.writes("unknown_fn"), None);
        assert_eq!(c.writes("other.price"), None);
    }

    #[test]
    fn the_lists_come_before_the_catalog() {
        let c = catalog();
        let lists = Lists::new(&["app\\.price".into()], &["nextval|lower".into(), "my_.*".into()]).unwrap();
        let f = Functions { lists: &lists, catalog: Some(&c) };
        assert_eq!(f.writes("app.price"), Some(true));
        assert_eq!(f.writes("price"), Some(false), "patterns match whole names: the catalog answers");
        assert_eq!(f.writes("nextval"), Some(false));
        assert_eq!(f.writes("my_report"), Some(false));
        assert_eq!(f.writes("now"), Some(false));
        let none = Functions { lists: &lists, catalog: None };
        assert_eq!(none.writes("now"), None, "no catalog yet: unknown");
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let e = Lists::new(&["ok".into(), "(".into()], &[]).unwrap_err();
        assert_eq!((e.list, e.pattern.as_str()), ("write_functions", "("));
    }
}
