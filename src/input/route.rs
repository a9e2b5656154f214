use std::task::{Context, Poll};

use axum::body::Body;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::body::{BodyGuard, Counted, LimitedBody};
use super::body_limit::{BodyLimitFuture, DecodedLimit, WireLimit};
use super::InputRefusal;
use crate::context::{declared_length, RequestContext};
use crate::error::Problem;

/// Sets the body limit of one axum route, raising or lowering the limit of
/// the [`BodyLimitLayer`](super::BodyLimitLayer) around the router.
///
/// The router-wide layer refuses a declared `Content-Length` over its
/// ceiling before routing; raise the ceiling with
/// [`BodyLimitLayer::max_route_limit`](super::BodyLimitLayer::max_route_limit)
/// to let routes go higher. This layer then sets the limit of the request's
/// body (wire and decoded) to its own value, clamped to the ceiling, and
/// checks the declared length against it. There is never a second limit
/// stacked on the first: the one set here is the one in force. Without a
/// router-wide layer, or under one that does not let routes raise its limit,
/// it adds its own limit, which can only lower the one in force.
///
/// ```
/// use axum::{routing::post, Router};
/// use tower_harden::input::{BodyLimitLayer, RouteBodyLimitLayer};
///
/// let app: Router = Router::new()
///     .route("/echo", post(|body: String| async move { body }))
///     .route(
///         "/upload",
///         post(|body: axum::body::Bytes| async move { body.len().to_string() })
///             .layer(RouteBodyLimitLayer::new(64 * 1024 * 1024)),
///     )
///     .layer(BodyLimitLayer::new(1024 * 1024).max_route_limit(64 * 1024 * 1024));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RouteBodyLimitLayer {
    limit: u64,
}

impl RouteBodyLimitLayer {
    /// A limit of `limit` bytes for the routes this layer wraps.
    pub fn new(limit: u64) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for RouteBodyLimitLayer {
    type Service = RouteBodyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteBodyLimit {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`RouteBodyLimitLayer`].
#[derive(Debug, Clone)]
pub struct RouteBodyLimit<S> {
    inner: S,
    limit: u64,
}

impl<S> RouteBodyLimit<S> {
    inner_service_accessors!();
}

impl<S, ResBody> Service<Request<Body>> for RouteBodyLimit<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
{
    type Response = Response<crate::error::ProblemOr<ResBody>>;
    type Error = S::Error;
    type Future = BodyLimitFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (guard, request) = match request.extensions().get::<WireLimit>() {
            Some(WireLimit(guard)) => {
                let guard = guard.clone();
                guard.set_limit(self.limit);
                if let Some(DecodedLimit(decoded)) = request.extensions().get::<DecodedLimit>() {
                    decoded.set_limit(self.limit);
                }
                (guard, request)
            }
            None => {
                let guard = BodyGuard::new(
                    self.limit,
                    self.limit,
                    Counted::Wire,
                    declared_length(request.headers()),
                    RequestContext::from_extensions(request.extensions()),
                );
                let mut request =
                    request.map(|body| Body::new(LimitedBody::new(body, guard.clone())));
                if self.limit > super::axum_default_limit::AXUM_DEFAULT_LIMIT {
                    request = super::axum_default_limit::disable(request);
                }
                (guard, request)
            }
        };
        let limit = guard.limit();
        if let Some(declared) = declared_length(request.headers()) {
            if declared > limit {
                let refusal = InputRefusal::DeclaredBodyTooLarge { limit, declared };
                return BodyLimitFuture::refused(Problem::refuse(refusal, request.extensions()));
            }
        }
        BodyLimitFuture::inner(self.inner.call(request), Some(guard))
    }
}
