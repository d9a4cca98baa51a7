//! The files a plugin host reads: pipeline manifests (written by users) and checkpoints (on
//! disk, possibly damaged). Any bytes must give a value or a clear error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sluice::plugin::manifest::Manifest::parse(
            std::path::Path::new("/plugins/fuzz.toml"),
            text,
        );
    }
    let _ = sluice::plugin::checkpoint::Checkpoint::decode(data);
});
