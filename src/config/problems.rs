//! `[problems]`: what error responses look like to clients.

use serde::{Deserialize, Serialize};

use super::Problems;

/// `[problems]`: the `type` URIs of problem bodies, and which of axum's
/// plain-text responses become problems.
///
/// ```
/// use tower_harden::HardenConfig;
///
/// let config = HardenConfig::from_toml(r#"
///     [problems]
///     type_base = "about:blank"
///     map_rejections = true
/// "#).unwrap();
/// assert_eq!(config.problems.type_base.as_deref(), Some("about:blank"));
/// assert!(config.problems.map_rejections);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProblemsConfig {
    /// The base of every problem's `type` URI, for the whole process: the
    /// service's own documentation page (ending in `#` or `/`, the slug
    /// follows), or `"about:blank"` for none (see
    /// [`set_type_base`](crate::error::set_type_base)). Default: unset,
    /// this crate's documentation
    /// ([`TYPE_BASE`](crate::error::TYPE_BASE)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_base: Option<String>,
    /// Answer axum's plain-text extractor rejections (bad JSON, a missing
    /// content type, a bad path or query parameter) as problems, their text
    /// kept as `detail`: see
    /// [`ObserveLayer::problems_for_rejections`](crate::observe::ObserveLayer::problems_for_rejections).
    /// Default false.
    pub map_rejections: bool,
}

/// Checks `[problems]`; the base is set when the whole configuration is
/// valid ([`apply`]).
pub(super) fn check(config: &ProblemsConfig, problems: &mut Problems) {
    if let Some(base) = &config.type_base {
        if let Err(error) = crate::error::check_type_base(base) {
            problems.push("problems.type_base", error.to_string());
        }
    }
}

/// Sets the process's problem type base, once the configuration is valid.
pub(super) fn apply(config: &ProblemsConfig) {
    if let Some(base) = &config.type_base {
        // Checked above; only a concurrent `set_type_base` could refuse it,
        // and then the base in force stays.
        if let Err(error) = crate::error::set_type_base(base.as_str()) {
            tracing::warn!(%error, "problem type base not set");
        }
    }
}
