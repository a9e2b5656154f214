//! The configuration: every problem of a file reported at once, with its
//! key path, line and column; typed values; the round trip through TOML.

use tower_harden::config::ConfigErrors;
use tower_harden::{Harden, HardenConfig};

/// Each problem as `key (line L, column C): reason`.
fn lines(errors: &ConfigErrors) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

#[test]
fn several_errors_in_one_file_are_reported_together_with_line_and_column() {
    let text = r#"
[input]
max_body = "lots"
max_headers = "many"

[deadline]
request = "soon"
trusted_callers = ["10.0.0.0/8", "10.0.0.0/99"]

[[rate_limit.policies]]
name = "per-ip"
key = "cookie"
"#;
    let errors = HardenConfig::from_toml(text).unwrap_err();
    assert_eq!(errors.len(), 5, "{errors}");
    let keys: Vec<_> = errors.iter().map(|error| error.key()).collect();
    assert_eq!(
        keys,
        [
            "input.max_body",
            "input.max_headers",
            "deadline.request",
            "deadline.trusted_callers[1]",
            "rate_limit.policies[0].key",
        ]
    );
    let positions: Vec<_> = errors
        .iter()
        .map(|error| {
            let position = error.position().expect("read from a file");
            (position.line, position.column)
        })
        .collect();
    assert_eq!(positions, [(3, 12), (4, 15), (7, 11), (8, 34), (12, 7)]);
    let text = errors.to_string();
    assert!(
        text.starts_with("invalid configuration (5 problems):\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  input.max_body (line 3, column 12): `lots` is not a size"),
        "{text}"
    );
    assert_eq!(errors.key(), "input.max_body");
}

#[test]
fn an_unknown_key_and_a_bad_value_are_reported_together() {
    let errors =
        HardenConfig::from_toml("[input]\nmax_bodyy = 5\nmax_uri = -1\n[nope]\n").unwrap_err();
    assert_eq!(
        lines(&errors),
        [
            "input.max_bodyy (line 2, column 1): unknown key `max_bodyy`, expected one of \
             `max_body`, `max_decoded_body`, `max_zstd_window`, `max_route_body`, `max_headers`, \
             `max_header_bytes`, `max_uri`",
            "input.max_uri (line 3, column 11): a size cannot be negative",
            "nope (line 4, column 2): unknown key `nope`, expected one of `input`, `deadline`, \
             `server`, `rate_limit`, `observe`, `overload`, `problems`",
        ]
    );
}

#[test]
fn enum_errors_list_the_allowed_values() {
    let text = "[rate_limit]\nbackend = \"memcached\"\non_store_failure = \"maybe\"\n\
                proxy_header = \"x-real-ip\"\n[observe]\nsuccess_level = \"loud\"\n";
    let errors = HardenConfig::from_toml(text).unwrap_err();
    let reasons: Vec<_> = errors.iter().map(|error| error.reason()).collect();
    assert_eq!(
        reasons,
        [
            "unknown value `memcached`, expected one of `memory`, `redis`",
            "unknown value `maybe`, expected one of `open`, `closed`, `fallback`",
            "unknown value `x-real-ip`, expected one of `x-forwarded-for`, `forwarded`",
            "unknown value `loud`, expected one of `trace`, `debug`, `info`, `warn`, `error`",
        ]
    );
    let error = HardenConfig::from_toml("[[rate_limit.policies]]\nkey = \"cookie\"").unwrap_err();
    assert_eq!(
        error.reason(),
        "unknown value `cookie`, expected one of `client_ip`, `peer_ip`, `global`, `header:NAME`"
    );
}

#[test]
fn keywords_ignore_ascii_case_policy_keys_too() {
    use tower_harden::config::{Backend, KeyKind};
    let text = "[rate_limit]\nbackend = \"Memory\"\n\
                [[rate_limit.policies]]\nname = \"a\"\nkey = \"CLIENT_IP\"\n\
                [[rate_limit.policies]]\nname = \"b\"\nkey = \"Header:X-Api-Key\"\n";
    let config = HardenConfig::from_toml(text).unwrap();
    assert_eq!(config.rate_limit.backend, Backend::Memory);
    assert_eq!(config.rate_limit.policies[0].key, KeyKind::ClientIp);
    assert_eq!(
        config.rate_limit.policies[1].key,
        KeyKind::Header(http::HeaderName::from_static("x-api-key"))
    );
}

#[test]
fn untrusted_text_in_errors_is_escaped_and_capped() {
    let value = format!("memory\\u001b[31m{}", "x".repeat(500));
    let text = format!("[rate_limit]\nbackend = \"{value}\"\n\"evil\\nkey\" = 1\n");
    let errors = HardenConfig::from_toml(&text).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors}");
    for error in &errors {
        let line = error.to_string();
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line:?}");
        assert!(line.len() < 400, "{line}");
    }
    let first = errors.first().reason();
    assert!(
        first.starts_with("unknown value `memory\\u{1b}[31mxxx"),
        "{first}"
    );
    assert!(first.contains("…(+"), "capped: {first}");
    assert_eq!(errors.iter().nth(1).unwrap().key(), "rate_limit.evil\\nkey");
    // serde's own messages quote the value; capped too.
    let text = format!("[input]\nmax_headers = \"{}\"", "y".repeat(500));
    let errors = HardenConfig::from_toml(&text).unwrap_err();
    assert!(errors.reason().len() < 200, "{errors}");
}

#[test]
fn duplicate_policy_names_are_refused_naming_the_key() {
    let policy = |name: &str| {
        format!("[[rate_limit.policies]]\nname = \"{name}\"\nkey = \"peer_ip\"\nquota = 1\n")
    };
    let text = format!("{}{}", policy("api"), policy("api"));
    let config = HardenConfig::from_toml(&text).unwrap();
    let errors = Harden::from_config(&config).unwrap_err();
    assert_eq!(
        lines(&errors),
        ["rate_limit.policies[1].name (line 6, column 8): `api` is already the name of rate_limit.policies[0].name"]
    );
}

#[test]
fn names_equal_once_sanitized_for_headers_are_refused() {
    let text =
        "[[rate_limit.policies]]\nname = \"per ip\"\n[[rate_limit.policies]]\nname = \"per/ip\"\n";
    let config = HardenConfig::from_toml(text).unwrap();
    let errors = Harden::from_config(&config).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors}");
    assert_eq!(errors.key(), "rate_limit.policies[1].name");
    assert!(
        errors
            .reason()
            .contains("`per/ip` and `per ip` (rate_limit.policies[0].name) are both `per_ip`"),
        "{errors}"
    );
    // Names that differ in what headers keep are fine.
    let text =
        "[[rate_limit.policies]]\nname = \"per-ip\"\n[[rate_limit.policies]]\nname = \"per.ip\"\n";
    Harden::from_config(&HardenConfig::from_toml(text).unwrap()).unwrap();
}

#[test]
fn every_problem_found_when_building_is_reported_with_its_position() {
    let text = r#"[input]
max_body = 0
[deadline]
status = 200
[server]
proxy_protocol = true
[rate_limit]
max_keys = 0
[[rate_limit.policies]]
name = "x"
burst = 0
"#;
    let config = HardenConfig::from_toml(text).unwrap();
    let errors = Harden::from_config(&config).unwrap_err();
    assert_eq!(
        lines(&errors),
        [
            "input.max_body (line 2, column 12): must be greater than zero",
            "deadline.status (line 4, column 10): must be a 5xx status such as 503 or 504",
            "server.proxy_protocol (line 6, column 18): needs server.trusted_load_balancers, the CIDRs of the load balancers: a PROXY header from any other peer closes its connection",
            "rate_limit.max_keys (line 8, column 12): must be greater than zero",
            "rate_limit.policies[0].burst (line 11, column 9): must be greater than zero",
        ]
    );
    // Built in code: the same problems, without positions.
    let mut config = HardenConfig::default();
    config.input.max_body = 0;
    config.rate_limit.policies[0].quota = 0;
    let errors = Harden::from_config(&config).unwrap_err();
    assert_eq!(
        lines(&errors),
        [
            "input.max_body: must be greater than zero",
            "rate_limit.policies[0].quota: must be greater than zero",
        ]
    );
}

#[test]
fn the_default_config_round_trips_through_toml() {
    let text = toml::to_string(&HardenConfig::default()).unwrap();
    let read = HardenConfig::from_toml(&text).unwrap();
    assert_eq!(read, HardenConfig::default(), "{text}");
    // Written as a user would write it.
    assert!(text.contains("max_body = \"1MiB\""), "{text}");
    assert!(text.contains("request = \"10s\""), "{text}");
    assert!(text.contains("backend = \"memory\""), "{text}");
    assert!(text.contains("key = \"client_ip\""), "{text}");
    assert!(text.contains("success_level = \"info\""), "{text}");
}

#[test]
fn a_config_with_every_kind_of_value_round_trips() {
    let text = r#"
[input]
max_route_body = "4MiB"
[deadline]
trusted_callers = ["10.0.0.0/8", "192.0.2.7"]
[server]
max_header_bytes = 70000
proxy_protocol = true
trusted_load_balancers = ["10.0.0.0/8"]
[rate_limit]
trusted_proxies = ["2001:db8::/32"]
proxy_header = "Forwarded"
on_store_failure = "closed"
[[rate_limit.policies]]
name = "api"
key = "header:X-Api-Key"
period = "1m 30s"
[observe]
log_headers = ["user-agent"]
client_error_level = "debug"
"#;
    let config = HardenConfig::from_toml(text).unwrap();
    assert_eq!(config.input.max_route_body, Some(4 << 20));
    assert_eq!(
        config.deadline.trusted_callers[1].to_string(),
        "192.0.2.7/32"
    );
    assert_eq!(config.server.max_header_bytes, 70000);
    assert!(config.server.proxy_protocol);
    assert_eq!(
        config.server.trusted_load_balancers[0].to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(
        config.rate_limit.policies[0].key,
        tower_harden::config::KeyKind::Header(http::HeaderName::from_static("x-api-key"))
    );
    assert_eq!(
        config.rate_limit.policies[0].period,
        std::time::Duration::from_secs(90)
    );
    let written = toml::to_string(&config).unwrap();
    assert_eq!(
        HardenConfig::from_toml(&written).unwrap(),
        config,
        "{written}"
    );
    // And through another serde format.
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<HardenConfig>(&json).unwrap(), config);
    Harden::from_config(&config).unwrap();
}

#[test]
fn a_syntax_error_is_reported_with_its_position() {
    let errors = HardenConfig::from_toml("[input\nmax_body = 1").unwrap_err();
    let first = errors.first();
    assert_eq!(first.key(), "");
    assert_eq!(first.position().map(|p| p.line), Some(1), "{errors}");
}

#[test]
fn a_policy_ipv6_prefix_is_checked() {
    let config = HardenConfig::from_toml(
        "[[rate_limit.policies]]\nname = \"a\"\nipv6_prefix = 0\n\
         [[rate_limit.policies]]\nname = \"b\"\nkey = \"global\"\nipv6_prefix = 48\n\
         [[rate_limit.policies]]\nname = \"c\"\nkey = \"peer_ip\"\nipv6_prefix = 48\n",
    )
    .unwrap();
    assert_eq!(config.rate_limit.policies[2].ipv6_prefix, Some(48));
    assert_eq!(config.rate_limit.policies[0].ipv6_prefix, Some(0));
    let errors = Harden::from_config(&config).unwrap_err();
    assert_eq!(
        lines(&errors),
        [
            "rate_limit.policies[0].ipv6_prefix (line 3, column 15): must be between 1 and 128",
            "rate_limit.policies[1].ipv6_prefix (line 7, column 15): only applies to `client_ip` and `peer_ip` keys",
        ]
    );
    let config = HardenConfig::from_toml("[[rate_limit.policies]]\nipv6_prefix = 129\n").unwrap();
    assert_eq!(
        Harden::from_config(&config).unwrap_err().key(),
        "rate_limit.policies[0].ipv6_prefix"
    );
}
