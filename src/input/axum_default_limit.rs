//! Hands the body limit over from axum to this crate.
//!
//! axum's body extractors apply their own `DefaultBodyLimit` (2 MB) unless a
//! request extension says otherwise, and that extension's type is private to
//! axum. Stacked under our limit, axum's would refuse an upload route that
//! raised ours, so below our layer we switch axum's off on every request
//! whose limit could exceed axum's (below it, ours always fires first and
//! axum's never does): we pass the request through axum's own
//! `DefaultBodyLimit::disable()` service, around an inner service that hands
//! the request straight back. That costs one extension insert, where copying
//! a captured extension map costs a map clone and two allocations.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::DefaultBodyLimit;
use http::Request;
use tower_layer::Layer;
use tower_service::Service;

/// axum's own default body limit (axum-core's `DEFAULT_LIMIT`): 2 MB.
pub(crate) const AXUM_DEFAULT_LIMIT: u64 = 2_097_152;

/// Hands the request it is called with back, at once.
#[derive(Clone, Copy)]
struct HandBack;

/// The answer of [`HandBack`], taken out without polling.
struct Done<T>(Option<T>);

// The answer is never pinned (as with `std::future::Ready`).
impl<T> Unpin for Done<T> {}

impl<T> Future for Done<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<T> {
        Poll::Ready(self.0.take().expect("Done polled after completion"))
    }
}

impl<B> Service<Request<B>> for HandBack {
    type Response = Request<B>;
    type Error = Infallible;
    type Future = Done<Result<Request<B>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Done(Some(Ok(request)))
    }
}

/// Marks a request so that axum's extractors leave its body limit to us.
pub(crate) fn disable<B>(request: Request<B>) -> Request<B> {
    // axum's service inserts its marker and calls the inner service at once
    // (its future is the inner one's), so the request is back here already.
    let mut marker = DefaultBodyLimit::disable().layer(HandBack);
    match marker.call(request).0 {
        Some(Ok(request)) => request,
        Some(Err(never)) => match never {},
        None => unreachable!("HandBack answers at once"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn marker_is_inserted() {
        let request = super::disable(http::Request::new(()));
        assert_eq!(request.extensions().len(), 1);
    }
}
