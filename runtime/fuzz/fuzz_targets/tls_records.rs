//! TLS records after the handshake through the record layer's reader: see
//! `sluice::server::tls::fuzz_records`, where the body lives so that it always builds with the
//! library. Run with `cargo fuzz run tls_records` (see runtime/fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

fuzz_target!(|data: &[u8]| sluice::fuzzing::tls_records(data));
