//! jemalloc's heap dump (`prof.dump`, format `heap_v2`), read into sampled stacks.
//!
//! The format, as jemalloc 5 writes it (`prof_data.c`):
//!
//! ```text
//! heap_v2/524288                       <- 2^lg_prof_sample: the mean bytes between samples
//!   t*: 28: 16777344 [120: 90177536]   <- all threads: in use objects: bytes [allocated ...]
//!   t3: 12: 6496 [0: 0]                <- one thread (ignored)
//! @ 0x55d0c2a3 0x55d0c1f0 ...          <- a stack, innermost frame first
//!   t*: 13: 6688 [40: 20480]           <- its counts, the same way
//!
//! MAPPED_LIBRARIES:
//! ...                                  <- /proc/self/maps (ignored: frames resolve in-process)
//! ```
//!
//! The bracketed "allocated" counts are cumulative since profiling started, and are zero unless
//! jemalloc runs with `prof_accum`.
//!
//! The counts are of *sampled* allocations: jemalloc samples an allocation with a probability
//! that grows with its size (one sample per `2^lg_prof_sample` bytes on average), so each stack's
//! counts are scaled back up as jeprof does (`AdjustSamples`): by `1 / (1 - e^(-mean / rate))`,
//! where `mean` is the stack's mean sampled allocation size.

/// One allocating stack and its estimated (scaled) counts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Stack {
    /// Return addresses, innermost first.
    pub(crate) addrs: Vec<usize>,
    /// Objects and bytes allocated here and not yet freed.
    pub(crate) in_use: Counts,
    /// Objects and bytes allocated here since profiling started (zero without `prof_accum`).
    pub(crate) allocated: Counts,
}

/// Objects and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Counts {
    pub(crate) objects: f64,
    pub(crate) bytes: f64,
}

/// A parsed dump.
#[derive(Debug, PartialEq)]
pub(crate) struct HeapDump {
    /// The mean bytes between two samples.
    pub(crate) sample_interval: u64,
    /// Every stack with an allocation sampled, in the dump's order.
    pub(crate) stacks: Vec<Stack>,
}

/// Reads a dump. Malformed text is an error naming the line, never a panic: the dump comes from
/// jemalloc, but a parser that trusts its input is one bug away from taking the process down.
pub(crate) fn parse(text: &str) -> Result<HeapDump, String> {
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().ok_or("the heap dump is empty")?;
    let sample_interval: u64 = header
        .trim()
        .strip_prefix("heap_v2/")
        .and_then(|rate| rate.parse().ok())
        .filter(|rate| *rate > 0)
        .ok_or_else(|| format!("not a jemalloc heap_v2 dump: {:?}", truncate(header)))?;
    let rate = sample_interval as f64;
    let mut stacks = Vec::new();
    let mut pending: Option<Vec<usize>> = None;
    for (number, line) in lines {
        let line = line.trim();
        if line == "MAPPED_LIBRARIES:" {
            break;
        }
        if let Some(frames) = line.strip_prefix('@') {
            if pending.is_some() {
                return Err(format!("line {}: a stack without its counts", number + 1));
            }
            let addrs = frames
                .split_ascii_whitespace()
                .map(|word| {
                    let hex = word.strip_prefix("0x").unwrap_or(word);
                    usize::from_str_radix(hex, 16)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("line {}: a frame is not a hex address", number + 1))?;
            pending = Some(addrs);
        } else if let Some(counts) = line.strip_prefix("t*:") {
            // The process-wide totals come first, before any stack: they are the sum of what
            // follows, so only the stacks' own are kept.
            let Some(addrs) = pending.take() else {
                continue;
            };
            let (in_use, allocated) =
                counts_of(counts, rate).ok_or_else(|| format!("line {}: malformed counts", number + 1))?;
            stacks.push(Stack {
                addrs,
                in_use,
                allocated,
            });
        }
    }
    if pending.is_some() {
        return Err("the heap dump ends with a stack without its counts".to_string());
    }
    Ok(HeapDump {
        sample_interval,
        stacks,
    })
}

/// `" 13: 6688 [40: 20480]"`, scaled.
fn counts_of(text: &str, rate: f64) -> Option<(Counts, Counts)> {
    let (current, accumulated) = text.split_once('[')?;
    let accumulated = accumulated.trim().strip_suffix(']')?;
    Some((pair(current, rate)?, pair(accumulated, rate)?))
}

fn pair(text: &str, rate: f64) -> Option<Counts> {
    let (objects, bytes) = text.split_once(':')?;
    let objects: u64 = objects.trim().parse().ok()?;
    let bytes: u64 = bytes.trim().parse().ok()?;
    if objects == 0 {
        return Some(Counts::default());
    }
    let (objects, bytes) = (objects as f64, bytes as f64);
    let mean = bytes / objects;
    let scale = 1.0 / (1.0 - (-mean / rate).exp());
    // A mean of zero bytes (jemalloc never samples those) would scale by infinity.
    let scale = if scale.is_finite() { scale } else { 1.0 };
    Some(Counts {
        objects: objects * scale,
        bytes: bytes * scale,
    })
}

fn truncate(line: &str) -> &str {
    let end = line.char_indices().nth(40).map_or(line.len(), |(i, _)| i);
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "heap_v2/524288
  t*: 3: 17825792 [5: 19922944]
  t0: 3: 17825792 [5: 19922944]
@ 0x5581 0x5582 0x5583
  t*: 2: 16777216 [3: 18874368]
  t0: 2: 16777216 [3: 18874368]
@ 0x5591 0x5583
  t*: 1: 1048576 [0: 0]

MAPPED_LIBRARIES:
55d0c0000000-55d0c2000000 r-xp 00000000 08:01 1234 /usr/bin/shop
";

    #[test]
    fn stacks_and_scaled_counts() {
        let dump = parse(DUMP).unwrap();
        assert_eq!(dump.sample_interval, 524_288);
        assert_eq!(dump.stacks.len(), 2);
        assert_eq!(dump.stacks[0].addrs, [0x5581, 0x5582, 0x5583]);
        assert_eq!(dump.stacks[1].addrs, [0x5591, 0x5583]);
        // 8 MiB allocations, 16 times the interval: sampled almost surely, scaled by ~1.
        let in_use = dump.stacks[0].in_use;
        assert!((in_use.bytes - 16_777_216.0).abs() < 4.0, "{in_use:?}");
        assert!((in_use.objects - 2.0).abs() < 1e-6);
        assert!(dump.stacks[0].allocated.bytes > in_use.bytes);
        // 1 MiB: twice the interval, sampled with probability 1 - e^-2, scaled by 1.156.
        let small = dump.stacks[1].in_use;
        assert!((small.bytes / 1_048_576.0 - 1.0 / (1.0 - (-2.0f64).exp())).abs() < 1e-9);
        assert_eq!(dump.stacks[1].allocated, Counts::default());
    }

    #[test]
    fn small_allocations_are_scaled_up_by_their_sampling_odds() {
        // 1000 sampled objects of 64 bytes at a 512 KiB interval stand for ~8 193 times more.
        let dump = parse("heap_v2/524288\n@ 0x1\n  t*: 1000: 64000 [0: 0]\n").unwrap();
        let scale = dump.stacks[0].in_use.objects / 1000.0;
        assert!((scale - 8192.5).abs() < 1.0, "{scale}");
    }

    #[test]
    fn malformed_dumps_are_errors_not_panics() {
        for bad in [
            "",
            "heap_v1/1\n",
            "heap_v2/0\n",
            "heap_v2/x\n",
            "heap_v2/8\n@ 0xzz\n  t*: 1: 8 [0: 0]\n",
            "heap_v2/8\n@ 0x1\n@ 0x2\n",
            "heap_v2/8\n@ 0x1\n",
            "heap_v2/8\n@ 0x1\n  t*: 1: 8\n",
            "heap_v2/8\n@ 0x1\n  t*: a: 8 [0: 0]\n",
            "heap_v2/8\n@ 0x1\n  t*: 1: -8 [0: 0]\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // A zero-byte stack scales by one instead of by infinity.
        let dump = parse("heap_v2/8\n@ 0x1\n  t*: 1: 0 [0: 0]\n").unwrap();
        assert_eq!(dump.stacks[0].in_use.objects, 1.0);
        assert!(parse("heap_v2/8\n").unwrap().stacks.is_empty());
    }
}
