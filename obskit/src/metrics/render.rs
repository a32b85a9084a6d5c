//! Scrapes rendered where they cannot slow the requests: on one thread of their own, at the
//! lowest CPU priority.
//!
//! Rendering 10 000 series takes milliseconds of CPU. Done on a runtime worker, it holds that
//! worker and, on a busy core, delays every request queued behind it: `scripts/bench-scrape-load.sh`
//! measured the p99 of requests served beside a scrape loop at 2.5-7 times the quiet p99. Here
//! `/metrics` hands the render to the `obskit-scrape` thread, which runs at nice 19 (Linux:
//! the nice value is per thread), so the scheduler gives request threads the CPU first and the
//! scrape takes what is left: it is the scrape that waits, not the requests.
//!
//! At most [`QUEUE`] renders wait; past that `/metrics` answers 503 at once (scrapes arrive
//! faster than they render). A render whose client has gone is skipped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::OnceLock;

use tokio::sync::oneshot;

/// Renders that may wait for the thread. A Prometheus server scrapes a target every few
/// seconds; more than this waiting means scrapes arrive faster than they render.
pub(crate) const QUEUE: usize = 8;

/// The nice value of the render thread: the lowest priority of the normal scheduling class
/// (still scheduled under load, unlike `SCHED_IDLE`, so a scrape always finishes).
const NICE: i32 = 19;

type Job = Box<dyn FnOnce() + Send>;

/// The scrape thread was busy past its queue, or could not be started.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Busy;

/// A render thread and its queue. The process has one ([`render`]); tests make their own.
pub(crate) struct RenderThread {
    jobs: SyncSender<Job>,
}

impl RenderThread {
    /// Starts the thread; `None` if the system refuses a thread.
    pub(crate) fn start(queue: usize) -> Option<RenderThread> {
        let (jobs, receiver) = sync_channel::<Job>(queue);
        std::thread::Builder::new()
            .name("obskit-scrape".to_string())
            .spawn(move || run(receiver))
            .ok()?;
        Some(RenderThread { jobs })
    }

    /// Runs `render` on the thread and returns its value; [`Busy`] at once when [`QUEUE`]
    /// renders are already waiting. Skipped if the caller's future is dropped before it starts.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        render: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (sender, receiver) = oneshot::channel();
        let job: Job = Box::new(move || {
            if !sender.is_closed() {
                let _ = sender.send(render());
            }
        });
        self.jobs.try_send(job).map_err(|_| Busy)?;
        // Dropped without an answer only if the render panicked.
        receiver.await.map_err(|_| Busy)
    }
}

fn run(jobs: Receiver<Job>) {
    lower_priority();
    for job in jobs {
        // A render that panics fails its scrape, not the thread.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// Gives the calling thread the lowest CPU priority (Linux; elsewhere the nice value is per
/// process, and the thread keeps the process's).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id, no memory handed over.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, NICE);
    }
}

/// Runs `render` on the process's scrape thread (started on first use), or in place when no
/// thread could be started.
pub(crate) async fn render<T: Send + 'static>(
    render: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Busy> {
    static THREAD: OnceLock<Option<RenderThread>> = OnceLock::new();
    match THREAD.get_or_init(|| RenderThread::start(QUEUE)) {
        Some(thread) => thread.run(render).await,
        None => Ok(render()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn renders_run_on_their_own_thread_at_the_lowest_priority() {
        let thread = RenderThread::start(2).unwrap();
        let (name, nice) = thread
            .run(|| {
                // SAFETY: a read of the calling thread's own nice value.
                let nice = unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::getpriority(libc::PRIO_PROCESS, tid)
                };
                (std::thread::current().name().map(str::to_string), nice)
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("obskit-scrape"));
        assert_eq!(nice, NICE);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_a_panic_keeps_the_thread() {
        let thread = Arc::new(RenderThread::start(1).unwrap());
        // One render running (held at the barrier), one waiting: the queue of one is full.
        let barrier = Arc::new(Barrier::new(2));
        let (started, running) = std::sync::mpsc::channel();
        let held = {
            let (thread, barrier) = (Arc::clone(&thread), Arc::clone(&barrier));
            tokio::spawn(async move {
                thread
                    .run(move || {
                        started.send(()).unwrap();
                        barrier.wait();
                    })
                    .await
            })
        };
        // Let the first render reach the thread before queueing the second.
        while running.try_recv().is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let queued = {
            let thread = Arc::clone(&thread);
            tokio::spawn(async move { thread.run(|| 2).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(thread.run(|| 3).await, Err(Busy), "refused while full");
        barrier.wait();
        held.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap(), Ok(2));
        assert_eq!(thread.run(|| panic!("render failed")).await, Err::<(), _>(Busy));
        assert_eq!(thread.run(|| 4).await, Ok(4), "the thread survives a panic");
    }
}
