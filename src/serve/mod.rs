//! A hardened HTTP server loop: `axum::serve` with the connection-level
//! limits it leaves out.
//!
//! `axum::serve` installs no timer, so hyper's header-read timeout never
//! fires and a slowloris client (one header byte every few seconds) holds its
//! connection, and a task, forever; it also accepts connections without
//! bound. [`serve()`] runs any `tower::Service` (an axum `Router` included)
//! on hyper-util's HTTP/1 + HTTP/2 server with a timer, over any
//! [`Listener`] (a [`TcpListener`](tokio::net::TcpListener), or a wrapper
//! around one), and adds:
//!
//! | setting | default | where the default comes from |
//! |---|---|---|
//! | [header-read timeout](Serve::header_read_timeout) | 30 s | hyper's own default, which needs a timer to take effect |
//! | [keep-alive idle timeout](Serve::keep_alive_idle_timeout) | 75 s | nginx `keepalive_timeout` |
//! | [max header fields](Serve::max_headers) (HTTP/1) | 100 | hyper's default |
//! | [max header bytes](Serve::max_header_bytes) (HTTP/1 read buffer, HTTP/2 header list) | 64 KiB | above [`HeadLimitLayer`](crate::input::HeadLimitLayer)'s 8 KiB URI + 16 KiB headers, so that layer answers first, with a problem |
//! | [max concurrent HTTP/2 streams](Serve::max_concurrent_streams) | 128 | nginx `http2_max_concurrent_streams` |
//! | [max connections](Serve::max_connections) | 1024 | nginx's shipped `worker_connections` |
//! | [minimum response rate](Serve::min_response_rate) | 240 B/s over 5 s | Kestrel's `MinResponseDataRate` |
//! | [timeouts under pressure](Serve::pressure_timeout) | 2 s | Envoy's overload manager `reduce_timeouts` |
//! | [max connection age](Serve::max_connection_age) / [requests per connection](Serve::max_requests_per_connection) | none | Envoy's `max_connection_duration`, nginx's `keepalive_requests`, when set |
//! | [drain timeout](Serve::drain_timeout) | 25 s | under Kubernetes' default 30 s `terminationGracePeriodSeconds` |
//!
//! HTTP/2 reset-flood limits (CVE-2023-44487) are hyper's defaults.
//!
//! Behind a layer-4 load balancer (HAProxy, AWS NLB), [`Serve::proxy_protocol`]
//! (or a [`ProxyProtocolListener`] around any listener) reads the PROXY
//! protocol header the balancer writes, so the client's address is the peer
//! of every layer; it is off by default.
//!
//!
//! The cap is fair: with every slot taken, a new connection evicts the one
//! doing the least (no request head yet or idle between requests, then one
//! stalled on a client that does not read or a request body below the
//! minimum rate; oldest first), never one whose request is being handled or
//! whose response flows. Only when every connection works does a new one
//! wait, and further ones wait in the listener's backlog: at most one
//! socket over the cap is open, and memory and file descriptors stay
//! bounded by it. From 80 % of the cap the header-read, keep-alive idle and
//! response-rate timeouts shrink to the [pressure
//! timeout](Serve::pressure_timeout).
//!
//! A request counts as in flight until its response body ends, so a long
//! download or event stream is never idle; keep-alive idleness starts after
//! its last byte.
//!
//! Upgrades (WebSockets) are served: an upgraded socket keeps its
//! connection's slot until it closes, is closed after the keep-alive idle
//! timeout without traffic either way, can be evicted like an idle
//! connection once it has had no traffic for the pressure timeout, and is
//! closed when the drain timeout of a shutdown passes (the drain waits for
//! it until then, so an application that closes its sockets on its own
//! shutdown signal ends sooner).
//!
//! Each request carries the peer address
//! the [`Listener`] reported as a [`PeerAddr`](crate::context::PeerAddr)
//! extension and, with the `axum` feature, as axum's
//! `ConnectInfo<SocketAddr>`, so `ConnectInfo` extractors work without
//! `into_make_service_with_connect_info`.
//!
//! A graceful shutdown is the default: on Ctrl-C or SIGTERM the server
//! stops accepting, lets in-flight requests finish for up to the drain
//! timeout, and returns. [`Serve::with_graceful_shutdown`] replaces the
//! signal with one of the service's own.
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! tower_harden::serve(listener, app) // drains on Ctrl-C or SIGTERM
//!     .header_read_timeout(Duration::from_secs(10))
//!     .await
//! # }
//! ```

// `Serve` and its builder methods (builder.rs) fill `ServerSettings`, whose
// defaults are the `DEFAULT_*` constants (settings.rs); awaited, it runs the
// accept loop (accept.rs) over a `Listener` (listener.rs) under the
// connection cap (cap.rs), each connection with its service and timers
// (connection.rs). `shutdown_signal` is in signals.rs.
mod accept;
mod builder;
mod cap;
mod connection;
mod in_flight;
mod listener;
mod progress;
mod proxy_protocol;
mod settings;
mod signals;
mod watched_io;

pub use builder::Serve;
pub use listener::Listener;
pub use proxy_protocol::{ProxiedIo, ProxyProtocolListener, DEFAULT_PROXY_HEADER_TIMEOUT};
pub use settings::{
    ServerSettings, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES, DEFAULT_MIN_RESPONSE_RATE, DEFAULT_MIN_RESPONSE_RATE_GRACE,
    DEFAULT_PARSER_MAX_HEADERS, DEFAULT_PRESSURE_TIMEOUT,
};
pub use signals::{shutdown_signal, ShutdownSignal};

/// Serves `service` on `listener` with connection-level limits; see the
/// [module documentation](self) for the defaults. Await the returned
/// [`Serve`] (after setting any of its options) to run the server.
///
/// On Ctrl-C or SIGTERM it stops accepting, lets in-flight requests finish
/// (up to the [drain timeout](Serve::drain_timeout), 25 s) and returns;
/// [`Serve::with_graceful_shutdown`] replaces that signal.
///
/// # What it serves, and the usual compile errors
///
/// `service` is any `Clone + Send` service of `http::Request<hyper::body::Incoming>`
/// whose future is `Send` and whose response body is `Send`, each error
/// convertible into a [`BoxError`](crate::error::BoxError). The bounds are
/// stated here, so a mismatch is reported at this call, not at `.await`:
///
/// - *`IntoMakeServiceWithConnectInfo<..>: Service<Request<Incoming>>` is not
///   satisfied*: pass the `Router` itself; `serve` gives every request
///   axum's `ConnectInfo<SocketAddr>` already.
/// - *`Router<AppState>` ... expected `Router<()>`*: call
///   `.with_state(state)` first.
/// - *the response body ... cannot be sent between threads*, or its `Data`
///   is not `Bytes`: a layer changed the body type into one that is not
///   `Send`; box it (`axum::body::Body::new`) or use a `Send` body.
/// - *the future ... cannot be sent between threads safely*: a handler
///   holds something `!Send` (an `Rc`, a `std::sync::MutexGuard`) across
///   an `.await`.
pub fn serve<L, S, B>(listener: L, service: S) -> Serve<S, ShutdownSignal, L>
where
    L: Listener,
    S: tower_service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<crate::error::BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<crate::error::BoxError>,
{
    Serve::new(listener, with_routes_built(service))
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
