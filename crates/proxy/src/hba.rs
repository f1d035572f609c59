//! Client authentication rules in PostgreSQL's `pg_hba.conf` format, for the pooling proxy
//! (which authenticates clients itself, as PgBouncer's `auth_type = hba` does).
//!
//! [`Hba::parse`] reads the whole file once: a line it cannot honour exactly (an unknown method,
//! a host name, `samenet`, a `+group`) is refused with its line number and what is wrong, so a
//! file is never half understood. [`Hba::decide`] then matches a connection against the rules
//! in order, as PostgreSQL does: the first line whose connection type, database, user and
//! address all match decides, and no matching line rejects.
//!
//! Invariant: matching never panics and depends only on the parsed rules and the connection;
//! names are compared exactly (a quoted keyword is a name, as in PostgreSQL).

use std::net::IpAddr;

use ipnet::IpNet;

/// How a matching client authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Let it in without a password.
    Trust,
    /// Refuse it.
    Reject,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// MD5, or SCRAM-SHA-256 when the user's stored secret is a SCRAM verifier (as PostgreSQL).
    Md5,
    /// A cleartext password (only sensible over TLS).
    Password,
}

impl Method {
    fn parse(word: &str) -> Result<Method, String> {
        Ok(match word {
            "trust" => Method::Trust,
            "reject" => Method::Reject,
            "scram-sha-256" => Method::ScramSha256,
            "md5" => Method::Md5,
            "password" => Method::Password,
            "peer" | "ident" | "cert" | "gss" | "sspi" | "pam" | "ldap" | "radius" | "bsd" | "oauth" => {
                return Err(format!(
                    "authentication method \"{word}\" is not supported by rampart proxy \
                     (trust, reject, scram-sha-256, md5 and password are)"
                ))
            }
            other => return Err(format!("unknown authentication method \"{other}\"")),
        })
    }
}

/// The connection types of `pg_hba.conf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnType {
    /// Unix-domain sockets: the proxy listens on TCP only, so these lines never match (they are
    /// accepted so that a server's file can be reused).
    Local,
    Host,
    HostSsl,
    HostNoSsl,
    /// GSSAPI encryption: the proxy never negotiates it, so these lines never match.
    HostGssEnc,
    HostNoGssEnc,
}

impl ConnType {
    fn parse(word: &str) -> Option<ConnType> {
        Some(match word {
            "local" => ConnType::Local,
            "host" => ConnType::Host,
            "hostssl" => ConnType::HostSsl,
            "hostnossl" => ConnType::HostNoSsl,
            "hostgssenc" => ConnType::HostGssEnc,
            "hostnogssenc" => ConnType::HostNoGssEnc,
            _ => return None,
        })
    }

    fn matches(self, ssl: bool) -> bool {
        match self {
            ConnType::Local | ConnType::HostGssEnc => false,
            ConnType::Host | ConnType::HostNoGssEnc => true,
            ConnType::HostSsl => ssl,
            ConnType::HostNoSsl => !ssl,
        }
    }
}

/// One item of a database or user list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Name {
    /// `all` (for databases: every database but not a replication connection).
    All,
    /// Database `sameuser`: the database named like the user.
    SameUser,
    /// Database `replication`: a physical replication connection.
    Replication,
    /// This exact name (also a quoted keyword).
    Exact(String),
}

/// A connection to decide on.
#[derive(Clone, Copy, Debug)]
pub struct Connection<'a> {
    /// The client's address.
    pub addr: IpAddr,
    /// The session runs over TLS.
    pub ssl: bool,
    /// The database it asks for.
    pub database: &'a str,
    /// The user it logs in as.
    pub user: &'a str,
    /// It asks for a physical replication connection (`replication=true`).
    pub replication: bool,
}

/// One line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    line: usize,
    conn: ConnType,
    databases: Vec<Name>,
    users: Vec<Name>,
    /// `None`: any address (`all`, and `local` lines).
    network: Option<IpNet>,
    method: Method,
}

impl Rule {
    fn matches(&self, c: &Connection<'_>) -> bool {
        let database = |n: &Name| match n {
            Name::All => !c.replication,
            Name::SameUser => !c.replication && c.database == c.user,
            Name::Replication => c.replication,
            Name::Exact(name) => !c.replication && name == c.database,
        };
        let user = |n: &Name| match n {
            Name::All => true,
            Name::Exact(name) => name == c.user,
            Name::SameUser | Name::Replication => false,
        };
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; an IPv4 line matches them.
        let addr = c.addr.to_canonical();
        self.conn.matches(c.ssl)
            && self.databases.iter().any(database)
            && self.users.iter().any(user)
            && self.network.is_none_or(|n| n.contains(&addr))
    }
}

/// A line that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct HbaError {
    /// Its number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// The rules of one file, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hba {
    rules: Vec<Rule>,
}

/// What [`Hba::decide`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// How the client authenticates (`Reject` when no line matched).
    pub method: Method,
    /// The line that decided; `None` when none matched.
    pub line: Option<usize>,
}

impl Hba {
    /// Parses the text of a `pg_hba.conf`-format file.
    pub fn parse(text: &str) -> Result<Hba, HbaError> {
        let mut rules = Vec::new();
        for (line, fields) in logical_lines(text)? {
            let err = |message: String| HbaError { line, message };
            rules.push(parse_rule(line, &fields).map_err(err)?);
        }
        Ok(Hba { rules })
    }

    /// The method for `c`: that of the first line matching it, else `Reject`.
    pub fn decide(&self, c: &Connection<'_>) -> Decision {
        match self.rules.iter().find(|r| r.matches(c)) {
            Some(r) => Decision { method: r.method, line: Some(r.line) },
            None => Decision { method: Method::Reject, line: None },
        }
    }

    /// How many rules the file has.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the file has no rule (every connection is then rejected).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A field of a line: its text, and whether any of it was quoted (a quoted keyword is a name).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Field {
    text: String,
    quoted: bool,
}

/// The non-empty lines without comments, a trailing backslash joining a line to the next (as
/// PostgreSQL 16 does), each split into fields with the number of its first line.
fn logical_lines(text: &str) -> Result<Vec<(usize, Vec<Field>)>, HbaError> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        match raw.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
                continue;
            }
            None => joined.push_str(raw),
        }
        let fields = split_fields(&joined).map_err(|message| HbaError { line: start, message })?;
        if !fields.is_empty() {
            out.push((start, fields));
        }
    }
    if let Some((start, joined)) = pending {
        let fields = split_fields(&joined).map_err(|message| HbaError { line: start, message })?;
        if !fields.is_empty() {
            out.push((start, fields));
        }
    }
    Ok(out)
}

/// Splits a line into whitespace-separated fields; double quotes keep spaces, commas and `#`
/// inside a field, and `#` outside quotes starts a comment.
fn split_fields(line: &str) -> Result<Vec<Field>, String> {
    let mut fields = Vec::new();
    let mut current: Option<Field> = None;
    let mut in_quotes = false;
    for ch in line.chars() {
        if in_quotes {
            if ch == '"' {
                in_quotes = false;
            } else {
                current.get_or_insert(Field { text: String::new(), quoted: true }).text.push(ch);
            }
            continue;
        }
        match ch {
            '#' => break,
            '"' => {
                in_quotes = true;
                current.get_or_insert(Field { text: String::new(), quoted: true }).quoted = true;
            }
            c if c.is_whitespace() => fields.extend(current.take()),
            c => current.get_or_insert(Field { text: String::new(), quoted: false }).text.push(c),
        }
    }
    if in_quotes {
        return Err("a quote is not closed".into());
    }
    fields.extend(current.take());
    Ok(fields)
}

fn parse_rule(line: usize, fields: &[Field]) -> Result<Rule, String> {
    let word = |i: usize, what: &str| fields.get(i).ok_or_else(|| format!("missing {what}"));
    let conn_field = word(0, "connection type")?;
    let conn = ConnType::parse(&conn_field.text)
        .filter(|_| !conn_field.quoted)
        .ok_or_else(|| format!("invalid connection type \"{}\"", conn_field.text))?;
    let databases = names(word(1, "database")?, true)?;
    let users = names(word(2, "user")?, false)?;
    let (network, method_at) = match conn {
        ConnType::Local => (None, 3),
        _ => address(word(3, "IP address")?, fields.get(4))?,
    };
    let method_field = word(method_at, "authentication method")?;
    let method = Method::parse(&method_field.text)?;
    if let Some(option) = fields.get(method_at + 1) {
        return Err(format!("authentication option \"{}\" is not supported by rampart proxy", option.text));
    }
    Ok(Rule { line, conn, databases, users, network, method })
}

/// A comma-separated list of databases (`database`) or users.
fn names(field: &Field, database: bool) -> Result<Vec<Name>, String> {
    let what = if database { "database" } else { "user" };
    let mut out = Vec::new();
    for item in field.text.split(',') {
        if item.is_empty() {
            return Err(format!("empty {what} name in \"{}\"", field.text));
        }
        // Quoting makes a keyword a plain name, as in PostgreSQL.
        let name = match (item, field.quoted) {
            (_, true) => Name::Exact(item.to_string()),
            ("all", _) => Name::All,
            ("sameuser", _) if database => Name::SameUser,
            ("replication", _) if database => Name::Replication,
            ("samerole" | "samegroup", _) if database => {
                return Err(format!("database \"{item}\" needs role membership, which rampart proxy does not read"))
            }
            (i, _) if i.starts_with('@') => {
                return Err(format!("included files (\"{i}\") are not supported by rampart proxy; list the names"))
            }
            (i, _) if i.starts_with('+') => {
                return Err(format!("group \"{i}\" needs role membership, which rampart proxy does not read"))
            }
            (i, _) if i.starts_with('/') => {
                return Err(format!("regular expression \"{i}\" is not supported by rampart proxy"))
            }
            (i, _) => Name::Exact(i.to_string()),
        };
        out.push(name);
    }
    Ok(out)
}

/// The address of a `host*` line (and the next field, when it is a separate mask): the network,
/// and the index of the method field.
fn address(field: &Field, next: Option<&Field>) -> Result<(Option<IpNet>, usize), String> {
    let text = field.text.as_str();
    match text {
        "all" => return Ok((None, 4)),
        "samehost" | "samenet" => {
            return Err(format!("address \"{text}\" needs the host's interfaces, which rampart proxy does not read"))
        }
        _ => {}
    }
    if let Some((addr, bits)) = text.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| format!("invalid IP address \"{addr}\""))?;
        let bits: u8 = bits.parse().map_err(|_| format!("invalid CIDR mask in \"{text}\""))?;
        let net = IpNet::new(addr, bits).map_err(|_| format!("invalid CIDR mask in \"{text}\""))?;
        return Ok((Some(net.trunc()), 4));
    }
    let Ok(addr) = text.parse::<IpAddr>() else {
        return Err(format!("host name \"{text}\" is not supported by rampart proxy; give an address with a mask"));
    };
    let mask =
        next.ok_or_else(|| format!("IP address \"{text}\" needs a CIDR mask (/32 for one address) or a mask field"))?;
    let mask: IpAddr = mask
        .text
        .parse()
        .map_err(|_| format!("IP address \"{text}\" needs a CIDR mask (/32 for one address), not \"{}\"", mask.text))?;
    let net = IpNet::with_netmask(addr, mask).map_err(|_| format!("invalid IP mask \"{mask}\""))?;
    Ok((Some(net.trunc()), 5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn<'a>(addr: &str, ssl: bool, database: &'a str, user: &'a str) -> Connection<'a> {
        Connection { addr: addr.parse().unwrap(), ssl, database, user, replication: false }
    }

    fn method(hba: &Hba, c: Connection<'_>) -> (Method, Option<usize>) {
        let d = hba.decide(&c);
        (d.method, d.line)
    }

    const FILE: &str = r#"
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             postgres                                trust
hostssl app             alice           10.0.0.0/8              password
host    app,"all"       alice,bob       10.0.0.0/8              scram-sha-256
host    sameuser        all             192.168.1.0 255.255.255.0   md5
host    replication     replicator      10.1.2.3/32             scram-sha-256
host    all             mallory         0.0.0.0/0               reject
host    all             all             ::1/128                 trust
host    all             all             127.0.0.1/32            trust
"#;

    #[test]
    fn the_first_matching_line_decides_as_in_postgresql() {
        let hba = Hba::parse(FILE).unwrap();
        assert_eq!(hba.len(), 8);
        // The TLS-only line comes first for alice over TLS, the SCRAM one without.
        assert_eq!(method(&hba, conn("10.2.3.4", true, "app", "alice")), (Method::Password, Some(4)));
        assert_eq!(method(&hba, conn("10.2.3.4", false, "app", "alice")), (Method::ScramSha256, Some(5)));
        // A quoted "all" is a database named all, not every database.
        assert_eq!(method(&hba, conn("10.2.3.4", false, "all", "bob")), (Method::ScramSha256, Some(5)));
        assert_eq!(method(&hba, conn("10.2.3.4", false, "other", "bob")), (Method::Reject, None));
        // sameuser with a separate mask field.
        assert_eq!(method(&hba, conn("192.168.1.77", false, "carol", "carol")), (Method::Md5, Some(6)));
        assert_eq!(method(&hba, conn("192.168.1.77", false, "app", "carol")), (Method::Reject, None));
        assert_eq!(method(&hba, conn("192.168.2.1", false, "carol", "carol")), (Method::Reject, None));
        // Local lines never match a TCP client; loopback over both families.
        assert_eq!(method(&hba, conn("127.0.0.1", false, "app", "postgres")), (Method::Trust, Some(10)));
        assert_eq!(method(&hba, conn("::1", false, "app", "postgres")), (Method::Trust, Some(9)));
        // An IPv4 client seen through a dual-stack listener matches the IPv4 line.
        assert_eq!(method(&hba, conn("::ffff:127.0.0.1", false, "app", "dave")), (Method::Trust, Some(10)));
        assert_eq!(method(&hba, conn("203.0.113.9", false, "app", "mallory")), (Method::Reject, Some(8)));
    }

    #[test]
    fn replication_connections_match_only_replication_lines() {
        let hba = Hba::parse(FILE).unwrap();
        let repl = |addr: &str, user| Connection { replication: true, ..conn(addr, false, "app", user) };
        assert_eq!(method(&hba, repl("10.1.2.3", "replicator")), (Method::ScramSha256, Some(7)));
        assert_eq!(method(&hba, repl("127.0.0.1", "replicator")), (Method::Reject, None), "`all` is not replication");
    }

    #[test]
    fn continuations_comments_and_quotes() {
        let text = "host all all \\\n  127.0.0.1/32 trust # loopback\n\"host\" all all 10.0.0.0/8 trust\n";
        let e = Hba::parse(text).unwrap_err();
        assert_eq!(e.line, 3, "a quoted connection type is no keyword");
        let hba = Hba::parse("host \"my db\",other \"#me\" 127.0.0.1/32 md5 # \"ignored\n").unwrap();
        assert_eq!(method(&hba, conn("127.0.0.1", false, "my db", "#me")).0, Method::Md5);
        assert_eq!(method(&hba, conn("127.0.0.1", false, "other", "#me")).0, Method::Md5);
        let hba = Hba::parse("host all all \\\n  127.0.0.1/32 trust\n").unwrap();
        assert_eq!(method(&hba, conn("127.0.0.1", false, "x", "y")), (Method::Trust, Some(1)));
        assert!(Hba::parse("").unwrap().is_empty());
    }

    #[test]
    fn what_cannot_be_honoured_exactly_is_refused_with_its_line() {
        let cases = [
            ("host all all 10.0.0.0/8 peer", "method \"peer\" is not supported"),
            ("host all all 10.0.0.0/8 sha1", "unknown authentication method \"sha1\""),
            ("host all all db.example.com scram-sha-256", "host name \"db.example.com\""),
            ("host all all samenet trust", "needs the host's interfaces"),
            ("host all +admins 10.0.0.0/8 trust", "group \"+admins\""),
            ("host samerole all 10.0.0.0/8 trust", "needs role membership"),
            ("host @dbs all 10.0.0.0/8 trust", "included files"),
            ("host all /^a 10.0.0.0/8 trust", "regular expression"),
            ("host all all 10.0.0.1 trust", "needs a CIDR mask"),
            ("host all all 10.0.0.0/33 trust", "invalid CIDR mask"),
            ("host all all 10.0.0.0 255.0.255.0 trust", "invalid IP mask"),
            ("host all all 10.0.0.0/8 scram-sha-256 clientcert=verify-full", "option \"clientcert=verify-full\""),
            ("hostx all all 10.0.0.0/8 trust", "invalid connection type \"hostx\""),
            ("host all all", "missing IP address"),
            ("host all all 10.0.0.0/8", "missing authentication method"),
            ("host \"all all 10.0.0.0/8 trust", "quote is not closed"),
            ("host ,app all 10.0.0.0/8 trust", "empty database name"),
        ];
        for (line, want) in cases {
            let text = format!("# first line\n{line}\n");
            let e = Hba::parse(&text).unwrap_err();
            assert_eq!(e.line, 2, "{line}");
            assert!(e.to_string().contains(want), "{line}: {e}");
        }
    }

    proptest::proptest! {
        /// Any text parses or is refused without a panic, and a parsed file decides every
        /// connection without one.
        #[test]
        fn never_panics(text in "[ -~\\n\\t\"#\\\\]{0,200}", a: u32, db in "[a-z]{0,3}", user in "[a-z]{0,3}") {
            if let Ok(hba) = Hba::parse(&text) {
                let addr = IpAddr::from(a.to_be_bytes());
                let _ = hba.decide(&Connection { addr, ssl: a % 2 == 0, database: &db, user: &user, replication: a % 3 == 0 });
            }
        }
    }
}
