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

/// Writes the contents of a JSON string (without its quotes).
pub(super) fn write_escaped<W: Write + ?Sized>(out: &mut W, text: &str) -> fmt::Result {
    let mut start = 0;
    for (index, byte) in text.bytes().enumerate() {
        let Some(escape) = escape_of(byte) else {
            continue;
        };
        if start < index {
            out.write_str(&text[start..index])?;
        }
        out.write_str(escape)?;
        start = index + 1;
    }
    if start < text.len() {
        out.write_str(&text[start..])?;
    }
    Ok(())
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
