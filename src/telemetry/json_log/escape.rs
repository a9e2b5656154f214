//! JSON text as serde_json writes it: the same escapes, written straight
//! into the line instead of through an `io::Write` adaptor that checks
//! every piece for UTF-8 again.

use std::fmt::{self, Write};

/// serde_json's escapes of the bytes below 0x20: the short forms for
/// backspace, tab, line feed, form feed and carriage return, `\u00xx` with
/// lowercase hex for the rest.
const CONTROL: [&str; 32] = [
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b",
    "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012",
    "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019", "\\u001a",
    "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
];

/// The escape serde_json writes for `byte`, if any. Every byte it escapes
/// is ASCII, so text is only ever cut at character boundaries.
fn escape_of(byte: u8) -> Option<&'static str> {
    match byte {
        0..=0x1f => Some(CONTROL[usize::from(byte)]),
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        _ => None,
    }
}

/// The index of the first byte of `bytes` serde_json escapes, or its
/// length. Eight bytes at a time: nearly all text has nothing to escape,
/// and this scan is most of the cost of writing it.
fn first_escape(bytes: &[u8]) -> usize {
    let len = bytes.len();
    if len < 8 {
        return bytes
            .iter()
            .position(|&byte| escape_of(byte).is_some())
            .unwrap_or(len);
    }
    let mut index = 0;
    while index + 8 <= len {
        if let Some(at) = first_in_word(bytes, index) {
            return at;
        }
        index += 8;
    }
    // The last eight bytes, overlapping bytes already found plain: the
    // first flagged byte is still the first to escape.
    if index < len {
        if let Some(at) = first_in_word(bytes, len - 8) {
            return at;
        }
    }
    len
}

/// The first byte to escape among the eight at `start`, if any.
///
/// Per byte, `x - 0x20` borrows only below 0x20, and a borrow only flags
/// bytes after the byte that needs escaping: the lowest flagged byte is
/// exact (likewise for the bytes equal to `"` and `\`, zero after the
/// xor).
fn first_in_word(bytes: &[u8], start: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    fn below(word: u64, limit: u8) -> u64 {
        word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGH
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[start..start + 8]);
    let word = u64::from_le_bytes(word);
    let found = below(word, 0x20)
        | below(word ^ (ONES * u64::from(b'"')), 1)
        | below(word ^ (ONES * u64::from(b'\\')), 1);
    (found != 0).then(|| start + (found.trailing_zeros() / 8) as usize)
}

/// Writes the contents of a JSON string (without its quotes).
pub(super) fn write_escaped<W: Write + ?Sized>(out: &mut W, text: &str) -> fmt::Result {
    let bytes = text.as_bytes();
    let mut start = 0;
    loop {
        let end = start + first_escape(&bytes[start..]);
        if start < end {
            out.write_str(&text[start..end])?;
        }
        let Some(&byte) = bytes.get(end) else {
            return Ok(());
        };
        out.write_str(escape_of(byte).unwrap_or_default())?;
        start = end + 1;
    }
}

/// Writes a quoted JSON string.
pub(super) fn write_string<W: Write + ?Sized>(out: &mut W, text: &str) -> fmt::Result {
    out.write_char('"')?;
    write_escaped(out, text)?;
    out.write_char('"')
}

/// A `fmt::Write` that escapes what goes through it: `Debug` output, a
/// timer's text, written in pieces straight into the line.
pub(super) struct Escaping<'a, W: ?Sized>(pub(super) &'a mut W);

impl<W: Write + ?Sized> Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_escaped(self.0, text)
    }
}

/// Writes an unsigned integer in decimal, as serde_json (itoa) does.
pub(super) fn write_u64<W: Write + ?Sized>(out: &mut W, value: u64) -> fmt::Result {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.write_str(std::str::from_utf8(&digits[at..]).map_err(|_| fmt::Error)?)
}

/// Writes a signed integer in decimal, as serde_json (itoa) does.
pub(super) fn write_i64<W: Write + ?Sized>(out: &mut W, value: i64) -> fmt::Result {
    if value < 0 {
        out.write_char('-')?;
    }
    write_u64(out, value.unsigned_abs())
}

/// Writes `value` as serde_json writes it (integers through itoa, floats
/// through serde_json's shortest round-trip form, `null` for a float that
/// is not finite): serde_json itself writes it, into a buffer on the stack.
pub(super) fn write_number<W: Write + ?Sized, T: serde::Serialize>(
    out: &mut W,
    value: &T,
) -> fmt::Result {
    let mut buffer = [0u8; 48];
    let mut rest = &mut buffer[..];
    serde_json::to_writer(&mut rest, value).map_err(|_| fmt::Error)?;
    let len = 48 - rest.len();
    out.write_str(std::str::from_utf8(&buffer[..len]).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        write_string(&mut out, text).unwrap();
        out
    }

    #[test]
    fn every_byte_below_0x80_is_escaped_as_serde_json_does() {
        for byte in 0u8..0x80 {
            let text = format!("a{}b", char::from(byte));
            assert_eq!(
                escaped(&text),
                serde_json::to_string(&text).unwrap(),
                "{byte:#x}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_text_is_escaped_as_serde_json_does(text in any::<String>()) {
            prop_assert_eq!(escaped(&text), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn text_written_in_pieces_is_escaped_as_a_whole(text in any::<String>(), cut in any::<prop::sample::Index>()) {
            let mut at = cut.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut out = String::new();
            let mut escaping = Escaping(&mut out);
            escaping.write_str(&text[..at]).unwrap();
            escaping.write_str(&text[at..]).unwrap();
            let whole = serde_json::to_string(&text).unwrap();
            prop_assert_eq!(out, &whole[1..whole.len() - 1]);
        }

        #[test]
        fn numbers_are_written_as_serde_json_writes_them(i in any::<i64>(), u in any::<u64>(), f in any::<f64>()) {
            for (value, expected) in [
                (serde_json::json!(i), serde_json::to_string(&i).unwrap()),
                (serde_json::json!(u), serde_json::to_string(&u).unwrap()),
            ] {
                let mut out = String::new();
                write_number(&mut out, &value).unwrap();
                prop_assert_eq!(out, expected);
            }
            let mut out = String::new();
            write_number(&mut out, &f).unwrap();
            prop_assert_eq!(out, serde_json::to_string(&f).unwrap());
        }
    }

    proptest! {
        #[test]
        fn integers_are_written_as_serde_json_writes_them(i in any::<i64>(), u in any::<u64>()) {
            let mut out = String::new();
            write_i64(&mut out, i).unwrap();
            out.push(' ');
            write_u64(&mut out, u).unwrap();
            prop_assert_eq!(out, format!("{} {}", serde_json::json!(i), serde_json::json!(u)));
        }

        #[test]
        fn the_scan_finds_the_first_escape(prefix in "[ -~&&[^\"\\\\]]{0,40}|[^\u{0}-\u{1f}\"\\\\]{0,20}", byte in prop_oneof![0u8..0x20, Just(b'"'), Just(b'\\')], suffix in any::<String>()) {
            let text = format!("{prefix}{}{suffix}", char::from(byte));
            prop_assert_eq!(first_escape(text.as_bytes()), prefix.len());
        }

        #[test]
        fn the_scan_agrees_with_a_byte_by_byte_one(text in prop_oneof![any::<String>(), "[\\x00-\\x7f]{0,40}", "[a\"]{0,20}"]) {
            let expected = text.bytes().position(|byte| escape_of(byte).is_some()).unwrap_or(text.len());
            prop_assert_eq!(first_escape(text.as_bytes()), expected);
        }
    }

    #[test]
    fn integers_at_their_limits() {
        for value in [0, 9, 10, i64::MIN, i64::MAX, -1] {
            let mut out = String::new();
            write_i64(&mut out, value).unwrap();
            assert_eq!(out, value.to_string());
        }
        let mut out = String::new();
        write_u64(&mut out, u64::MAX).unwrap();
        assert_eq!(out, u64::MAX.to_string());
    }

    #[test]
    fn floats_that_are_not_finite_are_null() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut out = String::new();
            write_number(&mut out, &value).unwrap();
            assert_eq!(out, "null");
        }
        let mut out = String::new();
        write_number(&mut out, &-f64::MAX).unwrap();
        assert_eq!(out, serde_json::to_string(&-f64::MAX).unwrap());
    }
}
