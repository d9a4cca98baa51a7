//! A keyed table kept in a log, for the broker's own state (committed offsets, transactions),
//! as Kafka keeps `__consumer_offsets` and `__transaction_state`.
//!
//! Every change is a record appended before it takes effect (key and value as JSON; a null
//! value deletes the key); the map is rebuilt at start-up by replaying the log, so it is only
//! ever what the log says. The log is compacted by rewriting the live entries at its end and
//! dropping every segment before them: a crash mid-way leaves the old segments in place, and
//! replaying old entries followed by their live copies gives the same map.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{batch, Log, LogConfig, LogError};
use crate::records::{decode_batches, encode_batch, Compression, Record};

pub struct KvLog<K, V> {
    log: Log,
    map: BTreeMap<K, V>,
    size_after_compaction: u64,
    /// Compact once the log holds this many bytes more than after the last compaction.
    compact_growth: u64,
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
    /// as `K`/`V` are skipped: other record types may share the log.
    pub fn open(dir: &Path, compact_growth: u64) -> Result<Self, LogError> {
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
        let size = log.size_bytes();
        Ok(KvLog {
            log,
            map,
            size_after_compaction: size,
            compact_growth,
        })
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

    /// Records changes (`None` deletes) in the log, then applies them to the map.
    pub fn write(&mut self, entries: Vec<(K, Option<V>)>, now: i64) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
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
        if self.log.size_bytes() > self.size_after_compaction + self.compact_growth {
            self.compact(now)?;
        }
        Ok(())
    }

    /// Rewrites the live entries into a fresh segment and drops every segment before it.
    pub fn compact(&mut self, now: i64) -> Result<(), LogError> {
        self.log.force_roll()?;
        let start = self.log.next_offset();
        let live: Vec<(K, Option<V>)> = self
            .map
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        for chunk in live.chunks(1000) {
            self.append(chunk, now)?;
        }
        self.log.sync()?;
        let dropped = self.log.delete_segments_before(start);
        self.size_after_compaction = self.log.size_bytes();
        tracing::info!(
            dir = %self.log.dir().display(),
            live = self.map.len(),
            dropped_segments = dropped,
            "compacted an internal log"
        );
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
        /// Random writes, deletes, compactions and reopenings: the table always equals a
        /// model map.
        #[test]
        fn the_table_is_what_was_written(ops in proptest::collection::vec((0u8..6, 0u32..20, any::<u16>()), 1..120)) {
            let dir = tempfile::tempdir().unwrap();
            let mut t = KvLog::<u32, u16>::open(dir.path(), 2048).unwrap();
            let mut model = BTreeMap::new();
            for (op, k, v) in ops {
                match op {
                    0 => {
                        t.write(vec![(k, None)], 0).unwrap();
                        model.remove(&k);
                    }
                    1 => t.compact(0).unwrap(),
                    2 => {
                        drop(t);
                        t = KvLog::open(dir.path(), 2048).unwrap();
                    }
                    _ => {
                        t.write(vec![(k, Some(v))], 0).unwrap();
                        model.insert(k, v);
                    }
                }
                prop_assert_eq!(t.map(), &model);
            }
        }
    }
}
