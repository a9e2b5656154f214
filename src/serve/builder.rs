//! [`Serve`]: a server being configured, and how awaiting it runs it.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tower_service::Service;

use super::accept;
use super::listener::Listener;
use super::proxy_protocol::ProxyProtocolListener;
use super::settings::ServerSettings;
use super::signals::ShutdownSignal;
use crate::context::TrustedNetworks;
use crate::error::BoxError;

/// A server being configured; await it to run. Made by [`serve()`](super::serve()).
///
/// `L` is the [`Listener`] (a [`TcpListener`] unless stated), `S` the
/// service, `F` the [shutdown signal](Self::with_graceful_shutdown)
/// ([`ShutdownSignal`], Ctrl-C or SIGTERM, unless stated).
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::get, Router};
///
/// # async fn run() -> std::io::Result<()> {
/// let app = Router::new().route("/", get(|| async { "hello" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = tower_harden::serve(listener, app)
///     .max_connections(512)
///     .drain_timeout(Duration::from_secs(10))
///     .with_graceful_shutdown(async { let _ = stopped.await; });
/// println!("listening on {}", server.local_addr()?);
/// # drop(stop);
/// server.await
/// # }
/// ```
#[must_use = "a server does nothing until awaited"]
pub struct Serve<S, F = ShutdownSignal, L = TcpListener> {
    listener: L,
    service: S,
    signal: F,
    settings: ServerSettings,
}

impl<S, L> Serve<S, ShutdownSignal, L> {
    /// A server with the default settings, stopped by Ctrl-C or SIGTERM.
    pub(super) fn new(listener: L, service: S) -> Self {
        Self {
            listener,
            service,
            signal: ShutdownSignal::default(),
            settings: ServerSettings::default(),
        }
    }
}

impl<S, F, L: fmt::Debug> fmt::Debug for Serve<S, F, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S, F, L: Listener> Serve<S, F, L> {
    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl<S, F, L> Serve<S, F, L> {
    /// Replaces every connection setting at once (the preset passes its
    /// `[server]` configuration this way).
    pub fn settings(mut self, settings: ServerSettings) -> Self {
        self.settings = settings.bounded();
        self
    }

    /// Closes an HTTP/1 connection whose client has not sent a complete
    /// request head within this time, counted from when the server starts
    /// waiting for it (so it also bounds an idle keep-alive connection), and
    /// any connection (HTTP/1 or HTTP/2) on which no request began within
    /// this time of being accepted (a client that connects and sends nothing,
    /// or a slow HTTP/2 preface). `None` turns it off. Default:
    /// [`DEFAULT_HEADER_READ_TIMEOUT`](super::DEFAULT_HEADER_READ_TIMEOUT)
    /// (30 s, hyper's default).
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.settings.header_read_timeout = timeout.into();
        self
    }

    /// Gracefully closes a connection that has had no request in flight for
    /// this long (HTTP/1 and HTTP/2; on HTTP/1 the header-read timeout ends
    /// an idle connection first when it is shorter). `None` turns it off.
    /// Default:
    /// [`DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT`](super::DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT)
    /// (75 s, nginx).
    pub fn keep_alive_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.settings.keep_alive_idle_timeout = timeout.into();
        self
    }

    /// The most header fields an HTTP/1 request may have; more is answered
    /// 431 by hyper. Default:
    /// [`DEFAULT_PARSER_MAX_HEADERS`](super::DEFAULT_PARSER_MAX_HEADERS) (100,
    /// hyper's; any other value makes hyper's parse slower, see there).
    pub fn max_headers(mut self, max: usize) -> Self {
        self.settings.max_headers = max;
        self
    }

    /// The most bytes of request head: hyper's HTTP/1 read buffer (a head
    /// that does not fit is answered 431) and the HTTP/2 header list size.
    /// At least 8 KiB (hyper's minimum; smaller values are raised to it).
    /// Default: [`DEFAULT_MAX_HEADER_BYTES`](super::DEFAULT_MAX_HEADER_BYTES)
    /// (64 KiB).
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.settings = ServerSettings {
            max_header_bytes: max,
            ..self.settings
        }
        .bounded();
        self
    }

    /// The most concurrent streams per HTTP/2 connection. Default:
    /// [`DEFAULT_MAX_CONCURRENT_STREAMS`](super::DEFAULT_MAX_CONCURRENT_STREAMS)
    /// (128, nginx's).
    pub fn max_concurrent_streams(mut self, max: u32) -> Self {
        self.settings.max_concurrent_streams = max;
        self
    }

    /// The most connections served at once (at least 1), an upgraded
    /// socket (a WebSocket) included until it closes. With every slot
    /// taken, a new connection evicts the connection doing the least,
    /// oldest first: one waiting for a request head for a second or more
    /// (none yet, or idle between requests, or an upgraded socket with no
    /// traffic for the
    /// [pressure timeout](Self::pressure_timeout)) before one that has
    /// stalled (its response waiting on a client that does not read, or its
    /// request body arriving below the
    /// [minimum rate](Self::min_response_rate), for the pressure timeout).
    /// A connection whose request is handled, or whose response flows, is
    /// never evicted: with only those, the new connection waits (and
    /// further ones wait in the listener's backlog). So one address cannot
    /// keep others out by opening connections and doing nothing with them.
    /// Default: [`DEFAULT_MAX_CONNECTIONS`](super::DEFAULT_MAX_CONNECTIONS)
    /// (1024, nginx's shipped `worker_connections`).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.settings = ServerSettings {
            max_connections: max,
            ..self.settings
        }
        .bounded();
        self
    }

    /// How long a graceful shutdown waits for in-flight requests before the
    /// remaining connections are dropped. Default:
    /// [`DEFAULT_DRAIN_TIMEOUT`](super::DEFAULT_DRAIN_TIMEOUT) (25 s, under
    /// Kubernetes' 30 s grace period).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.settings.drain_timeout = timeout;
        self
    }

    /// Reads a PROXY protocol header (v1 or v2) on every connection from
    /// `load_balancers`, whose client address becomes the connection's peer
    /// for every layer; from any other peer a PROXY header closes the
    /// connection. The listener is wrapped in a
    /// [`ProxyProtocolListener`](super::ProxyProtocolListener), which
    /// describes the protocol and its limits. Default: off.
    pub fn proxy_protocol(mut self, load_balancers: impl IntoIterator<Item = IpNet>) -> Self {
        self.settings.proxy_protocol = true;
        self.settings.trusted_load_balancers = load_balancers.into_iter().collect();
        self
    }

    /// The minimum response data rate (Kestrel's `MinResponseDataRate`):
    /// a connection waiting on its client (its socket's send buffer full, or
    /// an HTTP/2 stream's flow-control window shut) at the end of a `grace`
    /// long window in which the client took fewer than
    /// `bytes_per_second × grace` bytes is closed, its slot freed, and a
    /// warning logged with the peer and the bytes written (at most one line
    /// a second). For HTTP/2 the whole connection is closed: hyper offers no
    /// reset of one stream. A client reading at the rate or faster is never
    /// cut, nor is a response waiting on the service (an event stream
    /// between events). 0 turns it off. Default:
    /// [`DEFAULT_MIN_RESPONSE_RATE`](super::DEFAULT_MIN_RESPONSE_RATE) (240
    /// bytes/s) over
    /// [`DEFAULT_MIN_RESPONSE_RATE_GRACE`](super::DEFAULT_MIN_RESPONSE_RATE_GRACE)
    /// (5 s), Kestrel's.
    pub fn min_response_rate(mut self, bytes_per_second: u64, grace: Duration) -> Self {
        self.settings = ServerSettings {
            min_response_rate: bytes_per_second,
            min_response_rate_grace: grace,
            ..self.settings
        }
        .bounded();
        self
    }

    /// Under pressure (from 80 % of [`max_connections`](Self::max_connections)
    /// in use until below 70 %), the header-read timeout, the keep-alive
    /// idle timeout and the grace of the
    /// [minimum response rate](Self::min_response_rate) last at most this
    /// (Envoy's overload manager `reduce_timeouts`); it is also how long a
    /// connection must have stalled before a new one may evict it. `None`
    /// keeps the timeouts as they are. Default:
    /// [`DEFAULT_PRESSURE_TIMEOUT`](super::DEFAULT_PRESSURE_TIMEOUT) (2 s).
    pub fn pressure_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.settings.pressure_timeout = timeout.into();
        self
    }

    /// Ends a connection gracefully once it is this old (Envoy's
    /// `max_connection_duration`), so that clients reconnect and a load
    /// balancer can spread them again: HTTP/1 answers its request in flight
    /// with `Connection: close` (an idle one is closed), HTTP/2 sends GOAWAY
    /// and finishes its streams. `None` (the default) for no limit.
    pub fn max_connection_age(mut self, age: impl Into<Option<Duration>>) -> Self {
        self.settings.max_connection_age = age.into();
        self
    }

    /// Ends a connection gracefully, as
    /// [`max_connection_age`](Self::max_connection_age) does, once this
    /// many requests have begun on it (nginx's `keepalive_requests`). `None`
    /// (the default) for no limit.
    pub fn max_requests_per_connection(mut self, max: impl Into<Option<u64>>) -> Self {
        self.settings.max_requests_per_connection = max.into();
        self
    }

    /// Stops accepting connections when `signal` completes, lets in-flight
    /// requests finish (up to the [drain timeout](Self::drain_timeout)), then
    /// returns. `signal` replaces the default, [`ShutdownSignal`] (Ctrl-C or
    /// SIGTERM); `std::future::pending()` leaves the server running until
    /// its task ends.
    pub fn with_graceful_shutdown<G>(self, signal: G) -> Serve<S, G, L>
    where
        G: Future<Output = ()> + Send + 'static,
    {
        Serve {
            listener: self.listener,
            service: self.service,
            signal,
            settings: self.settings,
        }
    }
}

/// Awaiting a [`Serve`] runs the server until its shutdown signal completes
/// and its connections have drained (or the drain timeout has passed); it
/// returns `Ok(())` then.
impl<S, F, L, B> IntoFuture for Serve<S, F, L>
where
    L: Listener,
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
        if !self.settings.proxy_protocol {
            return Box::pin(accept::run(
                self.listener,
                self.service,
                self.signal,
                self.settings,
            ));
        }
        let balancers = self.settings.trusted_load_balancers.iter().copied();
        let listener =
            ProxyProtocolListener::new(self.listener, TrustedNetworks::networks(balancers))
                .header_timeout(self.settings.proxy_header_timeout);
        Box::pin(accept::run(
            listener,
            self.service,
            self.signal,
            self.settings,
        ))
    }
}
