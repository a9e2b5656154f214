//! How each kind of value is written in a configuration file, as serde
//! `with` modules and keyword tables: durations, sizes, CIDRs, header
//! names, levels, statuses, and the keywords of the enums.
//!
//! Every error echoes the value it refuses escaped and capped
//! ([`escape`]): a configuration value can be anything.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

use crate::telemetry::escape;

/// The longest untrusted text echoed in an error.
pub(crate) const ECHO_LEN: usize = 64;

/// `text`, escaped and capped for an error message.
pub(crate) fn echo(text: &str) -> std::borrow::Cow<'_, str> {
    escape(text, ECHO_LEN)
}

/// `` `a`, `b`, `c` ``: the allowed values, for an error message.
pub(crate) fn one_of(names: impl IntoIterator<Item = &'static str>) -> String {
    names
        .into_iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An enum written as one of a fixed list of keywords (matched without
/// surrounding spaces and ignoring ASCII case).
pub(crate) trait Keyword: Sized + Copy + PartialEq + 'static {
    /// Every keyword and its value; the first spelling of a value is the
    /// one written out.
    const KEYWORDS: &'static [(&'static str, Self)];

    /// The value `text` names, or an error listing the keywords.
    fn from_keyword(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        Self::KEYWORDS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
            .map(|(_, value)| *value)
            .ok_or_else(|| unknown_value(text, Self::KEYWORDS.iter().map(|(name, _)| *name)))
    }

    /// The keyword of `self`.
    fn keyword(self) -> &'static str {
        Self::KEYWORDS
            .iter()
            .find(|(_, value)| *value == self)
            .map_or("", |(name, _)| name)
    }
}

/// ``unknown value `x`, expected one of `a`, `b` ``.
pub(crate) fn unknown_value(text: &str, names: impl IntoIterator<Item = &'static str>) -> String {
    format!(
        "unknown value `{}`, expected one of {}",
        echo(text),
        one_of(names)
    )
}

/// Serialize and Deserialize for a [`Keyword`] enum of this crate.
macro_rules! keyword_serde {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str($crate::config::value::Keyword::keyword(*self))
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $crate::config::value::from_text(deserializer, |text| {
                    <$type as $crate::config::value::Keyword>::from_keyword(text)
                })
            }
        }
    };
}
pub(crate) use keyword_serde;

/// Deserializes a string through `parse`, whose error becomes the message.
pub(crate) fn from_text<'de, D, T>(
    deserializer: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Text<T, F>(F, PhantomData<T>);

    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for Text<T, F> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.0)(text).map_err(E::custom)
        }
    }

    deserializer.deserialize_str(Text(parse, PhantomData))
}

/// Durations: humantime strings (`"10s"`, `"250ms"`, `"1m 30s"`).
pub(crate) mod duration {
    use super::*;

    pub(crate) fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim()).map_err(|error| {
            format!(
                "`{}` is not a duration such as `10s` or `250ms`: {error}",
                echo(text)
            )
        })
    }

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        from_text(d, parse)
    }
}

/// An optional duration (`None` is not written).
pub(crate) mod option_duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => duration::serialize(value, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        duration::deserialize(d).map(Some)
    }
}

/// Sizes: bytes as an integer, or a string with a unit (`"1MiB"`).
pub(crate) mod size {
    use super::*;

    struct Size;

    impl Visitor<'_> for Size {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size: bytes, or a string such as \"1MiB\"")
        }

        fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<u64, E> {
            Ok(bytes)
        }

        fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<u64, E> {
            u64::try_from(bytes).map_err(|_| E::custom("a size cannot be negative"))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            text.trim()
                .parse::<bytesize::ByteSize>()
                .map(|size| size.as_u64())
                .map_err(|_| {
                    E::custom(format!(
                        "`{}` is not a size: bytes, or a number with a unit such as `16KiB` or `2MB`",
                        echo(text)
                    ))
                })
        }
    }

    /// A whole number of GiB, MiB or KiB is written with its unit.
    pub(crate) fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        let units = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        match units
            .iter()
            .find(|(unit, _)| *bytes > 0 && bytes.is_multiple_of(*unit))
        {
            Some((unit, name)) => s.collect_str(&format_args!("{}{name}", bytes / unit)),
            None => s.serialize_u64(*bytes),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Size)
    }
}

/// An optional size (`None` is not written).
pub(crate) mod option_size {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => size::serialize(value, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        size::deserialize(d).map(Some)
    }
}

/// A size held as a `usize` (larger values are refused).
pub(crate) mod size_usize {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(bytes: &usize, s: S) -> Result<S::Ok, S::Error> {
        size::serialize(&(*bytes as u64), s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let bytes = size::deserialize(d)?;
        usize::try_from(bytes).map_err(|_| de::Error::custom("too large for this platform"))
    }
}

/// A list of values each read by `parse` from a string.
fn text_list<'de, D, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Item<T>(T);

    struct Parse<T>(fn(&str) -> Result<T, String>);

    impl<'de, T> de::DeserializeSeed<'de> for Parse<T> {
        type Value = Item<T>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Item<T>, D::Error> {
            from_text(d, self.0).map(Item)
        }
    }

    struct List<T>(fn(&str) -> Result<T, String>);

    impl<'de, T> Visitor<'de> for List<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings")
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while let Some(Item(item)) = seq.next_element_seed(Parse(self.0))? {
                items.push(item);
            }
            Ok(items)
        }
    }

    d.deserialize_seq(List(parse))
}

/// Networks: CIDRs (`"10.0.0.0/8"`); a bare address is a /32 or /128.
pub(crate) mod cidrs {
    use super::*;
    use ipnet::IpNet;

    pub(crate) fn parse(text: &str) -> Result<IpNet, String> {
        crate::context::parse_network(text).ok_or_else(|| {
            format!(
                "`{}` is not a CIDR (like 10.0.0.0/8) or an IP address",
                echo(text)
            )
        })
    }

    pub(crate) fn serialize<S: Serializer>(value: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(value.iter().map(ToString::to_string))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        text_list(d, parse)
    }
}

/// Header names (`"x-request-id"`).
pub(crate) mod header_name {
    use super::*;
    use http::HeaderName;

    pub(crate) fn parse(text: &str) -> Result<HeaderName, String> {
        HeaderName::try_from(text.trim())
            .map_err(|_| format!("`{}` is not a valid header name", echo(text)))
    }

    pub(crate) fn serialize<S: Serializer>(value: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.as_str())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
        from_text(d, parse)
    }
}

/// A list of header names.
pub(crate) mod header_names {
    use super::*;
    use http::HeaderName;

    pub(crate) fn serialize<S: Serializer>(value: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(value.iter().map(HeaderName::as_str))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<HeaderName>, D::Error> {
        text_list(d, header_name::parse)
    }
}

/// Log levels (`"info"`; any spelling `tracing::Level` reads).
pub(crate) mod level {
    use super::*;
    use tracing::Level;

    const NAMES: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

    pub(crate) fn serialize<S: Serializer>(value: &Level, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}", value.as_str().to_ascii_lowercase()))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Level, D::Error> {
        from_text(d, |text| {
            text.trim()
                .parse::<Level>()
                .map_err(|_| unknown_value(text, NAMES))
        })
    }
}

/// HTTP statuses, as integers.
pub(crate) mod status {
    use super::*;
    use http::StatusCode;

    pub(crate) fn serialize<S: Serializer>(value: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(value.as_u16())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StatusCode, D::Error> {
        let code = u16::deserialize(d)?;
        StatusCode::from_u16(code)
            .map_err(|_| de::Error::custom(format!("{code} is not an HTTP status")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_written_with_the_largest_whole_unit() {
        let text = |bytes: u64| serde_json::to_string(&Wrapped(bytes)).unwrap();
        #[derive(serde::Serialize)]
        struct Wrapped(#[serde(with = "size")] u64);
        assert_eq!(text(1 << 20), "\"1MiB\"");
        assert_eq!(text(64 << 10), "\"64KiB\"");
        assert_eq!(text(3 << 30), "\"3GiB\"");
        assert_eq!(text(1000), "1000");
        assert_eq!(text(0), "0");
    }

    #[test]
    fn refused_values_are_echoed_escaped_and_capped() {
        let long = format!("{}\n{}", "a".repeat(100), "b");
        let message = duration::parse(&long).unwrap_err();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.len() < 200, "{message}");
    }
}
