//! The argon2 pool: a fixed number of worker threads, each running one hash at a time, fed by a
//! bounded queue.
//!
//! Why not `spawn_blocking` behind a semaphore (what this replaces): the permit lived in the
//! request future, so when a client hung up, the future and its permit were dropped while the
//! hash ran on in the blocking pool, and the next request took the freed permit and started
//! another. 600 logins whose clients left after 3 ms ran about 100 hashes at once (2.9 GB RSS,
//! 100 threads). Here the permit *is* a worker thread: it is busy for exactly as long as the hash
//! runs, whatever happens to the request. A job still waiting in the queue when its requester has
//! gone (its reply channel closed) is dropped unrun, so a flood of aborted logins costs at most
//! one hash per worker in flight, and memory stays at `workers` × argon2's memory cost (19 MiB
//! with the default parameters). A full queue first drops its abandoned jobs, then, if still
//! full, refuses at once ([`HashRefusal::Busy`], a 503 with `Retry-After`) instead of letting
//! waits grow without bound: a client that stays is kept out only by other clients that stay.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use obskit::metrics::{CounterVec, Gauge, Registry};
use obskit::settings::{EnvError, EnvSource};
use tokio::sync::oneshot;

/// Environment variable with the number of hashing workers.
pub const WORKERS_ENV: &str = "USER_HASH_WORKERS";
/// Environment variable with the number of hash jobs that may wait for a worker.
pub const QUEUE_ENV: &str = "USER_HASH_QUEUE";

/// Most workers the default picks: each holds argon2's 19 MiB while it hashes, and more workers
/// than cores only share the same cores.
const MAX_DEFAULT_WORKERS: usize = 8;
/// Largest accepted settings: beyond them a typo, not a deployment.
const MAX_WORKERS: usize = 256;
const MAX_QUEUE: usize = 100_000;

/// The argon2 memory cost of one hash with the default parameters (`m = 19456` KiB), the unit
/// of the pool's memory bound.
pub const ARGON2_MEMORY_BYTES: usize = argon2::Params::DEFAULT_M_COST as usize * 1024;

/// The outcomes counted in `user_password_hashes_total{outcome}`.
const OUTCOMES: [&str; 3] = ["completed", "abandoned", "rejected"];

/// How many hashes run at once and how many may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashSettings {
    /// Worker threads, each running one hash at a time: the pool's permits.
    pub workers: usize,
    /// Jobs that may wait for a worker; one more is refused with 503.
    pub queue: usize,
}

impl Default for HashSettings {
    /// One worker per core (at most 8), and a queue of 32: with hashes of tens of milliseconds
    /// a full queue drains in well under a second on two workers.
    fn default() -> HashSettings {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        HashSettings {
            workers: cores.clamp(1, MAX_DEFAULT_WORKERS),
            queue: 32,
        }
    }
}

impl HashSettings {
    /// The settings from `USER_HASH_WORKERS` and `USER_HASH_QUEUE`, the defaults where unset.
    pub fn from_env(env: &impl EnvSource) -> Result<HashSettings, EnvError> {
        let defaults = HashSettings::default();
        let workers = env.parse::<usize>(WORKERS_ENV)?.unwrap_or(defaults.workers);
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(EnvError::new(WORKERS_ENV, format!("must be 1 to {MAX_WORKERS}")));
        }
        let queue = env.parse::<usize>(QUEUE_ENV)?.unwrap_or(defaults.queue);
        if !(1..=MAX_QUEUE).contains(&queue) {
            return Err(EnvError::new(QUEUE_ENV, format!("must be 1 to {MAX_QUEUE}")));
        }
        Ok(HashSettings { workers, queue })
    }

    /// The most memory the hashes in flight hold with argon2's default parameters.
    pub fn memory_bound_bytes(&self) -> usize {
        self.workers * ARGON2_MEMORY_BYTES
    }
}

/// Why the pool did not give an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashRefusal {
    /// The queue is full: try again after about this long.
    Busy {
        /// The estimated time for the queue to drain, 1 s to a minute.
        retry_after: Duration,
    },
    /// The job panicked or the pool has stopped.
    Failed,
}

/// A queued job: the work and where its answer goes.
trait Job: Send {
    /// Whether nobody waits for the answer any more.
    fn abandoned(&self) -> bool;
    /// Runs the work and sends the answer.
    fn run(self: Box<Self>);
}

struct Pending<F, R> {
    work: F,
    reply: oneshot::Sender<R>,
}

impl<F, R> Job for Pending<F, R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(self: Box<Self>) {
        let answer = (self.work)();
        // The requester may have left while the work ran; nothing to do then.
        let _ = self.reply.send(answer);
    }
}

/// The jobs waiting for a worker.
struct Queue {
    jobs: VecDeque<Box<dyn Job>>,
    /// Set when the pool is dropped: the workers exit.
    closed: bool,
}

/// What the submitters and the workers share.
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued or the pool closes.
    ready: Condvar,
    capacity: usize,
    workers: usize,
    /// `user_password_hashes_total{outcome}`.
    outcomes: CounterVec,
    /// `user_password_hash_queue_length`.
    queue_length: Gauge,
    /// Moving average of a job's run time, in microseconds (for `Retry-After`).
    mean_run_micros: AtomicU64,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long `queued` jobs take to drain, between 1 s (the least `Retry-After` can say)
    /// and a minute.
    fn drain_estimate(&self, queued: usize) -> Duration {
        let mean = self.mean_run_micros.load(Ordering::Relaxed);
        let micros = (queued as u64).saturating_mul(mean) / self.workers.max(1) as u64;
        Duration::from_micros(micros).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    fn record_run(&self, took: Duration) {
        let took = took.as_micros().min(u64::MAX as u128) as u64;
        let mean = self.mean_run_micros.load(Ordering::Relaxed);
        // An exponential average with weight 1/8: follows a change of load within a few jobs.
        let next = if mean == 0 {
            took
        } else {
            mean - mean / 8 + took / 8
        };
        self.mean_run_micros.store(next, Ordering::Relaxed);
    }
}

/// The pool. Dropping it stops the workers after the job in hand; queued jobs are dropped
/// (their requesters get [`HashRefusal::Failed`]).
pub struct HashPool {
    shared: Arc<Shared>,
}

impl HashPool {
    /// Starts `settings.workers` threads and declares the pool's metrics in `registry`:
    /// `user_password_hashes_total{outcome}` (`completed`, `abandoned`: the client had gone
    /// before a worker took the job, `rejected`: the queue was full) and
    /// `user_password_hash_queue_length`.
    pub fn start(
        settings: HashSettings,
        registry: &Registry,
    ) -> Result<HashPool, shop_common::service::BoxError> {
        use crate::{USER_PASSWORD_HASHES_TOTAL as HASHES, USER_PASSWORD_HASH_QUEUE_LENGTH as QUEUE};
        let outcomes = registry.counter_vec(HASHES.name, HASHES.help, HASHES.labels)?;
        for outcome in OUTCOMES {
            outcomes.with(&[outcome]);
        }
        let queue_length = registry.gauge(QUEUE.name, QUEUE.help)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::with_capacity(settings.queue),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: settings.queue,
            workers: settings.workers,
            outcomes,
            queue_length,
            mean_run_micros: AtomicU64::new(0),
        });
        let pool = HashPool {
            shared: Arc::clone(&shared),
        };
        for n in 0..settings.workers {
            let shared = Arc::clone(&shared);
            // On an error the pool is dropped, which stops the workers already started.
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || work(&shared))?;
        }
        Ok(pool)
    }

    /// Runs `work` on a worker and waits for its answer. Refuses at once, without waiting,
    /// when the queue is full of jobs whose requesters are still there. If the returned future
    /// is dropped before a worker takes the job, the job is skipped; once a worker runs it, it
    /// runs to its end (argon2 cannot be interrupted), still on that worker's permit.
    pub async fn run<R, F>(&self, work: F) -> Result<R, HashRefusal>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.shared.queue();
            if queue.closed {
                return Err(HashRefusal::Failed);
            }
            if queue.jobs.len() >= self.shared.capacity {
                // Jobs whose clients have gone make room: they would be skipped anyway, and a
                // flood of aborted requests must not keep a waiting client out.
                let before = queue.jobs.len();
                queue.jobs.retain(|job| !job.abandoned());
                let purged = before - queue.jobs.len();
                if purged > 0 {
                    self.shared.outcomes.with(&["abandoned"]).inc_by(purged as u64);
                }
            }
            if queue.jobs.len() >= self.shared.capacity {
                self.shared.outcomes.with(&["rejected"]).inc();
                return Err(HashRefusal::Busy {
                    retry_after: self.shared.drain_estimate(queue.jobs.len()),
                });
            }
            queue.jobs.push_back(Box::new(Pending { work, reply }));
            self.shared.queue_length.set(queue.jobs.len() as f64);
        }
        self.shared.ready.notify_one();
        answer.await.map_err(|_| HashRefusal::Failed)
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        let mut queue = self.shared.queue();
        queue.closed = true;
        queue.jobs.clear();
        self.shared.queue_length.set(0.0);
        drop(queue);
        self.shared.ready.notify_all();
    }
}

/// A worker's loop: take a job, skip it if its requester has gone, run it otherwise.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.queue();
            loop {
                if queue.closed {
                    return;
                }
                if let Some(job) = queue.jobs.pop_front() {
                    shared.queue_length.set(queue.jobs.len() as f64);
                    break job;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
        };
        if job.abandoned() {
            shared.outcomes.with(&["abandoned"]).inc();
            continue;
        }
        let started = Instant::now();
        // A panicking job drops its reply (the requester gets `Failed`) and the worker lives on.
        if catch_unwind(AssertUnwindSafe(|| job.run())).is_err() {
            tracing::error!("a password hash job panicked");
        }
        shared.record_run(started.elapsed());
        shared.outcomes.with(&["completed"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    use super::*;

    fn pool(workers: usize, queue: usize) -> (HashPool, Registry) {
        let registry = Registry::new();
        let pool = HashPool::start(HashSettings { workers, queue }, &registry).unwrap();
        (pool, registry)
    }

    /// The value of one series in the registry's text exposition.
    fn sample(registry: &Registry, series: &str) -> Option<f64> {
        let text = registry.encode_text();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    fn count(registry: &Registry, outcome: &str) -> f64 {
        sample(
            registry,
            &format!("user_password_hashes_total{{outcome=\"{outcome}\"}}"),
        )
        .unwrap()
    }

    /// A job that blocks until the test lets it go, counting how many run at once.
    fn gated(
        running: &Arc<AtomicUsize>,
        peak: &Arc<AtomicUsize>,
        gate: &Arc<Mutex<mpsc::Receiver<()>>>,
    ) -> impl FnOnce() -> usize + Send + 'static {
        let (running, peak, gate) = (Arc::clone(running), Arc::clone(peak), Arc::clone(gate));
        move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let _ = gate.lock().unwrap().recv();
            running.fetch_sub(1, Ordering::SeqCst);
            now
        }
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn at_most_workers_run_and_a_full_queue_refuses_at_once() {
        let (pool, registry) = pool(2, 3);
        let pool = Arc::new(pool);
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut jobs = Vec::new();
        let mut submit = || {
            let pool = Arc::clone(&pool);
            let job = gated(&running, &peak, &gate);
            jobs.push(tokio::spawn(async move { pool.run(job).await }));
        };
        // Two to keep the workers busy first (submitted all at once, five would overflow the
        // queue before a worker took any), then three to fill the queue.
        submit();
        submit();
        until("two running jobs", || running.load(Ordering::SeqCst) == 2).await;
        for _ in 0..3 {
            submit();
        }
        // Two running, three queued: the sixth is refused without waiting.
        until("three queued jobs", || pool.shared.queue().jobs.len() == 3).await;
        let refused = tokio::time::timeout(Duration::from_secs(1), pool.run(|| 0))
            .await
            .expect("a full queue answers at once");
        match refused {
            Err(HashRefusal::Busy { retry_after }) => assert!(retry_after >= Duration::from_secs(1)),
            other => panic!("expected Busy, got {other:?}"),
        }
        assert_eq!(count(&registry, "rejected"), 1.0);
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        for job in jobs {
            assert!(job.await.unwrap().is_ok());
        }
        assert_eq!(
            peak.load(Ordering::SeqCst),
            2,
            "never more than the workers at once"
        );
        until("five completed jobs", || count(&registry, "completed") == 5.0).await;
        assert_eq!(sample(&registry, "user_password_hash_queue_length"), Some(0.0));
    }

    #[tokio::test]
    async fn a_job_whose_requester_left_is_not_started() {
        let (pool, registry) = pool(1, 8);
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let pool = Arc::new(pool);
        let blocker = {
            let pool = Arc::clone(&pool);
            let job = gated(&running, &peak, &gate);
            tokio::spawn(async move { pool.run(job).await })
        };
        until("the blocking job", || running.load(Ordering::SeqCst) == 1).await;
        // Three requests queue behind it and leave (their futures dropped, like a request
        // future when the client hangs up).
        let started = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let started = Arc::clone(&started);
            let waiting = pool.run(move || started.fetch_add(1, Ordering::SeqCst));
            let _ = tokio::time::timeout(Duration::from_millis(5), waiting).await;
        }
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        // A request that stays gets its answer after the abandoned ones are skipped.
        assert_eq!(pool.run(|| 7).await, Ok(7));
        assert_eq!(started.load(Ordering::SeqCst), 0, "abandoned jobs never ran");
        assert_eq!(count(&registry, "abandoned"), 3.0);
        // Counted by the worker just after it sent the answer.
        until("two completed jobs", || count(&registry, "completed") == 2.0).await;
    }

    #[tokio::test]
    async fn abandoned_jobs_make_room_in_a_full_queue() {
        let (pool, registry) = pool(1, 2);
        let pool = Arc::new(pool);
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let blocker = {
            let pool = Arc::clone(&pool);
            let job = gated(&running, &peak, &gate);
            tokio::spawn(async move { pool.run(job).await })
        };
        until("the blocking job", || running.load(Ordering::SeqCst) == 1).await;
        // The queue fills with two requests that then leave.
        for _ in 0..2 {
            let _ = tokio::time::timeout(Duration::from_millis(5), pool.run(|| 0)).await;
        }
        assert_eq!(pool.shared.queue().jobs.len(), 2);
        // A request that stays is queued in their place, not refused.
        let stays = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(|| 5).await })
        };
        until("the purge", || count(&registry, "abandoned") == 2.0).await;
        assert_eq!(count(&registry, "rejected"), 0.0);
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert_eq!(stays.await.unwrap(), Ok(5));
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let (pool, _registry) = pool(1, 4);
        let answer = pool.run(|| -> u8 { panic!("boom") }).await;
        assert_eq!(answer, Err(HashRefusal::Failed));
        assert_eq!(pool.run(|| 3).await, Ok(3), "the worker survived");
    }

    #[test]
    fn settings_from_the_environment() {
        let env = |name: &str| match name {
            WORKERS_ENV => Some("3".to_string()),
            QUEUE_ENV => Some("10".to_string()),
            _ => None,
        };
        assert_eq!(
            HashSettings::from_env(&env).unwrap(),
            HashSettings {
                workers: 3,
                queue: 10
            }
        );
        let unset = |_: &str| None;
        assert_eq!(HashSettings::from_env(&unset).unwrap(), HashSettings::default());
        for (name, value) in [(WORKERS_ENV, "0"), (QUEUE_ENV, "0"), (WORKERS_ENV, "many")] {
            let env = move |n: &str| (n == name).then(|| value.to_string());
            assert!(HashSettings::from_env(&env).is_err(), "{name}={value}");
        }
        assert_eq!(
            HashSettings { workers: 2, queue: 1 }.memory_bound_bytes(),
            2 * 19456 * 1024
        );
    }
}
