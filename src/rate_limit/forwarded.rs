//! Forwarding headers read from the right, on their raw bytes.
//!
//! Only the entries a trusted proxy appended are worth anything, and they
//! are at the right end. Everything to their left was written by the client
//! and may be anything a header value can hold: bytes above 0x7f, an
//! unclosed quote, a stray backslash. So the headers are never decoded as a
//! whole (one bad byte would void the proxy's entry too) nor scanned from
//! the left (an unclosed quote would swallow it): each entry is cut out from
//! the right, and only the entries the walk reaches are ever looked at.

use std::borrow::Cow;

/// Entries longer than this are not addresses (the longest IPv6 with port,
/// brackets and zone is well under it).
pub(super) const MAX_ENTRY_LEN: usize = 96;

/// The entries of one `X-Forwarded-For` field, rightmost first, as raw bytes
/// between commas (blanks not yet trimmed).
pub(super) fn x_forwarded_for_from_right(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.rsplit(|&byte| byte == b',')
}

/// The `for=` values of the elements of one `Forwarded` field (RFC 7239),
/// rightmost first, quoted-strings unquoted.
///
/// `None` for an element the walk cannot use: it has no `for`, or is not
/// `pair *( ";" pair )` (after a malformed element the field ends, as its
/// boundaries further left cannot be known). Empty list elements are
/// skipped, as RFC 9110's list rule asks. An element is parsed only when the
/// iterator reaches it.
pub(super) fn forwarded_for_from_right(
    value: &[u8],
) -> impl Iterator<Item = Option<Cow<'_, [u8]>>> {
    let mut end = Some(value.len());
    std::iter::from_fn(move || loop {
        let position = skip_blanks_back(value, end?);
        if position == 0 {
            end = None;
            return None;
        }
        if value[position - 1] == b',' {
            end = Some(position - 1);
            continue;
        }
        return Some(match element_from_right(value, position) {
            Some((start, for_value)) => {
                end = Some(start);
                for_value
            }
            None => {
                end = None;
                None
            }
        });
    })
}

/// Parses the element ending at `end` (exclusive), from the right. Returns
/// where the element starts (the index of its comma, or 0) and its `for`
/// value; `None` when the element is malformed or names `for` twice.
fn element_from_right(bytes: &[u8], end: usize) -> Option<(usize, Option<Cow<'_, [u8]>>)> {
    let mut position = end;
    let mut for_value: Option<Option<Cow<'_, [u8]>>> = None;
    loop {
        position = skip_blanks_back(bytes, position);
        // The value: a quoted-string or a run of value bytes.
        let (value_start, value) = if position > 0 && bytes[position - 1] == b'"' {
            let close = position - 1;
            let open = opening_quote(bytes, close)?;
            (open, Value::Quoted(&bytes[open + 1..close]))
        } else {
            let start = run_start(bytes, position, is_value_byte);
            if start == position {
                return None;
            }
            (start, Value::Token(&bytes[start..position]))
        };
        position = skip_blanks_back(bytes, value_start);
        if position == 0 || bytes[position - 1] != b'=' {
            return None;
        }
        position = skip_blanks_back(bytes, position - 1);
        let name_start = run_start(bytes, position, is_tchar);
        if name_start == position {
            return None;
        }
        if bytes[name_start..position].eq_ignore_ascii_case(b"for") {
            if for_value.is_some() {
                return None;
            }
            for_value = Some(value.unquoted());
        }
        position = skip_blanks_back(bytes, name_start);
        if position == 0 {
            return Some((0, for_value.flatten()));
        }
        match bytes[position - 1] {
            b',' => return Some((position - 1, for_value.flatten())),
            b';' => position -= 1,
            _ => return None,
        }
    }
}

/// A parameter value as written.
enum Value<'a> {
    Token(&'a [u8]),
    /// The bytes between the quotes, escapes still in.
    Quoted(&'a [u8]),
}

impl<'a> Value<'a> {
    /// The value with quoted-pairs resolved; `None` when it is too long to be
    /// a node (the unescaped copy stays bounded).
    fn unquoted(self) -> Option<Cow<'a, [u8]>> {
        match self {
            Value::Token(token) => Some(Cow::Borrowed(token)),
            Value::Quoted(inner) if inner.len() > 2 * MAX_ENTRY_LEN => None,
            Value::Quoted(inner) if !inner.contains(&b'\\') => Some(Cow::Borrowed(inner)),
            Value::Quoted(inner) => {
                let mut unescaped = Vec::with_capacity(inner.len());
                let mut bytes = inner.iter();
                while let Some(&byte) = bytes.next() {
                    // A quoted-pair: the backslash goes, the next byte stays.
                    // The closing quote was checked unescaped, so a backslash
                    // always has a next byte.
                    unescaped.push(if byte == b'\\' { *bytes.next()? } else { byte });
                }
                Some(Cow::Owned(unescaped))
            }
        }
    }
}

/// The opening quote of the quoted-string whose closing quote is at `close`:
/// the nearest quote to its left not escaped by an odd run of backslashes.
fn opening_quote(bytes: &[u8], close: usize) -> Option<usize> {
    let mut index = close;
    while index > 0 {
        index -= 1;
        if bytes[index] == b'"' {
            let backslashes = index - run_start(bytes, index, |byte| byte == b'\\');
            if backslashes.is_multiple_of(2) {
                return Some(index);
            }
        }
    }
    None
}

/// The start of the run of bytes matching `matches` that ends at `end`.
fn run_start(bytes: &[u8], end: usize, matches: impl Fn(u8) -> bool) -> usize {
    let mut start = end;
    while start > 0 && matches(bytes[start - 1]) {
        start -= 1;
    }
    start
}

fn skip_blanks_back(bytes: &[u8], end: usize) -> usize {
    run_start(bytes, end, |byte| byte == b' ' || byte == b'\t')
}

/// RFC 9110 `tchar`.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// An unquoted value: RFC 7239 asks for a token, but proxies write
/// `for=192.0.2.1:80` and `for=[2001:db8::1]` unquoted too, so anything up
/// to a delimiter is taken (the node parser then judges it).
fn is_value_byte(byte: u8) -> bool {
    byte > b' ' && byte != 0x7f && !matches!(byte, b',' | b';' | b'"' | b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fors(value: &str) -> Vec<Option<String>> {
        forwarded_for_from_right(value.as_bytes())
            .map(|value| value.map(|value| String::from_utf8_lossy(&value).into_owned()))
            .collect()
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    #[test]
    fn elements_from_the_right() {
        assert_eq!(
            fors(r#"for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711""#),
            vec![some("[2001:db8:cafe::17]:4711"), some("192.0.2.60")]
        );
        assert_eq!(fors("proto=https"), vec![None]);
        assert_eq!(fors(" , for=1.2.3.4 ,, "), vec![some("1.2.3.4")]);
        assert_eq!(fors(""), Vec::<Option<String>>::new());
        // Case-insensitive names, quoted commas and semicolons.
        assert_eq!(
            fors(r#"For="a,b;c";by=x, FOR=d"#),
            vec![some("d"), some("a,b;c")]
        );
    }

    #[test]
    fn quoted_pairs_are_resolved() {
        assert_eq!(fors(r#"for="a\"b\\""#), vec![some(r#"a"b\"#)]);
        assert_eq!(fors(r#"for="\\", for=x"#), vec![some("x"), some("\\")]);
    }

    #[test]
    fn an_unclosed_quote_on_the_left_cannot_swallow_the_right() {
        assert_eq!(
            fors(r#"for="6.6.6.6, for=203.0.113.9"#),
            vec![some("203.0.113.9"), None]
        );
        assert_eq!(
            fors(r#"for=6.6.6.6\", for="[2001:db8::1]:80""#),
            vec![some("[2001:db8::1]:80"), None]
        );
    }

    #[test]
    fn malformed_elements_end_the_walk() {
        assert_eq!(
            fors("for=1.1.1.1, for=, for=2.2.2.2"),
            vec![some("2.2.2.2"), None]
        );
        assert_eq!(
            fors("for=1.1.1.1, =x, for=2.2.2.2"),
            vec![some("2.2.2.2"), None]
        );
        assert_eq!(fors("for=1.1.1.1;for=3.3.3.3"), vec![None]);
        assert_eq!(fors(r#"for=1.1.1.1, x for=2.2.2.2"#), vec![None]);
        assert_eq!(fors(r#"for=x""#), vec![None]);
    }

    #[test]
    fn x_forwarded_for_entries_from_the_right() {
        let entries: Vec<&[u8]> = x_forwarded_for_from_right(b"a, b\xff,c").collect();
        assert_eq!(entries, vec![&b"c"[..], b" b\xff", b"a"]);
    }
}
