//! [`HardenConfig`] and its sections, typed: what the
//! file says, read once into the values the layers take. Defaults are the
//! layers' own constants.

use std::time::Duration;

use http::{HeaderName, StatusCode};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::Level;

use super::error::Origin;
use super::problems::ProblemsConfig;
use super::value::{self, keyword_serde, Keyword};
use crate::rate_limit::ProxyHeader;
use crate::serve::ServerSettings;

/// Settings of every layer of the [`Harden`](crate::Harden) preset.
///
/// Build one from [`HardenConfig::default`] and its public fields, or read
/// one ([`HardenConfig::from_toml`], or serde from any format). A
/// configuration read from a file also remembers where each key was
/// written, for the errors of [`Harden::from_config`](crate::Harden::from_config);
/// that is not part of its value (not compared, not serialized).
///
/// ```
/// use tower_harden::{Harden, HardenConfig};
///
/// let mut config = HardenConfig::default();
/// config.input.max_body = 4 * 1024 * 1024;
/// config.problems.map_rejections = true;
/// let harden = Harden::from_config(&config).unwrap();
/// # drop(harden);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HardenConfig {
    /// `[input]`: bounded input.
    pub input: InputConfig,
    /// `[deadline]`: request deadline and slow clients.
    pub deadline: DeadlineConfig,
    /// `[server]`: connection limits of [`serve`](crate::serve()), the
    /// server's own settings. In a file: `header_read_timeout` (default
    /// `"30s"`), `keep_alive_idle_timeout` (`"75s"`), `max_headers` (100,
    /// hyper's own, and above `input.max_headers` so that the input layer
    /// answers with a problem), `max_header_bytes` (`"64KiB"`, above
    /// `input.max_header_bytes` plus `input.max_uri`),
    /// `max_concurrent_streams` (128), `max_connections` (1024),
    /// `drain_timeout` (`"25s"`), `proxy_protocol` (false: read a PROXY
    /// protocol v1/v2 header on each connection from
    /// `trusted_load_balancers`, CIDRs, default none, within
    /// `proxy_header_timeout`, `"5s"`), `min_response_rate` (240 bytes/s, 0 for
    /// none), `min_response_rate_grace` (`"5s"`), `pressure_timeout`
    /// (`"2s"`), `max_connection_age` and `max_requests_per_connection`
    /// (none). A timeout turned off (`None`) has no
    /// spelling in a file and is left out when serialized.
    #[serde(with = "ServerSection")]
    pub server: ServerSettings,
    /// `[rate_limit]`: rate limiting.
    pub rate_limit: RateLimitConfig,
    /// `[observe]`: request ids, logging.
    pub observe: ObserveConfig,
    /// `[overload]`: the limit on requests in flight.
    pub overload: OverloadConfig,
    /// `[problems]`: problem `type` URIs, axum's rejections as problems.
    pub problems: ProblemsConfig,
    #[serde(skip)]
    pub(crate) origin: Origin,
}

/// `[input]`: bounded input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// Largest request body on the wire, in bytes. Default
    /// [`DEFAULT_BODY_LIMIT`](crate::input::DEFAULT_BODY_LIMIT), `"1MiB"`.
    #[serde(with = "value::size")]
    pub max_body: u64,
    /// Largest body after decompression. Default `"1MiB"`.
    #[serde(with = "value::size")]
    pub max_decoded_body: u64,
    /// Largest window a `zstd` frame may ask for (413 beyond). Default
    /// `"8MiB"`, RFC 9659's limit.
    #[serde(with = "value::size")]
    pub max_zstd_window: u64,
    /// Largest body a route may allow with `RouteBodyLimitLayer`; at least
    /// `max_body`. Default: `max_body` (routes may only lower it).
    #[serde(with = "value::option_size", skip_serializing_if = "Option::is_none")]
    pub max_route_body: Option<u64>,
    /// Most header fields. Default 96 (under hyper's 100: see `server.max_headers`).
    pub max_headers: usize,
    /// Most header bytes. Default `"16KiB"`.
    #[serde(with = "value::size")]
    pub max_header_bytes: u64,
    /// Longest request target. Default `"8KiB"`.
    #[serde(with = "value::size")]
    pub max_uri: u64,
}

impl Default for InputConfig {
    fn default() -> Self {
        use crate::input::{
            DEFAULT_BODY_LIMIT, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_FIELDS,
            DEFAULT_MAX_URI_BYTES, DEFAULT_MAX_ZSTD_WINDOW,
        };
        Self {
            max_body: DEFAULT_BODY_LIMIT,
            max_decoded_body: DEFAULT_BODY_LIMIT,
            max_zstd_window: DEFAULT_MAX_ZSTD_WINDOW,
            max_route_body: None,
            max_headers: DEFAULT_MAX_HEADER_FIELDS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES as u64,
            max_uri: DEFAULT_MAX_URI_BYTES as u64,
        }
    }
}

/// `[deadline]`: request deadline and slow clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadlineConfig {
    /// Deadline for the whole request, handler and body read. Default `"10s"`.
    #[serde(with = "value::duration")]
    pub request: Duration,
    /// Status when it expires: a 5xx such as 503 or 504. Default 503.
    #[serde(with = "value::status")]
    pub status: StatusCode,
    /// A request body silent this long is refused with 408. Default `"60s"`.
    #[serde(with = "value::duration")]
    pub body_idle: Duration,
    /// Slowest accepted body rate after the grace period, bytes per second;
    /// 0 turns the check off. Default 240 (Kestrel).
    pub min_body_rate: u64,
    /// Grace period before the rate applies. Default `"5s"`.
    #[serde(with = "value::duration")]
    pub min_body_rate_grace: Duration,
    /// Peers (CIDRs; a bare address is a /32 or /128) whose
    /// `x-request-deadline-ms` may shorten the deadline. Default: none.
    #[serde(with = "value::cidrs")]
    pub trusted_callers: Vec<IpNet>,
}

impl Default for DeadlineConfig {
    fn default() -> Self {
        use crate::deadline::{MinDataRate, DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_REQUEST_DEADLINE};
        Self {
            request: DEFAULT_REQUEST_DEADLINE,
            status: StatusCode::SERVICE_UNAVAILABLE,
            body_idle: DEFAULT_BODY_IDLE_TIMEOUT,
            min_body_rate: MinDataRate::KESTREL.bytes_per_second,
            min_body_rate_grace: MinDataRate::KESTREL.grace,
            trusted_callers: Vec::new(),
        }
    }
}

/// `[server]`: how [`ServerSettings`] are written. The configuration holds
/// the server's own settings type; this is its serde form only.
///
/// A timeout turned off (`None`) has no spelling in a file: it is left
/// out when written, so it reads back as the default.
#[derive(Serialize, Deserialize)]
#[serde(
    remote = "ServerSettings",
    default = "ServerSettings::default",
    deny_unknown_fields
)]
pub(crate) struct ServerSection {
    #[serde(
        with = "value::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    header_read_timeout: Option<Duration>,
    #[serde(
        with = "value::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    keep_alive_idle_timeout: Option<Duration>,
    max_headers: usize,
    #[serde(with = "value::size_usize")]
    max_header_bytes: usize,
    max_concurrent_streams: u32,
    max_connections: usize,
    #[serde(with = "value::duration")]
    drain_timeout: Duration,
    proxy_protocol: bool,
    #[serde(with = "value::cidrs")]
    trusted_load_balancers: Vec<IpNet>,
    #[serde(with = "value::duration")]
    proxy_header_timeout: Duration,
    min_response_rate: u64,
    #[serde(with = "value::duration")]
    min_response_rate_grace: Duration,
    #[serde(
        with = "value::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pressure_timeout: Option<Duration>,
    #[serde(
        with = "value::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    max_connection_age: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_requests_per_connection: Option<u64>,
}

/// `backend`: where the rate limiter keeps its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// `"memory"`: in process, bounded by `max_keys`. The default.
    #[default]
    Memory,
    /// `"redis"`: shared by every instance (feature `redis`).
    Redis,
}

impl Keyword for Backend {
    const KEYWORDS: &'static [(&'static str, Self)] =
        &[("memory", Self::Memory), ("redis", Self::Redis)];
}
keyword_serde!(Backend);

/// `on_store_failure`: what the rate limiter does when its store fails.
///
/// One keyword chooses two settings: the layer's
/// [`StoreFailure`](crate::rate_limit::StoreFailure) (`open` and `closed`
/// are its variants of the same names) and, for `fallback`, the Redis
/// store's [`LocalFallback`](crate::rate_limit::LocalFallback) with the layer
/// failing open behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StoreFailurePolicy {
    /// `"open"`: admit the request. The default.
    #[default]
    Open,
    /// `"closed"`: refuse it with 503.
    Closed,
    /// `"fallback"` (Redis only): decide in process with `fallback_share`
    /// of each quota.
    Fallback,
}

impl Keyword for StoreFailurePolicy {
    const KEYWORDS: &'static [(&'static str, Self)] = &[
        ("open", Self::Open),
        ("closed", Self::Closed),
        ("fallback", Self::Fallback),
    ];
}
keyword_serde!(StoreFailurePolicy);

impl Keyword for ProxyHeader {
    const KEYWORDS: &'static [(&'static str, Self)] = &[
        ("x-forwarded-for", Self::XForwardedFor),
        ("forwarded", Self::Forwarded),
    ];
}
keyword_serde!(ProxyHeader);

/// `[rate_limit]`: keyed rate limiting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `"memory"` or `"redis"`. Default `"memory"`.
    pub backend: Backend,
    /// Redis URL, for `backend = "redis"` with one Redis (`redis://[user:password@]host:port[/db]`).
    /// `backend = "redis"` needs this or `redis_cluster_nodes`, not both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Node URLs of a Redis Cluster, for `backend = "redis"`
    /// (`redis://[user:password@]host:port`; any reachable node is enough,
    /// list several so that one down node does not matter). Instead of
    /// `redis_url`. Default: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redis_cluster_nodes: Vec<String>,
    /// Name of the environment variable holding the secret every instance
    /// hashes keys with, for `backend = "redis"` (required there: instances
    /// must agree on every key's hash, and the secret stays out of the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_secret_env: Option<String>,
    /// Timeout of each Redis call. Default `"50ms"`.
    #[serde(with = "value::duration")]
    pub redis_timeout: Duration,
    /// When the store fails: `"open"` (the default), `"closed"` or
    /// `"fallback"`.
    pub on_store_failure: StoreFailurePolicy,
    /// Share of each quota one instance enforces on its own while Redis is
    /// down, with `on_store_failure = "fallback"`: about 1/instances.
    /// Default 0.5.
    pub fallback_share: f64,
    /// Most keys the in-process store holds. Default
    /// [`DEFAULT_MAX_KEYS`](crate::rate_limit::DEFAULT_MAX_KEYS), 100000.
    pub max_keys: usize,
    /// Proxies (CIDRs; a bare address is a /32 or /128) whose forwarding
    /// headers are believed. Default: none.
    #[serde(with = "value::cidrs")]
    pub trusted_proxies: Vec<IpNet>,
    /// The header trusted proxies write the client into:
    /// `"x-forwarded-for"` (the default) or `"forwarded"` (RFC 7239).
    pub proxy_header: ProxyHeader,
    /// IPv6 clients are grouped by this prefix length. Default 64.
    pub ipv6_prefix: u8,
    /// Log would-be refusals, refuse nothing. Default false.
    pub shadow: bool,
    /// The policies. Default: one, `per-ip`, 50 per second, burst 100.
    pub policies: Vec<PolicyConfig>,
}

/// The timeout of each Redis call: that of
/// [`RedisStore`](crate::rate_limit::RedisStore), which only exists with
/// the `redis` feature (a test checks they agree).
pub(crate) const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// The default `fallback_share`: two instances.
pub(crate) const DEFAULT_FALLBACK_SHARE: f64 = 0.5;
/// The default `ipv6_prefix`: that of `IpGrouping::new()`.
pub(crate) const DEFAULT_IPV6_PREFIX: u8 = 64;

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            redis_url: None,
            redis_cluster_nodes: Vec::new(),
            key_secret_env: None,
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            on_store_failure: StoreFailurePolicy::default(),
            fallback_share: DEFAULT_FALLBACK_SHARE,
            max_keys: crate::rate_limit::DEFAULT_MAX_KEYS,
            trusted_proxies: Vec::new(),
            proxy_header: ProxyHeader::default(),
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            shadow: false,
            policies: vec![PolicyConfig::default()],
        }
    }
}

/// A policy's `key`: what a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyKind {
    /// `"client_ip"`: the client's address, behind trusted proxies. The default.
    #[default]
    ClientIp,
    /// `"peer_ip"`: the connection's peer address.
    PeerIp,
    /// `"global"`: one bucket for every request.
    Global,
    /// `"header:NAME"`: the value of a header (an API key), stored hashed.
    Header(HeaderName),
}

impl KeyKind {
    const NAMES: [&'static str; 4] = ["client_ip", "peer_ip", "global", "header:NAME"];

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let is = |keyword: &str| text.eq_ignore_ascii_case(keyword);
        match text {
            _ if is("client_ip") => Ok(Self::ClientIp),
            _ if is("peer_ip") => Ok(Self::PeerIp),
            _ if is("global") => Ok(Self::Global),
            other => match other
                .get(..7)
                .filter(|prefix| prefix.eq_ignore_ascii_case("header:"))
                .map(|_| &other[7..])
            {
                Some(name) => value::header_name::parse(name)
                    .map(Self::Header)
                    .map_err(|reason| {
                        format!("`header:` must be followed by a header name: {reason}")
                    }),
                None => Err(value::unknown_value(text, Self::NAMES)),
            },
        }
    }
}

impl Serialize for KeyKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::ClientIp => serializer.serialize_str("client_ip"),
            Self::PeerIp => serializer.serialize_str("peer_ip"),
            Self::Global => serializer.serialize_str("global"),
            Self::Header(name) => serializer.collect_str(&format_args!("header:{name}")),
        }
    }
}

impl<'de> Deserialize<'de> for KeyKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        value::from_text(deserializer, Self::parse)
    }
}

/// One `[[rate_limit.policies]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name, shown in headers and problems; unique among the policies, also
    /// once sanitized for headers (see [`Policy::new`](crate::rate_limit::Policy::new)).
    /// Default `"per-ip"`.
    pub name: String,
    /// What a key is. Default `"client_ip"`.
    pub key: KeyKind,
    /// Requests per period. Default
    /// [`DEFAULT_RATE_PER_SECOND`](crate::rate_limit::DEFAULT_RATE_PER_SECOND), 50.
    pub quota: u32,
    /// The period. Default `"1s"`.
    #[serde(with = "value::duration")]
    pub period: Duration,
    /// Requests allowed at once. Default
    /// [`DEFAULT_BURST`](crate::rate_limit::DEFAULT_BURST), 100.
    pub burst: u32,
    /// This policy's IPv6 prefix (1 to 128), for `client_ip` and `peer_ip`
    /// keys, in place of `rate_limit.ipv6_prefix`. A second policy on a
    /// wider prefix (`48`: one site, or a 6to4 /48 that derives from one
    /// IPv4 address) keeps one allocation's 65,536 /64s from taking the key
    /// space or a quota each. Default: `rate_limit.ipv6_prefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix: Option<u8>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        use crate::rate_limit::{Policy, TrustedProxies, DEFAULT_BURST, DEFAULT_RATE_PER_SECOND};
        Self {
            name: Policy::per_client_ip(TrustedProxies::new())
                .name()
                .to_owned(),
            key: KeyKind::ClientIp,
            quota: DEFAULT_RATE_PER_SECOND,
            period: Duration::from_secs(1),
            burst: DEFAULT_BURST,
            ipv6_prefix: None,
        }
    }
}

/// `[observe]`: request ids and logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObserveConfig {
    /// The request-id header. Default `"x-request-id"`.
    #[serde(with = "value::header_name")]
    pub request_id_header: HeaderName,
    /// Accept a client's request id when it is short and plain. Default true.
    pub trust_inbound_request_id: bool,
    /// Level of the outcome event of 1xx-3xx responses. Default `"info"`.
    #[serde(with = "value::level")]
    pub success_level: Level,
    /// Level for 4xx. Default `"warn"`.
    #[serde(with = "value::level")]
    pub client_error_level: Level,
    /// Level for 5xx. Default `"error"`.
    #[serde(with = "value::level")]
    pub server_error_level: Level,
    /// Request headers logged (beside the ones always logged), their
    /// values redacted as error text is. A header whose name contains
    /// `auth`, `token`, `secret`, `key`, `session`, `cookie`, `password`,
    /// `credential`, `jwt`, `oidc`, `saml`, `assertion` or `signature` is
    /// never logged (see
    /// [`ObserveLayer::log_header`](crate::observe::ObserveLayer::log_header)).
    /// Default: none.
    #[serde(with = "value::header_names")]
    pub log_headers: Vec<HeaderName>,
    /// The request's span also carries method, route, path and client
    /// address and records the status, as OpenTelemetry's HTTP server span
    /// does (for span exporters such as `tracing-opentelemetry`); the
    /// outcome event then leaves them to the span. Default false: see
    /// [`ObserveLayer::full_span`](crate::observe::ObserveLayer::full_span).
    pub full_span: bool,
    /// Peers (CIDRs; a bare address is a /32 or /128) whose request id,
    /// `traceparent`, `tracestate` and `baggage` are believed; from others
    /// a request gets a new id and a new, unsampled trace. Default:
    /// loopback and the private ranges (`127.0.0.0/8`, `::1/128`,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7`);
    /// `[]` trusts nobody, `["0.0.0.0/0", "::/0"]` everyone. See
    /// [`ObserveLayer::trust_inbound_context`](crate::observe::ObserveLayer::trust_inbound_context).
    #[serde(with = "value::cidrs")]
    pub trusted_context: Vec<IpNet>,
    /// Outcome lines of failed requests (refusals, sheds, panics, errors)
    /// written per second for each `error.type`; the next line written
    /// carries `suppressed`, the count left out. `0` writes every line.
    /// Default 20: see
    /// [`ObserveLayer::failure_lines_per_second`](crate::observe::ObserveLayer::failure_lines_per_second).
    pub failure_lines_per_second: u32,
    /// `[observe.redact]`: secrets removed from logged error text and header
    /// values.
    pub redact: RedactConfig,
}

/// `[observe.redact]`: what [`Redactor`](crate::telemetry::Redactor) removes
/// from error chains, error and panic messages and logged header values
/// before they are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactConfig {
    /// The built-in rules (URL userinfo, key-value secrets, `Bearer` and
    /// `Basic` credentials) and the ones below. Default true.
    pub enabled: bool,
    /// More key names whose values are secrets (a key containing one, in
    /// any case). Default: none.
    pub keys: Vec<String>,
    /// Regular expressions whose matches are replaced by `[REDACTED]`
    /// (`regex-lite` syntax). Default: none.
    pub patterns: Vec<String>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            keys: Vec::new(),
            patterns: Vec::new(),
        }
    }
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            request_id_header: crate::context::REQUEST_ID_HEADER,
            trust_inbound_request_id: true,
            success_level: Level::INFO,
            client_error_level: Level::WARN,
            server_error_level: Level::ERROR,
            log_headers: Vec::new(),
            full_span: false,
            trusted_context: crate::context::PRIVATE_NETWORKS
                .iter()
                .map(|net| net.parse().expect("the private networks are valid CIDRs"))
                .collect(),
            failure_lines_per_second:
                crate::observe::ObserveLayer::DEFAULT_FAILURE_LINES_PER_SECOND,
            redact: RedactConfig::default(),
        }
    }
}

/// `[overload]`: the limit on requests in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverloadConfig {
    /// Limit the requests in flight at all. Default true.
    pub enabled: bool,
    /// A fixed limit instead of the adaptive one. Default: none (adaptive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_limit: Option<usize>,
    /// The adaptive limit at start. Default 20.
    pub initial_limit: usize,
    /// The adaptive limit's floor. Default 8.
    pub min_limit: usize,
    /// The adaptive limit's ceiling. Default 1000.
    pub max_limit: usize,
    /// `Retry-After` of a shed request. Default `"1s"`.
    #[serde(with = "value::duration")]
    pub retry_after: Duration,
    /// Path prefixes whose durations do not feed the adaptive limit (event
    /// streams, downloads). Default: none.
    pub long_lived: Vec<String>,
    /// Shares of the limit reserved for path prefixes. Default: none.
    pub reserved: Vec<ReservedConfig>,
    /// At most this many requests in flight per client (the key of the
    /// first rate-limit policy), counted per instance; over it, a 429
    /// `too-many-in-flight` problem. Default: none (no limit per client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_key_limit: Option<usize>,
    /// Requests that may wait for a slot when the limit is full, newest
    /// served first; 0: none, the excess is shed at once. Default 256.
    pub queue_limit: usize,
    /// The longest a request waits in that queue for a slot (the most the
    /// queue adds to a success's latency); `"0s"`: no queue. Default
    /// `"10ms"`.
    #[serde(with = "value::duration")]
    pub queue_timeout: Duration,
    /// When a queued request that got no slot is answered with its 503,
    /// from when it joined (at least `queue_timeout`): held, so that
    /// clients that resend at once do not spin. Default `"100ms"`.
    #[serde(with = "value::duration")]
    pub queue_hold: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        let adaptive = crate::overload::AdaptiveLimit::default();
        Self {
            enabled: true,
            fixed_limit: None,
            initial_limit: adaptive.initial(),
            min_limit: adaptive.min(),
            max_limit: adaptive.max(),
            retry_after: crate::overload::DEFAULT_RETRY_AFTER,
            long_lived: Vec::new(),
            reserved: Vec::new(),
            per_key_limit: None,
            queue_limit: crate::overload::DEFAULT_QUEUE_LIMIT,
            queue_timeout: crate::overload::DEFAULT_QUEUE_TIMEOUT,
            queue_hold: crate::overload::DEFAULT_QUEUE_HOLD,
        }
    }
}

/// One `[[overload.reserved]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservedConfig {
    /// The path prefix (`"/healthz"` covers `/healthz` and `/healthz/db`).
    pub path: String,
    /// The share of the limit reserved, above 0 and at most 0.5.
    pub share: f64,
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "redis")]
    #[test]
    fn the_redis_timeout_default_is_the_stores() {
        assert_eq!(
            super::DEFAULT_REDIS_TIMEOUT,
            crate::rate_limit::redis::DEFAULT_TIMEOUT
        );
    }
}
