//! The classic "split user input on commas" parser, made robust.
//!
//! The naive version, `input.split(',').map(str::trim)`, accepts any amount
//! of input, any number of items of any length, splits `"Smith, John"` in
//! two, and treats `ｆｏｏ` and `foo` as different items. This one:
//!
//! - bounds the input before parsing it (the HTTP body limit does it on the
//!   wire, [`Limits::max_input_bytes`] again here for non-HTTP callers);
//! - parses CSV quoting (`"Smith, John"` is one item, `""` inside quotes
//!   is a quote, and quoting a user did not mean, like `a"b`, is refused);
//! - normalizes each item to Unicode NFKC, so look-alike compatibility forms
//!   compare equal, then trims it;
//! - limits the number of items and the length of each (in characters,
//!   after normalization, since NFKC can lengthen text);
//! - returns a typed error naming the offending item, which the HTTP handler
//!   turns into a 422 problem.
//!
//! ```sh
//! cargo run --example bounded_input            # parses a few samples and exits
//! cargo run --example bounded_input -- serve   # POST /items on 127.0.0.1:3001
//! ```

use axum::routing::post;
use axum::{Json, Router};
use http::StatusCode;
use tower_harden::error::Problem;
use tower_harden::input::BodyLimitLayer;
use unicode_normalization::UnicodeNormalization;

/// Limits on a list of items.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest input, in bytes.
    pub max_input_bytes: usize,
    /// The most items.
    pub max_items: usize,
    /// The longest item, in characters after normalization.
    pub max_item_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: 16 * 1024,
            max_items: 100,
            max_item_chars: 64,
        }
    }
}

/// Why a list of items was refused. Item numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemsError {
    /// The input is longer than the limit.
    #[error("the input is {len} bytes long, more than the limit of {limit}")]
    InputTooLong { len: usize, limit: usize },
    /// More items than allowed.
    #[error("the input has more than {limit} items")]
    TooManyItems { limit: usize },
    /// One item is longer than allowed.
    #[error("item {item} is {chars} characters long, more than the limit of {limit}")]
    ItemTooLong {
        item: usize,
        chars: usize,
        limit: usize,
    },
    /// One item is empty.
    #[error("item {item} is empty")]
    EmptyItem { item: usize },
    /// The quoting is malformed (an unterminated quote, or text after a
    /// closing quote).
    #[error("item {item} has malformed quoting")]
    MalformedQuoting { item: usize },
    /// The input spans more than one line.
    #[error("the input must be a single line")]
    MultipleLines,
}

impl ItemsError {
    /// The 422 problem a client gets, naming the offending item.
    pub fn problem(&self) -> Problem {
        let problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
            "Invalid input",
        )
        .with_detail(self.to_string());
        match self {
            Self::ItemTooLong { item, .. }
            | Self::EmptyItem { item }
            | Self::MalformedQuoting { item } => problem.with_member("item", *item),
            _ => problem,
        }
    }
}

/// Splits one line of comma-separated items, with CSV quoting.
pub fn parse_items(input: &str, limits: &Limits) -> Result<Vec<String>, ItemsError> {
    if input.len() > limits.max_input_bytes {
        return Err(ItemsError::InputTooLong {
            len: input.len(),
            limit: limits.max_input_bytes,
        });
    }
    let line = input.strip_suffix('\n').unwrap_or(input);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.contains(['\n', '\r']) {
        return Err(ItemsError::MultipleLines);
    }
    if line.trim().is_empty() {
        return Ok(Vec::new());
    }
    let record = split_fields(line, limits.max_items)?;
    let mut items = Vec::with_capacity(record.len().min(limits.max_items));
    for (index, raw) in record.iter().enumerate() {
        let raw = raw.as_str();
        let item = index + 1;
        // Bound the work before normalizing: NFKC expands a character to at
        // most 18 characters, so a raw item this long can only grow.
        if raw.chars().count() > limits.max_item_chars.saturating_mul(18) {
            return Err(ItemsError::ItemTooLong {
                item,
                chars: raw.chars().count(),
                limit: limits.max_item_chars,
            });
        }
        let normalized: String = raw.nfkc().collect::<String>().trim().to_owned();
        let chars = normalized.chars().count();
        if chars == 0 {
            return Err(ItemsError::EmptyItem { item });
        }
        if chars > limits.max_item_chars {
            return Err(ItemsError::ItemTooLong {
                item,
                chars,
                limit: limits.max_item_chars,
            });
        }
        items.push(normalized);
    }
    Ok(items)
}

/// Splits a line into fields with CSV quoting (RFC 4180, plus blanks around
/// a quoted field, which people type), refusing quoting a user did not mean:
/// a quote inside an unquoted item (`a"b`), text after a closing quote
/// (`"a"b`), or a quote never closed. Stops at `max_items + 1` fields.
fn split_fields(line: &str, max_items: usize) -> Result<Vec<String>, ItemsError> {
    #[derive(PartialEq)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
        AfterQuoted,
    }
    let mut fields = vec![String::new()];
    let mut state = State::FieldStart;
    for c in line.chars() {
        let item = fields.len();
        let field = fields.last_mut().expect("never empty");
        state = match (state, c) {
            (State::Quoted, '"') => State::QuoteInQuoted,
            (State::Quoted, c) => {
                field.push(c);
                State::Quoted
            }
            (State::QuoteInQuoted, '"') => {
                field.push('"');
                State::Quoted
            }
            (
                State::FieldStart | State::Unquoted | State::QuoteInQuoted | State::AfterQuoted,
                ',',
            ) => {
                if fields.len() == max_items {
                    return Err(ItemsError::TooManyItems { limit: max_items });
                }
                fields.push(String::new());
                State::FieldStart
            }
            (State::QuoteInQuoted | State::AfterQuoted, ' ' | '\t') => State::AfterQuoted,
            (State::QuoteInQuoted | State::AfterQuoted, _) => {
                return Err(ItemsError::MalformedQuoting { item })
            }
            (State::FieldStart, '"') => {
                field.clear();
                State::Quoted
            }
            (State::Unquoted, '"') => return Err(ItemsError::MalformedQuoting { item }),
            (State::FieldStart | State::Unquoted, c) => {
                field.push(c);
                if c == ' ' || c == '\t' {
                    State::FieldStart
                } else {
                    State::Unquoted
                }
            }
        };
    }
    if state == State::Quoted {
        return Err(ItemsError::MalformedQuoting { item: fields.len() });
    }
    Ok(fields)
}

async fn items(body: String) -> Result<Json<Vec<String>>, Problem> {
    parse_items(&body, &Limits::default())
        .map(Json)
        .map_err(|error| error.problem())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        let app = Router::new()
            .route("/items", post(items))
            .layer(BodyLimitLayer::new(
                Limits::default().max_input_bytes as u64,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        return Ok(());
    }
    let samples = [
        "apples, pears, \"Smith, John\"",
        "ｆｏｏ, bar",
        "a, , b",
        "\"unterminated, b",
        &format!("short, {}", "x".repeat(100)),
    ];
    for sample in samples {
        match parse_items(sample, &Limits::default()) {
            Ok(items) => println!("{sample:?} -> {items:?}"),
            Err(error) => println!(
                "{sample:?} -> 422 {}",
                String::from_utf8_lossy(&error.problem().to_json())
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Result<Vec<String>, ItemsError> {
        parse_items(input, &Limits::default())
    }

    #[test]
    fn splits_and_trims() {
        assert_eq!(parse(" a , b,c ").unwrap(), ["a", "b", "c"]);
        assert_eq!(parse("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn quoted_commas_stay_in_one_item() {
        assert_eq!(parse("\"Smith, John\", x").unwrap(), ["Smith, John", "x"]);
        assert_eq!(parse("\"say \"\"hi\"\"\"").unwrap(), ["say \"hi\""]);
    }

    #[test]
    fn normalizes_to_nfkc() {
        assert_eq!(parse("ｆｏｏ, ﬁle").unwrap(), ["foo", "file"]);
    }

    #[test]
    fn refuses_naming_the_item() {
        assert_eq!(parse("a, , b"), Err(ItemsError::EmptyItem { item: 2 }));
        let long = format!("a, b, {}", "x".repeat(65));
        assert_eq!(
            parse(&long),
            Err(ItemsError::ItemTooLong {
                item: 3,
                chars: 65,
                limit: 64
            })
        );
        let problem = parse(&long).unwrap_err().problem();
        let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(json["status"], 422);
        assert_eq!(json["item"], 3);
        assert!(matches!(
            parse("a\"b\", c"),
            Err(ItemsError::MalformedQuoting { item: 1 })
        ));
    }

    #[test]
    fn bounds_count_and_input() {
        let many = vec!["a"; 101].join(",");
        assert_eq!(parse(&many), Err(ItemsError::TooManyItems { limit: 100 }));
        let huge = "a".repeat(16 * 1024 + 1);
        assert!(matches!(parse(&huge), Err(ItemsError::InputTooLong { .. })));
        assert_eq!(parse("a\nb"), Err(ItemsError::MultipleLines));
    }

    #[test]
    fn expansion_is_bounded_by_characters_after_normalization() {
        // U+FDFA normalizes to 18 characters.
        let item = "\u{FDFA}".repeat(4);
        assert!(matches!(
            parse(&item),
            Err(ItemsError::ItemTooLong {
                item: 1,
                chars: 72,
                ..
            })
        ));
    }
}
