//! Untrusted text on its way to a log: escaped and bounded before any
//! formatter sees it, so the text formatter cannot be made to start a forged
//! line or colour a terminal, and no field grows without bound.

use std::borrow::Cow;
use std::fmt::Write;

/// Escapes `text` for a log field and caps it at about `max_len` bytes.
///
/// Control characters (C0, DEL, C1), Unicode line and paragraph separators
/// and bidirectional overrides become `\u{..}`; `\r`, `\n`, `\t` and `\\`
/// get their usual escapes, so the escaped text is unambiguous. Past
/// `max_len` bytes the rest is cut and replaced by `…(+N bytes)`.
///
/// Text with nothing to escape or cut (nearly all of it) is borrowed, not
/// copied: the log line is the only place it is needed.
pub(crate) fn escape(text: &str, max_len: usize) -> Cow<'_, str> {
    if text.len() <= max_len && is_plain(text.as_bytes()) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(escape_with_rest(text, max_len, 0))
}

/// Printable ASCII without a backslash: nothing in it to escape.
fn is_plain(bytes: &[u8]) -> bool {
    bytes.iter().copied().all(is_plain_byte)
}

/// A printable ASCII byte other than the backslash, which `escape` copies
/// as it is.
fn is_plain_byte(byte: u8) -> bool {
    (b' '..=b'~').contains(&byte) && byte != b'\\'
}

/// As [`escape`], where `rest` more bytes were already cut off `text`.
pub(super) fn escape_with_rest(text: &str, max_len: usize, rest: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_len) + 2);
    // Most text (paths, user agents, refusal messages) is printable ASCII
    // with nothing to escape: copy that prefix, up to the cap, in one go.
    // One byte per character, so the loop below would have copied the same
    // bytes and stopped at the same place.
    let plain = text
        .bytes()
        .position(|byte| !is_plain_byte(byte))
        .unwrap_or(text.len())
        .min(max_len);
    out.push_str(&text[..plain]);
    for (index, c) in text[plain..].char_indices() {
        let index = plain + index;
        if out.len() >= max_len {
            let _ = write!(out, "…(+{} bytes)", text.len() - index + rest);
            return out;
        }
        push_escaped(&mut out, c);
    }
    if rest > 0 {
        let _ = write!(out, "…(+{rest} bytes)");
    }
    out
}

/// Appends `c`, escaped if it is a backslash, a control character, a line
/// separator or a bidi override.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// As [`escape`], for bytes that may not be UTF-8 (a header value): invalid
/// sequences become U+FFFD.
pub(crate) fn escape_bytes(bytes: &[u8], max_len: usize) -> Cow<'_, str> {
    if bytes.len() <= max_len && is_plain(bytes) {
        // Plain ASCII is UTF-8.
        if let Ok(text) = std::str::from_utf8(bytes) {
            return Cow::Borrowed(text);
        }
    }
    // Cap before decoding, so a huge value is never copied whole.
    let cut = bytes.len().min(max_len.saturating_mul(4));
    Cow::Owned(escape_with_rest(
        &String::from_utf8_lossy(&bytes[..cut]),
        max_len,
        bytes.len() - cut,
    ))
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape("a\r\n\x1b[31mb\u{7f}\u{85}\\", 100),
            "a\\r\\n\\u{1b}[31mb\\u{7f}\\u{85}\\\\"
        );
        assert_eq!(escape("x\u{202e}y", 100), "x\\u{202e}y");
    }

    #[test]
    fn long_text_is_capped() {
        let long = "é".repeat(1000);
        let escaped = escape(&long, 10);
        assert!(escaped.starts_with("ééééé…(+1990 bytes)"), "{escaped}");
        let escaped = escape_bytes(&[b'a'; 10_000], 8);
        assert_eq!(escaped, "aaaaaaaa…(+9992 bytes)");
    }

    #[test]
    fn plain_prefix_then_escapes_and_cap() {
        // The plain prefix is copied whole, then escaping resumes.
        assert_eq!(escape("GET /a b\\c\n", 100), "GET /a b\\\\c\\n");
        assert_eq!(escape("abc\u{7f}", 100), "abc\\u{7f}");
        // The cap falls inside the plain prefix, at its end, and after it.
        assert_eq!(escape("abcdef", 3), "abc…(+3 bytes)");
        assert_eq!(escape("abc", 3), "abc");
        assert_eq!(escape("abcé", 3), "abc…(+2 bytes)");
        assert_eq!(escape("abé", 3), "abé");
        assert_eq!(escape("ab\ncd", 3), "ab\\n…(+2 bytes)");
        assert_eq!(escape("", 3), "");
        assert_eq!(escape("abc", 0), "…(+3 bytes)");
        let escaped = escape_bytes(&[b'a'; 10], 4);
        assert_eq!(escaped, "aaaa…(+6 bytes)");
    }

    /// The fast path changes nothing: the same output as escaping one
    /// character at a time, on text mixing plain ASCII, escapes and
    /// multi-byte characters, at every cap.
    #[test]
    fn fast_path_matches_char_by_char() {
        fn slow(text: &str, max_len: usize, rest: usize) -> String {
            let mut out = String::new();
            for (index, c) in text.char_indices() {
                if out.len() >= max_len {
                    let _ = write!(out, "…(+{} bytes)", text.len() - index + rest);
                    return out;
                }
                push_escaped(&mut out, c);
            }
            if rest > 0 {
                let _ = write!(out, "…(+{rest} bytes)");
            }
            out
        }
        let samples = [
            "plain ascii text",
            "/users/42?page=1",
            "tab\there",
            "é at the start",
            "ends with é",
            "back\\slash",
            "\u{202e}rtl",
            "mixed \u{1b}[31m red \u{85} é ü \\ end",
            "~ and space and \u{7f}",
        ];
        for text in samples {
            for max_len in 0..=text.len() + 2 {
                for rest in [0, 5] {
                    assert_eq!(
                        escape_with_rest(text, max_len, rest),
                        slow(text, max_len, rest),
                        "{text:?} capped at {max_len}, rest {rest}"
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(escape_bytes(b"a\xffb", 100), "a\u{fffd}b");
    }
}
