//! The transaction coordinator: transactional ids, their producer ids and epochs, and the
//! two-phase end of each transaction (Kafka's `TransactionCoordinator`, on one node).
//!
//! [`state`] holds the rules as a pure state machine; this module is its shell. It keeps each
//! transactional id's value in the transaction log (`internal/transactions`, a [`KvLog`],
//! written before anything acts on a value), writes the commit/abort markers into the
//! partitions, applies a committed transaction's offsets to the group coordinator, aborts
//! transactions that outlive their timeout, and at start-up finishes what a crash cut short.
//!
//! Lock order: a transactional id's entry, then a partition's log (markers; the transactional
//! produce path appends while holding the entry, so no batch can slip in after the markers),
//! then the group coordinator, then the transaction log. Nothing takes an entry while holding
//! one of the others.

pub mod state;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::broker::{now_ms, Broker};
use crate::log::kv::KvLog;
use crate::log::LogError;
use state::{EndPlan, PendingOffset, Txn, TxnError};

/// The transaction log's segment size: only rolled segments are compacted.
const SEGMENT_BYTES: u64 = 16 << 20;
/// A transactional id idle this long with no transaction open is forgotten (Kafka's
/// `transactional.id.expiration.ms`, 7 days); its producer id is never reused.
const EXPIRATION_MS: i64 = 7 * 24 * 3600 * 1000;
/// Markers carry the coordinator's epoch; a single node never changes coordinator.
const COORDINATOR_EPOCH: i32 = 0;

/// Kafka's KAFKA_STORAGE_ERROR: a transaction could not be recorded; the client retries.
pub const STORAGE_ERROR: i16 = 56;

type Entry = Arc<Mutex<Option<Txn>>>;

#[derive(Default)]
struct Entries {
    by_id: HashMap<String, Entry>,
    /// Producer id -> transactional id, for the produce path's verification.
    by_pid: HashMap<i64, String>,
}

pub struct Coordinator {
    entries: Mutex<Entries>,
    log: Mutex<KvLog<String, Txn>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a request failed: a Kafka error code.
pub type Code = i16;

impl From<TxnError> for Code {
    fn from(e: TxnError) -> Code {
        e.code()
    }
}

impl Coordinator {
    /// `durable`: every state change is fsynced before it is acted on.
    pub fn open(dir: &Path, durable: bool) -> Result<Coordinator, LogError> {
        let mut log = KvLog::<String, Txn>::open(dir, SEGMENT_BYTES)?;
        log.set_durable(durable);
        let mut entries = Entries::default();
        for (id, t) in log.map() {
            entries.by_pid.insert(t.producer_id, id.clone());
            entries
                .by_id
                .insert(id.clone(), Arc::new(Mutex::new(Some(t.clone()))));
        }
        tracing::info!(
            transactional_ids = entries.by_id.len(),
            "transaction state restored"
        );
        Ok(Coordinator {
            entries: Mutex::new(entries),
            log: Mutex::new(log),
        })
    }

    fn entry(&self, txn_id: &str) -> Entry {
        lock(&self.entries)
            .by_id
            .entry(txn_id.to_string())
            .or_default()
            .clone()
    }

    fn existing(&self, txn_id: &str) -> Option<Entry> {
        lock(&self.entries).by_id.get(txn_id).cloned()
    }

    /// Writes `t` to the transaction log (the caller holds the id's own lock, so its values
    /// reach the log in order). In durable mode the fsync runs after the log's lock is
    /// released: other transactional ids' writes share it instead of queueing behind it.
    fn persist(&self, txn_id: &str, t: &Txn) -> Result<(), Code> {
        self.write_log(txn_id, Some(t.clone()), now_ms())
            .map_err(|e| {
                tracing::error!(txn = txn_id, error = %e, "cannot write the transaction log");
                STORAGE_ERROR
            })
    }

    fn write_log(
        &self,
        txn_id: &str,
        t: Option<Txn>,
        now: i64,
    ) -> Result<(), crate::log::LogError> {
        let job = lock(&self.log).stage(vec![(txn_id.to_string(), t)], now)?;
        match job {
            None => Ok(()),
            Some(job) => {
                let outcome = job.run();
                lock(&self.log).settle(&job, outcome)
            }
        }
    }

    /// Persists `t` and publishes it as the entry's value.
    fn set(&self, txn_id: &str, slot: &mut Option<Txn>, t: Txn) -> Result<(), Code> {
        self.persist(txn_id, &t)?;
        let mut e = lock(&self.entries);
        if let Some(old) = slot.as_ref().filter(|o| o.producer_id != t.producer_id) {
            e.by_pid.remove(&old.producer_id);
        }
        e.by_pid.insert(t.producer_id, txn_id.to_string());
        *slot = Some(t);
        Ok(())
    }

    /// Runs a `Prepare*` value to its end: persisted, markers in every partition, a commit's
    /// offsets applied, then the `Complete*` value persisted. Idempotent, so a crash or a
    /// failure anywhere is repaired by running it again (start-up and the timer do).
    fn complete(
        &self,
        broker: &Broker,
        txn_id: &str,
        slot: &mut Option<Txn>,
        prepared: Txn,
    ) -> Result<(), Code> {
        self.set(txn_id, slot, prepared.clone())?;
        let commit = prepared.phase == state::Phase::PrepareCommit;
        for (topic, partition) in &prepared.partitions {
            let Some(part) = broker
                .topic(topic)
                .and_then(|t| t.partition(*partition).cloned())
            else {
                continue; // deleted meanwhile: nothing left to mark
            };
            if let Err(e) = part.write_marker(
                prepared.producer_id,
                prepared.epoch,
                commit,
                COORDINATOR_EPOCH,
            ) {
                tracing::error!(txn = txn_id, topic, partition, error = %e, "cannot write a transaction marker; will retry");
                return Err(STORAGE_ERROR);
            }
            // Durable mode (`durability = "fsync"`, whose requests run on the blocking pool;
            // flush.messages due): the marker is on disk before `Complete*` is.
            // Persisted without it, a power cut would leave a committed transaction open at
            // the partition, its last stable offset stuck for good (nothing revisits a
            // complete transaction), or an aborted one to merge with the producer's next,
            // whose commit would show the aborted records. `Prepare*` left last is finished
            // at start-up instead, markers and all.
            if broker.config.durable_internal_logs && part.flush_due() {
                if let Err(e) = part.sync_now() {
                    tracing::error!(txn = txn_id, topic, partition, error = %e, "cannot make a transaction marker durable; will retry");
                    return Err(STORAGE_ERROR);
                }
            }
        }
        if commit {
            for (group, offsets) in &prepared.groups {
                // Offsets of a topic deleted while the transaction was open stay out, as in
                // Kafka: a topic made again under its name must not inherit them.
                let entries = offsets
                    .iter()
                    .filter(|((t, _), _)| broker.topic(t).is_some())
                    .map(|((t, p), o)| {
                        (t.clone(), *p, o.offset, o.leader_epoch, o.metadata.clone())
                    })
                    .collect();
                let code = broker.groups.write_offsets(group, entries);
                if code != 0 {
                    return Err(code);
                }
            }
        }
        broker.notify_appended();
        self.set(txn_id, slot, prepared.completed(now_ms()))
    }

    /// InitProducerId with a transactional id: the producer id and epoch to use.
    pub fn init_producer_id(
        &self,
        broker: &Broker,
        txn_id: &str,
        req: (i64, i16),
        timeout_ms: i32,
    ) -> Result<(i64, i16), Code> {
        let entry = self.entry(txn_id);
        let mut slot = lock(&entry);
        let mut id_error = None;
        let plan = state::init(slot.as_ref(), req, timeout_ms, now_ms(), || {
            broker.producer_ids.next().unwrap_or_else(|e| {
                id_error = Some(e);
                -1
            })
        })?;
        if let Some(e) = id_error {
            tracing::error!(error = %e, "cannot allocate a producer id");
            return Err(STORAGE_ERROR);
        }
        if let Some(abort) = plan.abort_first {
            tracing::info!(
                txn = txn_id,
                producer_id = abort.producer_id,
                "aborting the open transaction of a fenced producer"
            );
            self.complete(broker, txn_id, &mut slot, abort)?;
        }
        let r = (plan.then.producer_id, plan.then.epoch);
        self.set(txn_id, &mut slot, plan.then)?;
        Ok(r)
    }

    /// Runs `f` on a transactional id's value and persists what it returns.
    fn update(
        &self,
        txn_id: &str,
        f: impl FnOnce(&Txn) -> Result<Option<Txn>, TxnError>,
    ) -> Result<(), Code> {
        let entry = self
            .existing(txn_id)
            .ok_or(TxnError::InvalidProducerIdMapping.code())?;
        let mut slot = lock(&entry);
        let cur = slot
            .as_ref()
            .ok_or(TxnError::InvalidProducerIdMapping.code())?;
        match f(cur)? {
            Some(t) => self.set(txn_id, &mut slot, t),
            None => Ok(()),
        }
    }

    /// AddPartitionsToTxn.
    pub fn add_partitions(
        &self,
        txn_id: &str,
        pid: i64,
        epoch: i16,
        parts: &[(String, i32)],
    ) -> Result<(), Code> {
        self.update(txn_id, |t| t.add_partitions(pid, epoch, parts, now_ms()))
    }

    /// AddOffsetsToTxn.
    pub fn add_offsets(&self, txn_id: &str, pid: i64, epoch: i16, group: &str) -> Result<(), Code> {
        self.update(txn_id, |t| t.add_group(pid, epoch, group, now_ms()))
    }

    /// TxnOffsetCommit: offsets staged until the transaction ends. With `implicit`
    /// (transactions version 2), the group joins the transaction by itself.
    pub fn stage_offsets(
        &self,
        txn_id: &str,
        pid: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<((String, i32), PendingOffset)>,
        implicit: bool,
    ) -> Result<(), Code> {
        self.update(txn_id, |t| {
            let now = now_ms();
            let added = if implicit {
                t.add_implicitly(pid, epoch, None, Some(group), now)?
            } else {
                None
            };
            added
                .as_ref()
                .unwrap_or(t)
                .stage_offsets(pid, epoch, group, offsets, now)
                .map(Some)
        })
    }

    /// EndTxn: commits or aborts, markers written before the answer. Returns the producer id
    /// and epoch the producer goes on with: unchanged in version 1; in version 2 (`v2`) the
    /// bumped epoch, or a new producer id once the epoch is spent.
    pub fn end(
        &self,
        broker: &Broker,
        txn_id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
        v2: bool,
    ) -> Result<(i64, i16), Code> {
        let entry = self
            .existing(txn_id)
            .ok_or(TxnError::InvalidProducerIdMapping.code())?;
        let mut slot = lock(&entry);
        let cur = slot
            .as_ref()
            .ok_or(TxnError::InvalidProducerIdMapping.code())?;
        let exhausted = cur.epoch_exhausted();
        let plan = if v2 {
            cur.end_v2(pid, epoch, commit, now_ms())?
        } else {
            cur.end(pid, epoch, commit, now_ms())?
        };
        if let EndPlan::Prepare(t) = plan {
            // The new producer id is taken before anything is written: failing after the
            // markers, the end would stand complete and the client's retry be answered as
            // done, leaving it on the spent epoch.
            let fresh = if v2 && exhausted {
                Some(broker.producer_ids.next().map_err(|e| {
                    tracing::error!(error = %e, "cannot allocate a producer id");
                    STORAGE_ERROR
                })?)
            } else {
                None
            };
            self.complete(broker, txn_id, &mut slot, t)?;
            if let Some(fresh) = fresh {
                if let Some(mut t) = slot.clone() {
                    t.producer_id = fresh;
                    t.epoch = 0;
                    self.set(txn_id, &mut slot, t)?;
                }
            }
        }
        let t = slot
            .as_ref()
            .ok_or(TxnError::InvalidProducerIdMapping.code())?;
        Ok((t.producer_id, t.epoch))
    }

    /// Appends a transactional batch through `append`, only if its producer's transaction is
    /// open and added `partition`; with `implicit` (transactions version 2, Produce v12+) the
    /// batch opens the transaction and adds the partition itself. The entry stays locked
    /// while `append` runs, so the transaction cannot end between the check and the write.
    pub fn verify_and<R>(
        &self,
        pid: i64,
        epoch: i16,
        partition: &(String, i32),
        implicit: bool,
        append: impl FnOnce() -> R,
    ) -> Result<R, TxnError> {
        let (id, entry) = {
            let e = lock(&self.entries);
            let id = e
                .by_pid
                .get(&pid)
                .ok_or(TxnError::InvalidProducerIdMapping)?
                .clone();
            let entry = e
                .by_id
                .get(&id)
                .cloned()
                .ok_or(TxnError::InvalidProducerIdMapping)?;
            (id, entry)
        };
        let mut slot = lock(&entry);
        let t = slot.as_ref().ok_or(TxnError::InvalidProducerIdMapping)?;
        if implicit {
            if let Some(added) = t.add_implicitly(pid, epoch, Some(partition), None, now_ms())? {
                // A storage failure here refuses the batch: it is retried.
                self.set(&id, &mut slot, added)
                    .map_err(|_| TxnError::ConcurrentTransactions)?;
            }
        }
        let t = slot.as_ref().ok_or(TxnError::InvalidProducerIdMapping)?;
        t.verify_produce(pid, epoch, partition)?;
        Ok(append())
    }

    fn all(&self) -> Vec<(String, Entry)> {
        lock(&self.entries)
            .by_id
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Aborts transactions past their timeout (fencing their producer), finishes any
    /// `Prepare*` value left by a failure, and forgets transactional ids idle past their
    /// expiration. Run at start-up and then periodically.
    /// One pass of the log cleaner over the transaction log, if one is due; writers wait
    /// only for its plan and its swap.
    pub fn compact_log(&self) {
        let now = now_ms();
        if let Err(e) = crate::log::kv::compact_with(
            || lock(&self.log).compaction(now),
            |c| lock(&self.log).finish_compaction(c),
        ) {
            tracing::warn!(error = %e, "compaction of the transaction log failed");
        }
    }

    pub fn tick(&self, broker: &Broker) {
        for (id, entry) in self.all() {
            let mut slot = lock(&entry);
            let Some(t) = slot.clone() else { continue };
            let now = now_ms();
            if t.expired(now, EXPIRATION_MS) {
                self.forget(&id, &entry, &mut slot, now);
                continue;
            }
            let todo = if t.phase.is_prepared() {
                Some(t)
            } else if t.timed_out(now) {
                tracing::warn!(
                    txn = %id,
                    producer_id = t.producer_id,
                    timeout_ms = t.timeout_ms,
                    "transaction timed out: aborting it and fencing its producer"
                );
                Some(t.fence(now))
            } else {
                None
            };
            if let Some(t) = todo {
                if let Err(code) = self.complete(broker, &id, &mut slot, t) {
                    tracing::warn!(txn = %id, code, "could not finish a transaction; will retry");
                }
            }
        }
    }

    /// Removes an expired transactional id: a tombstone in the log, then out of the maps (the
    /// caller holds its entry, so no request is using it).
    fn forget(&self, txn_id: &str, entry: &Entry, slot: &mut Option<Txn>, now: i64) {
        if let Err(e) = self.write_log(txn_id, None, now) {
            tracing::warn!(txn = txn_id, error = %e, "cannot expire a transactional id; will retry");
            return;
        }
        let mut e = lock(&self.entries);
        if let Some(t) = slot.take() {
            e.by_pid.remove(&t.producer_id);
        }
        // Clones are taken under the entries lock: besides the map's and ours, any other is a
        // request waiting for this entry (an InitProducerId may start the id afresh in it),
        // so the entry stays in the map, empty.
        if Arc::strong_count(entry) <= 2 {
            e.by_id.remove(txn_id);
        }
        tracing::info!(txn = txn_id, "transactional id expired");
    }

    /// The value of one transactional id.
    pub fn describe(&self, txn_id: &str) -> Option<Txn> {
        self.existing(txn_id).and_then(|e| lock(&e).clone())
    }

    /// Every transactional id with its value.
    pub fn list(&self) -> Vec<(String, Txn)> {
        let mut v: Vec<(String, Txn)> = self
            .all()
            .into_iter()
            .filter_map(|(id, e)| lock(&e).clone().map(|t| (id, t)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Whether a transaction has offsets staged for `group` on `partition` (OffsetFetch with
    /// `require_stable` answers UNSTABLE_OFFSET_COMMIT then).
    pub fn offset_pending(&self, group: &str, partition: &(String, i32)) -> bool {
        self.all().into_iter().any(|(_, e)| {
            lock(&e)
                .as_ref()
                .is_some_and(|t| t.stages(group, partition))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::config::TopicConfig;
    use crate::broker::testing::{open, txn_produce as produce};

    /// Transaction "x" adds group "g" and stages its offset 42 of input partition in-0.
    fn stage_input_offset(b: &Broker, pid: i64, epoch: i16) {
        b.txns.add_offsets("x", pid, epoch, "g").unwrap();
        let pending = PendingOffset {
            offset: 42,
            leader_epoch: -1,
            metadata: String::new(),
        };
        let staged = vec![(("in".to_string(), 0), pending)];
        b.txns
            .stage_offsets("x", pid, epoch, "g", staged, false)
            .unwrap();
    }

    /// Offsets a transaction staged for a topic deleted before it commits are not applied, as
    /// in Kafka: a topic made again under that name starts without them.
    #[test]
    fn offsets_of_a_topic_deleted_during_the_transaction_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path());
        b.create_topic("in", 1, TopicConfig::default(), false)
            .unwrap();
        let (pid, epoch) = b.txns.init_producer_id(&b, "x", (-1, -1), 60_000).unwrap();
        stage_input_offset(&b, pid, epoch);
        b.delete_topic("in").unwrap();
        b.txns.end(&b, "x", pid, epoch, true, false).unwrap();
        assert_eq!(b.groups.committed("g", "in", 0), None);
    }

    /// A crash between the two phases: the `Prepare*` value is in the transaction log, the
    /// markers are not in the partitions. Opening the broker finishes the transaction before
    /// anyone can read: both partitions closed, the offsets applied, the value complete.
    #[test]
    fn a_crash_between_the_phases_is_finished_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = open(dir.path());
            b.create_topic("t", 2, TopicConfig::default(), false)
                .unwrap();
            // The input whose offsets the transaction commits (a topic deleted meanwhile
            // would take them along).
            b.create_topic("in", 1, TopicConfig::default(), false)
                .unwrap();
            let (pid, epoch) = b.txns.init_producer_id(&b, "x", (-1, -1), 60_000).unwrap();
            let parts = [("t".to_string(), 0), ("t".to_string(), 1)];
            b.txns.add_partitions("x", pid, epoch, &parts).unwrap();
            stage_input_offset(&b, pid, epoch);
            produce(&b, "t", 0, pid, epoch, 0).unwrap();
            produce(&b, "t", 1, pid, epoch, 0).unwrap();
            // A partition the transaction did not add is refused.
            b.create_topic("u", 1, TopicConfig::default(), false)
                .unwrap();
            assert_eq!(
                produce(&b, "u", 0, pid, epoch, 0),
                Err(TxnError::InvalidTxnState)
            );
            assert!(b.txns.offset_pending("g", &("in".to_string(), 0)));
            // Phase one only, then the "crash": the broker is dropped without phase two.
            let t = b.txns.describe("x").unwrap();
            let EndPlan::Prepare(prepared) = t.end(pid, epoch, true, now_ms()).unwrap() else {
                panic!("not prepared")
            };
            b.txns.persist("x", &prepared).unwrap();
            assert_eq!(b.topic("t").unwrap().partitions[0].watermarks().stable, 0);
        }
        let b = open(dir.path());
        let t = b.txns.describe("x").unwrap();
        assert_eq!(t.phase, state::Phase::CompleteCommit);
        for p in &b.topic("t").unwrap().partitions {
            let wm = p.watermarks();
            assert_eq!(
                (wm.stable, wm.high),
                (2, 2),
                "data and marker, nothing open"
            );
            assert!(p.aborted_between(0, 2).is_empty());
        }
        assert_eq!(b.groups.committed("g", "in", 0).unwrap().offset, 42);
        assert!(!b.txns.offset_pending("g", &("in".to_string(), 0)));
    }

    /// An open transaction survives a restart as it was (the producer may go on), and a new
    /// instance of its transactional id aborts it with a bumped epoch: the partition's records
    /// are indexed as aborted and the old epoch is refused.
    #[test]
    fn an_open_transaction_survives_restart_and_is_aborted_by_a_new_instance() {
        let dir = tempfile::tempdir().unwrap();
        let (pid, epoch) = {
            let b = open(dir.path());
            b.create_topic("t", 1, TopicConfig::default(), false)
                .unwrap();
            let (pid, epoch) = b.txns.init_producer_id(&b, "x", (-1, -1), 60_000).unwrap();
            b.txns
                .add_partitions("x", pid, epoch, &[("t".to_string(), 0)])
                .unwrap();
            produce(&b, "t", 0, pid, epoch, 0).unwrap();
            (pid, epoch)
        };
        let b = open(dir.path());
        assert_eq!(b.txns.describe("x").unwrap().phase, state::Phase::Ongoing);
        produce(&b, "t", 0, pid, epoch, 1).unwrap();
        let (pid2, epoch2) = b.txns.init_producer_id(&b, "x", (-1, -1), 60_000).unwrap();
        assert_eq!((pid2, epoch2), (pid, epoch + 1));
        let p = b.topic("t").unwrap().partitions[0].clone();
        assert_eq!(p.watermarks().stable, 3);
        assert_eq!(p.aborted_between(0, 3).len(), 1);
        assert_eq!(
            produce(&b, "t", 0, pid, epoch, 2),
            Err(TxnError::ProducerFenced)
        );
    }
}
