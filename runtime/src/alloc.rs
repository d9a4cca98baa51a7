//! The process allocator: the system allocator, except that huge blocks are reserved lazily.
//!
//! Why: `kafka-protocol` 0.18 sizes `Vec::with_capacity` from array counts read off the wire
//! before checking that the bytes behind them exist. A 30-byte request claiming 2^31 elements
//! asks for hundreds of gigabytes; the system allocator refuses, and Rust aborts the process on
//! a refused allocation, so one bad request would take the broker down. Blocks of at least
//! [`LAZY_THRESHOLD`] are instead mapped with `MAP_NORESERVE`: the kernel hands out address
//! space without committing memory, the decoder fails on the missing bytes a moment later, and
//! the block is unmapped untouched. Real memory is only used for bytes actually written, which
//! are bounded by the request size limit.
//!
//! Invariant: whether a block is ours or the system's is decided by its size alone, which
//! `GlobalAlloc` guarantees is the same at allocation and deallocation.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks this large or larger are mapped lazily. Nothing the broker does legitimately comes
/// near it except decompressing a large batch.
///
/// Under the fuzzer it is 1 MiB: AddressSanitizer poisons and quarantines every block it
/// hands out, so the claimed-length blocks a fuzzed request makes (tens of MiB, never
/// touched) cost it page faults and memsets of their shadow, which had held the request
/// target to a few hundred executions a second. Mapped directly, they cost two syscalls.
pub const LAZY_THRESHOLD: usize = if cfg!(feature = "fuzzing") {
    1 << 20
} else {
    256 << 20
};
const PAGE: usize = 4096;

pub struct LazyHugeAlloc;

fn is_lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_THRESHOLD && layout.align() <= PAGE
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

unsafe impl GlobalAlloc for LazyHugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            // SAFETY: size is non-zero (at least the threshold).
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            // Fresh anonymous mappings are already zeroed.
            // SAFETY: as in `alloc`.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded unchanged.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(&layout) {
            // SAFETY: `ptr` came from `map` with this same size (see the module invariant).
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` forms a valid layout with this alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_lazy(&layout) && !is_lazy(&new_layout) {
            // SAFETY: both blocks belong to the system allocator.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing between allocators (or resizing a mapping): move the bytes.
        // SAFETY: `new_layout` is valid and non-zero-sized when it is lazy; otherwise System
        // handles it.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the copied length and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Tunes glibc's malloc for a broker's traffic, before any thread starts. Fetches allocate
/// and free blocks of up to a megabyte per partition many times a second. With glibc's
/// defaults a freed block at the top of a heap is soon handed back to the kernel (the trim
/// threshold follows the mmap threshold, a few MB), and the next fetch faults the same pages
/// in again and has them zeroed: a third of the broker's CPU when a consumer read 64
/// partitions (`runtime/benches/kafka_bench.sh`, perf). Blocks below 32 MiB now come from the
/// heaps, which keep up to 128 MiB free before trimming, so the pages are reused. The price
/// is that much more resident memory after a burst, per malloc arena.
pub fn tune_system_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_terabyte_costs_nothing_until_touched() {
        let a = LazyHugeAlloc;
        let layout = Layout::from_size_align(1 << 40, 8).unwrap();
        // SAFETY: valid non-zero layout; freed with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null(), "a lazy mapping of 1 TiB should be granted");
            *p = 7;
            assert_eq!(*p, 7);
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn growing_across_the_threshold_keeps_contents() {
        let a = LazyHugeAlloc;
        let small = Layout::from_size_align(1024, 8).unwrap();
        // SAFETY: valid layouts; each block freed once with its own layout.
        unsafe {
            let p = a.alloc(small);
            for i in 0..1024 {
                *p.add(i) = i as u8;
            }
            let q = a.realloc(p, small, LAZY_THRESHOLD + 1);
            assert!(!q.is_null());
            for i in 0..1024 {
                assert_eq!(*q.add(i), i as u8);
            }
            let big = Layout::from_size_align(LAZY_THRESHOLD + 1, 8).unwrap();
            let r = a.realloc(q, big, 512);
            for i in 0..512 {
                assert_eq!(*r.add(i), i as u8);
            }
            a.dealloc(r, Layout::from_size_align(512, 8).unwrap());
        }
    }
}
