//! Keeping freed host memory in the process between training steps.
//!
//! A CPU step allocates and frees the same activations every step. glibc returns freed memory
//! at the top of its heap to the kernel (`M_TRIM_THRESHOLD`, by default twice the adaptive mmap
//! threshold), so the next step page-faults it back in, zeroed: on `configs/bench-cpu.toml` the
//! kernel's share of the step's CPU samples (page faults, page clearing) falls from about 9% to
//! about 4% with the settings below (`perf record`, see BENCHMARKS.md). Raising the trim
//! threshold keeps that memory; pinning the mmap threshold at glibc's own adaptive ceiling
//! (32 MiB on 64-bit) keeps the activations on the heap, as its adaptive rule would after the
//! first step (setting either threshold switches the adaptive rule off).

/// glibc's largest mmap threshold on 64-bit (`DEFAULT_MMAP_THRESHOLD_MAX`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Applies the thresholds to this process's allocator; a no-op off glibc. Returns whether both
/// were accepted.
pub fn keep_freed_host_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; any value is defined behaviour.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn thread_minor_faults() -> i64 {
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid out-pointer for getrusage.
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) }, 0);
        usage.ru_minflt
    }

    /// Allocates, writes every page of and frees `bytes`; returns the page faults it took.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn faults_of_a_step(bytes: usize) -> i64 {
        let before = thread_minor_faults();
        let buffer = std::hint::black_box(vec![1u8; bytes]);
        drop(buffer);
        thread_minor_faults() - before
    }

    /// Without the settings glibc's second step faults all 4096 pages in again.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_freed_activation_is_reused_without_page_faults() {
        assert!(keep_freed_host_memory());
        let bytes = 16 << 20; // 4096 pages, below the mmap threshold
        let pages = (bytes / 4096) as i64;
        let first = faults_of_a_step(bytes);
        let second = faults_of_a_step(bytes);
        assert!(first > pages / 2, "the first step faults its pages in ({first})");
        assert!(second < pages / 10, "the second step reuses them ({second} faults)");
    }
}
