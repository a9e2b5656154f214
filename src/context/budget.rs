//! The time budget of a request, and the scope that makes it (and the
//! request's id and trace) visible to the code the request runs.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

use super::{instant_after, RequestContext, TraceContext};

/// Where a request's time budget came from: which budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BudgetOrigin {
    /// The layer's own configured timeout.
    Configured,
    /// A shorter deadline sent by a trusted caller in a header.
    Inbound,
    /// An enclosing scope (an outer deadline layer, or the request being
    /// served) had less time left than this layer's own setting.
    Inherited,
}

impl BudgetOrigin {
    /// A short fixed name, for logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Configured => "configured",
            Self::Inbound => "inbound",
            Self::Inherited => "inherited",
        }
    }
}

impl fmt::Display for BudgetOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The time budget of one request: when it started, when it must be done, and
/// where that limit came from.
///
/// Handlers find it as a request extension (`Extension<Budget>` in axum) and,
/// anywhere inside the request's task, through [`current_budget()`].
/// Time is [`tokio::time::Instant`], so tests with a paused clock see it move
/// only when the clock does.
///
/// ```
/// use std::time::Duration;
/// use tower_harden::context::{Budget, BudgetOrigin};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let budget = Budget::new(Duration::from_secs(2), BudgetOrigin::Configured);
/// assert!(budget.remaining() <= Duration::from_secs(2));
/// assert!(!budget.is_exhausted());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    started: Instant,
    deadline: Instant,
    origin: BudgetOrigin,
}

impl Budget {
    /// A budget of `total` starting now.
    pub fn new(total: Duration, origin: BudgetOrigin) -> Self {
        Self::starting_at(Instant::now(), total, origin)
    }

    /// A budget of `total` starting at `started`.
    pub fn starting_at(started: Instant, total: Duration, origin: BudgetOrigin) -> Self {
        Self {
            started,
            deadline: instant_after(started, total),
            origin,
        }
    }

    /// When the budget started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When the budget runs out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The whole budget, from start to deadline.
    pub fn total(&self) -> Duration {
        self.deadline.saturating_duration_since(self.started)
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Time since the budget started.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.started)
    }

    /// Whether the deadline has passed.
    pub fn is_exhausted(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Where the budget came from.
    pub fn origin(&self) -> BudgetOrigin {
        self.origin
    }

    /// The budget a layer runs with: its own `configured` timeout, shortened
    /// by a trusted `inbound` deadline and by the enclosing scope, whichever
    /// ends first.
    pub(crate) fn effective(
        configured: Duration,
        inbound: Option<Duration>,
        arrived: Option<Instant>,
    ) -> Self {
        // The budget counts from the request's arrival (what an outer layer
        // spent, a rate-limit store's round trip say, is spent from it),
        // never from a moment in the future.
        let now = arrived.map_or_else(Instant::now, |arrived| arrived.min(Instant::now()));
        let mut budget = Self::starting_at(now, configured, BudgetOrigin::Configured);
        if let Some(inbound) = inbound.filter(|inbound| *inbound < configured) {
            budget = Self::starting_at(now, inbound, BudgetOrigin::Inbound);
        }
        if let Some(outer) = current_budget() {
            if outer.deadline < budget.deadline {
                budget = Self {
                    started: now,
                    deadline: outer.deadline.max(now),
                    origin: BudgetOrigin::Inherited,
                };
            }
        }
        budget
    }
}

/// What the deadline layers make visible to the code they run: the budget and
/// the inbound request's id and trace (for the outbound layer to forward).
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub(crate) budget: Budget,
    pub(crate) request: RequestContext,
    /// The request's whole trace context (this server's span, the sampled
    /// flag, `tracestate`), for the `traceparent` of outbound calls.
    /// Kept inline: cloning it is cheaper than an allocation per request.
    pub(crate) trace: Option<TraceContext>,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// The budget of the request (or deadline-bounded call) this code runs in,
/// if any.
///
/// Set by [`RequestDeadlineLayer`](crate::deadline::RequestDeadlineLayer),
/// [`CallDeadlineLayer`](crate::deadline::CallDeadlineLayer) and [`scope`] for the future they
/// run. Code spawned onto another task does not inherit it: pass the
/// [`Budget`] along, or wrap the spawned future in [`scope`].
pub fn current_budget() -> Option<Budget> {
    SCOPE.try_with(|scope| scope.budget).ok()
}

/// The id and trace of the inbound request this code runs for, if a
/// deadline layer captured them (from the extensions the observe layer
/// sets).
pub fn current_request() -> Option<RequestContext> {
    SCOPE.try_with(|scope| scope.request.clone()).ok()
}

/// The trace context of the inbound request this code runs for, if a
/// deadline layer captured it.
pub(crate) fn current_trace() -> Option<TraceContext> {
    SCOPE.try_with(|scope| scope.trace.clone()).ok().flatten()
}

/// Runs `future` with `budget` and `request` visible through [`current_budget()`]
/// and [`current_request()`]: for work spawned off a request's task, or a
/// background job that wants its outbound calls bounded.
///
/// ```
/// use std::time::Duration;
/// use tower_harden::context::{self, Budget, BudgetOrigin};
/// use tower_harden::context::RequestContext;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let budget = Budget::new(Duration::from_secs(1), BudgetOrigin::Configured);
/// let seen = context::scope(budget, RequestContext::default(), async {
///     context::current_budget().map(|budget| budget.total())
/// })
/// .await;
/// assert_eq!(seen, Some(Duration::from_secs(1)));
/// assert!(context::current_budget().is_none());
/// # }
/// ```
pub fn scope<F: Future>(
    budget: Budget,
    request: RequestContext,
    future: F,
) -> impl Future<Output = F::Output> {
    in_scope(
        Scope {
            budget,
            request,
            trace: None,
        },
        future,
    )
}

pub(crate) fn in_scope<F: Future>(scope: Scope, future: F) -> TaskLocalFuture<Scope, F> {
    SCOPE.scope(scope, future)
}

pub(crate) fn sync_in_scope<R>(scope: Scope, f: impl FnOnce() -> R) -> R {
    SCOPE.sync_scope(scope, f)
}
