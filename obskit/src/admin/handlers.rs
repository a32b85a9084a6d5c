//! What each admin endpoint answers, once the route is resolved and the caller let in.

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::{error, json, status_of, with_type, AdminEndpoint, AdminSurface};
use crate::debug;
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
            AdminEndpoint::DebugMetrics => match &self.inner.stats {
                Some(stats) => json(StatusCode::OK, &stats.snapshot()),
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_configured",
                    "process figures are sampled only when served through obskit",
                ),
            },
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
            AdminEndpoint::PprofProfile => {
                crate::profile::pprof_profile(self.profiles(), request.uri.query()).await
            }
            AdminEndpoint::ProfileList => json(
                StatusCode::OK,
                &serde_json::json!({ "profiles": self.profiles().list() }),
            ),
            AdminEndpoint::ProfileFile => self.profile_file(request.uri.path()),
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

    /// `/profiles/{name}`.
    fn profile_file(&self, path: &str) -> Response<Full<Bytes>> {
        // The raw path, not percent-decoded: a stored name never contains `%`, so an encoded
        // one is refused as it is, and never decoded into a path.
        let name = path
            .strip_prefix("/profiles/")
            .unwrap_or_default()
            .trim_end_matches('/');
        match self.profiles().get(name) {
            Ok(data) => {
                let mut response = with_type(StatusCode::OK, data.content_type(), data.bytes.clone());
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
