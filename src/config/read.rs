//! Reading TOML with every problem reported at once.
//!
//! serde stops at the first error, so the file is first parsed into toml's
//! spanned document, then each table is read key by key: an unknown key is
//! reported, each known key is deserialized on its own (into the section's
//! own type, from a table holding only that key) and reported if refused,
//! and the section is then deserialized from the keys that passed. Nested
//! tables (the sections, each policy) are read the same way. The position
//! of every key is kept, so that problems found when the stack is built
//! can say where they are too.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, Origin, Position};
use super::model::HardenConfig;
use super::model::{PolicyConfig, RateLimitConfig, ServerSection};
use super::value::{echo, one_of};
use crate::serve::ServerSettings;

/// The longest message of the TOML parser or of serde echoed in an error
/// (they quote the text they refuse).
const MESSAGE_LEN: usize = 160;

/// Reads `text` into a configuration, or reports every problem in it.
pub(super) fn from_toml(text: &str) -> Result<HardenConfig, ConfigErrors> {
    let (document, syntax) = DeTable::parse_recoverable(text);
    let mut reader = Reader {
        text,
        errors: Vec::new(),
        positions: BTreeMap::new(),
    };
    if !syntax.is_empty() {
        for error in syntax {
            reader.foreign_error("", error.span(), error.message());
        }
        return Err(reader.finish());
    }
    let span = document.span();
    let root = Spanned::new(span, DeValue::Table(document.into_inner()));
    let mut config: HardenConfig = reader.table(&root, "");
    if reader.errors.is_empty() {
        config.origin = Origin::new(reader.positions);
        Ok(config)
    } else {
        Err(reader.finish())
    }
}

/// A table whose keys are read one by one.
pub(crate) trait Table: DeserializeOwned + Default {
    /// Keys holding tables or arrays of tables, read by [`Table::nested`].
    const NESTED: &'static [&'static str] = &[];

    /// Reads the nested key `name`.
    fn nested(&mut self, _name: &str, _item: &Item<'_, '_>, _reader: &mut Reader<'_>) {}
}

/// A nested value and its key path.
pub(crate) struct Item<'a, 'i> {
    value: &'a Spanned<DeValue<'i>>,
    path: String,
}

/// The problems and key positions found so far.
pub(crate) struct Reader<'t> {
    text: &'t str,
    errors: Vec<ConfigError>,
    positions: BTreeMap<String, Position>,
}

impl Reader<'_> {
    fn position(&self, span: Option<Range<usize>>) -> Option<Position> {
        span.map(|span| Position::of(self.text, span.start))
    }

    /// Reports a problem whose `reason` this module wrote (echoing
    /// untrusted text escaped).
    fn error(&mut self, key: &str, span: Option<Range<usize>>, reason: &str) {
        let error = ConfigError::new(key, reason).at(self.position(span));
        self.errors.push(error);
    }

    /// Reports a problem whose reason toml or serde wrote: they quote the
    /// text they refuse, escaped (serde's `Debug` quoting, or [`echo`] in
    /// this module's values) but not capped.
    fn foreign_error(&mut self, key: &str, span: Option<Range<usize>>, message: &str) {
        self.error(key, span, &cap(message.trim()));
    }

    fn finish(mut self) -> ConfigErrors {
        self.errors
            .sort_by_key(|error| error.position().unwrap_or(Position { line: 0, column: 0 }));
        ConfigErrors::new(self.errors).expect("called with errors")
    }

    /// Reads the table `value` at `path` into a `T`: every key that is
    /// fine is kept, every other is reported.
    pub(crate) fn table<T: Table>(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> T {
        let DeValue::Table(table) = value.get_ref() else {
            let reason = format!("expected a table, found {}", value.get_ref().type_str());
            self.error(path, Some(value.span()), &reason);
            return T::default();
        };
        let fields = field_names::<T>();
        let mut good = DeTable::new();
        let mut nested = Vec::new();
        for (key, item) in table.iter() {
            let name: &str = key.get_ref();
            let key_path = join(path, &echo(name));
            if !fields.contains(&name) {
                let reason = format!(
                    "unknown key `{}`, expected one of {}",
                    echo(name),
                    one_of(fields.iter().copied())
                );
                self.error(&key_path, Some(key.span()), &reason);
                continue;
            }
            self.place(&key_path, item.span());
            if T::NESTED.contains(&name) {
                nested.push((name, item, key_path));
            } else if self.check::<T>(key, item, &key_path) {
                good.insert(key.clone(), item.clone());
            }
        }
        let mut section = deserialize::<T>(value.span(), good).unwrap_or_else(|error| {
            self.foreign_error(path, error.span(), error.message());
            T::default()
        });
        for (name, value, path) in nested {
            section.nested(name, &Item { value, path }, self);
        }
        section
    }

    /// Whether the one key `key` of a `T` is fine; reports it if not.
    fn check<T: Table>(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        item: &Spanned<DeValue<'_>>,
        key_path: &str,
    ) -> bool {
        let mut alone = DeTable::new();
        alone.insert(key.clone(), item.clone());
        let Err(error) = deserialize::<T>(item.span(), alone) else {
            return true;
        };
        // In an array, the element refused.
        let element = match (item.get_ref(), error.span()) {
            (DeValue::Array(items), Some(span)) => items
                .iter()
                .position(|item| item.span().contains(&span.start)),
            _ => None,
        };
        let key_path = match element {
            Some(index) => format!("{key_path}[{index}]"),
            None => key_path.to_owned(),
        };
        let span = error.span().or(Some(item.span()));
        self.foreign_error(&key_path, span, error.message());
        false
    }

    /// Reads an array of tables at `path`.
    fn array<T: Table>(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Vec<T> {
        let DeValue::Array(items) = value.get_ref() else {
            let reason = format!("expected an array, found {}", value.get_ref().type_str());
            self.error(path, Some(value.span()), &reason);
            return Vec::new();
        };
        let mut tables = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{index}]");
            self.place(&item_path, item.span());
            tables.push(self.table(item, &item_path));
        }
        tables
    }

    fn place(&mut self, key: &str, span: Range<usize>) {
        let position = Position::of(self.text, span.start);
        self.positions.insert(key.to_owned(), position);
    }
}

/// `message` capped at [`MESSAGE_LEN`] bytes, and escaped if it holds
/// anything a terminal or a log line would act on.
fn cap(message: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if message.chars().any(unsafe_char) {
        return crate::telemetry::escape(message, MESSAGE_LEN);
    }
    match message.char_indices().nth(MESSAGE_LEN) {
        Some((end, _)) => format!("{}…", &message[..end]).into(),
        None => message.into(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn deserialize<T: DeserializeOwned>(
    span: Range<usize>,
    table: DeTable<'_>,
) -> Result<T, toml::de::Error> {
    T::deserialize(ValueDeserializer::from(Spanned::new(
        span,
        DeValue::Table(table),
    )))
}

/// The field names of the struct `T` (what its derived `Deserialize`
/// passes to `deserialize_struct`).
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Deserializer, Error, Visitor};

    struct Fields<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Fields<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Error::custom("fields read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

impl Table for HardenConfig {
    const NESTED: &'static [&'static str] =
        &["input", "deadline", "server", "rate_limit", "observe"];

    fn nested(&mut self, name: &str, item: &Item<'_, '_>, reader: &mut Reader<'_>) {
        let (value, path) = (item.value, item.path.as_str());
        match name {
            "input" => self.input = reader.table(value, path),
            "deadline" => self.deadline = reader.table(value, path),
            "server" => self.server = reader.table::<Server>(value, path).0,
            "rate_limit" => self.rate_limit = reader.table(value, path),
            "observe" => self.observe = reader.table(value, path),
            _ => {}
        }
    }
}

impl Table for super::model::InputConfig {}
impl Table for super::model::DeadlineConfig {}
impl Table for super::model::ObserveConfig {}
impl Table for PolicyConfig {}

impl Table for RateLimitConfig {
    const NESTED: &'static [&'static str] = &["policies"];

    fn nested(&mut self, name: &str, item: &Item<'_, '_>, reader: &mut Reader<'_>) {
        if name == "policies" {
            self.policies = reader.array(item.value, &item.path);
        }
    }
}

/// `[server]`, read through its serde form.
#[derive(Default)]
struct Server(ServerSettings);

impl<'de> serde::Deserialize<'de> for Server {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ServerSection::deserialize(deserializer).map(Self)
    }
}

impl Table for Server {}
