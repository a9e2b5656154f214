use std::task::{Context, Poll};

use http::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING};
use http::{Request, Response};
use http_body::Body;
use tower_http::decompression::{RequestDecompression, RequestDecompressionLayer};
use tower_layer::Layer;
use tower_service::Service;

use super::body_limit::{BodyLimit, BodyLimitLayer};
use super::zstd_window::{ZstdWindowBody, DEFAULT_MAX_ZSTD_WINDOW};
use super::InputRefusal;
use crate::error::{Problem, ProblemOr, RefuseOr};

/// Decompresses request bodies and bounds the decoded bytes.
///
/// A body in `gzip` (or `x-gzip`), `deflate`, `br` or `zstd` is decoded by
/// tower-http's `RequestDecompression`, and its decoded bytes are counted
/// against `decoded_limit` as they stream: a 10 KB gzip body that would
/// inflate to 100 MB is refused with 413 after `decoded_limit` bytes, and
/// never held whole. Any other coding, or a list of codings (`gzip, gzip`:
/// nested encodings are a classic bomb), is refused with 415.
///
/// Every frame header of a `zstd` body is read before the decoder sees it,
/// and a frame asking for a window over `max_zstd_window` (8 MiB, RFC 9659)
/// is refused with 413: libzstd would otherwise reserve up to 128 MiB per
/// request before one decoded byte is counted. A body that is not zstd
/// frames is refused with 400.
///
/// Place it inside a [`BodyLimitLayer`](super::BodyLimitLayer), which bounds
/// the compressed bytes on the wire.
///
/// ```
/// use axum::{routing::post, Router};
/// use tower::ServiceBuilder;
/// use tower_harden::input::{BodyLimitLayer, DecompressLayer};
///
/// let app: Router = Router::new()
///     .route("/ingest", post(|body: String| async move { body.len().to_string() }))
///     .layer(
///         ServiceBuilder::new()
///             .layer(BodyLimitLayer::new(1024 * 1024))
///             .layer(DecompressLayer::new(8 * 1024 * 1024)),
///     );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DecompressLayer {
    decoded_limit: u64,
    max_zstd_window: u64,
}

impl DecompressLayer {
    /// Decodes request bodies, refusing those that inflate past
    /// `decoded_limit` bytes.
    pub fn new(decoded_limit: u64) -> Self {
        Self {
            decoded_limit,
            max_zstd_window: DEFAULT_MAX_ZSTD_WINDOW,
        }
    }

    /// The largest window a `zstd` frame may ask for, in bytes. Default
    /// [`DEFAULT_MAX_ZSTD_WINDOW`] (8 MiB, RFC 9659's limit for HTTP); the
    /// smallest window zstd has is 1 KiB.
    pub fn max_zstd_window(mut self, bytes: u64) -> Self {
        self.max_zstd_window = bytes;
        self
    }
}

impl<S> Layer<S> for DecompressLayer {
    type Service = Decompress<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let limited = BodyLimitLayer::new(self.decoded_limit)
            .decoded()
            .layer(inner);
        Decompress {
            inner: RequestDecompressionLayer::new().layer(limited),
            max_zstd_window: self.max_zstd_window,
        }
    }
}

/// The service of [`DecompressLayer`].
#[derive(Debug, Clone)]
pub struct Decompress<S> {
    inner: RequestDecompression<BodyLimit<S>>,
    max_zstd_window: u64,
}

// Written out, not `inner_service_accessors!`: the user's service sits two
// wrappers down (tower-http's decoder, then the decoded-body limit).
impl<S> Decompress<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref().get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut().get_mut()
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner().into_inner()
    }
}

/// The codings this layer decodes, as an `Accept-Encoding` value.
const ACCEPTED_CODINGS: &str = "gzip, deflate, br, zstd";

/// Normalizes a request's `Content-Encoding` to the one token tower-http
/// decodes, or refuses it.
fn accept_encoding(value: &HeaderValue) -> Result<Option<&'static str>, InputRefusal> {
    let coding = value
        .to_str()
        .map_err(|_| InputRefusal::UnsupportedEncoding)?
        .trim();
    let canonical = if coding.eq_ignore_ascii_case("identity") {
        None
    } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
        Some("gzip")
    } else if coding.eq_ignore_ascii_case("deflate") {
        Some("deflate")
    } else if coding.eq_ignore_ascii_case("br") {
        Some("br")
    } else if coding.eq_ignore_ascii_case("zstd") {
        Some("zstd")
    } else {
        return Err(InputRefusal::UnsupportedEncoding);
    };
    Ok(canonical)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Decompress<S>
where
    RequestDecompression<BodyLimit<S>>:
        Service<Request<ZstdWindowBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
{
    type Response = Response<ProblemOr<ResBody>>;
    type Error =
        <RequestDecompression<BodyLimit<S>> as Service<Request<ZstdWindowBody<ReqBody>>>>::Error;
    type Future = RefuseOr<
        <RequestDecompression<BodyLimit<S>> as Service<Request<ZstdWindowBody<ReqBody>>>>::Future,
        ResBody,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let mut codings = request.headers().get_all(CONTENT_ENCODING).iter();
        let decision = match (codings.next(), codings.next()) {
            (None, _) => Ok(Coding::Absent),
            (Some(_), Some(_)) => Err(InputRefusal::UnsupportedEncoding),
            (Some(value), None) => accept_encoding(value).map(|coding| match coding {
                Some(coding) => Coding::Decode(coding),
                None => Coding::Identity,
            }),
        };
        let zstd = matches!(decision, Ok(Coding::Decode("zstd")));
        let identity = match decision {
            Ok(Coding::Decode(coding)) => {
                request
                    .headers_mut()
                    .insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
                false
            }
            Ok(Coding::Identity) => {
                request.headers_mut().remove(CONTENT_ENCODING);
                true
            }
            Ok(Coding::Absent) => true,
            Err(refusal) => {
                let mut response = Problem::refuse(refusal, request.extensions());
                // RFC 9110, section 15.5.16 (and RFC 7694): a 415 about the
                // content coding lists the codings the server accepts.
                response
                    .headers_mut()
                    .insert(ACCEPT_ENCODING, HeaderValue::from_static(ACCEPTED_CODINGS));
                return RefuseOr::refused(response);
            }
        };
        // With no coding, tower-http hands the body on as it is; the decoded
        // limit inside it cannot see through tower-http's wrapper whether
        // the body had already ended, so it is told. (A coded body is
        // counted as before, empty or not: what it decodes to, or whether it
        // decodes at all, is the decoder's to say.)
        self.inner.get_mut().next_body_ended = identity && request.body().is_end_stream();
        let max_window = self.max_zstd_window;
        let request = request.map(|body| match zstd {
            true => ZstdWindowBody::zstd(body, max_window),
            false => ZstdWindowBody::unchecked(body),
        });
        RefuseOr::inner(self.inner.call(request))
    }
}

/// What a request's `Content-Encoding` asks of this layer.
enum Coding {
    /// No header.
    Absent,
    /// `identity`: the header is dropped.
    Identity,
    /// One coding tower-http decodes, by its canonical name.
    Decode(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codings_are_normalized_or_refused() {
        let accept = |v: &'static str| accept_encoding(&HeaderValue::from_static(v));
        assert_eq!(accept("GZip "), Ok(Some("gzip")));
        assert_eq!(accept("x-gzip"), Ok(Some("gzip")));
        assert_eq!(accept("identity"), Ok(None));
        assert_eq!(accept("zstd"), Ok(Some("zstd")));
        assert_eq!(accept("gzip, gzip"), Err(InputRefusal::UnsupportedEncoding));
        assert_eq!(accept("compress"), Err(InputRefusal::UnsupportedEncoding));
    }
}
