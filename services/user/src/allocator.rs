//! glibc malloc tuning, so that memory freed after a hash goes back to the system.
//!
//! Each argon2 hash allocates its 19 MiB block matrix in one piece. glibc serves a piece that
//! large with `mmap` and unmaps it on free, but only while the piece is above the *dynamic*
//! mmap threshold, which glibc raises to the size of every mmapped piece freed (up to 32 MiB):
//! after the first hash, later ones come from the heap of whichever arena the thread uses, and a
//! heap only shrinks from its top, so the memory of a burst stays in the process. And each thread
//! that allocates may get an arena of its own (up to 8 per core). Fixing the threshold at 1 MiB
//! keeps every hash's matrix mmapped (returned on free, whatever the order), and capping the
//! arenas bounds what the many small allocations of a burst of requests can strand.

/// Applies the tuning; a no-op where the allocator is not glibc's. False when glibc rejected
/// it (the caller logs that once its logger exists: the tuning runs before obskit is built).
#[must_use]
pub fn return_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Allocations at least this large are mmapped, and unmapped when freed.
        const MMAP_THRESHOLD_BYTES: libc::c_int = 1024 * 1024;
        /// Arenas: enough that the runtime's and the hash workers' threads seldom wait for
        /// each other on an arena lock, few enough that their free lists stay small.
        const ARENAS: libc::c_int = 4;
        // SAFETY: `mallopt` only sets allocator parameters; glibc documents it as safe to call
        // at any time, from any thread. It returns 0 when a value is rejected, which leaves
        // glibc's default in place (no harm, so the result is only reported).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_ARENA_MAX, ARENAS) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        true
    }
}
