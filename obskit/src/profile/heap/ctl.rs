//! jemalloc's profiler, through its `mallctl` names (jemalloc(3), "MALLCTL NAMESPACE").
//!
//! `opt.*` are what jemalloc started with (read-only); `prof.active` and `prof.reset` change it
//! at run time. None of these allocate through Rust's allocator.

use std::ffi::{c_char, CString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tikv_jemalloc_ctl::raw;

use super::HeapError;

/// Whether jemalloc started with its profiler (`opt.prof`): only then can it sample.
pub(super) fn started_with_profiling() -> bool {
    // SAFETY: `opt.prof` is a readable bool (jemalloc(3)); the name is NUL-terminated.
    unsafe { raw::read::<bool>(b"opt.prof\0") }.unwrap_or(false)
}

/// Whether cumulative counts are kept (`opt.prof_accum`): the `allocs` view needs them.
pub(super) fn keeps_allocated_counts() -> bool {
    // SAFETY: `opt.prof_accum` is a readable bool.
    unsafe { raw::read::<bool>(b"opt.prof_accum\0") }.unwrap_or(false)
}

/// Whether allocations are being sampled now (`prof.active`).
pub(super) fn sampling() -> bool {
    // SAFETY: `prof.active` is a readable bool.
    unsafe { raw::read::<bool>(b"prof.active\0") }.unwrap_or(false)
}

/// The mean bytes between samples (`2^prof.lg_sample`).
pub(super) fn sample_interval() -> u64 {
    // SAFETY: `prof.lg_sample` is a readable size_t.
    let lg = unsafe { raw::read::<libc::size_t>(b"prof.lg_sample\0") }.unwrap_or(0);
    1u64 << lg.min(63)
}

/// Starts or stops sampling (`prof.active`). Stopping keeps what was sampled.
pub(super) fn set_sampling(on: bool) -> Result<(), HeapError> {
    // SAFETY: `prof.active` is a writable bool.
    unsafe { raw::write(b"prof.active\0", on) }.map_err(|e| HeapError::Failed(e.to_string()))
}

/// Forgets every sample and samples from now on every `2^lg` bytes on average (`prof.reset`).
pub(super) fn reset(lg: u32) -> Result<(), HeapError> {
    let lg = lg as libc::size_t;
    // SAFETY: `prof.reset` is a writable size_t (the new `lg_sample`).
    unsafe { raw::write(b"prof.reset\0", lg) }.map_err(|e| HeapError::Failed(e.to_string()))
}

/// Has jemalloc write its heap dump and returns the text. jemalloc writes only to a file
/// (`prof.dump` takes a path), so the dump goes to a directory made for it alone (mode 0700,
/// under the temporary directory), which is removed afterwards.
pub(super) fn dump() -> Result<String, HeapError> {
    let dir = PrivateDir::create().map_err(|e| {
        HeapError::Failed(format!(
            "could not make a directory for the heap dump under {}: {e}",
            std::env::temp_dir().display()
        ))
    })?;
    let file = dir.path().join("heap");
    let path = CString::new(file.as_os_str().as_encoded_bytes())
        .map_err(|_| HeapError::Failed("the temporary directory's path holds a NUL".into()))?;
    let path_ptr: *const c_char = path.as_ptr();
    // SAFETY: `prof.dump` is a writable `const char *`, a NUL-terminated path that lives
    // across the call.
    unsafe { raw::write(b"prof.dump\0", path_ptr) }
        .map_err(|e| HeapError::Failed(format!("jemalloc could not dump its heap profile: {e}")))?;
    std::fs::read_to_string(&file)
        .map_err(|e| HeapError::Failed(format!("could not read the heap dump back: {e}")))
}

/// A directory of this process's own, removed (with what is in it) when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "obskit-heap-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        // `create`, not `create_all`: a path someone else made first is an error, not reused.
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
