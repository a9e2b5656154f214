//! Redaction of secrets in text on its way to a log: credentials in URLs,
//! key-value secrets, `Bearer`/`Basic` credentials, and patterns the user
//! adds.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// What a redacted secret is replaced by.
pub const REDACTED: &str = "[REDACTED]";

/// Parts of key names that mark the value after them as a secret
/// (compared without regard to case: `DB_PASSWORD`, `accessToken`).
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "api-key",
    "apikey",
    "access_key",
    "accesskey",
    "private_key",
    "credential",
    "authorization",
    "cookie",
    "session",
];

/// Removes secrets from text before it is logged (the observe layer runs it
/// on every error message, error chain, panic message and logged header
/// value, before escaping and capping them).
///
/// The built-in rules, on by default:
/// - **URL userinfo**: `scheme://user:secret@host` becomes
///   `scheme://user:[REDACTED]@host` (the user is kept);
/// - **key-value secrets**: the value after `=` or `:` of a key whose name
///   contains `password`, `passwd`, `pwd`, `secret`, `token`, `api_key`
///   (`api-key`, `apikey`), `access_key`, `private_key`, `credential`,
///   `authorization`, `cookie` or `session`, in any case, quoted or not
///   (`password=hunter2`, `"apiKey": "abc"`, `DB_PASSWORD: x`);
/// - **`Bearer` and `Basic` credentials**: `Bearer eyJhb...` becomes
///   `Bearer [REDACTED]`.
///
/// [`Redactor::key`] adds key names, [`Redactor::pattern`] regular
/// expressions whose matches are replaced. Redaction never fails, works in
/// one pass per rule, and the built-in rules are idempotent: redacted text
/// redacted again is unchanged.
///
/// ```
/// use tower_harden::telemetry::Redactor;
///
/// let redactor = Redactor::new();
/// assert_eq!(
///     redactor.redact("connecting to postgres://app:hunter2@db.internal/app"),
///     "connecting to postgres://app:[REDACTED]@db.internal/app"
/// );
/// assert_eq!(redactor.redact("password=hunter2&user=bob"), "password=[REDACTED]&user=bob");
/// assert_eq!(redactor.redact("Authorization: Bearer abc.def"), "Authorization: Bearer [REDACTED]");
/// let custom = Redactor::new().pattern(r"sk_live_[0-9a-zA-Z]+").unwrap();
/// assert_eq!(custom.redact("key sk_live_4eC39HqLyjWDarjtT1zdp7dc"), "key [REDACTED]");
/// ```
#[derive(Clone, Default)]
pub struct Redactor {
    off: bool,
    /// What the user added; `None` (the default) clones for free.
    custom: Option<Arc<Custom>>,
}

#[derive(Default)]
struct Custom {
    keys: Vec<String>,
    patterns: Vec<regex_lite::Regex>,
}

/// A redaction pattern that is not a valid regular expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid redaction pattern {pattern:?}: {reason}")]
pub struct InvalidPattern {
    pattern: String,
    reason: String,
}

impl Redactor {
    /// The built-in rules (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Redacts nothing at all: for text known to hold no secret, or a
    /// log store that is as protected as the secrets themselves.
    pub fn off() -> Self {
        Self {
            off: true,
            custom: None,
        }
    }

    /// Whether this redactor redacts nothing.
    pub fn is_off(&self) -> bool {
        self.off
    }

    fn custom(&mut self) -> &mut Custom {
        let custom = self.custom.get_or_insert_with(Default::default);
        if Arc::get_mut(custom).is_none() {
            *custom = Arc::new(Custom {
                keys: custom.keys.clone(),
                patterns: custom.patterns.clone(),
            });
        }
        Arc::get_mut(custom).expect("just made unique")
    }

    /// Also treats the value of a key whose name contains `name` (in any
    /// case) as a secret: `key("pin")` redacts `PIN=1234`.
    pub fn key(mut self, name: &str) -> Self {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() && !self.custom().keys.contains(&name) {
            self.custom().keys.push(name);
        }
        self
    }

    /// Also replaces every match of the regular expression `pattern`
    /// ([`regex_lite`](https://docs.rs/regex-lite) syntax) with
    /// [`REDACTED`]. Patterns run after the built-in rules; one that matches
    /// `[REDACTED]` itself makes redaction grow the text each time it runs.
    pub fn pattern(mut self, pattern: &str) -> Result<Self, InvalidPattern> {
        let regex = regex_lite::Regex::new(pattern).map_err(|error| InvalidPattern {
            pattern: pattern.chars().take(64).collect(),
            reason: error.to_string(),
        })?;
        self.custom().patterns.push(regex);
        Ok(self)
    }

    /// `text` with its secrets replaced by [`REDACTED`]; borrowed when
    /// there is nothing to redact.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.off {
            return Cow::Borrowed(text);
        }
        // One pass finds most text (refusal messages, plain errors) has
        // nothing any rule could match: no separator, no `@`, no scheme.
        if self.custom.is_none() && !may_hold_secret(text.as_bytes()) {
            return Cow::Borrowed(text);
        }
        let extra: &[String] = self.custom.as_ref().map_or(&[], |c| &c.keys);
        let text = chain(Cow::Borrowed(text), url_userinfo);
        let text = chain(text, auth_schemes);
        let mut text = chain(text, |t| key_values(t, extra));
        if let Some(custom) = &self.custom {
            for pattern in &custom.patterns {
                if let Cow::Owned(replaced) = pattern.replace_all(&text, REDACTED) {
                    text = Cow::Owned(replaced);
                }
            }
        }
        text
    }
}

/// Whether any built-in rule could match: a key-value separator, a URL's
/// userinfo `@`, or a `Bearer`/`Basic` scheme.
fn may_hold_secret(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(at, &byte)| match byte {
        b'=' | b':' | b'@' => true,
        b'b' | b'B' => {
            starts_with_ignore_case(bytes, at, "bearer ")
                || starts_with_ignore_case(bytes, at, "basic ")
        }
        _ => false,
    })
}

/// Applies `rule` to `text`, keeping it borrowed when the rule changes
/// nothing.
fn chain<'a>(text: Cow<'a, str>, rule: impl Fn(&str) -> Option<String>) -> Cow<'a, str> {
    match rule(&text) {
        Some(changed) => Cow::Owned(changed),
        None => text,
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (keys, patterns) = self.custom.as_ref().map_or((&[][..], 0), |custom| {
            (&custom.keys[..], custom.patterns.len())
        });
        f.debug_struct("Redactor")
            .field("off", &self.off)
            .field("keys", &keys)
            .field("patterns", &patterns)
            .finish()
    }
}

/// `text[at..]` starts with `needle`, ignoring ASCII case.
fn starts_with_ignore_case(text: &[u8], at: usize, needle: &str) -> bool {
    text.len() >= at + needle.len()
        && text[at..at + needle.len()].eq_ignore_ascii_case(needle.as_bytes())
}

/// Where an unquoted value (or a URL's authority) ends.
fn ends_value(byte: u8) -> bool {
    byte.is_ascii_whitespace()
        || byte.is_ascii_control()
        || matches!(
            byte,
            b'&' | b',' | b';' | b'"' | b'\'' | b')' | b'}' | b'<' | b'>' | b'\\'
        )
}

/// `scheme://user:secret@host` → `scheme://user:[REDACTED]@host`.
fn url_userinfo(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let start = search + found + 3;
        let end = bytes[start..]
            .iter()
            .position(|&b| ends_value(b) || matches!(b, b'/' | b'?' | b'#'))
            .map_or(bytes.len(), |p| start + p);
        search = end.max(start);
        let authority = &text[start..end];
        let Some(at) = authority.rfind('@') else {
            continue;
        };
        let Some(colon) = authority[..at].find(':') else {
            continue;
        };
        let secret = &authority[colon + 1..at];
        if secret.is_empty() || secret == REDACTED {
            continue;
        }
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..start + colon + 1]);
        out.push_str(REDACTED);
        copied = start + at;
    }
    out.map(|mut out| {
        out.push_str(&text[copied..]);
        out
    })
}

/// Whether `byte` may be part of a token68 credential (RFC 9110).
fn token68(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// The credential after an auth scheme starting at `at` (`Bearer x`,
/// `Basic x`): its range, if there is one to redact.
fn scheme_credential(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    let (scheme_len, basic) = if starts_with_ignore_case(bytes, at, "bearer") {
        (6, false)
    } else if starts_with_ignore_case(bytes, at, "basic") {
        (5, true)
    } else {
        return None;
    };
    if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
        return None;
    }
    let mut start = at + scheme_len;
    if bytes.get(start) != Some(&b' ') {
        return None;
    }
    while bytes.get(start) == Some(&b' ') {
        start += 1;
    }
    let len = bytes[start..].iter().take_while(|&&b| token68(b)).count();
    let end = start + len;
    // Basic credentials are base64 (`user:password`): a word after
    // "basic" in prose ("basic checks failed") is left alone.
    let plausible = if basic {
        len >= 4 && len % 4 == 0
    } else {
        len > 0
    };
    let whole = bytes.get(end).is_none_or(|&b| ends_value(b));
    (plausible && whole).then_some((start, end))
}

/// `Bearer abc` → `Bearer [REDACTED]`, `Basic dXNlcjpwdw==` → `Basic [REDACTED]`.
fn auth_schemes(text: &str) -> Option<String> {
    replace_spans(text, |bytes, at| {
        if bytes[at] | 0x20 == b'b' {
            scheme_credential(bytes, at)
        } else {
            None
        }
    })
}

/// `text` with every span `find` reports replaced by [`REDACTED`], or
/// `None` when it reports none. `find` looks at one offset and returns the
/// span to replace (which starts at or after it); the scan resumes past it.
fn replace_spans(
    text: &str,
    find: impl Fn(&[u8], usize) -> Option<(usize, usize)>,
) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        if let Some((start, end)) = find(bytes, at) {
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = end;
            at = end;
            continue;
        }
        at += 1;
    }
    out.map(|mut out| {
        out.push_str(&text[copied..]);
        out
    })
}

fn key_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.')
}

/// Whether `key` names a secret.
fn secret_key(key: &[u8], extra: &[String]) -> bool {
    let contains = |needle: &str| {
        key.len() >= needle.len()
            && key
                .windows(needle.len())
                .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
    };
    SECRET_KEYS.iter().any(|needle| contains(needle)) || extra.iter().any(|n| contains(n))
}

/// The value after the separator at `sep`, if the key before it names a
/// secret: its range.
fn secret_value(bytes: &[u8], sep: usize, extra: &[String]) -> Option<(usize, usize)> {
    // `token://` is a URL's scheme, not a key.
    if bytes[sep] == b':' && bytes[sep + 1..].starts_with(b"//") {
        return None;
    }
    let mut key_end = sep;
    while key_end > 0 && bytes[key_end - 1] == b' ' {
        key_end -= 1;
    }
    if key_end > 0 && matches!(bytes[key_end - 1], b'"' | b'\'') {
        key_end -= 1;
    }
    let key_len = bytes[..key_end]
        .iter()
        .rev()
        .take_while(|&&b| key_byte(b))
        .count();
    if key_len == 0 || !secret_key(&bytes[key_end - key_len..key_end], extra) {
        return None;
    }
    let mut start = sep + 1;
    while matches!(bytes.get(start), Some(b' ' | b'\t')) {
        start += 1;
    }
    let quote = match bytes.get(start) {
        Some(&q @ (b'"' | b'\'')) => {
            start += 1;
            Some(q)
        }
        _ => None,
    };
    // `Authorization: Bearer x`: the scheme stays, the credential goes.
    for scheme in ["bearer ", "basic "] {
        if starts_with_ignore_case(bytes, start, scheme) {
            start += scheme.len();
            while bytes.get(start) == Some(&b' ') {
                start += 1;
            }
            break;
        }
    }
    if bytes[start..].starts_with(REDACTED.as_bytes()) {
        return None;
    }
    let len = match quote {
        Some(q) => bytes[start..]
            .iter()
            .take_while(|&&b| b != q && b != b'\\' && !b.is_ascii_control())
            .count(),
        None => bytes[start..]
            .iter()
            .take_while(|&&b| !ends_value(b))
            .count(),
    };
    (len > 0).then_some((start, start + len))
}

/// `password=x`, `"token": "x"`, `API_KEY: x` → the value redacted.
fn key_values(text: &str, extra: &[String]) -> Option<String> {
    replace_spans(text, |bytes, at| {
        if matches!(bytes[at], b'=' | b':') {
            secret_value(bytes, at, extra)
        } else {
            None
        }
    })
}

/// Redacts, escapes and caps `text` for a log field: what
/// [`escape`](super::escape) does, after `redactor` (on at most a window
/// of the text a little larger than the cap, so a huge text costs no more
/// than a long one). Borrowed when there is nothing to change.
pub(crate) fn redact_escape<'a>(
    text: &'a str,
    max_len: usize,
    redactor: &Redactor,
) -> Cow<'a, str> {
    let window = max_len.saturating_mul(2).saturating_add(1024);
    if text.len() <= window {
        return match redactor.redact(text) {
            Cow::Borrowed(text) => super::escape(text, max_len),
            Cow::Owned(redacted) => Cow::Owned(super::escape(&redacted, max_len).into_owned()),
        };
    }
    let mut cut = window;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let redacted = redactor.redact(&text[..cut]);
    // The word the window cut in two may be half a secret the rules could
    // not see whole: it goes with the rest.
    let keep = redacted
        .rfind(|c: char| c.is_whitespace())
        .map_or(0, |space| space + 1);
    let rest = text.len() - cut + (redacted.len() - keep);
    Cow::Owned(super::escape::escape_with_rest(
        &redacted[..keep],
        max_len,
        rest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn redact(text: &str) -> String {
        Redactor::new().redact(text).into_owned()
    }

    #[test]
    fn url_userinfo_loses_its_password_keeps_its_user() {
        assert_eq!(
            redact("connecting to postgres://app:hunter2@db.internal/app: refused"),
            "connecting to postgres://app:[REDACTED]@db.internal/app: refused"
        );
        assert_eq!(
            redact("a redis://:pw@h:6379 and amqp://u:p%40ss@mq?x"),
            "a redis://:[REDACTED]@h:6379 and amqp://u:[REDACTED]@mq?x"
        );
        // No password, or no userinfo: nothing to redact.
        assert_eq!(redact("https://user@host/a"), "https://user@host/a");
        assert_eq!(redact("https://host:8443/a@b"), "https://host:8443/a@b");
    }

    #[test]
    fn key_values_lose_their_values() {
        for (text, expected) in [
            ("password=hunter2", "password=[REDACTED]"),
            (
                "user=bob&passwd=x&next=1",
                "user=bob&passwd=[REDACTED]&next=1",
            ),
            ("DB_PASSWORD: s3cr3t rest", "DB_PASSWORD: [REDACTED] rest"),
            (
                "{\"apiKey\": \"abc def\", \"n\": 1}",
                "{\"apiKey\": \"[REDACTED]\", \"n\": 1}",
            ),
            ("access_token=eyJ.x.y;", "access_token=[REDACTED];"),
            ("client_secret = 'xyz'", "client_secret = '[REDACTED]'"),
            ("host=db pwd=1", "host=db pwd=[REDACTED]"),
            ("x-api-key:k1", "x-api-key:[REDACTED]"),
            ("Cookie: sid=abc", "Cookie: [REDACTED]"),
        ] {
            assert_eq!(redact(text), expected, "{text}");
        }
        // Keys that name no secret, and URLs, are left alone.
        assert_eq!(redact("user=bob: failed"), "user=bob: failed");
        assert_eq!(redact("token://a/b"), "token://a/b");
    }

    #[test]
    fn auth_schemes_lose_their_credentials() {
        assert_eq!(
            redact("Authorization: Bearer eyJhbGciOi.x-y_z"),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(
            redact("sent bearer abc123 upstream"),
            "sent bearer [REDACTED] upstream"
        );
        assert_eq!(redact("Basic dXNlcjpwYXNz"), "Basic [REDACTED]");
        assert_eq!(
            redact("proxy-authorization: Basic dXNlcjpwYXNz=="),
            "proxy-authorization: Basic [REDACTED]"
        );
        // Prose is not a credential.
        assert_eq!(redact("basic checks failed"), "basic checks failed");
    }

    #[test]
    fn user_keys_and_patterns() {
        let redactor = Redactor::new()
            .key("PIN")
            .pattern(r"\b\d{4}-\d{4}-\d{4}-\d{4}\b")
            .unwrap();
        assert_eq!(
            redactor.redact("pin=1234 card 4111-1111-1111-1111"),
            "pin=[REDACTED] card [REDACTED]"
        );
        assert!(Redactor::new().pattern("(").is_err());
        assert_eq!(Redactor::off().redact("password=x"), "password=x");
    }

    #[test]
    fn the_prefilter_misses_nothing_a_rule_would_match() {
        for text in [
            "a=b",
            "x: y",
            "u@h",
            "Bearer x",
            "BASIC dXNl",
            "plain text",
            "bearerx",
        ] {
            let any_rule = url_userinfo(text).is_some()
                || auth_schemes(text).is_some()
                || key_values(text, &[]).is_some();
            assert!(!any_rule || may_hold_secret(text.as_bytes()), "{text}");
        }
        assert!(!may_hold_secret(
            b"rate limit exceeded (policy per-ip); retry in 2 s"
        ));
    }

    #[test]
    fn nothing_to_redact_is_borrowed() {
        let text = "the declared request body of 20 bytes exceeds the limit of 10 bytes";
        assert!(matches!(Redactor::new().redact(text), Cow::Borrowed(_)));
    }

    #[test]
    fn a_huge_text_is_redacted_in_a_window_and_never_shows_a_cut_secret() {
        let text = format!("{} postgres://u:{}@h", "a ".repeat(600), "p".repeat(5000));
        let logged = redact_escape(&text, 1000, &Redactor::new());
        assert!(!logged.contains("ppp"), "{logged}");
        assert!(logged.ends_with("bytes)"), "{logged}");
        let short = redact_escape("password=x", 100, &Redactor::new());
        assert_eq!(short, "password=[REDACTED]");
    }

    fn texty() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("password".to_owned()),
            Just("Token".to_owned()),
            Just("api_key".to_owned()),
            Just("Bearer ".to_owned()),
            Just("basic ".to_owned()),
            Just("://".to_owned()),
            Just("@".to_owned()),
            Just(REDACTED.to_owned()),
            Just("dXNl".to_owned()),
            "[=: \"'&,;/@a-z0-9\\[\\]]{1,6}",
            ".{0,4}",
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn redaction_never_panics_is_bounded_and_idempotent(text in texty()) {
            let redactor = Redactor::new();
            // The prefilter never skips text a rule would change.
            if !may_hold_secret(text.as_bytes()) {
                prop_assert!(url_userinfo(&text).is_none());
                prop_assert!(auth_schemes(&text).is_none());
                prop_assert!(key_values(&text, &[]).is_none());
            }
            let once = redactor.redact(&text).into_owned();
            prop_assert!(once.len() <= 4 * text.len() + REDACTED.len(), "{} -> {}", text, once);
            let twice = redactor.redact(&once).into_owned();
            prop_assert_eq!(&twice, &once, "from {:?}", text);
        }

        #[test]
        fn redact_escape_is_capped(text in texty(), max_len in 0usize..64) {
            let logged = redact_escape(&text, max_len, &Redactor::new());
            // The cap, plus the longest escape of one character and the
            // `…(+N bytes)` marker.
            prop_assert!(logged.len() <= max_len + 12 + 32);
        }
    }
}
