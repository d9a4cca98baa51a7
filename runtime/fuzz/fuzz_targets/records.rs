//! Any bytes as stored batches: header parsing, CRC checks and record decoding (with every
//! codec) must return an error, never panic or allocate from a claimed count.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

fuzz_target!(|data: &[u8]| {
    let _ = sluice::log::batch::split_batches(data);
    let _ = sluice::records::decode_batches(bytes::Bytes::copy_from_slice(data));
});
