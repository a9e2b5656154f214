//! A hardened HTTP server loop: `axum::serve` with the connection-level
//! limits it leaves out.
//!
//! `axum::serve` installs no timer, so hyper's header-read timeout never
//! fires and a slowloris client (one header byte every few seconds) holds its
//! connection, and a task, forever; it also accepts connections without
//! bound. [`serve()`] runs any `tower::Service` (an axum `Router` included)
//! on hyper-util's HTTP/1 + HTTP/2 server with a timer, and adds:
//!
//! | setting | default | where the default comes from |
//! |---|---|---|
//! | [header-read timeout](Serve::header_read_timeout) | 30 s | hyper's own default, which needs a timer to take effect |
//! | [keep-alive idle timeout](Serve::keep_alive_idle_timeout) | 75 s | nginx `keepalive_timeout` |
//! | [max header fields](Serve::max_headers) (HTTP/1) | 100 | hyper's default |
//! | [max header bytes](Serve::max_header_bytes) (HTTP/1 read buffer, HTTP/2 header list) | 64 KiB | above [`HeadLimitLayer`](crate::input::HeadLimitLayer)'s 8 KiB URI + 16 KiB headers, so that layer answers first, with a problem |
//! | [max concurrent HTTP/2 streams](Serve::max_concurrent_streams) | 128 | nginx `http2_max_concurrent_streams` |
//! | [max connections](Serve::max_connections) | 1024 | nginx's shipped `worker_connections` |
//! | [drain timeout](Serve::drain_timeout) | 25 s | under Kubernetes' default 30 s `terminationGracePeriodSeconds` |
//!
//! HTTP/2 reset-flood limits (CVE-2023-44487) are hyper's defaults.
//!
//! Connections over the cap are not accepted: they wait in the listener's
//! backlog until one closes, and the process never runs out of memory or
//! file descriptors on their account. Each request carries the peer address
//! as a [`PeerAddr`] extension and, with the `axum` feature, as axum's
//! `ConnectInfo<SocketAddr>`, so `ConnectInfo` extractors work without
//! `into_make_service_with_connect_info`.
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! tower_harden::serve(listener, app)
//!     .header_read_timeout(Duration::from_secs(10))
//!     .with_graceful_shutdown(tower_harden::serve::shutdown_signal())
//!     .await
//! # }
//! ```

use std::future::{Future, IntoFuture};
use std::io;
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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::util::{Oneshot, ServiceExt};
use tower_service::Service;

use crate::error::BoxError;

use crate::context::PeerAddr;

/// Default [header-read timeout](Serve::header_read_timeout): 30 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [keep-alive idle timeout](Serve::keep_alive_idle_timeout): 75 s.
pub const DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default [most header fields hyper's parser reads](Serve::max_headers): 100,
/// hyper's own default, above
/// [`input::DEFAULT_MAX_HEADER_FIELDS`](crate::input::DEFAULT_MAX_HEADER_FIELDS)
/// (96), so that the head-limit layer answers an over-limit request with a
/// problem (hyper's own refusal is a bare 431 that no layer sees).
///
/// Any other value costs every request: hyper then builds its header arrays
/// element by element, on the heap above 100, instead of using its inline
/// ones (`benches/README.md` has the measurement).
pub const DEFAULT_PARSER_MAX_HEADERS: usize = 100;
/// Default [max header bytes](Serve::max_header_bytes): 64 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default [max concurrent HTTP/2 streams](Serve::max_concurrent_streams): 128.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Default [max connections](Serve::max_connections): 1024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default [drain timeout](Serve::drain_timeout): 25 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what Kubernetes,
/// systemd and Docker send to stop a process): the usual signal for
/// [`Serve::with_graceful_shutdown`]. If a handler cannot be installed, the
/// error is logged and that signal is never awaited.
///
/// ```no_run
/// # async fn run(app: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
/// tower_harden::serve(listener, app)
///     .with_graceful_shutdown(tower_harden::serve::shutdown_signal())
///     .await
/// # }
/// ```
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// hyper's smallest allowed HTTP/1 read buffer.
const MIN_HEADER_BYTES: usize = 8192;

/// Serves `service` on `listener` with connection-level limits; see the
/// [module documentation](self) for the defaults. Await the returned
/// [`Serve`] (after setting any of its options) to run the server.
pub fn serve<S: 'static>(listener: TcpListener, service: S) -> Serve<S, std::future::Pending<()>> {
    Serve {
        listener,
        service: with_routes_built(service),
        signal: std::future::pending(),
        config: ServerSettings::default(),
    }
}

/// An axum `Router` called as a service before `with_state` turns each
/// handler into its route, with the route's layers, on every request
/// (`axum::serve` avoids it by calling `with_state(())` per connection).
/// Served here, a `Router` gets its routes built once.
fn with_routes_built<S: 'static>(service: S) -> S {
    #[cfg(feature = "axum")]
    {
        let mut slot = Some(service);
        if let Some(router) =
            (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<axum::Router>>()
        {
            *router = router.take().map(|router| router.with_state(()));
        }
        slot.expect("the slot is refilled above")
    }
    #[cfg(not(feature = "axum"))]
    service
}

/// The connection settings of [`serve()`], as one value: what the preset's
/// `[server]` configuration becomes, and what [`Serve::settings`] takes.
/// Each field is described at the [`Serve`] method of the same name.
///
/// ```
/// use std::time::Duration;
/// use tower_harden::serve::ServerSettings;
///
/// let mut settings = ServerSettings::default();
/// settings.max_connections = 256;
/// settings.header_read_timeout = Some(Duration::from_secs(10));
/// # drop(settings);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerSettings {
    /// See [`Serve::header_read_timeout`].
    pub header_read_timeout: Option<Duration>,
    /// See [`Serve::keep_alive_idle_timeout`].
    pub keep_alive_idle_timeout: Option<Duration>,
    /// See [`Serve::max_headers`].
    pub max_headers: usize,
    /// See [`Serve::max_header_bytes`].
    pub max_header_bytes: usize,
    /// See [`Serve::max_concurrent_streams`].
    pub max_concurrent_streams: u32,
    /// See [`Serve::max_connections`].
    pub max_connections: usize,
    /// See [`Serve::drain_timeout`].
    pub drain_timeout: Duration,
}

impl ServerSettings {
    /// The settings as the server applies them: values below what hyper or
    /// the accept loop can take are raised to their least.
    fn bounded(mut self) -> Self {
        self.max_header_bytes = self.max_header_bytes.max(MIN_HEADER_BYTES);
        self.max_connections = self.max_connections.clamp(1, u32::MAX as usize);
        self
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
            keep_alive_idle_timeout: Some(DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT),
            max_headers: DEFAULT_PARSER_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// A server being configured; await it to run. Made by [`serve()`].
#[must_use = "a server does nothing until awaited"]
pub struct Serve<S, F> {
    listener: TcpListener,
    service: S,
    signal: F,
    config: ServerSettings,
}

impl<S, F> std::fmt::Debug for Serve<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, F> Serve<S, F> {
    /// Replaces every connection setting at once (the preset passes its
    /// `[server]` configuration this way).
    pub fn settings(mut self, settings: ServerSettings) -> Self {
        self.config = settings.bounded();
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Closes an HTTP/1 connection whose client has not sent a complete
    /// request head within this time, counted from when the server starts
    /// waiting for it (so it also bounds an idle keep-alive connection), and
    /// any connection (HTTP/1 or HTTP/2) on which no request began within
    /// this time of being accepted (a client that connects and sends nothing,
    /// or a slow HTTP/2 preface). `None` turns it off. Default:
    /// [`DEFAULT_HEADER_READ_TIMEOUT`] (30 s, hyper's default).
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.header_read_timeout = timeout.into();
        self
    }

    /// Gracefully closes a connection that has had no request in flight for
    /// this long (HTTP/1 and HTTP/2; on HTTP/1 the header-read timeout ends
    /// an idle connection first when it is shorter). `None` turns it off.
    /// Default: [`DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT`] (75 s, nginx).
    pub fn keep_alive_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.keep_alive_idle_timeout = timeout.into();
        self
    }

    /// The most header fields an HTTP/1 request may have; more is answered
    /// 431 by hyper. Default: [`DEFAULT_PARSER_MAX_HEADERS`] (100, hyper's; any
    /// other value makes hyper's parse slower, see there).
    pub fn max_headers(mut self, max: usize) -> Self {
        self.config.max_headers = max;
        self
    }

    /// The most bytes of request head: hyper's HTTP/1 read buffer (a head
    /// that does not fit is answered 431) and the HTTP/2 header list size.
    /// At least 8 KiB (hyper's minimum; smaller values are raised to it).
    /// Default: [`DEFAULT_MAX_HEADER_BYTES`] (64 KiB).
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.config = ServerSettings {
            max_header_bytes: max,
            ..self.config
        }
        .bounded();
        self
    }

    /// The most concurrent streams per HTTP/2 connection. Default:
    /// [`DEFAULT_MAX_CONCURRENT_STREAMS`] (128, nginx's).
    pub fn max_concurrent_streams(mut self, max: u32) -> Self {
        self.config.max_concurrent_streams = max;
        self
    }

    /// The most connections served at once (at least 1). Further connections
    /// wait in the listener's backlog until one closes. Default:
    /// [`DEFAULT_MAX_CONNECTIONS`] (1024, nginx's shipped
    /// `worker_connections`).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config = ServerSettings {
            max_connections: max,
            ..self.config
        }
        .bounded();
        self
    }

    /// How long a graceful shutdown waits for in-flight requests before the
    /// remaining connections are dropped. Default: [`DEFAULT_DRAIN_TIMEOUT`]
    /// (25 s, under Kubernetes' 30 s grace period).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self
    }

    /// Stops accepting connections when `signal` completes, lets in-flight
    /// requests finish (up to the [drain timeout](Self::drain_timeout)), then
    /// returns.
    pub fn with_graceful_shutdown<G>(self, signal: G) -> Serve<S, G>
    where
        G: Future<Output = ()> + Send + 'static,
    {
        Serve {
            listener: self.listener,
            service: self.service,
            signal,
            config: self.config,
        }
    }
}

impl<S, F, B> IntoFuture for Serve<S, F>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self))
    }
}

/// What the connections are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish in-flight requests, take no new ones.
    Draining,
    /// The drain timeout passed: drop the connection.
    Closing,
}

async fn run<S, F, B>(serve: Serve<S, F>) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    let Serve {
        listener,
        service,
        signal,
        config,
    } = serve;
    let builder = Arc::new(hyper_builder(&config));
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let (phase, _) = watch::channel(Phase::Serving);
    let mut signal = std::pin::pin!(signal);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut signal => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    wait_after_accept_error(error).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            builder.clone(),
            stream,
            peer,
            service.clone(),
            phase.subscribe(),
            Timeouts {
                first_request: config.header_read_timeout,
                idle: config.keep_alive_idle_timeout,
            },
            permit,
        ));
    }
    drop(listener);
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    phase.send_replace(Phase::Draining);
    if tokio::time::timeout(config.drain_timeout, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout_ms = config.drain_timeout.as_millis() as u64,
            "connections still open after the drain timeout; closing them"
        );
        phase.send_replace(Phase::Closing);
        // Closing connections drop at once; this only waits for their tasks
        // to run.
        let _ = tokio::time::timeout(Duration::from_secs(1), slots.acquire_many(all)).await;
    }
    Ok(())
}

fn hyper_builder(config: &ServerSettings) -> auto::Builder<TokioExecutor> {
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

/// Per-connection errors (the peer went away) need no pause; others (out of
/// file descriptors) do, so the loop does not spin. axum::serve does the
/// same.
async fn wait_after_accept_error(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn serve_connection<S, B>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    mut phase: watch::Receiver<Phase>,
    timeouts: Timeouts,
    _permit: OwnedSemaphorePermit,
) where
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
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let idle_timeout = timeouts.idle;
    let idle = tokio::time::sleep(idle_timeout.unwrap_or(Duration::from_secs(86400)));
    let first_request =
        tokio::time::sleep(timeouts.first_request.unwrap_or(Duration::from_secs(86400)));
    let mut first_request = std::pin::pin!(first_request);
    let mut idle = std::pin::pin!(idle);
    let mut closing = false;
    let mut watching = true;
    // A phase set before this connection subscribed still applies.
    let mut pending_phase = Some(*phase.borrow_and_update());
    loop {
        if let Some(now) = pending_phase.take() {
            match now {
                Phase::Serving => {}
                Phase::Draining => {
                    if !closing {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                Phase::Closing => return,
            }
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
                let now = Instant::now();
                match activity.idle_since() {
                    Some(since) if crate::context::instant_after(since, timeout) <= now => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    Some(since) => idle
                        .as_mut()
                        .reset(crate::context::instant_after(since, timeout)),
                    None => idle.as_mut().reset(crate::context::instant_after(now, timeout)),
                }
            }
        }
    }
}

/// The timers of one connection.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// hyper's header-read timeout only starts once hyper-util has told
    /// HTTP/1 from HTTP/2, which needs the client's first bytes; and HTTP/2
    /// has no such timeout. So a connection that sends nothing (or a slow
    /// HTTP/2 preface) is dropped here if no request began within the
    /// header-read timeout.
    first_request: Option<Duration>,
    /// The keep-alive idle timeout.
    idle: Option<Duration>,
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
