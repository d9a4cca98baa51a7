//! Any bytes as a partition's files on disk (segments, their offset and time indexes and the
//! recovery point): opening the log, reading it end to end, looking up times and appending
//! after recovery must return errors or truncate, never panic or allocate from a claimed
//! length. Segment files are input from outside: a disk can hand back anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::log::{flush, Log, LogConfig};

#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

/// Splits `data` into pieces, each prefixed by a 2-byte big-endian length.
fn pieces(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < 10 {
        let n = (usize::from(data[0]) << 8 | usize::from(data[1])).min(data.len() - 2);
        out.push(&data[2..2 + n]);
        data = &data[2 + n..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let segments = usize::from(data[0] % 3) + 1;
    let stride = i64::from(data[1]) * 7;
    let recovery = i64::from(data[2]) * 5;
    let parts = pieces(&data[3..]);
    let Ok(dir) = tempfile::tempdir() else { return };
    for s in 0..segments {
        let stem = dir.path().join(format!("{:020}", s as i64 * stride));
        for (k, ext) in ["log", "index", "timeindex"].iter().enumerate() {
            let bytes = parts.get(s * 3 + k).copied().unwrap_or_default();
            let _ = std::fs::write(stem.with_extension(ext), bytes);
        }
    }
    let _ = flush::write_recovery_point(dir.path(), recovery);
    let cfg = LogConfig {
        segment_bytes: 512,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let Ok(mut log) = Log::open(dir.path(), cfg) else { return };
    let mut next = log.log_start_offset();
    let mut rounds = 0;
    while let Ok(Some(slice)) = log.plan_read(next) {
        let Ok(bytes) = slice.read(4096, true) else { break };
        let Some((end, _)) = sluice::log::batch::span(&bytes) else { break };
        if end <= next || rounds > 10_000 {
            break;
        }
        next = end;
        rounds += 1;
    }
    let _ = log.plan_time_lookup(i64::from(data[1]) << 4);
    let _ = log.scan_headers(0, |_| {});
    if let Some(extra) = parts.get(9) {
        if let Ok(batches) = sluice::log::batch::split_batches(extra) {
            let _ = log.append(extra, &batches, 0);
        }
    }
});
