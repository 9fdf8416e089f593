//! The `cart-bench` global allocator: mimalloc (what the services use), plus a count of live
//! heap bytes for the `memory` mode. Counting is off until [`start_counting`]: a shared atomic
//! on every allocation would slow the throughput modes down (measured: ~6% of CPU at
//! concurrency 256).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use mimalloc::MiMalloc;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Bytes allocated while counting, never decreased: whether this allocator counts at all is
/// read from it, since frees on other threads move [`LIVE`] down at any time.
static ALLOCATED_EVER: AtomicIsize = AtomicIsize::new(0);
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
            counted(layout.size());
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
            counted(layout.size());
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

fn counted(size: usize) {
    LIVE.fetch_add(size as isize, Ordering::Relaxed);
    ALLOCATED_EVER.fetch_add(size as isize, Ordering::Relaxed);
}

/// Bytes allocated (never minus frees) since [`start_counting`]: a probe allocation moves it
/// only when this allocator is the global one.
pub fn allocated_ever() -> isize {
    ALLOCATED_EVER.load(Ordering::Relaxed)
}

/// Fails unless this allocator is the global one (the `cart-bench` binary; not a library
/// test), counting since [`start_counting`]. Read from [`allocated_ever`], not [`allocated`]:
/// frees on other threads of memory allocated before counting began move that one down
/// meanwhile, and a check on it failed now and then in a run of the binary.
pub fn ensure_installed() -> anyhow::Result<()> {
    let before = allocated_ever();
    let probe = std::hint::black_box(Box::new([0u8; 4096]));
    let counted = allocated_ever() - before;
    drop(probe);
    anyhow::ensure!(
        counted >= 4096,
        "the counting allocator is not installed (run the cart-bench binary)"
    );
    Ok(())
}

/// Live heap bytes counted since [`start_counting`] (requested sizes; allocator overhead not
/// included).
pub fn allocated() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    /// A library test runs on the system allocator: the memory mode says so instead of
    /// reporting zero bytes per cart.
    #[test]
    fn without_the_counting_allocator_the_memory_mode_refuses_to_measure() {
        super::start_counting();
        let e = super::ensure_installed().unwrap_err();
        assert!(e.to_string().contains("not installed"), "{e}");
    }
}
