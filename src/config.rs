//! [`HardenConfig`]: the whole stack's settings, from TOML or anything serde
//! reads, validated when the stack is built.
//!
//! Durations are strings in [humantime] form (`"10s"`, `"250ms"`, `"1m 30s"`);
//! sizes are bytes as an integer or a string with a unit (`"1MiB"`, `"16 KiB"`,
//! `"2MB"`). Every field has a default that is safe in production (the
//! defaults are the values in `examples/harden.toml`, and
//! `HardenConfig::default()`); unknown keys are refused, never ignored.
//!
//! Building the stack ([`Harden::from_config`](crate::Harden::from_config))
//! checks every value and fails with a [`ConfigError`] naming the key and
//! why: a zero quota, a burst of zero, a limit of zero, an unknown backend, a
//! malformed CIDR or duration. Nothing panics and nothing falls back to a
//! default silently.
//!
//! ```
//! use tower_harden::HardenConfig;
//!
//! let config = HardenConfig::from_toml(r#"
//!     [input]
//!     max_body = "4MiB"
//!
//!     [deadline]
//!     request = "2s"
//!
//!     [[rate_limit.policies]]
//!     name = "per-ip"
//!     key = "client_ip"
//!     quota = 10
//!     period = "1s"
//!     burst = 20
//! "#).unwrap();
//! let harden = tower_harden::Harden::from_config(&config).unwrap();
//! # drop(harden);
//!
//! let bad = HardenConfig::from_toml("[[rate_limit.policies]]\nname = \"x\"\nburst = 0\n").unwrap();
//! let error = tower_harden::Harden::from_config(&bad).unwrap_err();
//! assert_eq!(error.key(), "rate_limit.policies[0].burst");
//! ```
//!
//! [humantime]: https://docs.rs/humantime

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A size in bytes: an integer, or a string with a unit (`"1MiB"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// Bytes.
    Bytes(u64),
    /// Text with a unit, parsed when the stack is built.
    Text(String),
}

impl Size {
    fn parse(&self, key: &str) -> Result<u64, ConfigError> {
        match self {
            Self::Bytes(bytes) => Ok(*bytes),
            Self::Text(text) => text
                .trim()
                .parse::<bytesize::ByteSize>()
                .map(|size| size.as_u64())
                .map_err(|error| ConfigError::new(key, format!("`{text}` is not a size: {error}"))),
        }
    }

    fn parse_nonzero(&self, key: &str) -> Result<u64, ConfigError> {
        match self.parse(key)? {
            0 => Err(ConfigError::new(key, "must be greater than zero")),
            bytes => Ok(bytes),
        }
    }
}

impl From<&str> for Size {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

fn parse_duration(text: &str, key: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim())
        .map_err(|error| ConfigError::new(key, format!("`{text}` is not a duration: {error}")))
}

/// The longest duration any setting takes: a year. Longer values are
/// mistakes (a unit typed wrong), and would overflow clocks.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

fn parse_nonzero_duration(text: &str, key: &str) -> Result<Duration, ConfigError> {
    match parse_duration(text, key)? {
        Duration::ZERO => Err(ConfigError::new(key, "must be greater than zero")),
        duration if duration > MAX_DURATION => Err(ConfigError::new(key, "must be at most a year")),
        duration => Ok(duration),
    }
}

/// A configuration value that is wrong, with the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    key: String,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The key, as a path: `rate_limit.policies[0].burst`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Why the value was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Settings of every layer of the [`Harden`](crate::Harden) preset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HardenConfig {
    /// Bounded input.
    pub input: InputConfig,
    /// Request deadline and slow clients.
    pub deadline: DeadlineConfig,
    /// Connection limits of [`serve`](crate::serve()).
    pub server: ServerConfig,
    /// Rate limiting.
    pub rate_limit: RateLimitConfig,
    /// Request ids, logging.
    pub observe: ObserveConfig,
}

impl HardenConfig {
    /// Reads a configuration from TOML text. Unknown keys and values of the
    /// wrong type are refused with an error naming the key.
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| {
            let key = error
                .span()
                .map(|span| key_at(text, span.start))
                .unwrap_or_default();
            ConfigError::new(key, error.message().trim().to_owned())
        })
    }

    /// Reads a TOML file; see [`HardenConfig::from_toml`].
    #[cfg(feature = "toml")]
    pub fn from_toml_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::new(path.display().to_string(), error.to_string()))?;
        Self::from_toml(&text)
    }
}

/// The dotted key of the TOML line holding byte `offset`: the last table
/// header before it, then the key left of `=` on its line.
#[cfg(feature = "toml")]
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let key = line.split_once('=').map_or(line, |(key, _)| key).trim();
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|header| header.trim_matches(|c| c == '[' || c == ']').trim());
    match table {
        Some(table) if !key.starts_with('[') => format!("{table}.{key}"),
        _ => key.to_owned(),
    }
}

/// `[input]`: bounded input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// Largest request body on the wire. Default `"1MiB"`.
    pub max_body: Size,
    /// Largest body after decompression. Default `"1MiB"`.
    pub max_decoded_body: Size,
    /// Largest body a route may allow with `RouteBodyLimitLayer`; at least
    /// `max_body`. Default: `max_body` (routes may only lower it).
    pub max_route_body: Option<Size>,
    /// Most header fields. Default 96 (under hyper's 100: see `server.max_headers`).
    pub max_headers: usize,
    /// Most header bytes. Default `"16KiB"`.
    pub max_header_bytes: Size,
    /// Longest request target. Default `"8KiB"`.
    pub max_uri: Size,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            max_body: "1MiB".into(),
            max_decoded_body: "1MiB".into(),
            max_route_body: None,
            max_headers: crate::input::DEFAULT_MAX_HEADER_FIELDS,
            max_header_bytes: "16KiB".into(),
            max_uri: "8KiB".into(),
        }
    }
}

/// `[deadline]`: request deadline and slow clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadlineConfig {
    /// Deadline for the whole request, handler and body read. Default `"10s"`.
    pub request: String,
    /// Status when it expires: 503 or 504. Default 503.
    pub status: u16,
    /// A request body silent this long is refused with 408. Default `"60s"`.
    pub body_idle: String,
    /// Slowest accepted body rate after the grace period, bytes per second;
    /// 0 turns the check off. Default 240 (Kestrel).
    pub min_body_rate: u64,
    /// Grace period before the rate applies. Default `"5s"`.
    pub min_body_rate_grace: String,
    /// Peers (CIDRs) whose `x-request-deadline-ms` may shorten the deadline.
    /// Default: none.
    pub trusted_callers: Vec<String>,
}

impl Default for DeadlineConfig {
    fn default() -> Self {
        Self {
            request: "10s".into(),
            status: 503,
            body_idle: "60s".into(),
            min_body_rate: 240,
            min_body_rate_grace: "5s".into(),
            trusted_callers: Vec::new(),
        }
    }
}

/// `[server]`: connection limits of [`serve`](crate::serve()).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Time a client has to send a request head. Default `"30s"`.
    pub header_read_timeout: String,
    /// Idle time before a keep-alive connection is closed. Default `"75s"`.
    pub keep_alive_idle_timeout: String,
    /// Most header fields hyper reads at all. Default 100, hyper's own (any
    /// other value slows hyper's parse of every request): more than
    /// `input.max_headers`, so that the input layer answers with a problem
    /// (hyper's own refusal is a bare 431). Must exceed `input.max_headers`.
    pub max_headers: usize,
    /// Largest request head hyper buffers. Default `"64KiB"`. Must exceed
    /// `input.max_header_bytes` plus `input.max_uri`, for the same reason.
    pub max_header_bytes: Size,
    /// HTTP/2 streams per connection. Default 128.
    pub max_concurrent_streams: u32,
    /// Connections served at once; more wait. Default 1024.
    pub max_connections: usize,
    /// Time in-flight requests get to finish on shutdown. Default `"25s"`.
    pub drain_timeout: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: "30s".into(),
            keep_alive_idle_timeout: "75s".into(),
            max_headers: crate::serve::DEFAULT_PARSER_MAX_HEADERS,
            max_header_bytes: "64KiB".into(),
            max_concurrent_streams: crate::serve::DEFAULT_MAX_CONCURRENT_STREAMS,
            max_connections: crate::serve::DEFAULT_MAX_CONNECTIONS,
            drain_timeout: "25s".into(),
        }
    }
}

/// `[rate_limit]`: keyed rate limiting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `"memory"` (in-process, bounded by `max_keys`) or `"redis"`.
    /// Default `"memory"`.
    pub backend: String,
    /// Redis URL, for `backend = "redis"` (required there).
    pub redis_url: Option<String>,
    /// Name of the environment variable holding the secret every instance
    /// hashes keys with, for `backend = "redis"` (required there: instances
    /// must agree on every key's hash, and the secret stays out of the file).
    pub key_secret_env: Option<String>,
    /// Timeout of each Redis call. Default `"50ms"`.
    pub redis_timeout: String,
    /// When the store fails: `"open"` (admit, the default), `"closed"`
    /// (503), or `"fallback"` (Redis only: decide in process with
    /// `fallback_share` of each quota).
    pub on_store_failure: String,
    /// Share of each quota one instance enforces on its own while Redis is
    /// down, with `on_store_failure = "fallback"`: about 1/instances.
    /// Default 0.5.
    pub fallback_share: f64,
    /// Most keys the in-process store holds. Default 100000.
    pub max_keys: usize,
    /// Proxies (CIDRs) whose forwarding headers are believed. Default: none.
    pub trusted_proxies: Vec<String>,
    /// The header trusted proxies write the client into:
    /// `"x-forwarded-for"` (the default) or `"forwarded"` (RFC 7239).
    pub proxy_header: String,
    /// IPv6 clients are grouped by this prefix length. Default 64.
    pub ipv6_prefix: u8,
    /// Log would-be refusals, refuse nothing. Default false.
    pub shadow: bool,
    /// The policies. Default: one, `per-ip`, 50 per second, burst 100.
    pub policies: Vec<PolicyConfig>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            backend: "memory".into(),
            redis_url: None,
            key_secret_env: None,
            redis_timeout: "50ms".into(),
            on_store_failure: "open".into(),
            fallback_share: 0.5,
            max_keys: 100_000,
            trusted_proxies: Vec::new(),
            proxy_header: "x-forwarded-for".into(),
            ipv6_prefix: 64,
            shadow: false,
            policies: vec![PolicyConfig::default()],
        }
    }
}

/// One `[[rate_limit.policies]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name, shown in headers and problems. Default `"per-ip"`.
    pub name: String,
    /// What a key is: `"client_ip"` (behind trusted proxies), `"peer_ip"`,
    /// `"global"` (one bucket), or `"header:NAME"` (an API key, stored
    /// hashed). Default `"client_ip"`.
    pub key: String,
    /// Requests per period. Default 50.
    pub quota: u32,
    /// The period. Default `"1s"`.
    pub period: String,
    /// Requests allowed at once. Default 100.
    pub burst: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            name: "per-ip".into(),
            key: "client_ip".into(),
            quota: 50,
            period: "1s".into(),
            burst: 100,
        }
    }
}

/// `[observe]`: request ids and logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObserveConfig {
    /// The request-id header. Default `"x-request-id"`.
    pub request_id_header: String,
    /// Accept a client's request id when it is short and plain. Default true.
    pub trust_inbound_request_id: bool,
    /// Level of the outcome event of 2xx/3xx responses. Default `"info"`.
    pub success_level: String,
    /// Level for 4xx. Default `"warn"`.
    pub client_error_level: String,
    /// Level for 5xx. Default `"error"`.
    pub server_error_level: String,
    /// Request headers logged (beside the ones always logged). Secrets
    /// (`authorization`, cookies, API keys) are never logged. Default: none.
    pub log_headers: Vec<String>,
    /// The request's span also carries method, route, path and client
    /// address and records the status, as OpenTelemetry's HTTP server span
    /// does (for span exporters such as `tracing-opentelemetry`); the
    /// outcome event then leaves them to the span. Default false: see
    /// [`ObserveLayer::full_span`](crate::observe::ObserveLayer::full_span).
    pub full_span: bool,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            request_id_header: "x-request-id".into(),
            trust_inbound_request_id: true,
            success_level: "info".into(),
            client_error_level: "warn".into(),
            server_error_level: "error".into(),
            log_headers: Vec::new(),
            full_span: false,
        }
    }
}

/// Validated values, for the preset.
pub(crate) mod validated {
    use super::*;

    pub(crate) fn size(value: &Size, key: &str) -> Result<u64, ConfigError> {
        value.parse_nonzero(key)
    }

    pub(crate) fn duration(text: &str, key: &str) -> Result<Duration, ConfigError> {
        parse_nonzero_duration(text, key)
    }

    pub(crate) fn nonzero<T: Default + PartialEq + Copy>(
        value: T,
        key: &str,
    ) -> Result<T, ConfigError> {
        if value == T::default() {
            Err(ConfigError::new(key, "must be greater than zero"))
        } else {
            Ok(value)
        }
    }

    pub(crate) fn level(text: &str, key: &str) -> Result<tracing::Level, ConfigError> {
        text.trim().parse::<tracing::Level>().map_err(|_| {
            ConfigError::new(
                key,
                format!("`{text}` is not a level (trace, debug, info, warn, error)"),
            )
        })
    }

    pub(crate) fn cidrs(values: &[String], key: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        values
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let text = text.trim();
                // A bare address is a /32 or /128.
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::new(
                            format!("{key}[{index}]"),
                            format!("`{text}` is not a CIDR (like 10.0.0.0/8) or an IP address"),
                        )
                    })
            })
            .collect()
    }

    impl fmt::Display for Size {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Size::Bytes(bytes) => write!(f, "{bytes}"),
                Size::Text(text) => f.write_str(text),
            }
        }
    }
}
