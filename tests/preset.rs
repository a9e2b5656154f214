//! The preset: the order of the layers, and the configuration file.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use common::logs::capture_json;
use common::{raw_request, RawResponse};
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tower_harden::{Harden, HardenConfig};

/// Serves `app` through `Harden::serve` (the preset's own server) on a free
/// port.
async fn spawn(harden: &Harden, app: Router) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = harden.serve(listener, app);
    tokio::spawn(async move { server.await.unwrap() });
    addr
}

fn config(toml: &str) -> HardenConfig {
    HardenConfig::from_toml(toml).unwrap()
}

/// A stack whose rate limit is small enough to hit: burst 3, one per minute.
fn small_quota() -> Harden {
    Harden::from_config(&config(
        r#"
        [input]
        max_body = "1KiB"
        max_decoded_body = "1KiB"
        [[rate_limit.policies]]
        name = "per-ip"
        key = "peer_ip"
        quota = 1
        period = "1m"
        burst = 3
        "#,
    ))
    .unwrap()
}

fn app(harden: &Harden, calls: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/upload",
            post(move |body: Bytes| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                body.len().to_string()
            }),
        )
        .route(
            "/panic",
            get(|| async { panic!("boom in a rate-limited route") as &str }),
        )
        .layer(harden.clone().into_layer())
}

fn request_id_in_header_and_body(response: &RawResponse) -> String {
    let header = response
        .header("x-request-id")
        .expect("x-request-id header")
        .to_owned();
    assert_eq!(
        response.json()["request_id"],
        header.as_str(),
        "same id in header and body"
    );
    header
}

#[tokio::test]
async fn refusals_carry_the_request_id_in_header_and_body() {
    let harden = small_quota();
    let addr = spawn(&harden, app(&harden, Arc::default())).await;
    // 413 for a declared oversized body.
    let response = raw_request(
        addr,
        b"POST /upload HTTP/1.1\r\nHost: t\r\nx-request-id: big-1\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 413);
    assert_eq!(request_id_in_header_and_body(&response), "big-1");
    // Use up the burst, then 429.
    for _ in 0..3 {
        assert_eq!(common::get(addr, "/").await.status, 200);
    }
    let response = raw_request(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 429);
    let id = request_id_in_header_and_body(&response);
    assert_eq!(id.len(), 36, "a generated UUIDv7: {id}");
    assert!(response.header("retry-after").is_some());
    assert!(response.header("ratelimit-policy").is_some());
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_it_costs_quota() {
    let harden = small_quota();
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = spawn(&harden, app(&harden, calls.clone())).await;
    // Ten oversized requests: all 413, none reaches the rate limiter...
    for _ in 0..10 {
        let response = raw_request(
            addr,
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(response.status, 413);
        assert!(
            response.header("ratelimit").is_none(),
            "the limiter never saw it"
        );
    }
    // ...so the whole burst of 3 is still there.
    for _ in 0..3 {
        let response = raw_request(
            addr,
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
        .await;
        assert_eq!(response.status, 200);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(common::get(addr, "/").await.status, 429);
}

/// Runs `test` on a current-thread runtime whose server tasks log into this
/// thread's captured subscriber; returns the log.
fn logged(test: impl std::future::Future<Output = ()>) -> common::logs::Captured {
    let (logs, _guard) = capture_json();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(test);
    logs
}

/// The one ERROR event of a log, as text.
fn only_error_event(logs: &common::logs::Captured) -> String {
    let errors: Vec<_> = logs
        .events()
        .into_iter()
        .filter(|event| event["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "one ERROR event: {errors:#?}");
    errors[0].to_string()
}

#[test]
fn a_panic_inside_a_rate_limited_route_is_logged_with_its_request_id() {
    // A current-thread runtime: the server's tasks log into this thread's
    // captured subscriber.
    let logs = logged(async {
        let harden = small_quota();
        let addr = spawn(&harden, app(&harden, Arc::default())).await;
        let response = raw_request(
            addr,
            b"GET /panic HTTP/1.1\r\nHost: t\r\nx-request-id: panic-7\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(response.status, 500);
        assert_eq!(request_id_in_header_and_body(&response), "panic-7");
        // The route is rate limited (the panic consumed one of the burst
        // of 3), and the server keeps serving.
        assert_eq!(common::get(addr, "/").await.status, 200);
        assert_eq!(common::get(addr, "/").await.status, 200);
        assert_eq!(common::get(addr, "/").await.status, 429);
    });
    let text = only_error_event(&logs);
    assert!(text.contains("panic-7"), "{text}");
    assert!(text.contains("boom in a rate-limited route"), "{text}");
}

#[tokio::test]
async fn with_the_default_server_settings_a_header_flood_gets_our_problem() {
    let harden = Harden::new();
    let addr = spawn(&harden, app(&harden, Arc::default())).await;
    // 98 fields: over the layer's 96, under hyper's 100.
    let mut request = String::from("GET / HTTP/1.1\r\nHost: t\r\nx-request-id: flood-1\r\n");
    for i in 0..96 {
        request.push_str(&format!("x-h{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let response = raw_request(addr, request.as_bytes()).await;
    assert_eq!(response.status, 431);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(request_id_in_header_and_body(&response), "flood-1");
    // Past hyper's 100: hyper's own bare 431, and the server keeps serving.
    let mut request = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..110 {
        request.push_str(&format!("x-h{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let response = raw_request(addr, request.as_bytes()).await;
    assert_eq!(response.status, 431);
    let response = raw_request(addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(response.status, 200);
}

#[test]
fn a_panic_while_the_body_streams_is_logged_once_and_the_server_keeps_serving() {
    let logs = logged(async {
        let harden = Harden::new();
        let streaming = Router::new()
            .route(
                "/stream",
                get(|| async {
                    let chunks = futures_util::stream::iter(0..3).map(|i| {
                        if i == 2 {
                            panic!("boom mid-body");
                        }
                        Ok::<_, std::io::Error>(Bytes::from_static(b"chunk "))
                    });
                    axum::body::Body::from_stream(chunks)
                }),
            )
            .route("/", get(|| async { "ok" }))
            .layer(harden.clone().into_layer());
        let addr = spawn(&harden, streaming).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"GET /stream HTTP/1.1\r\nHost: t\r\nx-request-id: stream-9\r\n\r\n",
        )
        .await
        .unwrap();
        // The head may have gone out before the panic: the response, if
        // any, is cut short (no last chunk), and the connection ends.
        let mut received = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut received),
        )
        .await
        .expect("the connection must end, not hang");
        assert!(
            !received.ends_with(b"0\r\n\r\n"),
            "{:?}",
            String::from_utf8_lossy(&received)
        );
        assert_eq!(common::get(addr, "/").await.status, 200);
    });
    let text = only_error_event(&logs);
    assert!(text.contains("stream-9"), "{text}");
    assert!(text.contains("boom mid-body"), "{text}");
    assert!(text.contains("\"error.type\":\"panic\""), "{text}");
}

#[tokio::test]
async fn a_handler_error_under_a_compression_layer_is_plain_problem_json() {
    use tower_harden::error::HandlerError;
    let harden = Harden::new();
    let app = Router::new()
        .route(
            "/fail",
            get(|| async {
                Err::<String, _>(HandlerError::internal(std::io::Error::other(
                    "secret detail",
                )))
            }),
        )
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(harden.clone().into_layer());
    let addr = spawn(&harden, app).await;
    let response = raw_request(
        addr,
        b"GET /fail HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 500);
    assert_eq!(response.header("content-encoding"), None);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    let json = response.json();
    assert_eq!(json["detail"], "internal error");
    assert!(!String::from_utf8_lossy(&response.body).contains("secret detail"));
    assert_eq!(json["request_id"], response.header("x-request-id").unwrap());
}

#[test]
fn ip_limits_without_peer_addresses_say_so_once_at_error() {
    use tower::ServiceExt;
    let logs = logged(async {
        let harden = Harden::new();
        let app = app(&harden, Arc::default());
        // In process, no server: no PeerAddr, no ConnectInfo.
        for _ in 0..3 {
            let request = http::Request::get("/")
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200);
        }
    });
    let errors: Vec<_> = logs
        .events()
        .into_iter()
        .filter(|event| event["level"] == "ERROR" && event.to_string().contains("no peer address"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

/// The outcome events of the captured log.
fn outcomes(logs: &common::logs::Captured) -> Vec<serde_json::Value> {
    logs.events()
        .into_iter()
        .filter(|event| event["fields"]["message"] == "request completed")
        .collect()
}

#[test]
fn each_real_layers_refusal_is_one_event_with_that_layers_context() {
    let harden = Harden::from_config(&config(
        r#"
        [input]
        max_body = "1KiB"
        max_decoded_body = "1KiB"
        [deadline]
        request = "100ms"
        [[rate_limit.policies]]
        name = "tiny"
        key = "peer_ip"
        quota = 1
        period = "1m"
        burst = 2
        "#,
    ))
    .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/upload",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .layer(harden.clone().into_layer());
    let logs = logged(async {
        let addr = spawn(&harden, app).await;
        let mut statuses = Vec::new();
        // Oversized (no quota spent), timed out (1 of 2), ok (2 of 2), limited.
        let oversized = raw_request(
            addr,
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\nConnection: close\r\n\r\n",
        )
        .await;
        statuses.push(oversized.status);
        statuses.push(common::get(addr, "/slow").await.status);
        statuses.push(common::get(addr, "/").await.status);
        statuses.push(common::get(addr, "/").await.status);
        assert_eq!(statuses, [413, 503, 200, 429]);
    });
    let events = outcomes(&logs);
    assert_eq!(events.len(), 4, "one event per request: {events:#?}");
    let field = |event: &serde_json::Value, name: &str| event["fields"][name].clone();
    assert_eq!(field(&events[0], "refusal.layer"), "input");
    assert_eq!(field(&events[0], "refusal.limit"), 1024);
    assert_eq!(field(&events[0], "refusal.observed"), 4096);
    assert_eq!(field(&events[1], "refusal.layer"), "deadline");
    assert_eq!(field(&events[1], "refusal.budget_ms"), 100.0);
    assert!(field(&events[2], "refusal.layer").is_null());
    assert_eq!(field(&events[3], "refusal.layer"), "rate_limit");
    assert_eq!(field(&events[3], "refusal.policy"), "tiny");
    let key = field(&events[3], "refusal.key");
    let key = key.as_str().expect("a hashed key");
    assert!(
        !key.contains("127.0.0.1") && key.chars().all(|c| c.is_ascii_hexdigit()),
        "{key}"
    );
    // Logged once: no other event at WARN or above names a refusal.
    let others = logs
        .events()
        .into_iter()
        .filter(|event| event["fields"]["message"] != "request completed")
        .filter(|event| event["level"] == "WARN" || event["level"] == "ERROR")
        .count();
    assert_eq!(others, 0);
}

#[test]
fn every_validation_error_names_its_key() {
    let cases = [
        ("[input]\nmax_body = 0", "input.max_body"),
        ("[input]\nmax_body = \"lots\"", "input.max_body"),
        ("[input]\nmax_headers = 0", "input.max_headers"),
        ("[deadline]\nrequest = \"0s\"", "deadline.request"),
        ("[deadline]\nrequest = \"soon\"", "deadline.request"),
        ("[deadline]\nstatus = 200", "deadline.status"),
        (
            "[deadline]\ntrusted_callers = [\"10.0.0.0/8\", \"10.0.0.0/99\"]",
            "deadline.trusted_callers[1]",
        ),
        ("[server]\nmax_connections = 0", "server.max_connections"),
        (
            "[server]\nmin_response_rate_grace = \"0s\"",
            "server.min_response_rate_grace",
        ),
        (
            "[server]\npressure_timeout = \"0s\"",
            "server.pressure_timeout",
        ),
        (
            "[server]\nmin_response_rate = -1",
            "server.min_response_rate",
        ),
        (
            "[rate_limit]\nbackend = \"memcached\"",
            "rate_limit.backend",
        ),
        ("[rate_limit]\nmax_keys = 0", "rate_limit.max_keys"),
        (
            "[rate_limit]\non_store_failure = \"maybe\"",
            "rate_limit.on_store_failure",
        ),
        (
            "[rate_limit]\non_store_failure = \"fallback\"",
            "rate_limit.on_store_failure",
        ),
        (
            "[input]\nmax_body = \"2MiB\"\nmax_route_body = \"1MiB\"",
            "input.max_route_body",
        ),
        (
            "[deadline]\nbody_idle = \"500000000000y\"",
            "deadline.body_idle",
        ),
        ("[server]\nmax_headers = 96", "server.max_headers"),
        (
            "[server]\nmax_header_bytes = \"16KiB\"",
            "server.max_header_bytes",
        ),
        (
            "[rate_limit]\ntrusted_proxies = [\"not-a-cidr\"]",
            "rate_limit.trusted_proxies[0]",
        ),
        ("[rate_limit]\nipv6_prefix = 129", "rate_limit.ipv6_prefix"),
        (
            "[rate_limit]\nproxy_header = \"x-real-ip\"",
            "rate_limit.proxy_header",
        ),
        (
            "[[rate_limit.policies]]\nquota = 0",
            "rate_limit.policies[0].quota",
        ),
        (
            "[[rate_limit.policies]]\nburst = 0",
            "rate_limit.policies[0].burst",
        ),
        (
            "[[rate_limit.policies]]\n[[rate_limit.policies]]\nperiod = \"0ms\"",
            "rate_limit.policies[1].period",
        ),
        (
            "[[rate_limit.policies]]\nkey = \"cookie\"",
            "rate_limit.policies[0].key",
        ),
        (
            "[observe]\nsuccess_level = \"loud\"",
            "observe.success_level",
        ),
        (
            "[observe]\nrequest_id_header = \"bad header\"",
            "observe.request_id_header",
        ),
    ];
    for (toml, key) in cases {
        let error = HardenConfig::from_toml(toml)
            .and_then(|config| Harden::from_config(&config).map(|_| ()))
            .expect_err(toml);
        assert_eq!(error.key(), key, "{toml}: {error}");
        assert!(error.to_string().contains(key), "{error}");
    }
}

#[test]
fn unknown_keys_and_wrong_types_are_refused_by_name() {
    let error = HardenConfig::from_toml("[input]\nmax_bodyy = 5").unwrap_err();
    assert!(error.to_string().contains("max_bodyy"), "{error}");
    let error = HardenConfig::from_toml("[rate_limit]\nmax_keys = \"many\"").unwrap_err();
    assert_eq!(error.key(), "rate_limit.max_keys", "{error}");
}

#[cfg(feature = "redis")]
#[test]
fn the_redis_backend_needs_its_url_and_secret() {
    let error = Harden::from_config(&config("[rate_limit]\nbackend = \"redis\"")).unwrap_err();
    assert_eq!(error.key(), "rate_limit.redis_url");
    let redis = "[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\n";
    let error =
        Harden::from_config(&config(&format!("{redis}redis_timeout = \"0s\""))).unwrap_err();
    assert_eq!(error.key(), "rate_limit.redis_timeout");
    let error = Harden::from_config(&config(&format!(
        "{redis}key_secret_env = \"TOWER_HARDEN_TEST_UNSET_SECRET\""
    )))
    .unwrap_err();
    assert_eq!(error.key(), "rate_limit.key_secret_env");
}

#[cfg(feature = "redis")]
#[test]
fn a_redis_cluster_is_configured_by_its_nodes_instead_of_one_url() {
    let both = "[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\n\
                redis_cluster_nodes = [\"redis://127.0.0.1:2\"]\n";
    let error = Harden::from_config(&config(both)).unwrap_err();
    assert_eq!(error.key(), "rate_limit.redis_cluster_nodes", "{error}");
    assert!(
        error
            .to_string()
            .contains("rate_limit.redis_cluster_nodes (line 4, column 23): set either"),
        "{error}"
    );
    let empty = "[rate_limit]\nbackend = \"redis\"\nredis_cluster_nodes = [\"redis://127.0.0.1:2\", \" \"]\n";
    let error = Harden::from_config(&config(empty)).unwrap_err();
    assert_eq!(error.key(), "rate_limit.redis_cluster_nodes", "{error}");
    assert!(
        error.to_string().contains("node 1 is an empty URL"),
        "{error}"
    );
    let not_a_url = "[rate_limit]\nbackend = \"redis\"\nredis_cluster_nodes = [\"http://x\"]\n\
                     key_secret_env = \"PATH\"\n";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let error = Harden::from_config(&config(not_a_url)).unwrap_err();
    assert_eq!(error.key(), "rate_limit.redis_cluster_nodes", "{error}");
    // A cluster that is not there yet: the stack is built all the same (the
    // store applies its failure policy until the cluster answers). `PATH`
    // stands in for the secret's variable: any set variable does.
    let absent = "[rate_limit]\nbackend = \"redis\"\n\
                  redis_cluster_nodes = [\"redis://user:pw@127.0.0.1:1\", \"redis://user:pw@127.0.0.1:2\"]\n\
                  key_secret_env = \"PATH\"\n";
    Harden::from_config(&config(absent)).unwrap();
}

/// A policy on a wider IPv6 prefix than the layer's: many /64s of one /48
/// (one site; or a 6to4 /48, one IPv4 address) each get the per-/64 quota,
/// but together no more than the /48 policy's.
#[tokio::test]
async fn a_policy_keys_on_its_own_ipv6_prefix() {
    let harden = Harden::from_config(&config(
        r#"
        [rate_limit]
        ipv6_prefix = 64
        [[rate_limit.policies]]
        name = "per-64"
        key = "peer_ip"
        quota = 1
        period = "1h"
        burst = 2
        [[rate_limit.policies]]
        name = "per-48"
        key = "peer_ip"
        ipv6_prefix = 48
        quota = 1
        period = "1h"
        burst = 5
        "#,
    ))
    .unwrap();
    let app = app(&harden, Arc::default());
    let send = |ip: &str| {
        let mut request = http::Request::get("/")
            .body(axum::body::Body::empty())
            .unwrap();
        let ip: std::net::IpAddr = ip.parse().unwrap();
        request
            .extensions_mut()
            .insert(tower_harden::context::PeerAddr((ip, 4000).into()));
        tower::ServiceExt::oneshot(app.clone(), request)
    };
    let mut statuses = Vec::new();
    for subnet in 0..4 {
        for host in 1..=2 {
            let response = send(&format!("2001:db8:7:{subnet}::{host}")).await.unwrap();
            statuses.push(response.status().as_u16());
        }
    }
    // Five of the /48's burst, whichever /64 asks; each /64 alone had two.
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let response = send("2001:db8:8::1").await.unwrap();
    assert_eq!(response.status(), 200, "another /48 has its own bucket");
    let refused = send("2001:db8:7:9::1").await.unwrap();
    let body = axum::body::to_bytes(refused.into_body(), 1 << 16)
        .await
        .unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["violated_policies"], serde_json::json!(["per-48"]));
}

#[test]
fn the_example_file_parses_and_equals_the_defaults() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/harden.toml"))
            .unwrap();
    let config = HardenConfig::from_toml(&text).unwrap();
    assert_eq!(config, HardenConfig::default());
    Harden::from_config(&config).unwrap();
}

#[cfg(feature = "metrics")]
mod metrics_counts {
    use super::*;
    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use std::collections::HashMap;
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;
    use tower::ServiceExt;
    use tower_harden::context::PeerAddr;

    /// Counts every counter by name and labels.
    #[derive(Default)]
    struct Counting(Mutex<HashMap<Key, Arc<AtomicU64>>>);

    impl Counting {
        fn count(&self, name: &str, label: Option<(&str, &str)>) -> u64 {
            self.0
                .lock()
                .unwrap()
                .iter()
                .filter(|(key, _)| key.name() == name)
                .filter(|(key, _)| {
                    label.is_none_or(|(k, v)| key.labels().any(|l| l.key() == k && l.value() == v))
                })
                .map(|(_, value)| value.load(Ordering::SeqCst))
                .sum()
        }
    }

    impl Recorder for Counting {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let value = self
                .0
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .clone();
            Counter::from_arc(value)
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn rate_limit_decisions_and_evictions_are_counted() {
        let recorder = Counting::default();
        metrics::with_local_recorder(&recorder, || {
            let harden = Harden::from_config(&config(
                "[rate_limit]\nmax_keys = 64\n[[rate_limit.policies]]\nkey = \"peer_ip\"\nquota = 1\nperiod = \"1h\"\nburst = 2\n",
            ))
            .unwrap();
            let app = app(&harden, Arc::default());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let send = |peer: u32| {
                    let mut request = http::Request::get("/")
                        .body(axum::body::Body::empty())
                        .unwrap();
                    let ip = std::net::Ipv4Addr::from(0x0a00_0000 + peer);
                    request.extensions_mut().insert(PeerAddr((ip, 4000).into()));
                    app.clone().oneshot(request)
                };
                let statuses =
                    [send(1).await, send(1).await, send(1).await].map(|r| r.unwrap().status());
                assert_eq!(statuses, [200, 200, 429]);
                // Far more clients than keys: live keys are evicted by the
                // overflow policy, and counted.
                for peer in 2..1_000 {
                    assert_eq!(send(peer).await.unwrap().status(), 200);
                }
            });
        });
        use tower_harden::telemetry::metrics::names::{
            RATE_LIMITING_EVICTIONS, RATE_LIMITING_REQUESTS, RATE_LIMITING_RESULT,
        };
        assert_eq!(
            recorder.count(
                RATE_LIMITING_REQUESTS,
                Some((RATE_LIMITING_RESULT, "acquired"))
            ),
            2 + 998
        );
        assert_eq!(
            recorder.count(
                RATE_LIMITING_REQUESTS,
                Some((RATE_LIMITING_RESULT, "rejected"))
            ),
            1
        );
        let evictions = RATE_LIMITING_EVICTIONS;
        assert!(recorder.count(evictions, None) >= 1_000 - 64 - 1);
    }
}

/// Counts the services it makes.
#[derive(Clone)]
struct CountingLayer(Arc<AtomicUsize>);

impl<S> tower::Layer<S> for CountingLayer {
    type Service = S;

    fn layer(&self, inner: S) -> S {
        self.0.fetch_add(1, Ordering::Relaxed);
        inner
    }
}

#[tokio::test]
async fn a_served_router_builds_its_routes_and_layers_once_not_per_request() {
    let made = Arc::new(AtomicUsize::new(0));
    let harden = Harden::new();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(CountingLayer(made.clone()))
        .layer(harden.clone().into_layer());
    let addr = spawn(&harden, app).await;
    // Building the router applied the layer to each endpoint and fallback;
    // serving it builds the routes once more, and that is all.
    let built = made.load(Ordering::Relaxed);
    for _ in 0..10 {
        assert_eq!(common::get(addr, "/").await.status, 200);
    }
    assert_eq!(
        made.load(Ordering::Relaxed),
        built,
        "layers applied per request"
    );
}
