//! One connection: hyper's HTTP/1 + HTTP/2 server over it, the peer address
//! on each request, requests in flight tracked, and the timers hyper leaves
//! out (no first request, keep-alive idle, drain).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::util::{Oneshot, ServiceExt};
use tower_service::Service;

use super::cap::Slot;
use super::settings::{ServerSettings, DEFAULT_PARSER_MAX_HEADERS};
use crate::context::{instant_after, PeerAddr};
use crate::error::BoxError;

/// A timer that is off still needs a deadline; this one never comes.
const NEVER: Duration = Duration::from_secs(86400);

/// hyper's connection builder, set up once from the settings and shared by
/// every connection.
pub(super) fn hyper_builder(config: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes);
    // Left unset at hyper's default: setting it, even to the default, moves
    // hyper off its inline header arrays.
    if config.max_headers != DEFAULT_PARSER_MAX_HEADERS {
        http1.max_headers(config.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// What the connections are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Serving,
    /// Finish in-flight requests, take no new ones.
    Draining,
    /// The drain timeout passed: drop the connection.
    Closing,
}

/// The timers of one connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// hyper's header-read timeout only starts once hyper-util has told
    /// HTTP/1 from HTTP/2, which needs the client's first bytes; and HTTP/2
    /// has no such timeout. So a connection that sends nothing (or a slow
    /// HTTP/2 preface) is dropped here if no request began within the
    /// header-read timeout.
    pub(super) first_request: Option<Duration>,
    /// The keep-alive idle timeout.
    pub(super) idle: Option<Duration>,
}

/// Serves one connection until it ends, its timers close it, or the server's
/// phase says to; `_slot` holds its place under the connection cap until
/// then. One select loop over the connection and what can end it: the state
/// every arm shares (`closing`, `watching`, the pinned timers) keeps it in
/// one function.
pub(super) async fn serve_connection<I, S, B>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: I,
    peer: SocketAddr,
    service: S,
    mut phase: watch::Receiver<Phase>,
    timeouts: Timeouts,
    _slot: Slot,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let activity = Arc::new(Activity::new());
    let service = ConnectionService {
        inner: service,
        peer,
        activity: activity.clone(),
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let idle_timeout = timeouts.idle;
    let mut idle = std::pin::pin!(tokio::time::sleep(idle_timeout.unwrap_or(NEVER)));
    let first_request = tokio::time::sleep(timeouts.first_request.unwrap_or(NEVER));
    let mut first_request = std::pin::pin!(first_request);
    let mut closing = false;
    let mut watching = true;
    // A phase set before this connection subscribed still applies.
    let mut pending_phase = Some(*phase.borrow_and_update());
    loop {
        match pending_phase.take() {
            Some(Phase::Closing) => return,
            Some(Phase::Draining) if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ => {}
        }
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, error = %error, "connection ended with an error");
                }
                return;
            }
            changed = phase.changed(), if watching => match changed {
                Ok(()) => pending_phase = Some(*phase.borrow_and_update()),
                Err(_) => watching = false,
            },
            () = &mut first_request, if timeouts.first_request.is_some() && !activity.has_begun() => {
                // Nothing was ever asked on this connection: drop it.
                if !activity.has_begun() {
                    tracing::debug!(%peer, "no request head within the header-read timeout");
                    return;
                }
            }
            () = &mut idle, if idle_timeout.is_some() && !closing => {
                let timeout = idle_timeout.unwrap_or_default();
                if idle_for(timeout, &activity, idle.as_mut()) {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// The idle timer fired: whether the connection has had no request in
/// flight for `timeout`; if not, the timer is set to when it will have been
/// idle that long, counting from now while a request is in flight.
fn idle_for(timeout: Duration, activity: &Activity, idle: Pin<&mut Sleep>) -> bool {
    let now = Instant::now();
    match activity.idle_since() {
        Some(since) if instant_after(since, timeout) <= now => true,
        Some(since) => {
            idle.reset(instant_after(since, timeout));
            false
        }
        None => {
            idle.reset(instant_after(now, timeout));
            false
        }
    }
}

/// Requests in flight on one connection, since when it has had none, and
/// whether any request began.
struct Activity {
    state: Mutex<(usize, Instant)>,
    begun: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new((0, Instant::now())),
            begun: AtomicBool::new(false),
        }
    }

    fn has_begun(&self) -> bool {
        self.begun.load(Ordering::Relaxed)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.store(true, Ordering::Relaxed);
        if let Ok(mut state) = self.state.lock() {
            state.0 += 1;
        }
        InFlight(self.clone())
    }

    fn idle_since(&self) -> Option<Instant> {
        let state = self.state.lock().ok()?;
        (state.0 == 0).then_some(state.1)
    }
}

/// Marks a request in flight until dropped (answered or cancelled).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.0 = state.0.saturating_sub(1);
            state.1 = Instant::now();
        }
    }
}

/// The hyper service of one connection: sets the peer address on each
/// request and counts requests in flight.
#[derive(Clone)]
struct ConnectionService<S> {
    inner: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnectionService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Tracked<Oneshot<S, Request<Incoming>>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let extensions = request.extensions_mut();
        extensions.insert(PeerAddr(self.peer));
        #[cfg(feature = "axum")]
        extensions.insert(axum::extract::ConnectInfo(self.peer));
        Tracked {
            future: self.inner.clone().oneshot(request),
            _in_flight: self.activity.begin(),
        }
    }
}

pin_project! {
    /// A response future that keeps its request counted as in flight.
    struct Tracked<F> {
        #[pin]
        future: F,
        _in_flight: InFlight,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().future.poll(cx)
    }
}
