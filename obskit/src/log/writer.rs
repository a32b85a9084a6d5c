//! The bounded writer: log lines are appended to a buffer of at most a fixed number of bytes and
//! written out by a thread of their own, so a request that logs never waits on stdout. A line
//! that does not fit (stdout cannot keep up: a full pipe, a stalled terminal) is dropped and
//! counted.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::metrics::Counter;

/// How many bytes of lines may wait for the writer thread by default: a few thousand lines.
pub const DEFAULT_QUEUE_BYTES: usize = 1 << 20;

/// The lines waiting, and what the writer thread has taken so far.
struct Queue {
    pending: Vec<u8>,
    /// Increases each time the writer thread takes `pending`; [`LineWriter::flush`] waits until
    /// the batch holding its lines is written.
    taken: u64,
    /// Batches written out (equal to `taken` when the writer thread is idle).
    written: u64,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when lines arrive or the writer closes.
    wake: Condvar,
    /// Signalled when a batch has been written.
    done: Condvar,
    max_bytes: usize,
    dropped: Counter,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Appends lines for a thread that writes them to its output. Cheap to clone; the thread ends
/// when the last clone is dropped, after writing what was queued.
#[derive(Clone)]
pub(crate) struct LineWriter {
    shared: Arc<Shared>,
    _thread: Arc<WriterThread>,
}

/// Closes the queue and waits for the thread's last batch when the last writer goes.
struct WriterThread {
    shared: Arc<Shared>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

impl LineWriter {
    /// A writer to `output` holding at most `max_bytes` of lines not yet written; `dropped`
    /// counts the lines refused for want of room.
    pub(crate) fn start(
        output: Box<dyn Write + Send>,
        max_bytes: usize,
        dropped: Counter,
    ) -> std::io::Result<LineWriter> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                taken: 0,
                written: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            max_bytes,
            dropped,
        });
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("obskit-log".to_string())
            .spawn(move || write_loop(&thread_shared, output))?;
        Ok(LineWriter {
            _thread: Arc::new(WriterThread {
                shared: Arc::clone(&shared),
                handle: Mutex::new(Some(handle)),
            }),
            shared,
        })
    }

    /// Queues one line (ending in `\n`); `false`, and counted, when it does not fit.
    pub(crate) fn write_line(&self, line: &[u8]) -> bool {
        let mut queue = self.shared.lock();
        if queue.pending.len() + line.len() > self.shared.max_bytes {
            drop(queue);
            self.shared.dropped.inc();
            return false;
        }
        let was_empty = queue.pending.is_empty();
        queue.pending.extend_from_slice(line);
        drop(queue);
        if was_empty {
            self.shared.wake.notify_one();
        }
        true
    }

    /// Waits until every line queued before this call is written, or `timeout` passes; whether
    /// they were.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let mut queue = self.shared.lock();
        // The lines queued so far go out with the next batch taken, or are in the one being
        // written.
        let target = if queue.pending.is_empty() {
            queue.taken
        } else {
            queue.taken + 1
        };
        let deadline = std::time::Instant::now() + timeout;
        while queue.written < target {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            queue = self
                .shared
                .done
                .wait_timeout(queue, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// The writer thread: takes the whole queue at once and writes it outside the lock.
fn write_loop(shared: &Shared, mut output: Box<dyn Write + Send>) {
    let mut batch = Vec::new();
    loop {
        {
            let mut queue = shared.lock();
            while queue.pending.is_empty() && !queue.closed {
                queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            if queue.pending.is_empty() {
                return;
            }
            std::mem::swap(&mut batch, &mut queue.pending);
            queue.taken += 1;
        }
        // A failed write (stdout closed) loses the batch; there is nowhere to report it but here.
        let _ = output.write_all(&batch).and_then(|()| output.flush());
        // The queue's buffer keeps no more than it was lent: a burst does not stay allocated.
        batch.clear();
        if batch.capacity() > shared.max_bytes {
            batch = Vec::new();
        }
        shared.lock().written += 1;
        shared.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Registry;

    /// An output that stalls until told to go on, like a pipe nobody reads.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.open;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.seen.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_and_counts_what_does_not_fit() {
        let registry = Registry::new();
        let dropped = registry.counter("dropped_total", "x").unwrap();
        let gate = Gate::default();
        let writer = LineWriter::start(Box::new(gate.clone()), 100, dropped.clone()).unwrap();
        // The first line goes to the (stalled) thread; then the queue fills to its 100 bytes.
        assert!(writer.write_line(&[b'a'; 39]));
        assert!(!writer.flush(Duration::from_millis(50)), "the output is stalled");
        let mut accepted = 0;
        for _ in 0..10 {
            if writer.write_line(&[b'b'; 39]) {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 2, "two more lines fit in 100 bytes");
        assert_eq!(dropped.get(), 8);
        *gate.open.0.lock().unwrap() = true;
        gate.open.1.notify_all();
        assert!(writer.flush(Duration::from_secs(10)));
        assert_eq!(gate.seen.lock().unwrap().len(), 39 * 3);
    }

    #[test]
    fn the_last_lines_are_written_when_the_writer_goes() {
        let registry = Registry::new();
        let gate = Gate::default();
        *gate.open.0.lock().unwrap() = true;
        let writer = LineWriter::start(
            Box::new(gate.clone()),
            DEFAULT_QUEUE_BYTES,
            registry.counter("dropped_total", "x").unwrap(),
        )
        .unwrap();
        for i in 0..100 {
            writer.write_line(format!("line {i}\n").as_bytes());
        }
        drop(writer);
        let seen = String::from_utf8(gate.seen.lock().unwrap().clone()).unwrap();
        assert_eq!(seen.lines().count(), 100);
        assert!(seen.ends_with("line 99\n"));
    }
}
