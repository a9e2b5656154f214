//! The classic "fetch a user profile" call, done right.
//!
//! The usual version formats a raw string into a URL, waits as long as the
//! upstream likes, reads however many bytes it sends, decodes whatever it got
//! as JSON and turns every failure into `None` or a log line. This one:
//!
//! - takes a validated [`UserId`], never a raw string, into the URL;
//! - sends the call through [`OutboundLayer`]: its timeout is the smaller of
//!   its own (1 s here) and the caller's remaining budget, and it forwards
//!   that deadline, the request id and the trace context;
//! - checks the status and the content type, and bounds the body size (in
//!   the layer), before decoding JSON;
//! - returns typed errors whose `source()` chain carries the context
//!   (target, budget, elapsed, status), and prints that chain; nothing is
//!   swallowed.
//!
//! It starts its own local upstream, which answers each user differently:
//! fine, slow, 500, invalid JSON, huge, or HTML. Run it with
//! `cargo run --example resilient_client`; it finishes in about two seconds.

use std::error::Error;
use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tower::{Layer, ServiceExt};
use tower_harden::context::{self, Budget, BudgetOrigin, RequestContext, RequestId, TraceId};
use tower_harden::outbound::{Outbound, OutboundError, OutboundLayer};

/// A user id: 1 to 19 ASCII digits, not zero. Only this type goes into a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UserId(u64);

impl UserId {
    fn parse(text: &str) -> Result<Self, ProfileError> {
        let valid =
            !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit());
        match text.parse::<u64>() {
            Ok(id) if valid && id > 0 => Ok(Self(id)),
            _ => Err(ProfileError::InvalidId(
                text.escape_default().take(40).collect(),
            )),
        }
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Deserialize)]
struct UserProfile {
    id: u64,
    name: String,
}

/// Everything that can go wrong fetching a profile, each with its context.
#[derive(Debug, thiserror::Error)]
enum ProfileError {
    #[error("invalid user id {0:?}")]
    InvalidId(String),
    #[error("fetching the profile of user {id} failed")]
    Call {
        id: UserId,
        #[source]
        source: OutboundError,
    },
    #[error("the profile service answered {status} for user {id}")]
    Status { id: UserId, status: StatusCode },
    #[error("the profile of user {id} is {content_type:?}, not application/json")]
    ContentType { id: UserId, content_type: String },
    #[error("the profile of user {id} is not valid JSON")]
    Decode {
        id: UserId,
        #[source]
        source: serde_json::Error,
    },
}

type HttpClient = Outbound<Client<HttpConnector, Full<Bytes>>>;

/// At most 64 KiB of profile: a real one is a few hundred bytes.
const MAX_PROFILE_BYTES: u64 = 64 * 1024;

async fn fetch_profile(
    client: &HttpClient,
    base: &str,
    id: UserId,
) -> Result<UserProfile, ProfileError> {
    let request = Request::get(format!("{base}/users/{id}"))
        .header(header::ACCEPT, "application/json")
        .body(Full::default())
        .expect("a valid URL: the id is digits only");
    let response = client
        .clone()
        .oneshot(request)
        .await
        .map_err(|source| ProfileError::Call { id, source })?;
    if !response.status().is_success() {
        return Err(ProfileError::Status {
            id,
            status: response.status(),
        });
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let is_json = content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ProfileError::ContentType {
            id,
            content_type: content_type.chars().take(64).collect(),
        });
    }
    serde_json::from_slice(response.body()).map_err(|source| ProfileError::Decode { id, source })
}

/// The error and each of its sources, outermost first.
fn chain(error: &(dyn Error + 'static)) -> String {
    std::iter::successors(Some(error), |error: &&(dyn Error + 'static)| {
        (*error).source()
    })
    .map(ToString::to_string)
    .collect::<Vec<_>>()
    .join("\n      caused by: ")
}

/// The upstream: a profile service with a different failure for each user.
fn upstream() -> Router {
    Router::new().route(
        "/users/{id}",
        get(|Path(id): Path<u64>, headers: HeaderMap| async move {
            match id {
                2 => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        r#"{"id":2,"name":"Slow"}"#.to_owned(),
                    )
                        .into_response()
                }
                3 => (StatusCode::INTERNAL_SERVER_ERROR, "database on fire").into_response(),
                4 => (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"id":4,"name":"#.to_owned(),
                )
                    .into_response(),
                5 => {
                    let huge = format!(r#"{{"id":5,"name":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
                    ([(header::CONTENT_TYPE, "application/json")], huge).into_response()
                }
                6 => (
                    [(header::CONTENT_TYPE, "text/html")],
                    "<h1>Login</h1>".to_owned(),
                )
                    .into_response(),
                _ => {
                    // What the outbound layer forwarded (all plain ASCII: it
                    // wrote them itself).
                    let forwarded = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    println!(
                        "    upstream got x-request-id={} x-request-deadline-ms={} traceparent={}",
                        forwarded("x-request-id"),
                        forwarded("x-request-deadline-ms"),
                        forwarded("traceparent"),
                    );
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        format!(r#"{{"id":{id},"name":"Ada"}}"#),
                    )
                        .into_response()
                }
            }
        }),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tower_harden::serve(listener, upstream())
            .drain_timeout(Duration::from_secs(2))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );

    let client: HttpClient = OutboundLayer::new(Duration::from_secs(1))
        .max_response_bytes(MAX_PROFILE_BYTES)
        .layer(Client::builder(TokioExecutor::new()).build_http());

    // The request this code is serving: its id and trace are forwarded, and
    // its remaining budget bounds every call.
    let inbound = RequestContext {
        request_id: RequestId::parse("req-example-1"),
        trace_id: TraceId::from_bytes(*b"resilient-client"),
    };
    let cases = [
        ("1", "a healthy user", Duration::from_secs(10)),
        (
            "2",
            "a slow upstream (own 1 s timeout)",
            Duration::from_secs(10),
        ),
        (
            "2",
            "a slow upstream, caller has 300 ms left",
            Duration::from_millis(300),
        ),
        ("3", "an upstream 500", Duration::from_secs(10)),
        ("4", "invalid JSON", Duration::from_secs(10)),
        ("5", "a 2 MiB profile", Duration::from_secs(10)),
        ("6", "an HTML login page", Duration::from_secs(10)),
        (
            "../admin",
            "an id that is not an id",
            Duration::from_secs(10),
        ),
    ];
    for (raw_id, what, caller_budget) in cases {
        println!("{what}:");
        let budget = Budget::new(caller_budget, BudgetOrigin::Configured);
        let outcome = context::scope(budget, inbound.clone(), async {
            let id = UserId::parse(raw_id)?;
            fetch_profile(&client, &base, id).await
        })
        .await;
        match outcome {
            Ok(profile) => println!("    ok: user {} is {}", profile.id, profile.name),
            Err(error) => println!("    error: {}", chain(&error)),
        }
    }

    let _ = stop.send(());
    server.await??;
    Ok(())
}
