//! Rate-limit keys: who a request counts against.
//!
//! A [`KeySource`] finds the key material of a request (a peer IP, a client
//! IP behind trusted proxies, an API key header, an authenticated principal,
//! or whatever a closure returns) and a [`KeyHasher`] turns it into a
//! [`KeyHash`]: a keyed hash (SipHash-1-3 under a per-process random key for
//! the in-process store, BLAKE3 under a shared secret for stores shared
//! between processes), so raw keys (API keys above all) are never stored or
//! logged.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName, Method, Uri};
use siphasher::sip128::{Hasher128, SipHasher13};

use super::client_ip::{IpGrouping, TrustedProxies};
use super::store::KeyHash;

/// An authenticated principal (user id, client id) put into the request's
/// extensions by an authentication layer that runs before the rate limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub Arc<str>);

/// What a key source sees of a request: its head, never its body.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The target.
    pub uri: &'a Uri,
    /// The header fields.
    pub headers: &'a HeaderMap,
    /// The extensions (peer address, principal, ...).
    pub extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of `request`.
    pub fn of<B>(request: &'a http::Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// The TCP peer's address: [`PeerAddr`](crate::context::PeerAddr), or axum's
    /// `ConnectInfo<SocketAddr>`.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        crate::context::peer_addr(self.extensions)
    }
}

/// Turns key material into a [`KeyHash`] with a keyed hash.
///
/// Keyed, so that nobody without the secret can compute a key's hash, aim
/// collisions at the store's hash tables, or recover an API key from a log.
/// Two constructions, one per use:
///
/// - [`KeyHasher::from_secret`]: keyed BLAKE3 over a secret you give. Its
///   output is stable across processes and versions of this crate, which
///   processes sharing a network store (Redis) need: they must agree on
///   every key's hash. (std's SipHash is not guaranteed stable across Rust
///   versions, so it cannot serve here.)
/// - [`KeyHasher::default`] and [`KeyHasher::random`]: SipHash-1-3 with a
///   128-bit output under a random 128-bit key drawn once per process. The
///   hashes never leave the process, so they need no stability, only the
///   hash-flooding resistance SipHash was designed for (it is what std's
///   `HashMap` uses), and it is cheaper than BLAKE3 on the short material
///   of a key (an IP address): right for the in-process store.
#[derive(Clone)]
pub struct KeyHasher {
    keying: Keying,
    // The two constant keys, hashed once.
    global: KeyHash,
    anonymous: KeyHash,
}

#[derive(Clone)]
enum Keying {
    /// Keyed BLAKE3: stable, for a secret shared between processes.
    Shared([u8; 32]),
    /// SipHash-1-3-128 under this process's random key, copied per hash.
    Process(SipHasher13),
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl Default for KeyHasher {
    /// The process's hasher: a random secret drawn once per process, so
    /// every layer of the process hashes alike.
    fn default() -> Self {
        static PROCESS: std::sync::OnceLock<KeyHasher> = std::sync::OnceLock::new();
        PROCESS.get_or_init(Self::random).clone()
    }
}

/// Domain-separation tags: an IP and a header value with the same bytes
/// never share a key.
mod tag {
    pub(super) const IP: u8 = 1;
    pub(super) const HEADER: u8 = 2;
    pub(super) const PRINCIPAL: u8 = 3;
    pub(super) const CUSTOM: u8 = 4;
    pub(super) const GLOBAL: u8 = 5;
    pub(super) const ANONYMOUS: u8 = 6;
}

impl KeyHasher {
    /// A hasher with a random key drawn from the operating system, for
    /// hashes that stay in this process (SipHash-1-3-128, see the type's
    /// documentation). Falls back to a key derived from the process's
    /// hash-map seeds if the OS source fails (it does not on supported
    /// platforms).
    pub fn random() -> Self {
        let mut key = [0u8; 16];
        if getrandom::fill(&mut key).is_err() {
            use std::hash::{BuildHasher, Hasher};
            for chunk in key.chunks_mut(8) {
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_usize(chunk.as_ptr() as usize);
                chunk.copy_from_slice(&hasher.finish().to_le_bytes());
            }
        }
        Self::with_keying(Keying::Process(SipHasher13::new_with_key(&key)))
    }

    fn with_keying(keying: Keying) -> Self {
        let mut hasher = Self {
            keying,
            global: KeyHash([0; 16]),
            anonymous: KeyHash([0; 16]),
        };
        hasher.global = hasher.hash(tag::GLOBAL, b"");
        hasher.anonymous = hasher.hash(tag::ANONYMOUS, b"");
        hasher
    }

    /// A hasher whose secret derives from `secret` (any length; use at least
    /// 16 random bytes), with keyed BLAKE3. The same secret gives the same
    /// hashes in every process and every version of this crate.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self::with_keying(Keying::Shared(blake3::derive_key(
            "tower-harden 2026 rate-limit key hashing v1",
            secret,
        )))
    }

    fn hash(&self, tag: u8, material: &[u8]) -> KeyHash {
        match &self.keying {
            Keying::Shared(key) => Self::blake3(key, tag, material),
            Keying::Process(keyed) => {
                let mut hasher = *keyed;
                std::hash::Hasher::write_u8(&mut hasher, tag);
                std::hash::Hasher::write(&mut hasher, material);
                KeyHash(hasher.finish128().as_bytes())
            }
        }
    }

    fn blake3(key: &[u8; 32], tag: u8, material: &[u8]) -> KeyHash {
        let mut out = [0u8; 16];
        // Short material (IPs, most API keys) fits one BLAKE3 block: the
        // one-shot function skips the incremental hasher's setup, about
        // half the cost. Both give the same bytes.
        let mut block = [0u8; 64];
        if let Some(room) = block.get_mut(1..=material.len()) {
            room.copy_from_slice(material);
            block[0] = tag;
            let hash = blake3::keyed_hash(key, &block[..=material.len()]);
            out.copy_from_slice(&hash.as_bytes()[..16]);
        } else {
            let mut hasher = blake3::Hasher::new_keyed(key);
            hasher.update(&[tag]);
            hasher.update(material);
            hasher.finalize_xof().fill(&mut out);
        }
        KeyHash(out)
    }

    /// The hash of an IP address (already grouped by prefix, see
    /// [`IpGrouping`]).
    pub fn ip(&self, ip: IpAddr) -> KeyHash {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        self.hash(tag::IP, &bytes)
    }

    /// The hash of a header value (an API key).
    pub fn header_value(&self, value: &[u8]) -> KeyHash {
        self.hash(tag::HEADER, value)
    }

    /// The hash of a principal.
    pub fn principal(&self, principal: &str) -> KeyHash {
        self.hash(tag::PRINCIPAL, principal.as_bytes())
    }

    /// The hash of custom key material.
    pub fn custom(&self, material: &[u8]) -> KeyHash {
        self.hash(tag::CUSTOM, material)
    }

    /// The one key of a global policy.
    pub fn global(&self) -> KeyHash {
        self.global
    }

    /// The shared key of requests that have no usable key
    /// ([`MissingKey::SharedBucket`](super::MissingKey::SharedBucket)).
    pub fn anonymous(&self) -> KeyHash {
        self.anonymous
    }
}

/// A closure that finds custom key material in a request head.
pub type CustomKeyFn = Arc<dyn Fn(&RequestHead<'_>) -> Option<Vec<u8>> + Send + Sync>;

/// Where a policy finds each request's key.
///
/// ```
/// use http::HeaderName;
/// use tower_harden::rate_limit::{KeySource, Policy, Quota, TrustedProxies};
///
/// let quota = Quota::per_second(10).unwrap();
/// // The client behind the load balancer at 10.0.0.0/8.
/// let per_client = KeySource::client_ip(TrustedProxies::none().trust("10.0.0.0/8".parse().unwrap()));
/// // An API key, hashed before it is stored or logged.
/// let per_api_key = KeySource::header(HeaderName::from_static("x-api-key"));
/// // The tenant in the path, `/tenants/{id}/...`.
/// let per_tenant = KeySource::custom(|head| {
///     let mut segments = head.uri.path().split('/');
///     (segments.nth(1) == Some("tenants")).then(|| segments.next())?.map(|id| id.as_bytes().to_vec())
/// });
/// let policies = [
///     Policy::new("per-client", quota, per_client),
///     Policy::new("per-api-key", quota, per_api_key),
///     Policy::new("per-tenant", quota, per_tenant),
/// ];
/// assert_eq!(policies[2].name(), "per-tenant");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum KeySource {
    /// One key for every request: a global limit.
    Global,
    /// The TCP peer's address, grouped by prefix.
    PeerIp(IpGrouping),
    /// The client's address behind trusted proxies, grouped by prefix.
    ClientIp(TrustedProxies, IpGrouping),
    /// The value of a header (an API key); hashed, never stored raw.
    /// A missing or empty header is no usable key.
    Header(HeaderName),
    /// The [`Principal`] in the request's extensions.
    Principal,
    /// Whatever a closure returns; `None` is no usable key.
    Custom(CustomKeyFn),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("Global"),
            Self::PeerIp(grouping) => f.debug_tuple("PeerIp").field(grouping).finish(),
            Self::ClientIp(proxies, grouping) => f
                .debug_tuple("ClientIp")
                .field(proxies)
                .field(grouping)
                .finish(),
            Self::Header(name) => f.debug_tuple("Header").field(name).finish(),
            Self::Principal => f.write_str("Principal"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl KeySource {
    /// Whether keys come from the connection's peer address.
    pub(super) fn needs_peer(&self) -> bool {
        matches!(self, Self::PeerIp(_) | Self::ClientIp(..))
    }

    /// Keys by the TCP peer, IPv6 grouped by /64.
    pub fn peer_ip() -> Self {
        Self::PeerIp(IpGrouping::default())
    }

    /// Keys by the client behind `proxies`, IPv6 grouped by /64.
    pub fn client_ip(proxies: TrustedProxies) -> Self {
        Self::ClientIp(proxies, IpGrouping::default())
    }

    /// Keys by a header's value.
    pub fn header(name: HeaderName) -> Self {
        Self::Header(name)
    }

    /// Keys by whatever `key` returns.
    pub fn custom<F>(key: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        Self::Custom(Arc::new(key))
    }

    /// The key of a request, or `None` if it has no usable key.
    pub fn key(&self, head: &RequestHead<'_>, hasher: &KeyHasher) -> Option<KeyHash> {
        match self {
            Self::Global => Some(hasher.global()),
            Self::PeerIp(grouping) => {
                let peer = head.peer_addr()?;
                Some(hasher.ip(grouping.group(peer.ip())))
            }
            Self::ClientIp(proxies, grouping) => {
                let peer = head.peer_addr()?;
                // No trusted proxy (the default): the client is the peer.
                let client = if proxies.trusts_nobody() {
                    peer.ip()
                } else {
                    proxies.client_ip(peer.ip(), head.headers).ok()?
                };
                Some(hasher.ip(grouping.group(client)))
            }
            Self::Header(name) => {
                let value = head.headers.get(name)?;
                (!value.is_empty()).then(|| hasher.header_value(value.as_bytes()))
            }
            Self::Principal => {
                let Principal(principal) = head.extensions.get::<Principal>()?;
                (!principal.is_empty()).then(|| hasher.principal(principal))
            }
            Self::Custom(key) => key(head).map(|material| hasher.custom(&material)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn process_hash_is_siphash_of_tag_then_material() {
        let keyed = SipHasher13::new_with_key(&[7; 16]);
        let hasher = KeyHasher::with_keying(Keying::Process(keyed));
        for material in [&b""[..], b"abc", &[9; 63], &[9; 64], &[9; 200]] {
            let mut expected = keyed;
            std::hash::Hasher::write_u8(&mut expected, tag::HEADER);
            std::hash::Hasher::write(&mut expected, material);
            assert_eq!(
                hasher.header_value(material),
                KeyHash(expected.finish128().as_bytes()),
                "{} bytes",
                material.len()
            );
        }
    }

    #[test]
    fn hashes_are_stable_and_separated() {
        let a = KeyHasher::from_secret(b"secret");
        let b = KeyHasher::from_secret(b"secret");
        assert_eq!(a.header_value(b"k"), b.header_value(b"k"));
        assert_ne!(a.header_value(b"k"), a.custom(b"k"));
        assert_ne!(
            a.header_value(b"k"),
            KeyHasher::from_secret(b"other").header_value(b"k")
        );
        assert_ne!(KeyHasher::random().global(), KeyHasher::random().global());
        // Both paths (one block, incremental) agree.
        let Keying::Shared(key) = &a.keying else {
            panic!("from_secret hashes with BLAKE3")
        };
        let long = vec![7u8; 200];
        let mut incremental = blake3::Hasher::new_keyed(key);
        incremental.update(&[tag::HEADER]);
        incremental.update(&long);
        assert_eq!(
            &a.header_value(&long).0[..],
            &incremental.finalize().as_bytes()[..16]
        );
        let mut short = blake3::Hasher::new_keyed(key);
        short.update(&[tag::HEADER]);
        short.update(b"k");
        assert_eq!(
            &a.header_value(b"k").0[..],
            &short.finalize().as_bytes()[..16]
        );
        // Pinned: a change of this value breaks every shared store.
        assert_eq!(
            KeyHasher::from_secret(b"secret")
                .header_value(b"api-key")
                .to_hex(),
            "e260e5276c1c166c4a83f3589d4f7585"
        );
    }

    #[test]
    fn process_hashes_are_consistent_separated_and_secret() {
        let process = KeyHasher::random();
        assert!(matches!(process.keying, Keying::Process(_)));
        let again = process.clone();
        let v4 = ip("203.0.113.9");
        assert_eq!(process.ip(v4), again.ip(v4));
        assert_ne!(process.ip(v4), process.ip(ip("203.0.113.10")));
        // Domain separation: the same bytes under another tag differ.
        assert_ne!(process.header_value(b"k"), process.custom(b"k"));
        assert_ne!(process.header_value(b"k"), process.principal("k"));
        assert_ne!(process.global(), process.anonymous());
        // Material boundaries count: "ab" is not "a" then "b" elsewhere.
        assert_ne!(process.header_value(b"ab"), process.header_value(b"a"));
        // Long material hashes too, and differs from its prefix.
        let long = vec![7u8; 200];
        assert_ne!(
            process.header_value(&long),
            process.header_value(&long[..199])
        );
        // Another process (another random key) gives other hashes.
        assert_ne!(KeyHasher::random().ip(v4), process.ip(v4));
        // Every process-wide default hasher is the same one.
        assert_eq!(KeyHasher::default().ip(v4), KeyHasher::default().ip(v4));
        // And unlike the shared secret's hash.
        assert_ne!(KeyHasher::from_secret(b"secret").ip(v4), process.ip(v4));
    }
}
