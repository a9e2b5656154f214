use http::StatusCode;

use crate::error::{message_of, Problem, ProblemType, Refusal, RefusalContext};

/// Why the input layer refused a request.
///
/// `Display` is safe to show a client; the context (limit, observed size) is
/// also available as fields for the log through [`Refusal::context`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputRefusal {
    /// The declared `Content-Length` exceeds the limit: refused before any
    /// byte of the body was read.
    #[error("the declared request body of {declared} bytes exceeds the limit of {limit} bytes")]
    DeclaredBodyTooLarge {
        /// The limit in bytes.
        limit: u64,
        /// The declared `Content-Length`.
        declared: u64,
    },
    /// The body, as it streamed, grew past the limit.
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
        /// Bytes seen when the limit was crossed (at most limit + one frame).
        observed: u64,
    },
    /// The decompressed body grew past the limit on decoded bytes.
    #[error("the decompressed request body exceeds the limit of {limit} bytes")]
    DecodedBodyTooLarge {
        /// The limit in decoded bytes.
        limit: u64,
        /// Decoded bytes seen when the limit was crossed.
        observed: u64,
    },
    /// A `zstd` frame of the body asks for a decoder window larger than
    /// allowed (RFC 9659 caps it at 8 MiB): refused before the decoder
    /// reserves it.
    #[error("a zstd frame of the request body needs a window of {observed} bytes, more than the limit of {limit}")]
    ZstdWindowTooLarge {
        /// The largest window in bytes.
        limit: u64,
        /// The window the frame asks for.
        observed: u64,
    },
    /// The body is compressed in an encoding this server does not decode, or
    /// in more than one encoding.
    #[error("the content encoding of the request body is not supported")]
    UnsupportedEncoding,
    /// The body could not be read: malformed framing (chunked encoding),
    /// a corrupt compressed stream, or a connection that ended before the
    /// declared length.
    #[error("the request body is malformed or ended early")]
    MalformedBody,
    /// More header fields than allowed.
    #[error("the request has {observed} header fields, more than the limit of {limit}")]
    TooManyHeaders {
        /// The limit on the number of header fields.
        limit: u64,
        /// The number of header fields.
        observed: u64,
    },
    /// More header bytes than allowed.
    #[error("the request headers take {observed} bytes, more than the limit of {limit}")]
    HeadersTooLarge {
        /// The limit on header bytes (names plus values).
        limit: u64,
        /// The header bytes.
        observed: u64,
    },
    /// The request target is longer than allowed.
    #[error("the request URI is {observed} bytes long, more than the limit of {limit}")]
    UriTooLong {
        /// The limit on the request target's length.
        limit: u64,
        /// Its length.
        observed: u64,
    },
}

impl Refusal for InputRefusal {
    fn problem(&self) -> Problem {
        let (kind, status) = match self {
            Self::DeclaredBodyTooLarge { .. }
            | Self::BodyTooLarge { .. }
            | Self::DecodedBodyTooLarge { .. }
            | Self::ZstdWindowTooLarge { .. } => (
                ProblemType::PAYLOAD_TOO_LARGE,
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            Self::UnsupportedEncoding => (
                ProblemType::UNSUPPORTED_ENCODING,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            Self::MalformedBody => (ProblemType::MALFORMED_BODY, StatusCode::BAD_REQUEST),
            Self::TooManyHeaders { .. } | Self::HeadersTooLarge { .. } => (
                ProblemType::HEADERS_TOO_LARGE,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            Self::UriTooLong { .. } => (ProblemType::URI_TOO_LONG, StatusCode::URI_TOO_LONG),
        };
        let problem = Problem::of(kind, status).with_detail(message_of(self));
        match self.limit() {
            Some(limit) => problem.with_member("limit", limit),
            None => problem,
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            Self::DeclaredBodyTooLarge { .. } => "declared_body_too_large",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::DecodedBodyTooLarge { .. } => "decoded_body_too_large",
            Self::ZstdWindowTooLarge { .. } => "zstd_window_too_large",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::MalformedBody => "malformed_body",
            Self::TooManyHeaders { .. } => "too_many_headers",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::UriTooLong { .. } => "uri_too_long",
        }
    }

    fn context(&self) -> RefusalContext {
        let context = RefusalContext::new("input");
        let context = match self.limit() {
            Some(limit) => context.limit(limit),
            None => context,
        };
        match self.observed() {
            Some(observed) => context.observed(observed),
            None => context,
        }
    }
}

impl InputRefusal {
    /// The limit that was hit, if the refusal is about a limit.
    pub fn limit(&self) -> Option<u64> {
        match *self {
            Self::DeclaredBodyTooLarge { limit, .. }
            | Self::BodyTooLarge { limit, .. }
            | Self::DecodedBodyTooLarge { limit, .. }
            | Self::ZstdWindowTooLarge { limit, .. }
            | Self::TooManyHeaders { limit, .. }
            | Self::HeadersTooLarge { limit, .. }
            | Self::UriTooLong { limit, .. } => Some(limit),
            Self::UnsupportedEncoding | Self::MalformedBody => None,
        }
    }

    /// What was observed against the limit.
    pub fn observed(&self) -> Option<u64> {
        match *self {
            Self::DeclaredBodyTooLarge { declared, .. } => Some(declared),
            Self::BodyTooLarge { observed, .. }
            | Self::DecodedBodyTooLarge { observed, .. }
            | Self::ZstdWindowTooLarge { observed, .. }
            | Self::TooManyHeaders { observed, .. }
            | Self::HeadersTooLarge { observed, .. }
            | Self::UriTooLong { observed, .. } => Some(observed),
            Self::UnsupportedEncoding | Self::MalformedBody => None,
        }
    }
}
