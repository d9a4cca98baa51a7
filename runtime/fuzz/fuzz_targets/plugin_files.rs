//! Plugin manifests and checkpoints as read from the plugins and data directories: see `sluice::fuzzing::plugin_files`, where the body lives so that it always builds
//! with the library. Run with `cargo fuzz run plugin_files` (see runtime/fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

fuzz_target!(|data: &[u8]| sluice::fuzzing::plugin_files(data));
