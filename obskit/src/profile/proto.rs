//! Building pprof protobufs (`perftools.profiles.Profile`): the string table both kinds of
//! profile share, and the CPU profile with its samples' span labels.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use pprof::protos::{self, Message};
use pprof::Frames;

use super::labels::SpanLabel;
use crate::secrets::mask_secrets;

/// pprof's string table: index 0 is the empty string, each string is stored once.
pub(super) struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Default for Strings {
    fn default() -> Self {
        Strings {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl Strings {
    /// The index of `s`, added if new.
    pub(super) fn index(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    /// The table, for `Profile::string_table`.
    pub(super) fn into_table(self) -> Vec<String> {
        self.table
    }
}

/// The pprof label keys of a sample's span (`go tool pprof -tagfocus trace_id=…`).
pub(crate) const TRACE_ID: &str = "trace_id";
pub(crate) const SPAN_NAME: &str = "span_name";
pub(crate) const ROUTE: &str = "http.route";
/// The thread a sample was taken on, as pprof-rs labels it.
const THREAD: &str = "thread";

/// A CPU profile as pprof-rs writes one (sample counts and CPU nanoseconds, one location per
/// function, a `thread` label), each sample also labelled with the span of its slot; a comment
/// says how many spans went unlabelled once the labels ran out.
pub(super) fn cpu_profile(
    samples: &HashMap<(Frames, Option<usize>), isize>,
    labels: &[SpanLabel],
    unlabelled: u64,
    frequency: i32,
    started: SystemTime,
    duration: Duration,
) -> protos::Profile {
    let mut strings = Strings::default();
    let mut locations: HashMap<String, u64> = HashMap::new();
    let mut profile = protos::Profile::new();
    let frequency = i64::from(frequency.max(1));
    for ((frames, slot), count) in samples {
        let mut sample = protos::Sample::new();
        for symbol in frames.frames.iter().flatten() {
            let name = symbol.name();
            let next_id = locations.len() as u64 + 1;
            let id = *locations.entry(name.clone()).or_insert_with(|| {
                let mut function = protos::Function::new();
                function.id = next_id;
                function.name = strings.index(&name);
                function.system_name = strings.index(&symbol.sys_name());
                function.filename = strings.index(&symbol.filename());
                profile.function.push(function);
                let mut line = protos::Line::new();
                line.function_id = next_id;
                line.line = i64::from(symbol.lineno());
                let mut location = protos::Location::new();
                location.id = next_id;
                location.line.push(line);
                profile.location.push(location);
                next_id
            });
            sample.location_id.push(id);
        }
        let count = *count as i64;
        sample.value = vec![count, count * 1_000_000_000 / frequency];
        let mut label = |key: &str, value: &str| {
            let mut label = protos::Label::new();
            label.key = strings.index(key);
            label.str = strings.index(value);
            sample.label.push(label);
        };
        label(THREAD, &frames.thread_name_or_id());
        if let Some(span) = slot.and_then(|slot| labels.get(slot)) {
            label(TRACE_ID, &span.trace_id_hex());
            // Masked by shape, as `/debug/traces` shows span names.
            label(SPAN_NAME, &mask_secrets(&span.span_name));
            if let Some(route) = span.route {
                label(ROUTE, route);
            }
        }
        profile.sample.push(sample);
    }
    let mut value_type = |kind: &str, unit: &str| {
        let mut value_type = protos::ValueType::new();
        value_type.ty = strings.index(kind);
        value_type.unit = strings.index(unit);
        value_type
    };
    let samples_type = value_type("samples", "count");
    let cpu_type = value_type("cpu", "nanoseconds");
    profile.sample_type = vec![samples_type, cpu_type.clone()];
    profile.period_type = Some(cpu_type).into();
    profile.period = 1_000_000_000 / frequency;
    profile.time_nanos = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i64;
    profile.duration_nanos = duration.as_nanos() as i64;
    if unlabelled > 0 {
        // `go tool pprof -comments` shows it.
        let comment = format!(
            "{unlabelled} spans polled after this capture's {} span labels were taken are not labelled",
            labels.len()
        );
        profile.comment.push(strings.index(&comment));
    }
    profile.string_table = strings.into_table();
    profile
}

/// A pprof profile (as stored) with only the samples labelled `trace_id`, the rest of it (its
/// functions, locations, strings) as it was.
pub(super) fn samples_of_trace(pprof: &[u8], trace_id: u128) -> Result<Vec<u8>, String> {
    let mut profile =
        protos::Profile::parse_from_bytes(pprof).map_err(|e| format!("not a pprof profile: {e}"))?;
    let wanted = format!("{trace_id:032x}");
    let table = &profile.string_table;
    let is = |index: i64, text: &str| table.get(index as usize).is_some_and(|s| s == text);
    let keep: Vec<bool> = profile
        .sample
        .iter()
        .map(|sample| {
            sample
                .label
                .iter()
                .any(|label| is(label.key, TRACE_ID) && is(label.str, &wanted))
        })
        .collect();
    let mut keep = keep.into_iter();
    profile.sample.retain(|_| keep.next().unwrap_or(false));
    profile.write_to_bytes().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::UNIX_EPOCH;

    use pprof::Symbol;

    use super::*;

    fn frames(names: &[&str]) -> Frames {
        Frames {
            frames: names
                .iter()
                .map(|name| {
                    vec![Symbol {
                        name: Some(name.as_bytes().to_vec()),
                        addr: None,
                        lineno: Some(1),
                        filename: None,
                    }]
                })
                .collect(),
            thread_name: "worker".to_string(),
            thread_id: 1,
            sample_timestamp: UNIX_EPOCH,
        }
    }

    #[test]
    fn samples_carry_their_spans_labels_masked_and_cut_to_one_trace() {
        let labels = [SpanLabel {
            trace_id: 0xab,
            span_id: 7,
            span_name: Cow::Owned("connect password=hunter2".to_string()),
            route: Some("/api/cart"),
        }];
        let samples = HashMap::from([
            ((frames(&["work", "main"]), Some(0)), 3),
            ((frames(&["idle", "main"]), None), 2),
        ]);
        let profile = cpu_profile(&samples, &labels, 9, 99, UNIX_EPOCH, Duration::from_secs(1));
        let text = |i: i64| profile.string_table[i as usize].clone();
        let labelled: Vec<Vec<(String, String)>> = profile
            .sample
            .iter()
            .map(|s| s.label.iter().map(|l| (text(l.key), text(l.str))).collect())
            .collect();
        let with_span = labelled.iter().find(|l| l.len() > 1).expect("a labelled sample");
        assert!(with_span.contains(&(TRACE_ID.to_string(), format!("{:032x}", 0xab))));
        assert!(with_span.contains(&(SPAN_NAME.to_string(), "connect password=***".to_string())));
        assert!(with_span.contains(&(ROUTE.to_string(), "/api/cart".to_string())));
        assert!(!profile.string_table.iter().any(|s| s.contains("hunter2")));
        assert!(profile.comment.iter().any(|&c| text(c).contains("9 spans")));

        let bytes = profile.write_to_bytes().unwrap();
        let only = protos::Profile::parse_from_bytes(&samples_of_trace(&bytes, 0xab).unwrap()).unwrap();
        assert_eq!(only.sample.len(), 1);
        assert_eq!(only.sample[0].value[0], 3);
        let none = protos::Profile::parse_from_bytes(&samples_of_trace(&bytes, 0xcd).unwrap()).unwrap();
        assert!(none.sample.is_empty());
        assert!(samples_of_trace(b"not a profile", 1).is_err());
    }
}
