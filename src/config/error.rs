//! [`ConfigError`]: one refused value, with its key path and, when it was
//! read from a file, its line and column; [`ConfigErrors`]: every problem of
//! one configuration, reported together.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Where a value was written: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, in characters.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text`.
    #[cfg(feature = "toml")]
    pub(crate) fn of(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A configuration value that is wrong, with the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: String,
    reason: String,
    position: Option<Position>,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
            position: None,
        }
    }

    pub(crate) fn at(mut self, position: Option<Position>) -> Self {
        self.position = position;
        self
    }

    /// The key, as a path: `rate_limit.policies[0].burst`. Empty for a
    /// file that is not TOML at all (a syntax error).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Why the value was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Where the value is in the file it was read from, if it was.
    pub fn position(&self) -> Option<Position> {
        self.position
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.position) {
            (false, Some(position)) => write!(f, "{} ({position}): ", self.key)?,
            (false, None) => write!(f, "{}: ", self.key)?,
            (true, Some(position)) => write!(f, "{position}: ")?,
            (true, None) => {}
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem of one configuration (never none), in the order of the
/// file for problems found while reading it, in the order of the sections
/// for problems found while building the stack.
///
/// ```text
/// invalid configuration (2 problems):
///   rate_limit.backend (line 2, column 11): unknown value `memcached`, expected one of `memory`, `redis`
///   rate_limit.policies[0].burst (line 7, column 9): must be greater than zero
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// `errors`, or `None` when there are none.
    pub(crate) fn new(errors: Vec<ConfigError>) -> Option<Self> {
        (!errors.is_empty()).then_some(Self { errors })
    }

    /// The first problem.
    pub fn first(&self) -> &ConfigError {
        &self.errors[0]
    }

    /// The first problem's key: see [`ConfigError::key`].
    pub fn key(&self) -> &str {
        self.first().key()
    }

    /// The first problem's reason: see [`ConfigError::reason`].
    pub fn reason(&self) -> &str {
        self.first().reason()
    }

    /// Every problem.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    /// How many problems there are (at least one).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.errors.len()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self {
            errors: vec![error],
        }
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [only] => write!(f, "invalid configuration: {only}"),
            errors => {
                write!(f, "invalid configuration ({} problems):", errors.len())?;
                errors.iter().try_for_each(|error| write!(f, "\n  {error}"))
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

/// Where each key of a configuration read from a file was written, by key
/// path, so that problems found later (building the stack) can say where.
///
/// Not part of the configuration's value: two configurations that differ
/// only in where they were read from are equal, and it is not serialized.
#[derive(Clone, Default)]
pub(crate) struct Origin(Option<Arc<BTreeMap<String, Position>>>);

impl Origin {
    #[cfg(feature = "toml")]
    pub(crate) fn new(positions: BTreeMap<String, Position>) -> Self {
        Self(Some(Arc::new(positions)))
    }

    pub(crate) fn position(&self, key: &str) -> Option<Position> {
        self.0.as_ref()?.get(key).copied()
    }
}

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.0.as_ref().map_or(0, |positions| positions.len());
        write!(f, "Origin({keys} keys)")
    }
}

/// Problems being collected, each with its key path.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    errors: Vec<ConfigError>,
}

impl Problems {
    pub(crate) fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError::new(key, reason));
    }

    #[cfg(feature = "redis")]
    pub(crate) fn len(&self) -> usize {
        self.errors.len()
    }

    /// The problems, placed where `origin` knows their keys.
    pub(crate) fn into_result(self, origin: &Origin) -> Result<(), ConfigErrors> {
        let errors = self
            .errors
            .into_iter()
            .map(|error| {
                let position = error.position.or_else(|| origin.position(&error.key));
                error.at(position)
            })
            .collect();
        ConfigErrors::new(errors).map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "toml")]
    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\n[b]\nké = \"x\"\n";
        assert_eq!(Position::of(text, 0), Position { line: 1, column: 1 });
        let value = text.find('"').unwrap();
        assert_eq!(Position::of(text, value), Position { line: 3, column: 6 });
        assert_eq!(Position::of(text, 10_000).line, 4);
    }

    #[test]
    fn every_problem_is_listed() {
        let errors = ConfigErrors::new(vec![
            ConfigError::new("a.b", "must be greater than zero")
                .at(Some(Position { line: 7, column: 9 })),
            ConfigError::new("c", "required"),
        ])
        .unwrap();
        assert_eq!(
            errors.to_string(),
            "invalid configuration (2 problems):\n  a.b (line 7, column 9): must be greater than zero\n  c: required"
        );
        assert_eq!(errors.key(), "a.b");
        assert_eq!(errors.len(), 2);
    }
}
