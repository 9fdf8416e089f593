//! The `cart-bench` global allocator: mimalloc (what the services use), plus a count of live
//! heap bytes for the `memory` mode. Counting is off until [`start_counting`]: a shared atomic
//! on every allocation would slow the throughput modes down (measured: ~6% of CPU at
//! concurrency 256).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use mimalloc::MiMalloc;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

pub struct Counting;

/// Count from now on. Bytes allocated before and freed after are subtracted too, so measure
/// differences between two [`allocated`] readings taken while counting, not absolutes.
pub fn start_counting() {
    COUNTING.store(true, Ordering::SeqCst);
}

pub fn is_counting() -> bool {
    COUNTING.load(Ordering::Relaxed)
}

// SAFETY: every call is forwarded to mimalloc unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { MiMalloc.alloc(layout) };
        if !p.is_null() && is_counting() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { MiMalloc.dealloc(ptr, layout) };
        if is_counting() {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() && is_counting() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() && is_counting() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

/// Live heap bytes counted since [`start_counting`] (requested sizes; allocator overhead not
/// included).
pub fn allocated() -> isize {
    LIVE.load(Ordering::Relaxed)
}
