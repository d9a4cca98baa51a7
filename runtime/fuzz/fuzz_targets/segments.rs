//! A partition's files on disk through recovery (after a crash or a clean shutdown), reads, time lookups, compaction and an append: see `sluice::fuzzing::segments`, where the body lives so that it always builds
//! with the library. Run with `cargo fuzz run segments` (see runtime/fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

fuzz_target!(|data: &[u8]| sluice::fuzzing::segments(data));
