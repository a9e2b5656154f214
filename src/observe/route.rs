//! Route templates for services that are not an axum `Router`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{Method, Uri};

use super::layer::ObserveLayer;

type Classify = dyn Fn(&Method, &Uri) -> Option<Cow<'static, str>> + Send + Sync;

/// A closure from a request to its route template.
#[derive(Clone)]
pub(crate) struct RouteClassifier(pub(crate) Arc<Classify>);

impl fmt::Debug for RouteClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouteClassifier(..)")
    }
}

impl ObserveLayer {
    /// Names the route template of a request axum did not route (a service
    /// that is not an axum `Router`, or this layer put around one with
    /// `ServiceBuilder`): `http.route` in the log and the `route` label of
    /// metrics. `None`, or no classifier (the default), is `_unmatched`.
    /// Return templates, not paths: every distinct value is a metrics series.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use tower_harden::observe::ObserveLayer;
    ///
    /// let layer = ObserveLayer::new().route_classifier(|_method, uri| {
    ///     let path = uri.path();
    ///     if path == "/health" {
    ///         Some(Cow::Borrowed("/health"))
    ///     } else if path.starts_with("/users/") {
    ///         Some(Cow::Borrowed("/users/{id}"))
    ///     } else {
    ///         None
    ///     }
    /// });
    /// # drop(layer);
    /// ```
    pub fn route_classifier<F>(mut self, classify: F) -> Self
    where
        F: Fn(&Method, &Uri) -> Option<Cow<'static, str>> + Send + Sync + 'static,
    {
        self.config().route_classifier = Some(RouteClassifier(Arc::new(classify)));
        self
    }
}
