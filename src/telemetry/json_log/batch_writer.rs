//! Log lines handed to one writer thread in batches: the thread serving a
//! request copies its line into a shared buffer and goes on; the writer
//! thread wakes once per batch, not once per line.
//!
//! tracing-appender's `non_blocking` sends each line down a channel as its
//! own allocation, and the sender wakes the worker for every line it finds
//! asleep: under load, a futex wake, a context switch and a `write` per
//! request or close to it, which over HTTP cost about as much as formatting
//! the line (`benches/README.md`). Here a line is one locked copy; the
//! first line into an empty buffer wakes the writer, which then gathers
//! lines for up to [`BatchWriterBuilder::interval`] (or until
//! [`BatchWriterBuilder::flush_at`] bytes) and writes them with one call.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// The most bytes waiting to be written, by default (the writer thread's
/// batch in hand can hold as much again).
const DEFAULT_CAPACITY: usize = 1 << 20;
/// How long the writer gathers lines after the first, by default.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(10);
/// Bytes waiting that make the writer write without waiting out the
/// interval, by default.
const DEFAULT_FLUSH_AT: usize = 64 << 10;
/// How long dropping the guard waits for the last lines to be written.
const FLUSH_ON_DROP: Duration = Duration::from_secs(1);

/// A [`MakeWriter`] that copies each line into a bounded buffer which one
/// thread writes out in batches.
///
/// tracing-appender's `non_blocking` sends each line down a channel as its
/// own allocation, and wakes its worker for every line that finds it asleep:
/// under load, a wake, a context switch and a `write` per request or close
/// to it. Here a line is one locked copy; the first line into an empty
/// buffer wakes the writer thread, which then gathers lines for up to
/// [`interval`](BatchWriterBuilder::interval) (or until
/// [`flush_at`](BatchWriterBuilder::flush_at) bytes) and writes them with
/// one call.
///
/// Each `write` call is kept whole, as tracing-subscriber's `fmt` layer
/// writes a line: lines from many threads never interleave. Memory is
/// bounded: at most [`capacity`](BatchWriterBuilder::capacity) bytes wait,
/// and when they are full a line is dropped and counted
/// ([`dropped_lines`](Self::dropped_lines)), or with
/// [`lossy(false)`](BatchWriterBuilder::lossy) its thread waits for room.
/// Lines are written in the order they were accepted, at most about one
/// interval after.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use tower_harden::telemetry::json_log::BatchWriter;
///
/// let (writer, guard) = BatchWriter::new(std::io::stdout())?;
/// tower_harden::telemetry::json_log::subscriber()
///     .with_writer(writer)
///     .finish();
/// // Keep `guard` until the end of `main`: dropping it writes what is left.
/// drop(guard);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Ends the writer thread when dropped, after it wrote every line accepted
/// (waiting up to a second for a stuck output). Lines written after are
/// dropped and counted.
#[must_use = "dropping the guard stops the writer thread"]
#[derive(Debug)]
pub struct BatchWriterGuard {
    shared: Arc<Shared>,
    finished: mpsc::Receiver<()>,
}

/// The settings of a [`BatchWriter`].
#[derive(Debug, Clone)]
pub struct BatchWriterBuilder {
    capacity: usize,
    interval: Duration,
    flush_at: usize,
    lossy: bool,
    thread_name: String,
}

/// One line's writer, as [`MakeWriter`] lends it.
#[derive(Debug)]
pub struct BatchLine<'a> {
    shared: &'a Shared,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// The writer thread waits here for lines.
    ready: Condvar,
    /// Threads with [`BatchWriterBuilder::lossy`] off wait here for room.
    room: Condvar,
    capacity: usize,
    interval: Duration,
    flush_at: usize,
    lossy: bool,
    dropped_lines: AtomicU64,
    failed_writes: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// No more lines are taken: the guard was dropped or the thread ended.
    closed: bool,
}

impl Default for BatchWriterBuilder {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            interval: DEFAULT_INTERVAL,
            flush_at: DEFAULT_FLUSH_AT,
            lossy: true,
            thread_name: "log-writer".to_owned(),
        }
    }
}

impl BatchWriterBuilder {
    /// The most bytes that wait to be written (default 1 MiB). A line longer
    /// than this is taken only into an empty buffer.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes.max(1);
        self
    }

    /// How long the writer gathers lines after the first before writing
    /// them (default 10 ms): the most a line waits while the output keeps
    /// up. Zero writes each wake-up's lines at once.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Bytes waiting that make the writer write at once (default 64 KiB).
    pub fn flush_at(mut self, bytes: usize) -> Self {
        self.flush_at = bytes.max(1);
        self
    }

    /// Whether a line that finds the buffer full is dropped and counted
    /// (`true`, the default) or its thread waits for room (`false`: no line
    /// lost, but a stuck output stalls the threads that log).
    pub fn lossy(mut self, lossy: bool) -> Self {
        self.lossy = lossy;
        self
    }

    /// The writer thread's name (default `log-writer`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// Starts the writer thread over `output`.
    ///
    /// # Errors
    ///
    /// The thread could not be started.
    pub fn finish<W>(self, output: W) -> io::Result<(BatchWriter, BatchWriterGuard)>
    where
        W: Write + Send + 'static,
    {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            room: Condvar::new(),
            capacity: self.capacity,
            interval: self.interval,
            flush_at: self.flush_at.min(self.capacity),
            lossy: self.lossy,
            dropped_lines: AtomicU64::new(0),
            failed_writes: AtomicU64::new(0),
        });
        let (finished_tx, finished) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name(self.thread_name)
            .spawn(move || {
                let closing = CloseOnExit(&writer_shared);
                write_batches(&writer_shared, output);
                drop(closing);
                let _ = finished_tx.send(());
            })?;
        Ok((
            BatchWriter {
                shared: Arc::clone(&shared),
            },
            BatchWriterGuard { shared, finished },
        ))
    }
}

impl BatchWriter {
    /// A writer over `output` with the default settings.
    ///
    /// # Errors
    ///
    /// The writer thread could not be started.
    pub fn new<W>(output: W) -> io::Result<(Self, BatchWriterGuard)>
    where
        W: Write + Send + 'static,
    {
        Self::builder().finish(output)
    }

    /// The settings, to change before [`BatchWriterBuilder::finish`].
    pub fn builder() -> BatchWriterBuilder {
        BatchWriterBuilder::default()
    }

    /// Lines dropped so far: the buffer was full (lossy) or the writer had
    /// stopped.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped_lines.load(Ordering::Relaxed)
    }

    /// Batches the output refused (an error from `write` or `flush`); their
    /// lines are lost.
    pub fn failed_writes(&self) -> u64 {
        self.shared.failed_writes.load(Ordering::Relaxed)
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        BatchLine {
            shared: &self.shared,
        }
    }
}

impl Write for BatchLine<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.shared.push(line);
        Ok(line.len())
    }

    /// Lines are written by the writer thread; nothing to do here.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // The buffer is plain bytes: a thread that panicked holding the lock
        // left nothing half-done that matters.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        let mut pending = self.lock();
        loop {
            let fits = pending.bytes.is_empty()
                || pending.bytes.len().saturating_add(line.len()) <= self.capacity;
            if fits && !pending.closed {
                break;
            }
            if pending.closed || self.lossy {
                drop(pending);
                self.dropped_lines.fetch_add(1, Ordering::Relaxed);
                return;
            }
            pending = self
                .room
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let before = pending.bytes.len();
        pending.bytes.extend_from_slice(line);
        let after = pending.bytes.len();
        drop(pending);
        // Only the first line of a batch wakes the writer (it is asleep
        // then), and the one that crosses `flush_at` (it may be gathering):
        // a wake is a system call, and saving one per line is the point.
        if before == 0 || (before < self.flush_at && after >= self.flush_at) {
            self.ready.notify_one();
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.room.notify_all();
    }
}

/// The writer thread: waits for a first line, gathers for the interval,
/// takes the batch and writes it outside the lock.
fn write_batches<W: Write>(shared: &Shared, mut output: W) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut pending = shared.lock();
            while pending.bytes.is_empty() && !pending.closed {
                pending = shared
                    .ready
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let gather_until = Instant::now() + shared.interval;
            while !pending.closed && pending.bytes.len() < shared.flush_at {
                let left = gather_until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                pending = shared
                    .ready
                    .wait_timeout(pending, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut pending.bytes, &mut batch);
            pending.closed
        };
        if !shared.lossy {
            shared.room.notify_all();
        }
        if !batch.is_empty()
            && output
                .write_all(&batch)
                .and_then(|()| output.flush())
                .is_err()
        {
            shared.failed_writes.fetch_add(1, Ordering::Relaxed);
        }
        batch.clear();
        if batch.capacity() > shared.capacity {
            // One oversized line must not keep its memory for good.
            batch = Vec::new();
        }
        // Once closed, `push` takes no more lines: the batch just written
        // was the last.
        if closed {
            return;
        }
    }
}

/// Closes the buffer when the writer thread ends, also by a panic in the
/// output: threads waiting for room must not wait for good.
struct CloseOnExit<'a>(&'a Shared);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Drop for BatchWriterGuard {
    fn drop(&mut self) {
        self.shared.close();
        let _ = self.finished.recv_timeout(FLUSH_ON_DROP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// An output the test can read, and hold up.
    #[derive(Clone, Default)]
    struct Collected {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicU64>,
        held: Arc<AtomicBool>,
    }

    impl Write for Collected {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            while self.held.load(Ordering::Acquire) {
                thread::sleep(Duration::from_millis(1));
            }
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Collected {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
    }

    fn line(writer: &BatchWriter, text: &str) {
        writer.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn dropping_the_guard_writes_every_line_in_order() {
        let output = Collected::default();
        let (writer, guard) = BatchWriter::builder()
            .interval(Duration::from_secs(3600))
            .finish(output.clone())
            .unwrap();
        for n in 0..1000 {
            line(&writer, &format!("line {n}\n"));
        }
        drop(guard);
        let expected: String = (0..1000).map(|n| format!("line {n}\n")).collect();
        assert_eq!(output.text(), expected);
        assert_eq!(writer.dropped_lines(), 0);
        // Gathered, not one write per line.
        assert!(output.writes.load(Ordering::Relaxed) < 10);
        line(&writer, "late\n");
        assert_eq!(writer.dropped_lines(), 1);
        assert!(!output.text().contains("late"));
    }

    #[test]
    fn a_line_is_written_without_the_guard_being_dropped() {
        let output = Collected::default();
        let (writer, _guard) = BatchWriter::builder()
            .interval(Duration::from_millis(1))
            .finish(output.clone())
            .unwrap();
        line(&writer, "one\n");
        // No time bound asserted: the line arrives, however long it takes.
        while output.text().is_empty() {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(output.text(), "one\n");
    }

    #[test]
    fn lines_from_many_threads_stay_whole() {
        let output = Collected::default();
        let (writer, guard) = BatchWriter::builder()
            .capacity(4096)
            .flush_at(512)
            .lossy(false)
            .finish(output.clone())
            .unwrap();
        thread::scope(|scope| {
            for t in 0..4 {
                let writer = &writer;
                scope.spawn(move || {
                    for n in 0..500 {
                        line(writer, &format!("{t}:{n}:{}\n", "x".repeat(n % 50)));
                    }
                });
            }
        });
        drop(guard);
        let text = output.text();
        let mut next = [0usize; 4];
        for row in text.lines() {
            let mut parts = row.split(':');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let n: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(parts.next().unwrap(), "x".repeat(n % 50));
            assert_eq!(n, next[t], "thread {t}'s lines in order");
            next[t] += 1;
        }
        assert_eq!(next, [500; 4], "not lossy: nothing dropped");
        assert_eq!(writer.dropped_lines(), 0);
    }

    #[test]
    fn a_full_buffer_drops_and_counts_when_lossy() {
        let output = Collected::default();
        output.held.store(true, Ordering::Release);
        let (writer, guard) = BatchWriter::builder()
            .capacity(100)
            .interval(Duration::ZERO)
            .finish(output.clone())
            .unwrap();
        // The first line goes to the writer thread, which is held writing
        // it; the buffer behind it takes ten lines of ten bytes.
        line(&writer, "012345678\n");
        while !writer.shared.lock().bytes.is_empty() {
            thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..30 {
            line(&writer, "abcdefghi\n");
        }
        let dropped = writer.dropped_lines();
        assert!((20..=21).contains(&dropped), "dropped {dropped}");
        output.held.store(false, Ordering::Release);
        drop(guard);
        let kept = output.text().lines().count() as u64;
        assert_eq!(kept + dropped, 31);
    }

    #[test]
    fn a_line_longer_than_the_capacity_is_taken_alone() {
        let output = Collected::default();
        let (writer, guard) = BatchWriter::builder()
            .capacity(8)
            .lossy(false)
            .finish(output.clone())
            .unwrap();
        let long = format!("{}\n", "y".repeat(100));
        line(&writer, &long);
        line(&writer, "short\n");
        drop(guard);
        assert_eq!(output.text(), format!("{long}short\n"));
    }

    #[test]
    fn an_output_that_panics_does_not_stall_waiting_threads() {
        struct Panicking;
        impl Write for Panicking {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                panic!("output gone");
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (writer, guard) = BatchWriter::builder()
            .capacity(16)
            .lossy(false)
            .interval(Duration::ZERO)
            .finish(Panicking)
            .unwrap();
        // Not lossy and the output is gone: these must end, dropped.
        for _ in 0..10 {
            line(&writer, "0123456789\n");
        }
        drop(guard);
        assert!(writer.dropped_lines() >= 1);
    }

    #[test]
    fn a_failing_output_is_counted() {
        struct Failing;
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (writer, guard) = BatchWriter::new(Failing).unwrap();
        line(&writer, "lost\n");
        drop(guard);
        assert_eq!(writer.failed_writes(), 1);
    }
}
