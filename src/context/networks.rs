//! Which peers are trusted: one type for every place that believes a peer
//! (callers that may shorten a deadline, proxies whose forwarding headers
//! are read).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// A set of trusted peers: networks in CIDR form, or a predicate. Decided on
/// the peer address of the connection (never on a forwarded header, which
/// any client can write).
///
/// The default trusts nobody.
///
/// ```
/// use tower_harden::context::TrustedNetworks;
///
/// let trusted = TrustedNetworks::cidrs(["10.0.0.0/8", "::1/128"]).unwrap();
/// assert!(trusted.is_trusted("10.1.2.3".parse().unwrap()));
/// assert!(!trusted.is_trusted("192.0.2.1".parse().unwrap()));
/// assert!(TrustedNetworks::cidrs(["10.0.0.0/33"]).is_err());
/// ```
#[derive(Clone, Default)]
pub struct TrustedNetworks(Trust);

#[derive(Clone, Default)]
enum Trust {
    #[default]
    Nobody,
    Everyone,
    Networks(Arc<[IpNet]>),
    Predicate(Arc<dyn Fn(IpAddr) -> bool + Send + Sync>),
}

impl TrustedNetworks {
    /// Trusts nobody (the default).
    pub fn nobody() -> Self {
        Self(Trust::Nobody)
    }

    /// Trusts loopback and the private ranges, where service meshes,
    /// sidecars and internal callers live: `127.0.0.0/8`, `::1/128`, the
    /// RFC 1918 networks (`10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`)
    /// and IPv6 unique local addresses (`fc00::/7`, RFC 4193).
    ///
    /// ```
    /// use tower_harden::context::TrustedNetworks;
    ///
    /// let private = TrustedNetworks::private();
    /// assert!(private.is_trusted("10.1.2.3".parse().unwrap()));
    /// assert!(private.is_trusted("::1".parse().unwrap()));
    /// assert!(!private.is_trusted("203.0.113.9".parse().unwrap()));
    /// ```
    pub fn private() -> Self {
        Self::networks(PRIVATE_NETWORKS.iter().map(|net| {
            net.parse::<IpNet>()
                .expect("the private networks are valid CIDRs")
        }))
    }

    /// Trusts every peer (`0.0.0.0/0` and `::/0`), and requests whose peer
    /// is not known (see [`is_trusted_peer`](Self::is_trusted_peer)).
    pub fn everyone() -> Self {
        Self(Trust::Everyone)
    }

    /// Trusts peers inside any of these networks, given as text
    /// (`10.0.0.0/8`, `fd00::/8`, or a single address).
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
                parse_network(text).ok_or_else(|| InvalidCidr(text.chars().take(64).collect()))
            })
            .collect::<Result<Vec<IpNet>, _>>()?;
        Ok(Self::networks(networks))
    }

    /// Trusts peers inside any of these networks (host bits are ignored:
    /// `10.1.2.3/8` is `10.0.0.0/8`). No network at all trusts nobody.
    pub fn networks(networks: impl IntoIterator<Item = IpNet>) -> Self {
        let networks: Arc<[IpNet]> = networks.into_iter().map(canonical).collect();
        let whole = |net: &IpNet| net.prefix_len() == 0;
        if networks.is_empty() {
            Self(Trust::Nobody)
        } else if networks.iter().any(|n| whole(n) && n.addr().is_ipv4())
            && networks.iter().any(|n| whole(n) && n.addr().is_ipv6())
        {
            Self(Trust::Everyone)
        } else {
            Self(Trust::Networks(networks))
        }
    }

    /// Trusts peers for which `predicate` returns true.
    pub fn predicate(predicate: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> Self {
        Self(Trust::Predicate(Arc::new(predicate)))
    }

    /// These networks and `more`.
    pub fn with(self, more: impl IntoIterator<Item = IpNet>) -> Self {
        match self.0 {
            Trust::Nobody => Self::networks(more),
            Trust::Everyone => Self::everyone(),
            Trust::Networks(networks) => Self::networks(networks.iter().copied().chain(more)),
            Trust::Predicate(predicate) => {
                let more: Arc<[IpNet]> = more.into_iter().map(canonical).collect();
                Self::predicate(move |ip| predicate(ip) || more.iter().any(|net| net.contains(&ip)))
            }
        }
    }

    /// Whether `peer` is trusted. An IPv4-mapped IPv6 address is judged as
    /// the IPv4 address it maps.
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        match &self.0 {
            Trust::Nobody => false,
            Trust::Everyone => true,
            Trust::Networks(networks) => networks.iter().any(|network| network.contains(&peer)),
            Trust::Predicate(predicate) => predicate(peer),
        }
    }

    /// Whether a request whose peer is `peer` is trusted: a request whose
    /// peer is not known (no [`PeerAddr`](super::PeerAddr) nor `ConnectInfo`)
    /// is trusted only by [`everyone()`](Self::everyone).
    pub fn is_trusted_peer(&self, peer: Option<IpAddr>) -> bool {
        match peer {
            Some(peer) => self.is_trusted(peer),
            None => matches!(self.0, Trust::Everyone),
        }
    }

    /// Whether this set trusts nobody at all (the check can be skipped).
    pub fn trusts_nobody(&self) -> bool {
        matches!(self.0, Trust::Nobody)
    }
}

impl fmt::Debug for TrustedNetworks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Trust::Nobody => f.write_str("TrustedNetworks::Nobody"),
            Trust::Everyone => f.write_str("TrustedNetworks::Everyone"),
            Trust::Networks(networks) => f.debug_tuple("TrustedNetworks").field(networks).finish(),
            Trust::Predicate(_) => f.write_str("TrustedNetworks::Predicate"),
        }
    }
}

/// `network` with its host bits cleared and, when it lies inside the
/// IPv4-mapped range (`::ffff:0:0/96`), as the IPv4 network it maps: peers
/// are judged by their canonical address, so a mapped network written in
/// IPv6 form must be compared in IPv4 form too.
fn canonical(network: IpNet) -> IpNet {
    let network = network.trunc();
    if let IpNet::V6(v6) = network {
        if let (Some(v4), true) = (v6.network().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(mapped) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(mapped);
            }
        }
    }
    network
}

/// What [`TrustedNetworks::private`] trusts, as text (also the default of
/// the `observe.trusted_context` setting).
pub const PRIVATE_NETWORKS: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

/// What [`TrustedNetworks::everyone`] trusts, as text.
pub const EVERYONE: &[&str] = &["0.0.0.0/0", "::/0"];

/// A network given as text that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network (expected an IP address or address/prefix): {0:?}")]
pub struct InvalidCidr(String);

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
    use proptest::prelude::*;

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

    #[test]
    fn cidrs_match_their_networks() {
        let trusted = TrustedNetworks::cidrs(["10.0.0.0/8", "fd00::/8", "192.0.2.7"]).unwrap();
        assert!(trusted.is_trusted("10.255.0.1".parse().unwrap()));
        assert!(trusted.is_trusted("::ffff:10.0.0.1".parse().unwrap()));
        assert!(trusted.is_trusted("fd12::1".parse().unwrap()));
        assert!(trusted.is_trusted("192.0.2.7".parse().unwrap()));
        assert!(!trusted.is_trusted("192.0.2.8".parse().unwrap()));
        assert!(!trusted.is_trusted("11.0.0.1".parse().unwrap()));
        let everyone = TrustedNetworks::cidrs(["0.0.0.0/0"]).unwrap();
        assert!(everyone.is_trusted("203.0.113.9".parse().unwrap()));
        assert!(!TrustedNetworks::nobody().is_trusted("127.0.0.1".parse().unwrap()));
        // A network written in IPv4-mapped form matches the IPv4 peers it
        // maps, as a peer in that form matches an IPv4 network.
        let mapped = TrustedNetworks::cidrs(["::ffff:10.0.0.0/104"]).unwrap();
        assert!(mapped.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(mapped.is_trusted("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!mapped.is_trusted("11.0.0.1".parse().unwrap()));
        assert!(TrustedNetworks::cidrs(Vec::<String>::new())
            .unwrap()
            .trusts_nobody());
        for invalid in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(TrustedNetworks::cidrs([invalid]).is_err(), "{invalid}");
        }
    }

    #[test]
    fn private_and_everyone() {
        let private = TrustedNetworks::private();
        let ip = |text: &str| text.parse().unwrap();
        for trusted in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "172.31.255.1",
            "192.168.1.1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(private.is_trusted(ip(trusted)), "{trusted}");
        }
        for public in [
            "172.32.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "fe80::1",
            "203.0.113.9",
        ] {
            assert!(!private.is_trusted(ip(public)), "{public}");
        }
        let everyone = TrustedNetworks::everyone();
        assert!(everyone.is_trusted(ip("203.0.113.9")));
        assert!(everyone.is_trusted(ip("2001:db8::1")));
    }

    #[test]
    fn with_adds_networks_to_any_kind() {
        let more = ["192.0.2.0/24".parse().unwrap()];
        let ip = |text: &str| text.parse().unwrap();
        let nobody = TrustedNetworks::nobody().with(more);
        assert!(nobody.is_trusted(ip("192.0.2.9")));
        let predicate = TrustedNetworks::predicate(|ip| ip.is_loopback()).with(more);
        assert!(predicate.is_trusted(ip("127.0.0.1")));
        assert!(predicate.is_trusted(ip("192.0.2.9")));
        assert!(!predicate.is_trusted(ip("198.51.100.1")));
    }

    proptest! {
        #[test]
        fn cidr_parser_never_panics(text in ".{0,48}") {
            let _ = TrustedNetworks::cidrs([text]);
        }
    }
}
