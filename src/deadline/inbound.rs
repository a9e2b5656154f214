use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, HeaderMap, HeaderName};

use ipnet::IpNet;

/// The header a trusted caller uses to say how much of its own budget is left:
/// `x-request-deadline-ms: 1500` means "I stop waiting for you in 1.5 s".
///
/// Format: the remaining time in whole milliseconds, 1 to 10 ASCII digits, no
/// sign, no spaces, no unit (the shape of Envoy's
/// `x-envoy-expected-rq-timeout-ms`). Anything else, or the header sent more
/// than once, is ignored. The [`OutboundLayer`](super::OutboundLayer) sends
/// it.
pub const REQUEST_DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-request-deadline-ms");

/// The longest text accepted for [`REQUEST_DEADLINE_HEADER`]: ten digits,
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

/// The peer address of a request (see [`crate::peer::peer_addr`]).
pub(crate) fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    crate::peer::peer_addr(extensions).map(|addr| addr.ip())
}

/// Which callers may shorten a request's deadline with
/// [`REQUEST_DEADLINE_HEADER`]. Decided on the peer address of the connection
/// (never on a forwarded header, which any client can write).
///
/// The default trusts nobody: the header is ignored.
///
/// ```
/// use tower_harden::deadline::TrustedCallers;
///
/// let trusted = TrustedCallers::cidrs(["10.0.0.0/8", "::1/128"]).unwrap();
/// assert!(trusted.is_trusted("10.1.2.3".parse().unwrap()));
/// assert!(!trusted.is_trusted("192.0.2.1".parse().unwrap()));
/// assert!(TrustedCallers::cidrs(["10.0.0.0/33"]).is_err());
/// ```
#[derive(Clone, Default)]
pub struct TrustedCallers(Trust);

#[derive(Clone, Default)]
enum Trust {
    #[default]
    Nobody,
    Cidrs(Arc<[IpNet]>),
    Predicate(Arc<dyn Fn(IpAddr) -> bool + Send + Sync>),
}

impl TrustedCallers {
    /// Trusts nobody (the default).
    pub fn nobody() -> Self {
        Self(Trust::Nobody)
    }

    /// Trusts peers inside any of these networks (`10.0.0.0/8`,
    /// `fd00::/8`, or a single address).
    pub fn cidrs<I>(networks: I) -> Result<Self, InvalidCidr>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let networks = networks
            .into_iter()
            .map(|network| {
                let text = network.as_ref();
                // Configuration text, but still bounded in the error it goes into.
                crate::peer::parse_network(text)
                    .ok_or_else(|| InvalidCidr(text.chars().take(64).collect()))
            })
            .collect::<Result<Vec<IpNet>, _>>()?;
        Ok(Self(Trust::Cidrs(networks.into())))
    }

    /// Trusts peers for which `predicate` returns true.
    pub fn predicate(predicate: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> Self {
        Self(Trust::Predicate(Arc::new(predicate)))
    }

    /// Whether `peer` is trusted.
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        match &self.0 {
            Trust::Nobody => false,
            Trust::Cidrs(networks) => networks.iter().any(|network| network.contains(&peer)),
            Trust::Predicate(predicate) => predicate(peer),
        }
    }

    pub(crate) fn trusts_nobody(&self) -> bool {
        matches!(self.0, Trust::Nobody)
    }
}

impl fmt::Debug for TrustedCallers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Trust::Nobody => f.write_str("TrustedCallers::Nobody"),
            Trust::Cidrs(networks) => f.debug_tuple("TrustedCallers").field(networks).finish(),
            Trust::Predicate(_) => f.write_str("TrustedCallers::Predicate"),
        }
    }
}

/// A network given to [`TrustedCallers::cidrs`] that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network (expected an IP address or address/prefix): {0:?}")]
pub struct InvalidCidr(String);

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn cidrs_match_their_networks() {
        let trusted = TrustedCallers::cidrs(["10.0.0.0/8", "fd00::/8", "192.0.2.7"]).unwrap();
        assert!(trusted.is_trusted("10.255.0.1".parse().unwrap()));
        assert!(trusted.is_trusted("::ffff:10.0.0.1".parse().unwrap()));
        assert!(trusted.is_trusted("fd12::1".parse().unwrap()));
        assert!(trusted.is_trusted("192.0.2.7".parse().unwrap()));
        assert!(!trusted.is_trusted("192.0.2.8".parse().unwrap()));
        assert!(!trusted.is_trusted("11.0.0.1".parse().unwrap()));
        let everyone = TrustedCallers::cidrs(["0.0.0.0/0"]).unwrap();
        assert!(everyone.is_trusted("203.0.113.9".parse().unwrap()));
        assert!(!TrustedCallers::nobody().is_trusted("127.0.0.1".parse().unwrap()));
        for invalid in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(TrustedCallers::cidrs([invalid]).is_err(), "{invalid}");
        }
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

        #[test]
        fn cidr_parser_never_panics(text in ".{0,48}") {
            let _ = TrustedCallers::cidrs([text]);
        }
    }
}
