//! A keyed table kept in a log, for the broker's own state (committed offsets, transactions),
//! as Kafka keeps `__consumer_offsets` and `__transaction_state`.
//!
//! Every change is a record appended before it takes effect (key and value as JSON; a null
//! value deletes the key); the map is rebuilt at start-up by replaying the log, so it is only
//! ever what the log says. The log is compacted by the log cleaner, as a compacted topic is
//! (`log/cleaner.rs`): each key keeps its latest record, at its offset, so replaying the
//! cleaned log gives the same map; a crash mid-pass leaves the old or the new segments.
//! A pass reads and rewrites without the table's lock ([`KvLog::compaction`], then
//! [`Compaction::run`], then [`KvLog::finish_compaction`]), so writers never wait on it.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::cleaner::{self, CleanConfig, Cleaned, Plan};
use super::{batch, Log, LogConfig, LogError, SyncJob};
use crate::records::{decode_batches, encode_batch, Compression, Record};

pub struct KvLog<K, V> {
    log: Log,
    map: BTreeMap<K, V>,
    clean: CleanConfig,
    /// Durable mode: every write is fsynced before it takes effect.
    durable: bool,
}

/// A compaction pass planned under the table's lock, to run without it.
pub struct Compaction {
    plan: Plan,
    now: i64,
    clean: CleanConfig,
}

impl Compaction {
    /// Reads and rewrites the planned segments (no lock needed).
    pub fn run(&self) -> Result<Option<Cleaned>, LogError> {
        cleaner::clean(&self.plan, &Vec::new(), self.now, &self.clean)
    }
}

/// One background pass over a table behind a lock: `plan` and `finish` take the lock, the
/// pass in between runs without it. Returns whether segments were replaced.
pub fn compact_with(
    plan: impl FnOnce() -> Result<Option<Compaction>, LogError>,
    finish: impl FnOnce(&Cleaned) -> Result<bool, LogError>,
) -> Result<bool, LogError> {
    let Some(job) = plan()? else {
        return Ok(false);
    };
    let Some(cleaned) = job.run()? else {
        return Ok(false);
    };
    finish(&cleaned)
}

fn corrupt(dir: &Path) -> LogError {
    LogError::Corrupt {
        path: dir.to_path_buf(),
        position: 0,
    }
}

impl<K, V> KvLog<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    /// Opens the table in `dir`, replaying its log. Records whose key or value does not parse
    /// as `K`/`V` are skipped: other record types may share the log. Segments roll at
    /// `segment_bytes`; only rolled segments are compacted.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Self, LogError> {
        let config = LogConfig {
            segment_bytes,
            retention_ms: -1,
            retention_bytes: -1,
            ..LogConfig::default()
        };
        // Durably: the directory of an internal log (transactions, offsets), made at a first
        // start and lost in a power cut, would take every fsynced record in it along. A
        // no-op once it exists. (A topic's partition directories are covered by the sync of
        // topic.json, once per topic.)
        crate::disk::create_dir_all_durably(dir).map_err(|e| LogError::Io {
            path: dir.to_path_buf(),
            error: e,
        })?;
        let log = Log::open(dir, config)?;
        let mut map = BTreeMap::new();
        let mut next = log.log_start_offset();
        while let Some(slice) = log.plan_read(next)? {
            let data = slice.read(8 << 20, true).map_err(|e| LogError::Io {
                path: dir.to_path_buf(),
                error: e,
            })?;
            if data.is_empty() {
                break;
            }
            if let Some((end, _)) = batch::span(&data) {
                next = end;
            }
            for r in decode_batches(data).map_err(|_| corrupt(dir))? {
                let Some(key) = r
                    .key
                    .as_ref()
                    .and_then(|k| serde_json::from_slice::<K>(k).ok())
                else {
                    continue;
                };
                match r
                    .value
                    .as_ref()
                    .and_then(|v| serde_json::from_slice::<V>(v).ok())
                {
                    Some(v) => {
                        map.insert(key, v);
                    }
                    None => {
                        map.remove(&key);
                    }
                }
            }
        }
        Ok(KvLog {
            log,
            map,
            // Kafka's defaults for its internal topics: a pass once half the log is dirty,
            // tombstones kept for a day.
            clean: CleanConfig::default(),
            durable: false,
        })
    }

    /// Durable mode (`durability = "fsync"`): every write is fsynced before it takes effect.
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    fn append(&mut self, entries: &[(K, Option<V>)], now: i64) -> Result<(), LogError> {
        let records: Vec<Record> = entries
            .iter()
            .map(|(k, v)| {
                Ok(Record {
                    offset: 0,
                    timestamp: now,
                    key: Some(Bytes::from(
                        serde_json::to_vec(k).map_err(|_| corrupt(self.log.dir()))?,
                    )),
                    value: match v {
                        Some(v) => Some(Bytes::from(
                            serde_json::to_vec(v).map_err(|_| corrupt(self.log.dir()))?,
                        )),
                        None => None,
                    },
                    headers: Vec::new(),
                })
            })
            .collect::<Result<_, LogError>>()?;
        let b = encode_batch(&records, Compression::None).map_err(|_| corrupt(self.log.dir()))?;
        let parsed = batch::split_batches(&b).map_err(|_| corrupt(self.log.dir()))?;
        self.log.append(&b, &parsed, 0)?;
        Ok(())
    }

    /// Records changes (`None` deletes) in the log, then applies them to the map; in durable
    /// mode only once they are fsynced.
    pub fn write(&mut self, entries: Vec<(K, Option<V>)>, now: i64) -> Result<(), LogError> {
        if let Some(job) = self.stage(entries, now)? {
            let synced = job.run();
            self.settle(&job, synced)?;
        }
        Ok(())
    }

    /// The first half of a write, for callers that must not fsync under the lock that guards
    /// the table: records the changes in the log and applies them to the map, and returns
    /// the fsync still owed in durable mode (the value "to persist"). The caller runs it
    /// without the lock, then hands the outcome to [`Self::settle`] and acknowledges only if
    /// that is `Ok`. Readers may see the changes before they are durable, as records are
    /// readable before they are synced; one fsync covers every change staged before it.
    pub fn stage(
        &mut self,
        entries: Vec<(K, Option<V>)>,
        now: i64,
    ) -> Result<Option<SyncJob>, LogError> {
        if entries.is_empty() {
            return Ok(None);
        }
        self.append(&entries, now)?;
        for (k, v) in entries {
            match v {
                Some(v) => {
                    self.map.insert(k, v);
                }
                None => {
                    self.map.remove(&k);
                }
            }
        }
        Ok(if self.durable {
            self.log.sync_job()
        } else {
            None
        })
    }

    /// The second half of a durable write: the outcome of running `job`.
    pub fn settle(&mut self, job: &SyncJob, outcome: std::io::Result<()>) -> Result<(), LogError> {
        match outcome {
            Ok(()) => {
                self.log.synced(job);
                Ok(())
            }
            Err(error) => Err(LogError::Io {
                path: self.log.dir().to_path_buf(),
                error,
            }),
        }
    }

    /// Plans a compaction pass over the rolled segments, if one is due.
    pub fn compaction(&self, now: i64) -> Result<Option<Compaction>, LogError> {
        let first_dirty = self.log.cleaner_checkpoint();
        let plan = self
            .log
            .clean_plan(first_dirty, self.log.next_offset(), now, &self.clean)?;
        Ok(plan.map(|plan| Compaction {
            plan,
            now,
            clean: self.clean.clone(),
        }))
    }

    /// Swaps a pass's segments in (unless the log changed under it).
    pub fn finish_compaction(&mut self, c: &Cleaned) -> Result<bool, LogError> {
        let swapped = self.log.swap_cleaned(c)?;
        if swapped {
            tracing::info!(
                dir = %self.log.dir().display(),
                live = self.map.len(),
                bytes_before = c.bytes_before,
                bytes_after = c.bytes_after,
                "compacted an internal log"
            );
        }
        Ok(swapped)
    }

    /// A whole pass here and now, however little is dirty: rolls the active segment and
    /// waits for its flush first.
    pub fn compact(&mut self, now: i64) -> Result<(), LogError> {
        self.log.force_roll()?;
        super::flush::wait_idle();
        let eager = CleanConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..self.clean.clone()
        };
        let first_dirty = self.log.cleaner_checkpoint();
        let plan = self
            .log
            .clean_plan(first_dirty, self.log.next_offset(), now, &eager)?;
        if let Some(plan) = plan {
            if let Some(c) = cleaner::clean(&plan, &Vec::new(), now, &eager)? {
                self.finish_compaction(&c)?;
            }
        }
        Ok(())
    }

    pub fn map(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Random writes, deletes, compactions (some with writes landing mid-pass) and
        /// reopenings, an hour apart so that tombstones pass their horizon: the table always
        /// equals a model map.
        #[test]
        fn the_table_is_what_was_written(ops in proptest::collection::vec((0u8..7, 0u32..20, any::<u16>()), 1..120)) {
            let dir = tempfile::tempdir().unwrap();
            let mut t = KvLog::<u32, u16>::open(dir.path(), 300).unwrap();
            let mut model = BTreeMap::new();
            let mut now = 0i64;
            for (op, k, v) in ops {
                now += 3600 * 1000;
                match op {
                    0 => {
                        t.write(vec![(k, None)], now).unwrap();
                        model.remove(&k);
                    }
                    1 => t.compact(now).unwrap(),
                    2 => {
                        drop(t);
                        t = KvLog::open(dir.path(), 300).unwrap();
                    }
                    3 => {
                        crate::log::flush::wait_idle();
                        let job = t.compaction(now).unwrap();
                        t.write(vec![(k, Some(v))], now).unwrap();
                        model.insert(k, v);
                        if let Some(c) = job.and_then(|j| j.run().unwrap()) {
                            t.finish_compaction(&c).unwrap();
                        }
                    }
                    _ => {
                        t.write(vec![(k, Some(v))], now).unwrap();
                        model.insert(k, v);
                    }
                }
                prop_assert_eq!(t.map(), &model);
            }
            drop(t);
            let t = KvLog::<u32, u16>::open(dir.path(), 300).unwrap();
            prop_assert_eq!(t.map(), &model);
        }
    }

    #[derive(Debug, Clone)]
    enum SimOp {
        Put(u32, u16),
        Delete(u32),
        Compact,
        /// A pass planned, a write landing while it runs, then the swap.
        CompactAround(u32, u16),
        Flush,
        FailSync(u8),
        PowerCut(u64),
    }

    fn sim_op() -> impl Strategy<Value = SimOp> {
        prop_oneof![
            8 => (0u32..20, any::<u16>()).prop_map(|(k, v)| SimOp::Put(k, v)),
            2 => (0u32..20).prop_map(SimOp::Delete),
            1 => Just(SimOp::Compact),
            1 => (0u32..20, any::<u16>()).prop_map(|(k, v)| SimOp::CompactAround(k, v)),
            2 => Just(SimOp::Flush),
            1 => (0u8..6).prop_map(SimOp::FailSync),
            2 => any::<u64>().prop_map(SimOp::PowerCut),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("SIM_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
        ))]
        /// The table (committed offsets, transaction state) on a simulated disk with power
        /// cuts, failed fsyncs and compactions: after every cut it is exactly the table as of
        /// some write, never a mix of two; in durable mode never older than the last write
        /// that returned `Ok`.
        #[test]
        fn the_table_survives_power_cuts(
            durable in any::<bool>(),
            ops in proptest::collection::vec(sim_op(), 1..100),
        ) {
            use crate::disk::sim::{Faults, SimDisk};
            crate::log::flush::manual::enable();
            let d = SimDisk::mount();
            let dir = d.root().join("offsets");
            crate::disk::create_dir_all(&dir).unwrap();
            crate::disk::sync_dir(d.root()).unwrap();
            let open = || {
                let mut t = KvLog::<u32, u16>::open(&dir, 300).unwrap();
                t.set_durable(durable);
                t
            };
            let mut t = open();
            // Every state the table may be found in after a cut, oldest first; the ones
            // before `acked` may not.
            let mut states = vec![BTreeMap::new()];
            let mut acked = 0;
            let mut now = 0i64;
            for op in ops {
                now += 3600 * 1000;
                let mut write = |t: &mut KvLog<u32, u16>, k: u32, v: Option<u16>| {
                    let mut next = states.last().cloned().unwrap_or_default();
                    match v {
                        Some(v) => next.insert(k, v),
                        None => next.remove(&k),
                    };
                    // A write that failed may still be found after the cut (its outcome is
                    // unknown, as with a timeout); one that succeeded must be.
                    let ok = t.write(vec![(k, v)], now).is_ok();
                    states.push(next);
                    if ok && durable {
                        acked = states.len() - 1;
                    }
                };
                match op {
                    SimOp::Put(k, v) => write(&mut t, k, Some(v)),
                    SimOp::Delete(k) => write(&mut t, k, None),
                    SimOp::Compact => {
                        let _ = t.compact(now);
                    }
                    SimOp::CompactAround(k, v) => {
                        let job = t.compaction(now).ok().flatten();
                        write(&mut t, k, Some(v));
                        if let Some(c) = job.and_then(|j| j.run().ok().flatten()) {
                            let _ = t.finish_compaction(&c);
                        }
                    }
                    SimOp::Flush => {
                        crate::log::flush::manual::run(1);
                    }
                    SimOp::FailSync(after) => d.arm(Faults {
                        fail_sync_after: Some(u64::from(after)),
                        ..Faults::default()
                    }),
                    SimOp::PowerCut(seed) => {
                        drop(t);
                        crate::log::flush::manual::drop_queued();
                        d.power_off();
                        d.power_on(seed);
                        t = open();
                        let found = states.iter().rposition(|s| s == t.map());
                        prop_assert!(
                            found.is_some_and(|i| i >= acked),
                            "after a cut the table is {:?}: not a state at or after the last acknowledged one ({:?})",
                            t.map(), states.get(acked)
                        );
                        let i = found.unwrap_or(0);
                        states.truncate(i + 1);
                        acked = i;
                    }
                }
            }
        }
    }
}
