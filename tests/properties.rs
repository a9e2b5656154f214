//! Property tests on every parser of untrusted text: forwarded headers,
//! request ids, `traceparent` / `tracestate`, the inbound deadline header
//! (through the layer: its parser is private) and the configuration file.
//! No input panics; every refusal is a typed error; what is accepted is
//! what a model of the format says.
//!
//! 10,000 cases each, unless `PROPTEST_CASES` says otherwise.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Empty;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use tower::{Layer, ServiceExt};
use tower_harden::context::{
    Budget, PeerAddr, RequestId, RequestIdRefusal, TraceParent, TraceParentRefusal, TraceState,
    TraceStateRefusal, TrustedNetworks, REQUEST_DEADLINE_HEADER,
};
use tower_harden::deadline::RequestDeadlineLayer;
use tower_harden::rate_limit::{ClientIpError, ProxyHeader, TrustedProxies};
use tower_harden::{Harden, HardenConfig};

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(10_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Bytes that lean towards the grammar under test: its delimiters, digits,
/// hex, blanks, quotes, controls and the odd high byte.
fn hostile_bytes(alphabet: &'static [u8], max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            6 => prop::sample::select(alphabet),
            1 => any::<u8>(),
        ],
        0..max_len,
    )
}

const FORWARDED_ALPHABET: &[u8] =
    b"0123456789abcdefABCDEF.:[]%,;=\"\\ \tforFORbyprotohostunknown_-x";

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
        // The trusted network below, often.
        any::<u8>().prop_map(|last| IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))),
    ]
}

fn proxies(header: ProxyHeader) -> TrustedProxies {
    TrustedProxies::new()
        .trust("10.0.0.0/8".parse().unwrap())
        .trust("fd00::/8".parse().unwrap())
        .header(header)
        .max_hops(4)
}

fn is_trusted(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.octets()[0] == 0xfd,
    }
}

proptest! {
    #![proptest_config(cases())]

    /// Arbitrary forwarding headers: an untrusted peer is always the
    /// client; otherwise an address (never a trusted one unless every hop
    /// is trusted) or a typed error.
    #[test]
    fn forwarded_headers_never_panic(
        peer in any_ip(),
        values in prop::collection::vec(hostile_bytes(FORWARDED_ALPHABET, 120), 0..4),
        forwarded in any::<bool>(),
    ) {
        let (header, name) = if forwarded {
            (ProxyHeader::Forwarded, HeaderName::from_static("forwarded"))
        } else {
            (ProxyHeader::XForwardedFor, HeaderName::from_static("x-forwarded-for"))
        };
        let mut headers = HeaderMap::new();
        for value in &values {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(name.clone(), value);
            }
        }
        let result = proxies(header).client_ip(peer, &headers);
        if !is_trusted(peer) {
            prop_assert_eq!(result, Ok(peer.to_canonical()));
        }
        match result {
            Ok(ip) => prop_assert_eq!(ip, ip.to_canonical()),
            Err(ClientIpError::InvalidEntry | ClientIpError::TooManyHops) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    /// A well-formed chain `client, trusted...` behind a trusted peer
    /// yields the client, in both header syntaxes.
    #[test]
    fn a_well_formed_chain_yields_its_client(
        client in any_ip().prop_filter("an untrusted client", |ip| !is_trusted(*ip)),
        hops in prop::collection::vec(any::<u8>(), 0..3),
        forwarded in any::<bool>(),
        with_port in any::<bool>(),
    ) {
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let node = |ip: IpAddr| match (ip, forwarded, with_port) {
            (IpAddr::V6(v6), true, true) => format!("for=\"[{v6}]:4711\""),
            (IpAddr::V6(v6), true, false) => format!("for=\"[{v6}]\""),
            (IpAddr::V4(v4), true, true) => format!("for=\"{v4}:4711\""),
            (IpAddr::V4(v4), true, false) => format!("for={v4}"),
            (IpAddr::V6(v6), false, true) => format!("[{v6}]:4711"),
            (ip, false, _) => ip.to_string(),
        };
        let mut chain = vec![node(client)];
        chain.extend(hops.iter().map(|&last| node(IpAddr::V4(Ipv4Addr::new(10, 1, 1, last)))));
        let (header, name) = if forwarded {
            (ProxyHeader::Forwarded, "forwarded")
        } else {
            (ProxyHeader::XForwardedFor, "x-forwarded-for")
        };
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(&chain.join(", ")).unwrap());
        prop_assert_eq!(proxies(header).client_ip(peer, &headers), Ok(client.to_canonical()));
    }

    /// Whatever the client wrote into the header (any byte a header value
    /// may hold: above 0x7f, unclosed quotes, backslashes), the entries the
    /// trusted proxies appended to it still yield the client: only the
    /// entries the walk reaches are parsed, from the right.
    #[test]
    fn what_the_client_wrote_cannot_unkey_it(
        written in hostile_bytes(FORWARDED_ALPHABET, 80),
        client in any_ip().prop_filter("an untrusted client", |ip| !is_trusted(*ip)),
        hops in prop::collection::vec(any::<u8>(), 0..3),
        forwarded in any::<bool>(),
        separate_field in any::<bool>(),
    ) {
        // A header value holds visible ASCII, blanks and bytes above 0x7f.
        let written: Vec<u8> = written
            .into_iter()
            .filter(|&byte| byte == b'\t' || (b' '..=b'~').contains(&byte) || byte >= 0x80)
            .collect();
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        // What proxies write: nginx's `$proxy_add_x_forwarded_for`, or a
        // `Forwarded` element with the address quoted when RFC 7239 asks.
        let node = |ip: IpAddr| match (ip, forwarded) {
            (IpAddr::V6(v6), true) => format!("for=\"[{v6}]:4711\";proto=https"),
            (IpAddr::V4(v4), true) => format!("for={v4};by=10.9.9.9"),
            (ip, false) => ip.to_string(),
        };
        let mut appended = vec![node(client)];
        appended.extend(hops.iter().map(|&last| node(IpAddr::V4(Ipv4Addr::new(10, 1, 1, last)))));
        let appended = appended.join(", ");
        let (header, name) = if forwarded {
            (ProxyHeader::Forwarded, HeaderName::from_static("forwarded"))
        } else {
            (ProxyHeader::XForwardedFor, HeaderName::from_static("x-forwarded-for"))
        };
        let mut headers = HeaderMap::new();
        if separate_field {
            if let Ok(value) = HeaderValue::from_bytes(&written) {
                headers.append(name.clone(), value);
            }
            headers.append(name, HeaderValue::from_str(&appended).unwrap());
        } else {
            let mut value = written;
            value.extend_from_slice(b", ");
            value.extend_from_slice(appended.as_bytes());
            headers.append(name, HeaderValue::from_bytes(&value).unwrap());
        }
        prop_assert_eq!(proxies(header).client_ip(peer, &headers), Ok(client.to_canonical()));
    }

    /// `Forwarded` quoting (RFC 7239, RFC 9110 quoted-string): a quoted
    /// node with quoted-pairs anywhere in it and quoted commas and
    /// semicolons in the other parameters reads as the node.
    #[test]
    fn forwarded_quoted_strings_unescape(
        client in any_ip().prop_filter("an untrusted client", |ip| !is_trusted(*ip)),
        escape_mask in any::<u64>(),
        other in "[a-z,;= \"\\\\]{0,12}",
    ) {
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let node = match client {
            IpAddr::V6(v6) => format!("[{v6}]:4711"),
            IpAddr::V4(v4) => format!("{v4}:4711"),
        };
        let mut quoted = String::from("\"");
        for (index, character) in node.chars().enumerate() {
            if escape_mask >> (index % 64) & 1 == 1 {
                quoted.push('\\');
            }
            quoted.push(character);
        }
        quoted.push('"');
        let mut other_quoted = String::from("\"");
        for character in other.chars() {
            if matches!(character, '"' | '\\') {
                other_quoted.push('\\');
            }
            other_quoted.push(character);
        }
        other_quoted.push('"');
        let value = format!("by={other_quoted};for={quoted};host={other_quoted}, for=10.0.0.7");
        let mut headers = HeaderMap::new();
        headers.insert("forwarded", HeaderValue::from_str(&value).unwrap());
        prop_assert_eq!(
            proxies(ProxyHeader::Forwarded).client_ip(peer, &headers),
            Ok(client.to_canonical())
        );
    }

    /// Request ids: accepted exactly when 1 to `max_len` bytes of
    /// `[A-Za-z0-9._:-]`, verbatim; refused with the reason otherwise.
    #[test]
    fn request_ids_are_accepted_exactly_when_plain(
        value in hostile_bytes(b"abcXYZ019._:-", 160),
        max_len in 0usize..150,
    ) {
        let plain = |b: &u8| b.is_ascii_alphanumeric() || b"._:-".contains(b);
        match RequestId::try_parse(&value, max_len) {
            Ok(id) => {
                prop_assert!(!value.is_empty() && value.len() <= max_len);
                prop_assert!(value.iter().all(plain));
                prop_assert_eq!(id.as_str().as_bytes(), &value[..]);
            }
            Err(RequestIdRefusal::Empty) => prop_assert!(value.is_empty()),
            Err(RequestIdRefusal::TooLong { len, max_len: bound }) => {
                prop_assert_eq!((len, bound), (value.len(), max_len));
                prop_assert!(len > max_len);
            }
            Err(RequestIdRefusal::InvalidByte { position }) => {
                prop_assert!(!plain(&value[position]));
                prop_assert!(value[..position].iter().all(plain));
            }
            Err(other) => prop_assert!(false, "unexpected refusal {other:?}"),
        }
        if let Ok(text) = std::str::from_utf8(&value) {
            let parsed = RequestId::parse(text);
            prop_assert_eq!(
                parsed.is_some(),
                RequestId::try_parse(&value, RequestId::DEFAULT_MAX_LEN).is_ok()
            );
        }
    }

    /// Arbitrary `traceparent` bytes: parsed or refused with a typed
    /// reason, never a panic; what parses has non-zero ids.
    #[test]
    fn traceparent_never_panics(value in hostile_bytes(b"0123456789abcdefABCDEF-xz ", 70)) {
        match TraceParent::parse_bytes(&value) {
            Ok(parent) => {
                prop_assert_ne!(parent.trace_id().to_bytes(), [0; 16]);
                prop_assert_ne!(parent.parent_id().to_bytes(), [0; 8]);
                prop_assert_ne!(parent.version(), 0xff);
            }
            Err(refusal) => {
                let _typed: TraceParentRefusal = refusal;
                prop_assert!(!refusal.to_string().is_empty());
            }
        }
        if let Ok(text) = std::str::from_utf8(&value) {
            prop_assert_eq!(
                TraceParent::parse(text).is_ok(),
                TraceParent::parse_bytes(&value).is_ok()
            );
        }
    }

    /// Every well-formed version-00 `traceparent` round-trips.
    #[test]
    fn well_formed_traceparents_parse(
        trace in any::<[u8; 16]>().prop_filter("non-zero", |b| *b != [0; 16]),
        parent in any::<[u8; 8]>().prop_filter("non-zero", |b| *b != [0; 8]),
        flags in any::<u8>(),
    ) {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let text = format!("00-{}-{}-{flags:02x}", hex(&trace), hex(&parent));
        let parsed = TraceParent::parse(&text).unwrap();
        prop_assert_eq!(parsed.trace_id().to_bytes(), trace);
        prop_assert_eq!(parsed.parent_id().to_bytes(), parent);
        prop_assert_eq!(parsed.flags(), flags);
    }

    /// Arbitrary `tracestate`: kept (bounded, without controls) or refused
    /// with a typed reason.
    #[test]
    fn tracestate_never_panics(
        value in hostile_bytes(b"abz09_-*/@=, \t", 600),
        max_len in 0usize..700,
    ) {
        let text = String::from_utf8_lossy(&value);
        match TraceState::parse(&text, max_len) {
            Ok(state) => {
                prop_assert!(state.as_str().len() <= max_len);
                prop_assert!(!state.as_str().chars().any(char::is_control) || state.as_str().contains('\t'));
                prop_assert!(state.as_str().split(',').filter(|m| !m.trim().is_empty()).count() <= TraceState::MAX_MEMBERS);
            }
            Err(TraceStateRefusal::TooLong { len, max_len: bound }) => prop_assert!(len > bound),
            Err(refusal) => {
                let _typed: TraceStateRefusal = refusal;
            }
        }
    }
}

/// The deadline header through the layer (its parser is private): a
/// trusted caller's well-formed value (1 to 10 digits) may only shorten the
/// configured deadline; anything else leaves it as configured.
#[test]
fn the_deadline_header_only_ever_shortens_the_budget() {
    const CONFIGURED: Duration = Duration::from_secs(10);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layer = RequestDeadlineLayer::new(CONFIGURED)
        .trust_inbound(TrustedNetworks::cidrs(["127.0.0.1/32"]).unwrap());
    let service = layer.layer(tower::service_fn(|request: Request<_>| async move {
        let budget = *request.extensions().get::<Budget>().expect("a budget");
        let mut response = Response::new(Empty::<Bytes>::new());
        response
            .headers_mut()
            .insert("x-budget-ms", (budget.total().as_millis() as u64).into());
        Ok::<_, Infallible>(response)
    }));
    let budget_of = |response: &Response<_>| -> Duration {
        Duration::from_millis(
            response.headers()["x-budget-ms"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap(),
        )
    };
    proptest!(cases(), |(
        value in hostile_bytes(b"0123456789 +-.e", 14),
        trusted in any::<bool>(),
    )| {
        let Ok(header) = HeaderValue::from_bytes(&value) else {
            return Ok(());
        };
        let mut request = Request::new(Empty::<Bytes>::new());
        request.headers_mut().insert(REQUEST_DEADLINE_HEADER.clone(), header);
        let peer: SocketAddr = if trusted { "127.0.0.1:4000" } else { "192.0.2.1:4000" }
            .parse()
            .unwrap();
        request.extensions_mut().insert(PeerAddr(peer));
        let response = runtime.block_on(service.clone().oneshot(request)).unwrap();
        // The model: 1 to 10 ASCII digits, from a trusted caller.
        let model = (trusted
            && (1..=10).contains(&value.len())
            && value.iter().all(u8::is_ascii_digit))
        .then(|| Duration::from_millis(std::str::from_utf8(&value).unwrap().parse().unwrap()));
        match model {
            // Already expired: refused, or answered by a handler that was
            // ready at once, with nothing left.
            Some(inbound) if inbound.is_zero() => {
                if response.status() != StatusCode::SERVICE_UNAVAILABLE {
                    prop_assert_eq!(response.status(), StatusCode::OK);
                    prop_assert_eq!(budget_of(&response), Duration::ZERO);
                }
            }
            Some(inbound) => {
                prop_assert_eq!(response.status(), StatusCode::OK);
                prop_assert_eq!(budget_of(&response), inbound.min(CONFIGURED));
            }
            None => {
                prop_assert_eq!(response.status(), StatusCode::OK);
                prop_assert_eq!(budget_of(&response), CONFIGURED);
            }
        }
    });
}

const EXAMPLE_CONFIG: &str = include_str!("../examples/harden.toml");

/// What a mutation puts in place of a value.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (
            any::<u64>(),
            prop::sample::select(
                &["ns", "ms", "s", "m", "h", "d", "y", "KiB", "MiB", "GiB", "TB", "EiB", ""][..]
            )
        )
            .prop_map(|(n, unit)| format!("\"{n}{unit}\"")),
        "\"[ -~]{0,20}\"",
        prop::sample::select(
            &[
                "true",
                "-1",
                "0",
                "1e309",
                "nan",
                "inf",
                "\"\"",
                "[]",
                "[\"::/0\"]",
                "[\"10.0.0.0/33\"]",
                "\"redis\"",
                "\"fallback\"",
                "\"closed\"",
                "\"header:\"",
                "\"header:x y\"",
                "{}",
                "\"1s\"",
                "\"0s\"",
                "\"18446744073709551615s\"",
                "256",
                "65",
                "129",
                "\"\\u0000\"",
            ][..]
        )
        .prop_map(String::from),
        "[ -~]{0,12}",
    ]
}

/// Checks the contract of the configuration path for one text: parsing
/// and building never panic; every refusal names its key.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    match HardenConfig::from_toml(text) {
        Ok(config) => match Harden::from_config(&config) {
            Ok(_) => {}
            Err(error) => {
                prop_assert!(!error.key().is_empty(), "{error}");
                prop_assert!(!error.reason().is_empty(), "{error}");
            }
        },
        Err(error) => {
            prop_assert!(!error.reason().is_empty(), "{error}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases())]

    /// Arbitrary text as a configuration file.
    #[test]
    fn any_text_as_a_config_file_is_a_typed_error_or_a_stack(
        text in prop_oneof![
            "[ -~\n\t]{0,200}",
            hostile_bytes(b"[]=\"\n#.abcdefghijklmnopqrstuvwxyz_0123456789 ", 300)
                .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        ]
    ) {
        check_config(&text)?;
    }

    /// The example file with values replaced, lines dropped or repeated.
    #[test]
    fn mutated_example_configs_are_a_typed_error_or_a_stack(
        mutations in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, hostile_value()), 1..4)
    ) {
        let mut lines: Vec<String> = EXAMPLE_CONFIG.lines().map(String::from).collect();
        for (index, kind, value) in mutations {
            let at = index.index(lines.len());
            match kind {
                0 | 1 => {
                    if let Some((key, _)) = lines[at].split_once('=') {
                        lines[at] = format!("{key}= {value}");
                    }
                }
                2 => {
                    lines.remove(at);
                }
                _ => {
                    let line = lines[at].clone();
                    lines.insert(at, line);
                }
            }
        }
        check_config(&lines.join("\n"))?;
    }
}
