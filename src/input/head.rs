use std::task::{Context, Poll};

use http::{Request, Response, Uri};
use tower_layer::Layer;
use tower_service::Service;

use super::InputRefusal;
use crate::error::{Problem, ProblemOr, RefuseOr};

/// Default limit on the number of header fields: 96, just under hyper's own
/// HTTP/1 limit of 100 (Envoy's default is 100 too), so that over HTTP/1 this
/// layer answers an over-limit request with a problem before hyper would
/// answer it with a bare 431, while hyper keeps its default (see
/// [`DEFAULT_PARSER_MAX_HEADERS`](crate::serve::DEFAULT_PARSER_MAX_HEADERS) in `serve`).
pub const DEFAULT_MAX_HEADER_FIELDS: usize = 96;

/// Default limit on header bytes: 16 KiB, Node.js's `--max-http-header-size`
/// default. Counted as each field's name and value plus 4 bytes (`": "` and
/// CRLF), close to what the fields take on the wire.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// Default limit on the request target: 8 KiB, the size of one of nginx's
/// `large_client_header_buffers`, which bounds its request line.
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;

/// Limits the request head: the number of header fields and their bytes
/// (431), and the request target's length (414).
///
/// These checks are cheap and come before anything reads the body. They do
/// not replace the server's own bounds on what it reads before it has a
/// request at all (see `tower_harden::serve`, or hyper's
/// `max_buf_size`/`max_headers`); they make the limits precise, explicit and
/// answered with a problem body.
///
/// Defaults: [`DEFAULT_MAX_HEADER_FIELDS`], [`DEFAULT_MAX_HEADER_BYTES`],
/// [`DEFAULT_MAX_URI_BYTES`].
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_harden::input::HeadLimitLayer;
///
/// let layer = HeadLimitLayer::new().max_headers(50).max_uri_bytes(2048);
/// let service = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|_request: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     });
/// # drop(service);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HeadLimitLayer {
    max_headers: usize,
    max_header_bytes: usize,
    max_uri_bytes: usize,
}

impl Default for HeadLimitLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl HeadLimitLayer {
    /// The default limits.
    pub fn new() -> Self {
        Self {
            max_headers: DEFAULT_MAX_HEADER_FIELDS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
        }
    }

    /// The most header fields a request may have. Default: [`DEFAULT_MAX_HEADER_FIELDS`] (96).
    pub fn max_headers(mut self, max: usize) -> Self {
        self.max_headers = max;
        self
    }

    /// The most header bytes a request may have. Default: 16 KiB.
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max;
        self
    }

    /// The longest request target. Default: 8 KiB.
    pub fn max_uri_bytes(mut self, max: usize) -> Self {
        self.max_uri_bytes = max;
        self
    }

    /// Checks a request head against these limits.
    pub fn check<B>(&self, request: &Request<B>) -> Result<(), InputRefusal> {
        let uri_bytes = uri_length(request.uri());
        if uri_bytes > self.max_uri_bytes {
            return Err(InputRefusal::UriTooLong {
                limit: self.max_uri_bytes as u64,
                observed: uri_bytes as u64,
            });
        }
        let headers = request.headers();
        if headers.len() > self.max_headers {
            return Err(InputRefusal::TooManyHeaders {
                limit: self.max_headers as u64,
                observed: headers.len() as u64,
            });
        }
        let header_bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if header_bytes > self.max_header_bytes {
            return Err(InputRefusal::HeadersTooLarge {
                limit: self.max_header_bytes as u64,
                observed: header_bytes as u64,
            });
        }
        Ok(())
    }
}

fn uri_length(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |scheme| scheme.len() + 3);
    let authority = uri
        .authority()
        .map_or(0, |authority| authority.as_str().len());
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    scheme + authority + path
}

impl<S> Layer<S> for HeadLimitLayer {
    type Service = HeadLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HeadLimit {
            inner,
            limits: *self,
        }
    }
}

/// The service of [`HeadLimitLayer`].
#[derive(Debug, Clone)]
pub struct HeadLimit<S> {
    inner: S,
    limits: HeadLimitLayer,
}

impl<S> HeadLimit<S> {
    inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HeadLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ProblemOr<ResBody>>;
    type Error = S::Error;
    type Future = RefuseOr<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.limits.check(&request) {
            Ok(()) => RefuseOr::inner(self.inner.call(request)),
            Err(refusal) => RefuseOr::refused(Problem::refuse(refusal, request.extensions())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_length_counts_absolute_form() {
        assert_eq!(uri_length(&"/a?b=c".parse().unwrap()), 6);
        assert_eq!(uri_length(&"http://h:1/p".parse().unwrap()), 12);
    }

    #[test]
    fn limits_are_exact() {
        let layer = HeadLimitLayer::new().max_headers(2).max_uri_bytes(4);
        let ok = Request::builder()
            .uri("/abc")
            .header("a", "1")
            .header("b", "2");
        assert!(layer.check(&ok.body(()).unwrap()).is_ok());
        let long = Request::builder().uri("/abcd").body(()).unwrap();
        assert!(matches!(
            layer.check(&long),
            Err(InputRefusal::UriTooLong {
                limit: 4,
                observed: 5
            })
        ));
        let many = Request::builder()
            .uri("/")
            .header("a", "1")
            .header("b", "2")
            .header("c", "3");
        assert!(matches!(
            layer.check(&many.body(()).unwrap()),
            Err(InputRefusal::TooManyHeaders {
                limit: 2,
                observed: 3
            })
        ));
        let bytes = HeadLimitLayer::new().max_header_bytes(10);
        let fat = Request::builder().header("abc", "def").body(()).unwrap();
        assert!(bytes.check(&fat).is_ok());
        let fatter = Request::builder().header("abc", "defg").body(()).unwrap();
        assert!(matches!(
            bytes.check(&fatter),
            Err(InputRefusal::HeadersTooLarge {
                limit: 10,
                observed: 11
            })
        ));
    }
}
