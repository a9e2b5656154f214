//! The event line: `timestamp`, `level`, the event's fields flattened in
//! the order they were recorded, `target`, then `span` (the current span's
//! fields and its `name`), as tracing-subscriber's JSON formatter writes it
//! with `flatten_event(true)`, `with_current_span(true)` and
//! `with_span_list(false)`.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::escape::{write_escaped, write_number, write_string, Escaping};
use super::{JsonLog, JsonLogFields};

impl<S, T> FormatEvent<S, JsonLogFields> for JsonLog<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonLogFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A record bridged from the `log` crate: its own target, not the
        // bridge's.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());

        writer.write_str("{\"timestamp\":\"")?;
        self.timer
            .format_time(&mut Writer::new(&mut Escaping(&mut writer)))?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(metadata.level().as_str())?;
        writer.write_char('"')?;

        let mut fields = EventFields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;

        writer.write_str(",\"target\":")?;
        write_string(&mut writer, metadata.target())?;

        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            writer.write_str(",\"span\":")?;
            let extensions = span.extensions();
            let object = extensions
                .get::<FormattedFields<JsonLogFields>>()
                .map(|fields| fields.fields.as_str())
                .and_then(|object| object.strip_suffix('}'))
                .filter(|open| open.starts_with('{'));
            match object {
                Some(open) => {
                    writer.write_str(open)?;
                    if open.len() > 1 {
                        writer.write_char(',')?;
                    }
                }
                // Fields that failed to format (tracing-subscriber's
                // formatter panics there): the name alone.
                None => writer.write_char('{')?,
            }
            writer.write_str("\"name\":")?;
            write_string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Writes each field as a member, in the order recorded, as tracing-serde's
/// `SerdeMapVisitor` does (no field left out, none merged).
struct EventFields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl EventFields<'_, '_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.out.write_str(",\"")?;
                write_escaped(self.out, field.name())?;
                self.out.write_str("\":")?;
                value(self.out)
            })();
        }
    }
}

/// `i128`, `u128`, byte slices and errors go through `Visit`'s defaults to
/// `record_debug`, as in tracing-serde.
impl Visit for EventFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| write_string(out, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write_number(out, &value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write_number(out, &value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field, |out| write_number(out, &value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.write_char('"')?;
            write!(Escaping(&mut *out), "{value:?}")?;
            out.write_char('"')
        });
    }
}
