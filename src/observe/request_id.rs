use std::fmt;
use std::sync::Arc;

/// The id of one request: accepted from the client only when it is short and
/// plain, otherwise generated (time-ordered, UUIDv7).
///
/// It is echoed on the response, put on the request's span and in every
/// problem body, and available to handlers as a request extension.
///
/// ```
/// use tower_harden::observe::RequestId;
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
        let plain = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        (!value.is_empty() && value.len() <= max_len && value.bytes().all(|b| plain(&b)))
            .then(|| Self(Arc::from(value)))
    }

    /// A new time-ordered id (UUIDv7).
    pub fn generate() -> Self {
        let uuid = uuid::Uuid::now_v7();
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
