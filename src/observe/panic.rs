//! Panics caught inside a request: their message, whatever the payload, and
//! their location.
//!
//! The payload of a panic does not carry its location; only a panic hook sees
//! it ([`std::panic::PanicHookInfo::location`]). So the observe layer installs,
//! once per process, a hook chained to the one before it. The hook acts only
//! on a thread that is polling an observed request (a thread-local depth
//! counter says so): there it stores the location (and a backtrace when
//! `RUST_BACKTRACE` asks for one and the panic's line will be written: its
//! level is enabled and the layer's flood gate lets a `panic` line through)
//! in a thread-local for the layer to log inside the request's span, and by default does not call the previous hook,
//! so the panic is reported once, as the request's outcome event. Every other
//! panic goes to the previous hook untouched. A hook set later by the
//! application replaces this one; the layer then still logs the message,
//! with the location `unknown`.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::sync::Once;

use super::fields::TARGET;
use crate::telemetry::FloodGate;

thread_local! {
    static CATCHING: Cell<u32> = const { Cell::new(0) };
    static FORWARD: Cell<bool> = const { Cell::new(false) };
    /// The flood gate of the request being polled (`None`: no throttle).
    static GATE: Cell<Option<&'static FloodGate>> = const { Cell::new(None) };
    static CAUGHT: RefCell<Option<PanicSite>> = const { RefCell::new(None) };
}

/// Where a caught panic happened.
#[derive(Debug, Clone)]
pub(crate) struct PanicSite {
    pub(crate) location: String,
    pub(crate) backtrace: Option<String>,
}

static INSTALL: Once = Once::new();

/// Installs the chained hook, once per process.
pub(crate) fn install_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) > 0 {
                // Capturing and formatting a backtrace costs far more than the
                // request: only for a line that will be written.
                let written = GATE
                    .with(Cell::get)
                    .is_none_or(|gate| gate.would_allow("panic"))
                    && tracing::enabled!(target: TARGET, tracing::Level::ERROR);
                let backtrace = if written {
                    Backtrace::capture()
                } else {
                    Backtrace::disabled()
                };
                let site = PanicSite {
                    location: info
                        .location()
                        .map_or_else(|| "unknown".to_owned(), ToString::to_string),
                    backtrace: (backtrace.status() == BacktraceStatus::Captured)
                        .then(|| backtrace.to_string()),
                };
                CAUGHT.with(|caught| *caught.borrow_mut() = Some(site));
                if !FORWARD.with(Cell::get) {
                    return;
                }
            }
            previous(info);
        }));
    });
}

/// Marks this thread as polling an observed request while alive.
pub(crate) struct Catching {
    forward: bool,
    gate: Option<&'static FloodGate>,
}

impl Catching {
    pub(crate) fn enter(forward_to_previous_hook: bool, gate: Option<&'static FloodGate>) -> Self {
        CATCHING.with(|depth| depth.set(depth.get() + 1));
        // A site left by a panic that the application caught itself is stale.
        CAUGHT.with(|caught| caught.borrow_mut().take());
        let forward = FORWARD.with(|f| f.replace(forward_to_previous_hook));
        let gate = GATE.with(|g| g.replace(gate));
        Self { forward, gate }
    }

    /// The site of the panic just caught on this thread, if the hook saw it.
    pub(crate) fn take_site(&self) -> Option<PanicSite> {
        CAUGHT.with(|caught| caught.borrow_mut().take())
    }
}

impl Drop for Catching {
    fn drop(&mut self) {
        CATCHING.with(|depth| depth.set(depth.get().saturating_sub(1)));
        FORWARD.with(|f| f.set(self.forward));
        GATE.with(|g| g.set(self.gate));
    }
}

/// The panic's message: its text for `&str` and `String` payloads, the
/// value for payloads of primitive types (`panic_any(42)`), else the fact
/// that the payload's type is unknown.
pub(crate) fn payload_message(payload: &(dyn Any + Send)) -> String {
    macro_rules! try_types {
        ($($ty:ty),*) => {
            $(if let Some(value) = payload.downcast_ref::<$ty>() {
                return format!("{value:?}");
            })*
        };
    }
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        return (*text).to_owned();
    }
    if let Some(text) = payload.downcast_ref::<String>() {
        return text.clone();
    }
    try_types!(
        i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, f32, f64, bool, char
    );
    "panic payload of a type that is neither a string nor a primitive".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_messages() {
        assert_eq!(payload_message(&"boom"), "boom");
        assert_eq!(payload_message(&String::from("boom")), "boom");
        assert_eq!(payload_message(&42_i32), "42");
        assert!(payload_message(&vec![1]).contains("neither"));
    }
}
