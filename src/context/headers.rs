//! The header names this crate reads and writes, and the parse of the
//! header values more than one room reads.

use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName};

/// The request id header: read (when trusted) and echoed by the observe
/// layer, forwarded by the outbound layer. Both take another name by
/// configuration.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The W3C trace context header (`traceparent`).
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// The W3C trace state header (`tracestate`).
pub const TRACESTATE_HEADER: HeaderName = HeaderName::from_static("tracestate");

/// The W3C baggage header (`baggage`): passed on from trusted callers only.
pub const BAGGAGE_HEADER: HeaderName = HeaderName::from_static("baggage");

/// The header a trusted caller uses to say how much of its own budget is left:
/// `x-request-deadline-ms: 1500` means "I stop waiting for you in 1.5 s".
///
/// Format: the remaining time in whole milliseconds, 1 to 10 ASCII digits, no
/// sign, no spaces, no unit (the shape of Envoy's
/// `x-envoy-expected-rq-timeout-ms`). Anything else, or the header sent more
/// than once, is ignored. The
/// [`OutboundLayer`](crate::outbound::OutboundLayer) sends it.
pub const REQUEST_DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-request-deadline-ms");

/// The declared `Content-Length`, if present and well-formed. hyper refuses a
/// malformed or conflicting one with 400 before we see the request; for other
/// servers a malformed value counts as absent and the body is still counted.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    parse_length(headers.get(CONTENT_LENGTH)?.as_bytes())
}

/// Exactly what `to_str`, `trim` and `parse::<u64>` accept, on the bytes,
/// in one pass: digits with an optional `+`, between spaces and tabs (the
/// only whitespace a header value that passes `to_str` can hold).
fn parse_length(value: &[u8]) -> Option<u64> {
    let start = value.iter().position(|&b| b != b' ' && b != b'\t')?;
    let end = value.iter().rposition(|&b| b != b' ' && b != b'\t')? + 1;
    let trimmed = &value[start..end];
    let digits = trimmed.strip_prefix(b"+").unwrap_or(trimmed);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |length, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        length.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::parse_length;
    use http::HeaderValue;
    use proptest::prelude::*;

    /// The parse this one replaces.
    fn through_str(value: &[u8]) -> Option<u64> {
        HeaderValue::from_bytes(value)
            .ok()?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    }

    #[test]
    fn accepts_what_str_parsing_accepts() {
        for value in [
            &b"0"[..],
            b"64",
            b" 64\t",
            b"+64",
            b"+",
            b"-0",
            b"",
            b"  ",
            b"6 4",
            b"18446744073709551615",
            b"18446744073709551616",
            b"00000000000000000000001",
            "\u{a0}1".as_bytes(),
        ] {
            assert_eq!(parse_length(value), through_str(value), "{value:?}");
        }
    }

    proptest! {
        #[test]
        fn same_as_str_parsing(value in proptest::collection::vec(
            prop_oneof![Just(b' '), Just(b'\t'), Just(b'+'), Just(b'-'), b'0'..=b'9', any::<u8>()],
            0..24,
        )) {
            // Only values a header can hold.
            prop_assume!(HeaderValue::from_bytes(&value).is_ok());
            prop_assert_eq!(parse_length(&value), through_str(&value));
        }
    }
}
