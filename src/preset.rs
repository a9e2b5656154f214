//! [`Harden`]: the whole stack, in its right order, from one config.
//!
//! # The order, outermost first, and why
//!
//! 1. **Observe** ([`ObserveLayer`]): request id (validated or generated),
//!    trace context, one span and one outcome event, panics caught. It is
//!    outermost so that *every* refusal below it is answered with the request
//!    id in header and body, logged once inside the request's span, and timed
//!    from the first moment; a panic anywhere below becomes a 500 logged with
//!    its request id, never a dropped connection.
//! 2. **Head limits** ([`HeadLimitLayer`]): URI length, header count and
//!    bytes. The cheapest checks there are, on what is already in memory;
//!    they run before anything allocates per-request state or reads a byte
//!    of body.
//! 3. **Body limit** ([`BodyLimitLayer`]): a declared `Content-Length` over
//!    the limit is refused here, before rate limiting, so an oversized
//!    request costs no quota and no store round trip (with Redis, the flood
//!    of oversized requests never reaches Redis), and the honest client that
//!    sent it learns its real problem (413, not 429). Streamed bodies are
//!    counted from here on as they arrive.
//! 4. **Rate limit** ([`RateLimitLayer`]): after the cheap structural
//!    checks, before anything costly (timers, decompression, the handler).
//!    Its store call has its own small budget, so it sits outside the
//!    request deadline: a slow store is bounded by its own timeout and
//!    failure policy, not by the handler's budget.
//! 5. **Deadline** ([`RequestDeadlineLayer`]): enforces the request's
//!    budget over the handler and its reading of the body; slow clients get
//!    408, slow handlers 503. The budget counts from the request's arrival,
//!    which the observe layer records ([`Arrival`](crate::context::Arrival)),
//!    so what the layers above spent (a store round trip) comes out of a
//!    caller's `x-request-deadline-ms` instead of being added to it. Its body
//!    timer sees the wire bytes, so the minimum data rate measures the
//!    client, not the decompressor.
//! 6. **Decompression with a decoded limit** ([`DecompressLayer`]):
//!    innermost, closest to the handler that reads the body, so decoded
//!    bytes are counted against their own limit and the deadline covers the
//!    inflation.
//! 7. The user's service.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_harden::Harden;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "ok" }))
//!     .layer(Harden::new().into_layer());
//! ```

use http::{HeaderName, StatusCode};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_layer::{Layer, Stack};

use crate::config::{validated, ConfigError, HardenConfig};
use crate::context::TrustedNetworks;
use crate::deadline::{RequestDeadline, RequestDeadlineLayer};
use crate::input::{
    BodyLimit, BodyLimitLayer, Decompress, DecompressLayer, HeadLimit, HeadLimitLayer,
};
use crate::observe::{Observe, ObserveLayer};
use crate::rate_limit::{
    AnyStore, IpGrouping, KeySource, MemoryStore, Policy, ProxyHeader, Quota, RateLimit,
    RateLimitLayer, StoreFailure, TrustedProxies,
};
use crate::serve::{Serve, ServerSettings};

/// The whole hardened stack. Build it from code ([`Harden::new`] and its
/// builder methods, which start from the defaults) or from a
/// [`HardenConfig`] ([`Harden::from_config`]), then apply
/// [`Harden::into_layer`] to a router or a `ServiceBuilder`.
///
/// See the [module documentation](crate::preset) for the order of the layers and why.
#[derive(Debug, Clone)]
pub struct Harden {
    observe: ObserveLayer,
    head: HeadLimitLayer,
    body: BodyLimitLayer,
    rate_limit: RateLimitLayer<AnyStore>,
    deadline: RequestDeadlineLayer,
    decompress: DecompressLayer,
    server: ServerSettings,
}

impl Default for Harden {
    fn default() -> Self {
        Self::new()
    }
}

impl Harden {
    /// The stack with every default (the values of
    /// [`HardenConfig::default`], listed in `examples/harden.toml`).
    pub fn new() -> Self {
        Self::from_config(&HardenConfig::default()).expect("the default configuration is valid")
    }

    /// The stack described by `config`, every value checked.
    pub fn from_config(config: &HardenConfig) -> Result<Self, ConfigError> {
        let input = &config.input;
        let max_body = validated::size(&input.max_body, "input.max_body")?;
        let max_route_body = match &input.max_route_body {
            Some(size) => validated::size(size, "input.max_route_body")?,
            None => max_body,
        };
        if max_route_body < max_body {
            return Err(ConfigError::new(
                "input.max_route_body",
                "must be at least input.max_body (routes may always lower their limit)",
            ));
        }
        let head = HeadLimitLayer::new()
            .max_headers(validated::nonzero(input.max_headers, "input.max_headers")?)
            .max_header_bytes(
                validated::size(&input.max_header_bytes, "input.max_header_bytes")? as usize,
            )
            .max_uri_bytes(validated::size(&input.max_uri, "input.max_uri")? as usize);
        let body = BodyLimitLayer::new(max_body).max_route_limit(max_route_body);
        let decompress = DecompressLayer::new(validated::size(
            &input.max_decoded_body,
            "input.max_decoded_body",
        )?);

        let deadline = Self::deadline_from(config)?;
        let rate_limit = Self::rate_limit_from(config)?;
        let observe = Self::observe_from(config)?;
        let server = Self::server_from(config)?;
        if server.max_headers <= input.max_headers {
            return Err(ConfigError::new(
                "server.max_headers",
                "must exceed input.max_headers (the default is 100, hyper's own): hyper would refuse first, with a bare 431",
            ));
        }
        let head_bytes = validated::size(&input.max_header_bytes, "input.max_header_bytes")?
            .saturating_add(validated::size(&input.max_uri, "input.max_uri")?);
        if (server.max_header_bytes as u64) <= head_bytes {
            return Err(ConfigError::new(
                "server.max_header_bytes",
                "must exceed input.max_header_bytes + input.max_uri: hyper would refuse first, with a bare 431",
            ));
        }
        Ok(Self {
            observe,
            head,
            body,
            rate_limit,
            deadline,
            decompress,
            server,
        })
    }

    fn deadline_from(config: &HardenConfig) -> Result<RequestDeadlineLayer, ConfigError> {
        let deadline = &config.deadline;
        let status = StatusCode::from_u16(deadline.status)
            .ok()
            .filter(|status| status.is_server_error())
            .ok_or_else(|| {
                ConfigError::new("deadline.status", "must be a 5xx status such as 503 or 504")
            })?;
        let mut layer =
            RequestDeadlineLayer::new(validated::duration(&deadline.request, "deadline.request")?)
                .status(status)
                .body_idle_timeout(validated::duration(
                    &deadline.body_idle,
                    "deadline.body_idle",
                )?);
        layer = if deadline.min_body_rate == 0 {
            layer.no_min_body_rate()
        } else {
            layer.min_body_rate(
                deadline.min_body_rate,
                validated::duration(
                    &deadline.min_body_rate_grace,
                    "deadline.min_body_rate_grace",
                )?,
            )
        };
        if !deadline.trusted_callers.is_empty() {
            let networks = validated::cidrs(&deadline.trusted_callers, "deadline.trusted_callers")?;
            layer = layer.trust_inbound(TrustedNetworks::networks(networks));
        }
        Ok(layer)
    }

    fn rate_limit_from(config: &HardenConfig) -> Result<RateLimitLayer<AnyStore>, ConfigError> {
        let rate = &config.rate_limit;
        let max_keys = validated::nonzero(rate.max_keys, "rate_limit.max_keys")?;
        let failure = match rate.on_store_failure.trim() {
            "open" => StoreFailure::Allow,
            "closed" => StoreFailure::Refuse,
            "fallback" if rate.backend.trim() == "redis" => StoreFailure::Allow,
            "fallback" => {
                return Err(ConfigError::new(
                    "rate_limit.on_store_failure",
                    "`fallback` needs `backend = \"redis\"`",
                ))
            }
            other => {
                return Err(ConfigError::new(
                    "rate_limit.on_store_failure",
                    format!(
                        "unknown policy `{}` (expected `open`, `closed` or `fallback`)",
                        crate::telemetry::escape(other, 64)
                    ),
                ))
            }
        };
        let mut layer = match rate.backend.trim() {
            "memory" => RateLimitLayer::new(AnyStore::from(MemoryStore::new(max_keys))),
            "redis" => Self::redis_store(config, max_keys)?,
            other => {
                return Err(ConfigError::new(
                    "rate_limit.backend",
                    format!(
                        "unknown backend `{}` (expected `memory` or `redis`)",
                        crate::telemetry::escape(other, 64)
                    ),
                ))
            }
        };
        layer = layer.on_store_failure(failure);
        if rate.ipv6_prefix == 0 || rate.ipv6_prefix > 128 {
            return Err(ConfigError::new(
                "rate_limit.ipv6_prefix",
                "must be between 1 and 128",
            ));
        }
        let grouping = IpGrouping::new().ipv6_prefix(rate.ipv6_prefix);
        let header = match rate.proxy_header.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => ProxyHeader::XForwardedFor,
            "forwarded" => ProxyHeader::Forwarded,
            _ => {
                return Err(ConfigError::new(
                    "rate_limit.proxy_header",
                    "expected `x-forwarded-for` or `forwarded`",
                ))
            }
        };
        let proxies = TrustedProxies::new()
            .header(header)
            .trust_all(validated::cidrs(
                &rate.trusted_proxies,
                "rate_limit.trusted_proxies",
            )?);
        layer = layer.shadow(rate.shadow);
        for (index, policy) in rate.policies.iter().enumerate() {
            let key = |field: &str| format!("rate_limit.policies[{index}].{field}");
            if policy.name.trim().is_empty() {
                return Err(ConfigError::new(key("name"), "must not be empty"));
            }
            let quota_count = validated::nonzero(policy.quota, &key("quota"))?;
            let burst = validated::nonzero(policy.burst, &key("burst"))?;
            let period = validated::duration(&policy.period, &key("period"))?;
            let quota = Quota::new(quota_count, period)
                .and_then(|quota| quota.with_burst(burst))
                .map_err(|error| ConfigError::new(key("quota"), error.to_string()))?;
            let source = match policy.key.trim() {
                "client_ip" => KeySource::ClientIp(proxies.clone(), grouping),
                "peer_ip" => KeySource::PeerIp(grouping),
                "global" => KeySource::Global,
                other => match other.strip_prefix("header:") {
                    Some(name) => {
                        KeySource::Header(HeaderName::try_from(name.trim()).map_err(|_| {
                            ConfigError::new(
                                key("key"),
                                "`header:` must be followed by a valid header name",
                            )
                        })?)
                    }
                    None => {
                        return Err(ConfigError::new(
                            key("key"),
                            "expected `client_ip`, `peer_ip`, `global` or `header:NAME`",
                        ))
                    }
                },
            };
            layer = layer.policy(Policy::new(&policy.name, quota, source));
        }
        Ok(layer)
    }

    #[cfg(not(feature = "redis"))]
    fn redis_store(_: &HardenConfig, _: usize) -> Result<RateLimitLayer<AnyStore>, ConfigError> {
        Err(ConfigError::new(
            "rate_limit.backend",
            "the `redis` backend needs the crate's `redis` feature",
        ))
    }

    #[cfg(feature = "redis")]
    fn redis_store(
        config: &HardenConfig,
        max_keys: usize,
    ) -> Result<RateLimitLayer<AnyStore>, ConfigError> {
        use crate::rate_limit::{KeyHasher, LocalFallback, RedisStore};
        let rate = &config.rate_limit;
        let url = rate.redis_url.as_deref().map(str::trim).unwrap_or_default();
        if url.is_empty() {
            return Err(ConfigError::new(
                "rate_limit.redis_url",
                "required with `backend = \"redis\"`",
            ));
        }
        let timeout = validated::duration(&rate.redis_timeout, "rate_limit.redis_timeout")?;
        let secret_env = rate
            .key_secret_env
            .as_deref()
            .map(str::trim)
            .unwrap_or_default();
        if secret_env.is_empty() {
            return Err(ConfigError::new(
                "rate_limit.key_secret_env",
                "required with `backend = \"redis\"`: every instance must hash keys with one secret",
            ));
        }
        let secret = std::env::var(secret_env)
            .ok()
            .filter(|secret| !secret.is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    "rate_limit.key_secret_env",
                    "the environment variable it names is not set",
                )
            })?;
        let mut builder = RedisStore::builder().timeout(timeout);
        if rate.on_store_failure.trim() == "fallback" {
            let share = rate.fallback_share;
            if !(share > 0.0 && share <= 1.0) {
                return Err(ConfigError::new(
                    "rate_limit.fallback_share",
                    "must be in (0, 1]",
                ));
            }
            builder = builder.fallback(LocalFallback::new(share, max_keys));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::new(
                "rate_limit.backend",
                "the `redis` backend must be built within a Tokio runtime",
            ));
        }
        let store = builder
            .connect_lazy(url)
            .map_err(|error| ConfigError::new("rate_limit.redis_url", error.to_string()))?;
        Ok(RateLimitLayer::new(AnyStore::from(store))
            .key_hasher(KeyHasher::from_secret(secret.as_bytes())))
    }

    fn observe_from(config: &HardenConfig) -> Result<ObserveLayer, ConfigError> {
        let observe = &config.observe;
        let header = HeaderName::try_from(observe.request_id_header.trim()).map_err(|_| {
            ConfigError::new("observe.request_id_header", "not a valid header name")
        })?;
        let mut layer = ObserveLayer::new()
            .request_id_header(header)
            .trust_inbound_request_id(observe.trust_inbound_request_id)
            .full_span(observe.full_span)
            .levels(
                validated::level(&observe.success_level, "observe.success_level")?,
                validated::level(&observe.client_error_level, "observe.client_error_level")?,
                validated::level(&observe.server_error_level, "observe.server_error_level")?,
            );
        for (index, name) in observe.log_headers.iter().enumerate() {
            let name = HeaderName::try_from(name.trim()).map_err(|_| {
                ConfigError::new(
                    format!("observe.log_headers[{index}]"),
                    "not a valid header name",
                )
            })?;
            layer = layer.log_header(name);
        }
        Ok(layer)
    }

    fn server_from(config: &HardenConfig) -> Result<ServerSettings, ConfigError> {
        let server = &config.server;
        Ok(ServerSettings {
            header_read_timeout: Some(validated::duration(
                &server.header_read_timeout,
                "server.header_read_timeout",
            )?),
            keep_alive_idle_timeout: Some(validated::duration(
                &server.keep_alive_idle_timeout,
                "server.keep_alive_idle_timeout",
            )?),
            max_headers: validated::nonzero(server.max_headers, "server.max_headers")?,
            max_header_bytes: validated::size(&server.max_header_bytes, "server.max_header_bytes")?
                as usize,
            max_concurrent_streams: validated::nonzero(
                server.max_concurrent_streams,
                "server.max_concurrent_streams",
            )?,
            max_connections: validated::nonzero(server.max_connections, "server.max_connections")?,
            drain_timeout: validated::duration(&server.drain_timeout, "server.drain_timeout")?,
        })
    }

    /// Replaces the observe layer (request ids, logging).
    pub fn observe(mut self, layer: ObserveLayer) -> Self {
        self.observe = layer;
        self
    }

    /// Replaces the head limits. Default: [`HeadLimitLayer::new`].
    pub fn head_limits(mut self, layer: HeadLimitLayer) -> Self {
        self.head = layer;
        self
    }

    /// Replaces the body limit. Default: 1 MiB.
    pub fn body_limit(mut self, layer: BodyLimitLayer) -> Self {
        self.body = layer;
        self
    }

    /// Replaces the rate limiter. Default: `per-ip`, 50 per second, burst
    /// 100, in process, 100,000 keys. Any store goes through [`AnyStore`]:
    /// `RateLimitLayer::new(AnyStore::from(MemoryStore::new(10_000)))`.
    pub fn rate_limit(mut self, layer: RateLimitLayer<AnyStore>) -> Self {
        self.rate_limit = layer;
        self
    }

    /// Replaces the request deadline. Default: 10 s.
    pub fn deadline(mut self, layer: RequestDeadlineLayer) -> Self {
        self.deadline = layer;
        self
    }

    /// Replaces the decoded-body limit. Default: 1 MiB.
    pub fn decompress(mut self, layer: DecompressLayer) -> Self {
        self.decompress = layer;
        self
    }

    /// The rate limiter, for its store's counters.
    pub fn rate_limiter(&self) -> &RateLimitLayer<AnyStore> {
        &self.rate_limit
    }

    /// The layer, for `Router::layer` or `ServiceBuilder::layer`.
    pub fn into_layer(self) -> HardenLayer {
        HardenLayer { harden: self }
    }

    /// Serves `service` with the connection settings of this stack's
    /// configuration (`[server]`): header-read timeout, keep-alive, header
    /// and HTTP/2 limits, connection cap, drain timeout.
    pub fn serve<S: 'static>(
        &self,
        listener: TcpListener,
        service: S,
    ) -> Serve<S, std::future::Pending<()>> {
        crate::serve(listener, service).settings(self.server)
    }
}

/// The service type the preset wraps around `S`, outermost first.
pub type Hardened<S> =
    Observe<HeadLimit<BodyLimit<RateLimit<RequestDeadline<Decompress<S>>, AnyStore>>>>;

/// [`Harden`] as a [`Layer`].
#[derive(Debug, Clone)]
pub struct HardenLayer {
    harden: Harden,
}

impl<S> Layer<S> for HardenLayer {
    type Service = Hardened<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let harden = &self.harden;
        let stack: Stack<_, _> = ServiceBuilder::new()
            .layer(harden.observe.clone())
            .layer(harden.head)
            .layer(harden.body)
            .layer(harden.rate_limit.clone())
            .layer(harden.deadline.clone())
            .layer(harden.decompress)
            .into_inner();
        stack.layer(inner)
    }
}
