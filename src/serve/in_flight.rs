//! The hyper service of one connection: the peer address on each request,
//! and each request counted in flight until its response body ends, so
//! that a long download or event stream is not idle.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tower::util::{Oneshot, ServiceExt};
use tower_service::Service;

use super::progress::ConnectionState;
use crate::context::PeerAddr;

/// Sets the peer address on each request and counts requests in flight.
#[derive(Clone)]
pub(super) struct ConnectionService<S> {
    pub(super) inner: S,
    pub(super) peer: SocketAddr,
    pub(super) state: Arc<ConnectionState>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnectionService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Tracked<Oneshot<S, Request<Incoming>>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let declared_body = if request.body().is_end_stream() {
            Some(0)
        } else {
            request.body().size_hint().exact()
        };
        let extensions = request.extensions_mut();
        crate::context::make_room(extensions);
        extensions.insert(PeerAddr(self.peer));
        #[cfg(feature = "axum")]
        extensions.insert(axum::extract::ConnectInfo(self.peer));
        Tracked {
            future: self.inner.clone().oneshot(request),
            in_flight: Some(InFlight::begin(self.state.clone(), declared_body)),
        }
    }
}

/// Marks a request in flight until dropped: with its response body, or
/// with its future when it ends without one.
struct InFlight(Arc<ConnectionState>);

impl InFlight {
    fn begin(state: Arc<ConnectionState>, declared_body: Option<u64>) -> Self {
        state.begin(declared_body);
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

pin_project! {
    /// A response future that keeps its request in flight, then hands that
    /// on to the response body.
    pub(super) struct Tracked<F> {
        #[pin]
        future: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody::new(body, in_flight))))
    }
}

/// Whether a response body's last data waits for the connection to take
/// it; counted on the connection while it does.
struct Handed {
    state: Option<Arc<ConnectionState>>,
    waiting: bool,
}

impl Handed {
    fn set(&mut self, waiting: bool) {
        if self.waiting == waiting {
            return;
        }
        self.waiting = waiting;
        if let Some(state) = &self.state {
            if waiting {
                state.body_waits();
            } else {
                state.body_resumes();
            }
        }
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        self.set(false);
    }
}

pin_project! {
    /// A response body that keeps its request in flight until it ends, and
    /// tells the connection when its data waits on the client.
    pub(super) struct TrackedBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
        handed: Handed,
    }
}

impl<B> TrackedBody<B> {
    fn new(inner: B, in_flight: Option<InFlight>) -> Self {
        let state = in_flight.as_ref().map(|in_flight| in_flight.0.clone());
        Self {
            inner,
            in_flight,
            handed: Handed {
                state,
                waiting: false,
            },
        }
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        this.handed.set(false);
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) if frame.is_data() => this.handed.set(true),
            Some(Ok(_)) => {}
            // The end (or a failure): the request is no longer in flight.
            Some(Err(_)) | None => drop(this.in_flight.take()),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
