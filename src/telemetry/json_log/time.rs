//! The line's timestamp: the text of tracing-subscriber's `SystemTime`
//! timer (RFC 3339, UTC, microseconds), written in one piece.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The system clock, written as tracing-subscriber's
/// [`SystemTime`](tracing_subscriber::fmt::time::SystemTime) writes it:
/// RFC 3339 in UTC with microseconds, `2026-12-03T08:10:48.123456Z`.
///
/// The same text for less work: built in a buffer on the stack and written
/// once, where tracing-subscriber's goes through the formatting machinery
/// field by field. Instants before 1970 or after 9999, which a sane clock
/// never reads, are handed to tracing-subscriber's timer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UtcMicros;

impl FormatTime for UtcMicros {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now();
        match now.duration_since(UNIX_EPOCH) {
            Ok(since_epoch) if since_epoch < LAST_SECOND_OF_9999 => {
                writer.write_str(rfc3339_micros(since_epoch).as_str())
            }
            _ => tracing_subscriber::fmt::time::SystemTime.format_time(writer),
        }
    }
}

/// 10000-01-01T00:00:00Z, in seconds since the epoch.
const LAST_SECOND_OF_9999: Duration = Duration::from_secs(253_402_300_800);

/// A timestamp's text, on the stack.
pub(super) struct Timestamp([u8; 27]);

impl Timestamp {
    pub(super) fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// `since_epoch` (before the year 10000) as `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`.
pub(super) fn rfc3339_micros(since_epoch: Duration) -> Timestamp {
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    let micros = since_epoch.subsec_micros();
    let micros = u64::from(micros);
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    for (at, value) in [
        (0, year as u64 / 100),
        (2, year as u64 % 100),
        (5, month),
        (8, day),
        (11, second_of_day / 3600),
        (14, second_of_day / 60 % 60),
        (17, second_of_day % 60),
        (20, micros / 10_000),
        (22, micros / 100 % 100),
        (24, micros % 100),
    ] {
        text[at] = b'0' + (value / 10) as u8;
        text[at + 1] = b'0' + (value % 10) as u8;
    }
    Timestamp(text)
}

/// Year, month and day of the `days`th day since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u64;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u64;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        for (seconds, micros, text) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.000001Z"),
            (1_764_749_448, 123_456, "2025-12-03T08:10:48.123456Z"),
            (4_107_542_399, 999_999, "2100-02-28T23:59:59.999999Z"),
            (253_402_300_799, 999_999, "9999-12-31T23:59:59.999999Z"),
        ] {
            let since_epoch = Duration::from_secs(seconds) + Duration::from_micros(micros);
            assert_eq!(rfc3339_micros(since_epoch).as_str(), text);
        }
    }

    #[test]
    fn agrees_with_humantime_at_every_day_boundary_for_centuries() {
        for day in (0..2_932_896u64).step_by(97) {
            let since_epoch =
                Duration::from_secs(day * 86_400 + 86_399) + Duration::from_nanos(987_654_321);
            let reference = UNIX_EPOCH + since_epoch;
            assert_eq!(
                rfc3339_micros(since_epoch).as_str(),
                humantime::format_rfc3339_micros(reference).to_string()
            );
        }
    }

    /// tracing-subscriber's timer reads the clock itself: the text of ours,
    /// read between two of its readings, sorts between them and has their
    /// length (the format is fixed-width, so sorting is chronological).
    #[test]
    fn reads_as_tracing_subscribers_system_time() {
        fn read(timer: &impl FormatTime) -> String {
            let mut text = String::new();
            timer.format_time(&mut Writer::new(&mut text)).unwrap();
            text
        }
        let before = read(&tracing_subscriber::fmt::time::SystemTime);
        let ours = read(&UtcMicros);
        let after = read(&tracing_subscriber::fmt::time::SystemTime);
        assert_eq!(ours.len(), before.len());
        assert!(before <= ours && ours <= after, "{before} {ours} {after}");
    }
}
