//! Runs one bench variant ITERATIONS times inside [`measured`], for
//! `valgrind --tool=callgrind --toggle-collect='*measured*'` (scripts/bench-callgrind.sh):
//! callgrind then counts only the instructions executed inside the loop, on the calling
//! thread, and the script divides by ITERATIONS after subtracting the `empty` variant. The loop
//! runs in chunks of [`CHUNK`] calls with obskit's span rings drained in between, outside the
//! count.
//!
//! ```text
//! instructions VARIANT ITERATIONS     # one run
//! instructions --list                 # the variant names, one a line
//! ```
//!
//! Each variant is set up (sink, subscriber, recorder, service) and called a few hundred times
//! before the measured loop, so one-time costs (thread-locals, callsite registration, first
//! label set) stay out of the count. One variant per process: tracers and recorders are
//! process-wide. The bodies are those of the criterion benches (obskit_benches).

use std::hint::black_box;

use obskit_benches::{functions, http_services, receiver, traced};

/// Calls before the measured loop, outside the count.
const WARM_UP: u32 = 500;

/// Calls per entry into [`measured`]. Between entries, outside the count, obskit's span rings
/// are drained, as its collector thread drains them meanwhile in a real run: under valgrind
/// threads take turns, the collector would hardly run, and with full rings every sampled span
/// would take the fallback of being handed to the sink on the calling thread, which is not the
/// request path being measured. Less than a ring holds (`RING_CAPACITY`, 256).
const CHUNK: u32 = 64;

/// The variants, by criterion id, plus `empty` (the loop and the indirect call alone).
const VARIANTS: &[&str] = &[
    "empty",
    "fn_call/bare",
    "fn_call/obskit_instrumented",
    "fn_call/obskit_instrumented_result",
    "fn_call/tracing_instrument_no_subscriber",
    "fn_call/autometrics",
    "fn_call/tracing_instrument_registry",
    "traced_call/obskit_instrumented_sampled",
    "traced_call/obskit_instrumented_unsampled",
    "traced_call/obskit_metrics_only",
    "traced_call/tracing_opentelemetry_sampled",
    "traced_call/tracing_opentelemetry_unsampled",
    "traced_call/fastrace_sampled",
    "traced_call/tracing_instrument_obskit_bridge_sampled",
    "traced_call/tracing_instrument_obskit_bridge_off",
    "span_collector/server_span_into_recent_spans",
    "http_request/bare_service",
    "http_request/with_red_layer",
    "http_request/with_red_layer_traced",
    "http_request/with_red_layer_no_matched_route_extension",
    "http_request/with_red_layer_matched_route_extension",
    "http_request/tower_http_trace_metrics",
    "http_request/opentelemetry_tower_metrics",
];

/// The loop callgrind counts: `--toggle-collect` switches collection on at its entry and off
/// at its exit. Never inlined, so the symbol exists; the call through `dyn` keeps the loop from
/// being folded away for the empty variant.
#[inline(never)]
fn measured(iterations: u32, call: &mut dyn FnMut()) {
    for _ in 0..iterations {
        call();
    }
}

fn two_numbers() -> (u64, u64) {
    (black_box(1), black_box(2))
}

/// Sets `name` up and returns one call of it, or `None` for an unknown name. What a variant
/// must keep alive (a provider, a guard, a runtime) is moved into the closure.
fn variant(name: &str) -> Option<Box<dyn FnMut()>> {
    let endpoint = || receiver::traces_endpoint(receiver::accepting_receiver());
    let call: Box<dyn FnMut()> = match name {
        "empty" => Box::new(|| {}),
        "fn_call/bare" => Box::new(|| {
            let (a, b) = two_numbers();
            black_box(functions::bare(a, b));
        }),
        "fn_call/obskit_instrumented" => Box::new(|| {
            let (a, b) = two_numbers();
            black_box(functions::obskit_instrumented(a, b));
        }),
        "fn_call/obskit_instrumented_result" => Box::new(|| {
            let (a, b) = two_numbers();
            let _ = black_box(functions::obskit_instrumented_result(a, b));
        }),
        "fn_call/tracing_instrument_no_subscriber" => Box::new(|| {
            let (a, b) = two_numbers();
            black_box(functions::tracing_instrumented(a, b));
        }),
        "fn_call/autometrics" => Box::new(|| {
            let (a, b) = two_numbers();
            black_box(functions::autometrics_instrumented(a, b));
        }),
        "fn_call/tracing_instrument_registry" => {
            functions::install_tracing_registry();
            Box::new(|| {
                let (a, b) = two_numbers();
                black_box(functions::tracing_instrumented(a, b));
            })
        }
        "traced_call/obskit_instrumented_sampled" | "traced_call/obskit_instrumented_unsampled" => {
            let sink = traced::install_obskit_sink(&endpoint());
            traced::install_obskit_sampler(name.ends_with("_sampled"));
            Box::new(move || {
                let _sink = &sink;
                let (a, b) = two_numbers();
                black_box(traced::obskit_traced(a, b));
            })
        }
        // The same function with no sink installed: its metrics, no span.
        "traced_call/obskit_metrics_only" => Box::new(|| {
            let (a, b) = two_numbers();
            black_box(traced::obskit_traced(a, b));
        }),
        "traced_call/tracing_opentelemetry_sampled" | "traced_call/tracing_opentelemetry_unsampled" => {
            let provider = traced::tracing_opentelemetry_provider(&endpoint(), name.ends_with("_sampled"));
            tracing::subscriber::set_global_default(traced::tracing_opentelemetry_subscriber(&provider))
                .expect("first subscriber");
            Box::new(move || {
                let _provider = &provider;
                let (a, b) = two_numbers();
                black_box(traced::tracing_traced(a, b));
            })
        }
        // `#[tracing::instrument]` under obskit's subscriber, its span bridged into an obskit
        // span (sampled, exported), or not bridged at all.
        "traced_call/tracing_instrument_obskit_bridge_sampled"
        | "traced_call/tracing_instrument_obskit_bridge_off" => {
            let sink = traced::install_obskit_sink(&endpoint());
            traced::install_obskit_sampler(true);
            tracing::subscriber::set_global_default(traced::obskit_log_subscriber(
                name.ends_with("_sampled"),
            ))
            .expect("first subscriber");
            Box::new(move || {
                let _sink = &sink;
                let (a, b) = two_numbers();
                black_box(traced::tracing_traced(a, b));
            })
        }
        "traced_call/fastrace_sampled" => {
            traced::install_fastrace_reporter(&endpoint());
            Box::new(|| {
                let (a, b) = two_numbers();
                black_box(traced::fastrace_traced(a, b));
            })
        }
        // Counts the collector's side too: every 32nd call drains the rings into the full
        // recent-span buffer inside the count, so a call is one server-like span ended plus a
        // 32nd of a drain of 32 (the batch the buffer receives). No criterion twin: on the
        // collector thread, time is shared with everything else the process runs.
        "span_collector/server_span_into_recent_spans" => {
            let recent = traced::install_full_recent_spans();
            // Counted from minus the warm-up, so that the measured chunks (of 64) start on a
            // drain and end on one: the drain between chunks, outside the count, finds nothing.
            let mut ended = 0u32.wrapping_sub(WARM_UP);
            Box::new(move || {
                let _recent = &recent;
                traced::obskit_server_like_span();
                ended = ended.wrapping_add(1);
                if ended.is_multiple_of(32) {
                    obskit::trace::flush();
                }
            })
        }
        "http_request/bare_service" => serving(http_services::bare()),
        "http_request/with_red_layer" => serving(http_services::obskit_red_layer(None)),
        // With spans on, sampled, into the full recent-span buffer (the shop's setup without
        // an exporter): the server span's cost on the request path. Its drain is the
        // collector's, outside the count (`span_collector/*` counts that side).
        "http_request/with_red_layer_traced" => {
            let recent = traced::install_full_recent_spans();
            let mut serve = serving(http_services::obskit_red_layer(None));
            Box::new(move || {
                let _recent = &recent;
                serve()
            })
        }
        "http_request/with_red_layer_no_matched_route_extension" => {
            serving(http_services::obskit_red_layer(Some(false)))
        }
        "http_request/with_red_layer_matched_route_extension" => {
            serving(http_services::obskit_red_layer(Some(true)))
        }
        "http_request/tower_http_trace_metrics" => {
            let handle = http_services::install_metrics_prometheus_recorder();
            let mut serve = serving(http_services::tower_http_metrics());
            Box::new(move || {
                let _handle = &handle;
                serve()
            })
        }
        "http_request/opentelemetry_tower_metrics" => {
            http_services::install_opentelemetry_meter_provider();
            serving(http_services::opentelemetry_tower_metrics())
        }
        _ => return None,
    };
    Some(call)
}

/// One request a call, as criterion's `http_request/*` iterations.
fn serving<S, B>(service: S) -> Box<dyn FnMut()>
where
    S: tower::Service<http::Request<http_services::RequestBody>, Response = http::Response<B>>
        + Clone
        + 'static,
    S::Error: std::fmt::Debug,
    B: http_body::Body + 'static,
    B::Error: std::fmt::Debug,
{
    let runtime = http_services::runtime();
    Box::new(move || http_services::serve_one(&runtime, &service))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "--list" => {
            for name in VARIANTS {
                println!("{name}");
            }
        }
        [name, iterations] => {
            let iterations: u32 = iterations.parse().unwrap_or_else(|_| {
                eprintln!("ITERATIONS must be a positive integer, not {iterations:?}");
                std::process::exit(2)
            });
            let Some(mut call) = variant(name) else {
                eprintln!("unknown variant {name:?}; `instructions --list` names them");
                std::process::exit(2)
            };
            for _ in 0..WARM_UP {
                call();
            }
            obskit::trace::flush();
            let mut left = iterations;
            while left > 0 {
                let chunk = left.min(CHUNK);
                measured(chunk, &mut *call);
                obskit::trace::flush();
                left -= chunk;
            }
        }
        _ => {
            eprintln!("usage: instructions VARIANT ITERATIONS | instructions --list");
            std::process::exit(2)
        }
    }
}
