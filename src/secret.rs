//! A string that must never reach logs, errors, metrics or `Debug` output.
//!
//! Access tokens, app secrets, verify tokens and registry passwords are held as
//! [`Secret`]. Its `Debug` and `Display` print a fixed placeholder, and the
//! value is only reachable through [`Secret::expose`], so every place that
//! uses the real value is easy to find.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};

/// A secret value; formatting it prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the real value, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_string(SecretVisitor)
    }
}

/// Accepts a string. Unlike serde's own messages, a value of another type
/// is described by its type only, because it may be the secret typed
/// without quotes.
struct SecretVisitor;

impl SecretVisitor {
    fn reject<E: de::Error>(kind: Unexpected<'_>) -> Result<Secret, E> {
        Err(E::invalid_type(kind, &"a string"))
    }
}

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Secret, E> {
        Ok(Secret::new(value))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Secret, E> {
        Ok(Secret(value))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        Self::reject(Unexpected::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        Self::reject(Unexpected::Other("an integer"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        Self::reject(Unexpected::Other("an integer"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Self::reject(Unexpected::Other("a float"))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Self::reject(Unexpected::Other("bytes"))
    }
}

/// Replaces the password in the userinfo of `url` (`scheme://user:password@host/...`)
/// with `[redacted]`, for URLs shown in errors, logs and command output.
/// Works on the text, so a URL that does not parse is redacted too.
pub fn redact_url_password(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let authority_start = scheme_end + "://".len();
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |offset| authority_start + offset);
    let authority = &url[authority_start..authority_end];
    // The host cannot contain `@`, so the last one ends the userinfo.
    let Some(userinfo_end) = authority.rfind('@') else {
        return Cow::Borrowed(url);
    };
    let Some(colon) = authority[..userinfo_end].find(':') else {
        return Cow::Borrowed(url);
    };
    let password_start = authority_start + colon + 1;
    let password_end = authority_start + userinfo_end;
    Cow::Owned(format!(
        "{}[redacted]{}",
        &url[..password_start],
        &url[password_end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_password_is_redacted() {
        let cases = [
            (
                "https://user:hunter2@registry.example:8443/apis/ccompat/v7",
                "https://user:[redacted]@registry.example:8443/apis/ccompat/v7",
            ),
            (
                "https://user:p@ss:w0rd@registry.example",
                "https://user:[redacted]@registry.example",
            ),
            (
                "http://user:hunter2@127.0.0.1:8081?x=1",
                "http://user:[redacted]@127.0.0.1:8081?x=1",
            ),
            (
                "http://user@127.0.0.1:8081/apis/ccompat/v7",
                "http://user@127.0.0.1:8081/apis/ccompat/v7",
            ),
            (
                "http://127.0.0.1:8081/apis/ccompat/v7?user=a@b:c",
                "http://127.0.0.1:8081/apis/ccompat/v7?user=a@b:c",
            ),
            ("not a url", "not a url"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url_password(url), expected, "{url}");
        }
    }

    #[test]
    fn wrong_type_error_hides_value() {
        for text in ["value = 987654321", "value = 98765.4321", "value = true"] {
            let table: toml::Table = text.parse().unwrap();

            let error = toml::Value::Table(table)
                .get("value")
                .cloned()
                .unwrap()
                .try_into::<Secret>()
                .expect_err("a secret must be a string");

            let message = error.to_string();
            assert!(message.contains("expected a string"), "{message}");
            assert!(!message.contains("98765"), "{message}");
            assert!(!message.contains("true"), "{message}");
        }
    }

    #[test]
    fn string_deserializes() {
        let secret: Secret = toml::Value::String("EAAB-token".to_owned())
            .try_into()
            .unwrap();

        assert_eq!(secret.expose(), "EAAB-token");
    }

    #[test]
    fn formatting_hides_value() {
        let secret = Secret::new("EAAB-very-secret");

        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(secret.expose(), "EAAB-very-secret");
    }
}
