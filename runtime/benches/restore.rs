//! How long a worker's task takes to get its checkpoint back, host side, for a large plugin
//! state: from the local cache (a restart on the same machine), and from the changelog's
//! chunks (a task that moved to another worker: the records are already fetched here, so
//! this is the assembly and decoding; the fetch itself is the cluster's throughput). The
//! plugin's own `restore` comes on top and depends on the plugin. A benchmark, not a test.
//!
//!   cargo bench -p sluice --bench restore             # MB=100 by default

use std::time::Instant;

use sluice::plugin::checkpoint::{Bin, Checkpoint};
use sluice::worker::changelog::{self, Restore};

fn main() {
    let mb: usize = std::env::var("MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    // Incompressible-looking bytes, as real state mostly is.
    let mut state = vec![0u8; mb << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in state.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let c = Checkpoint {
        producer_id: 0,
        next_offset: 123_456,
        state: Bin(state),
        plugin_version: "bench".into(),
        emitted: Default::default(),
        pending: Vec::new(),
        watermarks: Default::default(),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("0.ckpt");
    let t = Instant::now();
    c.save(&path).expect("save");
    let save = t.elapsed();
    // Best of three, the page cache warm as on a restart.
    let mut load = std::time::Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let back = Checkpoint::load(&path).expect("load").expect("present");
        load = load.min(t.elapsed());
        assert_eq!(back.state.0.len(), mb << 20);
    }
    let t = Instant::now();
    let (entries, head) = changelog::encode("clicks/0", 7, &c, None).expect("encode");
    let encode = t.elapsed();
    let chunks = head.chunks.len();
    // The next commit after 1 KiB of the state changed: only the chunks around it go out.
    let mut changed = c.clone();
    changed.state.0[(mb << 19)..(mb << 19) + 1024].fill(0);
    let t = Instant::now();
    let (delta, _) =
        changelog::encode("clicks/0", 8, &changed, Some(&head.keys("clicks/0"))).expect("encode");
    let delta_time = t.elapsed();
    let delta_bytes: usize = delta
        .iter()
        .filter_map(|e| e.1.as_ref())
        .map(Vec::len)
        .sum();
    // A restart also checks that the head kept beside the cache is the cache's own, to know
    // which chunks are live without reading the changelog.
    let t = Instant::now();
    let live = changelog::live_if_matches("clicks/0", &c, &head);
    let check = t.elapsed();
    assert!(live.is_some());
    let mut assemble = std::time::Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut r = Restore::default();
        for (k, v) in &entries {
            r.record("clicks/0", k.as_bytes(), v.as_deref());
        }
        let (back, _) = r.finish().expect("whole").expect("found");
        assemble = assemble.min(t.elapsed());
        assert_eq!(back.next_offset, 123_456);
    }
    println!("checkpoint of {mb} MiB of plugin state:");
    println!(
        "  save to the local cache (fsync)      {:>8.0} ms",
        save.as_secs_f64() * 1e3
    );
    println!(
        "  restore from the local cache          {:>8.0} ms",
        load.as_secs_f64() * 1e3
    );
    println!(
        "  check the cache's head (live chunks)  {:>8.0} ms",
        check.as_secs_f64() * 1e3
    );
    println!(
        "  encode as {chunks} changelog chunks       {:>8.0} ms",
        encode.as_secs_f64() * 1e3
    );
    println!(
        "  restore from the changelog's chunks   {:>8.0} ms",
        assemble.as_secs_f64() * 1e3
    );
    println!(
        "  next commit, 1 KiB changed: {} records, {:.1} KiB  {:>8.0} ms",
        delta.len(),
        delta_bytes as f64 / 1024.0,
        delta_time.as_secs_f64() * 1e3
    );
}
