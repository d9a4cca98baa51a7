//! A task's checkpoint as records of a compacted changelog topic.
//!
//! A checkpoint (input position, plugin state, watermarks) can be far larger than a record
//! may be (Kafka's `max.message.bytes` is 1 MB by default), so it is cut in chunks:
//!
//! - `K/0` .. `K/n-1` — the chunks, each `id (u64 BE) · bytes`;
//! - `K` — the head, written last: `id (u64 BE) · n (u32 BE) · total length (u64 BE)`;
//! - tombstones for `K/n` .. the previous count, so compaction drops chunks no head names.
//!
//! `K` is `topic/partition` of the task's input. All of a commit's records are in one
//! transaction, so a read_committed reader sees a head only with its chunks before it in
//! the same partition. Invariant: the chunks of the last head are the last records of their
//! keys before that head, so reading a partition and keeping the latest value of every key
//! gives the last committed checkpoint whole (and compaction, which keeps the latest value of
//! every key, never breaks it).

use std::collections::BTreeMap;

use crate::plugin::checkpoint::Checkpoint;

/// Bytes per chunk: under Kafka's default max.message.bytes with room for the record's
/// own framing.
pub const CHUNK: usize = 512 * 1024;

/// The key of a task's head record.
pub fn task_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// One record to write: key and value (None: a tombstone).
pub type Entry = (String, Option<Vec<u8>>);

/// The records of one commit, chunks first, head last. `previous_chunks`: how many chunks the
/// last commit wrote (their extra keys are deleted).
pub fn encode(
    key: &str,
    id: u64,
    c: &Checkpoint,
    previous_chunks: u32,
) -> Result<(Vec<Entry>, u32), String> {
    let blob =
        rmp_serde::to_vec_named(c).map_err(|e| format!("cannot encode a checkpoint: {e}"))?;
    let chunks: Vec<&[u8]> = if blob.is_empty() {
        Vec::new()
    } else {
        blob.chunks(CHUNK).collect()
    };
    let n = u32::try_from(chunks.len()).map_err(|_| "a checkpoint of over 2^32 chunks")?;
    let mut out = Vec::with_capacity(chunks.len() + 1);
    for (i, bytes) in chunks.iter().enumerate() {
        let mut v = Vec::with_capacity(8 + bytes.len());
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(bytes);
        out.push((format!("{key}/{i}"), Some(v)));
    }
    for i in n..previous_chunks {
        out.push((format!("{key}/{i}"), None));
    }
    let mut head = Vec::with_capacity(20);
    head.extend_from_slice(&id.to_be_bytes());
    head.extend_from_slice(&n.to_be_bytes());
    head.extend_from_slice(&(blob.len() as u64).to_be_bytes());
    out.push((key.to_string(), Some(head)));
    Ok((out, n))
}

/// Reads the records of one changelog partition, in offset order, keeping what belongs to
/// one task.
#[derive(Default)]
pub struct Restore {
    head: Option<(u64, u32, u64)>,
    chunks: BTreeMap<u32, (u64, Vec<u8>)>,
}

impl Restore {
    /// Takes one record; records of other tasks are ignored.
    pub fn record(&mut self, key: &str, record_key: &[u8], value: Option<&[u8]>) {
        let Ok(k) = std::str::from_utf8(record_key) else {
            return;
        };
        if k == key {
            self.head = value.and_then(|v| {
                (v.len() == 20).then(|| {
                    (
                        u64::from_be_bytes(v[0..8].try_into().unwrap_or_default()),
                        u32::from_be_bytes(v[8..12].try_into().unwrap_or_default()),
                        u64::from_be_bytes(v[12..20].try_into().unwrap_or_default()),
                    )
                })
            });
            return;
        }
        let Some(i) = k
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|i| i.parse::<u32>().ok())
        else {
            return;
        };
        match value {
            Some(v) if v.len() >= 8 => {
                let id = u64::from_be_bytes(v[0..8].try_into().unwrap_or_default());
                self.chunks.insert(i, (id, v[8..].to_vec()));
            }
            _ => {
                self.chunks.remove(&i);
            }
        }
    }

    /// Whether a head was seen (a checkpoint newer than whatever was had before reading).
    pub fn found(&self) -> bool {
        self.head.is_some()
    }

    /// The checkpoint of the last head, or None if there was none.
    pub fn finish(self) -> Result<Option<Checkpoint>, String> {
        let Some((id, n, len)) = self.head else {
            return Ok(None);
        };
        let mut blob = Vec::with_capacity(len.min(1 << 30) as usize);
        for i in 0..n {
            match self.chunks.get(&i) {
                Some((cid, bytes)) if *cid == id => blob.extend_from_slice(bytes),
                _ => {
                    return Err(format!(
                        "changelog: chunk {i} of checkpoint {id} is missing"
                    ))
                }
            }
        }
        if blob.len() as u64 != len {
            return Err(format!(
                "changelog: checkpoint {id} is {} bytes, its head says {len}",
                blob.len()
            ));
        }
        Checkpoint::decode(&blob).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::checkpoint::Bin;
    use proptest::prelude::*;

    fn ckpt(next: i64, state: Vec<u8>) -> Checkpoint {
        Checkpoint {
            producer_id: 0,
            next_offset: next,
            state: Bin(state),
            plugin_version: "v1".into(),
            emitted: Default::default(),
            pending: Vec::new(),
            watermarks: Default::default(),
        }
    }

    proptest! {
        /// Any sequence of commits of two tasks into one partition reads back as each task's
        /// last, also after compaction (the latest value of every key, in offset order).
        #[test]
        fn the_last_commit_reads_back_whole(
            sizes in proptest::collection::vec((0usize..3 * CHUNK, any::<bool>()), 1..6),
        ) {
            let mut log: Vec<Entry> = Vec::new();
            let mut prev = [0u32; 2];
            let mut last = [None, None];
            for (i, (size, which)) in sizes.into_iter().enumerate() {
                let t = usize::from(which);
                let key = task_key("in", t as i32);
                let c = ckpt(i as i64, vec![i as u8; size]);
                let (entries, n) = encode(&key, i as u64, &c, prev[t]).unwrap();
                prev[t] = n;
                log.extend(entries);
                last[t] = Some(c);
            }
            let mut compacted: Vec<(usize, Entry)> = Vec::new();
            let mut latest = BTreeMap::new();
            for (at, e) in log.iter().enumerate() {
                latest.insert(e.0.clone(), at);
            }
            for (at, e) in log.iter().enumerate() {
                if latest.get(&e.0) == Some(&at) {
                    compacted.push((at, e.clone()));
                }
            }
            for (t, want) in last.iter().enumerate() {
                let key = task_key("in", t as i32);
                for view in [log.iter().collect::<Vec<_>>(), compacted.iter().map(|(_, e)| e).collect()] {
                    let mut r = Restore::default();
                    for (k, v) in view {
                        r.record(&key, k.as_bytes(), v.as_deref());
                    }
                    let got = r.finish().unwrap();
                    prop_assert_eq!(got.map(|c| (c.next_offset, c.state.0)), want.clone().map(|c| (c.next_offset, c.state.0)));
                }
            }
        }
    }

    #[test]
    fn a_missing_chunk_is_an_error_not_a_wrong_state() {
        let c = ckpt(7, vec![1; CHUNK + 10]);
        let (entries, n) = encode("t/0", 1, &c, 0).unwrap();
        assert_eq!(n, 2);
        let mut r = Restore::default();
        for (k, v) in entries.iter().filter(|(k, _)| k != "t/0/1") {
            r.record("t/0", k.as_bytes(), v.as_deref());
        }
        assert!(r.finish().is_err());
    }
}
