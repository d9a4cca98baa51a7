//! Committed offsets, kept in the broker's own log (as Kafka keeps them in
//! `__consumer_offsets`): every commit is a record appended before it is acknowledged, the map
//! is rebuilt at start-up by replaying the log, and the log cleaner compacts it as it does a
//! compacted topic ([`KvLog`]).
//!
//! Record format (ours, stable): key = JSON `[group, topic, partition]`; value = JSON
//! [`Committed`], or null (a tombstone) when the offset is deleted.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::log::kv::KvLog;
use crate::log::{LogError, SyncJob};

/// The offsets log's segment size: only rolled segments are compacted.
const SEGMENT_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

/// (group, topic, partition).
pub type Key = (String, String, i32);

pub struct OffsetStore {
    table: KvLog<Key, Committed>,
}

impl OffsetStore {
    pub fn open(dir: &Path) -> Result<OffsetStore, LogError> {
        Self::open_with(dir, false)
    }

    /// `durable`: every commit is fsynced before it is acknowledged.
    pub fn open_with(dir: &Path, durable: bool) -> Result<OffsetStore, LogError> {
        let mut table = KvLog::open(dir, SEGMENT_BYTES)?;
        table.set_durable(durable);
        tracing::info!(offsets = table.map().len(), "committed offsets restored");
        Ok(OffsetStore { table })
    }

    /// Durably records commits (or, with `None`, deletions) before they take effect.
    pub fn write(
        &mut self,
        entries: Vec<(Key, Option<Committed>)>,
        now: i64,
    ) -> Result<(), LogError> {
        self.table.write(entries, now)
    }

    /// Records commits or deletions and returns the fsync still owed in durable mode, for the
    /// coordinator to run once it has released its lock (see [`KvLog::stage`]).
    pub fn stage(
        &mut self,
        entries: Vec<(Key, Option<Committed>)>,
        now: i64,
    ) -> Result<Option<SyncJob>, LogError> {
        self.table.stage(entries, now)
    }

    /// The outcome of a staged write's fsync.
    pub fn settle(&mut self, job: &SyncJob, outcome: std::io::Result<()>) -> Result<(), LogError> {
        self.table.settle(job, outcome)
    }

    /// Tombstones for every offset of `group`.
    pub fn group_deletion(&self, group: &str) -> Vec<(Key, Option<Committed>)> {
        self.group(group)
            .into_iter()
            .map(|(t, p, _)| ((group.to_string(), t, p), None))
            .collect()
    }

    /// Tombstones for every group's offsets of `topic`.
    pub fn topic_deletion(&self, topic: &str) -> Vec<(Key, Option<Committed>)> {
        self.table
            .map()
            .keys()
            .filter(|(_, t, _)| t == topic)
            .map(|k| (k.clone(), None))
            .collect()
    }

    /// Tombstones for every group's offsets of a topic `exists` says is gone.
    pub fn orphans(&self, exists: impl Fn(&str) -> bool) -> Vec<(Key, Option<Committed>)> {
        self.table
            .map()
            .keys()
            .filter(|(_, t, _)| !exists(t))
            .map(|k| (k.clone(), None))
            .collect()
    }

    /// A whole compaction pass now (tests; the broker runs [`Self::table`]'s passes in the
    /// background).
    pub fn compact(&mut self, now: i64) -> Result<(), LogError> {
        self.table.compact(now)
    }

    pub fn table(&mut self) -> &mut KvLog<Key, Committed> {
        &mut self.table
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.table
            .map()
            .get(&(group.to_string(), topic.to_string(), partition))
    }

    /// Every committed offset of `group`: (topic, partition, offset record).
    pub fn group(&self, group: &str) -> Vec<(String, i32, Committed)> {
        self.table
            .map()
            .range((group.to_string(), String::new(), i32::MIN)..)
            .take_while(|((g, _, _), _)| g == group)
            .map(|((_, t, p), c)| (t.clone(), *p, c.clone()))
            .collect()
    }

    pub fn groups(&self) -> Vec<String> {
        let mut gs: Vec<String> = self.table.map().keys().map(|(g, _, _)| g.clone()).collect();
        gs.dedup();
        gs
    }

    /// Deletes all offsets of `group`.
    pub fn delete_group(&mut self, group: &str, now: i64) -> Result<usize, LogError> {
        let keys = self.group_deletion(group);
        let n = keys.len();
        self.write(keys, now)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(o: i64) -> Option<Committed> {
        Some(Committed {
            offset: o,
            leader_epoch: -1,
            metadata: String::new(),
            commit_ms: 0,
        })
    }

    #[test]
    fn commits_survive_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        for i in 0..50 {
            s.write(vec![(("g".into(), "t".into(), i % 3), c(i64::from(i)))], 0)
                .unwrap();
        }
        s.write(vec![(("h".into(), "t".into(), 0), c(7))], 0)
            .unwrap();
        s.delete_group("h", 0).unwrap();
        drop(s);
        let mut s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.get("g", "t", 0).unwrap().offset, 48);
        assert_eq!(s.get("g", "t", 2).unwrap().offset, 47);
        assert!(s.get("h", "t", 0).is_none());
        s.compact(0).unwrap();
        drop(s);
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.group("g").len(), 3);
        assert_eq!(s.get("g", "t", 1).unwrap().offset, 49);
        assert_eq!(s.groups(), vec!["g".to_string()]);
    }
}
