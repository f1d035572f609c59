//! `synchronous_standby_names`: reading what PostgreSQL applies and writing what the leader wants.
//!
//! PostgreSQL's grammar: `[FIRST] n (a, b, ...)`, `ANY n (a, b, ...)`, or a bare list `a, b`
//! (which means `FIRST 1 (a, b)`); names are identifiers or double-quoted strings and match
//! `application_name` case-insensitively; `*` matches any standby.
//!
//! Invariant: [`StandbyNames::render`] and [`StandbyNames::parse`] are inverse on everything the
//! leader writes, so the leader can tell from the observed setting whether its last change is in
//! force. Names are always written double-quoted, so a member name can never be read as a keyword
//! or break the list.

/// The value the leader uses in strict mode when no standby can be named: it matches no standby,
/// so commits wait rather than go unreplicated. Patroni's spelling, so both agree on it.
pub const STRICT_PLACEHOLDER: &str = "__patroni_strict_sync_replica_placeholder__";

/// How the listed standbys acknowledge a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `FIRST n`: the `n` connected standbys listed first.
    First,
    /// `ANY n`: any `n` of the listed standbys.
    Any,
}

/// A parsed, non-empty `synchronous_standby_names`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandbyNames {
    /// `FIRST` or `ANY`.
    pub method: Method,
    /// How many standbys must acknowledge a commit.
    pub num: usize,
    /// The listed names, in order.
    pub names: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Comma,
    Word(String),
    Quoted(String),
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            '"' => {
                chars.next();
                let mut name = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated quoted name in {s:?}")),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            name.push('"');
                        }
                        Some('"') => break,
                        Some(ch) => name.push(ch),
                    }
                }
                out.push(Token::Quoted(name));
            }
            _ => {
                let mut word = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || matches!(ch, '(' | ')' | ',' | '"') {
                        break;
                    }
                    word.push(ch);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

fn name_of(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) | Token::Quoted(w) => Some(w.clone()),
        _ => None,
    }
}

fn number(t: Option<&Token>) -> Option<usize> {
    match t {
        Some(Token::Word(w)) if !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => w.parse().ok(),
        _ => None,
    }
}

/// `a, b, c` up to the end of `tokens`.
fn name_list(tokens: &[Token], whole: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut expect_name = true;
    for t in tokens {
        match (expect_name, name_of(t)) {
            (true, Some(n)) => {
                names.push(n);
                expect_name = false;
            }
            (false, None) if *t == Token::Comma => expect_name = true,
            _ => return Err(format!("cannot read synchronous_standby_names {whole:?}")),
        }
    }
    if expect_name {
        return Err(format!("cannot read synchronous_standby_names {whole:?}"));
    }
    Ok(names)
}

impl StandbyNames {
    /// Reads a setting; `Ok(None)` for an empty one (asynchronous replication).
    pub fn parse(s: &str) -> Result<Option<StandbyNames>, String> {
        let tokens = tokenize(s)?;
        if tokens.is_empty() {
            return Ok(None);
        }
        let keyword = match &tokens[0] {
            Token::Word(w) if w.eq_ignore_ascii_case("first") => Some(Method::First),
            Token::Word(w) if w.eq_ignore_ascii_case("any") => Some(Method::Any),
            _ => None,
        };
        let (method, rest) = match keyword {
            Some(m) if number(tokens.get(1)).is_some() && tokens.get(2) == Some(&Token::Open) => (m, &tokens[1..]),
            _ => (Method::First, &tokens[..]),
        };
        match (number(rest.first()), rest.get(1)) {
            (Some(num), Some(Token::Open)) => {
                if rest.last() != Some(&Token::Close) || rest.len() < 4 {
                    return Err(format!("cannot read synchronous_standby_names {s:?}"));
                }
                let names = name_list(&rest[2..rest.len() - 1], s)?;
                Ok(Some(StandbyNames { method, num, names }))
            }
            _ => Ok(Some(StandbyNames { method: Method::First, num: 1, names: name_list(rest, s)? })),
        }
    }

    /// The setting's text, every name double-quoted: `FIRST 2 ("a","b")`, `ANY 1 ("a")`.
    pub fn render(&self) -> String {
        let names: Vec<String> = self.names.iter().map(|n| format!("\"{}\"", n.replace('"', "\"\""))).collect();
        let method = match self.method {
            Method::First => "FIRST",
            Method::Any => "ANY",
        };
        format!("{method} {} ({})", self.num, names.join(","))
    }

    /// Whether `name` is listed (PostgreSQL compares names case-insensitively).
    pub fn lists(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Whether `*` (any standby) is listed.
    pub fn has_star(&self) -> bool {
        self.names.iter().any(|n| n == "*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StandbyNames {
        StandbyNames::parse(s).unwrap().unwrap()
    }

    #[test]
    fn postgres_forms() {
        assert_eq!(StandbyNames::parse("").unwrap(), None);
        assert_eq!(StandbyNames::parse("  ").unwrap(), None);
        let bare = p("a, b");
        assert_eq!((bare.method, bare.num, bare.names.clone()), (Method::First, 1, vec!["a".into(), "b".into()]));
        let first = p("2 (a,b,c)");
        assert_eq!((first.method, first.num), (Method::First, 2));
        let any = p("any 1 (\"node-1\", node2)");
        assert_eq!((any.method, any.num, any.names), (Method::Any, 1, vec!["node-1".into(), "node2".into()]));
        assert!(p("*").has_star());
        assert!(p("FIRST 1 (NODE1)").lists("node1"), "case-insensitive");
        let kw = p("first, any");
        assert_eq!(kw.names, ["first", "any"], "keywords are names when no count follows");
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in ["ANY 2 (a,b", "a,,b", "2 ()", "(a)", "\"a", "a b"] {
            assert!(StandbyNames::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn render_parses_back() {
        let cases = [
            StandbyNames { method: Method::First, num: 2, names: vec!["a".into(), "b".into()] },
            StandbyNames { method: Method::Any, num: 1, names: vec!["we\"ird, (name)".into(), "first".into()] },
            StandbyNames { method: Method::Any, num: 1, names: vec![STRICT_PLACEHOLDER.into()] },
        ];
        for c in cases {
            assert_eq!(StandbyNames::parse(&c.render()).unwrap().as_ref(), Some(&c), "{}", c.render());
        }
        assert_eq!(cases_text(), "FIRST 2 (\"a\",\"b\")");
    }

    fn cases_text() -> String {
        StandbyNames { method: Method::First, num: 2, names: vec!["a".into(), "b".into()] }.render()
    }
}
