//! The export pipeline both OTLP signals share (spans in [`crate::trace::otlp`], log records in
//! [`crate::log`]): a queue bounded twice, in items and in bytes (counting the batch being
//! exported too), that a caller offers to without ever waiting, and a thread of its own that
//! takes batches off it and exports them.
//!
//! What does not fit is dropped and counted; a batch that fails to export is counted and not
//! retried, so an outage costs at most one export timeout a batch and memory stays within the
//! queue plus one batch.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Counter;

/// What the pipeline counts, by outcome.
#[derive(Clone, Debug)]
pub(crate) struct QueueCounters {
    pub(crate) exported: Counter,
    pub(crate) dropped_queue_full: Counter,
    pub(crate) dropped_queue_bytes: Counter,
    pub(crate) dropped_export_failed: Counter,
}

/// One signal's exporter, driven by the pipeline's thread.
pub(crate) trait Exporter: Send + 'static {
    /// What is queued (a finished span, a log record).
    type Item: Send + 'static;
    /// What an export takes (the SDK's form of the item).
    type Exported;
    /// Converts an item as it is taken off the queue (on the export thread).
    fn convert(&self, item: Self::Item) -> Self::Exported;
    /// Exports one batch; whether it was accepted.
    fn export(&mut self, batch: Vec<Self::Exported>) -> bool;
    /// Called once, when the queue is gone.
    fn shutdown(&mut self);
}

/// How the queue is bounded and batched.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueLimits {
    pub(crate) items: usize,
    pub(crate) bytes: usize,
    pub(crate) max_batch: usize,
    pub(crate) interval: Duration,
}

enum Message<T> {
    /// Items, each with the bytes it counts against the byte bound: all one caller handed over
    /// at once, so that the thread is woken once for them (a wake is a system call).
    Items(Vec<(T, usize)>),
    /// Export everything queued before this message, then answer.
    Flush(mpsc::Sender<()>),
}

/// The caller's side of the pipeline. Dropping it ends the thread after a last export.
pub(crate) struct ExportQueue<T> {
    queue: SyncSender<Message<T>>,
    /// Items queued and not yet taken by the thread.
    held_items: Arc<AtomicUsize>,
    /// Bytes of the items queued or in the batch being exported.
    held_bytes: Arc<AtomicUsize>,
    limits: QueueLimits,
    counters: QueueCounters,
    /// Serialises flushes, whose answer channel must not be confused.
    flush: Mutex<()>,
}

impl<T> fmt::Debug for ExportQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportQueue")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> ExportQueue<T> {
    /// Starts the thread `name` exporting with `exporter`.
    pub(crate) fn start<E: Exporter<Item = T>>(
        name: &str,
        exporter: E,
        limits: QueueLimits,
        counters: QueueCounters,
    ) -> std::io::Result<ExportQueue<T>> {
        let limits = QueueLimits {
            items: limits.items.max(1),
            bytes: limits.bytes.max(1),
            max_batch: limits.max_batch.max(1),
            interval: limits.interval,
        };
        // A message holds at least one item, so the channel never fills before `held_items`
        // reaches the bound (a flush may wait for a slot).
        let (queue, receiver) = mpsc::sync_channel(limits.items);
        let held_items = Arc::new(AtomicUsize::new(0));
        let held_bytes = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            exporter,
            receiver,
            held_items: Arc::clone(&held_items),
            held_bytes: Arc::clone(&held_bytes),
            // A batch is sent once it holds half the byte budget, so a queue never waits on it.
            max_batch_bytes: limits.bytes / 2,
            counters: counters.clone(),
            max_batch: limits.max_batch,
            interval: limits.interval,
        };
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || worker.run())?;
        Ok(ExportQueue {
            queue,
            held_items,
            held_bytes,
            limits,
            counters,
            flush: Mutex::new(()),
        })
    }

    /// Queues `items` (each with its size in bytes) as one message, within both bounds; an
    /// item past either is dropped and counted. Never waits.
    pub(crate) fn offer(&self, items: impl IntoIterator<Item = (T, usize)>) {
        let mut accepted = Vec::new();
        for (item, bytes) in items {
            // Reserved first: two threads cannot both take the last of a budget.
            if self.held_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > self.limits.bytes {
                self.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.counters.dropped_queue_bytes.inc();
                continue;
            }
            if self.held_items.fetch_add(1, Ordering::Relaxed) >= self.limits.items {
                self.held_items.fetch_sub(1, Ordering::Relaxed);
                self.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.counters.dropped_queue_full.inc();
                continue;
            }
            accepted.push((item, bytes));
        }
        if accepted.is_empty() {
            return;
        }
        if let Err(
            TrySendError::Full(Message::Items(back)) | TrySendError::Disconnected(Message::Items(back)),
        ) = self.queue.try_send(Message::Items(accepted))
        {
            let bytes: usize = back.iter().map(|(_, bytes)| bytes).sum();
            self.held_items.fetch_sub(back.len(), Ordering::Relaxed);
            self.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.counters.dropped_queue_full.inc_by(back.len() as u64);
        }
    }

    /// Exports everything queued so far, waiting at most `timeout`; whether it finished in
    /// time. Blocks the calling thread.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let _one_at_a_time = self.flush.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + timeout;
        let (done, finished) = mpsc::channel();
        let mut message = Message::Flush(done);
        // The queue may be full: retry until the deadline rather than block on it.
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        finished
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// Bytes queued or in the batch being exported.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }
}

struct Worker<E: Exporter> {
    exporter: E,
    receiver: Receiver<Message<E::Item>>,
    held_items: Arc<AtomicUsize>,
    held_bytes: Arc<AtomicUsize>,
    max_batch_bytes: usize,
    counters: QueueCounters,
    max_batch: usize,
    interval: Duration,
}

/// The items being gathered for one export, and the bytes they held in the queue.
struct Batch<X> {
    items: Vec<X>,
    bytes: usize,
}

impl<E: Exporter> Worker<E> {
    fn run(mut self) {
        let mut batch = Batch {
            items: Vec::with_capacity(self.max_batch),
            bytes: 0,
        };
        let mut due = Instant::now() + self.interval;
        loop {
            match self
                .receiver
                .recv_timeout(due.saturating_duration_since(Instant::now()))
            {
                Ok(Message::Items(items)) => {
                    self.held_items.fetch_sub(items.len(), Ordering::Relaxed);
                    for (item, bytes) in items {
                        batch.items.push(self.exporter.convert(item));
                        batch.bytes += bytes;
                        if batch.items.len() >= self.max_batch || batch.bytes >= self.max_batch_bytes {
                            self.export(&mut batch);
                        }
                    }
                }
                Ok(Message::Flush(done)) => {
                    self.export(&mut batch);
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.export(&mut batch);
                    due = Instant::now() + self.interval;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.export(&mut batch);
                    self.exporter.shutdown();
                    return;
                }
            }
        }
    }

    fn export(&mut self, batch: &mut Batch<E::Exported>) {
        if batch.items.is_empty() {
            return;
        }
        let items = std::mem::replace(&mut batch.items, Vec::with_capacity(self.max_batch));
        let bytes = std::mem::take(&mut batch.bytes);
        let count = items.len() as u64;
        if self.exporter.export(items) {
            self.counters.exported.inc_by(count);
        } else {
            self.counters.dropped_export_failed.inc_by(count);
        }
        // The batch is gone: its bytes are free for new items.
        self.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}
