//! Hands the body limit over from axum to this crate.
//!
//! axum's body extractors apply their own `DefaultBodyLimit` (2 MB) unless a
//! request extension says otherwise, and that extension's type is private to
//! axum. Stacked under our limit, axum's would refuse an upload route that
//! raised ours, so below our layer we switch axum's off: we let axum's own
//! `DefaultBodyLimit::disable()` service mark one request once, keep the
//! extensions it wrote, and copy them onto every request whose limit could
//! exceed axum's (below it, ours always fires first and axum's never does).

use std::convert::Infallible;
use std::sync::OnceLock;

use axum::extract::DefaultBodyLimit;
use futures_util::FutureExt;
use http::{Extensions, Request};
use tower::{service_fn, ServiceExt};
use tower_layer::Layer;

/// axum's own default body limit (axum-core's `DEFAULT_LIMIT`): 2 MB.
pub(crate) const AXUM_DEFAULT_LIMIT: u64 = 2_097_152;

fn disabled_marker() -> &'static Extensions {
    static MARKER: OnceLock<Extensions> = OnceLock::new();
    MARKER.get_or_init(|| {
        let capture = service_fn(|request: Request<()>| async move {
            Ok::<_, Infallible>(request.into_parts().0.extensions)
        });
        DefaultBodyLimit::disable()
            .layer(capture)
            .oneshot(Request::new(()))
            .now_or_never()
            .and_then(Result::ok)
            .unwrap_or_default()
    })
}

/// Marks a request so that axum's extractors leave its body limit to us.
pub(crate) fn disable(extensions: &mut Extensions) {
    extensions.extend(disabled_marker().clone());
}

#[cfg(test)]
mod tests {
    #[test]
    fn marker_is_captured() {
        assert_eq!(super::disabled_marker().len(), 1);
    }
}
