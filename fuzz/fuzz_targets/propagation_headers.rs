//! `RemoteContext::extract` over whole header maps (`traceparent`, `tracestate`, `baggage`, as
//! many lines of each as a client sends, any bytes): never a panic; the W3C rules hold (no
//! `tracestate` without a valid single `traceparent`, `baggage` bounded); and injecting the
//! extracted context into an outgoing request, then extracting it there, gives it back.
//!
//! Input: lines `name:value`; a name not given in full is picked by its first byte
//! (`p` traceparent, `s` tracestate, anything else baggage), so the fuzzer can reach them all.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use obskit::trace::propagation::{
    parse_traceparent, RemoteContext, BAGGAGE, MAX_BAGGAGE_BYTES, TRACEPARENT, TRACESTATE,
};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let name = match name {
            b"traceparent" | b"p" => TRACEPARENT,
            b"tracestate" | b"s" => TRACESTATE,
            _ => BAGGAGE,
        };
        // What hyper would accept on the wire: any byte but controls (obs-text included).
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    let remote = RemoteContext::extract(&headers);

    if let Some(parent) = &remote.parent {
        let lines: Vec<&HeaderValue> = headers.get_all(TRACEPARENT).iter().collect();
        assert_eq!(lines.len(), 1, "a parent from several traceparent lines");
        let line = lines[0].to_str().expect("a parsed traceparent is ASCII");
        assert_eq!(parse_traceparent(line).ok().as_ref(), Some(parent));
    } else {
        assert!(
            remote.trace_state.is_empty(),
            "tracestate kept without a traceparent"
        );
    }
    if let Some(baggage) = &remote.baggage {
        assert!(
            baggage.len() <= MAX_BAGGAGE_BYTES,
            "{} bytes of baggage",
            baggage.len()
        );
        assert!(!baggage.is_empty());
    }

    let mut outgoing = HeaderMap::new();
    remote.inject(remote.parent.as_ref(), &mut outgoing);
    assert_eq!(
        RemoteContext::extract(&outgoing),
        remote,
        "inject then extract changed it"
    );
});
