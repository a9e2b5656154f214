//! The deadline a trusted caller sends in
//! [`REQUEST_DEADLINE_HEADER`](crate::context::REQUEST_DEADLINE_HEADER).

use std::net::IpAddr;
use std::time::Duration;

use http::{Extensions, HeaderMap, HeaderName};

use crate::context::peer_addr;

/// The longest text accepted for the deadline header: ten digits,
/// about 115 days.
const MAX_DIGITS: usize = 10;

/// Parses a remaining-milliseconds value; `None` for anything malformed.
pub(crate) fn parse_remaining_ms(value: &[u8]) -> Option<Duration> {
    if value.is_empty() || value.len() > MAX_DIGITS || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let millis = value
        .iter()
        .fold(0u64, |millis, digit| millis * 10 + u64::from(digit - b'0'));
    Some(Duration::from_millis(millis))
}

/// The deadline a request's headers carry, if exactly one well-formed value
/// is present.
pub(crate) fn inbound_deadline(headers: &HeaderMap, name: &HeaderName) -> Option<Duration> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    parse_remaining_ms(value.as_bytes())
}

/// The peer address of a request.
pub(crate) fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    peer_addr(extensions).map(|addr| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::REQUEST_DEADLINE_HEADER;
    use proptest::prelude::*;

    #[test]
    fn parses_plain_milliseconds_only() {
        assert_eq!(
            parse_remaining_ms(b"1500"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_remaining_ms(b"0"), Some(Duration::ZERO));
        assert_eq!(
            parse_remaining_ms(b"9999999999"),
            Some(Duration::from_millis(9_999_999_999))
        );
        for malformed in [
            &b""[..],
            b"-5",
            b"+5",
            b" 5",
            b"5 ",
            b"1.5",
            b"12abc",
            b"1500ms",
            b"99999999999",
            "١٢".as_bytes(),
        ] {
            assert_eq!(parse_remaining_ms(malformed), None, "{malformed:?}");
        }
    }

    #[test]
    fn repeated_header_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.append(&REQUEST_DEADLINE_HEADER, "100".parse().unwrap());
        assert_eq!(
            inbound_deadline(&headers, &REQUEST_DEADLINE_HEADER),
            Some(Duration::from_millis(100))
        );
        headers.append(&REQUEST_DEADLINE_HEADER, "200".parse().unwrap());
        assert_eq!(inbound_deadline(&headers, &REQUEST_DEADLINE_HEADER), None);
    }

    proptest! {
        #[test]
        fn parser_accepts_exactly_short_digit_strings(value in proptest::collection::vec(any::<u8>(), 0..16)) {
            let parsed = parse_remaining_ms(&value);
            let well_formed = !value.is_empty() && value.len() <= MAX_DIGITS && value.iter().all(u8::is_ascii_digit);
            prop_assert_eq!(parsed.is_some(), well_formed);
            if let Some(parsed) = parsed {
                let text = std::str::from_utf8(&value).unwrap();
                prop_assert_eq!(parsed.as_millis(), text.parse::<u128>().unwrap());
            }
        }

    }
}
