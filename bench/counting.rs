//! A counting global allocator for the bench examples (`memory`, `allocs`): the system allocator
//! with counters, so a figure says what the code asks for, apart from the rounding and
//! fragmentation RSS adds. Each example declares it its `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Counting;

/// Allocations made (a `realloc` counts as one), ever.
pub static MADE: AtomicUsize = AtomicUsize::new(0);
/// Bytes asked for (a `realloc` its new size), ever.
pub static BYTES_MADE: AtomicUsize = AtomicUsize::new(0);
/// Allocations and bytes live now.
pub static LIVE: AtomicUsize = AtomicUsize::new(0);
pub static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

pub fn read(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::Relaxed)
}

// SAFETY: every call is passed on to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        MADE.fetch_add(1, Ordering::Relaxed);
        BYTES_MADE.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        MADE.fetch_add(1, Ordering::Relaxed);
        BYTES_MADE.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
