//! Test plugin that misbehaves on demand, to test the host's limits. Value "panic" panics,
//! "loop" spins forever, "oom" allocates 1 MiB blocks until memory runs out; anything else is
//! kept.

use sluice_plugin::Outcome;

sluice_plugin::map!(Poison, |r| {
    match r.value_str() {
        Some("panic") => panic!("poison record at offset {}", r.offset()),
        Some("loop") => spin(),
        Some("oom") => exhaust_memory(),
        _ => Outcome::Keep,
    }
});

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        // Opaque to the optimiser, so the loop stays a loop.
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn exhaust_memory() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Filled with a non-zero byte so every page is really touched.
        blocks.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
}
