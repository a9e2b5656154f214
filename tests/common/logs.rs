//! Captures what the crate logs, as JSON lines or text, for assertions.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Every line, each of which must be one JSON object: a forged line
    /// would not parse.
    pub fn events(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("log line is not one JSON object ({e}): {line:?}"))
            })
            .collect()
    }

    /// The outcome events (one per request).
    pub fn outcomes(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| event["fields"]["message"] == "request completed")
            .collect()
    }

    pub fn only_outcome(&self) -> Value {
        let outcomes = self.outcomes();
        assert_eq!(
            outcomes.len(),
            1,
            "expected one outcome event: {outcomes:#?}"
        );
        outcomes.into_iter().next().unwrap()
    }
}

/// Captures this thread's JSON log until the guard drops, down to DEBUG
/// (axum logs each extractor rejection at TRACE, under `axum::rejection`:
/// that is axum's own trace, not a second report of the failure).
pub fn capture_json() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_current_span(true)
        .with_span_list(true)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Captures this thread's plain-text log (no ANSI colours) until the guard drops.
pub fn capture_text() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}
