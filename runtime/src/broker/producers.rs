//! Idempotent-producer state of one partition: a pure state machine, no I/O.
//!
//! For every producer id seen on the partition it remembers the epoch and the last few batches'
//! sequence ranges and offsets, so that:
//! - a retried batch (same epoch and sequence range as one already written) is acknowledged
//!   with its original offsets and not written again;
//! - a batch that skips or repeats sequences gets `OUT_OF_ORDER_SEQUENCE_NUMBER`;
//! - a batch from an older epoch than the partition has seen gets `INVALID_PRODUCER_EPOCH`.
//!
//! The rules follow Kafka's (`ProducerStateManager`): a new epoch must start at sequence 0
//! unless the producer is unknown here (its state may have expired), sequences wrap from
//! `i32::MAX` to 0, and the last [`RECENT_BATCHES`] batches are kept for duplicate detection,
//! which matches clients' cap of 5 in-flight requests per connection under idempotence.
//!
//! Transactions: a transactional batch opens its producer's transaction on the partition (if
//! none is open); a marker (commit or abort) closes it. The last stable offset (LSO) is the
//! first offset of the oldest open transaction, or the high watermark when none is open;
//! read_committed readers see nothing at or past it. Aborted transactions are remembered as
//! (producer, first offset, marker offset), so a read_committed fetch can tell the client
//! which records to drop, as Kafka's `.txnindex` does.
//!
//! The state is rebuilt at start-up from a snapshot taken when a segment rolls plus the batch
//! headers of the active segment ([`ProducerStates::apply`] replays them).

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

pub const RECENT_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    epoch: i16,
    recent: VecDeque<BatchMeta>,
    /// Wall-clock ms of the last append, for expiry.
    last_seen_ms: i64,
}

/// A transaction that was aborted on this partition: readers in read_committed mode drop the
/// producer's records from `first_offset` up to the marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it.
    Append,
    /// Already written: acknowledge with these offsets, write nothing.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
    OutOfOrder {
        expected: i32,
        got: i32,
    },
    Fenced {
        current: i16,
        got: i16,
    },
}

/// The producer fields of one batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    /// Records in the batch minus one.
    pub last_offset_delta: i32,
    pub transactional: bool,
}

impl ProducerBatch {
    pub fn last_seq(&self) -> i32 {
        let s = i64::from(self.first_seq) + i64::from(self.last_offset_delta);
        // Sequences wrap at i32::MAX, as the clients do.
        if s > i64::from(i32::MAX) {
            (s - i64::from(i32::MAX) - 1) as i32
        } else {
            s as i32
        }
    }
    fn is_idempotent(&self) -> bool {
        self.producer_id >= 0 && self.first_seq >= 0
    }
}

fn next_seq(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

impl Entry {
    fn new(epoch: i16, now_ms: i64) -> Entry {
        Entry {
            epoch,
            recent: VecDeque::with_capacity(RECENT_BATCHES),
            last_seen_ms: now_ms,
        }
    }

    /// Takes a written batch into account.
    fn advance(&mut self, b: &ProducerBatch, base_offset: i64, now_ms: i64) {
        if b.epoch != self.epoch {
            self.epoch = b.epoch;
            self.recent.clear();
        }
        if self.recent.len() == RECENT_BATCHES {
            self.recent.pop_front();
        }
        self.recent.push_back(BatchMeta {
            first_seq: b.first_seq,
            last_seq: b.last_seq(),
            base_offset,
            last_offset: base_offset + i64::from(b.last_offset_delta),
        });
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
    }
}

/// What to do with an idempotent batch from a producer whose state here is `e`.
fn verdict(e: Option<&Entry>, b: &ProducerBatch) -> Verdict {
    let Some(e) = e else {
        // Unknown here (new, or its state expired): any starting sequence is accepted.
        return Verdict::Append;
    };
    if b.epoch < e.epoch {
        return Verdict::Fenced {
            current: e.epoch,
            got: b.epoch,
        };
    }
    if b.epoch > e.epoch {
        return if b.first_seq == 0 {
            Verdict::Append
        } else {
            Verdict::OutOfOrder {
                expected: 0,
                got: b.first_seq,
            }
        };
    }
    let last_seq = b.last_seq();
    if let Some(d) = e
        .recent
        .iter()
        .find(|m| m.first_seq == b.first_seq && m.last_seq == last_seq)
    {
        return Verdict::Duplicate {
            base_offset: d.base_offset,
            last_offset: d.last_offset,
        };
    }
    let expected = e.recent.back().map(|m| next_seq(m.last_seq)).unwrap_or(0);
    if b.first_seq == expected {
        Verdict::Append
    } else {
        Verdict::OutOfOrder {
            expected,
            got: b.first_seq,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, Entry>,
    /// Producer id -> first offset of its open transaction here.
    #[serde(default)]
    ongoing: BTreeMap<i64, i64>,
    /// Aborted transactions, in marker order (so sorted by `last_offset`).
    #[serde(default)]
    aborted: VecDeque<AbortedTxn>,
}

impl ProducerStates {
    pub fn check(&self, b: &ProducerBatch) -> Verdict {
        if !b.is_idempotent() {
            return Verdict::Append;
        }
        verdict(self.producers.get(&b.producer_id), b)
    }

    /// Checks the batches of one request in order, each as if those before it were written,
    /// without changing anything: a request is written whole or refused whole. Only the
    /// producers the request names are copied, so a request costs the same however many
    /// producers the partition remembers.
    pub fn check_all(
        &self,
        batches: impl IntoIterator<Item = ProducerBatch>,
    ) -> Result<(), super::AppendError> {
        let mut written: HashMap<i64, Entry> = HashMap::new();
        for b in batches {
            if !b.is_idempotent() {
                continue;
            }
            let e = written
                .get(&b.producer_id)
                .or_else(|| self.producers.get(&b.producer_id));
            match verdict(e, &b) {
                Verdict::Append => {
                    let mut e = e.cloned().unwrap_or_else(|| Entry::new(b.epoch, 0));
                    e.advance(&b, 0, 0);
                    written.insert(b.producer_id, e);
                }
                Verdict::Duplicate { .. } => {}
                Verdict::OutOfOrder { expected, got } => {
                    return Err(super::AppendError::OutOfOrderSequence {
                        producer_id: b.producer_id,
                        expected,
                        got,
                    })
                }
                Verdict::Fenced { current, got } => {
                    return Err(super::AppendError::InvalidProducerEpoch {
                        producer_id: b.producer_id,
                        current,
                        got,
                    })
                }
            }
        }
        Ok(())
    }

    /// Records a written batch (after `check` said `Append`, or while replaying the log).
    pub fn apply(&mut self, b: &ProducerBatch, base_offset: i64, now_ms: i64) {
        if b.transactional && b.producer_id >= 0 {
            self.ongoing.entry(b.producer_id).or_insert(base_offset);
        }
        if !b.is_idempotent() {
            return;
        }
        self.producers
            .entry(b.producer_id)
            .or_insert_with(|| Entry::new(b.epoch, now_ms))
            .advance(b, base_offset, now_ms);
    }

    /// Forgets the least recently seen producers once more than `max` are remembered (never
    /// one with a transaction open), so a client that makes up a producer id per batch cannot
    /// grow the partition's state without bound. It cuts down to nine tenths of `max`, so the
    /// selection is paid once per `max / 10` new producers. A forgotten producer is treated as
    /// one whose state expired: its next batch is accepted at any sequence. Returns how many
    /// were forgotten.
    pub fn cap(&mut self, max: usize) -> usize {
        if self.producers.len() <= max {
            return 0;
        }
        let keep = max - max / 10;
        let mut idle: Vec<(i64, i64)> = self
            .producers
            .iter()
            .filter(|(pid, _)| !self.ongoing.contains_key(pid))
            .map(|(&pid, e)| (e.last_seen_ms, pid))
            .collect();
        let n = idle.len().min(self.producers.len() - keep);
        if n == 0 {
            return 0;
        }
        if n < idle.len() {
            idle.select_nth_unstable(n - 1);
        }
        for (_, pid) in &idle[..n] {
            self.producers.remove(pid);
        }
        n
    }

    /// Records a transaction marker written at `offset`: the producer's open transaction (if
    /// any) ends. A marker carries the producer's epoch as the coordinator knows it, so it also
    /// fences older epochs here.
    pub fn apply_marker(&mut self, producer_id: i64, epoch: i16, commit: bool, offset: i64) {
        if let Some(first_offset) = self.ongoing.remove(&producer_id) {
            if !commit {
                self.aborted.push_back(AbortedTxn {
                    producer_id,
                    first_offset,
                    last_offset: offset,
                });
            }
        }
        if let Some(e) = self.producers.get_mut(&producer_id) {
            if epoch > e.epoch {
                e.epoch = epoch;
                e.recent.clear();
            }
        }
    }

    /// The epoch this partition last saw from `producer_id`.
    /// Forgets the aborted transactions `keep` refuses: the cleaner removed their markers
    /// (after their records), and a reader told of an aborted transaction skips its
    /// producer's records until the marker, so a stale entry would hide later commits.
    pub fn retain_aborted(&mut self, keep: impl FnMut(&AbortedTxn) -> bool) {
        self.aborted.retain(keep);
    }

    pub fn epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    /// Whether `producer_id` has a transaction open on this partition.
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        self.ongoing.contains_key(&producer_id)
    }

    /// First offset of the oldest open transaction: the last stable offset, if any is open.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.values().min().copied()
    }

    /// Open transactions: (producer id, first offset).
    pub fn open_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing.iter().map(|(&p, &o)| (p, o))
    }

    /// The aborted transactions a read of `[from, to)` must know about: those whose records
    /// may lie in it.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted
            .range(start..)
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets producers idle for longer than `max_idle_ms` (Kafka's
    /// `producer.id.expiration.ms`, one day by default), except those with a transaction open,
    /// and aborted transactions wholly below `log_start`.
    pub fn expire(&mut self, now_ms: i64, max_idle_ms: i64, log_start: i64) {
        let ongoing = &self.ongoing;
        self.producers.retain(|pid, e| {
            ongoing.contains_key(pid) || now_ms.saturating_sub(e.last_seen_ms) <= max_idle_ms
        });
        while self
            .aborted
            .front()
            .is_some_and(|a| a.last_offset < log_start)
        {
            self.aborted.pop_front();
        }
    }

    /// Producers remembered here: (id, epoch, last sequence, last seen ms).
    pub fn producers(&self) -> impl Iterator<Item = (i64, i16, i32, i64)> + '_ {
        self.producers.iter().map(|(&id, e)| {
            (
                id,
                e.epoch,
                e.recent.back().map_or(-1, |m| m.last_seq),
                e.last_seen_ms,
            )
        })
    }

    /// The sequence the partition expects next from `producer_id`, if it remembers that
    /// producer. Plugin tasks use it to learn how much of their output a crash left written.
    pub fn next_seq(&self, producer_id: i64) -> Option<i32> {
        let e = self.producers.get(&producer_id)?;
        e.recent.back().map(|m| next_seq(m.last_seq))
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pb(pid: i64, epoch: i16, seq: i32, n: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch,
            first_seq: seq,
            last_offset_delta: n - 1,
            transactional: false,
        }
    }

    #[test]
    fn in_order_then_retry_is_a_duplicate() {
        let mut s = ProducerStates::default();
        let b0 = pb(7, 0, 0, 3);
        assert_eq!(s.check(&b0), Verdict::Append);
        s.apply(&b0, 100, 0);
        let b1 = pb(7, 0, 3, 2);
        assert_eq!(s.check(&b1), Verdict::Append);
        s.apply(&b1, 103, 0);
        assert_eq!(
            s.check(&b0),
            Verdict::Duplicate {
                base_offset: 100,
                last_offset: 102
            }
        );
        assert_eq!(
            s.check(&pb(7, 0, 6, 1)),
            Verdict::OutOfOrder {
                expected: 5,
                got: 6
            }
        );
    }

    #[test]
    fn old_epochs_are_fenced_and_new_epochs_restart_at_zero() {
        let mut s = ProducerStates::default();
        s.apply(&pb(1, 3, 0, 1), 0, 0);
        assert_eq!(
            s.check(&pb(1, 2, 1, 1)),
            Verdict::Fenced { current: 3, got: 2 }
        );
        assert_eq!(s.check(&pb(1, 4, 0, 1)), Verdict::Append);
        assert!(matches!(
            s.check(&pb(1, 4, 5, 1)),
            Verdict::OutOfOrder { .. }
        ));
    }

    #[test]
    fn sequences_wrap() {
        let mut s = ProducerStates::default();
        let b = pb(1, 0, i32::MAX - 1, 2);
        assert_eq!(b.last_seq(), i32::MAX);
        s.apply(&b, 0, 0);
        assert_eq!(s.check(&pb(1, 0, 0, 1)), Verdict::Append);
        let w = pb(1, 0, i32::MAX, 3);
        assert_eq!(w.last_seq(), 1);
    }

    #[test]
    fn a_request_is_checked_batch_after_batch_without_changing_the_state() {
        let mut s = ProducerStates::default();
        s.apply(&pb(1, 0, 0, 2), 0, 0);
        let before = s.clone();
        // 1's next batch, then the one after it, then a new producer: all fine together.
        assert!(s
            .check_all([pb(1, 0, 2, 1), pb(1, 0, 3, 4), pb(9, 0, 0, 1)])
            .is_ok());
        // A gap after a batch that is only in the same request is still a gap.
        assert!(matches!(
            s.check_all([pb(1, 0, 2, 1), pb(1, 0, 5, 1)]),
            Err(super::super::AppendError::OutOfOrderSequence {
                producer_id: 1,
                expected: 3,
                got: 5
            })
        ));
        // A retried batch inside a request is a duplicate, not a gap.
        assert!(s.check_all([pb(1, 0, 0, 2), pb(1, 0, 2, 1)]).is_ok());
        assert!(matches!(
            s.check_all([pb(1, 0, 2, 1), pb(1, 1, 0, 1), pb(1, 0, 3, 1)]),
            Err(super::super::AppendError::InvalidProducerEpoch {
                producer_id: 1,
                current: 1,
                got: 0
            })
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn the_cap_forgets_the_least_recently_seen_but_never_an_open_transaction() {
        let mut s = ProducerStates::default();
        let mut t = pb(0, 0, 0, 1);
        t.transactional = true;
        s.apply(&t, 0, 0); // the oldest, but inside a transaction
        for pid in 1..=100 {
            s.apply(&pb(pid, 0, 0, 1), pid, pid);
        }
        assert_eq!(s.cap(200), 0);
        // 101 remembered, at most 50: cut to 45, the oldest 56 idle ones go.
        assert_eq!(s.cap(50), 56);
        assert_eq!(s.len(), 45);
        let kept: std::collections::BTreeSet<i64> = s.producers().map(|p| p.0).collect();
        assert!(kept.contains(&0), "the open transaction stays");
        assert_eq!(kept.iter().copied().filter(|&p| p > 0).min(), Some(57));
        // A forgotten producer is taken at any sequence, as after expiry.
        assert_eq!(s.check(&pb(3, 0, 17, 1)), Verdict::Append);
        // Nothing but open transactions: nothing can go.
        let mut only = ProducerStates::default();
        for pid in 0..20 {
            let mut t = pb(pid, 0, 0, 1);
            t.transactional = true;
            only.apply(&t, pid, pid);
        }
        assert_eq!(only.cap(10), 0);
    }

    #[test]
    fn non_idempotent_batches_pass_untracked() {
        let mut s = ProducerStates::default();
        let b = pb(-1, -1, -1, 5);
        assert_eq!(s.check(&b), Verdict::Append);
        s.apply(&b, 0, 0);
        assert!(s.is_empty());
    }

    #[test]
    fn transactions_hold_the_stable_offset_and_aborts_are_indexed() {
        let mut s = ProducerStates::default();
        let mut t = pb(1, 0, 0, 2);
        t.transactional = true;
        s.apply(&t, 10, 0);
        let mut u = pb(2, 0, 0, 1);
        u.transactional = true;
        s.apply(&u, 12, 0);
        assert_eq!(s.first_unstable_offset(), Some(10));
        s.apply_marker(1, 0, false, 13);
        assert_eq!(s.first_unstable_offset(), Some(12));
        s.apply_marker(2, 0, true, 14);
        assert_eq!(s.first_unstable_offset(), None);
        let a = AbortedTxn {
            producer_id: 1,
            first_offset: 10,
            last_offset: 13,
        };
        assert_eq!(s.aborted_between(0, 11), vec![a]);
        assert_eq!(s.aborted_between(13, 20), vec![a]);
        assert!(s.aborted_between(14, 20).is_empty());
        assert!(s.aborted_between(0, 10).is_empty());
        // A marker with a newer epoch (the coordinator fenced the producer) fences it here.
        s.apply(&pb(3, 0, 0, 1), 15, 0);
        s.apply_marker(3, 1, false, 16);
        assert!(matches!(s.check(&pb(3, 0, 1, 1)), Verdict::Fenced { .. }));
        s.expire(0, 0, 14);
        assert!(s.aborted_between(0, 100).is_empty());
    }

    proptest! {
        /// Random interleavings of transactional batches and markers from a few producers,
        /// against a model that keeps every open transaction's first offset and every
        /// aborted range: the LSO is the oldest open start, and exactly the aborted ranges
        /// touching a read are reported.
        #[test]
        fn transaction_state_matches_a_model(ops in proptest::collection::vec((0i64..4, 0u8..3), 1..80),
                                             from in 0i64..80, len in 1i64..40) {
            let mut s = ProducerStates::default();
            let mut open: std::collections::BTreeMap<i64, i64> = Default::default();
            let mut aborted = Vec::new();
            for (offset, (pid, op)) in ops.into_iter().enumerate() {
                let offset = offset as i64;
                if op == 0 {
                    let mut b = pb(pid, 0, 0, 1);
                    b.transactional = true;
                    b.first_seq = -1; // sequence rules are checked elsewhere
                    s.apply(&b, offset, 0);
                    open.entry(pid).or_insert(offset);
                } else {
                    let commit = op == 1;
                    s.apply_marker(pid, 0, commit, offset);
                    if let Some(first) = open.remove(&pid) {
                        if !commit {
                            aborted.push(AbortedTxn { producer_id: pid, first_offset: first, last_offset: offset });
                        }
                    }
                }
                prop_assert_eq!(s.first_unstable_offset(), open.values().min().copied());
            }
            let want: Vec<_> = aborted.iter().filter(|a| a.last_offset >= from && a.first_offset < from + len).copied().collect();
            prop_assert_eq!(s.aborted_between(from, from + len), want);
        }
    }

    proptest! {
        /// A producer sending batches in order with arbitrary retries of any of its last five
        /// batches: every first send is appended once, every retry is a duplicate pointing at
        /// the original offsets.
        #[test]
        fn retries_never_write_twice(sizes in proptest::collection::vec(1i32..20, 1..40),
                                     retries in proptest::collection::vec((0usize..40, 0usize..5), 0..40)) {
            let mut s = ProducerStates::default();
            let mut sent: Vec<(ProducerBatch, i64)> = Vec::new();
            let mut seq = 0;
            let mut offset = 0i64;
            for (i, n) in sizes.iter().enumerate() {
                let b = pb(9, 0, seq, *n);
                prop_assert_eq!(s.check(&b), Verdict::Append);
                s.apply(&b, offset, 0);
                sent.push((b, offset));
                seq += n;
                offset += i64::from(*n);
                for &(at, back) in &retries {
                    if at == i && back < sent.len().min(RECENT_BATCHES) {
                        let (rb, ro) = sent[sent.len() - 1 - back];
                        prop_assert_eq!(s.check(&rb), Verdict::Duplicate {
                            base_offset: ro,
                            last_offset: ro + i64::from(rb.last_offset_delta),
                        });
                    }
                }
            }
        }
    }
}
