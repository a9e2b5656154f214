//! Who is on the other end of the connection, and which networks we trust.

use std::net::{IpAddr, SocketAddr};

use http::Extensions;
use ipnet::IpNet;

/// The TCP peer address of the connection a request arrived on, as a request
/// extension. Set by [`serve()`](crate::serve()); read by the deadline layer
/// (to decide whether a caller is trusted) and the rate limiter (peer-IP
/// keys). Servers built on hyper-util directly insert it into each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// The peer address of a request: the crate's [`PeerAddr`] extension, else
/// axum's `ConnectInfo<SocketAddr>` (feature `axum`).
pub(crate) fn peer_addr(extensions: &Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0);
    }
    None
}

/// Parses a network in CIDR form (`10.0.0.0/8`, `fd00::/8`) or a single
/// address (a /32 or /128). Configuration text: surrounding blanks are
/// ignored.
pub(crate) fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_addresses_parse() {
        assert_eq!(
            parse_network(" 10.0.0.0/8 "),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(parse_network("::1"), Some("::1/128".parse().unwrap()));
        assert_eq!(parse_network("10.0.0.0/33"), None);
        assert_eq!(parse_network("example.com"), None);
    }
}
