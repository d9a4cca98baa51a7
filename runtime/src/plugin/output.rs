//! Where a task's output goes: guest records checked, partitioned and appended to the log as
//! one idempotent producer, skipping what a crash left already written (see
//! [`super::checkpoint`] for the invariant).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use super::io::{Dest, Routed};
use super::watermark::Announcement;
use crate::broker::{AppendError, Broker, BrokerError, Topic};
use crate::records::{self, Compression, ProducerFields, Record};

/// Limits on what one plugin call may ask the broker to write. Beyond them the input record
/// is the plugin's error (dead-lettered), not the broker's problem.
pub const MAX_OUTPUTS_PER_RECORD: usize = 10_000;
pub const MAX_HEADERS: usize = 1_000;
/// Topics one pipeline may bring into existence by naming them in its output.
pub const MAX_CREATED_TOPICS: usize = 64;

const SEQ_SPACE: u64 = 1 << 31;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WriteError {
    #[error("cannot append to {topic}-{partition}: {error}")]
    Append {
        topic: String,
        partition: i32,
        error: AppendError,
    },
    #[error("cannot encode output batch: {0}")]
    Encode(#[from] records::RecordsError),
    #[error("output topic {0} disappeared")]
    TopicGone(String),
    #[error("cannot allocate a producer id: {0}")]
    ProducerId(#[from] BrokerError),
}

/// How long [`ensure_topic`] waits for another caller's creation of the same topic.
const CREATION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Makes sure `name` exists, creating it with the broker's defaults. Blocks (plugin tasks
/// and the host run on threads of their own): while another caller is creating the same
/// topic, `create_topic` answers TopicExists before the topic is visible, so this waits for
/// that creation to finish (or tries again, if it failed) instead of failing the output.
pub fn ensure_topic(broker: &Broker, name: &str) -> Result<Arc<Topic>, BrokerError> {
    let deadline = std::time::Instant::now() + CREATION_WAIT;
    loop {
        if let Some(t) = broker.topic(name) {
            return Ok(t);
        }
        match broker.create_topic(name, -1, Default::default(), false) {
            Err(BrokerError::TopicExists(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(BrokerError::TopicExists(_)) => {
                return broker
                    .topic(name)
                    .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
            }
            other => return other,
        }
    }
}

/// Kafka's default partitioner for keyed records; key-less records stay on the partition
/// numbered like the task's input, so a pipeline keeps per-partition order end to end.
pub fn partition_for(key: Option<&[u8]>, partitions: usize, home: i32) -> i32 {
    let n = partitions.max(1) as i32;
    match key {
        Some(k) => crate::client::partition_for_key(k, n),
        None => home.rem_euclid(n),
    }
}

struct Counter {
    /// Records this task has emitted to the partition, replay included.
    next: u64,
    /// Records below this count are already in the log (written before a crash).
    skip_until: u64,
}

pub struct Writer {
    broker: Arc<Broker>,
    pub producer_id: i64,
    counters: BTreeMap<(String, i32), Counter>,
    /// Counts as of the checkpoint this writer started from.
    start: BTreeMap<(String, i32), u64>,
    created: HashSet<String>,
    /// Partitions written since the last [`Writer::make_durable`].
    touched: BTreeMap<(String, i32), Arc<crate::broker::Partition>>,
}

impl Writer {
    pub fn new(
        broker: Arc<Broker>,
        producer_id: i64,
        emitted: &BTreeMap<String, BTreeMap<i32, u64>>,
    ) -> Writer {
        let start = emitted
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |(p, n)| ((t.clone(), *p), *n)))
            .collect();
        Writer {
            broker,
            producer_id,
            counters: BTreeMap::new(),
            start,
            created: HashSet::new(),
            touched: BTreeMap::new(),
        }
    }

    /// Counts to save in a checkpoint.
    pub fn emitted(&self) -> BTreeMap<String, BTreeMap<i32, u64>> {
        let mut out: BTreeMap<String, BTreeMap<i32, u64>> = BTreeMap::new();
        for ((t, p), n) in &self.start {
            out.entry(t.clone()).or_default().insert(*p, *n);
        }
        for ((t, p), c) in &self.counters {
            out.entry(t.clone()).or_default().insert(*p, c.next);
        }
        out
    }

    /// Resolves an output topic name a plugin gave, creating the topic if needed, within the
    /// pipeline's allowance.
    pub fn topic(&mut self, name: &str) -> Result<Arc<Dest>, String> {
        let dest = |t: &Topic| {
            Arc::new(Dest {
                name: t.name.clone(),
                partitions: t.partitions.len(),
                max_message_bytes: t.max_message_bytes(),
            })
        };
        if let Some(t) = self.broker.topic(name) {
            return Ok(dest(&t));
        }
        if !crate::broker::valid_topic_name(name) || name.starts_with("__") {
            return Err(format!("'{name}' is not a valid output topic name"));
        }
        if self.created.len() >= MAX_CREATED_TOPICS {
            return Err(format!(
                "the plugin named more than {MAX_CREATED_TOPICS} new output topics"
            ));
        }
        let t = ensure_topic(&self.broker, name).map_err(|e| e.to_string())?;
        self.created.insert(name.to_string());
        Ok(dest(&t))
    }

    fn counter(&mut self, topic: &Topic, partition: i32) -> &mut Counter {
        let key = (topic.name.clone(), partition);
        let start = self.start.get(&key).copied().unwrap_or(0);
        let pid = self.producer_id;
        self.counters.entry(key).or_insert_with(|| {
            // What the log already holds from us beyond the checkpoint: the distance from our
            // count (mod 2^31) to the sequence the partition expects next from our id.
            let written = topic
                .partition(partition)
                .and_then(|p| p.producer_next_seq(pid))
                .map(|s| {
                    let ours = start % SEQ_SPACE;
                    (u64::from(s as u32) + SEQ_SPACE - ours) % SEQ_SPACE
                })
                .unwrap_or(0);
            // A log behind the checkpoint (lost on power failure) cannot be caught up by
            // skipping; treat it as nothing written.
            let written = if written > SEQ_SPACE / 2 { 0 } else { written };
            Counter {
                next: start,
                skip_until: start + written,
            }
        })
    }

    /// Whether some output partition still holds records from before a crash that a replay
    /// has not reached: output that is not a function of the input must wait until it has.
    pub fn replaying(&mut self) -> bool {
        let keys: Vec<(String, i32)> = self.start.keys().cloned().collect();
        for (name, partition) in keys {
            let Some(topic) = self.broker.topic(&name) else {
                continue;
            };
            let c = self.counter(&topic, partition);
            if c.next < c.skip_until {
                return true;
            }
        }
        false
    }

    /// Topics this task has written records to (as of its checkpoint, and since).
    pub fn topics_written(&self) -> BTreeSet<String> {
        self.start
            .keys()
            .chain(self.counters.keys())
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Appends a watermark announcement to every partition of `name` (or only to the one
    /// numbered like `only`, modulo the count).
    /// Outside the exactly-once sequence: announcements carry no producer id, and a repeated
    /// or lost one is harmless because readers keep each writer's highest.
    pub fn announce(
        &mut self,
        name: &str,
        a: &Announcement,
        only: Option<i32>,
    ) -> Result<(), WriteError> {
        let Some(topic) = self.broker.topic(name) else {
            return Ok(());
        };
        let record = Record {
            offset: 0,
            timestamp: crate::broker::now_ms(),
            key: Some(Bytes::copy_from_slice(&Announcement::control_key())),
            value: Some(Bytes::from(a.encode())),
            headers: Vec::new(),
        };
        let batch = records::encode_control_batch(std::slice::from_ref(&record))?;
        let stamp = topic.log_append_time().then(crate::broker::now_ms);
        let n = topic.partitions.len().max(1) as i32;
        for part in &topic.partitions {
            if only.is_some_and(|q| q.rem_euclid(n) != part.index) {
                continue;
            }
            part.append(&batch, usize::MAX, stamp)
                .map_err(|error| WriteError::Append {
                    topic: topic.name.clone(),
                    partition: part.index,
                    error,
                })?;
        }
        self.broker.notify_appended();
        Ok(())
    }

    /// Appends `out` in order, per partition, skipping records already in the log.
    pub fn write(&mut self, out: Vec<Routed>) -> Result<(), WriteError> {
        if out.is_empty() {
            return Ok(());
        }
        // Group by partition, keeping each partition's order.
        let mut groups: Vec<(Arc<Dest>, i32, Vec<Record>)> = Vec::new();
        for r in out {
            match groups
                .iter_mut()
                .find(|(t, p, _)| t.name == r.topic.name && *p == r.partition)
            {
                Some(g) => g.2.push(r.record),
                None => groups.push((r.topic, r.partition, vec![r.record])),
            }
        }
        let mut appended = false;
        for (topic, partition, recs) in groups {
            // The topic may have gained partitions or been re-created since it was resolved.
            let topic = self
                .broker
                .topic(&topic.name)
                .ok_or_else(|| WriteError::TopicGone(topic.name.clone()))?;
            let c = self.counter(&topic, partition);
            let skip = c.skip_until.saturating_sub(c.next).min(recs.len() as u64) as usize;
            let first_seq = c.next + skip as u64;
            let fresh = &recs[skip..];
            if !fresh.is_empty() {
                self.append(&topic, partition, first_seq, fresh)?;
                appended = true;
            }
            let c = self.counter(&topic, partition);
            c.next += recs.len() as u64;
        }
        if appended {
            self.broker.notify_appended();
        }
        Ok(())
    }

    /// Durable mode: fsyncs the output partitions written since the last call whose
    /// `flush.messages` asks for it, so that a checkpoint saved next never counts outputs a
    /// power cut could take back.
    pub fn make_durable(&mut self) -> Result<(), WriteError> {
        for ((topic, partition), part) in std::mem::take(&mut self.touched) {
            if part.flush_due() {
                part.sync_now().map_err(|e| WriteError::Append {
                    topic,
                    partition,
                    error: AppendError::Storage(crate::log::LogError::Io {
                        path: std::path::PathBuf::from("partition"),
                        error: std::io::Error::other(e.0),
                    }),
                })?;
            }
        }
        Ok(())
    }

    fn append(
        &mut self,
        topic: &Topic,
        partition: i32,
        mut seq: u64,
        recs: &[Record],
    ) -> Result<(), WriteError> {
        let part = topic
            .partition(partition)
            .ok_or_else(|| WriteError::TopicGone(format!("{}-{partition}", topic.name)))?;
        self.touched
            .entry((topic.name.clone(), partition))
            .or_insert_with(|| part.clone());
        let max = topic.max_message_bytes();
        // Batches stay under max.message.bytes; each record alone was checked to fit.
        let mut start = 0;
        while start < recs.len() {
            let mut size = 100;
            let mut end = start;
            while end < recs.len() {
                let s = record_size(&recs[end]);
                if end > start && size + s > max {
                    break;
                }
                size += s;
                end += 1;
            }
            let batch = records::encode_batch_as(
                &recs[start..end],
                // Its codec, at the codec's default level.
                topic
                    .target_compression()
                    .map_or(Compression::None, |(c, _)| c),
                Some(ProducerFields {
                    producer_id: self.producer_id,
                    epoch: 0,
                    base_sequence: (seq % SEQ_SPACE) as i32,
                }),
            )?;
            let stamp = topic.log_append_time().then(crate::broker::now_ms);
            match part.append(&batch, usize::MAX, stamp) {
                Ok(at) => {
                    topic
                        .stats
                        .bytes_in
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    topic.stats.records_in.fetch_add(
                        (at.last_offset - at.base_offset + 1) as u64,
                        Ordering::Relaxed,
                    );
                }
                Err(AppendError::OutOfOrderSequence { .. }) => {
                    // Only if the log lost our writes (power failure) or another writer used
                    // our id: continue under a fresh id rather than stall the pipeline.
                    let fresh = self.broker.producer_ids.next()?;
                    tracing::warn!(topic = %topic.name, partition, old = self.producer_id, new = fresh, "plugin output sequence out of step with the log; continuing under a new producer id");
                    self.producer_id = fresh;
                    for c in self.counters.values_mut() {
                        c.skip_until = c.next;
                    }
                    // Sequences restart for the new id.
                    continue;
                }
                Err(error) => {
                    return Err(WriteError::Append {
                        topic: topic.name.clone(),
                        partition,
                        error,
                    })
                }
            }
            seq += (end - start) as u64;
            start = end;
        }
        Ok(())
    }
}

/// An upper bound of a record's encoded size.
pub fn record_size(r: &Record) -> usize {
    30 + r.key.as_ref().map_or(0, Bytes::len)
        + r.value.as_ref().map_or(0, Bytes::len)
        + r.headers
            .iter()
            .map(|(k, v)| 10 + k.len() + v.as_ref().map_or(0, Bytes::len))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two pipelines routing to the same new topic at once: the one that loses the race to
    /// create it gets TopicExists before the topic is visible, and must wait, not fail.
    #[test]
    fn concurrent_callers_all_get_the_topic_one_creates() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::broker::BrokerConfig::with_defaults(dir.path().to_path_buf());
        // Many partitions: a creation long enough for the others to arrive meanwhile.
        config.default_partitions = 300;
        let broker = Arc::new(Broker::open(config).unwrap());
        for round in 0..3 {
            let name = format!("shared-{round}");
            let barrier = Arc::new(std::sync::Barrier::new(6));
            let ids: Vec<_> = (0..6)
                .map(|_| {
                    let (b, name, barrier) = (broker.clone(), name.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        ensure_topic(&b, &name).map(|t| t.id)
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect();
            assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        }
    }
}
