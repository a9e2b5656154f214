//! W3C Trace Context: trace and span ids, `traceparent`, `tracestate`.

use std::fmt;
use std::sync::Arc;

/// A W3C trace id: 16 bytes, never all zero, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

impl TraceId {
    /// The id as 32 hex digits, without formatting.
    pub(crate) fn hex(&self) -> Hex<32> {
        Hex::of(&self.0)
    }

    /// The trace id of these bytes, unless they are all zero (invalid in W3C
    /// trace context).
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(Self(bytes))
    }

    /// The raw bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0, &mut [0; 32])
    }
}

/// Writes `bytes` as lowercase hex in one `write_str` (this runs for every
/// log event, so no per-digit formatting).
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8], buffer: &mut [u8]) -> fmt::Result {
    fill_hex(bytes, buffer);
    f.write_str(std::str::from_utf8(buffer).map_err(|_| fmt::Error)?)
}

fn fill_hex(bytes: &[u8], buffer: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in buffer.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// An id in lowercase hex, on the stack: handed to a log field or a JSON
/// writer as a `&str`, which they write directly, where a `Display` value
/// goes through the formatting machinery.
#[derive(Clone, Copy)]
pub(crate) struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    fn of(bytes: &[u8]) -> Self {
        let mut buffer = [0; N];
        fill_hex(bytes, &mut buffer);
        Self(buffer)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl TraceId {
    /// A new random trace id (122 random bits, from a UUIDv4).
    pub fn generate() -> Self {
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        // A v4 UUID has fixed version bits, so it is never all zero.
        Self::from_bytes(bytes).unwrap_or(Self([1; 16]))
    }
}

/// A W3C span id (`parent-id` in `traceparent`): 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl SpanId {
    /// The id as 16 hex digits, without formatting.
    pub(crate) fn hex(&self) -> Hex<16> {
        Hex::of(&self.0)
    }

    /// The span id of these bytes, unless they are all zero.
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        (bytes != [0; 8]).then_some(Self(bytes))
    }

    /// A new random span id.
    pub fn generate() -> Self {
        let uuid = uuid::Uuid::new_v4();
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&uuid.as_bytes()[8..]);
        // Bytes 8.. of a v4 UUID carry the variant bits, so never all zero.
        Self::from_bytes(bytes).unwrap_or(Self([1; 8]))
    }

    /// The raw bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0, &mut [0; 16])
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// Why a `traceparent` header was refused (and a new trace started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceParentRefusal {
    /// Version `00` must be exactly 55 characters; a later version at least 55.
    #[error("traceparent has {len} characters, version {version:02x} needs {expected}")]
    WrongLength {
        /// The header's length.
        len: usize,
        /// The version found, if it could be read.
        version: u8,
        /// What that version needs (`55`, or `55+` written as 55 for later versions).
        expected: usize,
    },
    /// A character that is not lowercase hex where hex is due.
    #[error("traceparent has a character that is not lowercase hex at position {position}")]
    NotLowercaseHex {
        /// Where it is.
        position: usize,
    },
    /// A `-` is missing where one is due.
    #[error("traceparent lacks a '-' at position {position}")]
    MissingDash {
        /// Where it should be.
        position: usize,
    },
    /// Version `ff` is forbidden.
    #[error("traceparent version ff is forbidden")]
    ForbiddenVersion,
    /// The trace id is all zeros.
    #[error("traceparent trace id is all zeros")]
    ZeroTraceId,
    /// The parent id is all zeros.
    #[error("traceparent parent id is all zeros")]
    ZeroParentId,
}

/// A parsed W3C `traceparent` header (Trace Context, level 1).
///
/// Parsing is strict: version `00` is exactly 55 characters of lowercase hex
/// and dashes, ids are not all zero, version `ff` is refused; a later version
/// is read by its first 55 characters when the next one is a `-` or the end.
///
/// ```
/// use tower_harden::context::{TraceParent, TraceParentRefusal};
///
/// let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(parent.sampled());
/// assert_eq!(TraceParent::parse("00-1-2-01"), Err(TraceParentRefusal::WrongLength { len: 9, version: 0, expected: 55 }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    version: u8,
    trace_id: TraceId,
    parent_id: SpanId,
    flags: u8,
}

/// The length of a version-00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;

fn lower_hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

fn decode_hex<const N: usize>(text: &[u8], offset: usize) -> Result<[u8; N], TraceParentRefusal> {
    let mut bytes = [0; N];
    for (i, byte) in bytes.iter_mut().enumerate() {
        let digit = |j: usize| {
            lower_hex_digit(text[offset + j]).ok_or(TraceParentRefusal::NotLowercaseHex {
                position: offset + j,
            })
        };
        *byte = (digit(2 * i)? << 4) | digit(2 * i + 1)?;
    }
    Ok(bytes)
}

impl TraceParent {
    /// Parses a `traceparent` header value.
    pub fn parse(value: &str) -> Result<Self, TraceParentRefusal> {
        Self::parse_bytes(value.as_bytes())
    }

    /// Parses the raw bytes of a `traceparent` header value.
    pub fn parse_bytes(text: &[u8]) -> Result<Self, TraceParentRefusal> {
        let wrong_length = |version| TraceParentRefusal::WrongLength {
            len: text.len(),
            version,
            expected: TRACEPARENT_LEN,
        };
        if text.len() < 2 {
            return Err(wrong_length(0));
        }
        let [version] = decode_hex::<1>(text, 0)?;
        if version == 0xff {
            return Err(TraceParentRefusal::ForbiddenVersion);
        }
        let length_ok = match version {
            0 => text.len() == TRACEPARENT_LEN,
            // A later version may append fields after a dash.
            _ => {
                text.len() == TRACEPARENT_LEN
                    || (text.len() > TRACEPARENT_LEN && text[TRACEPARENT_LEN] == b'-')
            }
        };
        if !length_ok {
            if text.len() > TRACEPARENT_LEN && version != 0 {
                return Err(TraceParentRefusal::MissingDash {
                    position: TRACEPARENT_LEN,
                });
            }
            return Err(wrong_length(version));
        }
        for position in [2, 35, 52] {
            if text[position] != b'-' {
                return Err(TraceParentRefusal::MissingDash { position });
            }
        }
        let trace_id = TraceId::from_bytes(decode_hex::<16>(text, 3)?)
            .ok_or(TraceParentRefusal::ZeroTraceId)?;
        let parent_id = SpanId::from_bytes(decode_hex::<8>(text, 36)?)
            .ok_or(TraceParentRefusal::ZeroParentId)?;
        let [flags] = decode_hex::<1>(text, 53)?;
        Ok(Self {
            version,
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The version field.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The caller's span id.
    pub fn parent_id(&self) -> SpanId {
        self.parent_id
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller sampled this trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// Why a `tracestate` header was dropped (the trace itself continues).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceStateRefusal {
    /// Longer than the configured bound.
    #[error("tracestate is {len} bytes long, more than {max_len}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The bound.
        max_len: usize,
    },
    /// More than 32 list members (W3C Trace Context, section 3.3.1.1).
    #[error("tracestate has more than {max} members")]
    TooManyMembers {
        /// The most allowed.
        max: usize,
    },
    /// Not a list at all: a byte a header line cannot hold (a control
    /// character), or no member of the form `key=value`.
    #[error("tracestate is not a list of key=value members")]
    NotAList,
}

/// A W3C `tracestate` header, kept as the caller sent it (several header
/// lines joined with `,`, blanks around it trimmed) for propagation.
///
/// Parsing is lenient, as the specification asks of a vendor passing the
/// list on: a member this crate would not write itself (an unusual key, a
/// duplicated key, a long multi-tenant key) is passed on with the others.
/// The whole value is dropped only when it is longer than the bound, holds
/// more than 32 members, or is no list at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceState(Arc<str>);

impl TraceState {
    /// The most list members W3C Trace Context allows.
    pub const MAX_MEMBERS: usize = 32;
    /// The default bound on the header's length: 512 characters, what the
    /// specification asks every vendor to propagate at least.
    pub const DEFAULT_MAX_LEN: usize = 512;

    /// Accepts a `tracestate` value of at most `max_len` bytes.
    ///
    /// ```
    /// use tower_harden::context::{TraceState, TraceStateRefusal};
    ///
    /// assert!(TraceState::parse("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", 512).is_ok());
    /// // A member this crate would not write does not drop the others.
    /// assert_eq!(TraceState::parse("Rojo=1,congo=2,congo=3", 512).unwrap().as_str(), "Rojo=1,congo=2,congo=3");
    /// assert_eq!(TraceState::parse("no members", 512), Err(TraceStateRefusal::NotAList));
    /// ```
    pub fn parse(value: &str, max_len: usize) -> Result<Self, TraceStateRefusal> {
        if value.len() > max_len {
            return Err(TraceStateRefusal::TooLong {
                len: value.len(),
                max_len,
            });
        }
        if value
            .bytes()
            .any(|b| !(b == b'\t' || (b' '..=b'~').contains(&b)))
        {
            return Err(TraceStateRefusal::NotAList);
        }
        let mut members = 0;
        let mut well_formed = 0;
        for member in value.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            members += 1;
            if members > Self::MAX_MEMBERS {
                return Err(TraceStateRefusal::TooManyMembers {
                    max: Self::MAX_MEMBERS,
                });
            }
            if member.split_once('=').is_some_and(|(key, value)| {
                !key.is_empty() && !key.contains([' ', '\t']) && !value.trim_matches(' ').is_empty()
            }) {
                well_formed += 1;
            }
        }
        if well_formed == 0 {
            return Err(TraceStateRefusal::NotAList);
        }
        Ok(Self(Arc::from(value.trim_matches([' ', '\t']))))
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The trace context of one request: the trace it belongs to (continued from
/// a valid `traceparent` or started here), the caller's span, this server's
/// span, and the caller's `tracestate` if valid.
///
/// The observe layer puts it (and its [`TraceId`]) in the request's
/// extensions; an outbound client forwards [`TraceContext::traceparent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    parent_id: Option<SpanId>,
    span_id: SpanId,
    flags: u8,
    trace_state: Option<TraceState>,
    /// What few requests have, behind one pointer: the context is cloned
    /// into every request's scope.
    extra: Option<Arc<Extra>>,
}

/// The rare parts of a [`TraceContext`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Extra {
    baggage: Option<Box<str>>,
    /// The observe layer's request-id header, when not `x-request-id`: the
    /// outbound layer forwards the id in it.
    request_id_header: Option<http::HeaderName>,
}

impl TraceContext {
    /// A new trace, started here (not sampled by any caller).
    pub fn new_root() -> Self {
        Self {
            trace_id: TraceId::generate(),
            parent_id: None,
            span_id: SpanId::generate(),
            flags: 0,
            trace_state: None,
            extra: None,
        }
    }

    /// Continues the caller's trace with a new span of this server.
    pub fn continue_from(parent: TraceParent, trace_state: Option<TraceState>) -> Self {
        Self {
            trace_id: parent.trace_id,
            parent_id: Some(parent.parent_id),
            span_id: SpanId::generate(),
            // Only the sampled bit is defined for version 00.
            flags: parent.flags & 1,
            trace_state,
            extra: None,
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The caller's span id, when the trace was continued.
    pub fn parent_id(&self) -> Option<SpanId> {
        self.parent_id
    }

    /// This server's span id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The caller's `tracestate`, when valid.
    pub fn trace_state(&self) -> Option<&TraceState> {
        self.trace_state.as_ref()
    }

    /// The `traceparent` an outbound call made for this request sends: this
    /// trace, with this server's span as the parent.
    pub fn traceparent(&self) -> String {
        traceparent(self.trace_id, self.span_id, self.flags)
    }

    /// The `traceparent` of one outbound call whose own (client) span is
    /// `call`: this trace and sampling decision, `call` as the parent-id, so
    /// that every call made while serving this request names a distinct
    /// parent.
    pub fn traceparent_for(&self, call: SpanId) -> String {
        traceparent(self.trace_id, call, self.flags)
    }

    /// Whether this trace is sampled (the caller's decision, when trusted).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The caller's W3C `baggage`, passed on to outbound calls: kept only
    /// when it is at most [`MAX_BAGGAGE_LEN`](Self::MAX_BAGGAGE_LEN) bytes of
    /// printable ASCII (the observe layer reads it only from trusted peers).
    pub fn with_baggage(mut self, baggage: &str) -> Self {
        let baggage = baggage.trim_matches([' ', '\t']);
        let plain = baggage
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        let kept = (plain && !baggage.is_empty() && baggage.len() <= Self::MAX_BAGGAGE_LEN)
            .then(|| Box::from(baggage));
        self.extra_mut().baggage = kept;
        self
    }

    fn extra_mut(&mut self) -> &mut Extra {
        Arc::make_mut(self.extra.get_or_insert_with(Default::default))
    }

    /// This context, naming the header the request id is forwarded in.
    pub(crate) fn with_request_id_header(mut self, name: http::HeaderName) -> Self {
        self.extra_mut().request_id_header = Some(name);
        self
    }

    /// The header the request id is forwarded in, when not `x-request-id`.
    pub(crate) fn request_id_header(&self) -> Option<&http::HeaderName> {
        self.extra.as_ref()?.request_id_header.as_ref()
    }

    /// The longest `baggage` kept: 8192 bytes, the W3C Baggage limit.
    pub const MAX_BAGGAGE_LEN: usize = 8192;

    /// This context with the ids (and sampling decision) an OpenTelemetry
    /// tracer gave the server span, so that logs, exported spans and
    /// outbound `traceparent`s name the same trace and span.
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) fn with_span_ids(
        mut self,
        trace_id: TraceId,
        span_id: SpanId,
        sampled: bool,
    ) -> Self {
        self.trace_id = trace_id;
        self.span_id = span_id;
        self.flags = u8::from(sampled);
        self
    }

    /// The caller's `baggage`, when kept.
    pub fn baggage(&self) -> Option<&str> {
        self.extra.as_ref()?.baggage.as_deref()
    }
}

/// A version-00 `traceparent` value.
pub(crate) fn traceparent(trace_id: TraceId, parent_id: SpanId, flags: u8) -> String {
    format!("00-{trace_id}-{parent_id}-{flags:02x}")
}
