//! The usual shutdown signal.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The shutdown signal every [`Serve`](super::Serve) starts with:
/// [`shutdown_signal()`] (Ctrl-C or SIGTERM), as a named future. Its signal
/// handlers are installed when the server starts running, not before.
///
/// [`Serve::with_graceful_shutdown`](super::Serve::with_graceful_shutdown)
/// replaces it; `with_graceful_shutdown(std::future::pending())` runs a
/// server that only stops when its task does, and installs no handler.
///
/// Once installed, tokio keeps a signal's handler for the life of the
/// process: a second Ctrl-C or SIGTERM during the drain does not kill the
/// process (the drain timeout bounds it), and neither signal kills it after
/// the server returned: `main` returning ends it.
///
/// ```
/// let signal = tower_harden::serve::ShutdownSignal::default();
/// assert!(format!("{signal:?}").contains("ShutdownSignal"));
/// ```
pub struct ShutdownSignal(Pin<Box<dyn Future<Output = ()> + Send>>);

impl Default for ShutdownSignal {
    fn default() -> Self {
        Self(Box::pin(shutdown_signal()))
    }
}

impl fmt::Debug for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShutdownSignal(Ctrl-C or SIGTERM)")
    }
}

impl Future for ShutdownSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what Kubernetes,
/// systemd and Docker send to stop a process): the signal every
/// [`Serve`](super::Serve) waits for unless
/// [`Serve::with_graceful_shutdown`](super::Serve::with_graceful_shutdown)
/// gives it another (this one combined with the user's own, say).
/// If a handler cannot be installed, the error is logged and that signal is
/// never awaited.
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
