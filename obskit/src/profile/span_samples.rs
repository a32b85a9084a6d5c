//! What labelling captures found for each span: how many CPU samples were taken while it was
//! current, its top frames, and where its trace's profile is. `/debug/traces` shows it beside
//! the span; `/profiles/{name}?trace_id=…` downloads that trace's part of the capture.
//!
//! Process-wide, like the sampler, and bounded: the spans of the last captures, at most
//! [`MAX_SPANS`], the oldest forgotten first.

// Without the sampler (feature `profiling`) nothing is recorded, only looked up.
#![cfg_attr(not(feature = "profiling"), allow(dead_code, unused_imports))]

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// Spans remembered.
pub(crate) const MAX_SPANS: usize = 8192;

/// Top frames kept per span.
pub(crate) const TOP_FRAMES: usize = 5;

/// One span's samples in one capture.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct SpanSamples {
    /// Samples taken while the span was current (its child spans' own not included).
    pub(crate) samples: u64,
    /// The innermost functions of those samples, most sampled first.
    pub(crate) top_frames: Vec<TopFrame>,
    /// Where the capture's samples of this span's trace download: `/profiles/{name}?trace_id=…`.
    pub(crate) profile: String,
}

/// What one capture found for one span, before it is stored.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SpanCpu {
    pub(crate) span_id: u64,
    pub(crate) trace_id: u128,
    pub(crate) samples: u64,
    pub(crate) top_frames: Vec<TopFrame>,
}

/// A function and the samples it was the innermost frame of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct TopFrame {
    pub(crate) function: String,
    pub(crate) samples: u64,
}

struct Index {
    order: VecDeque<u64>,
    by_span: HashMap<u64, SpanSamples>,
}

static INDEX: Mutex<Option<Index>> = Mutex::new(None);

/// Remembers what a capture stored as `pprof_name` found for each span (by span id).
pub(crate) fn record(pprof_name: &str, spans: &[SpanCpu]) {
    let mut index = INDEX.lock().unwrap_or_else(|p| p.into_inner());
    let index = index.get_or_insert_with(|| Index {
        order: VecDeque::new(),
        by_span: HashMap::new(),
    });
    for span in spans {
        let entry = SpanSamples {
            samples: span.samples,
            top_frames: span.top_frames.clone(),
            profile: format!("/profiles/{pprof_name}?trace_id={:032x}", span.trace_id),
        };
        if index.by_span.insert(span.span_id, entry).is_none() {
            index.order.push_back(span.span_id);
        }
        while index.order.len() > MAX_SPANS {
            if let Some(old) = index.order.pop_front() {
                index.by_span.remove(&old);
            }
        }
    }
}

/// What the remembered captures found for `span_id`.
pub(crate) fn lookup(span_id: u64) -> Option<SpanSamples> {
    let index = INDEX.lock().unwrap_or_else(|p| p.into_inner());
    index.as_ref()?.by_span.get(&span_id).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_found_and_the_oldest_forgotten() {
        let top = vec![TopFrame {
            function: "work".into(),
            samples: 3,
        }];
        // Span ids of this test only (the index is process-wide).
        let base = 0x5eed_0000_0000_0000u64;
        let span = |span_id, trace_id, samples, top_frames| SpanCpu {
            span_id,
            trace_id,
            samples,
            top_frames,
        };
        record("on_demand-1.pb", &[span(base, 0xab, 4, top.clone())]);
        let found = lookup(base).unwrap();
        assert_eq!(found.samples, 4);
        assert_eq!(found.top_frames, top);
        assert_eq!(
            found.profile,
            format!("/profiles/on_demand-1.pb?trace_id={:032x}", 0xab)
        );
        let many: Vec<_> = (1..=MAX_SPANS as u64)
            .map(|i| span(base + i, 1, 1, Vec::new()))
            .collect();
        record("on_demand-2.pb", &many);
        assert!(lookup(base).is_none(), "the oldest span was forgotten");
        assert!(lookup(base + MAX_SPANS as u64).is_some());
    }
}
