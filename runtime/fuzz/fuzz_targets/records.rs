//! Record batches through header validation and record decoding with every codec: see `sluice::fuzzing::records`, where the body lives so that it always builds
//! with the library. Run with `cargo fuzz run records` (see runtime/fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

fuzz_target!(|data: &[u8]| sluice::fuzzing::records(data));
