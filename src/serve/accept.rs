//! The accept loop: connections taken while the cap has room, each served
//! on its own task, then the drain on shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use super::builder::Serve;
use super::connection::{hyper_builder, serve_connection, Timeouts};
use super::listener::Listener;
use crate::error::BoxError;

/// What the connections are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Serving,
    /// Finish in-flight requests, take no new ones.
    Draining,
    /// The drain timeout passed: drop the connection.
    Closing,
}

/// The connection cap: one slot per connection served. A connection holds
/// its [`Slot`] until its task ends; with every slot taken the loop accepts
/// nothing, and further connections wait in the listener's backlog.
pub(super) struct ConnectionCap {
    slots: Arc<Semaphore>,
    /// `max_connections`, which `ServerSettings::bounded` keeps within
    /// 1..=u32::MAX (what `Semaphore::acquire_many` takes).
    max: u32,
}

/// One connection's place under the [`ConnectionCap`], given back on drop.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl ConnectionCap {
    fn new(max_connections: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            max: u32::try_from(max_connections).unwrap_or(u32::MAX),
        }
    }

    /// Waits for a free slot.
    async fn slot(&self) -> Slot {
        let permit = self.slots.clone().acquire_owned().await;
        Slot {
            _permit: permit.expect("the semaphore is never closed"),
        }
    }

    /// Completes once every connection has given its slot back.
    async fn all_closed(&self) {
        let _ = self.slots.acquire_many(self.max).await;
    }
}

/// Runs the server: the accept loop until the signal, then the drain.
pub(super) async fn run<L, S, F, B>(serve: Serve<S, F, L>) -> io::Result<()>
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
    let Serve {
        mut listener,
        service,
        signal,
        config,
    } = serve;
    let builder = Arc::new(hyper_builder(&config));
    let cap = ConnectionCap::new(config.max_connections);
    let (phase, _) = watch::channel(Phase::Serving);
    let timeouts = Timeouts {
        first_request: config.header_read_timeout,
        idle: config.keep_alive_idle_timeout,
    };
    let mut signal = std::pin::pin!(signal);
    loop {
        let slot = tokio::select! {
            slot = cap.slot() => slot,
            () = &mut signal => break,
        };
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        tokio::spawn(serve_connection(
            builder.clone(),
            io,
            peer,
            service.clone(),
            phase.subscribe(),
            timeouts,
            slot,
        ));
    }
    // No new connection is accepted, nor left waiting in the backlog.
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
