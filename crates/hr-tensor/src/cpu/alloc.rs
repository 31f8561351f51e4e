//! Host allocator tuning for training processes.

/// Serves every host allocation from the heap and keeps freed memory for reuse (glibc:
/// `M_MMAP_MAX = 0`, `M_TRIM_THRESHOLD` = the largest value). glibc's default maps each block
/// above a threshold (at most 32 MiB) with `mmap` and unmaps it on free, so every training step
/// page-faults and zero-fills its large activation buffers again; with this setting they come
/// from memory freed by the previous step (CPU training step, 2 cores: tiny at batch 32
/// 0.77 -> 0.60 s, paper-base at batch 8 14.9 -> 12.2 s; docs/PERF.md section 2). The process keeps its peak resident size until it exits, which
/// suits a training or evaluation job. Returns whether the setting took effect (false on
/// other C libraries, where nothing changes). Call once, early in `main`.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; valid at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
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
    #[test]
    fn keep_freed_memory_applies_on_glibc_and_allocations_still_work() {
        let applied = super::keep_freed_memory();
        assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
        // A large block (above glibc's default mmap threshold) is served and freed normally.
        let v = vec![1u8; 64 << 20];
        assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
    }
}
