//! The key a client is counted by.

/// The key the first rate-limit policy counted a request against: a keyed
/// hash (no address or API key in clear), the same for every request of one
/// client. The rate limiter puts it into the request's extensions when a
/// later layer asks for it
/// ([`RateLimitLayer::publish_client_key`](crate::rate_limit::RateLimitLayer::publish_client_key));
/// the in-flight limit counts requests per client with it
/// ([`InFlightLimitLayer::per_key`](crate::overload::InFlightLimitLayer::per_key)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(pub [u8; 16]);
