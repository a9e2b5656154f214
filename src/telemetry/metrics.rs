//! Request metrics through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`); without the feature every function here is a no-op.
//!
//! Every label value comes from a closed set (method names, route templates,
//! status codes, error types), never from request text, so the number of
//! series stays bounded whatever clients send.
//!
//! The `metrics` facade leaves histogram buckets to the exporter: give
//! `http.server.request.duration` the boundaries OpenTelemetry's HTTP
//! semantic conventions advise, [`REQUEST_DURATION_BUCKETS`] (seconds), as
//! `metrics-exporter-prometheus`'s
//! `set_buckets_for_metric(Matcher::Full(names::REQUEST_DURATION.into()), REQUEST_DURATION_BUCKETS)`
//! does.

/// The explicit bucket boundaries, in seconds, OpenTelemetry's HTTP semantic
/// conventions advise for `http.server.request.duration`.
pub const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Names of the metrics this crate records.
pub mod names {
    /// Histogram, seconds: `http.server.request.duration` (OpenTelemetry).
    pub const REQUEST_DURATION: &str = "http.server.request.duration";
    /// Counter: requests answered.
    pub const REQUESTS: &str = "http.server.requests";
    /// Counter: requests that ended in an error (a refusal, a 5xx, a panic).
    pub const ERRORS: &str = "http.server.errors";
    /// Counter: requests that went through the rate limiter, by
    /// [`RATE_LIMITING_RESULT`] (`acquired`, `rejected`, `shadow_rejected`,
    /// `store_failed`): the shape of OpenTelemetry's only rate-limiting
    /// precedent, ASP.NET Core's `aspnetcore.rate_limiting.requests`.
    pub const RATE_LIMITING_REQUESTS: &str = "tower_harden.rate_limiting.requests";
    /// The attribute of [`RATE_LIMITING_REQUESTS`]: what the rate limiter
    /// decided (as ASP.NET Core's `aspnetcore.rate_limiting.result`).
    pub const RATE_LIMITING_RESULT: &str = "tower_harden.rate_limiting.result";
    /// Counter: keys the in-process store evicted (idle, or by the overflow
    /// policy).
    pub const RATE_LIMITING_EVICTIONS: &str = "tower_harden.rate_limiting.evictions";
    /// Counter: Redis store events, by [`RATE_LIMITING_STORE_EVENT`]
    /// (`call_failed`: one failed or timed-out call; `degraded`,
    /// `recovered`: a switch of the circuit).
    pub const RATE_LIMITING_STORE_EVENTS: &str = "tower_harden.rate_limiting.store.events";
    /// The attribute of [`RATE_LIMITING_STORE_EVENTS`].
    pub const RATE_LIMITING_STORE_EVENT: &str = "tower_harden.rate_limiting.store.event";
    /// Counter: requests that met the in-flight limit, by
    /// [`OVERLOAD_RESULT`] (`acquired`, `rejected`) and, for `rejected`,
    /// [`OVERLOAD_PARTITION`] (`default`, `reserved`): the shape of
    /// [`RATE_LIMITING_REQUESTS`].
    pub const OVERLOAD_REQUESTS: &str = "tower_harden.overload.requests";
    /// The attribute of [`OVERLOAD_REQUESTS`]: whether the request got a
    /// slot.
    pub const OVERLOAD_RESULT: &str = "tower_harden.overload.result";
    /// The attribute of [`OVERLOAD_REQUESTS`]: whose share a shed request
    /// asked for.
    pub const OVERLOAD_PARTITION: &str = "tower_harden.overload.partition";
    /// Gauge: the in-flight limit now (the adaptive limit, at each update).
    pub const OVERLOAD_LIMIT: &str = "tower_harden.overload.limit";
}

/// The labels of one finished request.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct RequestLabels<'a> {
    pub(crate) method: &'static str,
    pub(crate) route: &'a str,
    pub(crate) status: Option<u16>,
    pub(crate) error_type: Option<&'static str>,
}

/// Records one finished request.
#[cfg(feature = "metrics")]
pub(crate) fn record_request(labels: &RequestLabels<'_>, seconds: f64) {
    let mut all = vec![
        ("http.request.method", labels.method.to_owned()),
        ("http.route", labels.route.to_owned()),
        (
            "http.response.status_code",
            labels
                .status
                .map_or_else(|| "_none".to_owned(), |s| s.to_string()),
        ),
    ];
    if let Some(error_type) = labels.error_type {
        all.push(("error.type", error_type.to_owned()));
    }
    metrics::histogram!(names::REQUEST_DURATION, &all).record(seconds);
    metrics::counter!(names::REQUESTS, &all).increment(1);
    if labels.error_type.is_some() {
        metrics::counter!(names::ERRORS, &all).increment(1);
    }
}

/// Records one finished request (the `metrics` feature is off).
#[cfg(not(feature = "metrics"))]
pub(crate) fn record_request(_labels: &RequestLabels<'_>, _seconds: f64) {}

/// Adds `by` to a counter whose labels are all fixed names chosen by the
/// code (an outcome, a kind), for the other layers' metrics: rate-limit
/// decisions, evictions, store failures.
#[cfg(feature = "metrics")]
pub(crate) fn increment(name: &'static str, labels: &[(&'static str, &'static str)], by: u64) {
    metrics::counter!(name, labels).increment(by);
}

/// Adds to a counter (the `metrics` feature is off).
#[cfg(not(feature = "metrics"))]
pub(crate) fn increment(_name: &'static str, _labels: &[(&'static str, &'static str)], _by: u64) {}

/// Sets a gauge without labels (the in-flight limit).
#[cfg(feature = "metrics")]
pub(crate) fn gauge(name: &'static str, value: f64) {
    metrics::gauge!(name).set(value);
}

/// Sets a gauge (the `metrics` feature is off).
#[cfg(not(feature = "metrics"))]
pub(crate) fn gauge(_name: &'static str, _value: f64) {}
