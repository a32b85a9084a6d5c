//! `GET /debug/pprof/profile`: an on-demand CPU profile of the whole process, and
//! `GET /debug/pprof/heap` and `/debug/pprof/allocs`: heap profiles, each answered as a pprof
//! protobuf or a flamegraph and kept in the profile store. The admin surface routes and
//! protects the request (see [`crate::admin`]); this file takes the capture.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::{
    Capture, CaptureError, CaptureOptions, Profile, ProfileKind, ProfileStore, DEFAULT_FREQUENCY,
    MAX_FREQUENCY, ON_DEMAND,
};
use crate::admin::{error, with_type};

/// The default capture length of `/debug/pprof/profile`, in seconds (Go's too).
const DEFAULT_PROFILE_SECONDS: u64 = 10;
/// The longest capture `/debug/pprof/profile` takes, in seconds.
const MAX_PROFILE_SECONDS: u64 = 60;

/// Answers `GET /debug/pprof/profile?{query}`: samples the process for the requested time,
/// keeps the profile in `store` and answers it. A busy profiler is `409` at once, a bad query
/// `400`. Dropping the future (the client went away) stops the capture.
pub(crate) async fn pprof_profile(store: ProfileStore, query: Option<&str>) -> Response<Full<Bytes>> {
    let query = match ProfileQuery::parse(query.unwrap_or("")) {
        Ok(query) => query,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", &message),
    };
    let options = CaptureOptions::new(ON_DEMAND)
        .frequency(query.frequency)
        .span_labels(query.span_labels);
    // Starting the sampler blocks for ~0.5 ms (far longer the first time in a process):
    // off the async workers. A busy profiler still answers at once.
    let started = tokio::task::spawn_blocking(move || Capture::start(options).map(OffThread::map))
        .await
        .unwrap_or_else(|_| Err(CaptureError::Profiler("the start task failed".into())));
    let mut capture = match started {
        Ok(capture) => capture,
        Err(CaptureError::Busy) => {
            return error(
                StatusCode::CONFLICT,
                "profile_in_progress",
                "a CPU profile is already being captured in this process (only one can run at a time); retry when it finishes",
            )
        }
        Err(CaptureError::NotBuilt) => {
            return error(
                StatusCode::NOT_IMPLEMENTED,
                "not_built",
                &crate::features::not_built("profiling"),
            )
        }
        Err(CaptureError::Profiler(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "profiler_failed",
                &format!("the CPU profiler could not start: {e}"),
            )
        }
    };
    // Dropping this future (the client went away) drops the capture, which stops it.
    tokio::time::sleep(query.duration).await;
    let Some(capture) = capture.0.take() else {
        // Unreachable: only `Drop` takes it, and that has not run while we hold it.
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "profiler_failed",
            "the capture was lost",
        );
    };
    // Symbolising is CPU work for up to a few hundred milliseconds: off the async workers.
    let finished = tokio::task::spawn_blocking(move || capture.finish()).await;
    let profile = match finished {
        Ok(Ok(profile)) => profile,
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "profiler_failed",
                &e.to_string(),
            )
        }
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "profiler_failed",
                "the capture's encoding task failed",
            )
        }
    };
    stored(&store, &profile, query.svg)
}

/// Keeps `profile` in `store` and answers it, as its flamegraph or its pprof protobuf, as an
/// attachment named as stored.
fn stored(store: &ProfileStore, profile: &Profile, svg: bool) -> Response<Full<Bytes>> {
    let names = store.insert(profile);
    // `/debug/traces` shows what each labelled span took, with a link into this capture.
    if let Some(pprof) = names.iter().find(|n| n.ends_with(".pb")) {
        super::span_samples::record(pprof, profile.span_cpu());
    }
    let kind = if svg {
        ProfileKind::Flamegraph
    } else {
        ProfileKind::Pprof
    };
    let body = match kind {
        ProfileKind::Flamegraph => profile.svg().clone(),
        ProfileKind::Pprof => profile.pprof().clone(),
    };
    let mut response = with_type(StatusCode::OK, kind.content_type(), body);
    let extension = kind.extension();
    let file = names
        .into_iter()
        .find(|n| n.ends_with(&format!(".{extension}")))
        .unwrap_or_else(|| format!("{}.{extension}", profile.function()));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// Answers `GET /debug/pprof/heap?{query}` (`allocs` false: what is in use) and
/// `/debug/pprof/allocs` (`allocs` true: what was allocated): jemalloc's samples now, kept in `store` and answered as a pprof protobuf or
/// (`format=svg`) a flamegraph. Without jemalloc's profiler `501` says why; another dump being
/// made is `409`; a bad query `400`.
pub(crate) async fn pprof_heap(
    store: ProfileStore,
    query: Option<&str>,
    allocs: bool,
) -> Response<Full<Bytes>> {
    let svg = match ProfileQuery::parse(query.unwrap_or("")) {
        Ok(query) => query.svg,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", &message),
    };
    #[cfg(not(feature = "heap-profiling"))]
    {
        let _ = (store, svg, allocs);
        error(
            StatusCode::NOT_IMPLEMENTED,
            "not_built",
            &crate::features::not_built("heap-profiling"),
        )
    }
    #[cfg(feature = "heap-profiling")]
    {
        use super::heap::{self, HeapError, HeapView};
        let view = if allocs { HeapView::Allocs } else { HeapView::InUse };
        // Dumping and resolving frames is blocking work: off the async workers. A client that
        // goes away meanwhile leaves a dump that finishes and is stored.
        let made = tokio::task::spawn_blocking(move || heap::dump(view))
            .await
            .unwrap_or_else(|_| Err(HeapError::Failed("the dump task failed".into())));
        match made {
            Ok(profile) => stored(&store, &profile, svg),
            Err(e @ HeapError::Busy) => error(StatusCode::CONFLICT, "profile_in_progress", &e.to_string()),
            Err(e @ HeapError::NotEnabled(_)) => {
                error(StatusCode::NOT_IMPLEMENTED, "not_enabled", &e.to_string())
            }
            Err(e @ HeapError::Failed(_)) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "profiler_failed",
                &e.to_string(),
            ),
        }
    }
}

/// Holds an on-demand capture; if the request is dropped mid-capture, stops it on a blocking
/// thread (stopping pprof-rs's profiler takes tens of milliseconds).
struct OffThread(Option<Capture>);

impl OffThread {
    fn map(capture: Capture) -> OffThread {
        OffThread(Some(capture))
    }
}

impl Drop for OffThread {
    fn drop(&mut self) {
        if let Some(capture) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn_blocking(move || drop(capture))),
                Err(_) => drop(capture),
            }
        }
    }
}

/// The query of `/debug/pprof/profile`.
#[derive(Debug, PartialEq)]
pub(crate) struct ProfileQuery {
    pub(crate) duration: Duration,
    pub(crate) frequency: u32,
    pub(crate) svg: bool,
    /// Samples labelled by span (`labels=off` turns it off).
    pub(crate) span_labels: bool,
}

impl ProfileQuery {
    pub(crate) fn parse(query: &str) -> Result<ProfileQuery, String> {
        let mut parsed = ProfileQuery {
            duration: Duration::from_secs(DEFAULT_PROFILE_SECONDS),
            frequency: DEFAULT_FREQUENCY,
            svg: false,
            span_labels: true,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "seconds" => {
                    let seconds: u64 = value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("seconds must be a positive integer (at most {MAX_PROFILE_SECONDS})")
                    })?;
                    parsed.duration = Duration::from_secs(seconds.min(MAX_PROFILE_SECONDS));
                }
                "frequency" => {
                    let hz: u32 = value.parse().ok().filter(|hz| *hz > 0).ok_or_else(|| {
                        format!("frequency must be a positive integer in Hz (at most {MAX_FREQUENCY})")
                    })?;
                    parsed.frequency = hz.min(MAX_FREQUENCY);
                }
                "labels" => {
                    parsed.span_labels = crate::settings::parse_switch(value)
                        .ok_or_else(|| "labels must be on or off".to_string())?;
                }
                "format" => {
                    parsed.svg = match value {
                        "svg" | "flamegraph" => true,
                        "pprof" | "proto" | "protobuf" => false,
                        _ => return Err("format must be pprof or svg".to_string()),
                    }
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_query() {
        let q = ProfileQuery::parse("").unwrap();
        assert_eq!(
            (q.duration, q.frequency, q.svg),
            (Duration::from_secs(10), 99, false)
        );
        assert!(ProfileQuery::parse("").unwrap().span_labels);
        assert!(!ProfileQuery::parse("labels=off").unwrap().span_labels);
        let q = ProfileQuery::parse("seconds=600&frequency=1000&format=svg&debug=1").unwrap();
        assert_eq!(
            (q.duration, q.frequency, q.svg),
            (Duration::from_secs(60), 250, true)
        );
        for bad in [
            "seconds=0",
            "seconds=-1",
            "seconds=abc",
            "frequency=0",
            "format=png",
            "labels=maybe",
        ] {
            assert!(ProfileQuery::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_bad_query_is_refused_before_any_capture() {
        let store = ProfileStore::in_memory(4, 1 << 20);
        let response = pprof_profile(store.clone(), Some("seconds=x")).await;
        assert_eq!(response.status(), 400);
        assert!(store.list().is_empty());
    }
}
