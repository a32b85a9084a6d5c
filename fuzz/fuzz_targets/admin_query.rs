//! The admin endpoints' query strings: `/debug/traces` (`min_duration_ms`, `status`, `limit`,
//! `trace_id`, `slowest_minutes`) and `/debug/pprof/profile` (`seconds`, `frequency`,
//! `format`). Never a panic; whatever is accepted is within the documented bounds; unknown
//! parameters change nothing.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use obskit::__private::fuzz::profile_query;
use obskit::profile::MAX_FREQUENCY;
use obskit::trace::TraceQuery;

fuzz_target!(|data: &[u8]| {
    // The query is read from the URI, which hyper has already checked to be ASCII.
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let traces = TraceQuery::parse(Some(query));
    if let Ok(parsed) = &traces {
        assert!(
            (1..=TraceQuery::MAX_LIMIT).contains(&parsed.limit),
            "limit {}",
            parsed.limit
        );
        assert!(parsed.slowest_minutes >= 1);
        assert!(parsed.trace_id != Some(0));
        if let Some(min) = parsed.min_duration {
            assert!(min < Duration::from_secs(1_000_000_000), "{min:?}");
        }
    }
    assert_eq!(
        TraceQuery::parse(Some(&format!("{query}&fuzz_unknown=1"))),
        traces,
        "an unknown parameter changed the result"
    );

    let profile = profile_query(query);
    if let Ok((duration, frequency, _svg)) = &profile {
        assert!(
            *duration >= Duration::from_secs(1) && *duration <= Duration::from_secs(60),
            "{duration:?}"
        );
        assert!((1..=MAX_FREQUENCY).contains(frequency), "{frequency} Hz");
    }
    assert_eq!(
        profile_query(&format!("{query}&fuzz_unknown=1")),
        profile,
        "an unknown parameter changed the profile query"
    );
});
