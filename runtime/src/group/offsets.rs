//! Committed offsets, kept in the broker's own log (as Kafka keeps them in
//! `__consumer_offsets`): every commit is a record appended before it is acknowledged, the map
//! is rebuilt at start-up by replaying the log, and the log is compacted by rewriting the live
//! entries at its end and dropping the segments before them.
//!
//! Record format (ours, stable): key = JSON `[group, topic, partition]`; value = JSON
//! [`Committed`], or null (a tombstone) when the offset is deleted.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::log::{batch, Log, LogConfig, LogError};
use crate::records::{decode_batches, encode_batch, Compression, Record};

/// Compact once the log holds this many bytes more than after the last compaction.
const COMPACT_GROWTH: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

type Key = (String, String, i32);

pub struct OffsetStore {
    log: Log,
    map: BTreeMap<Key, Committed>,
    size_after_compaction: u64,
}

fn encode(entries: &[(Key, Option<Committed>)], now: i64) -> Result<Bytes, LogError> {
    let records: Vec<Record> = entries
        .iter()
        .map(|(k, v)| Record {
            offset: 0,
            timestamp: now,
            key: Some(Bytes::from(serde_json::to_vec(k).unwrap_or_default())),
            value: v
                .as_ref()
                .map(|c| Bytes::from(serde_json::to_vec(c).unwrap_or_default())),
            headers: Vec::new(),
        })
        .collect();
    encode_batch(&records, Compression::None).map_err(|e| LogError::Corrupt {
        path: e.to_string().into(),
        position: 0,
    })
}

impl OffsetStore {
    pub fn open(dir: &Path) -> Result<OffsetStore, LogError> {
        let config = LogConfig {
            segment_bytes: 16 << 20,
            retention_ms: -1,
            retention_bytes: -1,
            ..LogConfig::default()
        };
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
            let records = decode_batches(data).map_err(|_| LogError::Corrupt {
                path: dir.to_path_buf(),
                position: 0,
            })?;
            for r in records {
                let Some(key) = r
                    .key
                    .as_ref()
                    .and_then(|k| serde_json::from_slice::<Key>(k).ok())
                else {
                    continue;
                };
                match r
                    .value
                    .as_ref()
                    .and_then(|v| serde_json::from_slice::<Committed>(v).ok())
                {
                    Some(c) => {
                        map.insert(key, c);
                    }
                    None => {
                        map.remove(&key);
                    }
                }
            }
        }
        let size = log.size_bytes();
        tracing::info!(offsets = map.len(), "committed offsets restored");
        Ok(OffsetStore {
            log,
            map,
            size_after_compaction: size,
        })
    }

    /// Durably records commits (or, with `None`, deletions) before they take effect.
    pub fn write(
        &mut self,
        entries: Vec<(Key, Option<Committed>)>,
        now: i64,
    ) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        let b = encode(&entries, now)?;
        let parsed = batch::split_batches(&b).map_err(|_| LogError::Corrupt {
            path: self.log.dir().to_path_buf(),
            position: 0,
        })?;
        self.log.append(&b, &parsed, 0)?;
        for (k, v) in entries {
            match v {
                Some(c) => {
                    self.map.insert(k, c);
                }
                None => {
                    self.map.remove(&k);
                }
            }
        }
        if self.log.size_bytes() > self.size_after_compaction + COMPACT_GROWTH {
            self.compact(now)?;
        }
        Ok(())
    }

    /// Rewrites the live entries into a fresh segment and drops every segment before it.
    pub fn compact(&mut self, now: i64) -> Result<(), LogError> {
        self.log.force_roll()?;
        let start = self.log.next_offset();
        let live: Vec<(Key, Option<Committed>)> = self
            .map
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        for chunk in live.chunks(1000) {
            let b = encode(chunk, now)?;
            let parsed = batch::split_batches(&b).map_err(|_| LogError::Corrupt {
                path: self.log.dir().to_path_buf(),
                position: 0,
            })?;
            self.log.append(&b, &parsed, 0)?;
        }
        self.log.sync()?;
        let dropped = self.log.delete_segments_before(start);
        self.size_after_compaction = self.log.size_bytes();
        tracing::info!(
            live = self.map.len(),
            dropped_segments = dropped,
            "compacted committed offsets"
        );
        Ok(())
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.map
            .get(&(group.to_string(), topic.to_string(), partition))
    }

    /// Every committed offset of `group`: (topic, partition, offset record).
    pub fn group(&self, group: &str) -> Vec<(String, i32, Committed)> {
        self.map
            .range((group.to_string(), String::new(), i32::MIN)..)
            .take_while(|((g, _, _), _)| g == group)
            .map(|((_, t, p), c)| (t.clone(), *p, c.clone()))
            .collect()
    }

    pub fn groups(&self) -> Vec<String> {
        let mut gs: Vec<String> = self.map.keys().map(|(g, _, _)| g.clone()).collect();
        gs.dedup();
        gs
    }

    /// Deletes all offsets of `group`.
    pub fn delete_group(&mut self, group: &str, now: i64) -> Result<usize, LogError> {
        let keys: Vec<(Key, Option<Committed>)> = self
            .group(group)
            .into_iter()
            .map(|(t, p, _)| ((group.to_string(), t, p), None))
            .collect();
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
