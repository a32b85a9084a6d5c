//! A heap dump's stacks, resolved to functions in-process and encoded the two ways every
//! profile is: a pprof protobuf shaped like Go's heap profile, and a flamegraph SVG.

use std::collections::HashMap;
use std::ffi::c_void;

use pprof::protos::{self, Message};

use super::super::proto::Strings;
use super::jeheap::{HeapDump, Stack};
use super::HeapView;

/// One function of a resolved frame (inlined calls make several of one address).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Function {
    /// Demangled, without the hash: `shop::cart::add`.
    pub(super) name: String,
    /// The symbol as linked.
    pub(super) system_name: String,
    pub(super) file: String,
    pub(super) line: u32,
}

/// The functions at each return address, innermost (most inlined) first.
pub(super) type Resolved = HashMap<usize, Vec<Function>>;

/// Resolves every address of the dump in this process, with the binary's debug information
/// (the same way CPU captures are). An address with no symbol shows as `0x…`.
pub(super) fn resolve(dump: &HeapDump) -> Resolved {
    let mut resolved = Resolved::new();
    for stack in &dump.stacks {
        for &addr in &stack.addrs {
            resolved.entry(addr).or_insert_with(|| resolve_one(addr));
        }
    }
    resolved
}

fn resolve_one(addr: usize) -> Vec<Function> {
    let mut functions = Vec::new();
    // A return address is one past its call: resolve the call itself.
    backtrace::resolve(addr.saturating_sub(1) as *mut c_void, |symbol| {
        let Some(name) = symbol.name() else { return };
        functions.push(Function {
            name: format!("{name:#}"),
            system_name: String::from_utf8_lossy(name.as_bytes()).into_owned(),
            file: symbol
                .filename()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            line: symbol.lineno().unwrap_or(0),
        });
    });
    if functions.is_empty() {
        let name = format!("{addr:#x}");
        functions.push(Function {
            system_name: name.clone(),
            name,
            file: String::new(),
            line: 0,
        });
    }
    functions
}

/// Where the allocator is entered: the `#[global_allocator]` shim's symbols (`__rust_alloc`,
/// `__rustc::__rust_realloc`, …), its jemalloc implementation and jemalloc's own entry points.
/// Every frame from the outermost of these inwards is the allocator's (jemalloc's internals,
/// whatever their names), and is dropped, so the innermost frame left is the code that
/// allocated.
fn enters_allocator(function: &Function) -> bool {
    const PREFIXES: &[&str] = &[
        "__rust_alloc",
        "__rust_realloc",
        "__rust_dealloc",
        "__rustc::__rust_",
        "__rdl_",
        "__rg_",
        "_rjem_",
        "tikv_jemallocator::",
        "<tikv_jemallocator::",
    ];
    PREFIXES.iter().any(|p| function.name.starts_with(p))
}

/// A stack's return addresses, innermost first, from the first one past the allocator's: the
/// outermost address whose functions enter the allocator and every address inside it are
/// dropped (the allocator's entry points are symbols of their own, never inlined into the code
/// that allocates, so the cut falls between addresses).
fn own_addrs<'s>(stack: &'s Stack, resolved: &Resolved) -> &'s [usize] {
    let enters = |addr: &usize| {
        resolved
            .get(addr)
            .is_some_and(|fs| fs.iter().any(enters_allocator))
    };
    let first_own = stack.addrs.iter().rposition(enters).map_or(0, |entry| entry + 1);
    &stack.addrs[first_own..]
}

/// A stack's functions, innermost first, the allocator's own left out (empty when nothing else
/// is left).
pub(super) fn functions<'a>(stack: &Stack, resolved: &'a Resolved) -> Vec<&'a Function> {
    own_addrs(stack, resolved)
        .iter()
        .filter_map(|addr| resolved.get(addr))
        .flatten()
        .collect()
}

/// The pprof protobuf: Go's four heap sample types (allocated objects and bytes, in-use
/// objects and bytes), the view's as the default (`inuse_space` for `heap`, `alloc_space` for
/// `allocs`), and the sampling interval as the period.
pub(super) fn pprof(
    dump: &HeapDump,
    resolved: &Resolved,
    view: HeapView,
    time_nanos: i64,
) -> Result<Vec<u8>, String> {
    let mut strings = Strings::default();
    let mut function_ids: HashMap<&Function, u64> = HashMap::new();
    let mut location_ids: HashMap<usize, u64> = HashMap::new();
    let mut profile = protos::Profile::new();
    // One mapping, the process's, marked as symbolised already: `go tool pprof` then reads the
    // names given here instead of looking for the binary.
    let mut mapping = protos::Mapping::new();
    mapping.id = 1;
    mapping.memory_limit = u64::MAX;
    mapping.filename = strings.index(
        &std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    mapping.has_functions = true;
    mapping.has_filenames = true;
    mapping.has_line_numbers = true;
    mapping.has_inline_frames = true;
    profile.mapping.push(mapping);
    for stack in &dump.stacks {
        let own = own_addrs(stack, resolved);
        if own.is_empty() {
            continue;
        }
        let mut sample = protos::Sample::new();
        for &addr in own {
            let next_id = location_ids.len() as u64 + 1;
            let id = *location_ids.entry(addr).or_insert_with(|| {
                let mut location = protos::Location::new();
                location.id = next_id;
                location.mapping_id = 1;
                location.address = addr as u64;
                for function in resolved.get(&addr).into_iter().flatten() {
                    let next_fn = function_ids.len() as u64 + 1;
                    let function_id = *function_ids.entry(function).or_insert_with(|| {
                        let mut f = protos::Function::new();
                        f.id = next_fn;
                        f.name = strings.index(&function.name);
                        f.system_name = strings.index(&function.system_name);
                        f.filename = strings.index(&function.file);
                        profile.function.push(f);
                        next_fn
                    });
                    let mut line = protos::Line::new();
                    line.function_id = function_id;
                    line.line = i64::from(function.line);
                    location.line.push(line);
                }
                profile.location.push(location);
                next_id
            });
            sample.location_id.push(id);
        }
        sample.value = vec![
            stack.allocated.objects.round() as i64,
            stack.allocated.bytes.round() as i64,
            stack.in_use.objects.round() as i64,
            stack.in_use.bytes.round() as i64,
        ];
        profile.sample.push(sample);
    }
    for (kind, unit) in [
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ] {
        let mut value_type = protos::ValueType::new();
        value_type.ty = strings.index(kind);
        value_type.unit = strings.index(unit);
        profile.sample_type.push(value_type);
    }
    let mut period_type = protos::ValueType::new();
    period_type.ty = strings.index("space");
    period_type.unit = strings.index("bytes");
    profile.period_type = Some(period_type).into();
    profile.period = dump.sample_interval as i64;
    profile.default_sample_type = strings.index(view.sample_type());
    profile.time_nanos = time_nanos;
    profile.string_table = strings.into_table();
    profile.write_to_bytes().map_err(|e| e.to_string())
}

/// The flamegraph's folded lines (`outermost;…;innermost value`), the view's bytes as values,
/// one line per distinct stack.
pub(super) fn folded(dump: &HeapDump, resolved: &Resolved, view: HeapView) -> Vec<String> {
    let mut lines: HashMap<String, f64> = HashMap::new();
    for stack in &dump.stacks {
        let bytes = match view {
            HeapView::InUse => stack.in_use.bytes,
            HeapView::Allocs => stack.allocated.bytes,
        };
        let own = functions(stack, resolved);
        if own.is_empty() || bytes < 0.5 {
            continue;
        }
        // inferno splits frames on `;` and the value on the last space.
        let names: Vec<String> = own.iter().rev().map(|f| f.name.replace(';', ":")).collect();
        *lines.entry(names.join(";")).or_insert(0.0) += bytes;
    }
    let mut lines: Vec<String> = lines
        .into_iter()
        .map(|(stack, bytes)| format!("{stack} {}", bytes.round() as u64))
        .collect();
    lines.sort();
    lines
}

#[cfg(test)]
mod tests {
    use super::super::jeheap::{Counts, Stack};
    use super::*;

    fn function(name: &str) -> Function {
        Function {
            name: name.to_string(),
            system_name: name.to_string(),
            file: "src/lib.rs".to_string(),
            line: 1,
        }
    }

    fn dump() -> (HeapDump, Resolved) {
        let counts = |bytes: f64| Counts { objects: 1.0, bytes };
        let dump = HeapDump {
            sample_interval: 524_288,
            stacks: vec![
                Stack {
                    addrs: vec![1, 2, 3],
                    in_use: counts(1000.0),
                    allocated: counts(3000.0),
                },
                Stack {
                    addrs: vec![1, 4],
                    in_use: Counts::default(),
                    allocated: counts(500.0),
                },
            ],
        };
        let resolved = Resolved::from([
            (1, vec![function("imalloc_body"), function("_rjem_malloc")]),
            // An address with an inlined call: innermost first.
            (2, vec![function("cache::fill"), function("app::load")]),
            (3, vec![function("main")]),
            (4, vec![function("app::scratch")]),
        ]);
        (dump, resolved)
    }

    #[test]
    fn the_allocator_is_trimmed_and_inlined_calls_kept() {
        let (dump, resolved) = dump();
        let names: Vec<&str> = functions(&dump.stacks[0], &resolved)
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["cache::fill", "app::load", "main"]);
        assert_eq!(
            folded(&dump, &resolved, HeapView::InUse),
            ["main;app::load;cache::fill 1000"]
        );
        assert_eq!(
            folded(&dump, &resolved, HeapView::Allocs),
            ["app::scratch 500", "main;app::load;cache::fill 3000"]
        );
    }

    #[test]
    fn the_pprof_profile_is_go_shaped() {
        let (dump, resolved) = dump();
        let bytes = pprof(&dump, &resolved, HeapView::Allocs, 7).unwrap();
        let profile = protos::Profile::parse_from_bytes(&bytes).unwrap();
        let s = |i: i64| profile.string_table[i as usize].as_str();
        let types: Vec<&str> = profile.sample_type.iter().map(|t| s(t.ty)).collect();
        assert_eq!(
            types,
            ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]
        );
        assert_eq!(s(profile.default_sample_type), "alloc_space");
        assert_eq!(profile.period, 524_288);
        assert_eq!(profile.sample.len(), 2);
        assert_eq!(profile.sample[0].value, [1, 3000, 1, 1000]);
        // The allocator's address is not a location; the inlined one holds two lines.
        assert_eq!(profile.sample[0].location_id.len(), 2);
        let first = &profile.location[0];
        assert_eq!(first.address, 2);
        assert_eq!(first.line.len(), 2);
        let names: Vec<&str> = profile.function.iter().map(|f| s(f.name)).collect();
        assert!(
            !names.contains(&"_rjem_malloc") && !names.contains(&"imalloc_body"),
            "{names:?}"
        );
    }
}
