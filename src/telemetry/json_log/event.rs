//! The event line: `timestamp`, `level`, the event's fields flattened in
//! the order they were recorded, `target`, then `span` (the current span's
//! fields and its `name`), as tracing-subscriber's JSON formatter writes it
//! with `flatten_event(true)`, `with_current_span(true)` and
//! `with_span_list(false)`.

use std::cell::RefCell;
use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::escape::{write_escaped, write_i64, write_number, write_string, write_u64, Escaping};
use super::{with_scratch, JsonLog, JsonLogFields};

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
        // Built in a buffer of this thread's and written at once: the
        // pieces go into a `String` directly, not each through the
        // writer's `dyn fmt::Write`.
        with_scratch(&LINE, |line: &mut String| {
            self.write_line(ctx, line, event)?;
            writer.write_str(line)
        })
    }
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<T: FormatTime> JsonLog<T> {
    fn write_line<S>(
        &self,
        ctx: &FmtContext<'_, S, JsonLogFields>,
        line: &mut String,
        event: &Event<'_>,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        // A record bridged from the `log` crate: its own target, not the
        // bridge's.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());

        line.push_str("{\"timestamp\":\"");
        self.timer
            .format_time(&mut Writer::new(&mut Escaping(&mut *line)))?;
        line.push_str("\",\"level\":\"");
        line.push_str(metadata.level().as_str());
        line.push('"');

        let mut fields = EventFields {
            out: &mut *line,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;

        line.push_str(",\"target\":");
        write_string(line, metadata.target())?;

        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            line.push_str(",\"span\":");
            let extensions = span.extensions();
            let object = extensions
                .get::<FormattedFields<JsonLogFields>>()
                .map(|fields| fields.fields.as_str())
                .and_then(|object| object.strip_suffix('}'))
                .filter(|open| open.starts_with('{'));
            match object {
                Some(open) => {
                    line.push_str(open);
                    if open.len() > 1 {
                        line.push(',');
                    }
                }
                // Fields that failed to format (tracing-subscriber's
                // formatter panics there): the name alone.
                None => line.push('{'),
            }
            line.push_str("\"name\":");
            write_string(line, span.name())?;
            line.push('}');
        }
        line.push_str("}\n");
        Ok(())
    }
}

/// Writes each field as a member, in the order recorded, as tracing-serde's
/// `SerdeMapVisitor` does (no field left out, none merged).
struct EventFields<'a> {
    out: &'a mut String,
    result: fmt::Result,
}

impl EventFields<'_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_ok() {
            self.out.push_str(",\"");
            self.result = write_escaped(self.out, field.name()).and_then(|()| {
                self.out.push_str("\":");
                value(self.out)
            });
        }
    }
}

/// `i128`, `u128`, byte slices and errors go through `Visit`'s defaults to
/// `record_debug`, as in tracing-serde.
impl Visit for EventFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| write_string(out, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write_u64(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write_i64(out, value));
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
            out.push('"');
            write!(Escaping(&mut *out), "{value:?}")?;
            out.push('"');
            Ok(())
        });
    }
}
