//! The client's address: the TCP peer, or the client behind trusted proxies
//! (`X-Forwarded-For`, `Forwarded`), and how addresses group into keys.
//!
//! `X-Forwarded-For` and `Forwarded` are written by whoever sends the
//! request: the leftmost entry is whatever the client wants it to be. The
//! only entries worth anything are those appended by proxies you run. So
//! [`TrustedProxies`] starts from the TCP peer and walks the header **from
//! the right**: while the address at hand belongs to a trusted network, the
//! entry to its left is the address that proxy saw; the first untrusted
//! address is the client. With no trusted proxies (the default) the headers
//! are ignored and the client is the TCP peer.
//!
//! The walk reads the headers' raw bytes and parses an entry only when it
//! reaches it: whatever the client wrote left of the entries your proxies
//! appended (a byte above 0x7f, an unclosed quote in `Forwarded`, a stray
//! backslash) is never looked at, so it cannot turn the client into "no
//! key". `Forwarded` elements are cut out from the right following RFC 7239
//! (quoted-strings with quoted-pairs; a quoted comma or semicolon splits
//! nothing). A malformed entry the walk does reach is
//! [`ClientIpError::InvalidEntry`].
//!
//! Name the header your proxies write ([`ProxyHeader`]): reading `Forwarded`
//! when your proxy only appends `X-Forwarded-For` would let a client write
//! the entry your proxy seems to have written.

use std::net::{IpAddr, Ipv6Addr};

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use super::forwarded::{self, MAX_ENTRY_LEN};
use crate::context::TrustedNetworks;

/// How IP addresses are grouped into keys.
///
/// One IPv6 client usually holds a whole /64 (and can rotate through its
/// 2^64 addresses at will), so IPv6 addresses are keyed by their /64 by
/// default. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpGrouping {
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

impl Default for IpGrouping {
    fn default() -> Self {
        Self {
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }
}

impl IpGrouping {
    /// IPv4 /32 (one key per address), IPv6 /64.
    pub fn new() -> Self {
        Self::default()
    }

    /// The IPv4 prefix length (clamped to 0..=32). Default: 32.
    pub fn ipv4_prefix(mut self, prefix: u8) -> Self {
        self.ipv4_prefix = prefix.min(32);
        self
    }

    /// The IPv6 prefix length (clamped to 0..=128). Default: 64.
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.ipv6_prefix = prefix.min(128);
        self
    }

    /// The network `ip` is keyed by.
    ///
    /// ```
    /// use tower_harden::rate_limit::IpGrouping;
    ///
    /// let grouping = IpGrouping::new();
    /// assert_eq!(
    ///     grouping.group("2001:db8:1:2:aaaa::1".parse().unwrap()),
    ///     "2001:db8:1:2::".parse::<std::net::IpAddr>().unwrap(),
    /// );
    /// ```
    pub fn group(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.ipv4_prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.ipv6_prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }
}

/// The header that trusted proxies write the client chain into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`. The default.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// Why no client IP could be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientIpError {
    /// The request carries no peer address (no [`PeerAddr`](crate::context::PeerAddr) or
    /// `ConnectInfo` extension).
    #[error("the request has no peer address")]
    NoPeer,
    /// A trusted proxy's entry is not an IP address (`unknown`, an
    /// obfuscated identifier, garbage).
    #[error("a trusted proxy forwarded an entry that is not an IP address")]
    InvalidEntry,
    /// More trusted hops than the configured maximum.
    #[error("more trusted proxy hops than the maximum")]
    TooManyHops,
}

/// Default bound on the forwarding entries read from the right.
pub const DEFAULT_MAX_HOPS: usize = 8;

/// The proxies whose forwarding headers are believed.
///
/// Default: none (the client is the TCP peer, forwarding headers are
/// ignored), header `X-Forwarded-For`, at most [`DEFAULT_MAX_HOPS`] entries
/// read.
///
/// ```
/// use std::net::IpAddr;
/// use http::HeaderMap;
/// use tower_harden::rate_limit::TrustedProxies;
///
/// let proxies = TrustedProxies::new().trust("10.0.0.0/8".parse().unwrap());
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2".parse().unwrap());
/// let peer: IpAddr = "10.0.0.1".parse().unwrap();
/// // 10.0.0.1 and 10.0.0.2 are ours; 203.0.113.9 is the client; 6.6.6.6 is
/// // whatever the client wrote.
/// assert_eq!(proxies.client_ip(peer, &headers), Ok("203.0.113.9".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: TrustedNetworks,
    header: ProxyHeader,
    max_hops: Option<usize>,
}

impl TrustedProxies {
    /// Trusts no proxy: the client is the TCP peer, and forwarding headers
    /// are ignored. The same as [`TrustedProxies::none`], whose name says it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts no proxy: the client is the TCP peer, and forwarding headers
    /// are ignored (the default). Add proxies with
    /// [`trust`](Self::trust), or start from [`TrustedProxies::networks`].
    ///
    /// ```
    /// use tower_harden::rate_limit::TrustedProxies;
    ///
    /// let peer = "203.0.113.9".parse().unwrap();
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
    /// assert_eq!(TrustedProxies::none().client_ip(peer, &headers), Ok(peer));
    /// ```
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts one more network (a single proxy is a /32 or /128).
    pub fn trust(self, network: IpNet) -> Self {
        self.trust_all([network])
    }

    /// Trusts every network of `networks`.
    pub fn trust_all(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.networks = std::mem::take(&mut self.networks).with(networks);
        self
    }

    /// Trusts these peers as proxies (replacing the networks trusted so
    /// far): the same [`TrustedNetworks`] the deadline layer takes for its
    /// trusted callers.
    pub fn networks(mut self, networks: TrustedNetworks) -> Self {
        self.networks = networks;
        self
    }

    /// The header the trusted proxies write. Default:
    /// [`ProxyHeader::XForwardedFor`].
    pub fn header(mut self, header: ProxyHeader) -> Self {
        self.header = header;
        self
    }

    /// The most entries read from the right of the header. Default:
    /// [`DEFAULT_MAX_HOPS`].
    pub fn max_hops(mut self, max_hops: usize) -> Self {
        self.max_hops = Some(max_hops);
        self
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.networks.is_trusted(ip)
    }

    /// Whether no proxy is trusted (the default): the client is then the
    /// peer, whatever the headers say.
    #[inline]
    pub(super) fn trusts_nobody(&self) -> bool {
        self.networks.trusts_nobody()
    }

    /// The client's address, given the TCP peer's and the request's headers.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, ClientIpError> {
        let mut current = peer.to_canonical();
        if !self.is_trusted(current) {
            return Ok(current);
        }
        let max_hops = self.max_hops.unwrap_or(DEFAULT_MAX_HOPS);
        let mut hops = 0;
        let mut step = |entry: Option<&[u8]>| -> Option<Result<IpAddr, ClientIpError>> {
            if hops == max_hops {
                return Some(Err(ClientIpError::TooManyHops));
            }
            hops += 1;
            let Some(ip) = entry.and_then(parse_node) else {
                return Some(Err(ClientIpError::InvalidEntry));
            };
            current = ip;
            if self.is_trusted(ip) {
                None
            } else {
                Some(Ok(ip))
            }
        };
        // Lazily, from the right: an entry is parsed only when the walk
        // reaches it, so whatever the client wrote left of the trusted hops
        // (any byte, an unclosed quote) cannot void the entry a proxy added.
        let found = match self.header {
            ProxyHeader::XForwardedFor => headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .rev()
                .flat_map(|value| forwarded::x_forwarded_for_from_right(value.as_bytes()))
                .find_map(|entry| step(Some(entry))),
            ProxyHeader::Forwarded => headers
                .get_all(http::header::FORWARDED)
                .iter()
                .rev()
                .flat_map(|value| forwarded::forwarded_for_from_right(value.as_bytes()))
                .find_map(|entry| step(entry.as_deref())),
        };
        // Every entry trusted: the leftmost (a trusted host itself) sent it.
        found.unwrap_or(Ok(current))
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Parses one forwarding entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`, `fe80::1%eth0`.
/// Raw bytes: anything not ASCII is no address.
fn parse_node(entry: &[u8]) -> Option<IpAddr> {
    let entry = entry.trim_ascii();
    if entry.is_empty() || entry.len() > MAX_ENTRY_LEN {
        return None;
    }
    let entry = std::str::from_utf8(entry).ok()?;
    let without_zone = |text: &str| -> Option<IpAddr> {
        let address = text.split_once('%').map_or(text, |(address, _)| address);
        address.parse::<IpAddr>().ok()
    };
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return match without_zone(inside)? {
            ip @ IpAddr::V6(_) => Some(ip.to_canonical()),
            IpAddr::V4(_) => None,
        };
    }
    if let Some(ip) = without_zone(entry) {
        return Some(ip.to_canonical());
    }
    // IPv4 with a port.
    let (address, port) = entry.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    address.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_map(name: &str, values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        headers
    }

    /// The issue's cases: what the client wrote left of the proxy's entry
    /// (a byte above 0x7f, an unclosed quote) leaves the client keyed.
    #[test]
    fn a_bad_entry_left_of_the_walk_is_never_read() {
        let peer = ip("10.0.0.1");
        let xff = TrustedProxies::new().trust("10.0.0.0/8".parse().unwrap());
        let forwarded = xff.clone().header(ProxyHeader::Forwarded);
        for value in [
            &b"caf\xc3\xa9, 203.0.113.9"[..],
            b"\xff\xfe, 203.0.113.9, 10.0.0.2",
            b"\"unknown, 203.0.113.9",
        ] {
            let headers = header_map("x-forwarded-for", &[value]);
            assert_eq!(xff.client_ip(peer, &headers), Ok(ip("203.0.113.9")));
        }
        for values in [
            &[&br#"for="6.6.6.6, for=203.0.113.9"#[..]][..],
            &[b"for=\"caf\xc3\xa9\", for=203.0.113.9;proto=https"],
            &[b"for=\"\xff", b"for=\"[2001:db8::9]:4711\", for=10.0.0.2"],
            &[b"for=x\\", b"for=203.0.113.9"],
        ] {
            let headers = header_map("forwarded", values);
            let client = forwarded.client_ip(peer, &headers).unwrap();
            assert!(
                client == ip("203.0.113.9") || client == ip("2001:db8::9"),
                "{values:?}: {client}"
            );
        }
        // The bad entry is the one the walk reaches: still refused.
        let headers = header_map("x-forwarded-for", &[b"203.0.113.9, \xff, 10.0.0.2"]);
        assert_eq!(
            xff.client_ip(peer, &headers),
            Err(ClientIpError::InvalidEntry)
        );
        let headers = header_map("forwarded", &[b"for=203.0.113.9, for=\"10.0.0.2"]);
        assert_eq!(
            forwarded.client_ip(peer, &headers),
            Err(ClientIpError::InvalidEntry)
        );
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn node_forms() {
        assert_eq!(parse_node(" 1.2.3.4 ".as_bytes()), Some(ip("1.2.3.4")));
        assert_eq!(parse_node("1.2.3.4:8080".as_bytes()), Some(ip("1.2.3.4")));
        assert_eq!(
            parse_node("2001:db8::1".as_bytes()),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            parse_node("[2001:db8::1]".as_bytes()),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            parse_node("[2001:db8::1]:443".as_bytes()),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(parse_node("fe80::1%eth0".as_bytes()), Some(ip("fe80::1")));
        assert_eq!(
            parse_node("[fe80::1%25eth0]:80".as_bytes()),
            Some(ip("fe80::1"))
        );
        assert_eq!(parse_node("::ffff:1.2.3.4".as_bytes()), Some(ip("1.2.3.4")));
        for garbage in [
            "",
            "unknown",
            "_hidden",
            "1.2.3",
            "[1.2.3.4]",
            "[::1",
            "[::1]x",
            "1.2.3.4:99999x",
            "1.2.3.4:",
            "::1:80:",
        ] {
            assert_eq!(parse_node(garbage.as_bytes()), None, "{garbage:?}");
        }
    }

    #[test]
    fn grouping() {
        let grouping = IpGrouping::new().ipv4_prefix(24).ipv6_prefix(48);
        assert_eq!(grouping.group(ip("1.2.3.4")), ip("1.2.3.0"));
        assert_eq!(grouping.group(ip("2001:db8:1:2::1")), ip("2001:db8:1::"));
        assert_eq!(IpGrouping::new().ipv6_prefix(0).group(ip("::1")), ip("::"));
        assert_eq!(
            IpGrouping::new().ipv4_prefix(0).group(ip("1.2.3.4")),
            ip("0.0.0.0")
        );
    }
}
