//! The connection settings as one value, and their defaults.

use std::time::Duration;

use ipnet::IpNet;

/// Default [header-read timeout](super::Serve::header_read_timeout): 30 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [keep-alive idle timeout](super::Serve::keep_alive_idle_timeout): 75 s.
pub const DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default [most header fields hyper's parser reads](super::Serve::max_headers):
/// 100, hyper's own default, above
/// [`input::DEFAULT_MAX_HEADER_FIELDS`](crate::input::DEFAULT_MAX_HEADER_FIELDS)
/// (96), so that the head-limit layer answers an over-limit request with a
/// problem (hyper's own refusal is a bare 431 that no layer sees).
///
/// Any other value costs every request: hyper then builds its header arrays
/// element by element, on the heap above 100, instead of using its inline
/// ones (`benches/README.md` has the measurement).
pub const DEFAULT_PARSER_MAX_HEADERS: usize = 100;
/// Default [max header bytes](super::Serve::max_header_bytes): 64 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default [max concurrent HTTP/2 streams](super::Serve::max_concurrent_streams): 128.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Default [max connections](super::Serve::max_connections): 1024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default [drain timeout](super::Serve::drain_timeout): 25 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
use super::proxy_protocol::DEFAULT_PROXY_HEADER_TIMEOUT;
/// Default [minimum response data rate](super::Serve::min_response_rate):
/// 240 bytes per second, Kestrel's `MinResponseDataRate`.
pub const DEFAULT_MIN_RESPONSE_RATE: u64 = 240;
/// Default [grace of the minimum response data rate](super::Serve::min_response_rate):
/// 5 s, Kestrel's.
pub const DEFAULT_MIN_RESPONSE_RATE_GRACE: Duration = Duration::from_secs(5);
/// Default [timeout under pressure](super::Serve::pressure_timeout): 2 s.
pub const DEFAULT_PRESSURE_TIMEOUT: Duration = Duration::from_secs(2);

/// The shortest window the response rate is judged over.
const MIN_RATE_GRACE: Duration = Duration::from_millis(10);

/// hyper's smallest allowed HTTP/1 read buffer.
const MIN_HEADER_BYTES: usize = 8192;

/// The connection settings of [`serve()`](super::serve()), as one value: what
/// the preset's `[server]` configuration becomes, and what
/// [`Serve::settings`](super::Serve::settings) takes. Each field is described
/// at the [`Serve`](super::Serve) method of the same name.
///
/// ```
/// use std::time::Duration;
/// use tower_harden::serve::ServerSettings;
///
/// let mut settings = ServerSettings::default();
/// settings.max_connections = 256;
/// settings.header_read_timeout = Some(Duration::from_secs(10));
/// # drop(settings);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerSettings {
    /// See [`Serve::header_read_timeout`](super::Serve::header_read_timeout).
    pub header_read_timeout: Option<Duration>,
    /// See [`Serve::keep_alive_idle_timeout`](super::Serve::keep_alive_idle_timeout).
    pub keep_alive_idle_timeout: Option<Duration>,
    /// See [`Serve::max_headers`](super::Serve::max_headers).
    pub max_headers: usize,
    /// See [`Serve::max_header_bytes`](super::Serve::max_header_bytes).
    pub max_header_bytes: usize,
    /// See [`Serve::max_concurrent_streams`](super::Serve::max_concurrent_streams).
    pub max_concurrent_streams: u32,
    /// See [`Serve::max_connections`](super::Serve::max_connections).
    pub max_connections: usize,
    /// See [`Serve::drain_timeout`](super::Serve::drain_timeout).
    pub drain_timeout: Duration,
    /// See [`Serve::proxy_protocol`](super::Serve::proxy_protocol): off
    /// unless true.
    pub proxy_protocol: bool,
    /// The peers whose PROXY headers are read when `proxy_protocol` is on.
    pub trusted_load_balancers: Vec<IpNet>,
    /// See [`ProxyProtocolListener::header_timeout`](super::ProxyProtocolListener::header_timeout).
    pub proxy_header_timeout: Duration,
    /// See [`Serve::min_response_rate`](super::Serve::min_response_rate):
    /// bytes per second, 0 for none.
    pub min_response_rate: u64,
    /// See [`Serve::min_response_rate`](super::Serve::min_response_rate).
    pub min_response_rate_grace: Duration,
    /// See [`Serve::pressure_timeout`](super::Serve::pressure_timeout).
    pub pressure_timeout: Option<Duration>,
    /// See [`Serve::max_connection_age`](super::Serve::max_connection_age).
    pub max_connection_age: Option<Duration>,
    /// See [`Serve::max_requests_per_connection`](super::Serve::max_requests_per_connection).
    pub max_requests_per_connection: Option<u64>,
}

impl ServerSettings {
    /// The settings as the server applies them: values below what hyper or
    /// the accept loop can take are raised to their least.
    pub(super) fn bounded(mut self) -> Self {
        self.max_header_bytes = self.max_header_bytes.max(MIN_HEADER_BYTES);
        self.max_connections = self.max_connections.clamp(1, u32::MAX as usize);
        // A zero grace would judge the rate over no time at all.
        self.min_response_rate_grace = self.min_response_rate_grace.max(MIN_RATE_GRACE);
        self
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
            keep_alive_idle_timeout: Some(DEFAULT_KEEP_ALIVE_IDLE_TIMEOUT),
            max_headers: DEFAULT_PARSER_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            proxy_protocol: false,
            trusted_load_balancers: Vec::new(),
            proxy_header_timeout: DEFAULT_PROXY_HEADER_TIMEOUT,
            min_response_rate: DEFAULT_MIN_RESPONSE_RATE,
            min_response_rate_grace: DEFAULT_MIN_RESPONSE_RATE_GRACE,
            pressure_timeout: Some(DEFAULT_PRESSURE_TIMEOUT),
            max_connection_age: None,
            max_requests_per_connection: None,
        }
    }
}
