//! A span's fields, kept as the JSON object tracing-subscriber's
//! `JsonFields` keeps: members sorted by name, one per name (the last value
//! recorded), `log.*` fields of `Debug` values left out and an `r#` prefix
//! cut off them. Kept in the form the event writes, so that writing a line
//! copies the object instead of parsing it back.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::ops::Range;

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

use super::escape::{write_escaped, write_i64, write_number, write_u64, Escaping};
use super::{with_scratch, Scratch};

/// The [`FormatFields`] half of the JSON line: a span's fields, written
/// once when it opens and replaced, not appended, by `Span::record`. Pair
/// it with [`JsonLog`](super::JsonLog) (which reads what it writes).
///
/// What it keeps is what tracing-subscriber's JSON fields formatter keeps
/// (a JSON object, sorted by name), with floats already in the form the
/// event line prints them.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLogFields {
    _private: (),
}

impl JsonLogFields {
    /// The span fields' formatter.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<'writer> FormatFields<'writer> for JsonLogFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        with_members(|members| {
            fields.record(&mut *members);
            members.write_object(&mut writer)
        })
    }

    /// Replaces the members recorded again, adds the new ones, in name
    /// order, as tracing-subscriber's does (which parses the object back
    /// into a map and writes it again).
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        if current.fields.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        with_members(|members| {
            members.load(&current.fields)?;
            fields.record(&mut *members);
            current.fields.clear();
            members.write_object(&mut current.fields)
        })
    }
}

/// One member: its name (unescaped, to sort by) and its text
/// (`"name":value`), both ranges of `Members::text`.
struct Member {
    name: Range<usize>,
    text: Range<usize>,
}

/// The members of one object being built, in the order they were
/// recorded.
struct Members {
    text: String,
    members: Vec<Member>,
    /// The object, assembled to be written at once.
    object: String,
    result: fmt::Result,
}

impl Members {
    const fn empty() -> Self {
        Self {
            text: String::new(),
            members: Vec::new(),
            object: String::new(),
            result: Ok(()),
        }
    }
}

impl Scratch for Members {
    fn new() -> Self {
        Self::empty()
    }

    fn clear(&mut self) {
        self.text.clear();
        self.members.clear();
        self.object.clear();
        self.result = Ok(());
    }

    fn is_oversized(&self) -> bool {
        self.text.is_oversized() || self.object.is_oversized()
    }
}

thread_local! {
    /// Reused from span to span: no allocation once warm.
    static MEMBERS: RefCell<Members> = const { RefCell::new(Members::empty()) };
}

/// Runs `f` on an empty `Members`.
fn with_members<R>(f: impl FnOnce(&mut Members) -> R) -> R {
    with_scratch(&MEMBERS, f)
}

impl Members {
    /// Adds a member whose value `write` writes.
    fn push(&mut self, name: &str, write: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name_start = self.text.len();
        self.text.push_str(name);
        let text_start = self.text.len();
        self.text.push('"');
        let result = write_escaped(&mut self.text, name).and_then(|()| {
            self.text.push_str("\":");
            write(&mut self.text)
        });
        self.members.push(Member {
            name: name_start..text_start,
            text: text_start..self.text.len(),
        });
        self.result = result;
    }

    /// Writes the object: members sorted by name, the last recorded of
    /// each name (a map's `insert`), in one piece.
    fn write_object<W: Write + ?Sized>(&mut self, out: &mut W) -> fmt::Result {
        self.result?;
        let text = &self.text;
        // Stable: of equal names, the one recorded last stays last.
        self.members
            .sort_by(|a, b| text[a.name.clone()].cmp(&text[b.name.clone()]));
        let object = &mut self.object;
        object.push('{');
        for (index, member) in self.members.iter().enumerate() {
            let name = &text[member.name.clone()];
            if self
                .members
                .get(index + 1)
                .is_some_and(|next| &text[next.name.clone()] == name)
            {
                continue;
            }
            if object.len() > 1 {
                object.push(',');
            }
            object.push_str(&text[member.text.clone()]);
        }
        object.push('}');
        out.write_str(object)
    }

    /// Reads back an object `write_object` wrote (or tracing-subscriber's
    /// `JsonFields`, the same text). As tracing-subscriber's, it fails on a
    /// name that holds an escape (it borrows names from the text), and
    /// the record is then dropped. Floats are parsed and written again, as
    /// tracing-subscriber's parse and write them again.
    fn load(&mut self, object: &str) -> fmt::Result {
        let mut rest = object.strip_prefix('{').ok_or(fmt::Error)?;
        if let Some(after) = rest.strip_prefix('}') {
            return if after.is_empty() {
                Ok(())
            } else {
                Err(fmt::Error)
            };
        }
        loop {
            let after_quote = rest.strip_prefix('"').ok_or(fmt::Error)?;
            let name_len = after_quote.find('"').ok_or(fmt::Error)?;
            let name = &after_quote[..name_len];
            if name.contains('\\') {
                return Err(fmt::Error);
            }
            let after_name = after_quote[name_len + 1..]
                .strip_prefix(':')
                .ok_or(fmt::Error)?;
            let value_len = value_len(after_name).ok_or(fmt::Error)?;
            let value = &after_name[..value_len];
            self.push(name, |text| {
                if is_float(value) {
                    let parsed: serde_json::Value =
                        serde_json::from_str(value).map_err(|_| fmt::Error)?;
                    write_number(text, &parsed)
                } else {
                    text.push_str(value);
                    Ok(())
                }
            });
            rest = &after_name[value_len..];
            match rest.as_bytes().first() {
                Some(b',') => rest = &rest[1..],
                Some(b'}') if rest.len() == 1 => return self.result,
                _ => return Err(fmt::Error),
            }
        }
    }
}

/// The length of the JSON value (a string, an array of numbers or a
/// scalar) at the start of `text`.
fn value_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    match bytes.first()? {
        b'"' => {
            let mut index = 1;
            while index < bytes.len() {
                match bytes[index] {
                    b'\\' => index += 2,
                    b'"' => return Some(index + 1),
                    _ => index += 1,
                }
            }
            None
        }
        b'[' => Some(text.find(']')? + 1),
        _ => text.find([',', '}']),
    }
}

/// A JSON number with a fraction or an exponent: a float, which serde_json
/// may not parse back to the very same value (its fast float parser).
fn is_float(value: &str) -> bool {
    value.starts_with(|c: char| c == '-' || c.is_ascii_digit()) && value.contains(['.', 'e', 'E'])
}

/// As tracing-subscriber's `JsonVisitor`: each value as serde_json's
/// `Value` would be written.
impl Visit for Members {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Written, parsed back and written again, as the event line does
        // with tracing-subscriber's stored object.
        self.push(field.name(), |text| {
            let written =
                serde_json::to_string(&serde_json::Value::from(value)).map_err(|_| fmt::Error)?;
            let parsed: serde_json::Value =
                serde_json::from_str(&written).map_err(|_| fmt::Error)?;
            write_number(text, &parsed)
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field.name(), |text| write_i64(text, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field.name(), |text| write_u64(text, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field.name(), |text| {
            text.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field.name(), |text| {
            text.push('"');
            write_escaped(text, value)?;
            text.push('"');
            Ok(())
        });
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.push(field.name(), |text| {
            text.push('[');
            for (index, byte) in value.iter().enumerate() {
                if index > 0 {
                    text.push(',');
                }
                write_u64(text, u64::from(*byte))?;
            }
            text.push(']');
            Ok(())
        });
    }

    /// Also `i128`, `u128` and errors (their `Display`), through `Visit`'s
    /// defaults, as in tracing-subscriber.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // Fields the `log` bridge adds: already in the normalized metadata.
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.push(name, |text| {
            text.push('"');
            write!(Escaping(text), "{value:?}")?;
            text.push('"');
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(object: &str) -> Result<String, fmt::Error> {
        with_members(|members| {
            members.load(object)?;
            let mut out = String::new();
            members.write_object(&mut out)?;
            Ok(out)
        })
    }

    #[test]
    fn an_object_written_reads_back_the_same() {
        for object in [
            "{}",
            r#"{"a":1}"#,
            r#"{"a":"x,}\"y\\","b":[1,2,3],"c":-0.5,"d":null,"e":true}"#,
        ] {
            assert_eq!(loaded(object).unwrap(), object);
        }
    }

    #[test]
    fn what_it_did_not_write_is_refused_not_misread() {
        for object in [
            "",
            "{",
            "}",
            "{}x",
            r#"{"a"}"#,
            r#"{"a":1"#,
            r#"{"a":1,}"#,
            r#"{"a":"open}"#,
            r#"{"a\"b":1}"#,
            r#"{"a":1}}"#,
        ] {
            assert!(loaded(object).is_err(), "{object}");
        }
    }

    #[test]
    fn a_span_opened_while_formatting_gets_members_of_its_own() {
        let outer = with_members(|members| {
            members.push("outer", |text| {
                let inner = with_members(|members| {
                    members.push("inner", |text| {
                        text.push('1');
                        Ok(())
                    });
                    let mut out = String::new();
                    members.write_object(&mut out).map(|()| out)
                })?;
                text.push_str(&inner);
                Ok(())
            });
            let mut out = String::new();
            members.write_object(&mut out).map(|()| out)
        });
        assert_eq!(outer.unwrap(), r#"{"outer":{"inner":1}}"#);
    }
}
