use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{BodyGuard, Counted, LimitedBody};
use super::InputRefusal;
use crate::context::{declared_length, RequestContext};
use crate::error::{Problem, ProblemOr};

/// The default body limit: 1 MiB.
///
/// Large enough for any JSON API payload and form post we know of, small
/// enough that a few thousand concurrent maximal bodies fit in memory. It is
/// the default of nginx's `client_max_body_size` (1 MiB); uploads raise it per
/// route (see [`RouteBodyLimitLayer`](super::RouteBodyLimitLayer)).
pub const DEFAULT_BODY_LIMIT: u64 = 1024 * 1024;

/// Limits the size of request bodies, declared and streamed.
///
/// - A declared `Content-Length` over the limit is answered 413 before the
///   inner service is called and before any byte of the body is read; with
///   `Expect: 100-continue` no `100 Continue` is sent.
/// - A chunked or unknown-length body is counted as it streams; once it
///   crosses the limit the read fails with a typed error, and whatever the
///   inner service made of that failure (axum's `Bytes`, `String` and `Json`
///   extractors make a 400 or a plain 413 of it) is replaced by a 413 problem.
/// - With the `axum` feature, axum's own `DefaultBodyLimit` (2 MB) is switched
///   off below this layer, so this limit is the one in force.
///
/// Default: [`DEFAULT_BODY_LIMIT`] (1 MiB).
///
/// ```
/// use axum::{routing::post, Router};
/// use tower_harden::input::BodyLimitLayer;
///
/// let app: Router = Router::new()
///     .route("/echo", post(|body: String| async move { body }))
///     .layer(BodyLimitLayer::new(64 * 1024));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct BodyLimitLayer {
    limit: u64,
    ceiling: u64,
    counted: Counted,
}

impl Default for BodyLimitLayer {
    fn default() -> Self {
        Self::new(DEFAULT_BODY_LIMIT)
    }
}

impl BodyLimitLayer {
    /// A limit of `limit` bytes on every request body.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            ceiling: limit,
            counted: Counted::Wire,
        }
    }

    /// Lets a route raise the limit up to `ceiling` bytes with
    /// [`RouteBodyLimitLayer`](super::RouteBodyLimitLayer). A declared
    /// `Content-Length` over the ceiling is still refused here, before the
    /// inner service is called; one between the limit and the ceiling is
    /// refused when the handler first reads the body, before any byte of it
    /// is read (and before `100 Continue`), unless the route raised its
    /// limit. Default: the limit itself (no route may raise it, and every
    /// over-limit declared length is refused before the inner service).
    pub fn max_route_limit(mut self, ceiling: u64) -> Self {
        self.ceiling = ceiling.max(self.limit);
        self
    }

    /// Counts decoded bytes: place this layer inside a decompression layer
    /// (as [`DecompressLayer`](super::DecompressLayer) does) to bound what a
    /// compressed body inflates to.
    pub(crate) fn decoded(mut self) -> Self {
        self.counted = Counted::Decoded;
        // Routes may set any decoded limit: no header tells the decoded size
        // before routing, so there is nothing to refuse early against.
        self.ceiling = u64::MAX;
        self
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            layer: *self,
            next_body_ended: false,
        }
    }
}

/// The service of [`BodyLimitLayer`].
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    inner: S,
    layer: BodyLimitLayer,
    /// Set by [`Decompress`](super::Decompress) just before it hands a
    /// request with no content coding on: the body had ended. The body this
    /// layer then sees is tower-http's decompression wrapper, which does not
    /// pass `is_end_stream` through.
    pub(crate) next_body_ended: bool,
}

impl<S> BodyLimit<S> {
    inner_service_accessors!();
}

/// The request's wire body limit, for a route that raises or lowers it.
#[derive(Clone)]
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) struct WireLimit(pub(crate) Arc<BodyGuard>);

/// The request's decoded body limit, for a route that raises or lowers it.
#[derive(Clone)]
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) struct DecodedLimit(pub(crate) Arc<BodyGuard>);

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BodyLimit<S>
where
    S: Service<Request<LimitedBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
{
    type Response = Response<ProblemOr<ResBody>>;
    type Error = S::Error;
    type Future = BodyLimitFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let layer = self.layer;
        let ended_hint = std::mem::take(&mut self.next_body_ended);
        let declared = match layer.counted {
            Counted::Wire => declared_length(request.headers()),
            // After decompression the header describes the compressed bytes.
            Counted::Decoded => None,
        };
        if let Some(declared) = declared {
            if declared > layer.ceiling {
                let refusal = InputRefusal::DeclaredBodyTooLarge {
                    limit: layer.limit,
                    declared,
                };
                return BodyLimitFuture::refused(Problem::refuse(refusal, request.extensions()));
            }
        }
        // The handles a route uses to raise this request's limit: only
        // worth their allocation when a route may raise it (a route that
        // lowers its limit stacks its own, lower one).
        let route_may_raise = match layer.counted {
            Counted::Wire => layer.ceiling > layer.limit,
            Counted::Decoded => request.extensions().get::<WireLimit>().is_some(),
        };
        // A body that has already ended (no body, `Content-Length: 0`) has
        // nothing to count and cannot fail, and a declared length within the
        // limit cannot be refused either: no refusal can come after the call,
        // so there is no state to share with the body (and axum's own limit
        // has nothing to refuse).
        if !route_may_raise
            && (ended_hint || request.body().is_end_stream())
            && !matches!(declared, Some(declared) if declared > layer.limit)
        {
            let request = request.map(LimitedBody::ended);
            return BodyLimitFuture::inner(self.inner.call(request), None);
        }
        #[cfg(feature = "axum")]
        let request = if layer.ceiling > super::axum_default_limit::AXUM_DEFAULT_LIMIT {
            super::axum_default_limit::disable(request)
        } else {
            request
        };
        let (mut parts, body) = request.into_parts();
        let context = RequestContext::from_extensions(&parts.extensions);
        let guard = BodyGuard::new(layer.limit, layer.ceiling, layer.counted, declared, context);
        if route_may_raise {
            match layer.counted {
                Counted::Wire => parts.extensions.insert(WireLimit(guard.clone())).is_some(),
                Counted::Decoded => parts
                    .extensions
                    .insert(DecodedLimit(guard.clone()))
                    .is_some(),
            };
        }
        let request = Request::from_parts(parts, LimitedBody::new(body, guard.clone()));
        BodyLimitFuture::inner(self.inner.call(request), Some(guard))
    }
}

pin_project! {
    /// The response future of [`BodyLimit`].
    pub struct BodyLimitFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Refused { response: Option<Response<ProblemOr<B>>> },
        // No guard: nothing can be refused after the call.
        Inner { #[pin] future: F, guard: Option<Arc<BodyGuard>> },
    }
}

impl<F, B> BodyLimitFuture<F, B> {
    pub(crate) fn refused(response: Response<ProblemOr<B>>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    pub(crate) fn inner(future: F, guard: Option<Arc<BodyGuard>>) -> Self {
        Self {
            state: State::Inner { future, guard },
        }
    }
}

impl<F, B, E> Future for BodyLimitFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ProblemOr<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("BodyLimitFuture polled after completion"))),
            StateProj::Inner { future, guard } => {
                let response = ready!(future.poll(cx))?;
                let refused = guard
                    .as_ref()
                    .and_then(|guard| Some((guard.slot.get()?, guard)));
                Poll::Ready(Ok(match refused {
                    Some((refused, guard)) => Problem::refuse_with(refused, guard.context.clone()),
                    None => response.map(ProblemOr::inner),
                }))
            }
        }
    }
}
