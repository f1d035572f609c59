//! Passwords and the user/password pairs that carry them.
//!
//! Invariant kept here: a password never reaches a log line, an error message or a `{:?}` dump by
//! accident. [`Secret`] prints as `***` through both `Debug` and `Display`, does not implement
//! `Serialize`, and hands out its text only through the explicit [`Secret::expose`].

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A password. Prints as `***`; call [`Secret::expose`] to use the real value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The password itself. Every call site is a place where the secret leaves this type.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the password is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_string(SecretVisitor)
    }
}

/// Accepts any scalar: `password: 1234` is a password, not a number. The error messages it
/// produces never contain the value.
struct SecretVisitor;

impl Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a password string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }
}

/// A user name with an optional password (`authentication.superuser`, `restapi.authentication`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The role or user name.
    pub username: String,
    /// Its password; `None` when authentication relies on something else (peer, trust, certificates).
    pub password: Option<Secret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        let c = Credentials { username: "u".into(), password: Some(s.clone()) };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn numbers_are_passwords_too() {
        use serde::de::IntoDeserializer;
        let d: de::value::U64Deserializer<de::value::Error> = 1234u64.into_deserializer();
        assert_eq!(Secret::deserialize(d).unwrap().expose(), "1234");
        let e = serde_json::from_str::<Secret>("[1]").unwrap_err().to_string();
        assert!(e.contains("a password string"), "{e}");
    }
}
