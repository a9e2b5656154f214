//! Where the `type` URIs of problems point: this crate's documentation by
//! default, the user's own page, or `about:blank`.

use std::fmt;
use std::sync::OnceLock;

/// Where the `type` URIs of this crate's problems point by default: the
/// documentation of the [`error`](crate::error) module, one anchor per
/// problem type. [`set_type_base`](super::set_type_base) points them
/// elsewhere.
pub const TYPE_BASE: &str = "https://docs.rs/tower-harden/latest/tower_harden/error/index.html#";

/// The `type` value RFC 9457 (section 4.2.1) defines for a problem that has
/// no meaning beyond its HTTP status.
///
/// ```
/// use http::StatusCode;
/// use tower_harden::error::{set_type_base, Problem, ProblemType, ABOUT_BLANK};
///
/// set_type_base(ABOUT_BLANK).unwrap();
/// let problem = Problem::of(ProblemType::QUOTA_EXCEEDED, StatusCode::TOO_MANY_REQUESTS);
/// let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
/// assert_eq!(json["type"], "about:blank");
/// assert_eq!(json["title"], "Too Many Requests");
/// assert_eq!(problem.slug(), "quota-exceeded"); // still there, for logs
/// ```
pub const ABOUT_BLANK: &str = "about:blank";

static CONFIGURED: OnceLock<Box<str>> = OnceLock::new();

/// The base of the `type` URI of every problem named by a slug (this
/// crate's own and those made with [`Problem::new`](super::Problem::new)):
/// the one given to [`set_type_base`], or [`TYPE_BASE`] (this crate's
/// documentation).
///
/// ```
/// assert!(tower_harden::error::type_base().starts_with("https://"));
/// ```
pub fn type_base() -> &'static str {
    CONFIGURED.get().map_or(TYPE_BASE, |base| base)
}

/// Points the `type` URI of every problem named by a slug at `base` instead
/// of this crate's documentation, for the whole process: `type` becomes
/// `base` followed by the slug (so end `base` with `#` or `/`), and the user
/// documents each slug there. [`ABOUT_BLANK`] gives every such problem the
/// type `about:blank` and, as RFC 9457 asks of it, the HTTP status phrase as
/// its `title`.
///
/// The base is set once, before the first request (the `[problems]`
/// `type_base` key of the configuration sets it when the preset is built);
/// setting the same base again does nothing, and a different one is an
/// error. Problems made with
/// [`Problem::with_type_uri`](super::Problem::with_type_uri) keep their own
/// URI.
///
/// ```
/// use tower_harden::error::{set_type_base, type_base};
///
/// set_type_base("https://api.example.com/problems/").unwrap();
/// assert_eq!(type_base(), "https://api.example.com/problems/");
/// assert!(set_type_base("about:blank").is_err());
/// ```
pub fn set_type_base(base: impl Into<String>) -> Result<(), TypeBaseError> {
    let base = base.into();
    check_type_base(&base)?;
    let set = CONFIGURED.get_or_init(|| base.clone().into_boxed_str());
    if **set == *base {
        Ok(())
    } else {
        Err(TypeBaseError::AlreadySet {
            current: set.to_string(),
            requested: base,
        })
    }
}

/// What [`set_type_base`] would say of `base`, without setting it.
pub(crate) fn check_type_base(base: &str) -> Result<(), TypeBaseError> {
    if !is_valid_base(base) {
        return Err(TypeBaseError::Invalid(base.to_owned()));
    }
    match CONFIGURED.get() {
        Some(current) if **current != *base => Err(TypeBaseError::AlreadySet {
            current: current.to_string(),
            requested: base.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// `about:blank`, or an absolute URI: a scheme, `:`, then visible ASCII
/// without the characters a URI never holds as they are.
pub(crate) fn is_valid_base(base: &str) -> bool {
    let Some((scheme, rest)) = base.split_once(':') else {
        return false;
    };
    let mut scheme_chars = scheme.chars();
    scheme_chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && rest.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
                )
        })
}

/// Why [`set_type_base`] refused a base.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypeBaseError {
    /// Not `about:blank` nor an absolute URI.
    Invalid(String),
    /// Another base was set before.
    AlreadySet {
        /// The base in force.
        current: String,
        /// The base refused.
        requested: String,
    },
}

impl fmt::Display for TypeBaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(base) => write!(
                f,
                "problem type base {base:?} is neither `about:blank` nor an absolute URI"
            ),
            Self::AlreadySet { current, requested } => write!(
                f,
                "problem type base {requested:?} requested, but {current:?} is already in force for this process"
            ),
        }
    }
}

impl std::error::Error for TypeBaseError {}

#[cfg(test)]
mod tests {
    use super::is_valid_base;

    #[test]
    fn bases_are_absolute_uris_or_about_blank() {
        for good in [
            "about:blank",
            "https://api.example.com/problems/",
            "https://example.com/errors#",
            "urn:example:problem:",
        ] {
            assert!(is_valid_base(good), "{good}");
        }
        for bad in [
            "",
            "/problems/",
            "problems",
            "https://example.com/a b",
            "1http://x",
            "https:",
            "https://x/\"",
        ] {
            assert!(!is_valid_base(bad), "{bad}");
        }
    }
}
