//! The log checked against a model: any sequence of appends, segment rolls, restarts, torn or
//! corrupt tails and retention reads back exactly the acknowledged batches, in order, at the
//! offsets they were given.

use std::fs::OpenOptions;
use std::io::Write;

use proptest::prelude::*;

use super::batch::{self, testing::batch};
use super::{Log, LogConfig};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    Restart,
    /// A clean shutdown (every file fsynced, the log closed) and a start that trusts the
    /// active segment without a scan.
    CleanRestart,
    /// A crash mid-write: garbage (a torn, unacknowledged batch) left at the end of the file.
    TornTail(Vec<u8>),
    /// A whole batch written but with a bad CRC (bit rot of an unacknowledged write).
    CorruptTail,
    Retain {
        keep_bytes: u16,
    },
    /// A power loss before the flusher reached a sealed segment: the segment (picked by
    /// `pick` among the sealed ones) loses its bytes from `cut` on. What it held from there is
    /// gone, and so is everything after it; everything before it must survive.
    LoseUnflushed {
        pick: u8,
        cut: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..5)
            .prop_map(Op::Append),
        1 => Just(Op::Restart),
        1 => Just(Op::CleanRestart),
        1 => proptest::collection::vec(any::<u8>(), 1..80).prop_map(Op::TornTail),
        1 => Just(Op::CorruptTail),
        1 => (0u16..2000).prop_map(|keep_bytes| Op::Retain { keep_bytes }),
        1 => (any::<u8>(), 0u16..400).prop_map(|(pick, cut)| Op::LoseUnflushed { pick, cut }),
    ]
}

fn log_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

fn active_log_file(dir: &std::path::Path) -> std::path::PathBuf {
    log_files(dir).pop().unwrap()
}

/// Reads every batch from `from`, returning (base offset, values) per record.
pub(super) fn read_all(log: &Log, from: i64) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    while let Some(slice) = log.plan_read(next).unwrap() {
        let data = slice.read(1000, true).unwrap();
        assert!(!data.is_empty());
        let mut rest = &data[..];
        while !rest.is_empty() {
            let h = batch::parse_header(rest).unwrap();
            let one = &rest[..h.size];
            batch::validate(one).unwrap();
            let set = crate::records::decode_batches(bytes::Bytes::copy_from_slice(one)).unwrap();
            for r in set {
                if r.offset >= next {
                    out.push((r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default()));
                }
            }
            next = h.last_offset() + 1;
            rest = &rest[h.size..];
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes: 300, index_interval_bytes: 100, ..LogConfig::default() };
        let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
        // The model: every acknowledged record, by offset.
        let mut model: Vec<(i64, Vec<u8>)> = Vec::new();
        for op in ops {
            match op {
                Op::Append(values) => {
                    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
                    let b = batch(&refs, 1000);
                    let parsed = batch::split_batches(&b).unwrap();
                    let at = log.append(&b, &parsed, 0).unwrap();
                    prop_assert_eq!(at.last_offset - at.base_offset + 1, values.len() as i64);
                    for (i, v) in values.into_iter().enumerate() {
                        model.push((at.base_offset + i as i64, v));
                    }
                }
                Op::Restart => {
                    drop(log);
                    log = Log::open(dir.path(), cfg.clone()).unwrap();
                }
                Op::CleanRestart => {
                    super::flush::wait_idle();
                    let trusted = log.close_cleanly().unwrap();
                    prop_assert!(trusted);
                    let b = batch(&[b"after close"], 1000);
                    let parsed = batch::split_batches(&b).unwrap();
                    prop_assert!(log.append(&b, &parsed, 0).is_err(), "a closed log took a write");
                    drop(log);
                    log = Log::open_after(dir.path(), cfg.clone(), true).unwrap();
                }
                Op::TornTail(garbage) => {
                    drop(log);
                    let mut f = OpenOptions::new().append(true).open(active_log_file(dir.path())).unwrap();
                    f.write_all(&garbage).unwrap();
                    drop(f);
                    log = Log::open(dir.path(), cfg.clone()).unwrap();
                }
                Op::CorruptTail => {
                    drop(log);
                    let mut b = batch(&[b"unacknowledged"], 1000);
                    let n = b.len();
                    b[n - 3] ^= 0x5a;
                    let mut f = OpenOptions::new().append(true).open(active_log_file(dir.path())).unwrap();
                    f.write_all(&b).unwrap();
                    drop(f);
                    log = Log::open(dir.path(), cfg.clone()).unwrap();
                }
                Op::LoseUnflushed { pick, cut } => {
                    let logs = log_files(dir.path());
                    if logs.len() < 2 {
                        continue;
                    }
                    let before = log.next_offset();
                    drop(log);
                    // Flush jobs still queued would record a recovery point past the victim.
                    super::flush::wait_idle();
                    let victim = &logs[usize::from(pick) % (logs.len() - 1)];
                    let base: i64 = victim.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                    let len = std::fs::metadata(victim).unwrap().len();
                    OpenOptions::new().write(true).open(victim).unwrap()
                        .set_len(u64::from(cut).min(len)).unwrap();
                    // Whatever the flusher recorded, this segment is now the unflushed one.
                    super::flush::write_recovery_point(dir.path(), base).unwrap();
                    log = Log::open(dir.path(), cfg.clone()).unwrap();
                    let end = log.next_offset();
                    prop_assert!(end >= base, "lost records before the damaged segment");
                    prop_assert!(end <= before);
                    model.retain(|(o, _)| *o < end);
                }
                Op::Retain { keep_bytes } => {
                    let mut c = cfg.clone();
                    c.retention_bytes = i64::from(keep_bytes);
                    log.set_config(c);
                    log.apply_retention(0).unwrap();
                    log.set_config(cfg.clone());
                    let start = log.log_start_offset();
                    model.retain(|(o, _)| *o >= start);
                }
            }
            let expected_next = model.last().map(|(o, _)| o + 1);
            if let Some(n) = expected_next {
                prop_assert_eq!(log.next_offset(), n);
            }
            let start = log.log_start_offset();
            prop_assert_eq!(read_all(&log, start), model.clone());
            // Every offset is found through the indexes (read from its batch on).
            for (o, _) in model.iter().step_by(7) {
                let got = read_all(&log, *o);
                prop_assert!(got.iter().any(|(g, _)| g == o), "offset {} not found", o);
            }
        }
    }
}

#[test]
fn fetch_from_middle_of_log_starts_at_containing_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg).unwrap();
    for i in 0..50u8 {
        let b = batch(&[&[i], &[i, i]], 1000 + i64::from(i));
        let parsed = batch::split_batches(&b).unwrap();
        log.append(&b, &parsed, 0).unwrap();
    }
    assert!(log.segment_count() > 3);
    for target in [0, 1, 37, 38, 99] {
        let slice = log.plan_read(target).unwrap().unwrap();
        let data = slice.read(10, true).unwrap();
        let h = batch::parse_header(&data).unwrap();
        assert!(h.base_offset <= target && target <= h.last_offset());
    }
    assert!(log.plan_read(100).unwrap().is_none());
    let (_, base) = log.plan_time_lookup(1020).unwrap().unwrap();
    assert_eq!(base, 40);
    assert!(log.plan_time_lookup(5000).unwrap().is_none());
}

/// Rolling hands the sealed segment to the flusher, which moves the recovery point past it;
/// a sealed segment rolled after the recorded point is CRC-checked at start-up, and the log
/// ends where its damage begins.
#[test]
fn unflushed_segments_are_checked_and_the_log_ends_at_their_damage() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    let mut model = Vec::new();
    for i in 0..12u32 {
        let v = format!("record {i:03} with some padding to fill segments");
        let b = batch(&[v.as_bytes()], 1000);
        let at = log
            .append(&b, &batch::split_batches(&b).unwrap(), 0)
            .unwrap();
        model.push((at.base_offset, v.into_bytes()));
    }
    let bases = log.segment_bases();
    assert!(bases.len() >= 4, "{bases:?}");
    let last = *bases.last().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while super::flush::read_recovery_point(dir.path()) != Some(last) {
        assert!(
            std::time::Instant::now() < deadline,
            "the flusher never caught up"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(log);

    // Flip a byte inside the records of the second segment's first batch (its CRC no longer
    // matches) and pretend the flusher had not reached that segment yet.
    let victim = bases[1];
    let path = dir
        .path()
        .join(format!("{}.log", super::segment::file_stem(victim)));
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len().min(100);
    bytes[n - 10] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    super::flush::write_recovery_point(dir.path(), victim).unwrap();

    let mut log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.next_offset(), victim);
    assert_eq!(log.segment_bases(), vec![bases[0], victim]);
    for later in &bases[2..] {
        let p = dir
            .path()
            .join(format!("{}.log", super::segment::file_stem(*later)));
        assert!(!p.exists(), "{} should be deleted", p.display());
    }
    model.retain(|(o, _)| *o < victim);
    assert_eq!(read_all(&log, 0), model);
    let b = batch(&[b"after recovery"], 1000);
    let at = log
        .append(&b, &batch::split_batches(&b).unwrap(), 0)
        .unwrap();
    assert_eq!(at.base_offset, victim);
}

/// Records without timestamps (-1, or 0 as some clients send) age from when their segment
/// was written, not from 1970: retention must not delete them at its first pass.
#[test]
fn records_without_timestamps_age_from_their_write_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: 3_600_000,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg).unwrap();
    for ts in [-1, 0] {
        let b = batch(&[b"no time"], ts);
        log.append(&b, &batch::split_batches(&b).unwrap(), 0)
            .unwrap();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(log.apply_retention(now).unwrap(), 0);
    assert_eq!(read_all(&log, 0).len(), 2);
    // Two hours on, they are past the one-hour retention.
    assert_eq!(log.apply_retention(now + 7_200_000).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 2);
}

/// DeleteRecords moves the log start into the middle of a segment; it survives a restart,
/// and whole segments below it are gone.
#[test]
fn delete_records_start_is_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 300,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..10u32 {
        let v = format!("record {i} padded to fill a few segments....");
        let b = batch(&[v.as_bytes()], 1000);
        log.append(&b, &batch::split_batches(&b).unwrap(), 0)
            .unwrap();
    }
    let bases = log.segment_bases();
    let mid = bases[1] + 1;
    assert!(mid < bases[2], "{bases:?}");
    assert_eq!(log.delete_records_before(mid).unwrap(), mid);
    assert_eq!(
        log.segment_bases()[0],
        bases[1],
        "the first segment is deleted"
    );
    // Moving it back is a no-op.
    assert_eq!(log.delete_records_before(0).unwrap(), mid);
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.log_start_offset(), mid);
    assert_eq!(log.next_offset(), 10);
}

/// A batch header may claim up to 2^31 - 1 records in a few bytes (produce checks the header
/// and the CRC, not the count). Offsets relative to a segment's base must never pass what the
/// index holds: the log rolls first, and every batch stays findable.
#[test]
fn batches_claiming_huge_offset_ranges_roll_the_segment_instead_of_wrapping_the_index() {
    let dir = tempfile::tempdir().unwrap();
    // An index entry for every batch, so lookups go through the relative offsets.
    let cfg = LogConfig {
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
    let fat = |v: u8| {
        let mut b = batch(&[&[v]], 1000);
        // Claim 2^31 - 1 records: last offset delta 2^31 - 2, count 2^31 - 1.
        b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    };
    let mut bases = Vec::new();
    for v in 0..5u8 {
        let b = if v == 4 { batch(&[&[v]], 1000) } else { fat(v) };
        let parsed = batch::split_batches(&b).unwrap();
        bases.push(log.append(&b, &parsed, 0).unwrap().base_offset);
    }
    assert!(bases[4] > i64::from(u32::MAX), "{bases:?}");
    for (i, &base) in bases.iter().enumerate() {
        let slice = log.plan_read(base).unwrap().unwrap();
        let data = slice.read(10, true).unwrap();
        let h = batch::parse_header(&data).unwrap();
        assert_eq!(h.base_offset, base, "batch {i} at {base}");
    }
    // And after a restart, rebuilt from the files.
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    for &base in &bases {
        let slice = log.plan_read(base).unwrap().unwrap();
        let h = batch::parse_header(&slice.read(10, true).unwrap()).unwrap();
        assert_eq!(h.base_offset, base);
    }
}

/// A durability sync that fails (an fsync of a pipe fails with EINVAL, standing in for a disk
/// error) publishes nothing as durable and keeps the log from being trusted after a clean
/// shutdown: its segments are checked at the next start.
#[test]
fn a_failed_durability_sync_is_never_taken_for_durable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        flush_messages: 1,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg).unwrap();
    let b = batch(&[b"acknowledged only once durable"], 1000);
    let parsed = batch::split_batches(&b).unwrap();
    log.append(&b, &parsed, 0).unwrap();
    let mut job = log.sync_job().expect("unsynced records");
    let (reader, _writer) = std::io::pipe().unwrap();
    job.files
        .push(std::sync::Arc::new(crate::disk::File::from_os(
            std::fs::File::from(std::os::fd::OwnedFd::from(reader)),
        )));
    assert!(job.run().is_err());
    assert_eq!(log.synced_offset(), 0, "nothing became durable");
    assert!(log.flush_due());
    assert!(!log.close_cleanly().unwrap(), "trusted after a failed sync");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// A span (the batches a fetch sends from the file) covers exactly the bytes `read` returns,
    /// whatever the batch sizes, start offset, limit and KIP-74 first-batch rule; it declines
    /// only when the batches are small.
    #[test]
    fn a_span_is_what_read_returns(
        sizes in proptest::collection::vec((1usize..4, prop_oneof![0usize..200, 10_000usize..40_000]), 1..30),
        from in 0i64..80,
        limit in 0usize..200_000,
        min_one in any::<bool>(),
        below in prop_oneof![Just(i64::MAX), 0i64..80],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes: 300_000, ..LogConfig::default() };
        let mut log = Log::open(dir.path(), cfg).unwrap();
        for (n, len) in sizes {
            let value = vec![7u8; len];
            let values: Vec<&[u8]> = (0..n).map(|_| value.as_slice()).collect();
            let b = batch(&values, 1000);
            let parsed = batch::split_batches(&b).unwrap();
            log.append(&b, &parsed, 0).unwrap();
        }
        let Some(slice) = log.plan_read(from.min(log.next_offset() - 1)).unwrap() else {
            return Ok(());
        };
        let mut data = slice.read(limit, min_one).unwrap();
        data.truncate(batch::before_offset(&data, below));
        if let Some(span) = slice.span(limit, min_one, below).unwrap() {
            prop_assert_eq!(span.range.position, slice.position);
            prop_assert_eq!(span.range.len, data.len());
            prop_assert_eq!(&span.range.read().unwrap()[..], &data[..]);
            let (end, records) = batch::span(&data).unzip();
            prop_assert_eq!(span.records, records.unwrap_or(0));
            prop_assert_eq!(span.end_offset, end);
        } else {
            // Declined: some prefix of eight or more of the batches it would send averages
            // under 16 KiB.
            let mut sizes = Vec::new();
            let mut rest = &data[..];
            while let Ok(h) = batch::parse_header(rest) {
                sizes.push(h.size);
                rest = &rest[h.size.min(rest.len())..];
            }
            let small = (8..=sizes.len())
                .any(|k| sizes[..k].iter().sum::<usize>() / k < 16 * 1024);
            prop_assert!(small, "declined batches of {:?} bytes", sizes);
        }
    }
}

/// Once a segment holds a megabyte it reserves blocks ahead of its appends, and gives back
/// what is left of them when it is sealed; the files' lengths never show them.
#[test]
fn blocks_are_reserved_ahead_and_given_back_at_the_roll() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 8 << 20,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), cfg).unwrap();
    let value = vec![7u8; 64 * 1024];
    let append = |log: &mut Log| {
        let b = batch(&[&value], 1000);
        let parsed = batch::split_batches(&b).unwrap();
        log.append(&b, &parsed, 0).unwrap();
    };
    let first = dir.path().join("00000000000000000000.log");
    let on_disk = |p: &std::path::Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.len(), m.blocks() * 512)
    };
    for _ in 0..48 {
        append(&mut log);
    }
    let (len, blocks) = on_disk(&first);
    assert!(len > 3 << 20 && len < 4 << 20, "{len}");
    assert!(
        blocks >= len + (1 << 20),
        "{blocks} bytes of blocks for {len}"
    );
    // Past 8 MiB the segment rolls: sealed, it keeps no more than its records' blocks.
    for _ in 0..96 {
        append(&mut log);
    }
    let logs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert_eq!(logs, 2);
    let (len, blocks) = on_disk(&first);
    assert!(
        blocks < len + (64 << 10),
        "{blocks} bytes of blocks for {len} once sealed"
    );
}
