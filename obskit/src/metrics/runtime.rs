//! The tokio runtime's figures in `/metrics`, read from [`tokio::runtime::RuntimeMetrics`] when
//! scraped (nothing is counted on the request path):
//!
//! | metric | type | what |
//! |---|---|---|
//! | `tokio_workers` | gauge | worker threads |
//! | `tokio_alive_tasks` | gauge | tasks spawned and not yet finished |
//! | `tokio_global_queue_depth` | gauge | tasks waiting in the shared (injection) queue |
//! | `tokio_worker_busy_seconds_total{worker}` | counter | time each worker spent running tasks |
//! | `tokio_worker_park_total{worker}` | counter | times each worker parked (ran out of work) |
//! | `tokio_blocking_threads` | gauge | threads of the blocking pool (`spawn_blocking`) |
//! | `tokio_idle_blocking_threads` | gauge | those of them idle |
//!
//! A worker's busy ratio is `rate(tokio_worker_busy_seconds_total[1m])`: 1 is a worker that never
//! waits for work. Workers at 1 with a growing global queue are a saturated runtime; a service
//! that stops answering while its workers are idle is waiting on something (see
//! `/debug/requests` and `/debug/tasks`).
//!
//! The two blocking-pool gauges exist only in a build with `--cfg tokio_unstable` (tokio keeps
//! them behind it); the workspace of the shop builds that way (`.cargo/config.toml`). The
//! `worker` label is the worker's index, so it has as many values as the runtime has workers.
//!
//! The runtime is the one [`crate::Obskit`] was built or serves in; none (built outside a
//! runtime, and not serving yet), no series.

use std::sync::{Arc, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use tokio::runtime::Handle;

use crate::names::{self, label, Metric};

/// The runtime a registry reports: set when an [`Obskit`](crate::Obskit) is built inside one,
/// and again when it serves. Cheap to clone.
#[derive(Clone, Default)]
pub struct RuntimeWatch {
    handle: Arc<RwLock<Option<Handle>>>,
}

impl RuntimeWatch {
    /// Reports `handle`'s runtime from now on (the last one given wins).
    pub fn watch(&self, handle: Handle) {
        *self.handle.write().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Reports the runtime this is called in, if any.
    pub fn watch_current(&self) {
        if let Ok(handle) = Handle::try_current() {
            self.watch(handle);
        }
    }

    /// The collector that renders the watched runtime's figures, to register once.
    pub(crate) fn collector(&self) -> RuntimeCollector {
        RuntimeCollector {
            watch: self.clone(),
            descs: FAMILIES.iter().map(desc).collect(),
        }
    }
}

/// The families, in exposition order.
const FAMILIES: &[Metric] = &[
    names::TOKIO_WORKERS,
    names::TOKIO_ALIVE_TASKS,
    names::TOKIO_GLOBAL_QUEUE_DEPTH,
    names::TOKIO_WORKER_BUSY_SECONDS_TOTAL,
    names::TOKIO_WORKER_PARK_TOTAL,
    names::TOKIO_BLOCKING_THREADS,
    names::TOKIO_IDLE_BLOCKING_THREADS,
];

fn desc(metric: &Metric) -> Desc {
    Desc::new(
        metric.name.to_string(),
        metric.help.to_string(),
        metric.labels.iter().map(|l| l.to_string()).collect(),
        Default::default(),
    )
    .expect("static descriptor is valid")
}

/// Renders the watched runtime's figures when scraped.
pub(crate) struct RuntimeCollector {
    watch: RuntimeWatch,
    descs: Vec<Desc>,
}

fn family(metric: &Metric, values: Vec<(Option<usize>, f64)>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(metric.name.to_string());
    family.set_help(metric.help.to_string());
    let counter = matches!(metric.kind, names::MetricKind::Counter);
    family.set_field_type(if counter {
        MetricType::COUNTER
    } else {
        MetricType::GAUGE
    });
    let metrics = values
        .into_iter()
        .map(|(worker, value)| {
            let mut m = proto::Metric::default();
            if let Some(worker) = worker {
                let mut pair = proto::LabelPair::default();
                pair.set_name(label::WORKER.to_string());
                pair.set_value(worker.to_string());
                m.set_label(vec![pair]);
            }
            if counter {
                let mut c = proto::Counter::default();
                c.set_value(value);
                m.set_counter(c);
            } else {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
            m
        })
        .collect();
    family.set_metric(metrics);
    family
}

impl Collector for RuntimeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(handle) = self
            .watch
            .handle
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return Vec::new();
        };
        let metrics = handle.metrics();
        let workers = metrics.num_workers();
        let per_worker = |f: &dyn Fn(usize) -> f64| (0..workers).map(|w| (Some(w), f(w))).collect();
        let mut families = vec![
            family(&names::TOKIO_WORKERS, vec![(None, workers as f64)]),
            family(
                &names::TOKIO_ALIVE_TASKS,
                vec![(None, metrics.num_alive_tasks() as f64)],
            ),
            family(
                &names::TOKIO_GLOBAL_QUEUE_DEPTH,
                vec![(None, metrics.global_queue_depth() as f64)],
            ),
        ];
        #[cfg(target_has_atomic = "64")]
        {
            families.push(family(
                &names::TOKIO_WORKER_BUSY_SECONDS_TOTAL,
                per_worker(&|w| metrics.worker_total_busy_duration(w).as_secs_f64()),
            ));
            families.push(family(
                &names::TOKIO_WORKER_PARK_TOTAL,
                per_worker(&|w| metrics.worker_park_count(w) as f64),
            ));
        }
        #[cfg(not(target_has_atomic = "64"))]
        let _ = per_worker;
        #[cfg(tokio_unstable)]
        {
            families.push(family(
                &names::TOKIO_BLOCKING_THREADS,
                vec![(None, metrics.num_blocking_threads() as f64)],
            ));
            families.push(family(
                &names::TOKIO_IDLE_BLOCKING_THREADS,
                vec![(None, metrics.num_idle_blocking_threads() as f64)],
            ));
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn runtime_figures_follow_the_runtime_under_load() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let registry = crate::metrics::Registry::new();
        let watch = RuntimeWatch::default();
        registry.register_collector(Box::new(watch.collector())).unwrap();
        assert!(
            !registry.encode_text().contains("tokio_"),
            "no runtime watched, no series"
        );
        watch.watch(runtime.handle().clone());

        let before = registry.encode_text();
        assert_eq!(value(&before, "tokio_workers"), Some(2.0), "{before}");
        let busy = |text: &str| {
            value(text, "tokio_worker_busy_seconds_total{worker=\"0\"}").unwrap()
                + value(text, "tokio_worker_busy_seconds_total{worker=\"1\"}").unwrap()
        };

        // Tasks that wait are alive; tasks that compute make the workers busy.
        let (release, released) = tokio::sync::watch::channel(false);
        let waiting: Vec<_> = (0..50)
            .map(|_| {
                let mut released = released.clone();
                runtime.spawn(async move {
                    let _ = released.wait_for(|r| *r).await;
                })
            })
            .collect();
        let computing: Vec<_> = (0..4)
            .map(|_| {
                runtime.spawn(async {
                    let started = std::time::Instant::now();
                    let mut x = 0u64;
                    while started.elapsed() < std::time::Duration::from_millis(100) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                })
            })
            .collect();
        runtime.block_on(async {
            for task in computing {
                task.await.unwrap();
            }
        });
        let during = registry.encode_text();
        assert!(value(&during, "tokio_alive_tasks").unwrap() >= 50.0, "{during}");
        // A worker publishes its busy time in batches (when it parks, or every few ticks), so
        // the last slices of the work may show a moment after the tasks have finished.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let during = registry.encode_text();
            if busy(&during) >= busy(&before) + 0.2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "400 ms of work on two workers: {during}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = runtime.block_on(runtime.spawn_blocking(|| ()));
        #[cfg(tokio_unstable)]
        assert!(value(&registry.encode_text(), "tokio_blocking_threads").unwrap() >= 1.0);

        release.send(true).unwrap();
        runtime.block_on(async {
            for task in waiting {
                task.await.unwrap();
            }
        });
        // A finished task is counted until the runtime has released it: a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while value(&registry.encode_text(), "tokio_alive_tasks") != Some(0.0) {
            assert!(std::time::Instant::now() < deadline, "{}", registry.encode_text());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
