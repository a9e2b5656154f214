use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use super::{CallDeadlineError, DeadlineExceeded};
use crate::context::Budget;
use crate::context::{current_request, in_scope, sync_in_scope, Scope};

/// A deadline for any [`Service`], HTTP or not: the inner future gets the
/// smaller of this layer's timeout and the enclosing scope's remaining budget
/// (see [`current_budget()`](crate::context::current_budget)), and is dropped when it runs out; the
/// error then says which budget it was and how long the call ran.
///
/// The budget is visible to the inner service through
/// [`current_budget()`](crate::context::current_budget), so nested calls (and the
/// [`OutboundLayer`](crate::outbound::OutboundLayer)) inherit it.
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_harden::deadline::{CallDeadlineError, CallDeadlineLayer};
/// use tower_harden::context::BudgetOrigin;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let slow_query = service_fn(|_: &str| async {
///     tokio::time::sleep(Duration::from_secs(5)).await;
///     Ok::<_, std::io::Error>(42)
/// });
/// let bounded = CallDeadlineLayer::new(Duration::from_millis(300)).layer(slow_query);
/// match bounded.oneshot("SELECT 42").await {
///     Err(CallDeadlineError::Exceeded(exceeded)) => {
///         assert_eq!(exceeded.budget, Duration::from_millis(300));
///         assert_eq!(exceeded.origin, BudgetOrigin::Configured);
///     }
///     other => panic!("{other:?}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CallDeadlineLayer {
    timeout: Duration,
}

impl CallDeadlineLayer {
    /// A deadline of `timeout` on each call.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for CallDeadlineLayer {
    type Service = CallDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallDeadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service of [`CallDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct CallDeadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> CallDeadline<S> {
    /// Wraps `inner` with a deadline of `timeout` per call.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    inner_service_accessors!();
}

impl<S, Req> Service<Req> for CallDeadline<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = CallDeadlineError<S::Error>;
    type Future = CallDeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallDeadlineError::Inner)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let budget = Budget::effective(self.timeout, None, None);
        let scope = Scope {
            budget,
            request: current_request().unwrap_or_default(),
            trace: crate::context::current_trace(),
        };
        let future = sync_in_scope(scope.clone(), || self.inner.call(request));
        CallDeadlineFuture {
            state: State::Running {
                future: in_scope(scope, future),
            },
            sleep: tokio::time::sleep_until(budget.deadline()),
            budget,
        }
    }
}

pin_project! {
    /// The response future of [`CallDeadline`].
    pub struct CallDeadlineFuture<F> {
        #[pin]
        state: State<F>,
        #[pin]
        sleep: Sleep,
        budget: Budget,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    enum State<F> {
        Running { #[pin] future: TaskLocalFuture<Scope, F> },
        Done,
    }
}

impl<F, T, E> Future for CallDeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, CallDeadlineError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let StateProj::Running { future } = this.state.as_mut().project() else {
            panic!("CallDeadlineFuture polled after completion");
        };
        let output = match future.poll(cx) {
            Poll::Ready(result) => result.map_err(CallDeadlineError::Inner),
            Poll::Pending => {
                if this.sleep.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                Err(CallDeadlineError::Exceeded(DeadlineExceeded::new(
                    this.budget,
                    false,
                )))
            }
        };
        // Drops the inner future at once, whatever it holds.
        this.state.project_replace(State::Done);
        Poll::Ready(output)
    }
}
