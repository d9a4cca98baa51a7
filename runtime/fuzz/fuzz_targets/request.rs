//! One Kafka request frame (header and body) through the protocol dispatcher: see `sluice::fuzzing::request`, where the body lives so that it always builds
//! with the library. Run with `cargo fuzz run request` (see runtime/fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

fuzz_target!(|data: &[u8]| sluice::fuzzing::request(data));
