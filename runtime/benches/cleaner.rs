//! Log cleaner throughput and memory: writes a log of keyed updates (100-byte values over
//! KEYS keys, in 1 MiB segments), then runs compaction passes until it is clean, and prints
//! MB/s of dirty log cleaned and the process's peak memory. A benchmark, not a test.
//!
//!   cargo bench -p sluice --bench cleaner            # MB=512 KEYS=100000 by default
//!   MB=2048 KEYS=1000000 cargo bench -p sluice --bench cleaner

use std::time::Instant;

use bytes::Bytes;
use sluice::log::cleaner::{clean, CleanConfig};
use sluice::log::{batch, flush, Log, LogConfig};
use sluice::records::{encode_batch, Compression, Record};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn main() {
    let mb = env("MB", 512);
    let keys = env("KEYS", 100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config.clone()).expect("open log");
    let value = Bytes::from(vec![b'v'; 100]);
    let mut written = 0u64;
    let mut i = 0u64;
    let started = Instant::now();
    while written < mb << 20 {
        let records: Vec<Record> = (0..100)
            .map(|_| {
                i += 1;
                Record {
                    timestamp: 1,
                    key: Some(Bytes::from(format!("key-{}", i % keys))),
                    value: Some(value.clone()),
                    ..Default::default()
                }
            })
            .collect();
        let b = encode_batch(&records, Compression::None).expect("encode");
        let parsed = batch::split_batches(&b).expect("split");
        log.append(&b, &parsed, 0).expect("append");
        written += b.len() as u64;
    }
    log.force_roll().expect("roll");
    flush::write_recovery_point(dir.path(), log.next_offset()).expect("recovery point");
    let write_s = started.elapsed().as_secs_f64();
    let cfg = CleanConfig {
        min_cleanable_dirty_ratio: 0.0,
        ..CleanConfig::default()
    };
    let rss_before = peak_rss_mb();
    let started = Instant::now();
    let mut passes = 0;
    let (mut before, mut after) = (0u64, 0u64);
    loop {
        let plan = log
            .clean_plan(log.cleaner_checkpoint(), log.next_offset(), 2, &cfg)
            .expect("plan");
        let Some(plan) = plan else { break };
        let Some(c) = clean(&plan, &Vec::new(), 2, &cfg).expect("clean") else {
            break;
        };
        log.swap_cleaned(&c).expect("swap");
        passes += 1;
        if passes == 1 {
            before = c.bytes_before;
        }
        after = c.bytes_after;
        if c.cleaned_to >= log.next_offset() {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wrote {mb} MB of updates over {keys} keys in {write_s:.1} s; cleaned in {passes} pass(es), {secs:.2} s: {:.0} MB/s of dirty log; {} MB -> {} MB; peak RSS {} MB ({} MB before cleaning)",
        (mb as f64) / secs,
        before >> 20,
        after >> 20,
        peak_rss_mb(),
        rss_before
    );
}
