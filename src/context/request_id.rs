//! The request id: accepted when plain, generated otherwise.

use std::fmt;
use std::sync::Arc;

/// The id of one request: accepted from the client only when it is short and
/// plain, otherwise generated (time-ordered, UUIDv7).
///
/// It is echoed on the response, put on the request's span and in every
/// problem body, and available to handlers as a request extension.
///
/// ```
/// use tower_harden::context::RequestId;
///
/// assert!(RequestId::parse("req-42.a:b_c").is_some());
/// assert!(RequestId::parse("evil\r\nlog line").is_none());
/// assert!(RequestId::parse("").is_none());
/// assert_eq!(RequestId::generate().as_str().len(), 36);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The default longest id accepted from a client.
    pub const DEFAULT_MAX_LEN: usize = 128;

    /// Accepts `value` if it is 1 to [`Self::DEFAULT_MAX_LEN`] characters of
    /// `[A-Za-z0-9._:-]`.
    pub fn parse(value: &str) -> Option<Self> {
        Self::parse_bounded(value, Self::DEFAULT_MAX_LEN)
    }

    /// Accepts `value` if it is 1 to `max_len` characters of `[A-Za-z0-9._:-]`.
    pub fn parse_bounded(value: &str, max_len: usize) -> Option<Self> {
        Self::try_parse(value.as_bytes(), max_len).ok()
    }

    /// Accepts the raw bytes of a header value if they are 1 to `max_len`
    /// characters of `[A-Za-z0-9._:-]`, and says why not otherwise.
    ///
    /// ```
    /// use tower_harden::context::{RequestId, RequestIdRefusal};
    ///
    /// assert_eq!(RequestId::try_parse(b"", 128), Err(RequestIdRefusal::Empty));
    /// assert_eq!(
    ///     RequestId::try_parse(b"a\x1b[31m", 128),
    ///     Err(RequestIdRefusal::InvalidByte { position: 1 })
    /// );
    /// assert_eq!(
    ///     RequestId::try_parse(&[b'a'; 200], 128),
    ///     Err(RequestIdRefusal::TooLong { len: 200, max_len: 128 })
    /// );
    /// ```
    pub fn try_parse(value: &[u8], max_len: usize) -> Result<Self, RequestIdRefusal> {
        if value.is_empty() {
            return Err(RequestIdRefusal::Empty);
        }
        if value.len() > max_len {
            return Err(RequestIdRefusal::TooLong {
                len: value.len(),
                max_len,
            });
        }
        let plain = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        if let Some(position) = value.iter().position(|b| !plain(b)) {
            return Err(RequestIdRefusal::InvalidByte { position });
        }
        // Every byte is ASCII, so this never fails.
        let text = std::str::from_utf8(value).map_err(|e| RequestIdRefusal::InvalidByte {
            position: e.valid_up_to(),
        })?;
        Ok(Self(Arc::from(text)))
    }

    /// A new time-ordered id (UUIDv7).
    pub fn generate() -> Self {
        // `Uuid::now_v7` keeps its counter behind one process-wide mutex,
        // which two threads generating ids contend for on every request;
        // one context per thread keeps ids time-ordered (to the millisecond
        // across threads, strictly within one) without the lock.
        thread_local! {
            static CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
        }
        let uuid = CONTEXT.with(|context| uuid::Uuid::new_v7(uuid::Timestamp::now(context)));
        let mut buffer = uuid::Uuid::encode_buffer();
        Self(Arc::from(&*uuid.hyphenated().encode_lower(&mut buffer)))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

/// Why an inbound request id was not accepted (and a new one generated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestIdRefusal {
    /// The header was empty.
    #[error("the request id is empty")]
    Empty,
    /// The header was longer than allowed.
    #[error("the request id is {len} bytes long, more than {max_len}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The longest accepted.
        max_len: usize,
    },
    /// The header holds a byte outside `[A-Za-z0-9._:-]`.
    #[error("the request id has a byte outside [A-Za-z0-9._:-] at position {position}")]
    InvalidByte {
        /// Where the first such byte is.
        position: usize,
    },
}
