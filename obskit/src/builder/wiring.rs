//! Wiring: an [`Obskit`] built from resolved [`Settings`]: the per-registry metrics, the RED
//! layer, health checks, process figures, the admin surface, and the process-wide span sink,
//! sampler and limits, and the process's logs.

use std::sync::{Arc, Mutex};

use super::handle::Inner;
use super::{BuildError, Obskit, ObskitBuilder};
use crate::admin::AdminSurface;
use crate::debug::ConnectionStats;
use crate::health::{HealthChecks, HealthGauge};
use crate::http::{HttpMetrics, HttpMetricsLayer, Routes};
use crate::metrics::runtime::RuntimeWatch;
use crate::metrics::{IntGaugeVec, Registry};
use crate::profile::ProfileStore;
use crate::settings::Settings;
use crate::trace::{self, ExportCounters, FanOut, RecentSpans, SpanSink};

pub(super) fn wire(builder: ObskitBuilder, settings: Settings) -> Result<Obskit, BuildError> {
    crate::instrumentation::set_enabled(settings.instrumentation);
    let service = &settings.service;

    let registry = builder.registry.unwrap_or_else(|| Registry::global().clone());
    let (http, build_info, span_counters, health_gauge, server_metrics, runtime) =
        per_registry_metrics(&registry)?;
    // Built inside the runtime that will serve, as a `#[tokio::main]` does: its figures from now.
    runtime.watch_current();
    // Profiles are process-wide (one SIGPROF timer per process): their metrics join this
    // registry, and their flamegraphs are titled with this service.
    crate::profile::register_metrics(&registry);
    crate::profile::set_service(&service.name);
    #[cfg(feature = "heap-profiling")]
    if let Some(bytes) = settings.heap_profile_interval_bytes {
        match crate::profile::heap::set_sample_interval(bytes) {
            // A binary without jemalloc's profiler has nothing to set; its endpoints say why.
            Ok(()) | Err(crate::profile::heap::HeapError::NotEnabled(_)) => {}
            Err(e) => {
                return Err(BuildError::Environment {
                    name: crate::names::env::OBSKIT_HEAP_PROFILE_INTERVAL_BYTES,
                    problem: e.to_string(),
                })
            }
        }
    }
    build_info
        .with(&[
            &service.name,
            &service.version,
            &service.commit,
            &service.environment,
        ])
        .set(1);

    let routes = Routes::new(settings.routes.iter().map(String::as_str))
        .map_err(|e| BuildError::Route(e.to_string()))?;
    let mut layer = HttpMetricsLayer::new(http.clone())
        .routes(routes)
        .response_traceparent(settings.response_traceparent)
        .exclude_admin(!settings.measure_admin_requests);
    for objective in &builder.route_objectives {
        layer = layer
            .route_objective(*objective)
            .map_err(|e| BuildError::Route(e.to_string()))?;
    }

    let health = HealthChecks::new(&service.name, &service.version);
    // Without `process-metrics` there is no memory figure to check (documented on the setting).
    #[cfg(feature = "process-metrics")]
    if settings.memory_check {
        health.register_memory_check();
    }
    health_gauge.watch(&health);
    let health_refresher = health.refresh_every(settings.health_interval);
    let connections = ConnectionStats::default();

    // This service's admin surface serves the store it was given, even if another
    // `Obskit` in the process (a test's) later makes its own store the global one.
    let profiles = match builder.profiles {
        Some(store) => {
            ProfileStore::set_global(store.clone());
            store
        }
        None => ProfileStore::global(),
    };
    // What /debug/config lists: the settings, and the two figures of the objects given.
    let mut config = settings.entries();
    config.push((
        "metrics.label_limit".to_string(),
        registry.label_limit().to_string(),
    ));
    let (max_files, max_bytes) = profiles.limits();
    config.push((
        "profiles.store".to_string(),
        format!("{max_files} files, {max_bytes} bytes at most"),
    ));
    let mut admin = AdminSurface::new(registry.clone(), health.clone())
        .access(settings.admin_access.clone())
        .allowed_hosts(settings.admin_allowed_hosts.clone())
        .config(config)
        .profile_store(profiles);
    #[cfg(feature = "process-metrics")]
    {
        admin = admin.process_stats(Arc::new(crate::debug::ProcessStats::start(
            settings.process_stats_interval,
            connections.clone(),
        )));
    }

    // Logs are the service's output: installed whether instrumentation is on or off.
    #[cfg(feature = "tracing-bridge")]
    let logs = match &settings.logs {
        Some(log_settings) => {
            crate::log::Logs::install(log_settings, &service.name, &registry).map_err(BuildError::Logs)?
        }
        None => None,
    };
    #[cfg(feature = "tracing-bridge")]
    if let Some(logs) = &logs {
        admin = admin.log_levels(logs.levels().clone());
        if let Some(config) = settings.logs.as_ref().and_then(|l| l.otlp.as_ref()) {
            // Once a process, as the logs are: the first service built exports them.
            logs.export_otlp(config, &service.resource)
                .map_err(BuildError::Logs)?;
        }
    }

    let mut sinks: Vec<Arc<dyn SpanSink>> = Vec::new();
    if settings.recent_spans > 0 {
        let recent = RecentSpans::global();
        recent.set_capacity(settings.recent_spans);
        recent.set_max_bytes(settings.recent_spans_bytes);
        recent.count_drops_in(span_counters.dropped_recent_bytes.clone());
        if settings.instrumentation {
            sinks.push(Arc::new(recent.clone()));
        }
        admin = admin.recent_spans(recent.clone());
    }
    // Instrumentation off: no sink at all, so spans are not even created.
    #[cfg(feature = "otlp")]
    let otlp = match &settings.otlp {
        Some(config) if settings.instrumentation => {
            let sink = trace::OtlpSink::start(config, service.resource.clone(), span_counters)
                .map_err(BuildError::Exporter)?;
            let sink = Arc::new(sink);
            sinks.push(sink.clone());
            Some(sink)
        }
        _ => None,
    };
    #[cfg(not(feature = "otlp"))]
    if let (Some(config), true) = (&settings.otlp, settings.instrumentation) {
        return Err(BuildError::Exporter(trace::OtlpError::not_built(config, "spans")));
    }
    settings.sampler.install();
    settings.span_limits.install();
    match sinks.len() {
        0 => {}
        1 => {
            trace::set_default_sink(sinks.pop().expect("one sink"));
        }
        _ => {
            trace::set_default_sink(Arc::new(FanOut::new(sinks)));
        }
    }

    let server = crate::serve::Server::new(settings.server.clone())
        .metrics(server_metrics)
        .connection_stats(connections.clone());
    Ok(Obskit {
        inner: Arc::new(Inner {
            settings,
            registry,
            http,
            layer,
            health,
            admin,
            connections,
            server,
            runtime,
            #[cfg(feature = "otlp")]
            otlp,
            #[cfg(feature = "tracing-bridge")]
            logs,
            _health_refresher: health_refresher,
        }),
    })
}

type RegistryMetrics = (
    HttpMetrics,
    IntGaugeVec,
    ExportCounters,
    HealthGauge,
    crate::serve::ServerMetrics,
    RuntimeWatch,
);

/// The RED metrics, `build_info`, span export counters, `obskit_health_status`, the server's and
/// the runtime's figures of a registry, declared once per registry: building a
/// second `Obskit` on the global registry (two services in one process, or a restart in a test)
/// reuses them instead of failing on a duplicate name.
fn per_registry_metrics(registry: &Registry) -> Result<RegistryMetrics, BuildError> {
    fn declare(registry: &Registry) -> Result<RegistryMetrics, crate::metrics::Error> {
        let http = HttpMetrics::new(registry)?;
        let spans = ExportCounters::new(registry)?;
        // autometrics' published queries join on build_info; it also tells which version runs.
        let build_info = registry.int_gauge_vec(
            crate::names::BUILD_INFO.name,
            crate::names::BUILD_INFO.help,
            crate::names::BUILD_INFO.labels,
        )?;
        // Watches the checks of the service built last on this registry.
        let health = HealthGauge::register(registry)?;
        // The accept loop's connection figures (open, waits at the cap, closes by reason).
        let server = crate::serve::ServerMetrics::new(registry)?;
        // The tokio runtime's figures, read when scraped.
        let runtime = RuntimeWatch::default();
        registry.register_collector(Box::new(runtime.collector()))?;
        Ok((http, build_info, spans, health, server, runtime))
    }
    if registry.is_global() {
        static GLOBAL: Mutex<Option<RegistryMetrics>> = Mutex::new(None);
        let mut global = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
        if global.is_none() {
            *global = Some(declare(registry)?);
        }
        Ok(global.clone().expect("declared above"))
    } else {
        Ok(declare(registry)?)
    }
}
