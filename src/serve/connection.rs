//! One connection: hyper's HTTP/1 + HTTP/2 server over it, and the timers
//! hyper leaves out (no first request, keep-alive idle, a response the
//! client does not read, an upgraded socket left idle, drain, eviction).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::cap::Slot;
use super::in_flight::ConnectionService;
use super::progress::ConnectionState;
use super::settings::{ServerSettings, DEFAULT_PARSER_MAX_HEADERS};
use super::watched_io::WatchedIo;
use crate::context::instant_after;
use crate::error::BoxError;
use crate::telemetry::LogThrottle;

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

/// The timers of one connection, as configured.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// hyper's header-read timeout only starts once hyper-util has told
    /// HTTP/1 from HTTP/2, which needs the client's first bytes; and HTTP/2
    /// has no such timeout. So a connection that sends nothing (or a slow
    /// HTTP/2 preface) is dropped here if no request began within the
    /// header-read timeout.
    pub(super) first_request: Option<Duration>,
    /// The keep-alive idle timeout; also the idle timeout of an upgraded
    /// socket.
    pub(super) idle: Option<Duration>,
    /// The window over which the response data rate is judged; `None` when
    /// there is no minimum rate.
    pub(super) response_grace: Option<Duration>,
    /// Bytes per second a client waited on must take.
    pub(super) min_response_rate: u64,
    /// The most any of the three above lasts while the cap is under
    /// pressure.
    pub(super) pressure: Option<Duration>,
    /// When a connection is ended gracefully, counted from its accept.
    pub(super) max_age: Option<Duration>,
}

impl Timeouts {
    pub(super) fn new(config: &ServerSettings) -> Self {
        Self {
            first_request: config.header_read_timeout,
            idle: config.keep_alive_idle_timeout,
            response_grace: (config.min_response_rate > 0)
                .then_some(config.min_response_rate_grace),
            min_response_rate: config.min_response_rate,
            pressure: config.pressure_timeout,
            max_age: config.max_connection_age,
        }
    }

    /// The timeouts in force: shortened under pressure, as Envoy's overload
    /// manager's `reduce_timeouts` does.
    fn in_force(&self, under_pressure: bool) -> Self {
        let shorten = |timeout: Option<Duration>| match (timeout, self.pressure) {
            (Some(timeout), Some(most)) if under_pressure => Some(timeout.min(most)),
            (timeout, _) => timeout,
        };
        // On HTTP/1 hyper's own header-read timer (which cannot shrink)
        // bounds an idle connection; under pressure the idle timer does.
        let idle = if under_pressure {
            match (self.idle, self.first_request) {
                (Some(idle), Some(head)) => Some(idle.min(head)),
                (idle, head) => idle.or(head),
            }
        } else {
            self.idle
        };
        Self {
            first_request: shorten(self.first_request),
            idle: shorten(idle),
            response_grace: shorten(self.response_grace),
            ..*self
        }
    }
}

/// What every connection shares besides its settings.
pub(super) struct Shared {
    pub(super) builder: auto::Builder<TokioExecutor>,
    pub(super) timeouts: Timeouts,
    /// One line per second for clients cut for a stalled response.
    pub(super) stall_log: LogThrottle,
    pub(super) epoch: Instant,
}

/// Serves one connection until it ends, its timers close it, the cap
/// evicts it or the server's phase says to; `slot` holds its place under
/// the connection cap for as long as its socket lives. One select loop
/// over the connection and what can end it: the state every arm shares
/// (`closing`, the pinned timers) keeps it in one function.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_connection<I, S, B>(
    shared: Arc<Shared>,
    io: I,
    peer: SocketAddr,
    service: S,
    mut phase: watch::Receiver<Phase>,
    mut pressure: watch::Receiver<bool>,
    slot: Slot,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let state = slot.state();
    let service = ConnectionService {
        inner: service,
        peer,
        state: state.clone(),
    };
    let io = TokioIo::new(WatchedIo::new(io, slot));
    // Boxed, so that it can be dropped (and with it the socket, unless an
    // upgrade took it) before the loop below looks for an upgrade.
    let mut connection = Box::pin(shared.builder.serve_connection_with_upgrades(io, service));
    let mut timeouts = shared.timeouts.in_force(*pressure.borrow_and_update());
    let mut idle = std::pin::pin!(tokio::time::sleep(timeouts.idle.unwrap_or(NEVER)));
    let first_request = tokio::time::sleep(timeouts.first_request.unwrap_or(NEVER));
    let mut first_request = std::pin::pin!(first_request);
    let mut rate = RateWindow::new(&state, timeouts.response_grace);
    let mut evicted = std::pin::pin!(state.evicted());
    let mut last_request = std::pin::pin!(state.last_request_begun());
    let age = shared.timeouts.max_age;
    let mut aged = std::pin::pin!(tokio::time::sleep_until(instant_after(
        state.accepted(),
        age.unwrap_or(NEVER)
    )));
    let mut closing = false;
    let mut watching = (true, true);
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
                break;
            }
            changed = phase.changed(), if watching.0 => match changed {
                Ok(()) => pending_phase = Some(*phase.borrow_and_update()),
                Err(_) => watching.0 = false,
            },
            changed = pressure.changed(), if watching.1 => match changed {
                Ok(()) => {
                    timeouts = shared.timeouts.in_force(*pressure.borrow_and_update());
                    let head = timeouts.first_request.unwrap_or(NEVER);
                    first_request.as_mut().reset(instant_after(state.accepted(), head));
                    // Fires at once and sets itself to the new deadline.
                    idle.as_mut().reset(Instant::now());
                    rate.reset(&state, timeouts.response_grace);
                }
                Err(_) => watching.1 = false,
            },
            () = &mut evicted => {
                tracing::debug!(%peer, "evicted to make room under the connection cap");
                return;
            }
            () = &mut last_request, if !closing => {
                // Its last request began: it is answered with
                // `Connection: close` (HTTP/1) or after GOAWAY (HTTP/2).
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = &mut aged, if age.is_some() && !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = &mut first_request, if timeouts.first_request.is_some() && !state.has_begun() => {
                // Nothing was ever asked on this connection: drop it. (Checked
                // again: a request may have begun since the guard was read.)
                if !state.has_begun() {
                    tracing::debug!(%peer, "no request head within the header-read timeout");
                    return;
                }
            }
            () = &mut idle, if timeouts.idle.is_some() && !closing => {
                let timeout = timeouts.idle.unwrap_or_default();
                if idle_for(timeout, state.idle_since(), idle.as_mut()) {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = rate.tick(), if rate.is_on() => {
                if rate.stalled(&state, timeouts.min_response_rate) {
                    log_stall(&shared, &state, timeouts);
                    state.close_io();
                    return;
                }
            }
        }
    }
    drop(connection);
    if state.io_is_alive() {
        state.set_upgraded();
        upgraded(&shared, &state, phase, pressure).await;
    }
}

/// hyper handed the socket to an upgrade (a WebSocket, say): the socket
/// keeps its slot while it lives; this closes it when it has been idle
/// for the keep-alive idle timeout, when the cap evicts it, or when the
/// drain timeout passes.
async fn upgraded(
    shared: &Shared,
    state: &ConnectionState,
    mut phase: watch::Receiver<Phase>,
    mut pressure: watch::Receiver<bool>,
) {
    let mut dropped = std::pin::pin!(state.io_dropped());
    let mut evicted = std::pin::pin!(state.evicted());
    let mut timeouts = shared.timeouts.in_force(*pressure.borrow_and_update());
    let mut idle = std::pin::pin!(tokio::time::sleep(timeouts.idle.unwrap_or(NEVER)));
    let mut watching = (true, true);
    loop {
        if !state.io_is_alive() {
            return;
        }
        if *phase.borrow_and_update() == Phase::Closing {
            break;
        }
        tokio::select! {
            () = &mut dropped => return,
            () = &mut evicted => {
                tracing::debug!(peer = %state.peer(), "upgraded connection evicted to make room under the connection cap");
                break;
            }
            changed = phase.changed(), if watching.0 => if changed.is_err() { watching.0 = false },
            changed = pressure.changed(), if watching.1 => match changed {
                Ok(()) => {
                    timeouts = shared.timeouts.in_force(*pressure.borrow_and_update());
                    idle.as_mut().reset(Instant::now());
                }
                Err(_) => watching.1 = false,
            },
            () = &mut idle, if timeouts.idle.is_some() => {
                let timeout = timeouts.idle.unwrap_or_default();
                if idle_for(timeout, Some(state.last_progress()), idle.as_mut()) {
                    tracing::debug!(peer = %state.peer(), "upgraded connection idle; closing it");
                    break;
                }
            }
        }
    }
    state.close_io();
}

fn log_stall(shared: &Shared, state: &ConnectionState, timeouts: Timeouts) {
    let now = u64::try_from(shared.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    if let Some(suppressed) = shared.stall_log.allow(now) {
        tracing::warn!(
            peer = %state.peer(),
            bytes_written = state.bytes_written(),
            min_response_rate = timeouts.min_response_rate,
            window_ms = timeouts.response_grace.unwrap_or_default().as_millis() as u64,
            suppressed,
            "the client took the response more slowly than the minimum rate; closing the connection"
        );
    }
}

/// The response data rate, judged once per window: a connection that
/// waits on its client at the end of a window in which the client took
/// fewer than the minimum rate's bytes has stalled (Kestrel's
/// `MinResponseDataRate`, over a sliding window rather than per write).
struct RateWindow {
    window: Option<Duration>,
    timer: Pin<Box<Sleep>>,
    written_at_start: u64,
    /// Whether the connection waited on its client when the window began.
    waiting_at_start: bool,
}

impl RateWindow {
    fn new(state: &ConnectionState, window: Option<Duration>) -> Self {
        Self {
            window,
            timer: Box::pin(tokio::time::sleep(window.unwrap_or(NEVER))),
            written_at_start: state.bytes_written(),
            waiting_at_start: false,
        }
    }

    fn reset(&mut self, state: &ConnectionState, window: Option<Duration>) {
        self.window = window;
        self.timer
            .as_mut()
            .reset(instant_after(Instant::now(), window.unwrap_or(NEVER)));
        self.written_at_start = state.bytes_written();
        self.waiting_at_start = state.waiting_on_client_since().is_some();
    }

    fn is_on(&self) -> bool {
        self.window.is_some()
    }

    async fn tick(&mut self) {
        self.timer.as_mut().await;
    }

    /// The window ended: whether the connection stalled in it (waited on
    /// its client when it began and when it ended, and the client took
    /// fewer bytes than the rate asks in between; a response that began
    /// late in the window is judged on the next). Starts the next window.
    fn stalled(&mut self, state: &ConnectionState, min_rate: u64) -> bool {
        let window = self.window.unwrap_or(NEVER);
        let taken = state.bytes_written().saturating_sub(self.written_at_start);
        let least = u64::try_from(window.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(min_rate)
            / 1000;
        let waited_throughout = self.waiting_at_start && state.waiting_on_client_since().is_some();
        self.reset(state, self.window);
        waited_throughout && taken < least.max(1)
    }
}

/// The idle timer fired: whether the connection has been idle (since
/// `since`, `None` while it is busy) for `timeout`; if not, the timer is set
/// to when it will have been idle that long, counting from now while busy.
fn idle_for(timeout: Duration, since: Option<Instant>, idle: Pin<&mut Sleep>) -> bool {
    let now = Instant::now();
    match since {
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
