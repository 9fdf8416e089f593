//! A configured secret: a password, a token, a list of API keys.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A secret from the configuration. It is read and written as a plain string (environment,
/// TOML, the defaults), but `Debug` shows `<redacted>` (or `""` while unset), so a config
/// printed in a log or a panic never leaks it, and a new secret field is safe without a
/// hand-written `Debug`. [`Secret::expose`] is the one way to its text; compare a presented
/// credential with [`Secret::matches`].
///
/// Not the `secrecy` crate: its `SecretString` cannot be serialised (the configuration's
/// defaults are) or compared, and zeroising memory on drop is not what is needed here.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret's text, for the one place that uses it (a connect option, a header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Unset (empty): the feature it guards is off.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is this secret, in time that does not depend on where they differ. An
    /// unset secret matches nothing.
    pub fn matches(&self, given: &str) -> bool {
        !self.0.is_empty() && bool::from(self.0.as_bytes().ct_eq(given.as_bytes()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.0.is_empty() { "" } else { "<redacted>" };
        fmt::Debug::fmt(shown, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_a_set_secret_and_shows_an_unset_one_as_empty() {
        assert_eq!(format!("{:?}", Secret::from("hunter2")), "\"<redacted>\"");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }

    #[test]
    fn it_reads_and_writes_as_a_plain_string() {
        let s: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2\"");
    }

    #[test]
    fn only_the_same_text_matches_and_an_unset_secret_matches_nothing() {
        let s = Secret::from("hunter2");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter3"));
        assert!(!s.matches("hunter22"));
        assert!(!s.matches(""));
        assert!(!Secret::default().matches(""));
    }
}
