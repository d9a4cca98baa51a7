//! The rules of one transactional id, as a pure state machine: no I/O, no clock, no locks.
//!
//! Every operation takes the current [`Txn`] and returns either an error or the value to
//! persist next (raft-rs style: the shell in `mod.rs` writes it to the transaction log, then
//! acts on it). Phases follow Kafka's `TransactionState`:
//!
//! ```text
//!            AddPartitions/AddOffsets
//!   Empty ─────────────────────────────▶ Ongoing ──EndTxn(commit)──▶ PrepareCommit ──▶ CompleteCommit
//!     ▲  CompleteCommit/CompleteAbort ─▶   │  └────EndTxn(abort)/timeout/fence──▶ PrepareAbort ──▶ CompleteAbort
//!     └────────── InitProducerId ──────────┘ (an Ongoing one is aborted first, with a bumped epoch)
//! ```
//!
//! Invariants:
//! - A `Prepare*` value is persisted before any marker is written, and markers are written
//!   for every partition of the transaction before the `Complete*` value is persisted; so
//!   after a crash, a `Prepare*` value says exactly what is left to do, and doing it again is
//!   harmless (a partition writes a marker only while the producer has a transaction open).
//! - The epoch never decreases for a producer id; a fence (InitProducerId of a new instance,
//!   a timeout) bumps it, so the old instance's requests and batches are refused.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Kafka's `transaction.max.timeout.ms` default: longer timeouts are refused.
pub const MAX_TIMEOUT_MS: i32 = 15 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl Phase {
    /// The name Kafka's DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::Ongoing => "Ongoing",
            Phase::PrepareCommit => "PrepareCommit",
            Phase::PrepareAbort => "PrepareAbort",
            Phase::CompleteCommit => "CompleteCommit",
            Phase::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn is_prepared(self) -> bool {
        matches!(self, Phase::PrepareCommit | Phase::PrepareAbort)
    }
}

/// An offset a transaction commits for a consumer group when it commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// Everything the coordinator knows about one transactional id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub phase: Phase,
    /// The partitions of the current (or, while `Prepare*`, the ending) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups added with AddOffsetsToTxn, and the offsets staged for each.
    #[serde(with = "as_pairs")]
    pub groups: BTreeMap<String, BTreeMap<(String, i32), PendingOffset>>,
    /// When the current transaction began (wall-clock ms), -1 when none is open.
    pub start_ms: i64,
    pub updated_ms: i64,
    /// Transactions version 2 (KIP-890): the producer id and epoch the last EndTxn was sent
    /// with, before it bumped the epoch; a retry of that EndTxn carries them.
    #[serde(default)]
    pub previous: Option<(i64, i16)>,
}

/// JSON keys are strings, and staged offsets are keyed by (topic, partition): stored as a
/// list of pairs instead.
mod as_pairs {
    use super::PendingOffset;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    type Groups = BTreeMap<String, BTreeMap<(String, i32), PendingOffset>>;
    type Pairs = Vec<(String, Vec<((String, i32), PendingOffset)>)>;

    pub fn serialize<S: Serializer>(g: &Groups, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Pairs = g
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                )
            })
            .collect();
        pairs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Groups, D::Error> {
        let pairs = Pairs::deserialize(d)?;
        Ok(pairs
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect())
    }
}

/// Why a request about a transaction is refused; each is a Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("the producer id does not belong to this transactional id")]
    InvalidProducerIdMapping,
    #[error("the producer was fenced by a newer instance with the same transactional id")]
    ProducerFenced,
    #[error("a transaction of this transactional id is being completed; retry")]
    ConcurrentTransactions,
    #[error("the request is not valid in the transaction's current state")]
    InvalidTxnState,
    #[error("transaction.timeout.ms must be between 1 and {MAX_TIMEOUT_MS}")]
    InvalidTimeout,
}

impl TxnError {
    pub fn code(self) -> i16 {
        match self {
            TxnError::InvalidProducerIdMapping => 49,
            TxnError::ProducerFenced => 90,
            TxnError::ConcurrentTransactions => 51,
            TxnError::InvalidTxnState => 48,
            TxnError::InvalidTimeout => 50,
        }
    }
}

/// What InitProducerId must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitPlan {
    /// A transaction left open by the previous instance, to abort first (in `PrepareAbort`,
    /// with the bumped epoch, so its markers fence the old instance everywhere).
    pub abort_first: Option<Txn>,
    /// The value to persist and answer with.
    pub then: Txn,
}

/// What EndTxn must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndPlan {
    /// A retry of an EndTxn that already completed: answer success, change nothing.
    AlreadyDone,
    /// Persist this `Prepare*` value, then complete it.
    Prepare(Txn),
}

/// The epoch only fencing uses: no client is handed it (a fence from the last epoch goes
/// there, and the next InitProducerId moves to a new producer id), so whoever sends it is not
/// the current instance.
const FENCING_EPOCH: i16 = i16::MAX;

/// The epoch after `epoch`, or `None` when it is exhausted and a new producer id is due.
fn bumped(epoch: i16) -> Option<i16> {
    (epoch < FENCING_EPOCH - 1).then(|| epoch + 1)
}

/// InitProducerId for a transactional id. `existing` is its current value, `req` the
/// producer id and epoch the client sent (KIP-360; -1/-1 for a fresh start), and `fresh_id`
/// a producer id never handed out before, used when there is no value yet or the epoch is
/// exhausted.
pub fn init(
    existing: Option<&Txn>,
    req: (i64, i16),
    timeout_ms: i32,
    now: i64,
    fresh_id: impl FnOnce() -> i64,
) -> Result<InitPlan, TxnError> {
    if timeout_ms <= 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(TxnError::InvalidTimeout);
    }
    let empty = |producer_id, epoch| Txn {
        producer_id,
        epoch,
        timeout_ms,
        phase: Phase::Empty,
        partitions: BTreeSet::new(),
        groups: BTreeMap::new(),
        start_ms: -1,
        updated_ms: now,
        previous: None,
    };
    let Some(t) = existing else {
        return Ok(InitPlan {
            abort_first: None,
            then: empty(fresh_id(), 0),
        });
    };
    if t.phase.is_prepared() {
        return Err(TxnError::ConcurrentTransactions);
    }
    if req.0 >= 0 {
        if req.0 != t.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if req.1 != t.epoch {
            return Err(TxnError::ProducerFenced);
        }
    }
    let (abort_first, epoch) = if t.phase == Phase::Ongoing {
        let a = t.fence(now);
        // An abort at the fencing epoch: the new instance moves to a new producer id.
        let e = (a.epoch != FENCING_EPOCH).then_some(a.epoch);
        (Some(a), e)
    } else {
        (None, bumped(t.epoch))
    };
    let then = match epoch {
        Some(e) => empty(t.producer_id, e),
        None => empty(fresh_id(), 0),
    };
    Ok(InitPlan { abort_first, then })
}

impl Txn {
    /// Whether a client sending `epoch` is the current instance.
    fn holds(&self, epoch: i16) -> bool {
        epoch == self.epoch && epoch != FENCING_EPOCH
    }

    fn check(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if !self.holds(epoch) {
            return Err(TxnError::ProducerFenced);
        }
        if self.phase.is_prepared() {
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok(())
    }

    /// The same value with a transaction open (a no-op if one already is).
    fn opened(&self, now: i64) -> Txn {
        let mut t = self.clone();
        if t.phase != Phase::Ongoing {
            t.phase = Phase::Ongoing;
            t.partitions.clear();
            t.groups.clear();
            t.start_ms = now;
        }
        t.updated_ms = now;
        t
    }

    /// AddPartitionsToTxn: `None` when nothing changes (every partition is already in).
    pub fn add_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        parts: &[(String, i32)],
        now: i64,
    ) -> Result<Option<Txn>, TxnError> {
        self.check(producer_id, epoch)?;
        if self.phase == Phase::Ongoing && parts.iter().all(|p| self.partitions.contains(p)) {
            return Ok(None);
        }
        let mut t = self.opened(now);
        t.partitions.extend(parts.iter().cloned());
        Ok(Some(t))
    }

    /// AddOffsetsToTxn.
    pub fn add_group(
        &self,
        producer_id: i64,
        epoch: i16,
        group: &str,
        now: i64,
    ) -> Result<Option<Txn>, TxnError> {
        self.check(producer_id, epoch)?;
        if self.phase == Phase::Ongoing && self.groups.contains_key(group) {
            return Ok(None);
        }
        let mut t = self.opened(now);
        t.groups.entry(group.to_string()).or_default();
        Ok(Some(t))
    }

    /// TxnOffsetCommit: stages offsets for `group`, committed with the transaction.
    pub fn stage_offsets(
        &self,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<((String, i32), PendingOffset)>,
        now: i64,
    ) -> Result<Txn, TxnError> {
        self.check(producer_id, epoch)?;
        if self.phase != Phase::Ongoing || !self.groups.contains_key(group) {
            return Err(TxnError::InvalidTxnState);
        }
        let mut t = self.clone();
        t.groups
            .entry(group.to_string())
            .or_default()
            .extend(offsets);
        t.updated_ms = now;
        Ok(t)
    }

    /// Whether a transactional batch from (`producer_id`, `epoch`) may be written to
    /// `partition`: only into an open transaction that added it (KIP-890's verification; a
    /// late batch after the transaction ended would otherwise open a transaction no
    /// coordinator knows of and hang the partition's LSO).
    pub fn verify_produce(
        &self,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), TxnError> {
        self.check(producer_id, epoch)?;
        if self.phase != Phase::Ongoing || !self.partitions.contains(partition) {
            return Err(TxnError::InvalidTxnState);
        }
        Ok(())
    }

    /// EndTxn.
    pub fn end(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<EndPlan, TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        // Not `check`: a retried end of a prepared transaction is answered below.
        if !self.holds(epoch) {
            return Err(TxnError::ProducerFenced);
        }
        match (self.phase, commit) {
            (Phase::Ongoing, _) => {
                let mut t = self.clone();
                t.phase = if commit {
                    Phase::PrepareCommit
                } else {
                    Phase::PrepareAbort
                };
                t.updated_ms = now;
                Ok(EndPlan::Prepare(t))
            }
            (Phase::CompleteCommit, true) | (Phase::CompleteAbort, false) => {
                Ok(EndPlan::AlreadyDone)
            }
            (Phase::PrepareCommit, true) | (Phase::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// EndTxn of transactions version 2 (KIP-890): as [`Txn::end`], but the `Prepare*` value
    /// carries the next epoch, so the markers fence the epoch that wrote the data and the
    /// producer starts its next transaction with the new one (returned by EndTxn). A retry of
    /// the EndTxn that made the last bump is answered as done.
    pub fn end_v2(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<EndPlan, TxnError> {
        let finished = matches!(
            (self.phase, commit),
            (Phase::CompleteCommit, true) | (Phase::CompleteAbort, false)
        );
        if finished && self.previous == Some((producer_id, epoch)) {
            return Ok(EndPlan::AlreadyDone);
        }
        // A version-2 client cannot know whether its produces reached the broker (and so
        // whether they opened a transaction), so it may abort one that never opened: Kafka
        // accepts an abort at the current epoch with nothing open and bumps the epoch, as
        // for any end. franz-go sends one whenever a rebalance comes before its first produce
        // succeeded. A commit there stays INVALID_TXN_STATE.
        let nothing_open = matches!(
            self.phase,
            Phase::Empty | Phase::CompleteCommit | Phase::CompleteAbort
        );
        if !commit && nothing_open && producer_id == self.producer_id && self.holds(epoch) {
            let mut t = self.clone();
            t.phase = Phase::PrepareAbort;
            t.partitions.clear();
            t.groups.clear();
            t.start_ms = now;
            t.updated_ms = now;
            t.previous = Some((producer_id, epoch));
            t.epoch = bumped(t.epoch).unwrap_or(t.epoch);
            return Ok(EndPlan::Prepare(t));
        }
        match self.end(producer_id, epoch, commit, now)? {
            EndPlan::Prepare(mut t) => {
                t.previous = Some((producer_id, epoch));
                // An exhausted epoch is not bumped here; completion moves to a new producer
                // id (see `Coordinator::end`).
                t.epoch = bumped(t.epoch).unwrap_or(t.epoch);
                Ok(EndPlan::Prepare(t))
            }
            // Not a retry of the last EndTxn (checked above): a second EndTxn for a finished
            // transaction in version 2 means the client lost track.
            EndPlan::AlreadyDone => Err(TxnError::InvalidTxnState),
        }
    }

    /// Whether the epoch is spent: the next bump needs a new producer id.
    pub fn epoch_exhausted(&self) -> bool {
        bumped(self.epoch).is_none()
    }

    /// Transactions version 2: a transactional produce (or TxnOffsetCommit) from the current
    /// epoch opens the transaction and adds its partition (or group) by itself, where version
    /// 1 needed AddPartitionsToTxn (AddOffsetsToTxn) first. `None` when nothing changes.
    pub fn add_implicitly(
        &self,
        producer_id: i64,
        epoch: i16,
        partition: Option<&(String, i32)>,
        group: Option<&str>,
        now: i64,
    ) -> Result<Option<Txn>, TxnError> {
        self.check(producer_id, epoch)?;
        let has = |t: &Txn| {
            t.phase == Phase::Ongoing
                && partition.is_none_or(|p| t.partitions.contains(p))
                && group.is_none_or(|g| t.groups.contains_key(g))
        };
        if has(self) {
            return Ok(None);
        }
        let mut t = self.opened(now);
        if let Some(p) = partition {
            t.partitions.insert(p.clone());
        }
        if let Some(g) = group {
            t.groups.entry(g.to_string()).or_default();
        }
        Ok(Some(t))
    }

    /// Aborts the open transaction with a bumped epoch, fencing the instance that opened it
    /// (InitProducerId of a new instance, or the transaction timed out). From the last epoch
    /// a client is handed the abort goes to [`FENCING_EPOCH`], as in Kafka: kept at the same
    /// epoch, the abort's markers would not fence the old instance at the partitions, and it
    /// could go on writing into the new instance's transactions. The next InitProducerId
    /// moves to a new producer id.
    pub fn fence(&self, now: i64) -> Txn {
        let mut t = self.clone();
        t.epoch = t.epoch.saturating_add(1);
        // A retry of the fenced instance's last EndTxn (version 2) is no longer answered as
        // done: that answer hands out the current epoch, the fencing one.
        t.previous = None;
        t.phase = Phase::PrepareAbort;
        t.updated_ms = now;
        t
    }

    /// The value after a `Prepare*` one's markers (and offsets) are written.
    pub fn completed(&self, now: i64) -> Txn {
        let mut t = self.clone();
        t.phase = match self.phase {
            Phase::PrepareCommit => Phase::CompleteCommit,
            Phase::PrepareAbort => Phase::CompleteAbort,
            p => p,
        };
        t.start_ms = -1;
        t.updated_ms = now;
        // As Kafka shows a finished transaction: no partitions, nothing staged.
        t.partitions.clear();
        t.groups.clear();
        t
    }

    /// Whether the open transaction has outlived its timeout.
    pub fn timed_out(&self, now: i64) -> bool {
        self.phase == Phase::Ongoing && now - self.start_ms > i64::from(self.timeout_ms)
    }

    /// Whether the id has been idle, with no transaction open or ending, for `after_ms`.
    pub fn expired(&self, now: i64, after_ms: i64) -> bool {
        matches!(
            self.phase,
            Phase::Empty | Phase::CompleteCommit | Phase::CompleteAbort
        ) && now - self.updated_ms > after_ms
    }

    /// Whether `group`'s offset for `partition` waits on this transaction.
    pub fn stages(&self, group: &str, partition: &(String, i32)) -> bool {
        self.phase != Phase::CompleteCommit
            && self.phase != Phase::CompleteAbort
            && self
                .groups
                .get(group)
                .is_some_and(|g| g.contains_key(partition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(t: &str, i: i32) -> (String, i32) {
        (t.to_string(), i)
    }

    #[test]
    fn a_transaction_runs_and_a_retried_end_is_answered() {
        let t = init(None, (-1, -1), 60_000, 0, || 7).unwrap().then;
        assert_eq!((t.producer_id, t.epoch, t.phase), (7, 0, Phase::Empty));
        let t = t.add_partitions(7, 0, &[p("a", 0)], 1).unwrap().unwrap();
        assert_eq!(t.phase, Phase::Ongoing);
        assert_eq!(t.start_ms, 1);
        assert!(t.add_partitions(7, 0, &[p("a", 0)], 2).unwrap().is_none());
        assert_eq!(t.verify_produce(7, 0, &p("a", 0)), Ok(()));
        assert_eq!(
            t.verify_produce(7, 0, &p("a", 1)),
            Err(TxnError::InvalidTxnState)
        );
        let t = t.add_group(7, 0, "g", 3).unwrap().unwrap();
        let t = t
            .stage_offsets(
                7,
                0,
                "g",
                vec![(
                    p("in", 0),
                    PendingOffset {
                        offset: 5,
                        leader_epoch: -1,
                        metadata: String::new(),
                    },
                )],
                4,
            )
            .unwrap();
        assert!(t.stages("g", &p("in", 0)));
        let EndPlan::Prepare(t) = t.end(7, 0, true, 5).unwrap() else {
            panic!("not prepared")
        };
        assert_eq!(t.phase, Phase::PrepareCommit);
        assert_eq!(
            t.add_partitions(7, 0, &[p("a", 1)], 6),
            Err(TxnError::ConcurrentTransactions)
        );
        let t = t.completed(6);
        assert_eq!(t.phase, Phase::CompleteCommit);
        assert!(!t.stages("g", &p("in", 0)));
        assert_eq!(t.end(7, 0, true, 7), Ok(EndPlan::AlreadyDone));
        assert_eq!(t.end(7, 0, false, 7), Err(TxnError::InvalidTxnState));
        // The next transaction starts afresh.
        let t = t.add_partitions(7, 0, &[p("b", 0)], 8).unwrap().unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert!(t.groups.is_empty());
    }

    #[test]
    fn a_new_instance_fences_the_old_one_and_aborts_its_transaction() {
        let t = init(None, (-1, -1), 60_000, 0, || 3).unwrap().then;
        let t = t.add_partitions(3, 0, &[p("a", 0)], 1).unwrap().unwrap();
        let plan = init(Some(&t), (-1, -1), 60_000, 2, || 99).unwrap();
        let abort = plan.abort_first.unwrap();
        assert_eq!((abort.phase, abort.epoch), (Phase::PrepareAbort, 1));
        assert_eq!((plan.then.producer_id, plan.then.epoch), (3, 1));
        assert_eq!(
            plan.then.add_partitions(3, 0, &[p("a", 0)], 3),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            init(Some(&plan.then), (4, 1), 60_000, 3, || 99),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            init(Some(&plan.then), (-1, -1), 0, 3, || 99),
            Err(TxnError::InvalidTimeout)
        );
    }

    #[test]
    fn a_value_with_staged_offsets_survives_json() {
        let t = init(None, (-1, -1), 1000, 0, || 1).unwrap().then;
        let t = t.add_group(1, 0, "g", 1).unwrap().unwrap();
        let o = PendingOffset {
            offset: 3,
            leader_epoch: 0,
            metadata: "m".into(),
        };
        let t = t.stage_offsets(1, 0, "g", vec![(p("a", 2), o)], 2).unwrap();
        let back: Txn = serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn only_idle_ids_without_an_open_transaction_expire() {
        let t = init(None, (-1, -1), 1000, 0, || 1).unwrap().then;
        assert!(!t.expired(10, 10) && t.expired(11, 10));
        let t = t.add_partitions(1, 0, &[p("a", 0)], 0).unwrap().unwrap();
        assert!(
            !t.expired(1_000_000, 10),
            "an open transaction times out, never expires"
        );
    }

    #[test]
    fn version_2_bumps_the_epoch_at_every_end_and_answers_a_retry() {
        let t = init(None, (-1, -1), 60_000, 0, || 5).unwrap().then;
        let t = t
            .add_implicitly(5, 0, Some(&p("a", 0)), None, 1)
            .unwrap()
            .unwrap();
        assert_eq!(t.phase, Phase::Ongoing);
        assert!(t
            .add_implicitly(5, 0, Some(&p("a", 0)), None, 2)
            .unwrap()
            .is_none());
        let t = t.add_implicitly(5, 0, None, Some("g"), 2).unwrap().unwrap();
        assert!(t.groups.contains_key("g"));
        let EndPlan::Prepare(prep) = t.end_v2(5, 0, true, 3).unwrap() else {
            panic!("not prepared")
        };
        assert_eq!((prep.phase, prep.epoch), (Phase::PrepareCommit, 1));
        let done = prep.completed(4);
        assert_eq!(
            done.end_v2(5, 0, true, 5),
            Ok(EndPlan::AlreadyDone),
            "a retry"
        );
        assert_eq!(done.end_v2(5, 1, true, 5), Err(TxnError::InvalidTxnState));
        // An abort with nothing open is accepted (Kafka's transactions version 2): the epoch
        // moves on, nothing is written, and a retry of it is answered as done.
        let EndPlan::Prepare(empty) = done.end_v2(5, 1, false, 5).unwrap() else {
            panic!("an abort with nothing open was not accepted")
        };
        assert_eq!((empty.phase, empty.epoch), (Phase::PrepareAbort, 2));
        assert!(empty.partitions.is_empty() && empty.groups.is_empty());
        let aborted = empty.completed(5);
        assert_eq!(aborted.end_v2(5, 1, false, 6), Ok(EndPlan::AlreadyDone));
        let EndPlan::Prepare(again) = aborted.end_v2(5, 2, false, 6).unwrap() else {
            panic!("a second abort at the new epoch was not accepted")
        };
        assert_eq!(again.epoch, 3);
        assert_eq!(
            aborted.end_v2(5, 1, true, 6),
            Err(TxnError::ProducerFenced),
            "the old epoch cannot commit"
        );
        // The old epoch is fenced for new work; the new one starts the next transaction.
        assert_eq!(
            done.add_implicitly(5, 0, Some(&p("a", 0)), None, 6),
            Err(TxnError::ProducerFenced)
        );
        let next = done
            .add_implicitly(5, 1, Some(&p("b", 0)), None, 6)
            .unwrap()
            .unwrap();
        assert_eq!(next.partitions.len(), 1);
    }

    #[test]
    fn fencing_at_the_last_epoch_fences_and_moves_to_a_new_producer_id() {
        let mut t = init(None, (-1, -1), 1000, 0, || 1).unwrap().then;
        t.epoch = i16::MAX - 1;
        let t = t
            .add_partitions(1, i16::MAX - 1, &[p("t", 0)], 5)
            .unwrap()
            .unwrap();
        let plan = init(Some(&t), (-1, -1), 1000, 10, || 2).unwrap();
        let abort = plan
            .abort_first
            .expect("the open transaction is aborted first");
        assert_eq!(
            (abort.producer_id, abort.epoch, abort.phase),
            (1, i16::MAX, Phase::PrepareAbort),
            "the markers carry an epoch above the old instance's"
        );
        assert_eq!((plan.then.producer_id, plan.then.epoch), (2, 0));
        // The old instance is refused by the coordinator, and its timeout goes the same way.
        assert!(plan
            .then
            .add_partitions(1, i16::MAX - 1, &[p("t", 1)], 20)
            .is_err());
        assert_eq!(t.fence(30).epoch, i16::MAX);
    }

    /// Version 2: after the coordinator fences a transaction (its timeout), a retry of the
    /// fenced instance's last EndTxn is refused, not answered as done with the fencing epoch.
    #[test]
    fn a_fence_ends_version_2_retries() {
        let t = init(None, (-1, -1), 1000, 0, || 5).unwrap().then;
        let t = t.add_partitions(5, 0, &[p("t", 0)], 1).unwrap().unwrap();
        let EndPlan::Prepare(prep) = t.end_v2(5, 0, false, 2).unwrap() else {
            panic!("not prepared")
        };
        let done = prep.completed(3);
        assert_eq!(done.end_v2(5, 0, false, 4), Ok(EndPlan::AlreadyDone));
        let open = done.add_partitions(5, 1, &[p("t", 0)], 5).unwrap().unwrap();
        let fenced = open.fence(6).completed(6);
        assert_eq!(fenced.epoch, 2);
        assert!(fenced.end_v2(5, 0, false, 7).is_err());
        // Nor is the fencing epoch taken for an abort with nothing open.
        let mut last = fenced.clone();
        last.epoch = i16::MAX;
        assert_eq!(
            last.end_v2(5, i16::MAX, false, 8),
            Err(TxnError::ProducerFenced)
        );
    }

    #[test]
    fn an_exhausted_epoch_moves_to_a_new_producer_id() {
        let mut t = init(None, (-1, -1), 1000, 0, || 1).unwrap().then;
        t.epoch = i16::MAX - 1;
        let next = init(Some(&t), (-1, -1), 1000, 0, || 2).unwrap().then;
        assert_eq!((next.producer_id, next.epoch), (2, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Init,
        Add(i32),
        End(bool),
        Timeout,
        /// EndTxn whose `Prepare*` value is persisted, then the broker dies before the
        /// markers: the next start must finish it.
        EndThenCrash(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Init),
            (0i32..3).prop_map(Op::Add),
            any::<bool>().prop_map(Op::End),
            Just(Op::Timeout),
            any::<bool>().prop_map(Op::EndThenCrash),
        ]
    }

    proptest! {
        /// Random clients (the current instance, and zombies holding older epochs), timeouts
        /// and crashes between the two phases of an end: the epoch of a producer id never decreases, only the current epoch is
        /// ever accepted, a `Prepare*` value always completes to the matching `Complete*`,
        /// and a transaction's partitions only grow while it is open.
        #[test]
        fn epochs_only_grow_and_zombies_are_refused(
            ops in proptest::collection::vec((op(), any::<bool>()), 1..60),
            // Near the end of the epochs too, where fencing moves to a new producer id.
            first_epoch in prop_oneof![Just(0i16), (i16::MAX - 4)..i16::MAX],
        ) {
            let mut next_id = 0i64;
            let mut t: Option<Txn> = None;
            let mut now = 0i64;
            for (op, zombie) in ops {
                now += 10;
                // Start-up after a crash: only a `Prepare*` value can be left half done, and
                // it completes to the matching `Complete*`.
                if let Some(cur) = t.clone().filter(|c| matches!(c.phase, Phase::PrepareCommit | Phase::PrepareAbort)) {
                    let done = cur.completed(now);
                    let want = if cur.phase == Phase::PrepareCommit { Phase::CompleteCommit } else { Phase::CompleteAbort };
                    prop_assert_eq!(done.phase, want);
                    prop_assert_eq!((done.producer_id, done.epoch), (cur.producer_id, cur.epoch));
                    t = Some(done);
                    continue;
                }
                let Some(cur) = t.clone() else {
                    let mut first = init(None, (-1, -1), 100, now, || { next_id += 1; next_id }).unwrap().then;
                    first.epoch = first_epoch.min(i16::MAX - 1);
                    t = Some(first);
                    continue;
                };
                // Fenced at the last epoch, the id has no current instance until the next
                // InitProducerId: a client sending that epoch is a zombie too.
                let fenced_for_good = cur.epoch == i16::MAX;
                let zombie = zombie || fenced_for_good;
                let epoch = if zombie && !fenced_for_good { cur.epoch - 1 } else { cur.epoch };
                let next = match op {
                    Op::Init => {
                        let plan = init(Some(&cur), (-1, -1), 100, now, || { next_id += 1; next_id }).unwrap();
                        if let Some(a) = &plan.abort_first {
                            prop_assert!(a.epoch > cur.epoch);
                            if a.epoch == i16::MAX {
                                prop_assert_ne!(plan.then.producer_id, cur.producer_id, "the new instance shares the fenced one's id");
                            } else {
                                prop_assert_eq!((plan.then.producer_id, plan.then.epoch), (cur.producer_id, a.epoch));
                            }
                            prop_assert_eq!(a.completed(now).phase, Phase::CompleteAbort);
                        }
                        Some(plan.then)
                    }
                    Op::Add(i) => match cur.add_partitions(cur.producer_id, epoch, &[p("t", i)], now) {
                        Ok(n) => {
                            prop_assert!(!zombie);
                            let n = n.unwrap_or(cur.clone());
                            if cur.phase == Phase::Ongoing {
                                prop_assert!(cur.partitions.is_subset(&n.partitions));
                            }
                            Some(n)
                        }
                        Err(e) => {
                            prop_assert!(zombie && e == TxnError::ProducerFenced);
                            None
                        }
                    },
                    Op::End(commit) => match cur.end(cur.producer_id, epoch, commit, now) {
                        Ok(EndPlan::Prepare(n)) => {
                            prop_assert!(!zombie);
                            let done = n.completed(now);
                            prop_assert_eq!(done.phase, if commit { Phase::CompleteCommit } else { Phase::CompleteAbort });
                            Some(done)
                        }
                        Ok(EndPlan::AlreadyDone) => None,
                        Err(e) => {
                            prop_assert!(zombie || e == TxnError::InvalidTxnState);
                            None
                        }
                    },
                    Op::EndThenCrash(commit) => match cur.end(cur.producer_id, epoch, commit, now) {
                        Ok(EndPlan::Prepare(n)) => {
                            prop_assert!(!zombie);
                            Some(n)
                        }
                        Ok(EndPlan::AlreadyDone) => None,
                        Err(e) => {
                            prop_assert!(zombie || e == TxnError::InvalidTxnState);
                            None
                        }
                    },
                    Op::Timeout => {
                        let late = now + 1000;
                        cur.timed_out(late).then(|| cur.fence(late).completed(late))
                    }
                };
                if let Some(n) = next {
                    if n.producer_id == cur.producer_id {
                        prop_assert!(n.epoch >= cur.epoch);
                    }
                    t = Some(n);
                }
            }
        }
    }
}
