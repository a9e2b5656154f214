//! The accept loop: connections taken while the cap has room, each served
//! on its own task, then the drain on shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use tokio::sync::watch;
use tower_service::Service;

use super::cap::{ConnectionCap, StallRule};
use super::connection::{hyper_builder, serve_connection, Phase, Shared, Timeouts};
use super::listener::Listener;
use super::settings::ServerSettings;
use crate::error::BoxError;
use crate::telemetry::LogThrottle;

/// Runs the server: the accept loop until the signal, then the drain.
pub(super) async fn run<L, S, F, B>(
    mut listener: L,
    service: S,
    signal: F,
    config: ServerSettings,
) -> io::Result<()>
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
    let timeouts = Timeouts::new(&config);
    let cap = ConnectionCap::new(
        config.max_connections,
        StallRule {
            // Judged only with the cap full, so under pressure.
            after: timeouts
                .pressure
                .map_or(config.min_response_rate_grace, |most| {
                    most.min(config.min_response_rate_grace)
                }),
            min_rate: config.min_response_rate,
        },
        config.max_requests_per_connection,
    );
    let shared = Arc::new(Shared {
        builder: hyper_builder(&config),
        timeouts,
        stall_log: LogThrottle::new(1_000_000_000),
        epoch: tokio::time::Instant::now(),
    });
    let (phase, _) = watch::channel(Phase::Serving);
    let mut signal = std::pin::pin!(signal);
    // Polled once before the first connection: a signal's handlers (the
    // default `ShutdownSignal`'s) are installed on its first poll, so from
    // here on SIGTERM drains instead of killing the process.
    let stopped = futures_util::FutureExt::now_or_never(signal.as_mut()).is_some();
    loop {
        if stopped {
            break;
        }
        // Accepted first, then admitted: with the cap full, the connection
        // doing the least makes room for this one (so at most one socket
        // over the cap is open, waiting for a slot).
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let slot = tokio::select! {
            slot = cap.admit(peer) => slot,
            () = &mut signal => break,
        };
        // The listener's per-connection work (a PROXY header) runs on the
        // connection's task, holding its slot, never in this loop.
        let prepared = listener.prepare(io, peer);
        let (shared, service, phase, pressure) = (
            shared.clone(),
            service.clone(),
            phase.subscribe(),
            cap.pressure(),
        );
        tokio::spawn(async move {
            if let Some((io, peer)) = prepared.await {
                serve_connection(shared, io, peer, service, phase, pressure, slot).await;
            }
        });
    }
    // Closed, so that new connections are refused during the drain rather
    // than left waiting in the backlog.
    drop(listener);
    drain(&phase, &cap, config.drain_timeout).await;
    Ok(())
}

/// Tells the connections to finish their in-flight requests and waits for
/// them, up to `drain_timeout`; then tells the rest to close.
async fn drain(phase: &watch::Sender<Phase>, cap: &ConnectionCap, drain_timeout: Duration) {
    phase.send_replace(Phase::Draining);
    if tokio::time::timeout(drain_timeout, cap.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout_ms = drain_timeout.as_millis() as u64,
            "connections still open after the drain timeout; closing them"
        );
        phase.send_replace(Phase::Closing);
        // Closing connections drop at once; this only waits for their tasks
        // to run.
        let _ = tokio::time::timeout(Duration::from_secs(1), cap.all_closed()).await;
    }
}
