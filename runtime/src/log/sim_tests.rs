//! The log, its flusher and its recovery on a simulated disk ([`crate::disk::sim`]): random
//! appends, rolls, durability syncs, armed faults (a failed fsync that drops its writes, a
//! write that fails part way) and power cuts that keep a random, possibly torn, part of what
//! was never synced. After every cut the log must:
//! - hold every record a successful durability sync covered (durable mode: nothing
//!   acknowledged is lost), and every record below the recovery point it had on disk;
//! - be a prefix of what was appended: same offsets, same bytes, every CRC good;
//! - have dense offsets from the start to the end (nothing after a hole survives).

use proptest::prelude::*;

use super::batch::{self, testing::batch};
use super::model_tests::read_all;
use super::{flush, Log, LogConfig};
use crate::disk::{self, sim::Faults, sim::Mount, sim::SimDisk};

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: u8,
        pad: u8,
    },
    /// A durability sync, as a produce in durable mode waits for: on success, every record
    /// appended so far is acknowledged.
    Sync,
    Roll,
    /// The background flusher runs its next `jobs` queued jobs (sealed segments synced,
    /// recovery point moved).
    Flush {
        jobs: u8,
    },
    /// The next sync (or write), after `after` more succeed, fails.
    Fault {
        sync: bool,
        after: u8,
    },
    /// A clean shutdown and a start that trusts the log as the shutdown left it.
    CleanRestart,
    /// The power goes; `seed` picks which unsynced writes made it, and how torn.
    PowerCut {
        seed: u64,
    },
    /// The process dies (`kill -9`) and restarts; the machine stays up, so the page cache
    /// keeps every write, durable or not.
    ProcessCrash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u8..4, any::<u8>()).prop_map(|(records, pad)| Op::Append { records, pad }),
        3 => Just(Op::Sync),
        1 => Just(Op::Roll),
        2 => (1u8..3).prop_map(|jobs| Op::Flush { jobs }),
        1 => (any::<bool>(), 0u8..8).prop_map(|(sync, after)| Op::Fault { sync, after }),
        1 => Just(Op::CleanRestart),
        2 => any::<u64>().prop_map(|seed| Op::PowerCut { seed }),
        1 => Just(Op::ProcessCrash),
    ]
}

struct Model {
    /// Every record an append returned `Ok` for, by offset (the log starts at 0 here).
    written: Vec<Vec<u8>>,
    /// Records below this were covered by a successful durability sync.
    acked: usize,
    /// A durability sync failed: the broker acknowledges nothing more until a restart.
    poisoned: bool,
    seq: u64,
}

/// The log as it reopens, checked against the model; the model then continues from it.
/// `durable`: everything the log holds now is on the disk (after a power cut, or a clean
/// shutdown that synced it all).
fn check_reopened(
    log: &Log,
    m: &mut Model,
    floor: usize,
    durable: bool,
    after: &str,
) -> Result<(), TestCaseError> {
    let got = read_all(log, log.log_start_offset());
    prop_assert_eq!(log.log_start_offset(), 0);
    prop_assert_eq!(
        got.len() as i64,
        log.next_offset(),
        "offsets not dense {}",
        after
    );
    for (i, (offset, value)) in got.iter().enumerate() {
        prop_assert_eq!(*offset, i as i64);
        prop_assert!(
            m.written.get(i) == Some(value),
            "offset {} {} holds what was never appended there",
            i,
            after
        );
    }
    prop_assert!(
        got.len() >= m.acked,
        "acknowledged records lost {}: {} acked, {} left",
        after,
        m.acked,
        got.len()
    );
    prop_assert!(
        got.len() >= floor,
        "records below the recovery point ({}) lost {}: {} left",
        floor,
        after,
        got.len()
    );
    m.written.truncate(got.len());
    if durable {
        m.acked = got.len();
    }
    m.poisoned = false;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("SIM_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(96)
    ))]
    #[test]
    fn the_log_survives_power_cuts_on_a_simulated_disk(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}

/// A log directory on a fresh simulated disk (its entry durable, as a created topic's is),
/// with the flusher run by hand, and small segments so that histories roll often.
fn mounted_log_dir() -> (Mount, std::path::PathBuf, LogConfig) {
    flush::manual::enable();
    let d = SimDisk::mount();
    let dir = d.root().join("topic-0");
    disk::create_dir_all(&dir).unwrap();
    disk::sync_dir(d.root()).unwrap();
    let cfg = LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 120,
        ..LogConfig::default()
    };
    (d, dir, cfg)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (d, dir, cfg) = mounted_log_dir();
    let mut log = Log::open(&dir, cfg.clone()).unwrap();
    let mut m = Model {
        written: Vec::new(),
        acked: 0,
        poisoned: false,
        seq: 0,
    };
    for op in ops {
        match op {
            Op::Append { records, pad } => {
                let values: Vec<Vec<u8>> = (0..records)
                    .map(|i| {
                        m.seq += 1;
                        let mut v = format!("{}:{}:", m.seq, i).into_bytes();
                        v.resize(v.len() + usize::from(pad), b'a' + (m.seq % 26) as u8);
                        v
                    })
                    .collect();
                let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
                let b = batch(&refs, 1000);
                let parsed = batch::split_batches(&b).unwrap();
                // A failed write is refused, never half-taken.
                if let Ok(at) = log.append(&b, &parsed, 0) {
                    prop_assert_eq!(at.base_offset, m.written.len() as i64);
                    m.written.extend(values);
                }
            }
            Op::Sync => {
                if let Some(job) = log.sync_job() {
                    match job.run() {
                        Ok(()) => {
                            log.synced(&job);
                            if !m.poisoned {
                                m.acked = job.upto as usize;
                            }
                        }
                        Err(_) => {
                            m.poisoned = true;
                        }
                    }
                }
            }
            Op::Roll => {
                let _ = log.force_roll();
            }
            Op::Flush { jobs } => {
                flush::manual::run(usize::from(jobs));
            }
            Op::Fault { sync, after } => {
                let after = Some(u64::from(after));
                d.arm(if sync {
                    Faults {
                        fail_sync_after: after,
                        ..Faults::default()
                    }
                } else {
                    Faults {
                        fail_write_after: after,
                        ..Faults::default()
                    }
                });
            }
            Op::CleanRestart => {
                flush::wait_idle();
                // A shutdown whose syncs failed is not clean: the next start checks all.
                let trusted = log.close_cleanly().unwrap_or(false);
                drop(log);
                d.arm(Faults::default());
                log = Log::open_after(&dir, cfg.clone(), trusted).unwrap();
                // Nothing is lost by a shutdown: the page cache still holds it all.
                let all = m.written.len();
                check_reopened(&log, &mut m, all, trusted, "after a shutdown")?;
            }
            Op::ProcessCrash => {
                drop(log);
                flush::manual::drop_queued();
                d.arm(Faults::default());
                log = Log::open(&dir, cfg.clone()).unwrap();
                let all = m.written.len();
                check_reopened(&log, &mut m, all, false, "after a process crash")?;
            }
            Op::PowerCut { seed } => {
                drop(log);
                // The process dies with the machine: queued flushes never run.
                flush::manual::drop_queued();
                d.power_off();
                d.power_on(seed);
                let floor = flush::read_recovery_point(&dir).unwrap_or(0).max(0) as usize;
                log = Log::open(&dir, cfg.clone()).unwrap();
                check_reopened(&log, &mut m, floor, true, "after a power cut")?;
            }
        }
    }
    Ok(())
}

/// Cases the property test found, kept as they were shrunk.
#[test]
fn found_cases() {
    let ap = |records, pad| Op::Append { records, pad };
    let cases = vec![vec![
        ap(1, 0),
        ap(1, 0),
        ap(1, 0),
        ap(1, 0),
        ap(1, 0),
        ap(1, 0),
        ap(1, 0),
        ap(1, 0),
        ap(1, 0),
        ap(1, 0),
        ap(1, 50),
        ap(1, 0),
        ap(1, 0),
        Op::Sync,
        Op::PowerCut { seed: 0 },
        ap(1, 112),
        ap(2, 163),
        Op::Flush { jobs: 1 },
        Op::PowerCut {
            seed: 11892462443061927859,
        },
        ap(2, 0),
        Op::PowerCut {
            seed: 3911304581226832624,
        },
    ]];
    let cases = cases.into_iter().chain([vec![
        ap(1, 0),
        ap(2, 221),
        Op::ProcessCrash,
        ap(1, 0),
        Op::Flush { jobs: 1 },
        Op::PowerCut {
            seed: 2513810646561840235,
        },
    ]]);
    for ops in cases {
        run(ops).unwrap();
    }
}

/// A flush racing a failed fsync of the same segment (they share the kernel's error state)
/// may write a recovery point past the segment the failure emptied; start-up checks from the
/// failed base the marker records. The simulated disk drops whole writes, which leaves short
/// files that even the trusted path catches by their structure, so this checks the outcome
/// (the log reopens whole and dense), not which path got there.
#[test]
fn after_a_failed_fsync_and_a_racing_recovery_point_the_log_reopens_whole() {
    let (d, dir, cfg) = mounted_log_dir();
    let mut log = Log::open(&dir, cfg.clone()).unwrap();
    let b = batch(&[&[b'x'; 200][..], &[b'y'; 200][..]], 1000);
    for _ in 0..3 {
        let parsed = batch::split_batches(&b).unwrap();
        log.append(&b, &parsed, 0).unwrap();
    }
    // The durability sync's fsync fails and drops the sealed segments' writes ...
    d.arm(Faults {
        fail_sync_after: Some(0),
        ..Faults::default()
    });
    let job = log.sync_job().unwrap();
    assert!(job.run().is_err());
    // ... while the flusher, whose fsync "succeeded", records a recovery point past them.
    flush::write_recovery_point(&dir, log.next_offset()).unwrap();
    drop(log);
    flush::manual::drop_queued();
    d.power_off();
    d.power_on(3);
    let log = Log::open(&dir, cfg).unwrap();
    // What reopens is whole: every batch read back passes its CRC (read_all checks), and
    // the offsets are dense.
    let got = read_all(&log, log.log_start_offset());
    assert_eq!(got.len() as i64, log.next_offset() - log.log_start_offset());
}
