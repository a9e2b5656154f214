//! `telemetry::json_log` writes what tracing-subscriber's JSON formatter
//! writes with the example server's settings, byte for byte: both run side
//! by side as two layers of one subscriber, so they format the very same
//! events (the same request ids, latencies and spans), each into its own
//! buffer, with the same timer. CI runs this file with serde_json's
//! `preserve_order` too (the other member order of its maps).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use common::logs::Captured;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;
use tower_harden::error::HandlerError;
use tower_harden::telemetry::json_log::{JsonLog, JsonLogFields};
use tower_harden::{Harden, HardenConfig};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;

/// One instant for both formatters; `"` and a control character in it
/// show that both escape what a timer writes.
#[derive(Clone, Copy)]
struct FixedTime(&'static str);

impl FormatTime for FixedTime {
    fn format_time(&self, writer: &mut Writer<'_>) -> std::fmt::Result {
        writer.write_str(self.0)
    }
}

const TIME: FixedTime = FixedTime("2026-12-03T08:10:48.123456Z");

/// One subscriber with both formatters: tracing-subscriber's JSON into
/// `reference`, ours into `ours`, with the same timer.
fn both_formatters<W>(
    timer: FixedTime,
    reference: Captured,
    ours: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_timer(timer)
                .with_writer(reference),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonLogFields::new())
                .event_format(JsonLog::new().with_timer(timer))
                .with_writer(ours),
        )
}

/// Runs `f` under one subscriber with both formatters; returns
/// (tracing-subscriber's lines, ours).
fn both<R>(timer: FixedTime, f: impl FnOnce() -> R) -> (String, String, R) {
    let reference = Captured::default();
    let ours = Captured::default();
    let subscriber = both_formatters(timer, reference.clone(), ours.clone());
    let result = tracing::subscriber::with_default(subscriber, f);
    (reference.text(), ours.text(), result)
}

/// Asserts equal output, line by line for a readable failure.
fn assert_same(reference: &str, ours: &str) {
    assert!(!reference.is_empty(), "nothing was logged");
    for (index, (expected, actual)) in reference.lines().zip(ours.lines()).enumerate() {
        assert_eq!(actual, expected, "line {index} differs");
    }
    assert_eq!(ours, reference);
}

// ---- the preset's outcome lines ------------------------------------------

#[derive(Debug, thiserror::Error)]
#[error("failed to load the account")]
struct LoadAccount(#[source] DatabaseUnreachable);

#[derive(Debug, thiserror::Error)]
#[error("connecting to {url}")]
struct DatabaseUnreachable {
    url: &'static str,
    source: std::io::Error,
}

/// A second of hostile text: quotes, backslashes, every C0 control, DEL,
/// C1, line separators, bidi overrides, emoji and a replacement character.
fn hostile() -> String {
    let mut text = String::from("q\"uo\\te' </script> ");
    text.extend((0u8..0x20).map(char::from));
    text.push_str("\u{7f}\u{85}\u{9b}\u{2028}\u{2029}\u{202e}\u{fffd}🦀 end");
    text
}

fn routes(hold: Arc<tokio::sync::Notify>) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/echo", post(|body: String| async move { body }))
        .route(
            "/hold",
            get(move || async move {
                hold.notified().await;
                "held"
            }),
        )
        .route(
            "/panic",
            get(|| async {
                panic!("the handler \"panicked\"\n at\u{1b}[31m line");
                #[allow(unreachable_code)]
                ""
            }),
        )
        .route(
            "/fail",
            get(|| async {
                let unreachable = DatabaseUnreachable {
                    url: "postgres://app:hunter2@db.internal/app",
                    source: std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "connection \"refused\"\r\n",
                    ),
                };
                Err::<String, _>(HandlerError::internal(LoadAccount(unreachable)))
            }),
        )
        .route(
            "/events",
            get(|| async {
                // Events of the handler's own, inside the request span.
                let text = hostile();
                let lossy = String::from_utf8_lossy(b"caf\xc3\xa9 \xff\xfe bytes").into_owned();
                let long = "x\"y".repeat(40_000);
                tracing::info!(
                    text = text.as_str(),
                    lossy = lossy.as_str(),
                    "hostile {}",
                    text
                );
                tracing::warn!(long = long.as_str(), debug = ?text, display = %text);
                tracing::error!(
                    float = 0.1 + 0.2,
                    nan = f64::NAN,
                    inf = f64::NEG_INFINITY,
                    big = u64::MAX,
                    small = i64::MIN,
                    wide = i128::MIN,
                    flag = false,
                    bytes = &b"\x00\xff"[..],
                    error = &std::io::Error::other("an \"error\"") as &dyn std::error::Error,
                );
                "events"
            }),
        )
}

fn request(method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test")
        .header("user-agent", "json-log-test/1.0 \"quoted\"")
}

async fn send(app: &Router, request: Request<Body>, peer: u8) -> StatusCode {
    let mut request = request;
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, peer)), 40_000);
    request.extensions_mut().insert(ConnectInfo(addr));
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let _ = response.into_body().collect().await;
    status
}

fn config(toml: &str) -> HardenConfig {
    HardenConfig::from_toml(toml).unwrap()
}

/// Every outcome the preset logs, each through both formatters.
#[test]
fn every_outcome_of_the_preset_is_written_alike() {
    let config = config(
        r#"
        [input]
        max_body = "1KiB"
        max_header_bytes = "4KiB"
        [rate_limit]
        [[rate_limit.policies]]
        name = "per-ip"
        key = "client_ip"
        quota = 3
        period = "1h"
        burst = 3
        [overload]
        initial_limit = 1
        min_limit = 1
        max_limit = 1
        [observe]
        log_headers = ["x-tenant"]
        full_span = true
        failure_lines_per_second = 0
        "#,
    );
    let harden = Harden::from_config(&config).unwrap();
    let hold = Arc::new(tokio::sync::Notify::new());
    let app = routes(hold.clone())
        .layer(harden.into_layer())
        .with_state(());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (reference, ours, statuses) = both(TIME, || {
        runtime.block_on(async {
            let mut statuses = Vec::new();
            let empty = || Body::empty();
            // Admitted, with a hostile logged header and a non-UTF-8 one.
            let mut admitted = request("GET", "/")
                .header(
                    "x-tenant",
                    http::HeaderValue::from_bytes(b"t\xffn\"a\\nt\t1").unwrap(),
                )
                .body(empty())
                .unwrap();
            admitted.headers_mut().insert(
                "user-agent",
                http::HeaderValue::from_bytes(b"agent \xc3\x28 \"quoted\" \\ \t end").unwrap(),
            );
            statuses.push(send(&app, admitted, 1).await);
            // A very long (percent-encoded) path, quotes and controls in it.
            let long_path = format!(
                "/{}%22%00%1b%0a?q=%22{}",
                "a".repeat(6_000),
                "b".repeat(1_000)
            );
            statuses.push(send(&app, request("GET", &long_path).body(empty()).unwrap(), 2).await);
            // 413: declared over the limit.
            let oversized = request("POST", "/echo")
                .header("content-length", "4096")
                .body(Body::from(vec![b'x'; 4096]))
                .unwrap();
            statuses.push(send(&app, oversized, 3).await);
            // 431: header bytes over the limit.
            let big_header = request("GET", "/")
                .header("x-padding", "p".repeat(5_000))
                .body(empty())
                .unwrap();
            statuses.push(send(&app, big_header, 4).await);
            // 429: peer 5 spends its quota of three.
            for _ in 0..4 {
                statuses.push(send(&app, request("GET", "/").body(empty()).unwrap(), 5).await);
            }
            // 500s: a panic, a handler error with a source chain.
            statuses.push(send(&app, request("GET", "/panic").body(empty()).unwrap(), 6).await);
            statuses.push(send(&app, request("GET", "/fail").body(empty()).unwrap(), 7).await);
            // The handler's own events, hostile text and every value type.
            statuses.push(send(&app, request("GET", "/events").body(empty()).unwrap(), 8).await);
            // 404, unmatched.
            statuses.push(send(&app, request("GET", "/nowhere").body(empty()).unwrap(), 9).await);
            // 503 overloaded: one request held in the only slot.
            let held = tokio::spawn({
                let app = app.clone();
                async move {
                    send(
                        &app,
                        request("GET", "/hold").body(Body::empty()).unwrap(),
                        10,
                    )
                    .await
                }
            });
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
            statuses.push(send(&app, request("GET", "/").body(empty()).unwrap(), 11).await);
            hold.notify_one();
            statuses.push(held.await.unwrap());
            statuses
        })
    });
    use StatusCode as S;
    assert_eq!(
        statuses,
        [
            S::OK,
            S::NOT_FOUND,
            S::PAYLOAD_TOO_LARGE,
            S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            S::OK,
            S::OK,
            S::OK,
            S::TOO_MANY_REQUESTS,
            S::INTERNAL_SERVER_ERROR,
            S::INTERNAL_SERVER_ERROR,
            S::OK,
            S::NOT_FOUND,
            S::SERVICE_UNAVAILABLE,
            S::OK,
        ]
    );
    // One outcome line per request, plus the handler's three events.
    assert_eq!(ours.lines().count(), statuses.len() + 3, "{ours}");
    assert!(ours.contains("hunter2") == reference.contains("hunter2"));
    assert!(
        ours.contains(r#""http.response.status_code":503"#),
        "{ours}"
    );
    // `JSON_LOG_SHOW=1 cargo test --features json-log --test json_log
    // every_outcome -- --nocapture` prints the corpus.
    if std::env::var_os("JSON_LOG_SHOW").is_some() {
        eprintln!("{ours}");
    }
    assert_same(&reference, &ours);
}

// ---- spans, records, `log` records ---------------------------------------

#[test]
fn span_records_replace_fields_in_name_order() {
    let (reference, ours, ()) = both(TIME, || {
        let span = tracing::info_span!(
            "request",
            zeta = 1,
            alpha = "a",
            status = tracing::field::Empty,
            float = 0.30000000000000004,
            r#type = ?"raw",
            log.target = ?"skipped",
        );
        let _entered = span.enter();
        tracing::info!("opened");
        span.record("status", 200);
        tracing::info!("one record");
        span.record("alpha", "replaced \"again\"");
        span.record("status", 503);
        span.record("float", 1e300 * 10.0);
        tracing::info!("records replace");
        let inner = tracing::info_span!(
            "inner",
            "quoted \"name\"" = true,
            other = tracing::field::Empty
        );
        inner.in_scope(|| tracing::info!("inner span"));
        // tracing-subscriber reads the stored names back borrowed: one
        // with an escape fails the record, which is dropped. So here.
        inner.record("other", 1);
        tracing::info!(parent: &inner, "explicit parent");
        tracing::info!(parent: None, "no parent: the current span");
        let empty = tracing::info_span!("empty", later = tracing::field::Empty);
        empty.in_scope(|| tracing::info!("empty span"));
        empty.record("later", 1.5);
        empty.in_scope(|| tracing::info!("recorded later"));
    });
    assert_eq!(ours.matches("\"status\":503").count(), 2, "{ours}");
    assert!(!ours.contains("\"status\":200,\"status\""), "{ours}");
    assert_same(&reference, &ours);
}

#[test]
fn events_outside_spans_and_every_level() {
    let (reference, ours, ()) = both(TIME, || {
        tracing::trace!(a = 1, "trace");
        tracing::debug!(b = -1, "debug");
        tracing::info!(c = 1.0, "info");
        tracing::warn!(d = true, "warn");
        tracing::error!(e = "text", "error");
        tracing::info!(target: "a \"custom\" target", "custom target");
        tracing::info!(message = "a message field", other = 2);
        tracing::info!(same = 1, same = 2);
        tracing::info!(r#type = ?"debug raw", r#loop = "str raw");
        tracing::info!(log.line = 3, log.target = ?"kept in events");
        tracing::info!(u = 1u128 << 100, i = -(1i128 << 100));
    });
    assert_same(&reference, &ours);
}

#[test]
fn the_timer_is_escaped() {
    let (reference, ours, ()) = both(FixedTime("\"quoted\"\n\u{1}"), || {
        tracing::info!("escaped timestamp");
    });
    assert_same(&reference, &ours);
}

/// Records from the `log` crate, bridged as `LogTracer` bridges them: the
/// target and level are the record's; tracing-subscriber writes the
/// bridge's `log.*` fields among the event's fields, and so does ours.
#[test]
fn records_bridged_from_the_log_crate() {
    let (reference, ours, ()) = both(TIME, || {
        let span = tracing::info_span!("request", request_id = "r1");
        let _entered = span.enter();
        for (level, target, file, line) in [
            (log::Level::Info, "my_app::db", Some("src/db.rs"), Some(42)),
            (log::Level::Error, "hostile \"target\"\n", None, None),
            (log::Level::Trace, "t", Some("f.rs"), None),
        ] {
            tracing_log::format_trace(
                &log::Record::builder()
                    .level(level)
                    .target(target)
                    .file(file)
                    .line(line)
                    .module_path(Some("my_app::db"))
                    .args(format_args!("a log \"record\" {}", 7))
                    .build(),
            )
            .unwrap();
        }
    });
    assert!(ours.contains(r#""target":"my_app::db""#), "{ours}");
    assert_same(&reference, &ours);
}

/// A value whose `Debug` logs and opens a span while it is written (tracing
/// sends those to no subscriber while one is at work): neither formatter
/// stalls, both write the same lines.
struct Chatty;

impl std::fmt::Debug for Chatty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        tracing::info!(inner = "from Debug", "logged while formatting");
        let span = tracing::info_span!("opened while formatting", depth = 2);
        span.in_scope(|| tracing::info!("inside"));
        f.write_str("chatty")
    }
}

#[test]
fn a_value_that_logs_while_it_is_written() {
    let (reference, ours, ()) = both(TIME, || {
        let span = tracing::info_span!("outer", chatty = ?Chatty);
        span.in_scope(|| tracing::info!(chatty = ?Chatty, after = 1, "outer event"));
    });
    assert_eq!(ours.lines().count(), 1, "{ours}");
    assert!(ours.contains(r#""chatty":"chatty","after":1"#), "{ours}");
    assert_same(&reference, &ours);
}

// ---- random values -------------------------------------------------------

/// A `Debug` value (its text is the string's `Debug`: quoted, escaped).
#[derive(Debug)]
#[allow(dead_code)] // read through `Debug`
struct Shown(String);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_values_are_written_alike(
        text in any::<String>(),
        other in "\\PC*",
        span_text in any::<String>(),
        float in prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(1e-7), Just(1e21)],
        span_float in any::<f64>(),
        recorded_float in any::<f64>(),
        int in any::<i64>(),
        uint in any::<u64>(),
        flag in any::<bool>(),
        wide in any::<i128>(),
        bytes in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let (reference, ours, ()) = both(TIME, || {
            let span = tracing::info_span!(
                "random",
                text = span_text.as_str(),
                float = span_float,
                debug = ?Shown(other.clone()),
                bytes = &bytes[..],
                later = tracing::field::Empty,
            );
            let _entered = span.enter();
            tracing::info!(
                text = text.as_str(),
                float,
                int,
                uint,
                flag,
                wide,
                debug = ?Shown(text.clone()),
                display = %other,
                bytes = &bytes[..],
                "{} {}", text, other
            );
            span.record("later", recorded_float);
            span.record("text", other.as_str());
            tracing::warn!(float = recorded_float, "after records");
        });
        prop_assert_eq!(ours, reference);
    }
}

#[test]
fn a_span_recorded_on_another_thread_is_written_alike() {
    let (reference, ours, ()) = both(TIME, || {
        let span = tracing::info_span!("outer", id = 7);
        let span2 = span.clone();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // A span keeps its subscriber: recorded from another thread.
                span2.record("id", 8);
            });
        });
        span.in_scope(|| tracing::info!(took = ?Duration::from_millis(3), "done"));
    });
    assert_same(&reference, &ours);
}

/// Lines written through `BatchWriter` by tracing-subscriber from many
/// threads arrive whole, each a JSON object, none lost, with the same
/// bytes as tracing-subscriber's JSON formatter writes them directly.
#[test]
fn lines_through_the_batch_writer_arrive_whole() {
    use tower_harden::telemetry::json_log::BatchWriter;

    let output = Captured::default();
    let reference = Captured::default();
    let (writer, guard) = BatchWriter::builder()
        .capacity(16 << 10)
        .flush_at(4 << 10)
        .lossy(false)
        .finish(output.clone())
        .unwrap();
    let subscriber = both_formatters(TIME, reference.clone(), writer.clone());
    let dispatch = tracing::Dispatch::new(subscriber);
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let dispatch = dispatch.clone();
            scope.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for n in 0..300 {
                        let span = tracing::info_span!("request", request_id = n);
                        let _entered = span.enter();
                        tracing::info!(thread, n, text = %hostile(), "line");
                    }
                })
            });
        }
    });
    drop(guard);
    assert_eq!(writer.dropped_lines(), 0);
    let written = output.text();
    let mut seen = std::collections::HashSet::new();
    for line in written.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(seen.insert((value["thread"].as_u64(), value["n"].as_u64())));
    }
    assert_eq!(seen.len(), 1200);
    // The same lines as tracing-subscriber's, in the order each thread
    // wrote them (threads interleave differently in the two outputs).
    let mut ours: Vec<&str> = written.lines().collect();
    let reference = reference.text();
    let mut theirs: Vec<&str> = reference.lines().collect();
    ours.sort_unstable();
    theirs.sort_unstable();
    assert_eq!(ours, theirs);
}
