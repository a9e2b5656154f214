//! Untrusted text on its way to a log: escaped and bounded before any
//! formatter sees it, so the text formatter cannot be made to start a forged
//! line or colour a terminal, and no field grows without bound.

use std::fmt::Write;

/// Escapes `text` for a log field and caps it at about `max_len` bytes.
///
/// Control characters (C0, DEL, C1), Unicode line and paragraph separators
/// and bidirectional overrides become `\u{..}`; `\r`, `\n`, `\t` and `\\`
/// get their usual escapes, so the escaped text is unambiguous. Past
/// `max_len` bytes the rest is cut and replaced by `…(+N bytes)`.
pub(crate) fn escape(text: &str, max_len: usize) -> String {
    escape_with_rest(text, max_len, 0)
}

/// As [`escape`], where `rest` more bytes were already cut off `text`.
fn escape_with_rest(text: &str, max_len: usize, rest: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_len) + 2);
    for (index, c) in text.char_indices() {
        if out.len() >= max_len {
            let _ = write!(out, "…(+{} bytes)", text.len() - index + rest);
            return out;
        }
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
    if rest > 0 {
        let _ = write!(out, "…(+{rest} bytes)");
    }
    out
}

/// As [`escape`], for bytes that may not be UTF-8 (a header value): invalid
/// sequences become U+FFFD.
pub(crate) fn escape_bytes(bytes: &[u8], max_len: usize) -> String {
    // Cap before decoding, so a huge value is never copied whole.
    let cut = bytes.len().min(max_len.saturating_mul(4));
    escape_with_rest(
        &String::from_utf8_lossy(&bytes[..cut]),
        max_len,
        bytes.len() - cut,
    )
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
    fn invalid_utf8_is_replaced() {
        assert_eq!(escape_bytes(b"a\xffb", 100), "a\u{fffd}b");
    }
}
