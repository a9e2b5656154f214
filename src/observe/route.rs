//! Route templates for services that are not an axum `Router`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{Method, Uri};

type Classify = dyn Fn(&Method, &Uri) -> Option<Cow<'static, str>> + Send + Sync;

/// A closure from a request to its route template.
#[derive(Clone)]
pub(crate) struct RouteClassifier(pub(crate) Arc<Classify>);

impl fmt::Debug for RouteClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouteClassifier(..)")
    }
}
