//! The service and its response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::headers::RateLimitHeaders;
use super::shared::{CheckList, Now, Shared, Verdict};
use super::store::memory::MemoryStore;
use super::store::RateLimitStore;
use crate::error::ProblemOr;

/// The service of [`RateLimitLayer`](super::RateLimitLayer).
///
/// The inner service must be `Clone` for stores that answer asynchronously
/// (the checked request is handed to the instance that was polled ready,
/// and a clone takes its place); the in-process store answers in `call`,
/// and the inner service is then called directly.
pub struct RateLimit<S, St = MemoryStore> {
    inner: S,
    shared: Arc<Shared<St>>,
    /// The admitted request's headers while the inner service is called:
    /// see `call`.
    parked_headers: Option<RateLimitHeaders>,
}

impl<S, St> RateLimit<S, St> {
    pub(super) fn new(inner: S, shared: Arc<Shared<St>>) -> Self {
        Self {
            inner,
            shared,
            parked_headers: None,
        }
    }

    inner_service_accessors!();

    /// The store.
    pub fn store(&self) -> &Arc<St> {
        &self.shared.store
    }
}

impl<S: Clone, St> Clone for RateLimit<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            parked_headers: None,
        }
    }
}

impl<S: fmt::Debug, St> fmt::Debug for RateLimit<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("policies", &self.shared.policies)
            .field("shadow", &self.shared.shadow)
            .finish_non_exhaustive()
    }
}

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    St: RateLimitStore,
{
    type Response = Response<ProblemOr<ResBody>>;
    type Error = S::Error;
    type Future = RateLimitFuture<S, St, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let headers = match self.shared.decide_now(&request) {
            Now::Admit(headers, client_key) => {
                if let Some(key) = client_key {
                    request.extensions_mut().insert(key);
                }
                headers
            }
            Now::Refuse(response) => return RateLimitFuture::refused(response),
            Now::Later(checks, default_quotas) => {
                return self.check_later(request, checks, default_quotas)
            }
        };
        // The inner future is most of this one's size. The compiler builds
        // it in place in the returned value, instead of copying it there
        // twice (some hundreds of bytes, per request), only if nothing that
        // needs dropping is alive across the inner `call`, where a panic
        // would have to drop it. So the headers wait in the service, which
        // drops them if the inner `call` panics (nothing leaks).
        self.parked_headers = headers;
        let future = self.inner.call(request);
        RateLimitFuture {
            state: State::Inner { future },
            headers: self.parked_headers.take(),
        }
    }
}

impl<S, St> RateLimit<S, St> {
    /// The future of a request whose store answers asynchronously.
    fn check_later<ReqBody, ResBody>(
        &mut self,
        request: Request<ReqBody>,
        checks: CheckList,
        default_quotas: bool,
    ) -> RateLimitFuture<S, St, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>> + Clone,
        St: RateLimitStore,
    {
        let check = self.shared.store.check(&checks);
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        RateLimitFuture {
            state: State::Checking {
                check,
                pending: Some(Box::new(Pending {
                    request,
                    inner,
                    shared: self.shared.clone(),
                    checks,
                    default_quotas,
                })),
            },
            headers: None,
        }
    }
}

/// What a request waiting for an asynchronous store holds on to.
struct Pending<S, St, ReqBody> {
    request: Request<ReqBody>,
    inner: S,
    shared: Arc<Shared<St>>,
    checks: CheckList,
    default_quotas: bool,
}

pin_project! {
    /// The response future of [`RateLimit`].
    pub struct RateLimitFuture<S, St, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
        St: RateLimitStore,
    {
        #[pin]
        state: State<S, St, ReqBody, ResBody>,
        // Beside the state rather than in it: see `RateLimit::call`.
        headers: Option<RateLimitHeaders>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, St, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
        St: RateLimitStore,
    {
        Checking {
            #[pin]
            check: St::Future,
            // Boxed: only asynchronous stores need it, and it is large.
            pending: Option<Box<Pending<S, St, ReqBody>>>,
        },
        Inner {
            #[pin]
            future: S::Future,
        },
        Refused {
            response: Option<Response<ProblemOr<ResBody>>>,
        },
    }
}

impl<S, St, ReqBody, ResBody> RateLimitFuture<S, St, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
    St: RateLimitStore,
{
    fn refused(response: Response<ProblemOr<ResBody>>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
            headers: None,
        }
    }
}

impl<S, St, ReqBody, ResBody> Future for RateLimitFuture<S, St, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: RateLimitStore,
{
    type Output = Result<Response<ProblemOr<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check, pending } => {
                    let result = ready!(check.poll(cx));
                    let pending = *pending
                        .take()
                        .expect("RateLimitFuture polled after completion");
                    let Pending {
                        mut request,
                        mut inner,
                        shared,
                        checks,
                        default_quotas,
                    } = pending;
                    let next = match shared.conclude(
                        result,
                        &checks,
                        default_quotas,
                        request.extensions(),
                    ) {
                        Verdict::Admit(headers) => {
                            *this.headers = headers;
                            if let Some(key) = shared.client_key(&checks) {
                                request.extensions_mut().insert(key);
                            }
                            State::Inner {
                                future: inner.call(request),
                            }
                        }
                        Verdict::Refuse(response) => State::Refused {
                            response: Some(response),
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    let mut response = response.map(ProblemOr::inner);
                    if let Some(headers) = this.headers.take() {
                        headers.apply(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Refused { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("RateLimitFuture polled after completion")));
                }
            }
        }
    }
}
