//! What each admin endpoint answers, once the route is resolved and the caller let in.

use bytes::Bytes;
use http::request::Parts;
#[cfg(feature = "tracing-bridge")]
use http::Method;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::{error, json, status_of, with_type, AdminEndpoint, AdminSurface};
use crate::debug;
use crate::debug::{in_flight, tasks};
use crate::metrics::{accepts_openmetrics, render, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::profile::StoreError;
use crate::trace::TraceQuery;

impl AdminSurface {
    /// Answers `endpoint` for the request `request` heads (no admin endpoint reads a body):
    /// access and method are already checked.
    pub(super) async fn answer(&self, endpoint: AdminEndpoint, request: &Parts) -> Response<Full<Bytes>> {
        match endpoint {
            AdminEndpoint::Metrics => self.metrics(request).await,
            AdminEndpoint::Health => {
                let report = self.inner.health.report().await;
                json(status_of(report.http_status()), &report)
            }
            AdminEndpoint::Live => {
                let report = self.inner.health.liveness();
                json(status_of(report.http_status()), &report)
            }
            AdminEndpoint::Ready => {
                let report = self.inner.health.readiness().await;
                json(status_of(report.http_status()), &report)
            }
            #[cfg(feature = "process-metrics")]
            AdminEndpoint::DebugMetrics => match &self.inner.stats {
                Some(stats) => json(StatusCode::OK, &stats.snapshot()),
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_configured",
                    "process figures are sampled only when served through obskit",
                ),
            },
            #[cfg(not(feature = "process-metrics"))]
            AdminEndpoint::DebugMetrics => not_built("process-metrics"),
            AdminEndpoint::DebugConfig => {
                let entries: Vec<(&str, String)> = self
                    .inner
                    .config
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                json(StatusCode::OK, &debug::config_report(&entries))
            }
            AdminEndpoint::DebugTraces => match &self.inner.traces {
                Some(recent) => match TraceQuery::parse(request.uri.query()) {
                    Ok(query) => json(StatusCode::OK, &recent.report(&query)),
                    Err(problem) => error(StatusCode::BAD_REQUEST, "bad_query", &problem),
                },
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_configured",
                    "no recent-span buffer is installed",
                ),
            },
            AdminEndpoint::DebugLogLevel => self.log_level(request),
            AdminEndpoint::DebugRequests => match in_flight::parse_limit(request.uri.query()) {
                Ok(limit) => json(StatusCode::OK, &in_flight::report(limit)),
                Err(problem) => error(StatusCode::BAD_REQUEST, "bad_query", &problem),
            },
            AdminEndpoint::DebugTasks => task_dump(request.uri.query()).await,
            AdminEndpoint::PprofProfile => {
                crate::profile::pprof_profile(self.profiles(), request.uri.query()).await
            }
            AdminEndpoint::PprofHeap => {
                crate::profile::pprof_heap(self.profiles(), request.uri.query(), false).await
            }
            AdminEndpoint::PprofAllocs => {
                crate::profile::pprof_heap(self.profiles(), request.uri.query(), true).await
            }
            AdminEndpoint::ProfileList => json(
                StatusCode::OK,
                &serde_json::json!({ "profiles": self.profiles().list() }),
            ),
            AdminEndpoint::ProfileFile => self.profile_file(request.uri.path(), request.uri.query()),
        }
    }

    /// `/metrics`: OpenMetrics (with exemplars) only when asked for, since Prometheus 3
    /// refuses content types it did not accept, and 0.0.4 text is what every other scraper
    /// reads.
    ///
    /// Rendered on the scrape thread at the lowest CPU priority ([`crate::metrics::render`]),
    /// so that a scrape never delays the requests served beside it.
    async fn metrics(&self, request: &Parts) -> Response<Full<Bytes>> {
        let openmetrics = request
            .headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(accepts_openmetrics);
        let registry = self.inner.registry.clone();
        let rendered = render::render(move || {
            if openmetrics {
                (OPENMETRICS_CONTENT_TYPE, registry.encode_openmetrics())
            } else {
                (TEXT_CONTENT_TYPE, registry.encode_text())
            }
        })
        .await;
        match rendered {
            Ok((content_type, body)) => with_type(StatusCode::OK, content_type, body.into()),
            Err(render::Busy) => {
                let mut response = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "scrapes_queued",
                    "more scrapes are waiting than the scrape thread renders; try again",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
        }
    }

    /// `/debug/log-level` in a build without the `tracing` bridge: there are no logs to set.
    #[cfg(not(feature = "tracing-bridge"))]
    fn log_level(&self, _request: &Parts) -> Response<Full<Bytes>> {
        not_built("tracing-bridge")
    }

    /// `/debug/log-level`: `GET` shows, `PUT` changes for a while, `DELETE` puts back.
    #[cfg(feature = "tracing-bridge")]
    fn log_level(&self, request: &Parts) -> Response<Full<Bytes>> {
        let Some(levels) = &self.inner.log_levels else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_configured",
                "obskit's logs are not installed in this process (ObskitBuilder::logs, or another tracing subscriber)",
            );
        };
        match request.method {
            Method::PUT => match log_level_change(request.uri.query()) {
                Ok((directives, ttl)) => match levels.set(&directives, ttl) {
                    Ok(report) => json(StatusCode::OK, &report),
                    Err(e) => error(StatusCode::BAD_REQUEST, "bad_directives", &e.0),
                },
                Err(problem) => error(StatusCode::BAD_REQUEST, "bad_query", &problem),
            },
            Method::DELETE => json(StatusCode::OK, &levels.reset()),
            _ => json(StatusCode::OK, &levels.report()),
        }
    }

    /// `/profiles/{name}`, and with `?trace_id=` (a pprof file of a labelling capture) only the
    /// samples of that trace.
    fn profile_file(&self, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        // The raw path, not percent-decoded: a stored name never contains `%`, so an encoded
        // one is refused as it is, and never decoded into a path.
        let name = path
            .strip_prefix("/profiles/")
            .unwrap_or_default()
            .trim_end_matches('/');
        let trace_id = match crate::profile::trace_filter(query) {
            Ok(trace_id) => trace_id,
            Err(problem) => return error(StatusCode::BAD_REQUEST, "bad_query", &problem),
        };
        match self.profiles().get(name) {
            Ok(data) => {
                let bytes = match trace_id {
                    None => data.bytes.clone(),
                    Some(trace_id) => match crate::profile::of_trace(&data, trace_id) {
                        Ok(bytes) => bytes,
                        Err(problem) => return error(StatusCode::BAD_REQUEST, "bad_query", &problem),
                    },
                };
                let mut response = with_type(StatusCode::OK, data.content_type(), bytes);
                if let Ok(value) = HeaderValue::from_str(&data.content_disposition()) {
                    response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
                }
                response
            }
            Err(StoreError::InvalidName) => error(
                StatusCode::BAD_REQUEST,
                "invalid_name",
                "not a profile name; names are listed by /profiles/",
            ),
            Err(StoreError::NotFound) => error(StatusCode::NOT_FOUND, "not_found", "no such profile"),
            Err(StoreError::Io(_)) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unreadable",
                "the profile could not be read back",
            ),
        }
    }
}

/// `/debug/tasks`: see [`crate::debug::tasks`].
async fn task_dump(query: Option<&str>) -> Response<Full<Bytes>> {
    let timeout = match tasks::parse_timeout(query) {
        Ok(timeout) => timeout,
        Err(problem) => return error(StatusCode::BAD_REQUEST, "bad_query", &problem),
    };
    match tasks::dump(timeout).await {
        Ok(dump) => json(StatusCode::OK, &dump),
        Err(tasks::DumpError::Unsupported) => error(
            StatusCode::NOT_IMPLEMENTED,
            "not_built",
            tasks::unsupported_reason(),
        ),
        Err(tasks::DumpError::Busy) => error(
            StatusCode::CONFLICT,
            "dump_running",
            "another task dump is running; one is taken at a time",
        ),
        Err(tasks::DumpError::NoRuntime) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_runtime",
            "not served inside a tokio runtime",
        ),
        Err(tasks::DumpError::TimedOut(after)) => {
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "dump_timed_out",
                &format!(
                    "the dump did not finish in {} s: a worker thread did not reach a point where it                      could pause (blocked in a synchronous call, a lock or a busy loop?)",
                    after.as_secs()
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}

/// The directives and ttl of a `PUT /debug/log-level` query: `directives` (required) and `ttl`
/// (default [`DEFAULT_LEVEL_TTL`](crate::log::DEFAULT_LEVEL_TTL)), percent-decoded; anything else
/// is refused, so that a misspelt parameter is not silently ignored.
#[cfg(feature = "tracing-bridge")]
fn log_level_change(query: Option<&str>) -> Result<(String, std::time::Duration), String> {
    let mut directives = None;
    let mut ttl = crate::log::DEFAULT_LEVEL_TTL;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| format!("{key}: not valid percent-encoded UTF-8"))?;
        match key {
            "directives" => directives = Some(value),
            "ttl" => ttl = crate::log::parse_ttl(&value).map_err(|e| e.0)?,
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: say directives=<EnvFilter directives> and optionally ttl=<duration>"
                ))
            }
        }
    }
    let directives =
        directives.ok_or("directives=<EnvFilter directives> is required (say directives=debug)")?;
    Ok((directives, ttl))
}

/// `%XX` escapes and `+` (a space, as forms send it) decoded; `None` for a broken escape or
/// bytes that are not UTF-8.
#[cfg(feature = "tracing-bridge")]
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let digit = |at: usize| bytes.get(at).and_then(|&b| char::from(b).to_digit(16));
                out.push((digit(i + 1)? * 16 + digit(i + 2)?) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The answer of an endpoint whose part this build leaves out: 501, naming the feature.
#[cfg(any(not(feature = "process-metrics"), not(feature = "tracing-bridge")))]
fn not_built(feature: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "not_built",
        &crate::features::not_built(feature),
    )
}

#[cfg(all(test, feature = "tracing-bridge"))]
mod tests {
    use super::*;

    #[test]
    fn log_level_queries_are_decoded_and_checked() {
        assert_eq!(
            log_level_change(Some("directives=warn%2Ccart%3Ddebug&ttl=30s")),
            Ok(("warn,cart=debug".to_string(), std::time::Duration::from_secs(30)))
        );
        assert_eq!(
            log_level_change(Some("directives=debug")),
            Ok(("debug".to_string(), crate::log::DEFAULT_LEVEL_TTL))
        );
        for bad in [
            None,
            Some(""),
            Some("ttl=5m"),
            Some("level=debug"),
            Some("directives=%zz"),
            Some("directives=%ff"),
            Some("directives=x&ttl=soon"),
        ] {
            assert!(log_level_change(bad).is_err(), "{bad:?}");
        }
        // Two hex digits or nothing: `u8::from_str_radix` would take `+5`.
        assert_eq!(percent_decode("%+5"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("a+b%2Fc"), Some("a b/c".to_string()));
    }
}
