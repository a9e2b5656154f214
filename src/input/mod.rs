//! Bounded input: body size (declared, streamed and decoded), header count
//! and bytes, and URI length.
//!
//! Each limit refuses early with an RFC 9457 problem and never buffers more
//! than it allows:
//!
//! | layer | defends against | answer | default |
//! |---|---|---|---|
//! | [`HeadLimitLayer`] | header floods, huge headers, huge URIs | 431 / 414 | 96 fields, 16 KiB, 8 KiB URI |
//! | [`BodyLimitLayer`] | huge or endless bodies, lying `Content-Length` | 413 | 1 MiB |
//! | [`DecompressLayer`] | compression bombs, zstd windows over 8 MiB, unknown or nested codings | 413 / 415 | decoded limit = body limit, window 8 MiB |
//! | [`RouteBodyLimitLayer`] | one route needing another limit (uploads) | 413 | — |
//!
//! ```
//! use axum::{routing::post, Router};
//! use tower::ServiceBuilder;
//! use tower_harden::input::{BodyLimitLayer, DecompressLayer, HeadLimitLayer};
//!
//! let app: Router = Router::new()
//!     .route("/echo", post(|body: String| async move { body }))
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(HeadLimitLayer::new())
//!             .layer(BodyLimitLayer::new(1024 * 1024))
//!             .layer(DecompressLayer::new(1024 * 1024)),
//!     );
//! ```

#[cfg(feature = "axum")]
mod axum_default_limit;
mod body;
mod body_limit;
mod decompress;
mod error;
mod head;
#[cfg(feature = "axum")]
mod route;
mod zstd_window;

pub use body::{BodyError, LimitedBody};
pub use body_limit::{BodyLimit, BodyLimitFuture, BodyLimitLayer, DEFAULT_BODY_LIMIT};
pub use decompress::{Decompress, DecompressLayer};
pub use error::InputRefusal;
pub use head::{
    HeadLimit, HeadLimitLayer, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_FIELDS,
    DEFAULT_MAX_URI_BYTES,
};
#[cfg(feature = "axum")]
pub use route::{RouteBodyLimit, RouteBodyLimitLayer};
pub use zstd_window::{ZstdWindowBody, DEFAULT_MAX_ZSTD_WINDOW};
