//! A partition with idempotent producers on the simulated disk ([`crate::disk::sim`]): the
//! log, the producer-state snapshots written at each roll, the flusher, power cuts and
//! `kill -9`. After every restart:
//! - the log is a dense prefix of what was appended, holding every record a durability sync
//!   covered;
//! - each producer's next sequence is exactly what its surviving batches say (a snapshot
//!   ahead of the log would make the broker refuse a producer's retry of a lost batch, and
//!   the record would be lost; one behind would let a retry be written twice);
//! - a retried batch is deduplicated when it survived and appended when it did not.

use proptest::prelude::*;

use super::testing::open;
use super::*;
use crate::disk::sim::{Faults, SimDisk};
use crate::log::flush;
use crate::records::{encode_batch_as, Compression, ProducerFields, Record};

const PRODUCERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Produce {
        producer: u8,
        records: u8,
    },
    /// The producer sends its last batch again (it did not see the answer).
    Retry {
        producer: u8,
    },
    Sync,
    Flush {
        jobs: u8,
    },
    FailSync {
        after: u8,
    },
    PowerCut {
        seed: u64,
    },
    ProcessCrash,
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0u8..PRODUCERS as u8;
    prop_oneof![
        10 => (p.clone(), 1u8..6).prop_map(|(producer, records)| Op::Produce { producer, records }),
        2 => p.prop_map(|producer| Op::Retry { producer }),
        3 => Just(Op::Sync),
        3 => (1u8..3).prop_map(|jobs| Op::Flush { jobs }),
        1 => (0u8..6).prop_map(|after| Op::FailSync { after }),
        2 => any::<u64>().prop_map(|seed| Op::PowerCut { seed }),
        1 => Just(Op::ProcessCrash),
    ]
}

struct Sent {
    bytes: Vec<u8>,
    seq: i32,
    /// Where it landed, while it is in the log.
    base: Option<i64>,
}

#[derive(Default)]
struct Model {
    /// Every record appended, by offset.
    written: Vec<String>,
    acked: usize,
    poisoned: bool,
    next_seq: [i32; PRODUCERS],
    /// The broker has state for the producer: a producer it does not know may start at any
    /// sequence (as Kafka since KIP-360); one it knows must go on in order.
    known: [bool; PRODUCERS],
    last: [Option<Sent>; PRODUCERS],
}

fn pid(producer: usize) -> i64 {
    1000 + producer as i64
}

fn idempotent_batch(producer: usize, seq: i32, n: u8) -> (Vec<u8>, Vec<String>) {
    let values: Vec<String> = (0..n)
        .map(|i| format!("p{producer}-s{seq}-{i}-{}", "x".repeat(40)))
        .collect();
    let records: Vec<Record> = values
        .iter()
        .map(|v| Record {
            value: Some(bytes::Bytes::from(v.clone())),
            ..Record::default()
        })
        .collect();
    let b = encode_batch_as(
        &records,
        Compression::None,
        Some(ProducerFields {
            producer_id: pid(producer),
            epoch: 0,
            base_sequence: seq,
        }),
    )
    .unwrap();
    (b.to_vec(), values)
}

/// (offset, value) of every record, and each producer's last sequence, read back.
fn read_back(p: &Partition) -> (Vec<(i64, String)>, [Option<i32>; PRODUCERS]) {
    let mut out = Vec::new();
    let mut last_seq = [None; PRODUCERS];
    let mut next = p.watermarks().log_start;
    loop {
        let (_, Some(slice)) = p.plan_read(next).unwrap() else {
            break;
        };
        let data = slice.read(1 << 20, true).unwrap();
        if data.is_empty() {
            break;
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            let h = batch::validate(&rest[..batch::framed_size(rest).unwrap()]).unwrap();
            if let Some(i) = (0..PRODUCERS).find(|&i| pid(i) == h.producer_id) {
                last_seq[i] = Some(h.base_sequence + h.last_offset_delta);
            }
            let one = bytes::Bytes::copy_from_slice(&rest[..h.size]);
            for r in crate::records::decode_batches(one).unwrap() {
                let v = r.value.map(|v| String::from_utf8_lossy(&v).into_owned());
                out.push((r.offset, v.unwrap_or_default()));
            }
            next = h.last_offset() + 1;
            rest = &rest[h.size..];
        }
    }
    (out, last_seq)
}

fn check_restarted(b: &Broker, m: &mut Model, durable: bool) -> Result<(), TestCaseError> {
    let p = b.topic("t").unwrap().partitions[0].clone();
    let (records, last_seq) = read_back(&p);
    prop_assert_eq!(p.watermarks().log_start, 0);
    prop_assert_eq!(
        records.len() as i64,
        p.watermarks().high,
        "offsets not dense"
    );
    for (i, (offset, value)) in records.iter().enumerate() {
        prop_assert_eq!(*offset, i as i64);
        prop_assert!(
            m.written.get(i) == Some(value),
            "offset {} holds {:?}",
            i,
            value
        );
    }
    prop_assert!(
        records.len() >= m.acked,
        "acknowledged records lost: {} acked, {} left",
        m.acked,
        records.len()
    );
    for (i, last_seq) in last_seq.into_iter().enumerate() {
        prop_assert_eq!(
            p.producer_next_seq(pid(i)),
            last_seq.map(|s| s + 1),
            "producer {}'s state disagrees with its batches in the log",
            i
        );
        m.next_seq[i] = last_seq.map_or(0, |s| s + 1);
        m.known[i] = last_seq.is_some();
        if let Some(sent) = m.last[i].as_mut() {
            if sent.base.is_some_and(|b| b >= records.len() as i64) {
                sent.base = None;
            }
        }
    }
    m.written.truncate(records.len());
    if durable {
        m.acked = records.len();
    }
    m.poisoned = false;
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    flush::manual::enable();
    let d = SimDisk::mount();
    let data = d.root().join("data");
    disk::create_dir_all(&data).unwrap();
    disk::sync_dir(d.root()).unwrap();
    let mut b = open(&data);
    let cfg = TopicConfig::from_pairs([("segment.bytes", "1024")]).unwrap();
    b.create_topic("t", 1, cfg, false).unwrap();
    let mut m = Model::default();
    for op in ops {
        let p = b.topic("t").unwrap().partitions[0].clone();
        match op {
            Op::Produce { producer, records } => {
                let i = usize::from(producer);
                let seq = m.next_seq[i];
                let (bytes, values) = idempotent_batch(i, seq, records);
                if let Ok(at) = p.append(&bytes, 1 << 20, None) {
                    prop_assert_eq!(at.base_offset, m.written.len() as i64);
                    m.written.extend(values);
                    m.next_seq[i] += i32::from(records);
                    m.known[i] = true;
                    m.last[i] = Some(Sent {
                        bytes,
                        seq,
                        base: Some(at.base_offset),
                    });
                }
            }
            Op::Retry { producer } => {
                let i = usize::from(producer);
                let Some(sent) = m.last[i].as_mut() else {
                    continue;
                };
                let r = p.append(&sent.bytes, 1 << 20, None);
                match sent.base {
                    Some(base) => {
                        let at = r.map_err(|e| TestCaseError::fail(format!("{e}")))?;
                        prop_assert_eq!(at.base_offset, base, "a retry was written twice");
                        prop_assert_eq!(p.watermarks().high, m.written.len() as i64);
                    }
                    // Lost in a cut: taken again if it is next in line.
                    None if sent.seq == m.next_seq[i] || !m.known[i] => {
                        let at = r.map_err(|e| TestCaseError::fail(format!("{e}")))?;
                        prop_assert_eq!(at.base_offset, m.written.len() as i64);
                        let n = (at.last_offset - at.base_offset + 1) as usize;
                        let (_, values) = idempotent_batch(i, sent.seq, n as u8);
                        m.written.extend(values);
                        m.next_seq[i] = sent.seq + n as i32;
                        m.known[i] = true;
                        sent.base = Some(at.base_offset);
                    }
                    None => prop_assert!(r.is_err(), "a batch out of sequence was taken"),
                }
            }
            Op::Sync => match p.sync_now() {
                Ok(()) if !m.poisoned => m.acked = m.written.len(),
                Ok(()) => {}
                Err(_) => m.poisoned = true,
            },
            Op::Flush { jobs } => {
                flush::manual::run(usize::from(jobs));
            }
            Op::FailSync { after } => d.arm(Faults {
                fail_sync_after: Some(u64::from(after)),
                ..Faults::default()
            }),
            Op::PowerCut { seed } => {
                drop(p);
                drop(b);
                flush::manual::drop_queued();
                d.power_off();
                d.power_on(seed);
                b = open(&data);
                check_restarted(&b, &mut m, true)?;
            }
            Op::ProcessCrash => {
                drop(p);
                drop(b);
                flush::manual::drop_queued();
                d.arm(Faults::default());
                b = open(&data);
                check_restarted(&b, &mut m, false)?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("SIM_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48)
    ))]
    #[test]
    fn producers_and_their_log_survive_power_cuts(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}

/// Durable mode (`flush.messages` 1, internal logs fsynced): a transaction whose commit was
/// answered survives any power cut whole. The coordinator's `CompleteCommit` is only written
/// once the partitions' markers are on disk; before that, a cut could keep the record and the
/// coordinator's word but lose the marker, and the partition came back with the transaction
/// open for good (its last stable offset stuck below the record).
#[test]
fn a_committed_transaction_survives_power_cuts_whole() {
    for seed in 0..24u64 {
        let d = SimDisk::mount();
        let data = d.root().join("data");
        disk::create_dir_all(&data).unwrap();
        disk::sync_dir(d.root()).unwrap();
        let mut config = BrokerConfig::with_defaults(data.clone());
        config.durable_internal_logs = true;
        let b = Broker::open(config.clone()).unwrap();
        let cfg = TopicConfig::from_pairs([("flush.messages", "1")]).unwrap();
        b.create_topic("t", 1, cfg, false).unwrap();
        let p = b.topic("t").unwrap().partitions[0].clone();
        let (pid, epoch) = b.txns.init_producer_id(&b, "x", (-1, -1), 60_000).unwrap();
        b.txns
            .add_partitions("x", pid, epoch, &[("t".to_string(), 0)])
            .unwrap();
        super::testing::txn_produce(&b, "t", 0, pid, epoch, 0).unwrap();
        // Acknowledged as a durable produce is: once synced.
        p.sync_now().unwrap();
        b.txns.end(&b, "x", pid, epoch, true, false).unwrap();
        drop(p);
        drop(b);
        d.power_off();
        d.power_on(seed);
        let b = Broker::open(config).unwrap();
        assert_eq!(
            b.txns.describe("x").unwrap().phase,
            crate::txn::state::Phase::CompleteCommit,
            "seed {seed}"
        );
        let p = b.topic("t").unwrap().partitions[0].clone();
        let wm = p.watermarks();
        assert_eq!(
            (wm.stable, wm.high),
            (2, 2),
            "seed {seed}: the record and its marker, nothing left open"
        );
        assert!(p.aborted_between(0, 2).is_empty(), "seed {seed}");
    }
}
