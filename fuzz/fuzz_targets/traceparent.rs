//! `traceparent` (W3C Trace Context), as a client sends it: never a panic, and whatever parses
//! formats back to the same ids, flags bit and (for version 00) the same string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obskit::trace::propagation::{format_traceparent, parse_traceparent};

fuzz_target!(|data: &[u8]| {
    // A header value that is not visible ASCII never reaches the parser (`to_str` fails).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(context) = parse_traceparent(text) else {
        return;
    };
    assert_ne!(context.trace_id, 0, "an all-zero trace-id was accepted");
    assert_ne!(context.span_id, 0, "an all-zero parent-id was accepted");
    let formatted = format_traceparent(&context);
    assert_eq!(parse_traceparent(&formatted), Ok(context), "{formatted}");
    // Accepted means lowercase hex at fixed positions: the ids are the input's own characters.
    let trimmed = text.trim_matches([' ', '\t']);
    assert_eq!(&formatted[3..52], &trimmed[3..52], "ids changed");
    let flags = u8::from_str_radix(&trimmed[53..55], 16).expect("flags are hex once parsed");
    assert_eq!(context.sampled, flags & 1 == 1, "sampled is bit 0 of the flags");
    if trimmed.starts_with("00-") && matches!(&trimmed[53..], "00" | "01") {
        assert_eq!(formatted, trimmed, "a version 00 traceparent does not round-trip");
    }
});
