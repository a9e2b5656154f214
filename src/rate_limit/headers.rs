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
    /// names are written as `sf-string`s: `"` and `\` escaped, characters
    /// outside printable ASCII dropped.
    pub fn new(checks: &[Check], decisions: &[Decision], legacy: bool) -> Self {
        Self::with_policy_value(None, checks, decisions, legacy)
    }

    /// As [`new`](Self::new), with the `RateLimit-Policy` value already
    /// made (it depends only on the policies and their quotas, so the layer
    /// keeps it ready for the common case).
    pub(crate) fn with_policy_value(
        policy_value: Option<HeaderValue>,
        checks: &[Check],
        decisions: &[Decision],
        legacy: bool,
    ) -> Self {
        let policy = policy_value.or_else(|| policy_header_value(checks));
        let mut state = FieldText::new();
        for (index, (check, decision)) in checks.iter().zip(decisions).enumerate() {
            if index > 0 {
                state.push_str(", ");
            }
            write_sf_string(&mut state, &check.policy);
            state.push_str(";r=");
            push_number(&mut state, u64::from(decision.remaining));
            state.push_str(";t=");
            push_number(&mut state, ceil_seconds(decision.reset_after()));
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
            policy.push_str(", ");
        }
        write_sf_string(&mut policy, &check.policy);
        policy.push_str(";q=");
        push_number(&mut policy, u64::from(check.quota.burst()));
        policy.push_str(";w=");
        push_number(&mut policy, ceil_seconds(check.quota.window()).max(1));
    }
    policy.value()
}

/// A field value being written: on the stack while it fits (one or two
/// policies), so that the only allocation is the `HeaderValue`'s own.
struct FieldText {
    inline: [u8; 160],
    len: usize,
    spilled: String,
}

impl FieldText {
    fn new() -> Self {
        Self {
            inline: [0; 160],
            len: 0,
            spilled: String::new(),
        }
    }

    fn push_str(&mut self, text: &str) {
        if self.spilled.is_empty() {
            if let Some(room) = self.inline.get_mut(self.len..self.len + text.len()) {
                room.copy_from_slice(text.as_bytes());
                self.len += text.len();
                return;
            }
            // Only whole `&str`s were copied in: still UTF-8.
            self.spilled
                .push_str(std::str::from_utf8(&self.inline[..self.len]).unwrap_or(""));
        }
        self.spilled.push_str(text);
    }

    fn push(&mut self, character: char) {
        self.push_str(character.encode_utf8(&mut [0; 4]));
    }

    fn value(&self) -> Option<HeaderValue> {
        let bytes = if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            self.spilled.as_bytes()
        };
        HeaderValue::from_bytes(bytes).ok()
    }
}

fn push_number(out: &mut FieldText, mut number: u64) {
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
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or("0"));
}

/// Writes `text` as an RFC 8941 `sf-string`: printable ASCII, with `"` and
/// `\` escaped; other characters are dropped.
fn write_sf_string(out: &mut FieldText, text: &str) {
    out.push('"');
    if text
        .bytes()
        .all(|byte| (b' '..=b'~').contains(&byte) && byte != b'"' && byte != b'\\')
    {
        out.push_str(text);
    } else {
        for character in text.chars() {
            match character {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(character);
                }
                ' '..='~' => out.push(character),
                _ => {}
            }
        }
    }
    out.push('"');
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
            text.push_str("abc");
            text.push('é');
        }
        assert_eq!(
            text.spilled,
            "abcé".repeat(100),
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
}
