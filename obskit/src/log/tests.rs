use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::metrics::Registry;
use crate::trace::tests::{Collect, SINK_LOCK};
use crate::trace::AttrValue;

/// What the logs wrote, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Harness {
    logs: Logs,
    out: Captured,
    registry: Registry,
}

impl Harness {
    fn new(settings: LogSettings) -> Harness {
        let out = Captured::default();
        let registry = Registry::new();
        let logs = Logs::to_writer(&settings, "cart", &registry, Box::new(out.clone())).unwrap();
        Harness { logs, out, registry }
    }

    fn json() -> Harness {
        Harness::new(LogSettings {
            format: LogFormat::Json,
            ..LogSettings::default()
        })
    }

    /// The lines written so far (after waiting for the writer).
    fn lines(&self) -> Vec<String> {
        assert!(self.logs.flush(Duration::from_secs(10)));
        String::from_utf8(self.out.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn records(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }
}

#[test]
fn json_records_carry_the_trace_of_the_span_they_happened_in() {
    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let sink = Arc::new(Collect::default());
    crate::trace::set_sink(sink.clone());
    let h = Harness::json();
    let subscriber = h.logs.subscriber();
    let context = tracing::subscriber::with_default(subscriber, || {
        tracing::info!(attempt = 1, "before any span");
        let span = crate::trace::span("checkout").start();
        let context = span.context().unwrap();
        {
            let _entered = span.enter();
            tracing::warn!(order_id = 42, ok = false, ratio = 0.5, "stock reserved late");
        }
        drop(span);
        context
    });
    crate::trace::flush();
    crate::trace::clear_sink();

    let records = h.records();
    assert_eq!(records.len(), 2, "{records:?}");
    let outside = &records[0];
    assert_eq!(outside["message"], "before any span");
    assert_eq!(outside["level"], "INFO");
    assert!(outside.get("trace_id").is_none(), "{outside}");
    let inside = &records[1];
    assert_eq!(inside["level"], "WARN");
    assert_eq!(inside["service"], "cart");
    assert_eq!(inside["target"], module_path!());
    assert_eq!(inside["message"], "stock reserved late");
    assert_eq!(inside["fields"]["order_id"], 42);
    assert_eq!(inside["fields"]["ok"], false);
    assert_eq!(inside["fields"]["ratio"], 0.5);
    assert_eq!(inside["trace_id"], format!("{:032x}", context.trace_id));
    assert_eq!(inside["span_id"], format!("{:016x}", context.span_id));
    assert!(inside["timestamp"].as_str().unwrap().ends_with('Z'));
    // The span the record points at reached the sink with the record as one of its events.
    assert!(context.sampled);
    let spans = sink.0.lock().unwrap();
    let checkout = spans
        .iter()
        .find(|s| s.context.span_id == context.span_id)
        .expect("the span reached the sink");
    assert_eq!(checkout.name, "checkout");
    let [event] = &checkout.events[..] else {
        panic!("one event: {:?}", checkout.events);
    };
    assert_eq!(event.name, "stock reserved late");
    let attribute = |key: &str| {
        event
            .attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(attribute("level"), Some(AttrValue::from("WARN")));
    assert_eq!(attribute("order_id"), Some(AttrValue::I64(42)));
    assert_eq!(attribute("ok"), Some(AttrValue::Bool(false)));
    assert!(event.time >= checkout.start && event.time <= checkout.end);
}

#[test]
fn span_events_from_logs_are_bounded_and_masked() {
    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let sink = Arc::new(Collect::default());
    crate::trace::set_sink(sink.clone());
    let h = Harness::new(LogSettings {
        format: LogFormat::Json,
        records_per_second: 0,
        ..LogSettings::default()
    });
    let context = tracing::subscriber::with_default(h.logs.subscriber(), || {
        let span = crate::trace::span("login").start();
        let _entered = span.enter();
        tracing::info!(password = "hunter2", "login attempt with token=abc123");
        for i in 0..200 {
            tracing::debug!(i, "hidden by the filter: no event");
            tracing::info!(i, "many");
        }
        span.context().unwrap()
    });
    crate::trace::flush();
    crate::trace::clear_sink();
    let spans = sink.0.lock().unwrap();
    let login = spans
        .iter()
        .find(|s| s.context.span_id == context.span_id)
        .unwrap();
    let limit = crate::trace::SpanLimits::current().event_count;
    assert_eq!(login.events.len(), limit, "held to the span's event limit");
    assert_eq!(login.dropped.events as usize, 201 - limit);
    let first = &login.events[0];
    assert_eq!(first.name, "login attempt with token=***");
    assert!(first
        .attributes
        .iter()
        .any(|(k, v)| k == "password" && *v == AttrValue::from(crate::secrets::MASK)));
}

#[test]
fn text_records_are_one_readable_line_each() {
    let h = Harness::new(LogSettings {
        format: LogFormat::Text,
        ..LogSettings::default()
    });
    tracing::subscriber::with_default(h.logs.subscriber(), || {
        tracing::error!(
            upstream = "order",
            detail = "two words",
            "the order service\ndid not answer"
        );
    });
    let lines = h.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(line.contains(" ERROR "), "{line}");
    assert!(line.contains("the order service\\ndid not answer"), "{line}");
    assert!(line.contains(" upstream=order"), "{line}");
    assert!(line.contains(" detail=\"two words\""), "{line}");
}

#[test]
fn secrets_in_fields_and_messages_are_masked() {
    let h = Harness::json();
    tracing::subscriber::with_default(h.logs.subscriber(), || {
        tracing::info!(
            password = "hunter2",
            api_token = 12345,
            upstream = "postgres://shop:s3cret@db/shop",
            note = "sent Basic dXNlcjpwYXNz upstream",
            user = "alice",
            "login with Authorization: Bearer xyz"
        );
    });
    let record = &h.records()[0];
    let fields = &record["fields"];
    assert_eq!(fields["password"], "***");
    assert_eq!(fields["api_token"], "***");
    assert_eq!(fields["upstream"], "postgres://shop:***@db/shop");
    assert_eq!(fields["note"], "sent Basic *** upstream");
    assert_eq!(fields["user"], "alice");
    assert_eq!(record["message"], "login with Authorization: Bearer ***");
    let text = h.lines().join("\n");
    for secret in ["hunter2", "12345", "s3cret", "dXNlcjpwYXNz", "xyz"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[test]
fn a_noisy_callsite_is_limited_and_says_what_it_suppressed() {
    // The limiter's exact arithmetic is tested in `limit.rs` on a clock of its own; here, the
    // layer around it, on the real clock (the ten records take microseconds of the limiter's
    // first second).
    let h = Harness::new(LogSettings {
        format: LogFormat::Json,
        records_per_second: 3,
        ..LogSettings::default()
    });
    // One callsite: one line of source.
    fn noisy(i: u64) {
        tracing::warn!(i, "noisy");
    }
    tracing::subscriber::with_default(h.logs.subscriber(), || {
        for i in 0..10 {
            noisy(i);
        }
        tracing::warn!("another callsite");
        // The same callsite again, in a later second.
        std::thread::sleep(Duration::from_millis(1_100));
        noisy(10);
    });
    let records = h.records();
    let noisy: Vec<&serde_json::Value> = records.iter().filter(|r| r["message"] == "noisy").collect();
    let order: Vec<u64> = noisy.iter().map(|r| r["fields"]["i"].as_u64().unwrap()).collect();
    assert_eq!(order, [0, 1, 2, 10], "{records:?}");
    assert!(noisy[0]["fields"].get("log.suppressed").is_none());
    assert_eq!(noisy[3]["fields"]["log.suppressed"], 7, "{records:?}");
    assert!(
        records.iter().any(|r| r["message"] == "another callsite"),
        "another callsite keeps its own budget"
    );
    let text = h.registry.encode_text();
    assert!(
        text.contains(r#"obskit_log_records_dropped_total{reason="rate_limited"} 7"#),
        "{text}"
    );
    assert!(
        text.contains(r#"obskit_log_records_total{level="warn"} 12"#),
        "{text}"
    );
}

#[test]
fn a_level_change_takes_effect_and_reverts_by_itself() {
    let h = Harness::json();
    let levels = h.logs.levels().clone();
    tracing::subscriber::with_default(h.logs.subscriber(), || {
        tracing::debug!("hidden at info");
        let report = levels
            .set("info,obskit::log=debug", Duration::from_millis(400))
            .unwrap();
        assert_eq!(report.directives, "info,obskit::log=debug");
        assert_eq!(report.default, "info");
        assert!(report.expires_at.is_some());
        tracing::debug!("shown while the change lasts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while levels.report().expires_at.is_some() {
            assert!(Instant::now() < deadline, "the change did not expire");
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::debug!("hidden again");
        // A bad change is refused and changes nothing.
        assert!(levels.set("obskit=loud", Duration::from_secs(60)).is_err());
        assert!(levels.set("debug", Duration::from_secs(2 * 86_400)).is_err());
        assert_eq!(levels.report().directives, "info");
        tracing::debug!("hidden still");
        // A change can be taken back before its time.
        levels.set("debug", Duration::from_secs(600)).unwrap();
        assert_eq!(levels.reset().directives, "info");
        tracing::debug!("hidden after the reset");
    });
    let messages: Vec<String> = h
        .records()
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(messages, ["shown while the change lasts"]);
}

#[test]
fn a_stalled_stdout_never_blocks_the_logging_thread() {
    /// Stdout that never takes a byte (a pipe nobody reads).
    struct Stalled(Arc<(Mutex<bool>, std::sync::Condvar)>);
    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let registry = Registry::new();
    let settings = LogSettings {
        format: LogFormat::Json,
        records_per_second: 0,
        queue_bytes: 4096,
        ..LogSettings::default()
    };
    let logs = Logs::to_writer(&settings, "cart", &registry, Box::new(Stalled(gate.clone()))).unwrap();
    tracing::subscriber::with_default(logs.subscriber(), || {
        for i in 0..1_000 {
            tracing::info!(i, "a record of some length, to fill the queue quickly");
        }
    });
    // All 1 000 were logged (this thread got here); most were dropped, and counted.
    let text = registry.encode_text();
    let dropped: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"obskit_log_records_dropped_total{reason="queue_full"} "#))
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped >= 900, "{text}");
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    assert!(logs.flush(Duration::from_secs(10)));
}

/// A library function instrumented the `tracing` way, awaiting in the middle.
#[tracing::instrument(fields(sku = %sku))]
async fn library_lookup(sku: &str) -> usize {
    tokio::task::yield_now().await;
    tracing::info!("inside the library span");
    let inner = crate::trace::span("obskit_child").start();
    drop(inner);
    sku.len()
}

#[test]
fn library_spans_become_obskit_children_only_when_their_target_is_enabled() {
    use crate::trace::InstrumentExt;
    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    for enabled in [true, false] {
        let sink = Arc::new(Collect::default());
        crate::trace::set_sink(sink.clone());
        let h = Harness::new(LogSettings {
            format: LogFormat::Json,
            span_targets: enabled.then(|| "obskit::log=info".to_string()),
            ..LogSettings::default()
        });
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let handler = tracing::subscriber::with_default(h.logs.subscriber(), || {
            runtime.block_on(async {
                let span = crate::trace::span("handler").start();
                let context = span.context().unwrap();
                assert_eq!(library_lookup("abc").instrument(span).await, 3);
                context
            })
        });
        crate::trace::flush();
        crate::trace::clear_sink();
        let spans = sink.0.lock().unwrap();
        let named = |name: &str| spans.iter().find(|s| s.name == name);
        let child = named("obskit_child").expect("obskit's own span");
        let record = h
            .records()
            .into_iter()
            .find(|r| r["message"] == "inside the library span")
            .unwrap();
        if enabled {
            let library = named("library_lookup").expect("the tracing span became an obskit span");
            assert_eq!(library.parent_span_id, Some(handler.span_id));
            assert_eq!(library.context.trace_id, handler.trace_id);
            assert!(library
                .attributes
                .iter()
                .any(|(k, v)| k == "sku" && *v == AttrValue::from("abc")));
            assert!(library
                .attributes
                .iter()
                .any(|(k, v)| k == "code.namespace" && *v == AttrValue::from(module_path!())));
            // Across the `.await`: what happens inside it is its child.
            assert_eq!(child.parent_span_id, Some(library.context.span_id));
            assert_eq!(record["span_id"], format!("{:016x}", library.context.span_id));
            assert_eq!(
                library.events.len(),
                1,
                "the record is an event of the library span"
            );
        } else {
            assert!(named("library_lookup").is_none(), "not bridged when off");
            assert_eq!(child.parent_span_id, Some(handler.span_id));
            assert_eq!(record["span_id"], format!("{:016x}", handler.span_id));
        }
    }
}

/// A build without the `otlp` feature refuses to export records, naming the feature, rather
/// than drop them in silence; the records still go to their writer.
#[cfg(not(feature = "otlp"))]
#[test]
fn without_otlp_an_export_is_refused_naming_the_feature() {
    let env = |name: &str| (name == "OTEL_LOGS_EXPORTER").then(|| "otlp".to_string());
    let settings = LogSettings::from_env_source(&env).unwrap();
    let config = settings
        .otlp
        .clone()
        .expect("OTEL_LOGS_EXPORTER=otlp is still read");
    let h = Harness::new(settings);
    let refused = h.logs.export_otlp(&config, &[]).unwrap_err();
    assert!(refused.0.contains("`otlp`"), "{}", refused.0);
    assert!(refused.0.contains(&config.endpoint), "{}", refused.0);
}

/// An OTLP/HTTP receiver on a free port: every request body it was sent, answered with an
/// empty `200`.
#[cfg(feature = "otlp")]
fn otlp_receiver() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/v1/logs", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = Arc::clone(&kept);
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let (mut line, mut length) = (String::new(), 0usize);
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    kept.lock().unwrap().push(body);
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, bodies)
}

#[cfg(feature = "otlp")]
#[test]
fn records_are_exported_over_otlp_with_their_trace_and_masked_fields() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;

    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    crate::trace::set_sink(Arc::new(Collect::default()));
    let (endpoint, bodies) = otlp_receiver();
    let env = |name: &str| match name {
        "OTEL_LOGS_EXPORTER" => Some("otlp".to_string()),
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT" => Some(endpoint.clone()),
        "OTEL_BLRP_SCHEDULE_DELAY" => Some("50".to_string()),
        _ => None,
    };
    let settings = LogSettings::from_env_source(&env).unwrap();
    let config = settings.otlp.clone().expect("OTEL_LOGS_EXPORTER=otlp");
    assert_eq!(config.endpoint, endpoint);
    let h = Harness::new(LogSettings {
        format: LogFormat::Json,
        ..settings
    });
    let resource = [("service.name".to_string(), "cart".to_string())];
    assert!(h.logs.export_otlp(&config, &resource).unwrap());
    assert!(!h.logs.export_otlp(&config, &resource).unwrap(), "once");
    let context = tracing::subscriber::with_default(h.logs.subscriber(), || {
        let span = crate::trace::span("checkout").start();
        let _entered = span.enter();
        tracing::error!(order_id = 7, password = "hunter2", "payment refused");
        span.context().unwrap()
    });
    crate::trace::clear_sink();
    assert!(h.logs.flush(Duration::from_secs(10)));

    let requests: Vec<ExportLogsServiceRequest> = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| ExportLogsServiceRequest::decode(&b[..]).expect("a valid OTLP logs request"))
        .collect();
    let resource_logs = &requests
        .iter()
        .find(|r| !r.resource_logs.is_empty())
        .expect("an export")
        .resource_logs[0];
    let service = resource_logs
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name");
    assert_eq!(
        service
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.clone()),
        Some(Any::StringValue("cart".to_string()))
    );
    let record = &resource_logs.scope_logs[0].log_records[0];
    assert_eq!(record.severity_text, "ERROR");
    assert_eq!(record.severity_number, 17, "SEVERITY_NUMBER_ERROR");
    assert_eq!(
        record.body.as_ref().and_then(|b| b.value.clone()),
        Some(Any::StringValue("payment refused".to_string()))
    );
    assert_eq!(record.trace_id, context.trace_id.to_be_bytes().to_vec());
    assert_eq!(record.span_id, context.span_id.to_be_bytes().to_vec());
    let attribute = |key: &str| {
        record
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.clone())
    };
    assert_eq!(attribute("order_id"), Some(Any::IntValue(7)));
    assert_eq!(attribute("password"), Some(Any::StringValue("***".to_string())));
    let text = h.registry.encode_text();
    assert!(text.contains("obskit_log_records_exported_total 1"), "{text}");
}

#[test]
fn the_logs_exporter_variable_is_checked() {
    let none = |_: &str| None;
    assert_eq!(LogSettings::from_env_source(&none).unwrap().otlp, None);
    let otlp = |name: &str| (name == "OTEL_LOGS_EXPORTER").then(|| "otlp".to_string());
    let config = LogSettings::from_env_source(&otlp).unwrap().otlp.unwrap();
    assert_eq!(
        config.endpoint, "http://localhost:4318/v1/logs",
        "the specification's default"
    );
    let grpc = |name: &str| match name {
        "OTEL_LOGS_EXPORTER" => Some("otlp".to_string()),
        "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".to_string()),
        _ => None,
    };
    let config = LogSettings::from_env_source(&grpc).unwrap().otlp.unwrap();
    assert_eq!(config.endpoint, "http://localhost:4317");
    let console = |name: &str| (name == "OTEL_LOGS_EXPORTER").then(|| "console".to_string());
    assert_eq!(
        LogSettings::from_env_source(&console).unwrap_err().name,
        "OTEL_LOGS_EXPORTER"
    );
}
