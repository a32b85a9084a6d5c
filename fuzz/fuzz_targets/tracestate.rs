//! `tracestate`: never a panic; the parsed state has at most 32 members with distinct keys, each
//! readable by its key; it prints back to a value that parses to the same state and is no
//! longer than the input; an insert that succeeds is read back first. Input: the header value,
//! optionally a newline and a `key=value` to insert.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use obskit::trace::propagation::TraceState;

fn members(state: &TraceState) -> Vec<(String, String)> {
    let text = state.to_string();
    if text.is_empty() {
        return Vec::new();
    }
    // Neither keys nor values may contain ',', nor keys '=': the printed form splits back into
    // its members unambiguously.
    text.split(',')
        .map(|m| {
            let (k, v) = m.split_once('=').expect("a printed member has '='");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn check(state: &TraceState) {
    let printed = state.to_string();
    assert_eq!(&TraceState::parse(&printed), state, "{printed}");
    let members = members(state);
    assert_eq!(members.len(), state.len());
    assert!(state.len() <= 32, "{} members", state.len());
    assert_eq!(state.is_empty(), members.is_empty());
    let mut keys = HashSet::new();
    for (key, value) in &members {
        assert!(keys.insert(key), "duplicate key {key:?}");
        assert_eq!(state.get(key), Some(value.as_str()), "{key}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (header, insert) = match text.split_once('\n') {
        Some((header, insert)) => (header, Some(insert)),
        None => (text, None),
    };
    let mut state = TraceState::parse(header);
    assert!(
        state.to_string().len() <= header.len(),
        "printing added characters"
    );
    check(&state);
    if let Some((key, value)) = insert.and_then(|i| i.split_once('=')) {
        if state.insert(key, value).is_ok() {
            assert_eq!(state.get(key), Some(value));
            assert!(state.to_string().starts_with(&format!("{key}={value}")));
            check(&state);
        }
    }
});
