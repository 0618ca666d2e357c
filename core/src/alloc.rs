//! The allocator settings the lab's binaries share: mimalloc as the global allocator (each binary
//! declares it, `#[global_allocator] static ALLOCATOR: mimalloc::MiMalloc`), told at start-up to
//! keep what is freed.
//!
//! A training step allocates and frees the same few buffers of megabytes every step. glibc
//! returned them to the OS and faulted them back in each time; mimalloc reuses them, but by
//! default still hands idle memory back ("purges") after a delay, and at the `ntf` size the
//! kernel's page clearing was then ~15% of the training thread (docs/log/2026-11.md, 2026-11-27). Resident
//! memory stays at the run's peak either way.

use std::ffi::{c_int, c_long};

// mimalloc's C API (linked through the `mimalloc` crate); `libmimalloc-sys` declares it only
// behind a feature that needs another crate.
unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_purge_delay` in `mi_option_e` (mimalloc.h, v3 as built by libmimalloc-sys 0.1.49,
/// which Cargo.lock pins): milliseconds before freed memory goes back to the OS, -1 for never.
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// Keeps memory mimalloc has freed for reuse instead of returning it to the OS. Call first thing
/// in `main`, before other threads start (mimalloc's option setters are not thread safe).
pub fn keep_freed_memory() {
    // SAFETY: a plain option setter, called before other threads allocate.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
