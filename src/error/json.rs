//! The problem body's JSON, written straight from its fields.

use serde_json::{Map, Value};

/// A standard member's value in [`Problem::to_json`].
pub(super) enum Standard<'a> {
    /// The `type` URI.
    Type,
    /// Text that may need escaping.
    Text(&'a str),
    /// Text known to need none (a request id, a hex trace id).
    Plain(&'a str),
    /// The status code.
    Status(u16),
}

/// Writes `"name":value` for an extension member.
pub(super) fn push_json_member(
    out: &mut Vec<u8>,
    name: &str,
    value: &Value,
) -> serde_json::Result<()> {
    push_json_string(out, &[name]);
    out.push(b':');
    serde_json::to_writer(&mut *out, value)
}

/// Writes the concatenation of `parts` as a JSON string. Text with nothing
/// JSON must escape (a control character, a quote, a backslash; serde_json
/// writes everything else as it is) is copied; other text goes through
/// serde_json.
pub(super) fn push_json_string(out: &mut Vec<u8>, parts: &[&str]) {
    // No early exit: the loop without one compiles to a vectorized scan.
    let needs_escape = parts.iter().any(|part| {
        part.bytes().fold(false, |any, byte| {
            any | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
        })
    });
    let plain = !needs_escape;
    if plain {
        out.push(b'"');
        for part in parts {
            out.extend_from_slice(part.as_bytes());
        }
        out.push(b'"');
    } else {
        let joined = parts.concat();
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &joined);
    }
}

/// Whether `serde_json::Map` iterates its keys sorted (its default, a
/// `BTreeMap`) or in insertion order (when some crate in the build enables
/// serde_json's `preserve_order`): [`Problem::to_json`] writes its members
/// in the order a map would.
pub(super) fn json_map_sorts_keys() -> bool {
    static SORTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SORTS.get_or_init(|| {
        let mut map = Map::new();
        map.insert("b".to_owned(), Value::Null);
        map.insert("a".to_owned(), Value::Null);
        map.keys().next().map(String::as_str) == Some("a")
    })
}
