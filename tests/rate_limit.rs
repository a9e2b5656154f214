//! Keyed rate limiting: exactness under concurrency, the memory bound,
//! trusted-proxy parsing, and the layer over real TCP.

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use proptest::prelude::*;
use tower::{Service, ServiceExt};
use tower_harden::context::PeerAddr;
use tower_harden::error::Refused;
use tower_harden::rate_limit::{
    Check, ClientIpError, Decisions, KeyHash, KeySource, ManualClock, MemoryStore, MissingKey,
    OverflowPolicy, Policy, ProxyHeader, Quota, RateLimitLayer, RateLimitRefusal, RateLimitStore,
    TrustedProxies,
};

/// A well-spread key hash for test key number `n`.
fn key(n: u64) -> KeyHash {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    bytes[8..].copy_from_slice(
        &(n ^ 0x5555)
            .wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            .to_le_bytes(),
    );
    KeyHash(bytes)
}

fn check(policy: &Arc<str>, n: u64, quota: Quota) -> Check {
    Check {
        policy: policy.clone(),
        key: key(n),
        quota,
        cost: 1,
    }
}

fn decide<St: RateLimitStore>(store: &St, checks: &[Check]) -> Decisions {
    store
        .check(checks)
        .now_or_never()
        .expect("the memory store answers at once")
        .expect("the memory store does not fail")
}

// ---------------------------------------------------------------------------
// Exactness under concurrency

#[test]
fn many_threads_on_one_key_admit_exactly_the_allowance() {
    let clock = ManualClock::new();
    let store = Arc::new(MemoryStore::with_clock(1_000, clock.clone()));
    let quota = Quota::per_second(10).unwrap().with_burst(100).unwrap();
    let policy: Arc<str> = Arc::from("hot");
    let run_round = |attempts_per_thread: u64| -> u64 {
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let admitted = admitted.clone();
                let check = check(&policy, 1, quota);
                std::thread::spawn(move || {
                    for _ in 0..attempts_per_thread {
                        if decide(&*store, std::slice::from_ref(&check)).allowed() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        admitted.load(Ordering::Relaxed)
    };
    // Frozen clock: exactly the burst, out of 8 × 500 attempts.
    assert_eq!(run_round(500), 100);
    // 2.5 intervals later: exactly 2 more.
    clock.advance(Duration::from_millis(250));
    assert_eq!(run_round(500), 2);
    // A full window later the key is idle: the whole burst again.
    clock.advance(Duration::from_secs(10));
    assert_eq!(run_round(500), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_with_two_policies_admit_exactly_the_tighter_allowance() {
    let clock = ManualClock::new();
    let store = Arc::new(MemoryStore::with_clock(1_000, clock.clone()));
    let per_key = Quota::per_second(10).unwrap().with_burst(50).unwrap();
    let global = Quota::per_second(10).unwrap().with_burst(30).unwrap();
    let (per_key_name, global_name): (Arc<str>, Arc<str>) = (Arc::from("k"), Arc::from("g"));
    let admitted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let store = store.clone();
            let admitted = admitted.clone();
            let checks = [
                check(&per_key_name, task % 2, per_key),
                check(&global_name, 0, global),
            ];
            tokio::spawn(async move {
                for _ in 0..50 {
                    if store.check(&checks).await.unwrap().allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // The global policy allows 30; no refused request consumed per-key
    // quota, so each key's state accounts for exactly its admissions.
    assert_eq!(admitted.load(Ordering::Relaxed), 30);
    let inspect = |n| {
        decide(
            &*store,
            &[Check {
                cost: 0,
                ..check(&per_key_name, n, per_key)
            }],
        )
        .as_slice()[0]
            .remaining
    };
    assert_eq!(inspect(0) + inspect(1), 100 - 30);
}

// ---------------------------------------------------------------------------
// The memory bound

#[test]
fn two_million_keys_through_a_store_capped_at_ten_thousand() {
    const CAP: usize = 10_000;
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(CAP, clock.clone());
    let policy: Arc<str> = Arc::from("flood");
    // 100 live keys that have used their whole hourly burst.
    let hourly = Quota::per_minute(1).unwrap().with_burst(5).unwrap();
    let live: Vec<u64> = (0..100).map(|n| u64::MAX - n).collect();
    for &n in &live {
        for _ in 0..5 {
            assert!(decide(&store, &[check(&policy, n, hourly)]).allowed());
        }
    }
    let live_keys_are_still_refused = |store: &MemoryStore<ManualClock>| {
        live.iter()
            .all(|&n| !decide(store, &[check(&policy, n, hourly)]).allowed())
    };
    // A flood of 2,000,000 distinct keys, 1 µs apart, each live for 1 ms.
    let flood = Quota::with_period(Duration::from_millis(1)).unwrap();
    for n in 0..2_000_000u64 {
        assert!(decide(&store, &[check(&policy, n, flood)]).allowed());
        clock.advance(Duration::from_micros(1));
        if n % 50_000 == 0 {
            assert!(store.len() <= CAP, "len {} > cap", store.len());
            assert!(live_keys_are_still_refused(&store));
        }
    }
    assert!(store.len() <= CAP);
    assert!(live_keys_are_still_refused(&store));
    assert_eq!(store.overflows(), 0, "idle keys alone made room");
    assert!(store.evictions() >= 2_000_000 - CAP as u64);

    // Now a flood of keys that stay live: the store overflows, stays within
    // its cap, and evicts the keys nearest to idle, never the live ones
    // (whose debt is much longer).
    let long_lived = Quota::per_minute(1).unwrap();
    for n in 3_000_000..3_050_000u64 {
        decide(&store, &[check(&policy, n, long_lived)]);
        assert!(store.len() <= CAP);
    }
    assert!(store.overflows() > 0);
    assert!(live_keys_are_still_refused(&store));
}

#[test]
fn a_full_store_refusing_new_keys_keeps_every_live_state() {
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(1_000, clock.clone())
        .overflow_policy(OverflowPolicy::RefuseNewKeys);
    let policy: Arc<str> = Arc::from("p");
    let quota = Quota::per_minute(2).unwrap();
    let mut admitted = HashSet::new();
    for n in 0..20_000 {
        if decide(&store, &[check(&policy, n, quota)]).allowed() {
            admitted.insert(n);
        }
        assert!(store.len() <= 1_000);
    }
    assert!(store.overflows() > 0);
    for &n in &admitted {
        let decision = decide(&store, &[check(&policy, n, quota)]);
        assert!(decision.allowed(), "second of two per minute");
        assert!(!decide(&store, &[check(&policy, n, quota)]).allowed());
    }
}

// ---------------------------------------------------------------------------
// Trusted proxies

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn forwarded_headers(name: &str, values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

fn proxies() -> TrustedProxies {
    TrustedProxies::new()
        .trust("10.0.0.0/8".parse().unwrap())
        .trust("2001:db8:ffff::/48".parse().unwrap())
}

#[test]
fn spoofed_leftmost_entries_are_never_the_client() {
    let headers = forwarded_headers(
        "x-forwarded-for",
        &["1.1.1.1, 2.2.2.2, 203.0.113.7, 10.1.1.1"],
    );
    assert_eq!(
        proxies().client_ip(ip("10.0.0.1"), &headers),
        Ok(ip("203.0.113.7"))
    );
    // An untrusted peer's headers are ignored entirely.
    assert_eq!(
        proxies().client_ip(ip("198.51.100.1"), &headers),
        Ok(ip("198.51.100.1"))
    );
    // No trusted proxy at all: the peer, whatever the header says.
    assert_eq!(
        TrustedProxies::new().client_ip(ip("10.0.0.1"), &headers),
        Ok(ip("10.0.0.1"))
    );
}

#[test]
fn garbage_entries() {
    let peer = ip("10.0.0.1");
    for garbage in [
        "unknown",
        "",
        "1.2.3",
        "not an ip",
        "1.2.3.4.5",
        "[1.2.3.4]",
        "::1]:80",
    ] {
        let headers = forwarded_headers("x-forwarded-for", &[&format!("9.9.9.9, {garbage}")]);
        assert_eq!(
            proxies().client_ip(peer, &headers),
            Err(ClientIpError::InvalidEntry),
            "{garbage:?}"
        );
    }
    // Garbage to the left of the client is never read.
    let headers = forwarded_headers("x-forwarded-for", &["garbage, 9.9.9.9"]);
    assert_eq!(proxies().client_ip(peer, &headers), Ok(ip("9.9.9.9")));
    // A trusted peer without any header: the peer itself sent the request.
    assert_eq!(proxies().client_ip(peer, &HeaderMap::new()), Ok(peer));
}

#[test]
fn ipv6_with_zone_or_brackets() {
    let peer = ip("2001:db8:ffff::1");
    for (entry, expected) in [
        ("2001:db8::7", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("[2001:db8::7]:8443", "2001:db8::7"),
        ("fe80::7%eth0", "fe80::7"),
        ("[fe80::7%eth0]:80", "fe80::7"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("203.0.113.9:5000", "203.0.113.9"),
    ] {
        let headers = forwarded_headers("x-forwarded-for", &[entry]);
        assert_eq!(
            proxies().client_ip(peer, &headers),
            Ok(ip(expected)),
            "{entry}"
        );
    }
    let forwarded = forwarded_headers(
        "forwarded",
        &[r#"for="[2001:db8::7]:4711";proto=https, for=10.9.9.9;by=10.0.0.1"#],
    );
    assert_eq!(
        proxies()
            .header(ProxyHeader::Forwarded)
            .client_ip(peer, &forwarded),
        Ok(ip("2001:db8::7"))
    );
}

#[test]
fn too_many_hops() {
    let chain: Vec<String> = (1..=20).map(|n| format!("10.0.0.{n}")).collect();
    let headers = forwarded_headers(
        "x-forwarded-for",
        &[&format!("9.9.9.9, {}", chain.join(", "))],
    );
    assert_eq!(
        proxies().client_ip(ip("10.0.0.100"), &headers),
        Err(ClientIpError::TooManyHops)
    );
    assert_eq!(
        proxies().max_hops(21).client_ip(ip("10.0.0.100"), &headers),
        Ok(ip("9.9.9.9"))
    );
}

#[test]
fn several_header_fields_read_as_one_list() {
    // The last field's last entry is the nearest hop.
    let headers = forwarded_headers(
        "x-forwarded-for",
        &["6.6.6.6, 198.51.100.4", "10.0.0.5", "10.0.0.6"],
    );
    assert_eq!(
        proxies().client_ip(ip("10.0.0.1"), &headers),
        Ok(ip("198.51.100.4"))
    );
    let forwarded = forwarded_headers(
        "forwarded",
        &[
            "for=6.6.6.6",
            r#"for="198.51.100.4""#,
            "for=10.0.0.2;proto=http",
        ],
    );
    assert_eq!(
        proxies()
            .header(ProxyHeader::Forwarded)
            .client_ip(ip("10.0.0.1"), &forwarded),
        Ok(ip("198.51.100.4"))
    );
    // A quoted comma cannot split an element.
    let tricky = forwarded_headers("forwarded", &[r#"for="6.6.6.6, for=10.0.0.9""#]);
    assert_eq!(
        proxies()
            .header(ProxyHeader::Forwarded)
            .client_ip(ip("10.0.0.1"), &tricky),
        Err(ClientIpError::InvalidEntry)
    );
    // Forwarded elements without `for` are not addresses.
    let obfuscated = forwarded_headers("forwarded", &["for=_hidden", "proto=https"]);
    assert_eq!(
        proxies()
            .header(ProxyHeader::Forwarded)
            .client_ip(ip("10.0.0.1"), &obfuscated),
        Err(ClientIpError::InvalidEntry)
    );
}

proptest! {
    #[test]
    fn no_header_content_panics(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..4),
        text in "[ -~]{0,200}",
        forwarded in any::<bool>(),
        max_hops in 0usize..10,
        peer_trusted in any::<bool>(),
    ) {
        let name = if forwarded { "forwarded" } else { "x-forwarded-for" };
        let mut headers = HeaderMap::new();
        for value in values.iter().map(Vec::as_slice).chain([text.as_bytes()]) {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(HeaderName::from_static(name), value);
            }
        }
        let proxies = TrustedProxies::new()
            .trust("0.0.0.0/0".parse().unwrap())
            .trust("::/0".parse().unwrap())
            .header(if forwarded { ProxyHeader::Forwarded } else { ProxyHeader::XForwardedFor })
            .max_hops(max_hops);
        let peer = if peer_trusted { ip("10.0.0.1") } else { ip("::1") };
        let _ = proxies.client_ip(peer, &headers);
        let _ = TrustedProxies::new().client_ip(peer, &headers);
    }
}

// ---------------------------------------------------------------------------
// The layer

fn small_quota(burst: u32) -> Quota {
    Quota::per_minute(1).unwrap().with_burst(burst).unwrap()
}

fn app(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer)
}

fn get_with(path: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra_headers}Connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn over_tcp_burst_plus_one_is_refused_with_both_headers() {
    let burst = 3;
    let addr = common::spawn_axum(app(RateLimitLayer::in_memory(1_000).policy(Policy::new(
        "per-ip",
        small_quota(burst),
        KeySource::client_ip(TrustedProxies::new()),
    ))))
    .await;
    for remaining in (0..burst).rev() {
        let response = common::get(addr, "/").await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("ratelimit-policy"),
            Some(r#""per-ip";q=3;w=180"#)
        );
        assert_eq!(
            response
                .header("ratelimit")
                .map(|v| v.split(';').nth(1).unwrap()),
            Some(format!("r={remaining}").as_str())
        );
        assert_eq!(response.body, b"ok");
    }
    let refused = common::get(addr, "/").await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(refused.header("retry-after"), Some("60"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some(r#""per-ip";q=3;w=180"#)
    );
    assert_eq!(refused.header("ratelimit"), Some(r#""per-ip";r=0;t=180"#));
    let json = refused.json();
    assert!(json["type"].as_str().unwrap().ends_with("#quota-exceeded"));
    assert_eq!(json["status"], 429);
    assert_eq!(json["violated_policies"][0], "per-ip");
    assert_eq!(json["retry_after"], 60);
}

#[tokio::test]
async fn rotated_x_forwarded_for_does_not_escape_the_limit() {
    let addr = common::spawn_axum(app(RateLimitLayer::in_memory(1_000).policy(Policy::new(
        "per-ip",
        small_quota(2),
        KeySource::client_ip(TrustedProxies::new()),
    ))))
    .await;
    let mut statuses = Vec::new();
    for n in 0..6 {
        let request = get_with(
            "/",
            &format!("X-Forwarded-For: 198.51.100.{n}\r\nForwarded: for=198.51.100.{n}\r\n"),
        );
        statuses.push(common::raw_request(addr, &request).await.status);
    }
    assert_eq!(statuses, vec![200, 200, 429, 429, 429, 429]);
}

#[tokio::test]
async fn several_policies_refuse_all_or_nothing_and_list_the_violated_ones() {
    let layer = RateLimitLayer::in_memory(1_000)
        .policy(Policy::new("per-ip", small_quota(5), KeySource::peer_ip()))
        .policy(Policy::global("global", small_quota(2)))
        .legacy_headers(true);
    let addr = common::spawn_axum(app(layer)).await;
    assert_eq!(common::get(addr, "/").await.status, 200);
    let second = common::get(addr, "/").await;
    assert_eq!(
        second.header("ratelimit"),
        Some(r#""per-ip";r=3;t=120, "global";r=0;t=120"#)
    );
    assert_eq!(second.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(second.header("x-ratelimit-limit"), Some("2"));
    let refused = common::get(addr, "/").await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json()["violated_policies"],
        serde_json::json!(["global"])
    );
    // The refused request consumed nothing of per-ip: still 3 left.
    assert_eq!(
        refused.header("ratelimit"),
        Some(r#""per-ip";r=3;t=120, "global";r=0;t=120"#)
    );
}

#[tokio::test]
async fn per_route_policies_share_the_store() {
    let limits = RateLimitLayer::in_memory(1_000).policy(Policy::new(
        "per-ip",
        small_quota(10),
        KeySource::peer_ip(),
    ));
    let login = RateLimitLayer::with_store(limits.store().clone()).policy(Policy::new(
        "login",
        small_quota(1),
        KeySource::peer_ip(),
    ));
    let store = limits.store().clone();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/login", get(|| async { "welcome" }).layer(login))
        .layer(limits);
    let addr = common::spawn_axum(app).await;
    assert_eq!(common::get(addr, "/login").await.status, 200);
    let refused = common::get(addr, "/login").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["violated_policies"][0], "login");
    let home = common::get(addr, "/").await;
    assert_eq!(home.status, 200);
    assert_eq!(home.header("ratelimit"), Some(r#""per-ip";r=7;t=180"#));
    assert_eq!(store.len(), 2);
}

/// A plain tower service (not axum): the inner error type is kept, keys
/// come from the `PeerAddr` extension, premium keys get their own quota,
/// a missing API key is a 401 problem, never a 500.
#[tokio::test]
async fn any_tower_service_premium_resolver_and_missing_key() {
    let premium = small_quota(3);
    let layer = RateLimitLayer::in_memory(1_000).policy(
        Policy::new(
            "api-key",
            small_quota(1),
            KeySource::header(HeaderName::from_static("x-api-key")),
        )
        .quota_resolver(move |head| {
            let key = head.headers.get("x-api-key")?;
            key.as_bytes().starts_with(b"premium-").then_some(premium)
        })
        .on_missing_key(MissingKey::Refuse(StatusCode::UNAUTHORIZED)),
    );
    let inner = tower::service_fn(|_request: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::from("ok")))
    });
    let mut service = tower::ServiceBuilder::new().layer(layer).service(inner);
    let mut call = |api_key: Option<&str>| {
        let mut request = Request::new(String::new());
        request
            .extensions_mut()
            .insert(PeerAddr(SocketAddr::from(([192, 0, 2, 1], 40000))));
        if let Some(api_key) = api_key {
            request
                .headers_mut()
                .insert("x-api-key", HeaderValue::from_str(api_key).unwrap());
        }
        let future = service
            .ready()
            .now_or_never()
            .unwrap()
            .unwrap()
            .call(request);
        // The in-process store decides inside `call`.
        future.now_or_never().unwrap()
    };
    let statuses = |calls: Vec<Result<Response<_>, Infallible>>| {
        calls
            .into_iter()
            .map(|response| response.unwrap().status().as_u16())
            .collect::<Vec<_>>()
    };
    let free: Vec<_> = (0..3).map(|_| call(Some("free-1"))).collect();
    assert_eq!(statuses(free), vec![200, 429, 429]);
    let paid: Vec<_> = (0..4).map(|_| call(Some("premium-1"))).collect();
    assert_eq!(statuses(paid), vec![200, 200, 200, 429]);
    let missing = call(None).unwrap();
    assert_eq!(missing.status(), 401);
    let refused = missing.extensions().get::<Refused>().unwrap();
    assert!(matches!(
        refused.downcast_ref::<RateLimitRefusal>(),
        Some(RateLimitRefusal::MissingKey { .. })
    ));
}

#[tokio::test]
async fn shadow_mode_refuses_nothing_but_still_counts() {
    let layer = RateLimitLayer::in_memory(1_000)
        .policy(Policy::new("per-ip", small_quota(2), KeySource::peer_ip()))
        .shadow(true);
    let addr = common::spawn_axum(app(layer)).await;
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let response = common::get(addr, "/").await;
        assert_eq!(response.status, 200);
        assert!(response.header("retry-after").is_none());
        remaining.push(response.header("ratelimit").unwrap().to_owned());
    }
    assert_eq!(remaining[1], r#""per-ip";r=0;t=120"#);
    // Would-be refusals consumed nothing.
    assert_eq!(remaining[3], r#""per-ip";r=0;t=120"#);
}

#[tokio::test]
async fn refusal_context_names_the_layer_policy_and_hashed_key() {
    let layer = RateLimitLayer::in_memory(100).policy(Policy::new(
        "per-ip",
        small_quota(1),
        KeySource::peer_ip(),
    ));
    let inner = tower::service_fn(|_request: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    let mut service = tower::ServiceBuilder::new().layer(layer).service(inner);
    let request = || {
        let mut request = Request::new(String::new());
        request
            .extensions_mut()
            .insert(PeerAddr(SocketAddr::from(([192, 0, 2, 9], 1))));
        request
    };
    service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap();
    let refused = service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap();
    let context = refused
        .extensions()
        .get::<Refused>()
        .unwrap()
        .refusal()
        .context();
    assert_eq!(context.layer, "rate_limit");
    assert_eq!(context.policy.as_deref(), Some("per-ip"));
    let key = context.key.unwrap();
    assert_eq!(key.len(), 12);
    // Twelve hex digits of the hash, never the address (the old check,
    // "does not contain 192", failed whenever the random hash did).
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    let retry_after = context.retry_after.unwrap();
    assert!(retry_after > Duration::from_secs(59) && retry_after <= Duration::from_secs(60));
}
