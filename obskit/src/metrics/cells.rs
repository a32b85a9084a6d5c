//! Per-thread counter cells: the storage under the function and HTTP metrics.
//!
//! A counter shared by all threads costs a `lock`-prefixed read-modify-write per increment, and
//! the cache line it lives in bounces between cores. Here every recording thread owns a block of
//! cells instead and is its only writer, so an increment is a relaxed load and a relaxed store
//! of the thread's own cell: no locked instruction, no shared cache line. A scrape sums every
//! thread's cell of an index.
//!
//! - **Index space.** An owner (a function site, one HTTP (method, endpoint) pair, one status
//!   series) is given a [`Cells`] range of consecutive indexes. Dropping it zeroes the range in
//!   every block and returns it to a free list, so tests that build and drop many registries do
//!   not grow the index space. At most [`MAX_CELLS`] are live; a range that would go past that
//!   is "spilled": its writes are dropped and it reads zero (never a wrong count for another
//!   owner).
//! - **Blocks.** A thread's block is a table of [`PAGE_CELLS`]-cell pages, each allocated by
//!   the owning thread the first time it writes into it and published through an `AtomicPtr`,
//!   so a reader sees either no page (all zero) or a whole zeroed-then-written page.
//! - **The registry lock.** One `Mutex` holds the live blocks, the allocator and the retired
//!   totals. A thread takes it at its first write (to register its block), at its exit, and
//!   never in between; scrapes and range allocation take it too. At thread exit the block's
//!   values are added to the retired totals and the block is unregistered in one critical
//!   section, and a scrape sums retired + live blocks inside the lock: an exited thread's counts
//!   are kept exactly and never counted twice.
//!
//! Every cell only grows between allocation and release, so sums are monotonic across scrapes.
//! A gauge (in flight) is two such counters, started and ended, whose difference is read.

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Cells of one page: 8 KiB of `u64`s.
pub(crate) const PAGE_CELLS: usize = 1024;
const PAGES: usize = 2048;
/// The most cells live at once (2 Mi: about 50 000 HTTP pairs or 100 000 function sites).
pub(crate) const MAX_CELLS: usize = PAGE_CELLS * PAGES;

type Page = [AtomicU64; PAGE_CELLS];

/// One thread's cells. Written only by its thread (and zeroed under the registry lock for
/// ranges no owner uses any more); read by scrapes under the registry lock.
struct Block {
    pages: Box<[AtomicPtr<Page>]>,
}

impl Block {
    fn new() -> Block {
        Block {
            pages: (0..PAGES).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect(),
        }
    }

    /// The cell at `index`, if its page exists.
    fn cell(&self, index: usize) -> Option<&AtomicU64> {
        let page = self.pages.get(index / PAGE_CELLS)?.load(Ordering::Acquire);
        // SAFETY: a non-null pointer was stored by `page_for_write` from `Box::into_raw` of a
        // page that is freed only in `Drop for Block`, which needs `&mut self`: the page lives
        // at least as long as this `&self` borrow.
        unsafe { page.as_ref() }.map(|page| &page[index % PAGE_CELLS])
    }

    /// Page `page_index`, allocating it; `None` past [`MAX_CELLS`] (a spilled range). Called by
    /// the owning thread only, so no other thread can be allocating the same page.
    #[inline]
    fn page_for_write(&self, page_index: usize) -> Option<&Page> {
        let slot = self.pages.get(page_index)?;
        let mut page = slot.load(Ordering::Acquire);
        if page.is_null() {
            page = Self::new_page(slot);
        }
        // SAFETY: as in `cell`: the page was published from `Box::into_raw` and lives until
        // the block is dropped.
        Some(unsafe { &*page })
    }

    #[cold]
    fn new_page(slot: &AtomicPtr<Page>) -> *mut Page {
        let page: Box<Page> = Box::new([const { AtomicU64::new(0) }; PAGE_CELLS]);
        let page = Box::into_raw(page);
        // Release: a reader that sees the pointer sees the zeroed page behind it.
        slot.store(page, Ordering::Release);
        page
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        for slot in self.pages.iter_mut() {
            let page = *slot.get_mut();
            if !page.is_null() {
                // SAFETY: the pointer came from `Box::into_raw` in `new_page` and is freed only
                // here, once, with no other reference to the block left (`&mut self`).
                drop(unsafe { Box::from_raw(page) });
            }
        }
    }
}

/// What the registry lock guards.
struct State {
    blocks: Vec<Arc<Block>>,
    /// The totals of threads that have exited, by index.
    retired: Vec<u64>,
    /// The first index never handed out.
    next: usize,
    /// Released ranges, `(base, len)`, reused by the next owner of the same length.
    free: Vec<(usize, usize)>,
}

static STATE: Mutex<State> = Mutex::new(State {
    blocks: Vec::new(),
    retired: Vec::new(),
    next: 0,
    free: Vec::new(),
});

fn state() -> MutexGuard<'static, State> {
    // Nothing under the lock leaves the state inconsistent if it panics: keep going.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The calling thread's block, registered at its first write and folded into the retired
/// totals at its exit.
struct Local {
    block: Arc<Block>,
}

impl Local {
    #[cold]
    fn register() -> Local {
        let block = Arc::new(Block::new());
        state().blocks.push(Arc::clone(&block));
        Local { block }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // From here on this thread's writes go to the retired totals (`add_many_slow`).
        let _ = BLOCK.try_with(|b| b.set(std::ptr::null()));
        let mut state = state();
        let state = &mut *state;
        for (page_index, slot) in self.block.pages.iter().enumerate() {
            if slot.load(Ordering::Acquire).is_null() {
                continue;
            }
            let base = page_index * PAGE_CELLS;
            let end = (base + PAGE_CELLS).min(state.next);
            if state.retired.len() < end {
                state.retired.resize(end, 0);
            }
            for index in base..end {
                if let Some(cell) = self.block.cell(index) {
                    state.retired[index] += cell.load(Ordering::Relaxed);
                }
            }
        }
        state.blocks.retain(|b| !Arc::ptr_eq(b, &self.block));
    }
}

thread_local! {
    static LOCAL: Local = Local::register();
    /// The calling thread's block while `LOCAL` lives, else null: a const-initialised
    /// thread-local without a destructor, so the hot path is one thread-relative load.
    static BLOCK: Cell<*const Block> = const { Cell::new(std::ptr::null()) };
}

/// Adds `value` to cell `index` of the calling thread.
#[inline]
fn add(index: usize, value: u64) {
    add_many(index, &[(0, value)]);
}

/// Adds each `(offset, value)` to cell `base + offset` of the calling thread: one thread-local
/// access for the several cells one call or request records.
#[inline]
pub(crate) fn add_many(base: usize, adds: &[(usize, u64)]) {
    let block = BLOCK.with(Cell::get);
    if block.is_null() {
        return add_many_slow(base, adds);
    }
    // SAFETY: `BLOCK` is non-null only while this thread's `LOCAL` lives (set in `first_write`,
    // cleared first thing in `Drop for Local`), and `LOCAL` holds an `Arc` of the block.
    let block = unsafe { &*block };
    // A range never straddles a page (`allocate`): one page lookup for all its cells.
    let Some(page) = block.page_for_write(base / PAGE_CELLS) else {
        return; // spilled
    };
    let first = base % PAGE_CELLS;
    for &(offset, value) in adds {
        if let Some(cell) = page.get(first + offset) {
            // The only writer of this cell: load and store, no read-modify-write.
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(value),
                Ordering::Relaxed,
            );
        }
    }
}

/// The first write of a thread registers its block; a write after its exit began goes to the
/// retired totals.
#[cold]
fn add_many_slow(base: usize, adds: &[(usize, u64)]) {
    let registered = LOCAL.try_with(|local| BLOCK.with(|b| b.set(Arc::as_ptr(&local.block))));
    if registered.is_ok() && !BLOCK.with(Cell::get).is_null() {
        add_many(base, adds);
    } else {
        for &(offset, value) in adds {
            add_after_exit(base + offset, value);
        }
    }
}

/// A write from a thread whose block is already gone (another thread-local's destructor
/// recording a call): straight into the retired totals.
#[cold]
fn add_after_exit(index: usize, value: u64) {
    let mut state = state();
    if index < state.next {
        if state.retired.len() <= index {
            state.retired.resize(index + 1, 0);
        }
        state.retired[index] += value;
    }
}

/// A range of cells owned by one metric owner. Dropping it releases the range.
#[derive(Debug)]
pub(crate) struct Cells {
    base: usize,
    len: usize,
}

impl Cells {
    /// Allocates `len` zeroed cells.
    pub(crate) fn new(len: usize) -> Cells {
        Cells {
            base: allocate(len),
            len,
        }
    }

    /// Adds `value` to cell `i` of the range, in the calling thread's block.
    #[inline]
    pub(crate) fn add(&self, i: usize, value: u64) {
        debug_assert!(i < self.len);
        if i < self.len {
            add(self.base + i, value);
        }
    }

    /// Adds each `(i, value)` to cell `i` of the range (offsets must be below `len`).
    #[inline]
    pub(crate) fn add_many(&self, adds: &[(usize, u64)]) {
        debug_assert!(adds.iter().all(|&(i, _)| i < self.len));
        add_many(self.base, adds);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Cells {
    fn drop(&mut self) {
        release(self.base, self.len);
    }
}

/// Allocates `len` cells (at most [`PAGE_CELLS`]), within one page, and returns their base
/// index ([`MAX_CELLS`] when full: spilled).
pub(crate) fn allocate(len: usize) -> usize {
    let mut state = state();
    if let Some(at) = state.free.iter().position(|&(_, l)| l == len) {
        return state.free.swap_remove(at).0;
    }
    // A range lies within one page, so a write looks its page up once.
    let in_page = state.next % PAGE_CELLS;
    let base = if in_page + len > PAGE_CELLS {
        state.next - in_page + PAGE_CELLS
    } else {
        state.next
    };
    if len > PAGE_CELLS || base + len > MAX_CELLS {
        return MAX_CELLS; // spilled: writes dropped, reads zero
    }
    state.next = base + len;
    base
}

fn release(base: usize, len: usize) {
    if base >= MAX_CELLS {
        return;
    }
    let mut state = state();
    // No owner writes these cells any more: zero them everywhere for the next owner.
    for block in &state.blocks {
        for index in base..base + len {
            if let Some(cell) = block.cell(index) {
                cell.store(0, Ordering::Relaxed);
            }
        }
    }
    let end = (base + len).min(state.retired.len());
    for value in state.retired.get_mut(base..end).into_iter().flatten() {
        *value = 0;
    }
    state.free.push((base, len));
}

/// A consistent reading of all threads' cells: holds the registry lock, so threads neither
/// register nor exit while it lives (recording threads that are registered go on writing).
pub(crate) struct Reader {
    state: MutexGuard<'static, State>,
}

/// Takes the registry lock for a scrape. Hold it for as short as the rendering allows.
pub(crate) fn reader() -> Reader {
    Reader { state: state() }
}

impl Reader {
    /// Sums every thread's cells of `cells` into `out` (`out.len()` cells from the start).
    pub(crate) fn sum(&self, cells: &Cells, out: &mut [u64]) {
        self.sum_at(cells.base, out);
    }

    /// Sums the cells `base..base + out.len()`.
    pub(crate) fn sum_at(&self, base: usize, out: &mut [u64]) {
        out.fill(0);
        if base >= MAX_CELLS {
            return;
        }
        let retired = &self.state.retired;
        for (i, value) in out.iter_mut().enumerate() {
            *value = retired.get(base + i).copied().unwrap_or(0);
        }
        for block in &self.state.blocks {
            for (i, value) in out.iter_mut().enumerate() {
                if let Some(cell) = block.cell(base + i) {
                    *value = value.wrapping_add(cell.load(Ordering::Relaxed));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn read(cells: &Cells) -> Vec<u64> {
        let mut out = vec![0; cells.len()];
        reader().sum(cells, &mut out);
        out
    }

    #[test]
    fn sums_many_threads_exactly_including_exited_ones() {
        let cells = Arc::new(Cells::new(3));
        let threads: Vec<_> = (0..16u64)
            .map(|t| {
                let cells = Arc::clone(&cells);
                std::thread::spawn(move || {
                    // Half the threads exit early, after few writes; their counts must stay.
                    let n = if t % 2 == 0 { 10 } else { 20_000 };
                    for _ in 0..n {
                        cells.add(0, 1);
                        cells.add(2, t);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let expected_calls = 8 * 10 + 8 * 20_000;
        let expected_weighted: u64 = (0..16u64).map(|t| t * if t % 2 == 0 { 10 } else { 20_000 }).sum();
        assert_eq!(read(&cells), vec![expected_calls, 0, expected_weighted]);
        // A second read counts nothing twice.
        assert_eq!(read(&cells), vec![expected_calls, 0, expected_weighted]);
    }

    #[test]
    fn sums_stay_monotonic_while_writers_run_and_exit() {
        let cells = Arc::new(Cells::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (cells, stop) = (Arc::clone(&cells), Arc::clone(&stop));
                std::thread::spawn(move || {
                    // Writers come and go: each generation exits and a new thread takes over.
                    let mut written = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let cells = Arc::clone(&cells);
                        written += std::thread::spawn(move || {
                            for _ in 0..1000 + w * 100 {
                                cells.add(0, 1);
                            }
                            1000 + w * 100
                        })
                        .join()
                        .unwrap();
                    }
                    written
                })
            })
            .collect();
        let mut last = 0;
        for _ in 0..200 {
            let now = read(&cells)[0];
            assert!(now >= last, "went backwards: {last} -> {now}");
            last = now;
        }
        stop.store(true, Ordering::Relaxed);
        let total: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(read(&cells)[0], total);
    }

    #[test]
    fn released_ranges_are_zeroed_and_reused() {
        let first = Cells::new(5);
        first.add(4, 7);
        std::thread::spawn({
            let base = first.base;
            move || add(base + 1, 3) // an exited thread's count, in the retired totals
        })
        .join()
        .unwrap();
        assert_eq!(read(&first), vec![0, 3, 0, 0, 7]);
        let base = first.base;
        drop(first);
        // Ranges of this length are taken concurrently by other tests: allocate until ours
        // comes back, which it must, since it is on the free list.
        let mut taken = Vec::new();
        let again = loop {
            let cells = Cells::new(5);
            if cells.base == base {
                break cells;
            }
            assert!(taken.len() < 1000, "the released range was not reused");
            taken.push(cells);
        };
        assert_eq!(read(&again), vec![0; 5]);
    }

    #[test]
    fn a_spilled_range_drops_writes_and_reads_zero() {
        let spilled = Cells {
            base: MAX_CELLS,
            len: 2,
        };
        spilled.add(1, 5);
        assert_eq!(read(&spilled), vec![0, 0]);
    }

    #[test]
    fn ranges_never_straddle_a_page() {
        // Writes look a range's page up once: each range must lie within one page.
        let ranges: Vec<Cells> = (0..200).map(|i| Cells::new(7 + i % 60)).collect();
        for r in &ranges {
            assert!(r.base % PAGE_CELLS + r.len <= PAGE_CELLS, "{r:?}");
            r.add(r.len - 1, 3);
            assert_eq!(read(r)[r.len - 1], 3);
        }
        assert_eq!(
            Cells::new(PAGE_CELLS + 1).base,
            MAX_CELLS,
            "too long for a page: spilled"
        );
    }
}
