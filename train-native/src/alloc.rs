//! Allocator settings for the tensor workloads of this binary.
//!
//! glibc serves blocks above its mmap threshold with fresh mappings and gives
//! freed heap tops back to the OS, so each of a training step's thousands of
//! multi-megabyte activations was faulted in and zeroed by the kernel anew:
//! a third of the step time (perf: `clear_page_erms`, TLB shootdowns). Raising
//! both thresholds keeps freed blocks for reuse; peak memory is unchanged.

/// Keep freed memory in the process for reuse (glibc on Linux; elsewhere a no-op).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
