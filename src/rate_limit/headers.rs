//! The response headers of the rate limiter.
//!
//! Following draft-ietf-httpapi-ratelimit-headers (draft 09 and later),
//! both fields are Structured Field lists with one item per policy, the
//! item being the policy's name as an `sf-string`:
//!
//! ```text
//! RateLimit-Policy: "per-ip";q=100;w=2, "global";q=1000;w=1
//! RateLimit: "per-ip";r=57;t=1, "global";r=998;t=1
//! ```
//!
//! - `q`: the quota, requests admitted at once from a full bucket (the GCRA
//!   burst); `w`: the window in seconds in which an empty bucket refills
//!   (burst × emission interval), at least 1.
//! - `r`: requests that may still be made now; `t`: seconds until the
//!   bucket is full again (rounded up).
//!
//! A refusal adds `Retry-After` (seconds, rounded up, at least 1; RFC 9110).
//! The legacy `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (seconds) describe the most constrained policy, on
//! request ([`RateLimitLayer::legacy_headers`](super::RateLimitLayer::legacy_headers)).

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::gcra::Decision;
use super::store::Check;

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit` (legacy).
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining` (legacy).
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset` (legacy).
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Seconds, rounded up.
pub fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The header fields describing one request's decisions.
#[derive(Debug, Clone)]
pub struct RateLimitHeaders {
    policy: Option<HeaderValue>,
    state: Option<HeaderValue>,
    // Rare fields out of line: this value rides in every response future.
    legacy: Option<Box<[HeaderValue; 3]>>,
    retry_after: Option<Box<HeaderValue>>,
}

impl RateLimitHeaders {
    /// The fields for `checks` and their `decisions` (same order). Policy
    /// names are written as `sf-string`s: `"` and `\\` escaped, characters
    /// outside printable ASCII dropped.
    pub fn new(checks: &[Check], decisions: &[Decision], legacy: bool) -> Self {
        Self::with_policy_value(None, None, checks, decisions, legacy)
    }

    /// As [`new`](Self::new), with the `RateLimit-Policy` value already
    /// made (it depends only on the policies and their quotas, so the layer
    /// keeps it ready for the common case), and the fixed text of each
    /// `RateLimit` item when the checks are exactly the layer's policies.
    pub(crate) fn with_policy_value(
        policy_value: Option<HeaderValue>,
        prefixes: Option<&StatePrefixes>,
        checks: &[Check],
        decisions: &[Decision],
        legacy: bool,
    ) -> Self {
        let policy = policy_value.or_else(|| policy_header_value(checks));
        let mut state = FieldText::new();
        match prefixes {
            Some(prefixes) if prefixes.0.len() == checks.len() => {
                for (prefix, decision) in prefixes.0.iter().zip(decisions) {
                    state.push_bytes(prefix);
                    push_state_numbers(&mut state, decision);
                }
            }
            _ => {
                for (index, (check, decision)) in checks.iter().zip(decisions).enumerate() {
                    if index > 0 {
                        state.push_bytes(b", ");
                    }
                    write_sf_string(&mut state, &check.policy);
                    state.push_bytes(b";r=");
                    push_state_numbers(&mut state, decision);
                }
            }
        }
        let legacy = if legacy {
            decisions
                .iter()
                .min_by_key(|decision| (decision.allowed, decision.remaining))
                .map(|tightest| {
                    Box::new([
                        HeaderValue::from(tightest.limit),
                        HeaderValue::from(tightest.remaining),
                        HeaderValue::from(ceil_seconds(tightest.reset_after())),
                    ])
                })
        } else {
            None
        };
        Self {
            policy,
            state: state.value(),
            legacy,
            retry_after: None,
        }
    }

    /// Adds `Retry-After`.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(Box::new(HeaderValue::from(
            ceil_seconds(retry_after).max(1),
        )));
        self
    }

    /// Writes the fields into a response's headers. `RateLimit-Policy` and
    /// `RateLimit` are appended (a list may span several field lines, so an
    /// inner rate-limit layer's items are kept); the others replace any
    /// value the inner service set.
    pub fn apply(self, headers: &mut HeaderMap) {
        if let Some(policy) = self.policy {
            headers.append(RATELIMIT_POLICY.clone(), policy);
        }
        if let Some(state) = self.state {
            headers.append(RATELIMIT.clone(), state);
        }
        if let Some([limit, remaining, reset]) = self.legacy.map(|legacy| *legacy) {
            headers.insert(X_RATELIMIT_LIMIT.clone(), limit);
            headers.insert(X_RATELIMIT_REMAINING.clone(), remaining);
            headers.insert(X_RATELIMIT_RESET.clone(), reset);
        }
        if let Some(retry_after) = self.retry_after {
            headers.insert(RETRY_AFTER, *retry_after);
        }
    }
}

/// The `RateLimit-Policy` value of `checks`.
pub(crate) fn policy_header_value(checks: &[Check]) -> Option<HeaderValue> {
    let mut policy = FieldText::new();
    for (index, check) in checks.iter().enumerate() {
        if index > 0 {
            policy.push_bytes(b", ");
        }
        write_sf_string(&mut policy, &check.policy);
        policy.push_bytes(b";q=");
        push_number(&mut policy, u64::from(check.quota.burst()));
        policy.push_bytes(b";w=");
        push_number(&mut policy, ceil_seconds(check.quota.window()).max(1));
    }
    policy.value()
}

/// The fixed text of each policy's `RateLimit` item, `"name";r=` (after
/// `, ` for all but the first), written once per layer: escaping a name
/// on every request cost more than the numbers that follow it.
#[derive(Debug)]
pub(crate) struct StatePrefixes(Box<[Box<[u8]>]>);

impl StatePrefixes {
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let prefixes = names
            .into_iter()
            .enumerate()
            .map(|(index, name)| {
                let mut text = FieldText::new();
                if index > 0 {
                    text.push_bytes(b", ");
                }
                write_sf_string(&mut text, name);
                text.push_bytes(b";r=");
                text.as_bytes().into()
            })
            .collect();
        Self(prefixes)
    }
}

/// `r` and `t` of one `RateLimit` item, after its `;r=`.
fn push_state_numbers(out: &mut FieldText, decision: &Decision) {
    push_number(out, u64::from(decision.remaining));
    out.push_bytes(b";t=");
    push_number(out, ceil_seconds(decision.reset_after()));
}

/// A field value being written: on the stack while it fits (one or two
/// policies), so that the only allocation is the `HeaderValue`'s own.
/// Only ASCII is written into it.
struct FieldText {
    inline: [u8; 160],
    len: usize,
    spilled: Vec<u8>,
}

impl FieldText {
    fn new() -> Self {
        Self {
            inline: [0; 160],
            len: 0,
            spilled: Vec::new(),
        }
    }

    #[inline]
    fn push_bytes(&mut self, bytes: &[u8]) {
        if self.spilled.is_empty() {
            if let Some(room) = self.inline.get_mut(self.len..self.len + bytes.len()) {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
                return;
            }
            self.spilled.extend_from_slice(&self.inline[..self.len]);
        }
        self.spilled.extend_from_slice(bytes);
    }

    fn as_bytes(&self) -> &[u8] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }

    fn value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self.as_bytes()).ok()
    }
}

fn push_number(out: &mut FieldText, mut number: u64) {
    // The usual numbers (`t` in seconds, `r` under a burst of 100) as
    // fixed-length writes, which compile to plain stores.
    if number < 10 {
        return out.push_bytes(&[b'0' + number as u8]);
    }
    if number < 100 {
        return out.push_bytes(&[b'0' + (number / 10) as u8, b'0' + (number % 10) as u8]);
    }
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    out.push_bytes(&digits[start..]);
}

/// Writes `text` as an RFC 8941 `sf-string`: printable ASCII, with `"` and
/// `\\` escaped; other characters are dropped.
fn write_sf_string(out: &mut FieldText, text: &str) {
    out.push_bytes(b"\"");
    if text
        .bytes()
        .all(|byte| (b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\')
    {
        out.push_bytes(text.as_bytes());
        out.push_bytes(b"\"");
        return;
    }
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' => out.push_bytes(&[b'\\', byte]),
            b' '..=b'~' => out.push_bytes(&[byte]),
            // The bytes of characters outside printable ASCII (all of
            // them >= 0x80, never a `"` or `\\`).
            _ => {}
        }
    }
    out.push_bytes(b"\"");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::rate_limit::{KeyHash, Quota};

    #[test]
    fn long_fields_spill_to_the_heap_intact() {
        let mut text = FieldText::new();
        for _ in 0..100 {
            text.push_bytes(b"abc");
            text.push_bytes(b"d");
        }
        assert_eq!(
            text.as_bytes(),
            "abcd".repeat(100).as_bytes(),
            "inline part carried over whole"
        );
    }

    #[test]
    fn draft_syntax() {
        let quota = Quota::per_second(50).unwrap().with_burst(100).unwrap();
        let checks = [
            Check {
                policy: Arc::from("per-ip"),
                key: KeyHash([0; 16]),
                quota,
                cost: 1,
            },
            Check {
                policy: Arc::from("odd\"name"),
                key: KeyHash([0; 16]),
                quota: Quota::per_minute(10).unwrap(),
                cost: 1,
            },
        ];
        let decisions = [quota.decide(0, 0, 1), checks[1].quota.decide(0, 0, 1)];
        let mut headers = HeaderMap::new();
        RateLimitHeaders::new(&checks, &decisions, true)
            .with_retry_after(Duration::from_millis(1500))
            .apply(&mut headers);
        assert_eq!(
            headers["ratelimit-policy"],
            r#""per-ip";q=100;w=2, "odd\"name";q=10;w=60"#
        );
        assert_eq!(
            headers["ratelimit"],
            r#""per-ip";r=99;t=1, "odd\"name";r=9;t=6"#
        );
        assert_eq!(headers["retry-after"], "2");
        assert_eq!(headers["x-ratelimit-limit"], "10");
        assert_eq!(headers["x-ratelimit-remaining"], "9");
    }

    #[test]
    fn ready_made_prefixes_write_what_the_checks_would() {
        let quota = Quota::per_second(50).unwrap().with_burst(100).unwrap();
        let names = ["per-ip", "odd\"name", "é-x"];
        let checks: Vec<Check> = names
            .iter()
            .map(|name| Check {
                policy: Arc::from(*name),
                key: KeyHash([0; 16]),
                quota,
                cost: 1,
            })
            .collect();
        let decisions: Vec<Decision> = (0..names.len() as u64)
            .map(|i| quota.decide(i * 500_000_000, 0, 1))
            .collect();
        let prefixes = StatePrefixes::new(names);
        let mut generic = HeaderMap::new();
        RateLimitHeaders::new(&checks, &decisions, false).apply(&mut generic);
        let mut ready = HeaderMap::new();
        RateLimitHeaders::with_policy_value(None, Some(&prefixes), &checks, &decisions, false)
            .apply(&mut ready);
        assert_eq!(generic, ready);
        assert_eq!(
            ready["ratelimit"],
            r#""per-ip";r=99;t=1, "odd\"name";r=74;t=1, "-x";r=49;t=2"#
        );
    }

    #[test]
    fn numbers_inline_and_spilled() {
        for number in [0, 7, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut inline = FieldText::new();
            push_number(&mut inline, number);
            assert_eq!(inline.as_bytes(), number.to_string().as_bytes());
            let mut spilled = FieldText::new();
            spilled.push_bytes(&[b'x'; 150]);
            push_number(&mut spilled, number);
            assert_eq!(spilled.as_bytes()[150..], *number.to_string().as_bytes());
        }
    }
}
