//! JSON log lines as tracing-subscriber's JSON formatter writes them with
//! the settings this crate's examples use, for a fraction of the work
//! (feature `json-log`).
//!
//! The line is the one
//! `tracing_subscriber::fmt().json().flatten_event(true).with_current_span(true).with_span_list(false)`
//! writes, byte for byte: `timestamp`, `level`, the event's fields in the
//! order recorded (`message` among them), `target`, and `span` (the current
//! span's fields sorted by name, then its `name`); the same escapes and the
//! same numbers as serde_json; records bridged from the `log` crate under
//! their own target; a field recorded again with `Span::record` replaces
//! the old value. A log pipeline cannot tell the two apart.
//!
//! What changes is the cost: tracing-subscriber writes the line through
//! serde_json into an `io::Write` adaptor (every piece checked for UTF-8
//! again) and parses each span's fields back from JSON for every event;
//! this formatter writes straight into the line and keeps the span's
//! fields ready to copy. `benches/README.md` has the measurements.
//!
//! Filters, writers and layers stay tracing-subscriber's: only the
//! formatter changes. For the writer, [`BatchWriter`] is a cheaper
//! off-thread writer than tracing-appender's under load (one wake per
//! batch of lines instead of nearly one per line), for this formatter's
//! lines or any other's.
//!
//! Where the two differ: tracing-subscriber's settings other than the ones
//! above (file and line, thread names, the span list) have no equivalent
//! here; values recorded through `valuable` (an unstable tracing feature)
//! are written as their `Debug` text, not as structured JSON; and a span
//! whose fields failed to format (a `Debug` that returned an error) is
//! written with its name alone, where tracing-subscriber panics.
//!
//! ```
//! use tracing_subscriber::EnvFilter;
//!
//! // Was: tracing_subscriber::fmt().json().flatten_event(true)
//! //     .with_current_span(true).with_span_list(false)
//! let subscriber = tower_harden::telemetry::json_log::subscriber()
//!     .with_env_filter(EnvFilter::new("info"))
//!     .with_writer(std::io::stdout)
//!     .finish();
//! tracing::subscriber::with_default(subscriber, || {
//!     let span = tracing::info_span!("request", request_id = "a1");
//!     let _entered = span.enter();
//!     // {"timestamp":"…","level":"INFO","message":"request completed",
//!     //  "status":200,"target":"…","span":{"request_id":"a1","name":"request"}}
//!     tracing::info!(status = 200, "request completed");
//! });
//! ```
//!
//! The two halves, for a subscriber assembled by hand (the fields'
//! formatter first: the event formatter reads what it writes):
//!
//! ```
//! use tower_harden::telemetry::json_log::{JsonLog, JsonLogFields};
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let layer = tracing_subscriber::fmt::layer()
//!     .fmt_fields(JsonLogFields::new())
//!     .event_format(JsonLog::new())
//!     .with_writer(std::io::stderr);
//! let subscriber = tracing_subscriber::registry().with(layer);
//! # drop(subscriber);
//! ```

mod batch_writer;
mod escape;
mod event;
mod fields;
mod time;

use std::cell::RefCell;
use std::thread::LocalKey;

use tracing::Subscriber;
use tracing_subscriber::fmt::SubscriberBuilder;
use tracing_subscriber::registry::LookupSpan;

pub use batch_writer::{BatchLine, BatchWriter, BatchWriterBuilder, BatchWriterGuard};
pub use fields::JsonLogFields;
pub use time::UtcMicros;

/// The [`FormatEvent`](tracing_subscriber::fmt::FormatEvent) half of the
/// JSON line: one object per event, then a newline. It formats events of a
/// subscriber whose fields' formatter is [`JsonLogFields`].
///
/// `T` writes the timestamp, escaped as a JSON string; the default,
/// [`UtcMicros`], writes what tracing-subscriber's default timer writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLog<T = UtcMicros> {
    timer: T,
}

impl JsonLog {
    /// The line with the system clock's time, as tracing-subscriber's
    /// `SystemTime` writes it.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<T> JsonLog<T> {
    /// Another timer (any of tracing-subscriber's
    /// [`FormatTime`](tracing_subscriber::fmt::time::FormatTime)s), as
    /// `tracing_subscriber::fmt().with_timer(..)` takes.
    pub fn with_timer<T2>(self, timer: T2) -> JsonLog<T2> {
        JsonLog { timer }
    }
}

/// tracing-subscriber's builder with the JSON line as its format: the
/// drop-in replacement for
/// `tracing_subscriber::fmt().json().flatten_event(true).with_current_span(true).with_span_list(false)`.
/// Add the filter and the writer as usual.
pub fn subscriber() -> SubscriberBuilder<JsonLogFields, JsonLog> {
    tracing_subscriber::fmt()
        .fmt_fields(JsonLogFields::new())
        .event_format(JsonLog::new())
}

/// tracing-subscriber's `fmt` layer with the JSON line as its format, for
/// a `registry()` with other layers.
pub fn layer<S>() -> tracing_subscriber::fmt::Layer<S, JsonLogFields, JsonLog>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonLogFields::new())
        .event_format(JsonLog::new())
}

/// A buffer of this thread's, reused from line to line: no allocation
/// once warm.
trait Scratch {
    fn new() -> Self;
    /// Emptied, capacity kept.
    fn clear(&mut self);
    /// Grown past what is worth keeping (by a huge field).
    fn is_oversized(&self) -> bool;
}

/// Bytes a buffer keeps between lines at most.
const KEPT_CAPACITY: usize = 64 * 1024;

impl Scratch for String {
    fn new() -> Self {
        String::new()
    }

    fn clear(&mut self) {
        String::clear(self);
    }

    fn is_oversized(&self) -> bool {
        self.capacity() > KEPT_CAPACITY
    }
}

/// Runs `f` on this thread's `buffer`, emptied, or on a new one when it is
/// in use (a `Debug` that logs or opens a span while it is written) or
/// already destroyed (a thread ending). An oversized buffer is given back
/// afterwards.
fn with_scratch<T: Scratch + 'static, R>(
    buffer: &'static LocalKey<RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut f = Some(f);
    let reused = buffer.try_with(|cell| {
        let mut scratch = cell.try_borrow_mut().ok()?;
        scratch.clear();
        let result = f.take().map(|f| f(&mut scratch));
        if scratch.is_oversized() {
            *scratch = T::new();
        }
        result
    });
    match (reused, f) {
        (Ok(Some(result)), _) => result,
        (_, Some(f)) => f(&mut T::new()),
        // `f` is taken only by the call that returned its result.
        (_, None) => unreachable!("with_scratch: f ran and gave no result"),
    }
}
