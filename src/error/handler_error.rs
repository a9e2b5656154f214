//! [`HandlerError`]: the error type for handlers.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

use http::StatusCode;

use super::{BoxError, Problem, ProblemType, Refusal, RefusalContext};

/// The error type for handlers: `?` on any error gives the client a 500
/// problem saying only "internal error" (plus the request id), and gives the
/// log the whole `source()` chain.
///
/// A deliberate client error carries a detail written for the client:
/// [`HandlerError::bad_request`], [`HandlerError::unprocessable`], or any
/// [`Problem`] through [`HandlerError::problem`].
///
/// The response carries the failure in its extensions as a
/// [`Refused`](super::Refused), so the
/// [`ObserveLayer`](crate::observe::ObserveLayer) logs it once, in the request's
/// outcome event, and fills in the request id and trace id of the problem
/// body.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_harden::error::HandlerError;
/// use tower_harden::observe::ObserveLayer;
///
/// async fn report() -> Result<String, HandlerError> {
///     let text = std::fs::read_to_string("/no/such/file")?; // a 500 for the client
///     if text.is_empty() {
///         return Err(HandlerError::unprocessable("the report is empty"));
///     }
///     Ok(text)
/// }
///
/// let app: Router = Router::new().route("/report", get(report)).layer(ObserveLayer::new());
/// ```
pub struct HandlerError {
    failure: HandlerFailure,
}

impl HandlerError {
    /// An internal error: the client is told only "internal error".
    pub fn internal<E: Into<BoxError> + 'static>(error: E) -> Self {
        Self {
            failure: HandlerFailure {
                problem: Problem::internal_error(),
                source: Some(error.into()),
                error_type: std::any::type_name::<E>(),
            },
        }
    }

    /// A 400 problem with a detail written for the client.
    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::problem(
            Problem::of(ProblemType::INVALID_INPUT, StatusCode::BAD_REQUEST).with_detail(detail),
        )
    }

    /// A 422 problem with a detail written for the client.
    pub fn unprocessable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::problem(
            Problem::of(ProblemType::INVALID_INPUT, StatusCode::UNPROCESSABLE_ENTITY)
                .with_detail(detail),
        )
    }

    /// Answers with this problem. It is shown to the client as it is: put
    /// no internal error text in it.
    pub fn problem(problem: Problem) -> Self {
        Self {
            failure: HandlerFailure {
                problem,
                source: None,
                error_type: "handler",
            },
        }
    }

    /// Attaches the cause, for the log only.
    pub fn with_source<E: Into<BoxError> + 'static>(mut self, source: E) -> Self {
        self.failure.error_type = std::any::type_name::<E>();
        self.failure.source = Some(source.into());
        self
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        self.failure.problem.status()
    }

    /// The problem the client gets (without its request id, filled in by the
    /// observe layer).
    pub fn client_problem(&self) -> &Problem {
        &self.failure.problem
    }
}

/// `?` on any error a [`BoxError`] can hold: every `std::error::Error +
/// Send + Sync`, a `Box<dyn Error + Send + Sync>`, an `anyhow::Error` (its
/// whole context chain reaches the log), a `String`. The client gets a 500
/// saying "internal error"; the log gets the error's type (for a boxed
/// error, the box's) and its chain.
///
/// ```
/// use tower_harden::error::{BoxError, HandlerError};
///
/// fn load() -> Result<String, BoxError> {
///     Err("the cache is down".into())
/// }
///
/// async fn handler() -> Result<String, HandlerError> {
///     Ok(load()?)
/// }
/// ```
impl<E> From<E> for HandlerError
where
    E: Into<BoxError> + 'static,
{
    fn from(error: E) -> Self {
        Self::internal(error)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.failure, f)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.failure, f)
    }
}

impl HandlerFailure {
    /// The failure behind a handler's own error response: logged with
    /// `error`'s type and chain, while the response keeps its body.
    pub(crate) fn cause<E: Into<BoxError> + 'static>(status: StatusCode, error: E) -> Self {
        let problem = if status.is_server_error() || !status.is_client_error() {
            Problem::internal_error()
        } else {
            Problem::of(ProblemType::INVALID_INPUT, status)
        };
        Self {
            problem,
            source: Some(error.into()),
            error_type: std::any::type_name::<E>(),
        }
    }
}

/// The refusal a [`HandlerError`] becomes in the response's extensions.
#[derive(Debug)]
pub(crate) struct HandlerFailure {
    problem: Problem,
    source: Option<BoxError>,
    error_type: &'static str,
}

impl fmt::Display for HandlerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problem.status().is_server_error() {
            f.write_str("the handler failed")
        } else {
            write!(
                f,
                "the handler refused the request: {}",
                self.problem.detail().unwrap_or(self.problem.title())
            )
        }
    }
}

impl StdError for HandlerFailure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|error| error as &(dyn StdError + 'static))
    }
}

impl Refusal for HandlerFailure {
    fn problem(&self) -> Problem {
        self.problem.clone()
    }

    fn context(&self) -> RefusalContext {
        RefusalContext::new("handler")
    }

    fn error_type(&self) -> &'static str {
        self.error_type
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for HandlerError {
    fn into_response(self) -> axum::response::Response {
        let problem = self.failure.problem.clone();
        let mut response = Problem::refuse_with::<axum::body::Body>(
            super::Refused::new(self.failure),
            crate::context::RequestContext::default(),
        )
        .map(axum::body::Body::new);
        response
            .extensions_mut()
            .insert(super::problem::ProblemAwaitingContext(problem));
        response
    }
}

// The cause of a service's own error response: a refused request whose
// failure is the service's error (here, beside the failure type it wraps).
impl super::Refused {
    /// The cause of a response a service made itself, for the log: put it
    /// in the response's extensions and the
    /// [`ObserveLayer`](crate::observe::ObserveLayer) logs `error`'s type
    /// and its whole `source()` chain in the request's outcome event, while
    /// the client gets the response as it is. This is how a service's own
    /// error type, with its own `IntoResponse`, reaches the log without any
    /// change to its handlers. `status` is the response's (a 4xx is logged
    /// as a refusal of the request, anything else as a failure).
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// use axum::response::{IntoResponse, Response};
    /// use tower_harden::error::Refused;
    ///
    /// #[derive(Debug)]
    /// enum AppError {
    ///     Database(std::io::Error),
    /// }
    ///
    /// impl std::fmt::Display for AppError {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("the database failed")
    ///     }
    /// }
    ///
    /// impl std::error::Error for AppError {
    ///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
    ///         match self {
    ///             AppError::Database(error) => Some(error),
    ///         }
    ///     }
    /// }
    ///
    /// impl IntoResponse for AppError {
    ///     fn into_response(self) -> Response {
    ///         let status = StatusCode::INTERNAL_SERVER_ERROR;
    ///         let mut response = (status, "something went wrong").into_response();
    ///         response.extensions_mut().insert(Refused::cause(status, self));
    ///         response
    ///     }
    /// }
    /// ```
    pub fn cause<E: Into<super::BoxError> + 'static>(status: http::StatusCode, error: E) -> Self {
        Self::new(HandlerFailure::cause(status, error))
    }
}
