//! The one place a [`HardenConfig`] becomes the preset's layers and the
//! server's settings. Every value is checked, every problem reported
//! together with its key path (and, for a file, where it was written).

use std::collections::HashMap;
use std::time::Duration;

use super::{Backend, ConfigErrors, HardenConfig, KeyKind, PolicyConfig, Problems};
use super::{DeadlineConfig, InputConfig, ObserveConfig, StoreFailurePolicy};
use crate::context::TrustedNetworks;
use crate::deadline::RequestDeadlineLayer;
use crate::input::{BodyLimitLayer, DecompressLayer, HeadLimitLayer};
use crate::observe::ObserveLayer;
use crate::overload::{AdaptiveLimit, InFlightLimitLayer, Limit};
use crate::rate_limit::{
    AnyStore, IpGrouping, KeySource, MemoryStore, Policy, Quota, RateLimitLayer, StoreFailure,
    TrustedProxies,
};
use crate::serve::ServerSettings;
use crate::telemetry::Redactor;

/// The preset's layers and server settings, built from one configuration.
#[derive(Debug, Clone)]
pub(crate) struct Stack {
    pub(crate) observe: ObserveLayer,
    pub(crate) head: HeadLimitLayer,
    pub(crate) body: BodyLimitLayer,
    pub(crate) rate_limit: RateLimitLayer<AnyStore>,
    pub(crate) in_flight: InFlightLimitLayer,
    pub(crate) deadline: RequestDeadlineLayer,
    pub(crate) decompress: DecompressLayer,
    pub(crate) server: ServerSettings,
}

/// Builds the stack `config` describes, or reports every problem in it.
pub(crate) fn build(config: &HardenConfig) -> Result<Stack, ConfigErrors> {
    let mut problems = Problems::default();
    let (head, body, decompress) = input(&config.input, &mut problems);
    let deadline = deadline(&config.deadline, &mut problems);
    server(config, &mut problems);
    let mut rate_limit = rate_limit(config, &mut problems);
    if config.overload.per_key_limit.is_some() {
        // The in-flight limit per key counts by the first policy's key.
        if config.rate_limit.policies.is_empty() {
            problems.push(
                "overload.per_key_limit",
                "needs a rate-limit policy: its key is the client's",
            );
        }
        rate_limit = rate_limit.map(|layer| layer.publish_client_key(true));
    }
    let observe = observe(&config.observe, &mut problems)
        .problems_for_rejections(config.problems.map_rejections);
    super::problems::check(&config.problems, &mut problems);
    let in_flight = overload(&config.overload, &mut problems);
    problems.into_result(&config.origin)?;
    super::problems::apply(&config.problems);
    Ok(Stack {
        observe,
        head,
        body,
        rate_limit: rate_limit.expect("built when there are no problems"),
        in_flight,
        deadline,
        decompress,
        server: config.server.clone(),
    })
}

const ZERO: &str = "must be greater than zero";

/// The longest duration any setting takes: a year. Longer values are
/// mistakes (a unit typed wrong), and would overflow clocks.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// `value`, refused when zero.
fn nonzero<T: Default + PartialEq + Copy>(value: T, key: &str, problems: &mut Problems) -> T {
    if value == T::default() {
        problems.push(key, ZERO);
    }
    value
}

/// `value`, refused when zero or longer than a year.
fn duration(value: Duration, key: &str, problems: &mut Problems) -> Duration {
    if value.is_zero() {
        problems.push(key, ZERO);
    } else if value > MAX_DURATION {
        problems.push(key, "must be at most a year");
    }
    value
}

fn input(
    input: &InputConfig,
    problems: &mut Problems,
) -> (HeadLimitLayer, BodyLimitLayer, DecompressLayer) {
    let max_body = nonzero(input.max_body, "input.max_body", problems);
    let max_route_body = match input.max_route_body {
        Some(bytes) => nonzero(bytes, "input.max_route_body", problems),
        None => max_body,
    };
    if max_route_body != 0 && max_route_body < max_body {
        problems.push(
            "input.max_route_body",
            "must be at least input.max_body (routes may always lower their limit)",
        );
    }
    let head = HeadLimitLayer::new()
        .max_headers(nonzero(input.max_headers, "input.max_headers", problems))
        .max_header_bytes(bytes(
            input.max_header_bytes,
            "input.max_header_bytes",
            problems,
        ))
        .max_uri_bytes(bytes(input.max_uri, "input.max_uri", problems));
    let body = BodyLimitLayer::new(max_body).max_route_limit(max_route_body);
    let decoded = nonzero(input.max_decoded_body, "input.max_decoded_body", problems);
    let window = nonzero(input.max_zstd_window, "input.max_zstd_window", problems);
    (
        head,
        body,
        DecompressLayer::new(decoded).max_zstd_window(window),
    )
}

/// A nonzero size held in memory at once.
fn bytes(value: u64, key: &str, problems: &mut Problems) -> usize {
    let value = nonzero(value, key, problems);
    usize::try_from(value).unwrap_or_else(|_| {
        problems.push(key, "too large for this platform");
        0
    })
}

fn deadline(deadline: &DeadlineConfig, problems: &mut Problems) -> RequestDeadlineLayer {
    if !deadline.status.is_server_error() {
        problems.push("deadline.status", "must be a 5xx status such as 503 or 504");
    }
    let request = duration(deadline.request, "deadline.request", problems);
    let idle = duration(deadline.body_idle, "deadline.body_idle", problems);
    let mut layer = RequestDeadlineLayer::new(request)
        .status(deadline.status)
        .body_idle_timeout(idle);
    layer = if deadline.min_body_rate == 0 {
        layer.no_min_body_rate()
    } else {
        let grace = duration(
            deadline.min_body_rate_grace,
            "deadline.min_body_rate_grace",
            problems,
        );
        layer.min_body_rate(deadline.min_body_rate, grace)
    };
    if !deadline.trusted_callers.is_empty() {
        let networks = TrustedNetworks::networks(deadline.trusted_callers.iter().copied());
        layer = layer.trust_inbound(networks);
    }
    layer
}

/// Checks `[server]`, alone and against `[input]`: hyper's own limits must
/// sit above the input layer's, or hyper refuses first with a bare 431.
fn server(config: &HardenConfig, problems: &mut Problems) {
    let server = &config.server;
    let timeouts = [
        (server.header_read_timeout, "server.header_read_timeout"),
        (
            server.keep_alive_idle_timeout,
            "server.keep_alive_idle_timeout",
        ),
        (server.pressure_timeout, "server.pressure_timeout"),
        (server.max_connection_age, "server.max_connection_age"),
    ];
    for (timeout, key) in timeouts {
        if let Some(timeout) = timeout {
            duration(timeout, key, problems);
        }
    }
    nonzero(server.max_headers, "server.max_headers", problems);
    nonzero(server.max_header_bytes, "server.max_header_bytes", problems);
    nonzero(
        server.max_concurrent_streams,
        "server.max_concurrent_streams",
        problems,
    );
    nonzero(server.max_connections, "server.max_connections", problems);
    if let Some(max) = server.max_requests_per_connection {
        nonzero(max, "server.max_requests_per_connection", problems);
    }
    duration(server.drain_timeout, "server.drain_timeout", problems);
    if server.proxy_protocol {
        duration(
            server.proxy_header_timeout,
            "server.proxy_header_timeout",
            problems,
        );
        if server.trusted_load_balancers.is_empty() {
            problems.push(
                "server.proxy_protocol",
                "needs server.trusted_load_balancers, the CIDRs of the load balancers: a PROXY header from any other peer closes its connection",
            );
        }
    }
    if server.min_response_rate > 0 {
        duration(
            server.min_response_rate_grace,
            "server.min_response_rate_grace",
            problems,
        );
    }
    let input = &config.input;
    if server.max_headers != 0 && server.max_headers <= input.max_headers {
        problems.push(
            "server.max_headers",
            "must exceed input.max_headers (the default is 100, hyper's own): hyper would refuse first, with a bare 431",
        );
    }
    let head_bytes = input.max_header_bytes.saturating_add(input.max_uri);
    if server.max_header_bytes != 0 && (server.max_header_bytes as u64) <= head_bytes {
        problems.push(
            "server.max_header_bytes",
            "must exceed input.max_header_bytes + input.max_uri: hyper would refuse first, with a bare 431",
        );
    }
}

/// The rate limiter, or `None` when its store cannot be made.
fn rate_limit(config: &HardenConfig, problems: &mut Problems) -> Option<RateLimitLayer<AnyStore>> {
    let rate = &config.rate_limit;
    let max_keys = nonzero(rate.max_keys, "rate_limit.max_keys", problems);
    let failure = match rate.on_store_failure {
        StoreFailurePolicy::Closed => StoreFailure::Closed,
        StoreFailurePolicy::Fallback if rate.backend != Backend::Redis => {
            problems.push(
                "rate_limit.on_store_failure",
                "`fallback` needs `backend = \"redis\"`",
            );
            StoreFailure::Open
        }
        StoreFailurePolicy::Open | StoreFailurePolicy::Fallback => StoreFailure::Open,
    };
    if rate.ipv6_prefix == 0 || rate.ipv6_prefix > 128 {
        problems.push("rate_limit.ipv6_prefix", "must be between 1 and 128");
    }
    let policies = policies(config, problems);
    let store = match rate.backend {
        Backend::Memory => Some(RateLimitLayer::new(AnyStore::from(MemoryStore::new(
            max_keys,
        )))),
        Backend::Redis => redis::store(config, max_keys, problems),
    };
    let mut layer = store?.on_store_failure(failure).shadow(rate.shadow);
    for policy in policies {
        layer = layer.policy(policy);
    }
    Some(layer)
}

/// The policies, each checked, their names unique also once sanitized.
fn policies(config: &HardenConfig, problems: &mut Problems) -> Vec<Policy> {
    let rate = &config.rate_limit;
    let grouping = IpGrouping::new().ipv6_prefix(rate.ipv6_prefix);
    let proxies = TrustedProxies::new()
        .header(rate.proxy_header)
        .trust_all(rate.trusted_proxies.iter().copied());
    let mut names = HashMap::new();
    let mut policies = Vec::new();
    for (index, policy) in rate.policies.iter().enumerate() {
        let key = |field: &str| format!("rate_limit.policies[{index}].{field}");
        let grouping = match policy.ipv6_prefix {
            Some(prefix) => {
                if prefix == 0 || prefix > 128 {
                    problems.push(key("ipv6_prefix"), "must be between 1 and 128");
                }
                if !matches!(policy.key, KeyKind::ClientIp | KeyKind::PeerIp) {
                    problems.push(
                        key("ipv6_prefix"),
                        "only applies to `client_ip` and `peer_ip` keys",
                    );
                }
                IpGrouping::new().ipv6_prefix(prefix)
            }
            None => grouping,
        };
        let source = match &policy.key {
            KeyKind::ClientIp => KeySource::ClientIp(proxies.clone(), grouping),
            KeyKind::PeerIp => KeySource::PeerIp(grouping),
            KeyKind::Global => KeySource::Global,
            KeyKind::Header(name) => KeySource::Header(name.clone()),
        };
        let quota = quota(policy, &key, problems);
        // Named also when its quota is refused, so that names are checked.
        let any_quota = || Quota::per_second(1).expect("a valid quota");
        let built = Policy::new(&policy.name, quota.unwrap_or_else(any_quota), source);
        unique_name(policy, &built, &key("name"), &mut names, problems);
        if quota.is_some() {
            policies.push(built);
        }
    }
    policies
}

fn quota(
    policy: &PolicyConfig,
    key: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) -> Option<Quota> {
    let count = nonzero(policy.quota, &key("quota"), problems);
    let burst = nonzero(policy.burst, &key("burst"), problems);
    let period = duration(policy.period, &key("period"), problems);
    if count == 0 || burst == 0 || period.is_zero() || period > MAX_DURATION {
        return None;
    }
    match Quota::new(count, period).and_then(|quota| quota.with_burst(burst)) {
        Ok(quota) => Some(quota),
        Err(error) => {
            problems.push(key("quota"), error.to_string());
            None
        }
    }
}

/// Refuses an empty name, and a name another policy has, as written or as
/// the rate limiter writes it in headers (`built.name()`).
fn unique_name(
    policy: &PolicyConfig,
    built: &Policy,
    key: &str,
    seen: &mut HashMap<String, (String, String)>,
    problems: &mut Problems,
) {
    let echo = super::value::echo;
    if policy.name.trim().is_empty() {
        problems.push(key, "must not be empty");
        return;
    }
    match seen.get(built.name()) {
        Some((other, other_key)) if *other == policy.name => problems.push(
            key,
            format!("`{}` is already the name of {other_key}", echo(&policy.name)),
        ),
        Some((other, other_key)) => problems.push(
            key,
            format!(
                "`{}` and `{}` ({other_key}) are both `{}` in headers: names must differ in letters, digits, `-`, `_` or `.`",
                echo(&policy.name),
                echo(other),
                echo(built.name()),
            ),
        ),
        None => {
            seen.insert(built.name().to_owned(), (policy.name.clone(), key.to_owned()));
        }
    }
}

fn observe(observe: &ObserveConfig, problems: &mut Problems) -> ObserveLayer {
    observe.log_headers.iter().fold(
        ObserveLayer::new()
            .request_id_header(observe.request_id_header.clone())
            .trust_inbound_request_id(observe.trust_inbound_request_id)
            .trust_inbound_context(TrustedNetworks::networks(
                observe.trusted_context.iter().copied(),
            ))
            .redactor(redactor(&observe.redact, problems))
            .full_span(observe.full_span)
            .failure_lines_per_second(observe.failure_lines_per_second)
            .levels(
                observe.success_level,
                observe.client_error_level,
                observe.server_error_level,
            ),
        |layer, name| layer.log_header(name.clone()),
    )
}

/// The redactor `[observe.redact]` describes, each pattern checked.
fn redactor(redact: &super::RedactConfig, problems: &mut Problems) -> Redactor {
    if !redact.enabled {
        return Redactor::off();
    }
    let redactor = redact
        .keys
        .iter()
        .fold(Redactor::new(), |redactor, key| redactor.key(key));
    redact
        .patterns
        .iter()
        .enumerate()
        .fold(redactor, |redactor, (index, pattern)| {
            match redactor.clone().pattern(pattern) {
                Ok(redactor) => redactor,
                Err(error) => {
                    problems.push(
                        format!("observe.redact.patterns[{index}]"),
                        error.to_string(),
                    );
                    redactor
                }
            }
        })
}

#[cfg(not(feature = "redis"))]
mod redis {
    use super::*;

    pub(super) fn store(
        _: &HardenConfig,
        _: usize,
        problems: &mut Problems,
    ) -> Option<RateLimitLayer<AnyStore>> {
        problems.push(
            "rate_limit.backend",
            "the `redis` backend needs the crate's `redis` feature",
        );
        None
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use crate::rate_limit::{KeyHasher, LocalFallback, RedisStore};

    /// The Redis store: its URL, timeout, secret and fallback checked.
    pub(super) fn store(
        config: &HardenConfig,
        max_keys: usize,
        problems: &mut Problems,
    ) -> Option<RateLimitLayer<AnyStore>> {
        let rate = &config.rate_limit;
        let before = problems.len();
        let url = rate.redis_url.as_deref().map(str::trim).unwrap_or_default();
        let nodes = &rate.redis_cluster_nodes;
        match (url.is_empty(), nodes.is_empty()) {
            (true, true) => problems.push(
                "rate_limit.redis_url",
                "`backend = \"redis\"` needs `redis_url` (one Redis) or `redis_cluster_nodes` (a Redis Cluster)",
            ),
            (false, false) => problems.push(
                "rate_limit.redis_cluster_nodes",
                "set either `redis_url` (one Redis) or `redis_cluster_nodes` (a Redis Cluster), not both",
            ),
            _ => {}
        }
        for (index, node) in nodes.iter().enumerate() {
            if node.trim().is_empty() {
                problems.push(
                    "rate_limit.redis_cluster_nodes",
                    format!("node {index} is an empty URL"),
                );
            }
        }
        let timeout = duration(rate.redis_timeout, "rate_limit.redis_timeout", problems);
        let secret = secret(rate.key_secret_env.as_deref(), problems);
        let mut builder = RedisStore::builder().timeout(timeout);
        if rate.on_store_failure == StoreFailurePolicy::Fallback {
            let share = rate.fallback_share;
            if !(share > 0.0 && share <= 1.0) {
                problems.push("rate_limit.fallback_share", "must be in (0, 1]");
            }
            builder = builder.fallback(LocalFallback::new(share, max_keys));
        }
        if problems.len() > before {
            return None;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            problems.push(
                "rate_limit.backend",
                "the `redis` backend must be built within a Tokio runtime",
            );
            return None;
        }
        let store = if nodes.is_empty() {
            builder
                .connect_lazy(url)
                .map(AnyStore::from)
                .map_err(|error| {
                    problems.push("rate_limit.redis_url", error.to_string());
                })
        } else {
            builder
                .connect_cluster(nodes)
                .map(AnyStore::from)
                .map_err(|error| {
                    problems.push("rate_limit.redis_cluster_nodes", error.to_string());
                })
        }
        .ok()?;
        let hasher = KeyHasher::from_secret(secret?.as_bytes());
        Some(RateLimitLayer::new(store).key_hasher(hasher))
    }

    /// The key-hashing secret, from the environment variable `name`.
    fn secret(name: Option<&str>, problems: &mut Problems) -> Option<String> {
        let key = "rate_limit.key_secret_env";
        let name = name.map(str::trim).unwrap_or_default();
        if name.is_empty() {
            problems.push(
                key,
                "required with `backend = \"redis\"`: every instance must hash keys with one secret",
            );
            return None;
        }
        let secret = std::env::var(name).ok().filter(|secret| !secret.is_empty());
        if secret.is_none() {
            problems.push(key, "the environment variable it names is not set");
        }
        secret
    }
}

/// `[overload]`: the in-flight limit.
fn overload(config: &super::OverloadConfig, problems: &mut Problems) -> InFlightLimitLayer {
    let limit = if !config.enabled {
        Limit::Unlimited
    } else if let Some(fixed) = config.fixed_limit {
        Limit::Fixed(nonzero(fixed, "overload.fixed_limit", problems))
    } else {
        let min = nonzero(config.min_limit, "overload.min_limit", problems);
        if config.max_limit < min {
            problems.push("overload.max_limit", "must be at least overload.min_limit");
        }
        if config.initial_limit < min || config.initial_limit > config.max_limit {
            problems.push(
                "overload.initial_limit",
                "must be between overload.min_limit and overload.max_limit",
            );
        }
        Limit::Adaptive(
            AdaptiveLimit::default()
                .initial_limit(config.initial_limit)
                .min_limit(min)
                .max_limit(config.max_limit),
        )
    };
    let retry_after = duration(config.retry_after, "overload.retry_after", problems);
    for (key, value) in [
        ("overload.queue_timeout", config.queue_timeout),
        ("overload.queue_hold", config.queue_hold),
    ] {
        if value > Duration::from_secs(60) {
            problems.push(
                key,
                "must be at most 60s (a queue in front of the limit is short)",
            );
        }
    }
    if config.queue_hold < config.queue_timeout {
        problems.push(
            "overload.queue_hold",
            "must be at least overload.queue_timeout",
        );
    }
    let mut layer = InFlightLimitLayer::with_limit(limit)
        .retry_after(retry_after)
        .queue(config.queue_limit, config.queue_timeout)
        .queue_hold(config.queue_hold);
    if let Some(max) = config.per_key_limit {
        layer = layer.per_key(nonzero(max, "overload.per_key_limit", problems));
    }
    let mut total = 0.0;
    for (index, reserved) in config.reserved.iter().enumerate() {
        let key = format!("overload.reserved[{index}]");
        if !reserved.path.starts_with('/') {
            problems.push(format!("{key}.path"), "must start with `/`");
        }
        if !(reserved.share > 0.0 && reserved.share <= 0.5) {
            problems.push(format!("{key}.share"), "must be above 0 and at most 0.5");
        }
        total += reserved.share;
        layer = layer.reserve(reserved.path.as_str(), reserved.share);
    }
    if total > 0.5 {
        problems.push("overload.reserved", "the shares must add up to at most 0.5");
    }
    for (index, path) in config.long_lived.iter().enumerate() {
        if !path.starts_with('/') {
            problems.push(
                format!("overload.long_lived[{index}]"),
                "must start with `/`",
            );
        }
        layer = layer.long_lived(path.as_str());
    }
    layer
}
